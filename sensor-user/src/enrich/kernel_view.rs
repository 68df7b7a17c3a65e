//! What the kernel says is alive, read off the pipeline task.
//!
//! A background thread lists `/proc` (the pid and start time of every process) and the cgroup2
//! hierarchy (the id and path of every cgroup) once per interval and hands the result to the
//! pipeline, which prunes its tables against it: entries whose exit or rmdir record was lost.
//! The pipeline never reads `/proc` in bulk itself, so a node with many processes does not
//! delay its events. An entry is judged only by a view taken after it was added, and dropped
//! only when two views in a row miss it: a record still on its way (an exit in the ring) needs
//! the entry it names.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{cgroups, procfs};
use crate::{
    clock::Clock,
    types::{BootNs, CgroupId, Pid},
};

/// One reading of `/proc` and the cgroup2 hierarchy.
#[derive(Debug, Default)]
pub struct KernelView {
    /// When the reading began: an entry added after it is not judged by this view.
    pub taken_at: BootNs,
    /// Every process, with its start (in clock ticks, as `/proc` has it).
    pub procs: HashMap<Pid, BootNs>,
    /// Every cgroup's id and every cgroup's path (relative to the mount, as the tables keep
    /// them); `None` without a cgroup2 mount, when cgroups are not judged.
    pub cgroups: Option<(HashSet<CgroupId>, HashSet<String>)>,
}

impl KernelView {
    /// Reads `/proc` and the hierarchy under `cgroup_mount` (blocking).
    pub fn read(cgroup_mount: Option<&Path>) -> Self {
        let taken_at = Clock::boot_now();
        let procs = procfs::all_pids()
            .into_iter()
            .filter_map(|pid| Some((Pid(pid), procfs::start_time(pid)?)))
            .collect();
        let cgroups = cgroup_mount.map(|mount| cgroups::walk(mount).into_iter().unzip());
        Self {
            taken_at,
            procs,
            cgroups,
        }
    }

    /// Whether the process `pid` that started at `start` (0: unknown) is still alive.
    pub fn has_process(&self, pid: Pid, start: BootNs) -> bool {
        // /proc gives the start in clock ticks, the kernel records in ns: equal within a tick.
        let tick = crate::clock::ticks_to_boot_ns(1).0;
        self.procs
            .get(&pid)
            .is_some_and(|seen| start.0 == 0 || seen.0.abs_diff(start.0) <= tick)
    }
}

/// Entries two views in a row found gone: the first miss marks, the second confirms.
#[derive(Debug)]
pub struct Misses<K>(HashSet<K>);

impl<K> Default for Misses<K> {
    fn default() -> Self {
        Self(HashSet::new())
    }
}

impl<K: Eq + std::hash::Hash> Misses<K> {
    /// Whether the last view missed `key`.
    pub fn contains(&self, key: &K) -> bool {
        self.0.contains(key)
    }

    /// Judges one view: `missing` yields the keys it misses; returns those it missed last time
    /// too, and remembers the rest for the next view.
    pub fn confirm(&mut self, missing: impl IntoIterator<Item = K>) -> Vec<K> {
        let before = std::mem::take(&mut self.0);
        let mut gone = Vec::new();
        for key in missing {
            if before.contains(&key) {
                gone.push(key);
            } else {
                self.0.insert(key);
            }
        }
        gone
    }
}

/// Starts the thread that reads a view every `every`; the receiver gets them one at a time
/// (the thread waits while one is unread). The thread ends when the receiver is dropped.
pub fn spawn(cgroup_mount: Option<PathBuf>, every: Duration) -> mpsc::Receiver<KernelView> {
    let (tx, rx) = mpsc::channel(1);
    let started = std::thread::Builder::new()
        .name("kernel-view".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                if tx
                    .blocking_send(KernelView::read(cgroup_mount.as_deref()))
                    .is_err()
                {
                    break;
                }
            }
        });
    if let Err(e) = started {
        log::error!("no sweep of lost exits and rmdirs: cannot start its thread: {e}");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_sees_this_process_and_its_cgroup() {
        let mount = crate::cgroupfs::cgroup2_mount();
        let view = KernelView::read(mount.as_deref());
        let me = procfs::snapshot(std::process::id()).unwrap();
        assert!(view.has_process(Pid(std::process::id()), me.start));
        assert!(view.has_process(Pid(std::process::id()), BootNs(0)));
        // Same pid, another process (started a second later).
        let later = BootNs(me.start.0 + 1_000_000_000);
        assert!(!view.has_process(Pid(std::process::id()), later));
        if let (Some((_, paths)), Some(path)) = (&view.cgroups, me.cgroup_path) {
            assert!(paths.contains(&path), "{path} not in {paths:?}");
        }
    }

    #[test]
    fn a_key_goes_after_two_misses_in_a_row() {
        let mut misses = Misses::default();
        assert!(misses.confirm([1, 2]).is_empty());
        // 2 came back in between: its miss starts over.
        assert_eq!(misses.confirm([1]), [1]);
        assert!(misses.confirm([2]).is_empty());
        assert_eq!(misses.confirm([2]), [2]);
    }
}
