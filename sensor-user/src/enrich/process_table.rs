//! The process table: what the agent knows of every live process, for ancestry and for events
//! (exit, later network) whose record carries only ids.
//!
//! Seeded from `/proc` at start, then kept by exec/fork/exit records. Entries whose exit was lost
//! are pruned against the kernel's view ([`ProcessTable::prune_missing`]); the table holds at
//! most [`MAX_PROCESSES`], and the last [`MAX_EXITED`] to exit for what is reported about them
//! after their exit.

use std::collections::{HashMap, VecDeque};

use sensor_common::Namespaces;
use sensor_proto as pb;

use super::{
    bounded::Departures,
    kernel_view::{KernelView, Misses},
    procfs::{self, ProcSnapshot},
};
use crate::types::{BootNs, CgroupId, Pid};

/// One live process.
#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub pid: Pid,
    pub ppid: Pid,
    pub ns_pid: u32,
    pub comm: String,
    pub exe: String,
    /// The executable's own file name when it has no link (memfd, deleted, O_TMPFILE).
    pub unlinked_exe: Option<String>,
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub cap_effective: u64,
    /// `task_struct.seccomp.mode` (0 disabled, 1 strict, 2 filter).
    pub seccomp_mode: u32,
    pub cgroup_id: CgroupId,
    pub start: BootNs,
    pub namespaces: Namespaces,
    /// The peer of its latest successful connect or accept.
    pub connected: Option<sensor_proto::Endpoint>,
    /// Already reported as relayed to the network through pipes.
    pub relayed: bool,
}

impl ProcInfo {
    pub fn from_snapshot(pid: Pid, snap: ProcSnapshot, cgroup_id: CgroupId) -> Self {
        Self {
            pid,
            ppid: Pid(snap.ppid),
            ns_pid: snap.ns_pid,
            comm: snap.comm,
            unlinked_exe: procfs::unlinked_exe(&snap.exe),
            exe: snap.exe,
            args: snap.args,
            uid: snap.uid,
            gid: snap.gid,
            euid: snap.euid,
            egid: snap.egid,
            cap_effective: snap.cap_effective,
            seccomp_mode: snap.seccomp_mode,
            cgroup_id,
            start: snap.start,
            namespaces: snap.namespaces,
            connected: None,
            relayed: false,
        }
    }
}

/// Live processes by pid.
#[derive(Default)]
pub struct ProcessTable {
    procs: HashMap<Pid, ProcInfo>,
    /// Entries the last kernel view missed: dropped if the next one misses them too.
    missing: Misses<Pid>,
    left: Departures,
    /// The last processes to exit, oldest first ([`ProcessTable::exited`]).
    exited: VecDeque<ProcInfo>,
}

/// Exited processes kept: enough for the repeat windows that end after their process (a
/// window's count is reported a window after its last operation).
pub const MAX_EXITED: usize = 256;

/// Processes kept at most. Beyond it, entries the last kernel view missed go first, then the
/// youngest: a fork flood evicts its own processes, not the long-lived ones (a shell started
/// before it, the runtime's daemons) whose ancestry alerts need.
pub const MAX_PROCESSES: usize = 65_536;

/// How far [`ProcessTable::ancestry`] climbs.
const MAX_ANCESTRY: usize = 16;

impl ProcessTable {
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProcInfo> {
        self.procs.values()
    }

    pub fn get(&self, pid: Pid) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    /// Keeps `info`, a process that exited, among the last [`MAX_EXITED`] to.
    pub fn exited(&mut self, info: ProcInfo) {
        if self.exited.len() == MAX_EXITED {
            self.exited.pop_front();
        }
        self.exited.push_back(info);
    }

    /// Process `pid` of `cgroup`: live, or among the last to exit.
    pub fn get_recent(&self, pid: Pid, cgroup: CgroupId) -> Option<&ProcInfo> {
        self.get(pid).filter(|p| p.cgroup_id == cgroup).or_else(|| {
            let mut exited = self.exited.iter().rev();
            exited.find(|p| p.pid == pid && p.cgroup_id == cgroup)
        })
    }

    /// Adds or replaces `info`; returns the pids evicted to make room.
    pub fn insert(&mut self, info: ProcInfo) -> Vec<Pid> {
        let evicted = self.make_room(info.pid);
        self.procs.insert(info.pid, info);
        evicted
    }

    fn make_room(&mut self, pid: Pid) -> Vec<Pid> {
        if self.procs.contains_key(&pid) {
            return Vec::new();
        }
        let missing = &self.missing;
        self.left
            .make_room(&mut self.procs, MAX_PROCESSES, |pid, p| {
                (!missing.contains(pid), std::cmp::Reverse(p.start))
            })
    }

    /// The table's size, bound and departures.
    pub fn health(&self) -> pb::TableHealth {
        self.left
            .health("processes", self.procs.len(), MAX_PROCESSES)
    }

    /// A new process: it runs its parent's image until it execs. Returns it and the pids
    /// evicted to make room.
    pub fn fork(&mut self, child: ProcInfo) -> (&ProcInfo, Vec<Pid>) {
        let mut child = child;
        if let Some(parent) = self.procs.get(&child.ppid) {
            child.exe = parent.exe.clone();
            child.args = parent.args.clone();
            child.uid = parent.uid;
            child.gid = parent.gid;
            child.euid = parent.euid;
            child.egid = parent.egid;
            child.cap_effective = parent.cap_effective;
            child.seccomp_mode = parent.seccomp_mode;
            child.namespaces = parent.namespaces;
            child.unlinked_exe = parent.unlinked_exe.clone();
        }
        let pid = child.pid;
        let evicted = self.make_room(pid);
        self.procs.insert(pid, child);
        (&self.procs[&pid], evicted)
    }

    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut ProcInfo> {
        self.procs.get_mut(&pid)
    }

    pub fn remove(&mut self, pid: Pid) -> Option<ProcInfo> {
        self.procs.remove(&pid)
    }

    /// Parent first, climbing while `keep` holds (for example: same container), at most 16.
    pub fn ancestry(&self, pid: Pid, keep: impl Fn(&ProcInfo) -> bool) -> Vec<&ProcInfo> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(&pid).map(|p| p.ppid);
        while let Some(ppid) = cur {
            if ppid.0 == 0 || out.len() >= MAX_ANCESTRY {
                break;
            }
            let Some(parent) = self.procs.get(&ppid) else {
                break;
            };
            if !keep(parent) {
                break;
            }
            out.push(parent);
            cur = Some(parent.ppid);
        }
        out
    }

    /// Drops entries whose process is gone (an exit record was lost) or was replaced by another
    /// process with the same pid, once two kernel views in a row found them so (see
    /// [`super::kernel_view`]). Returns the pids dropped.
    pub fn prune_missing(&mut self, view: &KernelView) -> Vec<Pid> {
        let gone = self.missing.confirm(
            self.procs
                .values()
                .filter(|p| p.start < view.taken_at && !view.has_process(p.pid, p.start))
                .map(|p| p.pid),
        );
        for pid in &gone {
            self.procs.remove(pid);
        }
        self.left.pruned += gone.len() as u64;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, exe: &str, cgroup: u64) -> ProcInfo {
        ProcInfo {
            pid: Pid(pid),
            ppid: Pid(ppid),
            exe: exe.into(),
            cgroup_id: CgroupId(cgroup),
            ..Default::default()
        }
    }

    #[test]
    fn recent_processes_are_found_after_their_exit_by_pid_and_cgroup() {
        let mut t = ProcessTable::default();
        let gone = t
            .remove(Pid(5))
            .unwrap_or_else(|| proc(5, 1, "/connect-loop", 7));
        t.exited(gone);
        // The pid was reused by another container's process: the exited one still answers.
        t.insert(proc(5, 1, "/bin/sh", 9));
        let exe = |t: &ProcessTable, cgroup| {
            t.get_recent(Pid(5), CgroupId(cgroup))
                .map(|p| p.exe.clone())
        };
        assert_eq!(exe(&t, 9).as_deref(), Some("/bin/sh"));
        assert_eq!(exe(&t, 7).as_deref(), Some("/connect-loop"));
        assert_eq!(exe(&t, 8), None);
        // Only the last MAX_EXITED are kept.
        for pid in 100..100 + MAX_EXITED as u32 {
            t.exited(proc(pid, 1, "/bin/true", 7));
        }
        assert_eq!(exe(&t, 7), None);
        assert!(t.get_recent(Pid(100), CgroupId(7)).is_some());
    }

    #[test]
    fn ancestry_stops_at_container_boundary() {
        let mut t = ProcessTable::default();
        t.insert(proc(1, 0, "/sbin/init", 1));
        t.insert(proc(10, 1, "/usr/bin/containerd-shim", 1));
        t.insert(proc(11, 10, "/bin/sh", 7));
        t.insert(proc(12, 11, "/bin/busybox", 7));
        t.insert(proc(13, 12, "/bin/id", 7));
        let chain: Vec<u32> = t
            .ancestry(Pid(13), |p| p.cgroup_id == CgroupId(7))
            .iter()
            .map(|p| p.pid.0)
            .collect();
        assert_eq!(chain, vec![12, 11]);
        let all: Vec<u32> = t
            .ancestry(Pid(13), |_| true)
            .iter()
            .map(|p| p.pid.0)
            .collect();
        assert_eq!(all, vec![12, 11, 10, 1]);
    }

    #[test]
    fn fork_inherits_image() {
        let mut t = ProcessTable::default();
        let mut parent = proc(5, 1, "/bin/sh", 3);
        parent.args = vec!["sh".into(), "-c".into()];
        parent.euid = 1000;
        t.insert(parent);
        let (child, _) = t.fork(proc(6, 5, "", 3));
        assert_eq!(child.exe, "/bin/sh");
        assert_eq!(child.args, vec!["sh", "-c"]);
        assert_eq!(child.euid, 1000);
        assert!(t.remove(Pid(6)).is_some());
        assert!(t.remove(Pid(6)).is_none());
    }

    fn view_now() -> KernelView {
        KernelView::read(None)
    }

    #[test]
    fn pruning_keeps_a_live_process_whose_start_came_from_the_kernel() {
        // The kernel reports start times in ns; /proc rounds them to clock ticks.
        let mut t = ProcessTable::default();
        let me = procfs::snapshot(std::process::id()).unwrap();
        let mut info = ProcInfo::from_snapshot(Pid(std::process::id()), me, CgroupId(1));
        info.start = BootNs(info.start.0 + crate::clock::ticks_to_boot_ns(1).0 / 2);
        t.insert(info);
        for _ in 0..2 {
            assert!(t.prune_missing(&view_now()).is_empty());
        }
        assert!(t.get(Pid(std::process::id())).is_some());
    }

    #[test]
    fn pruning_drops_the_dead_after_two_views_and_spares_the_newer() {
        let mut t = ProcessTable::default();
        let me = procfs::snapshot(std::process::id()).unwrap();
        t.insert(ProcInfo::from_snapshot(
            Pid(std::process::id()),
            me,
            CgroupId(1),
        ));
        // pid_max is at most 4194304, so these pids cannot exist.
        let mut gone = proc(4_194_400, 1, "/gone", 1);
        gone.start = BootNs(1);
        t.insert(gone);
        let old_view = view_now();
        // Added after the view was read: not judged by it.
        let mut newer = proc(4_194_401, 1, "/newer", 1);
        newer.start = crate::clock::Clock::boot_now();
        t.insert(newer);
        // Kept once, for an exit record still on its way; dropped by the next view.
        assert!(t.prune_missing(&old_view).is_empty());
        assert!(t.get(Pid(4_194_400)).is_some());
        assert_eq!(t.prune_missing(&old_view), [Pid(4_194_400)]);
        assert!(t.get(Pid(4_194_401)).is_some());
        assert!(t.get(Pid(std::process::id())).is_some());
        assert_eq!(t.health().pruned, 1);
    }

    #[test]
    fn a_full_table_evicts_the_missing_then_the_youngest() {
        let mut t = ProcessTable::default();
        for pid in 1..=MAX_PROCESSES as u32 {
            let mut p = proc(pid, 1, "/x", 1);
            p.start = BootNs(u64::from(pid));
            t.insert(p);
        }
        // Pid 2 is missed by a view, so it goes first, then the youngest.
        let view = KernelView {
            taken_at: BootNs(u64::MAX),
            procs: (1..=MAX_PROCESSES as u32)
                .filter(|&p| p != 2)
                .map(|p| (Pid(p), BootNs(u64::from(p))))
                .collect(),
            cgroups: None,
        };
        assert!(t.prune_missing(&view).is_empty());
        let mut newcomer = proc(MAX_PROCESSES as u32 + 1, 1, "/y", 1);
        newcomer.start = BootNs(u64::MAX - 1);
        let mut evicted = t.insert(newcomer);
        evicted.sort_unstable();
        assert_eq!(evicted.len(), MAX_PROCESSES / 16);
        assert_eq!(evicted[0], Pid(2));
        assert_eq!(
            evicted[1],
            Pid((MAX_PROCESSES - MAX_PROCESSES / 16 + 2) as u32)
        );
        assert!(t.get(Pid(1)).is_some());
        assert!(t.get(Pid(MAX_PROCESSES as u32 + 1)).is_some());
        assert_eq!(t.health().evicted, (MAX_PROCESSES / 16) as u64);
    }
}
