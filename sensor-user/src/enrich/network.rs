//! Enrichment of socket, namespace and TCP records, of the repeat windows that ended with counts
//! no record carried, and of the kernel's traffic and ICMP aggregates (cumulative counters
//! turned into per-interval deltas).

use std::collections::HashMap;

use sensor_common::{
    COMM_LEN, Caller, DIR_EGRESS, DIR_INGRESS, Endpoint, FlowKey, FlowStats, IcmpKey, IcmpStats,
    Namespaces, NsOp, NsRecord, RECORD_VERSION, REPEAT_TCP_STATE, RecordHeader, RecordKind,
    SOCK_FLAG_ICMP_DGRAM, SOCK_FLAG_IO_URING, SOCK_FLAG_PACKET, SOCK_FLAG_RAW, SockOp, SockRecord,
    TcIcmpKey, TcpStateRecord,
};
use sensor_proto::{self as pb, event::Body};

use super::{Enricher, names, process_table::ProcInfo};
use crate::{
    clock::duration,
    decode::c_str,
    loader::{AggregateSnapshot, EndedWindow},
    types::{BootNs, CgroupId, Pid},
};

/// The host's namespace inodes (the sensor's own), to flag changes into them.
pub fn host_namespaces() -> Namespaces {
    super::procfs::namespaces("/proc/self")
}

/// The types of `ns` that equal the host's (a 0 inode, unreadable, never matches).
pub fn host_types(ns: &Namespaces, host: &Namespaces) -> Vec<String> {
    by_type(ns)
        .iter()
        .zip(by_type(host).iter())
        .filter(|((_, a), (_, h))| *a != 0 && a == h)
        .map(|((t, _), _)| t.to_string())
        .collect()
}

fn by_type(ns: &Namespaces) -> [(&'static str, u32); 7] {
    [
        ("mnt", ns.mnt),
        ("pid", ns.pid),
        ("net", ns.net),
        ("uts", ns.uts),
        ("ipc", ns.ipc),
        ("user", ns.user),
        ("cgroup", ns.cgroup),
    ]
}

/// Last cumulative counters read from the kernel maps.
#[derive(Default)]
pub struct AggregateState {
    flows: HashMap<FlowKey, FlowStats>,
    icmp: HashMap<IcmpKey, IcmpCounts>,
    tc_icmp: HashMap<TcIcmpKey, IcmpCounts>,
    last_read: Option<BootNs>,
    /// Container addresses (IPv4 in the first 4 bytes) -> the container's cgroup.
    addresses: HashMap<[u8; 16], CgroupId>,
    /// The net namespace each container's addresses were read from.
    address_netns: HashMap<CgroupId, u32>,
    /// Host-side veth ifindex -> the container on the other end.
    veths: HashMap<u32, CgroupId>,
}

fn direction(d: u8) -> String {
    if d == DIR_EGRESS { "egress" } else { "ingress" }.into()
}

impl Enricher {
    /// The process a caller belongs to: the table's entry, or what the record says.
    pub(super) fn caller_info(&self, caller: &Caller) -> ProcInfo {
        let mut info = self
            .procs
            .get(Pid(caller.tgid))
            .cloned()
            .unwrap_or_else(|| ProcInfo {
                pid: Pid(caller.tgid),
                comm: c_str(&caller.comm, caller.comm.len()),
                ..Default::default()
            });
        info.cgroup_id = CgroupId(caller.cgroup_id);
        info
    }

    pub(super) fn on_sock(&mut self, r: &SockRecord, out: &mut Vec<pb::Event>) {
        let info = self.caller_info(&r.caller);
        let Some(op) = self.sock_call(r, &info, false, out) else {
            return;
        };
        if matches!(op, "connect" | "accept")
            && r.ret >= 0
            && let Some(peer) = names::endpoint(&r.remote)
        {
            self.relay_at_connection(info.pid, peer, BootNs(r.header.boot_ns), out);
        }
    }

    /// The `socket` event of `r`, made by `info` (`trailing`: the repeats of an ended window);
    /// its operation, or nothing for an operation this agent does not know.
    fn sock_call(
        &mut self,
        r: &SockRecord,
        info: &ProcInfo,
        trailing: bool,
        out: &mut Vec<pb::Event>,
    ) -> Option<&'static str> {
        let op = match SockOp::from_u8(r.op) {
            Some(SockOp::Socket) => "socket",
            Some(SockOp::Connect) => "connect",
            Some(SockOp::Accept) => "accept",
            Some(SockOp::Bind) => "bind",
            Some(SockOp::Listen) => "listen",
            Some(SockOp::Send) => "send",
            None => return None,
        };
        let body = Body::Socket(pb::SocketCall {
            op: op.into(),
            family: names::family(r.family),
            r#type: names::sock_type(r.sock_type),
            protocol: r.protocol as u32,
            fd: r.fd,
            result: r.ret,
            error: names::errno(r.ret),
            local: names::endpoint(&r.local),
            remote: names::endpoint(&r.remote),
            raw: r.flags & SOCK_FLAG_RAW != 0,
            packet: r.flags & SOCK_FLAG_PACKET != 0,
            icmp_dgram: r.flags & SOCK_FLAG_ICMP_DGRAM != 0,
            address_source: match op {
                "connect" | "bind" => "kernel".into(),
                _ => String::new(),
            },
            io_uring: r.flags & SOCK_FLAG_IO_URING != 0,
            repeats: r.repeats,
            trailing,
        });
        self.process_event(info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
        Some(op)
    }

    pub(super) fn on_ns(&mut self, r: &NsRecord, out: &mut Vec<pb::Event>) {
        let Some(op) = NsOp::from_u8(r.op) else {
            return;
        };
        let types = names::ns_types(r.flags);
        let (before, after) = (&r.ns_before, &r.ns_after);
        let changed: Vec<(&str, u32)> = by_type(after)
            .into_iter()
            .zip(by_type(before))
            .filter(|((_, a), (_, b))| a != b)
            .map(|(a, _)| a)
            .collect();
        let now_host = host_types(after, &self.host_ns);
        let entered_host = changed
            .iter()
            .find(|(t, _)| now_host.iter().any(|h| h == t))
            .map(|(t, _)| t.to_string());
        let only = (changed.len() == 1).then(|| changed[0]);
        let body = Body::NamespaceChange(pb::NamespaceChange {
            op: match op {
                NsOp::Clone => "clone",
                NsOp::Changed => "changed",
            }
            .into(),
            target_is_host: entered_host.is_some(),
            target_type: entered_host
                .or_else(|| only.map(|(t, _)| t.to_string()))
                .unwrap_or_default(),
            target_inode: only.map_or(0, |(_, inode)| inode),
            types,
            flags: r.flags,
            after: Some(names::namespaces(after)),
            before: Some(names::namespaces(before)),
            after_host_types: now_host,
            child_pid: r.child_tgid,
        });
        let mut info = self.caller_info(&r.caller);
        // The caller's namespaces changed: keep the table current for later events.
        if op == NsOp::Changed {
            info.namespaces = r.ns_after;
            if let Some(entry) = self.procs.get_mut(info.pid) {
                entry.namespaces = r.ns_after;
            }
        }
        self.process_event(&info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
    }

    pub(super) fn on_tcp_state(&mut self, r: &TcpStateRecord, out: &mut Vec<pb::Event>) {
        self.tcp_state(r, false, out);
    }

    fn tcp_state(&mut self, r: &TcpStateRecord, trailing: bool, out: &mut Vec<pb::Event>) {
        let body = Body::TcpState(pb::TcpState {
            old_state: names::tcp_state(r.old_state),
            new_state: names::tcp_state(r.new_state),
            local: names::endpoint(&r.local),
            remote: names::endpoint(&r.remote),
            repeats: r.repeats,
            trailing,
        });
        self.cgroup_event(CgroupId(r.cgroup_id), BootNs(r.header.boot_ns), body, out);
    }

    /// The operations of a repeat window that ended with no report to carry them: one event
    /// for them all, made from the window's key, `trailing`, at `now`.
    pub fn ended_window(&mut self, window: &EndedWindow, now: BootNs, out: &mut Vec<pb::Event>) {
        let key = &window.key;
        // The event stands for one of them, as every event does.
        let repeats = window.count.saturating_sub(1).min(u32::MAX as u64) as u32;
        let header = |kind: RecordKind| RecordHeader {
            version: RECORD_VERSION,
            kind: kind as u16,
            cpu: 0,
            boot_ns: now.0,
        };
        if key.op & REPEAT_TCP_STATE != 0 {
            let r = TcpStateRecord {
                header: header(RecordKind::TcpState),
                cgroup_id: key.cgroup_id,
                local: key.local,
                remote: key.remote,
                old_state: 0,
                new_state: (key.op & !REPEAT_TCP_STATE) as u32,
                repeats,
                _pad: 0,
            };
            self.tcp_state(&r, true, out);
        } else {
            let r = SockRecord {
                header: header(RecordKind::Sock),
                caller: Caller {
                    pid: key.tgid,
                    tgid: key.tgid,
                    cgroup_id: key.cgroup_id,
                    comm: [0; COMM_LEN],
                },
                local: key.local,
                remote: key.remote,
                ret: 0,
                fd: -1,
                family: key.family,
                sock_type: key.sock_type,
                protocol: key.protocol,
                op: key.op,
                flags: key.flags,
                repeats,
            };
            // Its process may have exited since (the window ends a window after its last), and
            // its pid be another's now: looked up by pid and cgroup.
            let (pid, cgroup_id) = (Pid(key.tgid), CgroupId(key.cgroup_id));
            let info = self
                .procs
                .get_recent(pid, cgroup_id)
                .cloned()
                .unwrap_or(ProcInfo {
                    pid,
                    cgroup_id,
                    ..Default::default()
                });
            self.sock_call(&r, &info, true, out);
        }
    }

    /// Turns the traffic and ICMP maps' cumulative counters into per-interval events.
    /// `interfaces` names the ifindexes of interface-level ICMP records.
    pub fn aggregates(
        &mut self,
        snapshot: AggregateSnapshot,
        interfaces: &HashMap<u32, String>,
        now: BootNs,
        out: &mut Vec<pb::Event>,
    ) {
        let state = &mut self.aggregates;
        let interval = state.last_read.map(|t| duration(now.since(t)));
        state.last_read = Some(now);

        let mut reports: Vec<(CgroupId, Body)> = Vec::new();
        let mut seen = HashMap::with_capacity(snapshot.flows.len());
        for (key, stats) in snapshot.flows {
            let last = state.flows.get(&key).copied().unwrap_or_default();
            seen.insert(key, stats);
            let peer = Endpoint {
                addr: key.peer,
                port: key.peer_port,
                family: key.family,
            };
            for dir in [DIR_EGRESS, DIR_INGRESS] {
                let (now, before) = (stats.ways[dir as usize], last.ways[dir as usize]);
                // A smaller count means the LRU evicted the entry and it started again.
                let (bytes, packets) = if now.bytes >= before.bytes {
                    (
                        now.bytes - before.bytes,
                        now.packets.saturating_sub(before.packets),
                    )
                } else {
                    (now.bytes, now.packets)
                };
                if bytes == 0 {
                    continue;
                }
                reports.push((
                    CgroupId(key.cgroup_id),
                    Body::Traffic(pb::Traffic {
                        direction: direction(dir),
                        protocol: key.protocol as u32,
                        protocol_name: names::protocol(key.protocol),
                        peer: names::endpoint(&peer),
                        bytes,
                        packets,
                        interval,
                        local_port: key.local_port as u32,
                    }),
                ));
            }
        }
        state.flows = seen;

        for (key, mut body) in icmp_deltas(
            snapshot.icmp,
            &mut state.icmp,
            |k| (k.family, k.icmp_type, k.direction),
            interval,
        ) {
            body.source = "socket".into();
            body.peer = names::endpoint(&Endpoint {
                addr: key.peer,
                port: 0,
                family: key.family,
            });
            reports.push((CgroupId(key.cgroup_id), Body::Icmp(body)));
        }

        let mut on_wire = Vec::new();
        for (key, mut body) in icmp_deltas(
            snapshot.tc_icmp,
            &mut state.tc_icmp,
            |k| (k.family, k.icmp_type, k.direction),
            interval,
        ) {
            body.source = "interface".into();
            body.interface = interfaces
                .get(&key.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {}", key.ifindex));
            body.src = names::endpoint(&Endpoint {
                addr: key.src,
                port: 0,
                family: key.family,
            });
            body.dst = names::endpoint(&Endpoint {
                addr: key.dst,
                port: 0,
                family: key.family,
            });
            on_wire.push((key, body));
        }
        if !on_wire.is_empty() {
            self.refresh_container_addresses();
        }
        for (key, body) in on_wire {
            // A container's own veth names it for sure; on shared interfaces (the bridge,
            // loopback) the address decides, which is ambiguous when an address is reused.
            let owner = self
                .aggregates
                .veths
                .get(&key.ifindex)
                .copied()
                .or_else(|| {
                    [key.src, key.dst]
                        .iter()
                        .find_map(|a| self.aggregates.addresses.get(a).copied())
                });
            reports.push((owner.unwrap_or(CgroupId(0)), Body::Icmp(body)));
        }

        for (cgroup, body) in reports {
            self.cgroup_event(cgroup, now, body, out);
        }
    }

    /// Learns the IP addresses of running containers with their own network namespace, from a
    /// member process's `/proc/PID/net/fib_trie` (its namespace's local addresses).
    fn refresh_container_addresses(&mut self) {
        let host_net = self.host_ns.net;
        // container cgroup -> (its net namespace, member pids to try)
        let mut candidates: HashMap<CgroupId, (u32, Vec<u32>)> = HashMap::new();
        for info in self.procs.iter() {
            let Some(entry) = self.cgroups.get(info.cgroup_id) else {
                continue;
            };
            let Some(cref) = &entry.container else {
                continue;
            };
            let Some(live) = self.cgroups.container(&cref.id) else {
                continue;
            };
            let netns = info.namespaces.net;
            if netns == 0
                || netns == host_net
                || self.aggregates.address_netns.get(&live.cgroup_id) == Some(&netns)
            {
                continue;
            }
            candidates
                .entry(live.cgroup_id)
                .or_insert((netns, Vec::new()))
                .1
                .push(info.pid.0);
        }
        for (cgroup, (netns, pids)) in candidates {
            // Short-lived members (runc helpers) may be gone: the first one that answers counts.
            let Some(pid) = pids
                .into_iter()
                .find(|pid| !super::procfs::local_addresses(*pid).is_empty())
            else {
                continue;
            };
            for addr in super::procfs::local_addresses(pid) {
                self.aggregates.addresses.insert(addr, cgroup);
            }
            for ifindex in super::procfs::peer_ifindexes(pid) {
                self.aggregates.veths.insert(ifindex, cgroup);
            }
            self.aggregates.address_netns.insert(cgroup, netns);
        }
    }
}

/// The cumulative counters of an ICMP map entry, for deltas.
#[derive(Clone, Copy, Default)]
pub struct IcmpCounts {
    count: u64,
    bytes: u64,
    buckets: [u32; 8],
}

impl IcmpCounts {
    fn of(s: &IcmpStats) -> Self {
        Self {
            count: s.count,
            bytes: s.payload_bytes,
            buckets: s.size_buckets,
        }
    }
}

/// The interval's reports of one ICMP map: each entry's delta against `last`, which becomes the
/// snapshot's counters (entries the kernel evicted drop out with it). `what` gives an entry's
/// (family, type, direction).
fn icmp_deltas<K: Copy + Eq + std::hash::Hash>(
    entries: Vec<(K, IcmpStats)>,
    last: &mut HashMap<K, IcmpCounts>,
    what: impl Fn(&K) -> (u16, u8, u8),
    interval: Option<pbjson_types::Duration>,
) -> Vec<(K, pb::Icmp)> {
    let previous = std::mem::take(last);
    let mut out = Vec::new();
    for (key, stats) in entries {
        last.insert(key, IcmpCounts::of(&stats));
        let (family, icmp_type, dir) = what(&key);
        if let Some(body) = icmp_body(
            &stats,
            previous.get(&key).copied(),
            family,
            icmp_type,
            dir,
            interval,
        ) {
            out.push((key, body));
        }
    }
    out
}

/// The interval's ICMP report for one entry, or `None` when nothing new arrived.
fn icmp_body(
    stats: &IcmpStats,
    last: Option<IcmpCounts>,
    family: u16,
    icmp_type: u8,
    dir: u8,
    interval: Option<pbjson_types::Duration>,
) -> Option<pb::Icmp> {
    let last = last.unwrap_or_default();
    // A smaller count means the LRU evicted the entry and it started again.
    let restarted = stats.count < last.count;
    let base = if restarted {
        IcmpCounts::default()
    } else {
        last
    };
    let count = stats.count - base.count;
    if count == 0 {
        return None;
    }
    let sample = |buf: &[u8], len: u32| buf[..(len as usize).min(buf.len())].to_vec();
    let latest = sample(&stats.last_sample, stats.last_sample_len);
    Some(pb::Icmp {
        direction: direction(dir),
        r#type: icmp_type as u32,
        type_name: names::icmp_type(family, icmp_type),
        count,
        payload_bytes: stats.payload_bytes.saturating_sub(base.bytes),
        size_buckets: stats
            .size_buckets
            .iter()
            .zip(base.buckets.iter())
            .map(|(n, l)| n.saturating_sub(*l) as u64)
            .collect(),
        last_payload_size: stats.last_payload_len,
        first_sample_hex: names::hex(&sample(&stats.first_sample, stats.first_sample_len)),
        last_sample_hex: names::hex(&latest),
        payload_pattern: names::payload_pattern(&latest),
        interval,
        ..Default::default()
    })
}
