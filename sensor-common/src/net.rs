//! Network and namespace records, and the in-kernel aggregation maps' types.

use crate::records::{COMM_LEN, Namespaces, RecordHeader};

/// An IPv4 or IPv6 address and port. IPv4 addresses sit in the first 4 bytes of `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// `AF_INET` (2), `AF_INET6` (10), `AF_UNIX` (1), 0 when unknown.
    pub family: u16,
}

/// The task that made a call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// A listening TCP socket: its cgroup and local port (the key of the kernel's listener map,
/// which the agent also seeds with listeners older than itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerKey {
    pub cgroup_id: u64,
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Which socket call a [`SockRecord`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOp {
    Socket = 1,
    Connect = 2,
    Accept = 3,
    Bind = 4,
    Listen = 5,
    /// A UDP datagram sent to an address (sendto/sendmsg with a destination, io_uring's
    /// included): reported once per socket and peer, not per datagram.
    Send = 6,
}

impl SockOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Socket,
            2 => Self::Connect,
            3 => Self::Accept,
            4 => Self::Bind,
            5 => Self::Listen,
            6 => Self::Send,
            _ => return None,
        })
    }
}

/// The socket is `SOCK_RAW`.
pub const SOCK_FLAG_RAW: u8 = 1 << 0;
/// The socket is `AF_PACKET`.
pub const SOCK_FLAG_PACKET: u8 = 1 << 1;
/// The socket is an ICMP datagram ("ping") socket.
pub const SOCK_FLAG_ICMP_DGRAM: u8 = 1 << 2;
/// The operation ran in an io_uring worker thread (`PF_IO_WORKER`): a request submitted
/// through io_uring. Requests the kernel completes inline, in the submitting task, look like
/// the task's own calls.
pub const SOCK_FLAG_IO_URING: u8 = 1 << 3;

/// A socket operation, seen where the kernel does the work (so io_uring requests count too):
/// - socket: a new inet socket (cgroup `sock_create`); with the syscall fallback, a `socket`
///   call of another family (netlink, packet) at its return;
/// - connect: a TCP connect's outcome (the state change out of `SYN_SENT`, with the
///   caller saved by cgroup `connect4`/`connect6`), or a UDP connect as the kernel receives it;
/// - bind: a successful bind (cgroup `post_bind4`/`post_bind6`);
/// - listen: the socket entering `LISTEN`;
/// - accept: a connection the listener's queue took (`SYN_RECV` to `ESTABLISHED`),
///   attributed to the process that listens.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockRecord {
    pub header: RecordHeader,
    pub caller: Caller,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// 0, `-errno` (a refused or timed-out connect), or a new fd (the syscall fallback).
    pub ret: i64,
    /// The socket's fd where the hook knows it (the syscall fallback), else -1.
    pub fd: i32,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub op: u8,
    pub flags: u8,
    /// How many identical operations of this process ([`RepeatKey`]) were not reported since
    /// the last one that was.
    pub repeats: u32,
}

/// Which namespace change a [`NsRecord`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsOp {
    /// A child created in namespaces other than its parent's (`clone` with `CLONE_NEW*`).
    Clone = 3,
    /// The task's namespaces differ from those it had at its last exec or fork: a `setns` or
    /// `unshare` (whichever way it was made), seen at its next exec or fork.
    Changed = 4,
}

impl NsOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            3 => Self::Clone,
            4 => Self::Changed,
            _ => return None,
        })
    }
}

/// The `CLONE_NEW*` flag of each namespace type, as `clone(2)` and `unshare(2)` number them.
pub const CLONE_NEWNS: u64 = 0x0002_0000;
pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
pub const CLONE_NEWPID: u64 = 0x2000_0000;
pub const CLONE_NEWNET: u64 = 0x4000_0000;
pub const CLONE_NEWTIME: u64 = 0x0000_0080;

impl Namespaces {
    /// The `CLONE_NEW*` flags of the namespace types whose inodes differ from `other`'s.
    #[inline(always)]
    pub fn differing(&self, other: &Namespaces) -> u64 {
        let pairs = [
            (self.mnt, other.mnt, CLONE_NEWNS),
            (self.pid, other.pid, CLONE_NEWPID),
            (self.net, other.net, CLONE_NEWNET),
            (self.uts, other.uts, CLONE_NEWUTS),
            (self.ipc, other.ipc, CLONE_NEWIPC),
            (self.user, other.user, CLONE_NEWUSER),
            (self.cgroup, other.cgroup, CLONE_NEWCGROUP),
        ];
        let mut flags = 0;
        for (a, b, flag) in pairs {
            if a != b {
                flags |= flag;
            }
        }
        flags
    }
}

/// A namespace change: a child created in new namespaces ([`NsOp::Clone`], at fork), or a task
/// whose namespaces changed since its last exec or fork ([`NsOp::Changed`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NsRecord {
    pub header: RecordHeader,
    pub caller: Caller,
    /// The namespaces before: the parent's (clone), or the task's at its last exec or fork.
    pub ns_before: Namespaces,
    /// The namespaces after (for clone: the child's).
    pub ns_after: Namespaces,
    /// The `CLONE_NEW*` flags of the namespace types that differ.
    pub flags: u64,
    /// clone: the child's pid.
    pub child_tgid: u32,
    pub op: u8,
    pub _pad: [u8; 3],
}

/// A TCP state change, from the `inet_sock_set_state` tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStateRecord {
    pub header: RecordHeader,
    /// The socket's cgroup (`sk->sk_cgrp_data`), not the current task's: the change may happen
    /// in softirq context.
    pub cgroup_id: u64,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub old_state: u32,
    pub new_state: u32,
    /// How many identical changes of this cgroup's sockets ([`RepeatKey`]) were not reported
    /// since the last one that was.
    pub repeats: u32,
    pub _pad: u32,
}

/// What makes two socket operations (or TCP state changes) the same for the repeat window
/// (`FilterConfig::net_repeat_ms`): within it only the first is reported, and the next one
/// reported after it says how many it stands for. A process connecting to one service ten
/// thousand times a second (a load generator, a connection pool) becomes a few records a
/// second; any operation that differs (another peer or port, another process, an error, a
/// new kind of socket) is reported as before. The port of the end that does not serve is left
/// out (see [`repeat_ports`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    pub cgroup_id: u64,
    /// The process (tgid); 0 for TCP state changes, which happen in no process's context.
    pub tgid: u32,
    /// A [`SockOp`], or `REPEAT_TCP_STATE + new state`.
    pub op: u8,
    pub flags: u8,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub _pad: u32,
}

/// [`RepeatKey::op`] of a TCP state change: this plus the new state.
pub const REPEAT_TCP_STATE: u8 = 0x80;

/// Which end of a socket serves it, as the kernel told the probe: the port of the serving end
/// names the service, the other end's is whatever port its kernel picked. Numbers alone cannot
/// say: a node may widen `ip_local_port_range` (to 1024-65535, say) so that clients' ports fall
/// below [`EPHEMERAL_PORTS`], and services listen above it (gRPC's 50051); keyed by number, each
/// such connection was a report and a flow of its own (a connect storm: about 8 000 events a
/// second and a doubled RSS, `cargo xtask bench --workload connect-container` before the fix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceEnd {
    /// This socket's end: it accepted the connection, or it listens.
    Local,
    /// The peer's: this socket connected to it.
    Remote,
    /// Not known (datagrams, binds): judged by the numbers ([`EPHEMERAL_PORTS`]).
    ByPorts,
}

/// Ports as a [`RepeatKey`] holds them: the port of the end that does not serve is 0, so a
/// client's connections to one service (or a server's from one client) are alike whatever
/// ports the kernel picked. Without a known [`ServiceEnd`], an ephemeral port
/// ([`EPHEMERAL_PORTS`] and up) facing a service port below that range is 0.
#[inline(always)]
pub fn repeat_ports(local: u16, remote: u16, service: ServiceEnd) -> (u16, u16) {
    let below = |p: u16| p != 0 && p < EPHEMERAL_PORTS;
    match service {
        ServiceEnd::Local => (local, 0),
        ServiceEnd::Remote => (0, remote),
        ServiceEnd::ByPorts if local >= EPHEMERAL_PORTS && below(remote) => (0, remote),
        ServiceEnd::ByPorts if remote >= EPHEMERAL_PORTS && below(local) => (local, 0),
        ServiceEnd::ByPorts => (local, remote),
    }
}

impl RepeatKey {
    /// The key of an operation of `tgid` in `cgroup_id` on a socket of `kind` (family, type,
    /// protocol) between `local` and `remote`, `service` the end that serves.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn new(
        cgroup_id: u64,
        tgid: u32,
        op: u8,
        flags: u8,
        kind: (u16, u16, u16),
        local: &Endpoint,
        remote: &Endpoint,
        service: ServiceEnd,
    ) -> RepeatKey {
        let mut key = RepeatKey {
            cgroup_id,
            tgid,
            op,
            flags,
            family: kind.0,
            sock_type: kind.1,
            protocol: kind.2,
            local: *local,
            remote: *remote,
            _pad: 0,
        };
        (key.local.port, key.remote.port) = repeat_ports(local.port, remote.port, service);
        key
    }
}

/// State of one [`RepeatKey`]: when its window opened and how many repeats it has hidden.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RepeatState {
    pub since_ns: u64,
    /// 64 bits: eBPF's atomic add.
    pub suppressed: u64,
}

/// Key of the traffic volume map: one (cgroup, peer, port, protocol); its value holds both
/// directions ([`FlowStats`]), so a TCP connection's close adds to one entry, not two.
///
/// The port is the service's: the peer's (`peer_port`) when the container is the client, its
/// own (`local_port`, with `peer_port` 0) when it serves: for TCP, when it accepted the
/// connection ([`tcp_ports`]); for datagrams, when a peer's ephemeral port
/// ([`EPHEMERAL_PORTS`]) reaches a port of the container below that range ([`service_ports`]).
/// So a server's connections from one client are one flow, not one per connection (a connect
/// storm made a flow and a `traffic` event per connection).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub cgroup_id: u64,
    pub peer: [u8; 16],
    pub peer_port: u16,
    pub family: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP...).
    pub protocol: u8,
    pub _pad: u8,
    /// The container's own port when it serves the flow (else 0).
    pub local_port: u16,
}

/// Where ephemeral (client) ports start: Linux's default `ip_local_port_range` is
/// 32768-60999, and IANA's dynamic range starts at 49152.
pub const EPHEMERAL_PORTS: u16 = 32768;

/// The (peer, local) ports a TCP flow is keyed by: the container's own port when it accepted the
/// connection (`local_serves`), else the peer's.
#[inline(always)]
pub fn tcp_ports(peer: u16, local: u16, local_serves: bool) -> (u16, u16) {
    if local_serves { (0, local) } else { (peer, 0) }
}

/// The (peer, local) ports a datagram flow is keyed by, from a packet's, judged by the numbers
/// (a datagram socket has no listener to ask): see [`FlowKey`].
#[inline(always)]
pub fn service_ports(peer: u16, local: u16) -> (u16, u16) {
    if peer >= EPHEMERAL_PORTS && local < EPHEMERAL_PORTS {
        (0, local)
    } else {
        (peer, 0)
    }
}

impl FlowKey {
    /// A TCP connection's flow, from its socket's endpoints (`local_serves`: the socket serves
    /// the connection): a v4-mapped IPv6 peer (a dual-stack socket talking IPv4) is keyed as
    /// the IPv4 packets it sends would be.
    #[inline(always)]
    pub fn tcp(cgroup_id: u64, local: &Endpoint, remote: &Endpoint, local_serves: bool) -> FlowKey {
        const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let mut key = FlowKey {
            cgroup_id,
            family: remote.family,
            protocol: IPPROTO_TCP,
            ..FlowKey::default()
        };
        if remote.family == AF_INET6 && remote.addr[..12] == V4_MAPPED {
            key.family = AF_INET;
            key.peer[..4].copy_from_slice(&remote.addr[12..]);
        } else if remote.family == AF_INET {
            key.peer[..4].copy_from_slice(&remote.addr[..4]);
        } else {
            key.peer = remote.addr;
        }
        (key.peer_port, key.local_port) = tcp_ports(remote.port, local.port, local_serves);
        key
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;

/// A TCP connection's volume is taken from its socket's own counters ([`TcpCounters`]) when
/// it closes and, while it lasts, each time its acknowledged or received bytes cross a
/// multiple of this number: no per-packet accounting.
pub const TCP_SAMPLE_BYTES: u64 = 256 << 10;

/// A TCP socket's cumulative counters (`struct tcp_sock`): bytes the peer acknowledged and
/// bytes received, segments out and in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub segs_out: u32,
    pub segs_in: u32,
}

/// Whether adding `more` to a connection's byte counter `count` makes it cross a multiple of
/// [`TCP_SAMPLE_BYTES`].
#[inline(always)]
pub fn tcp_sample_due(count: u64, more: u64) -> bool {
    more != 0 && count / TCP_SAMPLE_BYTES != count.wrapping_add(more) / TCP_SAMPLE_BYTES
}

pub const DIR_EGRESS: u8 = 0;
pub const DIR_INGRESS: u8 = 1;

/// Bytes and packets of a flow one way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    pub bytes: u64,
    pub packets: u64,
}

/// Value of the traffic volume map (per CPU; user space sums): the volume each way, indexed
/// by [`DIR_EGRESS`] and [`DIR_INGRESS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub ways: [Volume; 2],
}

impl FlowStats {
    /// `bytes` and `packets` in `direction` ([`DIR_EGRESS`] or [`DIR_INGRESS`]).
    #[inline(always)]
    pub fn one_way(direction: u8, bytes: u64, packets: u64) -> FlowStats {
        let mut stats = FlowStats::default();
        stats.ways[(direction & 1) as usize] = Volume { bytes, packets };
        stats
    }

    /// Adds `other`'s volume each way.
    #[inline(always)]
    pub fn add(&mut self, other: &FlowStats) {
        for (way, more) in self.ways.iter_mut().zip(&other.ways) {
            way.bytes += more.bytes;
            way.packets += more.packets;
        }
    }
}

/// Bytes of ICMP payload kept per (sender, peer, type).
pub const ICMP_SAMPLE: usize = 64;
/// Payload size buckets: <=64, <=128, <=256, <=512, <=1024, <=1472, <=4096, larger.
pub const ICMP_SIZE_BUCKETS: usize = 8;

/// Key of the ICMP map: echo traffic of one cgroup with one peer, by ICMP type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IcmpKey {
    pub cgroup_id: u64,
    pub peer: [u8; 16],
    pub family: u16,
    /// ICMP type (8 echo request, 0 echo reply; ICMPv6 128/129).
    pub icmp_type: u8,
    /// [`DIR_EGRESS`] (sent by a process) or [`DIR_INGRESS`] (received by one).
    pub direction: u8,
    pub _pad: u32,
}

/// Key of the interface-level ICMP map (TC classifiers): one interface, direction, addresses
/// and ICMP type. User space attributes it to a container by address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcIcmpKey {
    pub ifindex: u32,
    pub family: u16,
    pub icmp_type: u8,
    /// [`DIR_INGRESS`] (arrived on the interface) or [`DIR_EGRESS`] (left through it).
    pub direction: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Value of the ICMP maps.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IcmpStats {
    pub count: u64,
    pub payload_bytes: u64,
    pub size_buckets: [u32; ICMP_SIZE_BUCKETS],
    pub last_payload_len: u32,
    pub first_sample_len: u32,
    pub last_sample_len: u32,
    pub _pad: u32,
    /// When `last_sample` was taken (boot ns, to the jiffy: the eBPF side's window clock).
    pub last_sample_ns: u64,
    /// The first bytes of the first payload seen.
    pub first_sample: [u8; ICMP_SAMPLE],
    /// The first bytes of the latest payload sampled: every payload whose size differs from
    /// the one before, else at most one per [`ICMP_SAMPLE_GAP_NS`] (a flood's payloads are not
    /// all copied; a slow tunnel's all are).
    pub last_sample: [u8; ICMP_SAMPLE],
}

/// The least time between two samples of same-size payloads of one [`IcmpStats`] entry, give
/// or take a jiffy (measured on a clock read once per jiffy).
pub const ICMP_SAMPLE_GAP_NS: u64 = 10_000_000;

/// The bucket of a payload size.
pub fn icmp_bucket(len: u32) -> usize {
    match len {
        0..=64 => 0,
        65..=128 => 1,
        129..=256 => 2,
        257..=512 => 3,
        513..=1024 => 4,
        1025..=1472 => 5,
        1473..=4096 => 6,
        _ => 7,
    }
}

/// Kernel-side filtering and rate limiting, set by user space before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    /// Report network activity of host processes too (default: containers only).
    pub net_host: u32,
    /// Network records per second each cgroup may emit (token bucket rate); 0 = unlimited.
    pub net_rate_per_sec: u32,
    /// Token bucket depth.
    pub net_burst: u32,
    /// exec, fork and exit records per second each cgroup may emit on the process ring, so one
    /// cgroup's flood cannot cost another's events; 0 = unlimited.
    pub proc_rate_per_sec: u32,
    /// Token bucket depth.
    pub proc_burst: u32,
    /// The repeat window ([`RepeatKey`]) in milliseconds; 0 reports every operation.
    pub net_repeat_ms: u32,
}

impl FilterConfig {
    pub const fn default_const() -> Self {
        Self {
            net_host: 0,
            net_rate_per_sec: 2000,
            net_burst: 4000,
            proc_rate_per_sec: 5000,
            proc_burst: 10000,
            net_repeat_ms: 1000,
        }
    }
}

/// Key of the per-cgroup drop counters: who lost records, on which ring, and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// The cgroup whose record was dropped (rate limits: the limited cgroup; a full process
    /// ring: the current task's).
    pub cgroup_id: u64,
    pub ring: u32,
    /// A [`crate::DropReason`].
    pub reason: u32,
}

/// Per-cgroup token bucket state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RateState {
    /// Tokens, in thousandths.
    pub milli_tokens: u64,
    pub last_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), integer fields with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowStats {}
    unsafe impl aya::Pod for TcpCounters {}
    unsafe impl aya::Pod for RepeatKey {}
    unsafe impl aya::Pod for RepeatState {}
    unsafe impl aya::Pod for IcmpKey {}
    unsafe impl aya::Pod for IcmpStats {}
    unsafe impl aya::Pod for TcIcmpKey {}
    unsafe impl aya::Pod for FilterConfig {}
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Caller {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_8_byte_multiples() {
        use core::mem::size_of;
        for s in [
            size_of::<SockRecord>(),
            size_of::<NsRecord>(),
            size_of::<TcpStateRecord>(),
            size_of::<FlowKey>(),
            size_of::<FlowStats>(),
            size_of::<IcmpKey>(),
            size_of::<TcIcmpKey>(),
            size_of::<IcmpStats>(),
            size_of::<FilterConfig>(),
            size_of::<DropKey>(),
            size_of::<RepeatKey>(),
            size_of::<RepeatState>(),
        ] {
            assert_eq!(s % 8, 0, "{s}");
        }
        // Map keys without implicit padding (its bytes would be hashed uninitialised).
        assert_eq!(size_of::<RepeatKey>(), 8 + 4 + 2 + 3 * 2 + 2 * 20 + 4);
        assert_eq!(size_of::<Endpoint>(), 20);
    }

    #[test]
    fn differing_namespaces_name_their_clone_flags() {
        let a = Namespaces {
            mnt: 1,
            pid: 2,
            net: 3,
            uts: 4,
            ipc: 5,
            user: 6,
            cgroup: 7,
            _pad: 0,
        };
        assert_eq!(a.differing(&a), 0);
        let b = Namespaces {
            net: 9,
            uts: 9,
            ..a
        };
        assert_eq!(a.differing(&b), CLONE_NEWNET | CLONE_NEWUTS);
    }

    #[test]
    fn buckets() {
        assert_eq!(icmp_bucket(56), 0);
        assert_eq!(icmp_bucket(600), 4);
        assert_eq!(icmp_bucket(1472), 5);
        assert_eq!(icmp_bucket(65000), 7);
    }

    #[test]
    fn tcp_samples_fall_due_as_bytes_cross_a_multiple() {
        let t = TCP_SAMPLE_BYTES;
        assert!(tcp_sample_due(t - 1, 1));
        assert!(!tcp_sample_due(t, 1));
        assert!(!tcp_sample_due(0, t - 1));
        // A 64 KiB aggregate that carries the count past the boundary.
        assert!(tcp_sample_due(3 * t - 100, 64 << 10));
        assert!(!tcp_sample_due(3 * t - 100, 0));
    }

    #[test]
    fn a_tcp_flow_is_keyed_as_its_packets_are() {
        let ep = |family, addr: &[u8], port| {
            let mut e = Endpoint {
                family,
                port,
                ..Endpoint::default()
            };
            e.addr[..addr.len()].copy_from_slice(addr);
            e
        };
        let local = ep(2, &[172, 17, 0, 2], 8000);
        let remote = ep(2, &[172, 17, 0, 3], 41000);
        let k = FlowKey::tcp(7, &local, &remote, true);
        assert_eq!((k.cgroup_id, k.family, k.protocol), (7, 2, 6));
        assert_eq!(&k.peer[..4], &[172, 17, 0, 3]);
        assert_eq!(k.peer[4..], [0; 12]);
        assert_eq!((k.peer_port, k.local_port), (0, 8000));
        // A dual-stack socket's v4-mapped peer is the IPv4 address.
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 172, 17, 0, 3]);
        let v6 = FlowKey::tcp(7, &ep(10, &[0; 16], 8000), &ep(10, &mapped, 41000), true);
        assert_eq!(v6, k);
        // A real IPv6 peer keeps its address.
        let mut six = [0u8; 16];
        six[0] = 0xfd;
        let k6 = FlowKey::tcp(7, &ep(10, &[0; 16], 41000), &ep(10, &six, 443), false);
        assert_eq!((k6.family, k6.peer, k6.peer_port), (10, six, 443));
        // The serving end decides, not the numbers: a server on 50051 reached from port 5000 (a
        // client with a widened port range), and that client.
        let server = FlowKey::tcp(7, &ep(2, &[0; 4], 50051), &ep(2, &[0; 4], 5000), true);
        assert_eq!((server.peer_port, server.local_port), (0, 50051));
        let client = FlowKey::tcp(7, &ep(2, &[0; 4], 5000), &ep(2, &[0; 4], 50051), false);
        assert_eq!((client.peer_port, client.local_port), (50051, 0));
    }

    #[test]
    fn a_flow_holds_both_ways() {
        let mut s = FlowStats::one_way(DIR_INGRESS, 100, 2);
        assert_eq!(s.ways[DIR_EGRESS as usize], Volume::default());
        s.add(&FlowStats::one_way(DIR_EGRESS, 40, 1));
        s.add(&FlowStats::one_way(DIR_INGRESS, 10, 1));
        let way = |bytes, packets| Volume { bytes, packets };
        assert_eq!(s.ways, [way(40, 1), way(110, 3)]);
    }

    #[test]
    fn repeats_leave_out_the_port_of_the_end_that_does_not_serve() {
        use ServiceEnd::{ByPorts, Local, Remote};
        // Known ends: whatever the numbers (a widened port range, a service above 32768).
        assert_eq!(repeat_ports(5000, 8080, Remote), (0, 8080));
        assert_eq!(repeat_ports(50051, 5000, Local), (50051, 0));
        assert_eq!(repeat_ports(41000, 50051, Remote), (0, 50051));
        // By the numbers: a client's connects to a service, a server's accepts from a client.
        assert_eq!(repeat_ports(41000, 80, ByPorts), (0, 80));
        assert_eq!(repeat_ports(8080, 52000, ByPorts), (8080, 0));
        // A listener or a new socket: nothing to leave out.
        assert_eq!(repeat_ports(8080, 0, ByPorts), (8080, 0));
        assert_eq!(repeat_ports(0, 0, ByPorts), (0, 0));
        // Two ephemeral or two service ports: both kept.
        assert_eq!(repeat_ports(40000, 50000, ByPorts), (40000, 50000));
        assert_eq!(repeat_ports(53, 53, ByPorts), (53, 53));
        let ep = |port| Endpoint {
            port,
            family: 2,
            ..Endpoint::default()
        };
        let key = |tgid, local, remote, end| {
            RepeatKey::new(7, tgid, 2, 0, (2, 1, 6), &ep(local), &ep(remote), end)
        };
        let a = key(9, 41000, 80, ByPorts);
        assert_eq!(a, key(9, 41001, 80, ByPorts));
        assert_ne!(a, key(9, 41000, 81, ByPorts));
        assert_ne!(a, key(10, 41000, 80, ByPorts));
        // A connect keeps the service's port whatever its own: another service differs.
        assert_eq!(key(9, 5000, 8080, Remote), key(9, 5001, 8080, Remote));
        assert_ne!(key(9, 5000, 8080, Remote), key(9, 5000, 4444, Remote));
    }

    #[test]
    fn a_flow_is_keyed_by_its_service_port() {
        // A client (its own port ephemeral): the server's port.
        assert_eq!(service_ports(8080, 41000), (8080, 0));
        // A server reached from a client's ephemeral port: its own port, whatever the client's.
        assert_eq!(service_ports(41000, 8080), (0, 8080));
        assert_eq!(service_ports(55555, 8080), (0, 8080));
        // Both ephemeral (peer to peer) or both below: the peer's port, as before.
        assert_eq!(service_ports(40000, 50000), (40000, 0));
        assert_eq!(service_ports(53, 53), (53, 0));
    }
}
