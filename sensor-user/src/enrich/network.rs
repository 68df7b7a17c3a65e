//! Enrichment of socket, stdio-redirection, namespace and TCP records, and of the kernel's
//! traffic and ICMP aggregates (cumulative counters turned into per-interval deltas).

use std::collections::HashMap;

use sensor_common::{
    ADDR_FROM_KERNEL, Caller, DIR_EGRESS, DupRecord, FlowKey, FlowStats, IcmpKey, IcmpStats,
    Namespaces, NsOp, NsRecord, SOCK_FLAG_ICMP_DGRAM, SOCK_FLAG_PACKET, SOCK_FLAG_RAW, SockOp,
    SockRecord, TcpStateRecord,
};
use sensor_proto::{self as pb, event::Body};

use super::{Enricher, names, process_table::ProcInfo};
use crate::{
    clock::duration,
    decode::c_str,
    types::{BootNs, CgroupId, Pid},
};

/// The host's namespace inodes (the sensor's own), to flag changes into them.
pub fn host_namespaces() -> Namespaces {
    let ns = |name: &str| super::procfs::ns_inode(&format!("/proc/self/ns/{name}"));
    Namespaces {
        mnt: ns("mnt"),
        pid: ns("pid"),
        net: ns("net"),
        uts: ns("uts"),
        ipc: ns("ipc"),
        user: ns("user"),
        cgroup: ns("cgroup"),
        _pad: 0,
    }
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
    icmp: HashMap<IcmpKey, (u64, u64, [u32; 8])>,
    last_read: Option<BootNs>,
}

fn direction(d: u8) -> String {
    if d == DIR_EGRESS { "egress" } else { "ingress" }.into()
}

impl Enricher {
    /// The process a caller belongs to: the table's entry, or what the record says.
    fn caller_info(&self, caller: &Caller) -> ProcInfo {
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
        let op = match SockOp::from_u8(r.op) {
            Some(SockOp::Socket) => "socket",
            Some(SockOp::Connect) => "connect",
            Some(SockOp::Accept) => "accept",
            Some(SockOp::Bind) => "bind",
            Some(SockOp::Listen) => "listen",
            None => return,
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
            address_source: match (op, r.addr_source) {
                ("connect" | "bind", ADDR_FROM_KERNEL) => "kernel".into(),
                ("connect" | "bind", _) => "user".into(),
                _ => String::new(),
            },
        });
        let info = self.caller_info(&r.caller);
        self.process_event(&info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
    }

    pub(super) fn on_dup(&mut self, r: &DupRecord, out: &mut Vec<pb::Event>) {
        let body = Body::StdioRedirect(pb::StdioRedirect {
            oldfd: r.oldfd,
            newfd: r.newfd,
            result: r.ret as i64,
            error: names::errno(r.ret as i64),
            local: names::endpoint(&r.local),
            remote: names::endpoint(&r.remote),
            r#type: names::sock_type(r.sock_type),
            protocol: r.protocol as u32,
        });
        let info = self.caller_info(&r.caller);
        self.process_event(&info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
    }

    pub(super) fn on_ns(&mut self, r: &NsRecord, out: &mut Vec<pb::Event>) {
        let Some(op) = NsOp::from_u8(r.op) else {
            return;
        };
        let host = by_type(&self.host_ns);
        let target_host = (op == NsOp::Setns && r.target_inum != 0)
            .then(|| {
                host.iter()
                    .find(|(_, inode)| *inode == r.target_inum)
                    .map(|(t, _)| *t)
            })
            .flatten();
        let types = names::ns_types(r.flags);
        let after = &r.ns_after;
        let body = Body::NamespaceChange(pb::NamespaceChange {
            op: match op {
                NsOp::Setns => "setns",
                NsOp::Unshare => "unshare",
                NsOp::Clone => "clone",
            }
            .into(),
            target_type: target_host
                .map(str::to_string)
                .or_else(|| (op == NsOp::Setns && types.len() == 1).then(|| types[0].clone()))
                .unwrap_or_default(),
            types,
            flags: r.flags,
            result: if op == NsOp::Clone && r.ret > 0 {
                0
            } else {
                r.ret
            },
            error: names::errno(r.ret),
            target_inode: r.target_inum,
            target_is_host: target_host.is_some(),
            after: Some(pb::Namespaces {
                mnt: after.mnt,
                pid: after.pid,
                net: after.net,
                uts: after.uts,
                ipc: after.ipc,
                user: after.user,
                cgroup: after.cgroup,
            }),
            after_host_types: by_type(after)
                .iter()
                .zip(host.iter())
                .filter(|((_, a), (_, h))| *a != 0 && a == h)
                .map(|((t, _), _)| t.to_string())
                .collect(),
            fd: r.fd,
            child_pid: if op == NsOp::Clone && r.ret > 0 {
                r.ret as u32
            } else {
                0
            },
        });
        let mut info = self.caller_info(&r.caller);
        // The caller's namespaces changed: keep the table current for later events.
        if op != NsOp::Clone && r.ret == 0 {
            info.namespaces = r.ns_after;
            if let Some(entry) = self.procs.get(info.pid).cloned() {
                self.procs.insert(ProcInfo {
                    namespaces: r.ns_after,
                    ..entry
                });
            }
        }
        self.process_event(&info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
    }

    pub(super) fn on_tcp_state(&mut self, r: &TcpStateRecord, out: &mut Vec<pb::Event>) {
        let body = Body::TcpState(pb::TcpState {
            old_state: names::tcp_state(r.old_state),
            new_state: names::tcp_state(r.new_state),
            local: names::endpoint(&r.local),
            remote: names::endpoint(&r.remote),
        });
        self.cgroup_event(CgroupId(r.cgroup_id), BootNs(r.header.boot_ns), body, out);
    }

    /// Turns the traffic and ICMP maps' cumulative counters into per-interval events.
    pub fn aggregates(
        &mut self,
        flows: Vec<(FlowKey, FlowStats)>,
        icmp: Vec<(IcmpKey, IcmpStats)>,
        now: BootNs,
        out: &mut Vec<pb::Event>,
    ) {
        let state = &mut self.aggregates;
        let interval = state.last_read.map(|t| duration(now.since(t)));
        state.last_read = Some(now);

        let mut seen = HashMap::with_capacity(flows.len());
        let mut traffic = Vec::new();
        for (key, stats) in flows {
            let last = state.flows.get(&key).copied().unwrap_or_default();
            // A smaller count means the LRU evicted the entry and it started again.
            let (bytes, packets) = if stats.bytes >= last.bytes {
                (
                    stats.bytes - last.bytes,
                    stats.packets.saturating_sub(last.packets),
                )
            } else {
                (stats.bytes, stats.packets)
            };
            seen.insert(key, stats);
            if bytes == 0 {
                continue;
            }
            let peer = sensor_common::Endpoint {
                addr: key.peer,
                port: key.peer_port,
                family: key.family,
            };
            traffic.push((
                CgroupId(key.cgroup_id),
                Body::Traffic(pb::Traffic {
                    direction: direction(key.direction),
                    protocol: key.protocol as u32,
                    protocol_name: names::protocol(key.protocol),
                    peer: names::endpoint(&peer),
                    bytes,
                    packets,
                    interval,
                }),
            ));
        }
        state.flows = seen;

        let mut seen = HashMap::with_capacity(icmp.len());
        let mut messages = Vec::new();
        for (key, stats) in icmp {
            let (last_count, last_bytes, last_buckets) =
                state.icmp.get(&key).copied().unwrap_or_default();
            let restarted = stats.count < last_count;
            let (count, bytes) = if restarted {
                (stats.count, stats.payload_bytes)
            } else {
                (
                    stats.count - last_count,
                    stats.payload_bytes.saturating_sub(last_bytes),
                )
            };
            let buckets: Vec<u64> = stats
                .size_buckets
                .iter()
                .zip(last_buckets.iter())
                .map(|(now, last)| {
                    if restarted {
                        *now as u64
                    } else {
                        now.saturating_sub(*last) as u64
                    }
                })
                .collect();
            seen.insert(key, (stats.count, stats.payload_bytes, stats.size_buckets));
            if count == 0 {
                continue;
            }
            let peer = sensor_common::Endpoint {
                addr: key.peer,
                port: 0,
                family: key.family,
            };
            let first = &stats.first_sample
                [..(stats.first_sample_len as usize).min(stats.first_sample.len())];
            let latest =
                &stats.last_sample[..(stats.last_sample_len as usize).min(stats.last_sample.len())];
            messages.push((
                CgroupId(key.cgroup_id),
                Body::Icmp(pb::Icmp {
                    direction: direction(key.direction),
                    r#type: key.icmp_type as u32,
                    type_name: names::icmp_type(key.family, key.icmp_type),
                    peer: names::endpoint(&peer),
                    count,
                    payload_bytes: bytes,
                    size_buckets: buckets,
                    last_payload_size: stats.last_payload_len,
                    first_sample_hex: names::hex(first),
                    last_sample_hex: names::hex(latest),
                    payload_pattern: names::payload_pattern(latest),
                    interval,
                }),
            ));
        }
        state.icmp = seen;

        for (cgroup, body) in traffic.into_iter().chain(messages) {
            self.cgroup_event(cgroup, now, body, out);
        }
    }
}
