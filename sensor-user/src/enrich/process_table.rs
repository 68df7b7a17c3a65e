//! The process table: what the agent knows of every live process, for ancestry and for events
//! (exit, later network) whose record carries only ids.
//!
//! Seeded from `/proc` at start, then kept by exec/fork/exit records. Entries whose exit was lost
//! are swept by [`ProcessTable::sweep`], which checks `/proc`.

use std::collections::{HashMap, HashSet};

use sensor_common::Namespaces;

use super::procfs::{self, ProcSnapshot};
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
    /// Entries the last sweep found gone from /proc: dropped by the next sweep if still here.
    missing: HashSet<Pid>,
}

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

    pub fn insert(&mut self, info: ProcInfo) {
        self.procs.insert(info.pid, info);
    }

    /// A new process: it runs its parent's image until it execs.
    pub fn fork(&mut self, child: ProcInfo) -> &ProcInfo {
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
        self.procs.insert(pid, child);
        &self.procs[&pid]
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
    /// process with the same pid, once two sweeps in a row found them so: a process that has
    /// just exited still has its exit record in the ring, and that record needs the entry (its
    /// args, its container). Returns how many were dropped.
    pub fn sweep(&mut self) -> usize {
        let before = self.procs.len();
        // /proc gives the start in clock ticks, the kernel records in ns: equal within a tick.
        let tick = crate::clock::ticks_to_boot_ns(1).0;
        let was_missing = std::mem::take(&mut self.missing);
        let missing = &mut self.missing;
        self.procs.retain(|pid, info| {
            let live = procfs::start_time(pid.0)
                .is_some_and(|start| info.start.0 == 0 || start.0.abs_diff(info.start.0) <= tick);
            if !live && !was_missing.contains(pid) {
                missing.insert(*pid);
                return true;
            }
            live
        });
        before - self.procs.len()
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
        let child = t.fork(proc(6, 5, "", 3));
        assert_eq!(child.exe, "/bin/sh");
        assert_eq!(child.args, vec!["sh", "-c"]);
        assert_eq!(child.euid, 1000);
        assert!(t.remove(Pid(6)).is_some());
        assert!(t.remove(Pid(6)).is_none());
    }

    #[test]
    fn sweep_keeps_a_live_process_whose_start_came_from_the_kernel() {
        // The kernel reports start times in ns; /proc rounds them to clock ticks.
        let mut t = ProcessTable::default();
        let me = procfs::snapshot(std::process::id()).unwrap();
        let mut info = ProcInfo::from_snapshot(Pid(std::process::id()), me, CgroupId(1));
        info.start = BootNs(info.start.0 + crate::clock::ticks_to_boot_ns(1).0 / 2);
        t.insert(info);
        assert_eq!(t.sweep(), 0);
        assert!(t.get(Pid(std::process::id())).is_some());
    }

    #[test]
    fn sweep_drops_dead_keeps_live() {
        let mut t = ProcessTable::default();
        let me = procfs::snapshot(std::process::id()).unwrap();
        t.insert(ProcInfo::from_snapshot(
            Pid(std::process::id()),
            me,
            CgroupId(1),
        ));
        // pid_max is at most 4194304, so this pid cannot exist.
        t.insert(proc(4_194_400, 1, "/gone", 1));
        // Kept once, for an exit record still on its way; dropped by the next sweep.
        assert_eq!(t.sweep(), 0);
        assert!(t.get(Pid(4_194_400)).is_some());
        assert_eq!(t.sweep(), 1);
        assert!(t.get(Pid(std::process::id())).is_some());
    }
}
