//! Enrichment: typed kernel records in, attributed events out.
//!
//! Owns the process table, the cgroup table and the runtime metadata cache. Every event from a
//! process says which container it ran in (full id, runtime, and name, image and labels once the
//! runtime answered) or that it ran on the host, and carries the process's ancestry up to the
//! container's first process.

mod bounded;
pub mod cgroups;
pub mod container_id;
pub mod holdback;
pub mod kernel_view;
pub mod names;
pub mod network;
pub mod process_table;
pub mod procfs;
mod relay;
pub mod runtime;
mod tamper;

use std::path::PathBuf;

use sensor_common::{
    EXEC_ARGV_TRUNCATED, EXEC_EXE_UNLINKED, EXEC_PARTIAL, ExecRecord, ForkRecord, Namespaces,
    STDIO_PTY_SHIFT, STDIO_SOCKET_MASK, TaskIds,
};
use sensor_proto::{self as pb, event::Body};

use self::{
    cgroups::{CgroupTable, ContainerChange, LiveContainer},
    container_id::{ContainerId, ContainerRef, Runtime},
    process_table::{ProcInfo, ProcessTable},
    runtime::{ContainerMeta, MetadataCache},
};
use crate::{
    caps,
    clock::{Clock, duration},
    decode::{Record, c_str, split_args},
    types::{BootNs, CgroupId, Pid},
};

/// Turns records into events; see the module doc.
pub struct Enricher {
    clock: Clock,
    node: String,
    procs: ProcessTable,
    cgroups: CgroupTable,
    cgroup_mount: Option<PathBuf>,
    /// The host's namespaces, to flag changes into them.
    host_ns: Namespaces,
    aggregates: network::AggregateState,
    metadata: MetadataCache,
    pipes: relay::PipeIndex,
    /// A container's first process ran since the last [`Enricher::take_netns_ready`].
    netns_ready: bool,
}

/// Where a process runs: a known container, or the host.
enum Placement {
    Host,
    Container(ContainerRef),
}

impl Enricher {
    pub fn new(clock: Clock, node: String) -> Self {
        Self {
            clock,
            node,
            procs: ProcessTable::default(),
            cgroups: CgroupTable::default(),
            cgroup_mount: crate::cgroupfs::cgroup2_mount(),
            host_ns: network::host_namespaces(),
            aggregates: network::AggregateState::default(),
            metadata: MetadataCache::default(),
            pipes: relay::PipeIndex::default(),
            netns_ready: false,
        }
    }

    /// Asks `requests` (the runtime API fetcher) about containers as they are first seen.
    pub fn set_runtime_requests(&mut self, requests: Option<runtime::Requests>) {
        self.metadata = MetadataCache::new(requests);
    }

    /// The runtime's answer about a container: events from now on carry it.
    pub fn runtime_metadata(&mut self, id: container_id::ContainerId, meta: ContainerMeta) {
        self.metadata.insert(id, meta);
    }

    /// The full id of the container `cgroup` belongs to (running or recently exited).
    pub fn container_id_of(&self, cgroup: CgroupId) -> Option<String> {
        let entry = self.cgroups.get(cgroup)?;
        entry.container.as_ref().map(|c| c.id.as_str().to_string())
    }

    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    pub fn container_count(&self) -> usize {
        self.cgroups.container_count()
    }

    /// Scans the cgroup2 hierarchy and `/proc`; returns `container_started` events (with
    /// `already_running`) for containers that predate the sensor.
    pub fn bootstrap(&mut self) -> Vec<pb::Event> {
        let now = Clock::boot_now();
        let mut changes = match &self.cgroup_mount {
            Some(mount) => self.cgroups.scan(&mount.clone(), now),
            None => Vec::new(),
        };
        for pid in procfs::all_pids() {
            let Some(snap) = procfs::snapshot(pid) else {
                continue;
            };
            let cgroup_id = snap
                .cgroup_path
                .as_deref()
                .and_then(|p| self.learn(p))
                .unwrap_or_default();
            let info = ProcInfo::from_snapshot(Pid(pid), snap, cgroup_id);
            if let Some(Placement::Container(cref)) = self
                .cgroups
                .get(cgroup_id)
                .map(|e| placement(e.container.as_ref()))
            {
                self.cgroups.note_process_start(&cref.id, info.start);
            }
            self.insert_process(info);
        }
        // Report start estimates lowered by the process scan.
        for change in &mut changes {
            if let ContainerChange::Started { container, .. } = change
                && let Some(live) = self.cgroups.container(&container.cref.id)
            {
                *container = live.clone();
            }
        }
        changes
            .into_iter()
            .map(|c| self.container_event(c, now))
            .collect()
    }

    /// cgroups classified since the last call: `(id, true)` for a host cgroup, `(id, false)` for
    /// one that is gone. The agent applies them to the kernel's host filter.
    pub fn take_host_cgroup_updates(&mut self) -> Vec<(CgroupId, bool)> {
        self.cgroups.take_host_updates()
    }

    /// Containers' cgroup directories (relative to the cgroup2 mount) that started (`true`) or
    /// exited (`false`) since the last call: the loader attaches the traffic programs to them.
    pub fn take_container_cgroup_updates(&mut self) -> Vec<(String, bool)> {
        self.cgroups.take_container_updates()
    }

    /// Whether a container's first process ran since the last call: its network namespace and
    /// interfaces exist by then, so the loader can attach to its routed link.
    pub fn take_netns_ready(&mut self) -> bool {
        std::mem::take(&mut self.netns_ready)
    }

    /// The `events_dropped` event of a cgroup's (or, for cgroup 0, the node's) loss, with the
    /// cgroup's container.
    pub fn dropped(&mut self, cgroup: CgroupId, body: pb::EventsDropped) -> Vec<pb::Event> {
        let mut out = Vec::new();
        self.cgroup_event(
            cgroup,
            Clock::boot_now(),
            Body::EventsDropped(body),
            &mut out,
        );
        out
    }

    /// Prunes the tables against `view` (entries whose exit or rmdir record was lost) and
    /// forgets what departed long enough ago; returns the `container_exited` events of
    /// containers found gone.
    pub fn apply_view(&mut self, view: &kernel_view::KernelView) -> Vec<pb::Event> {
        let now = Clock::boot_now();
        self.cgroups.prune(now);
        let exited: Vec<pb::Event> = self
            .cgroups
            .prune_missing(view)
            .into_iter()
            .map(|c| self.container_event(c, view.taken_at))
            .collect();
        let cgroups = &self.cgroups;
        self.metadata.prune(|id| cgroups.container(id).is_some());
        for pid in self.procs.prune_missing(view) {
            self.pipes.remove(pid);
        }
        exited
    }

    /// Sizes, bounds and departures of every table (`Health.tables`).
    pub fn tables(&self) -> Vec<pb::TableHealth> {
        let mut tables = vec![self.procs.health()];
        tables.extend(self.cgroups.health());
        tables.push(self.metadata.health());
        tables.push(self.pipes.health());
        tables
    }

    /// Adds or replaces a process, forgetting the pipes of those evicted to make room.
    fn insert_process(&mut self, info: ProcInfo) {
        for pid in self.procs.insert(info) {
            self.pipes.remove(pid);
        }
    }

    /// Enriches one record, appending the events it yields to `out`.
    pub fn handle(&mut self, record: Record, out: &mut Vec<pb::Event>) {
        match record {
            Record::Exec(r) => self.on_exec(&r, out),
            Record::Fork(r) => self.on_fork(&r, out),
            Record::Exit(r) => self.on_exit(&r.task, r.exit_code, BootNs(r.header.boot_ns), out),
            Record::CgroupMkdir(r) => {
                let at = BootNs(r.header.boot_ns);
                let path = c_str(&r.path, r.path_len as usize);
                if let Some(change) = self.cgroups.add(CgroupId(r.cgroup_id), &path, at, true) {
                    out.push(self.container_event(change, at));
                }
            }
            Record::Sock(r) => self.on_sock(&r, out),
            Record::Ns(r) => self.on_ns(&r, out),
            Record::TcpState(r) => self.on_tcp_state(&r, out),
            Record::Tamper(r) => self.on_tamper(&r, out),
            Record::CgroupRmdir(r) => {
                let at = BootNs(r.header.boot_ns);
                let path = c_str(&r.path, r.path_len as usize);
                if let Some(change) = self.cgroups.remove(CgroupId(r.cgroup_id), &path, at) {
                    out.push(self.container_event(change, at));
                }
            }
        }
    }

    fn on_exec(&mut self, r: &ExecRecord, out: &mut Vec<pb::Event>) {
        let at = BootNs(r.header.boot_ns);
        let argv_len = (r.argv_len as usize).min(r.argv.len());
        let mut info = ProcInfo {
            exe: procfs::resolve_exe(r.task.tgid, c_str(&r.filename, r.filename_len as usize)),
            unlinked_exe: (r.flags & EXEC_EXE_UNLINKED != 0)
                .then(|| c_str(&r.exe_file, r.exe_file.len())),
            args: split_args(&r.argv[..argv_len]),
            uid: r.creds.uid,
            gid: r.creds.gid,
            euid: r.creds.euid,
            egid: r.creds.egid,
            cap_effective: r.creds.cap_effective,
            seccomp_mode: r.creds.seccomp_mode,
            namespaces: r.ns,
            ..task_info(&r.task)
        };
        let stdio_peer = (r.stdio_sockets & STDIO_SOCKET_MASK != 0)
            .then(|| names::endpoint(&r.stdio_peer))
            .flatten();
        // Started with an inet socket on stdin and stdout (`nc -e PROGRAM`): connected, so a
        // program it relays on a pty or pipes of its own is found.
        if r.stdio_sockets & 0b11 == 0b11 {
            info.connected = stdio_peer.clone().filter(|p| !p.address.is_empty());
        }
        let tid = r.task.pid;
        self.insert_process(info.clone());
        self.pipes.set(
            info.pid,
            info.ppid,
            info.cgroup_id,
            r.stdio_pipes,
            channels(r.stdio_sockets),
        );
        let body = Body::Exec(pb::Exec {
            args_truncated: r.flags & EXEC_ARGV_TRUNCATED != 0,
            partial: r.flags & EXEC_PARTIAL != 0,
            stdio_socket_fds: stdio_fds(r.stdio_sockets),
            stdio_peer,
        });
        self.process_event(&info, tid, at, body, out);
        self.relay_at_exec(info.pid, at, out);
        self.netns_ready |= info.ns_pid == 1
            && self
                .cgroups
                .get(info.cgroup_id)
                .is_some_and(|e| e.container.is_some());
    }

    fn on_fork(&mut self, r: &ForkRecord, out: &mut Vec<pb::Event>) {
        let child = &r.child;
        let (info, evicted) = self.procs.fork(task_info(child));
        let info = info.clone();
        for pid in evicted {
            self.pipes.remove(pid);
        }
        let body = Body::Fork(pb::Fork {
            parent_pid: child.ppid,
            stdio_socket_fds: stdio_fds(r.stdio_sockets),
            stdio_peer: (r.stdio_sockets != 0)
                .then(|| names::endpoint(&r.stdio_peer))
                .flatten(),
        });
        self.process_event(&info, child.pid, BootNs(r.header.boot_ns), body, out);
    }

    fn on_exit(&mut self, task: &TaskIds, code: i32, at: BootNs, out: &mut Vec<pb::Event>) {
        let info = self
            .procs
            .remove(Pid(task.tgid))
            .unwrap_or_else(|| task_info(task));
        self.pipes.remove(info.pid);
        let body = Body::Exit(pb::Exit {
            exit_status: (code >> 8) & 0xff,
            signal: code & 0x7f,
            lifetime: Some(duration(at.since(BootNs(task.start_boot_ns)))),
        });
        self.process_event(&info, task.pid, at, body, out);
        self.procs.exited(info);
    }

    /// Builds an event about `info`, preceded by a `container_started` if its container was not
    /// known yet.
    fn process_event(
        &mut self,
        info: &ProcInfo,
        tid: u32,
        at: BootNs,
        body: Body,
        out: &mut Vec<pb::Event>,
    ) {
        let placement = self.place(info);
        let container = match &placement {
            Placement::Host => None,
            Placement::Container(cref) => {
                let path = self
                    .cgroups
                    .get(info.cgroup_id)
                    .map(|e| e.path.clone())
                    .unwrap_or_default();
                if let Some(change) = self
                    .cgroups
                    .ensure_container(cref, &path, info.cgroup_id, at)
                {
                    out.push(self.container_event(change, at));
                }
                self.cgroups
                    .container(&cref.id)
                    .map(|c| self.container_proto(c))
            }
        };
        let ancestry = self
            .procs
            .ancestry(info.pid, |p| match &placement {
                Placement::Host => true,
                Placement::Container(c) => self
                    .cgroups
                    .get(p.cgroup_id)
                    .and_then(|e| e.container.as_ref())
                    .is_some_and(|pc| pc.id == c.id),
            })
            .into_iter()
            .map(|p| pb::Ancestor {
                pid: p.pid.0,
                exe: p.exe.clone(),
                comm: p.comm.clone(),
            })
            .collect();
        let mut process = self.process_proto(info, tid);
        process.ancestry = ancestry;
        out.push(
            pb::Event {
                time: Some(self.clock.timestamp(at)),
                node: self.node.clone(),
                host: container.is_none(),
                container,
                process: Some(process),
                ..Default::default()
            }
            .with_body(body),
        );
    }

    /// An event about a cgroup's activity, not a process's (TCP state, traffic, ICMP).
    fn cgroup_event(
        &mut self,
        cgroup_id: CgroupId,
        at: BootNs,
        body: Body,
        out: &mut Vec<pb::Event>,
    ) {
        let container = match self
            .cgroups
            .get(cgroup_id)
            .and_then(|e| e.container.clone())
        {
            None => None,
            Some(cref) => {
                let path = self
                    .cgroups
                    .get(cgroup_id)
                    .map(|e| e.path.clone())
                    .unwrap_or_default();
                if let Some(change) = self.cgroups.ensure_container(&cref, &path, cgroup_id, at) {
                    out.push(self.container_event(change, at));
                }
                self.cgroups
                    .container(&cref.id)
                    .map(|c| self.container_proto(c))
            }
        };
        out.push(
            pb::Event {
                time: Some(self.clock.timestamp(at)),
                node: self.node.clone(),
                host: container.is_none(),
                container,
                ..Default::default()
            }
            .with_body(body),
        );
    }

    /// The container `info` runs in, learning its cgroup from /proc if the id is unknown.
    fn place(&mut self, info: &ProcInfo) -> Placement {
        if self.cgroups.get(info.cgroup_id).is_none()
            && let Some(path) = procfs::snapshot(info.pid.0).and_then(|s| s.cgroup_path)
        {
            self.learn(&path);
        }
        placement(
            self.cgroups
                .get(info.cgroup_id)
                .and_then(|e| e.container.as_ref()),
        )
    }

    fn learn(&mut self, path: &str) -> Option<CgroupId> {
        let mount = self.cgroup_mount.clone()?;
        self.cgroups.learn_path(&mount, path)
    }

    fn process_proto(&self, p: &ProcInfo, tid: u32) -> pb::Process {
        let ns = &p.namespaces;
        pb::Process {
            pid: p.pid.0,
            tid,
            ppid: p.ppid.0,
            ns_pid: p.ns_pid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            args: p.args.clone(),
            uid: p.uid,
            gid: p.gid,
            euid: p.euid,
            egid: p.egid,
            cgroup_id: p.cgroup_id.0,
            start_time: (p.start.0 > 0).then(|| self.clock.timestamp(p.start)),
            namespaces: Some(names::namespaces(ns)),
            cap_effective: caps::names(p.cap_effective),
            seccomp: seccomp_name(p.seccomp_mode).into(),
            exe_unlinked: p.unlinked_exe.is_some(),
            exe_file: p.unlinked_exe.clone().unwrap_or_default(),
            ancestry: Vec::new(),
            host_namespaces: network::host_types(&p.namespaces, &self.host_ns),
        }
    }

    fn container_event(&mut self, change: ContainerChange, at: BootNs) -> pb::Event {
        let (live, body) = match change {
            ContainerChange::Started {
                container,
                already_running,
            } => {
                self.metadata.want(&container.cref);
                (
                    container,
                    Body::ContainerStarted(pb::ContainerStarted { already_running }),
                )
            }
            ContainerChange::Exited { container, at } => {
                let body = Body::ContainerExited(pb::ContainerExited {
                    lifetime: Some(duration(at.since(container.started))),
                    lifetime_exact: container.exact,
                });
                (container, body)
            }
        };
        pb::Event {
            time: Some(self.clock.timestamp(at)),
            node: self.node.clone(),
            container: Some(self.container_proto(&live)),
            ..Default::default()
        }
        .with_body(body)
    }
}

fn placement(container: Option<&ContainerRef>) -> Placement {
    match container {
        Some(c) => Placement::Container(c.clone()),
        None => Placement::Host,
    }
}

impl Enricher {
    /// Fills in what the runtime said about container `c` (by its id, runtime and pod uid as
    /// the cgroup path gave them): at enrichment, and again for events held until it answered.
    pub fn apply_metadata(&self, out: &mut pb::Container) {
        let Some(id) = ContainerId::from_oci(&out.id) else {
            return;
        };
        let meta = self.metadata.get(&id);
        // Not answered yet: a pod the path names may be known from its other containers.
        let pod_answer = meta
            .filter(|m| m.pod.is_some())
            .or_else(|| self.metadata.pod(&out.pod_uid));
        let pod = pod_answer.and_then(|m| m.pod.as_ref());
        // kubelet's cgroupfs layout does not say which runtime made the container.
        if out.runtime == Runtime::Kubernetes.as_str()
            && let Some(m) = pod_answer.filter(|m| !m.runtime.is_empty())
        {
            out.runtime = m.runtime.clone();
        }
        out.pod = pod.map(|p| pb::Pod {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: p.uid.clone(),
            labels: p.labels.clone(),
        });
        if let Some(m) = meta {
            out.name = m.name.clone();
            out.image = m.image.clone();
            out.image_id = m.image_id.clone();
            out.labels = m.labels.clone();
            out.privileged = m.privileged;
            out.network_mode = m.network_mode.clone();
            out.pid_mode = m.pid_mode.clone();
        }
        if out.pod_uid.is_empty()
            && let Some(p) = pod
        {
            out.pod_uid = p.uid.clone();
        }
    }

    /// Whether events of container `id` should wait for its runtime's answer
    /// ([`holdback`]): it was asked about less than [`holdback::HOLD`] ago and has not answered.
    pub fn awaits_metadata(&self, id: &str) -> bool {
        self.metadata.awaiting(id, holdback::HOLD)
    }

    /// A container as events show it: what its cgroup says, and what its runtime said if it did.
    fn container_proto(&self, c: &LiveContainer) -> pb::Container {
        let mut out = pb::Container {
            id: c.cref.id.as_str().to_string(),
            runtime: c.cref.runtime.as_str().to_string(),
            cgroup_path: c.cgroup_path.clone(),
            cgroup_id: c.cgroup_id.0,
            pod_uid: c.cref.pod_uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        self.apply_metadata(&mut out);
        out
    }
}

/// The ids a record carries, as a (partial) process entry.
/// `task_struct.seccomp.mode` as the `Process.seccomp` field names it.
/// The fds (0-2) a stdio socket mask names.
/// The kind of each of fds 0-2 from an exec's stdio mask (where `stdio_pipes` holds an inode).
fn channels(mask: u32) -> [relay::Channel; 3] {
    std::array::from_fn(|fd| {
        if mask & (1 << fd) != 0 {
            relay::Channel::Socket
        } else if mask & (1 << (STDIO_PTY_SHIFT as usize + fd)) != 0 {
            relay::Channel::Pty
        } else {
            relay::Channel::Pipe
        }
    })
}

fn stdio_fds(mask: u32) -> Vec<i32> {
    (0..3)
        .filter(|fd| mask & STDIO_SOCKET_MASK & (1 << fd) != 0)
        .collect()
}

fn seccomp_name(mode: u32) -> &'static str {
    match mode {
        sensor_common::SECCOMP_DISABLED => "disabled",
        1 => "strict",
        2 => "filter",
        _ => "unknown",
    }
}

fn task_info(t: &TaskIds) -> ProcInfo {
    ProcInfo {
        pid: Pid(t.tgid),
        ppid: Pid(t.ppid),
        ns_pid: t.ns_tgid,
        comm: c_str(&t.comm, t.comm.len()),
        cgroup_id: CgroupId(t.cgroup_id),
        start: BootNs(t.start_boot_ns),
        ..Default::default()
    }
}
