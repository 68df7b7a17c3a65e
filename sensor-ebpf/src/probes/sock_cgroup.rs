//! Socket operations where the kernel carries them out: cgroup `sock_create`, `connect4`/`6`,
//! `sendmsg4`/`6` (UDP datagrams to an address, once per socket and peer) and `post_bind4`/`6`
//! programs on the cgroup2 root. They run in the calling task's context
//! for every inet socket, whichever way the call was made (a syscall or an io_uring request),
//! cost nothing on other syscalls, and see the kernel's own copy of the address.
//!
//! Every program returns 1 (allow): the sensor observes, it never refuses an operation.
//! A TCP connect is not reported here but at its outcome (see [`super::tcp`]), with the local
//! address and the result; this hook only saves who asked for which peer.

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::{SockAddrContext, SockContext},
};
use sensor_common::{
    Caller, Endpoint, Hook, RecordKind, RepeatKey, Ring, SOCK_FLAG_ICMP_DGRAM, SOCK_FLAG_IO_URING,
    SOCK_FLAG_PACKET, SOCK_FLAG_RAW, ServiceEnd, SockOp, SockRecord,
};

use super::{
    icmp::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    record::emit,
    repeats, run_probe,
};
use crate::{
    abi::{AF_INET, AF_INET6, AF_PACKET, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM},
    kernel::{self, ReadResult},
    maps::net_wanted,
};

/// A TCP connect between its request and its outcome.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    pub caller: Caller,
    pub remote: Endpoint,
    pub flags: u8,
    pub _pad: [u8; 3],
    /// Repeats of this connect the record stands for ([`admit`]).
    pub repeats: u32,
    pub _pad2: u32,
}

/// TCP connects in flight, by `struct sock` address. LRU: a connect whose outcome the sensor
/// never sees (a socket closed in `SYN_SENT` by a path without a state change) cannot leak.
#[map]
static CONNECTS: LruHashMap<u64, PendingConnect> = LruHashMap::with_max_entries(65536, 0);

/// A UDP socket and a peer it sent to.
#[repr(C)]
#[derive(Clone, Copy)]
struct SentKey {
    sk: u64,
    peer: Endpoint,
    _pad: u32,
}

/// The peers each UDP socket sent to: a flow of datagrams is reported at its first one, not
/// per datagram. LRU: a socket that sends to many peers, or is closed, ages out.
#[map]
static SENT: LruHashMap<SentKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// The saved connect of `sk`, removed: it was admitted ([`admit`]) when it was saved.
#[inline(always)]
pub fn take_connect(sk: u64) -> Option<PendingConnect> {
    // SAFETY: copied out before removal.
    let pending = unsafe { *CONNECTS.get(sk)? };
    let _ = CONNECTS.remove(sk);
    Some(pending)
}

/// The flags of a socket's kind, and whether an io_uring worker runs the operation.
#[inline(always)]
pub fn kind_flags(family: u16, sock_type: u16, protocol: u16) -> u8 {
    let mut flags = 0;
    if sock_type == SOCK_RAW {
        flags |= SOCK_FLAG_RAW;
    }
    if family == AF_PACKET {
        flags |= SOCK_FLAG_PACKET;
    }
    if sock_type == SOCK_DGRAM
        && (protocol == IPPROTO_ICMP as u16 || protocol == IPPROTO_ICMPV6 as u16)
    {
        flags |= SOCK_FLAG_ICMP_DGRAM;
    }
    if kernel::in_io_worker() {
        flags |= SOCK_FLAG_IO_URING;
    }
    flags
}

/// A socket operation to report: what was done, on which kind of socket, between which
/// endpoints.
#[derive(Clone, Copy)]
pub struct Sock {
    pub op: SockOp,
    /// Family, type, protocol.
    pub kind: (u16, u16, u16),
    pub local: Endpoint,
    pub remote: Endpoint,
    pub flags: u8,
}

impl Sock {
    /// An operation on a socket of `kind` (family, type, protocol), with the flags of that
    /// kind and of the calling task.
    #[inline(always)]
    pub fn new(op: SockOp, kind: (u16, u16, u16), local: Endpoint, remote: Endpoint) -> Sock {
        Sock {
            op,
            kind,
            local,
            remote,
            flags: kind_flags(kind.0, kind.1, kind.2),
        }
    }

    /// Reports this operation of the current task in `cgroup_id` with result `ret`, when it
    /// is [admitted](Sock::admit).
    #[inline(always)]
    pub fn report_current(&self, cgroup_id: u64, ret: i64) -> ReadResult<()> {
        match self.admit(cgroup_id, current_tgid()) {
            Some(repeats) => self.report(kernel::caller(), ret, repeats),
            None => Ok(()),
        }
    }

    /// Whether this operation of process `tgid` in `cgroup_id` is reported: the first of its
    /// repeat window ([`repeats`]), then within the cgroup's rate (a refusal is counted).
    /// Returns the repeats it stands for. Asked before the caller is read: under a flood most
    /// operations are repeats or refused.
    #[inline(always)]
    pub fn admit(&self, cgroup_id: u64, tgid: u32) -> Option<u32> {
        // A connect's peer serves; an accepting or listening socket serves.
        let service = match self.op {
            SockOp::Connect => ServiceEnd::Remote,
            SockOp::Accept | SockOp::Listen => ServiceEnd::Local,
            _ => ServiceEnd::ByPorts,
        };
        let key = RepeatKey::new(
            cgroup_id,
            tgid,
            self.op as u8,
            self.flags,
            self.kind,
            &self.local,
            &self.remote,
            service,
        );
        repeats::admit(&key)
    }

    /// Writes the operation's record, made by `caller` with result `ret`, standing for
    /// `repeats` more.
    #[inline(always)]
    pub fn report(&self, caller: Caller, ret: i64, repeats: u32) -> ReadResult<()> {
        emit(Ring::Network, RecordKind::Sock, |rec: &mut SockRecord| {
            rec.caller = caller;
            rec.local = self.local;
            rec.remote = self.remote;
            rec.ret = ret;
            rec.fd = -1;
            (rec.family, rec.sock_type, rec.protocol) = self.kind;
            rec.op = self.op as u8;
            rec.flags = self.flags;
            rec.repeats = repeats;
            Ok(())
        })
    }
}

/// The current task's process id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (kernel::pid_tgid() >> 32) as u32
}

/// An IPv4 address as the context holds it (network byte order in a u32).
#[inline(always)]
fn ip4(endpoint: &mut Endpoint, addr: u32, port: u16) {
    endpoint.family = AF_INET;
    endpoint.addr[..4].copy_from_slice(&addr.to_ne_bytes());
    endpoint.port = port;
}

/// An IPv6 address from a context's `u32[4]`: four 4-byte loads at constant offsets (the
/// verifier refuses a load through a context pointer the program moved).
#[inline(always)]
fn ip6(endpoint: &mut Endpoint, addr: &[u32; 4], port: u16) {
    endpoint.family = AF_INET6;
    // SAFETY: each pointer names one element of a live context field.
    let words = unsafe {
        [
            core::ptr::read_volatile(&addr[0]),
            core::ptr::read_volatile(&addr[1]),
            core::ptr::read_volatile(&addr[2]),
            core::ptr::read_volatile(&addr[3]),
        ]
    };
    for (i, word) in words.iter().enumerate() {
        endpoint.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    endpoint.port = port;
}

/// A socket's family, type and protocol from its context.
#[inline(always)]
fn sock_kind(sk: &bpf_sock) -> (u16, u16, u16) {
    (sk.family as u16, sk.type_ as u16, sk.protocol as u16)
}

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    run_probe!(Hook::Socket, on_create(&ctx), 1)
}

fn on_create(ctx: &SockContext) -> ReadResult<()> {
    // The host's operations, repeats and those over the rate leave before the caller's comm is
    // copied.
    let cgroup_id = kernel::current_cgroup_id();
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    // SAFETY: the context is the new socket; the verifier checks every field access.
    let kind = sock_kind(unsafe { &*ctx.sock });
    let none = Endpoint::default();
    Sock::new(SockOp::Socket, kind, none, none).report_current(cgroup_id, 0)
}

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    run_probe!(Hook::Bind, on_bind(&ctx, false), 1)
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    run_probe!(Hook::Bind, on_bind(&ctx, true), 1)
}

/// A bind that succeeded: the address and port the socket now holds (the port the kernel
/// picked for port 0).
fn on_bind(ctx: &SockContext, v6: bool) -> ReadResult<()> {
    // The host's operations, repeats and those over the rate leave before the caller's comm is
    // copied.
    let cgroup_id = kernel::current_cgroup_id();
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    // SAFETY: as above.
    let sk = unsafe { &*ctx.sock };
    let mut local = Endpoint::default();
    let port = sk.src_port as u16;
    if v6 {
        ip6(&mut local, &sk.src_ip6, port);
    } else {
        ip4(&mut local, sk.src_ip4, port);
    }
    Sock::new(SockOp::Bind, sock_kind(sk), local, Endpoint::default()).report_current(cgroup_id, 0)
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    run_probe!(Hook::Connect, on_connect(&ctx, false), 1)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    run_probe!(Hook::Connect, on_connect(&ctx, true), 1)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    run_probe!(Hook::Send, on_sendmsg(&ctx, false), 1)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    run_probe!(Hook::Send, on_sendmsg(&ctx, true), 1)
}

/// The address a sock_addr program's caller named, and the socket's family, type and
/// protocol.
#[inline(always)]
fn destination(sa: &bpf_sock_addr, v6: bool) -> (Endpoint, (u16, u16, u16)) {
    let mut remote = Endpoint::default();
    let port = u16::from_be(sa.user_port as u16);
    if v6 {
        ip6(&mut remote, &sa.user_ip6, port);
    } else {
        ip4(&mut remote, sa.user_ip4, port);
    }
    let family = if v6 { AF_INET6 } else { AF_INET };
    (remote, (family, sa.type_ as u16, sa.protocol as u16))
}

/// A UDP datagram sent to an address (the kernel runs these programs only for a send that
/// names its destination): reported at the socket's first datagram to each peer.
fn on_sendmsg(ctx: &SockAddrContext, v6: bool) -> ReadResult<()> {
    let cgroup_id = kernel::current_cgroup_id();
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    // SAFETY: the context of a sock_addr program; the verifier checks every field access.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let (remote, kind) = destination(sa, v6);
    // SAFETY: `sk` is the sending socket, set for every sock_addr program.
    let key = SentKey {
        sk: unsafe { sa.__bindgen_anon_1.sk } as u64,
        peer: remote,
        _pad: 0,
    };
    // SAFETY: a presence check on a plain value.
    if unsafe { SENT.get(key) }.is_some() {
        return Ok(());
    }
    SENT.insert(key, 1, 0).map_err(|e| e as i64)?;
    Sock::new(SockOp::Send, kind, Endpoint::default(), remote).report_current(cgroup_id, 0)
}

/// A connect as the kernel received it: a TCP connect is saved for its outcome, any other is
/// reported now (a UDP connect only sets the default peer). Either is admitted now: under a
/// connect flood the repeats and refused ones leave before the caller is read or saved.
fn on_connect(ctx: &SockAddrContext, v6: bool) -> ReadResult<()> {
    // The host's operations leave before the caller's comm is copied.
    let cgroup_id = kernel::current_cgroup_id();
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    // SAFETY: the context of a sock_addr program; the verifier checks every field access.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let (remote, kind) = destination(sa, v6);
    let sock = Sock::new(SockOp::Connect, kind, Endpoint::default(), remote);
    let Some(repeats) = sock.admit(cgroup_id, current_tgid()) else {
        return Ok(());
    };
    let caller = kernel::caller();
    if kind.1 == SOCK_STREAM {
        // SAFETY: `sk` is the socket being connected, set for every sock_addr program.
        let sk = unsafe { sa.__bindgen_anon_1.sk } as u64;
        let pending = PendingConnect {
            caller,
            remote,
            flags: sock.flags,
            _pad: [0; 3],
            repeats,
            _pad2: 0,
        };
        return CONNECTS.insert(sk, pending, 0).map_err(|e| e as i64);
    }
    sock.report(caller, 0, repeats)
}
