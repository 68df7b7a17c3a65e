//! Socket calls: `socket`, `connect`, `accept`/`accept4`, `bind`, `listen`, reported at return
//! with addresses and the result. Host processes are filtered out in the kernel unless
//! configured; each cgroup's records are rate limited so one noisy container cannot flood the
//! network ring.
//!
//! Addresses passed by the caller (connect, bind) are read from user memory at exit; the
//! kprobe/fentry variants read the kernel's own copy instead (no TOCTOU).

use aya_ebpf::programs::TracePointContext;
use sensor_common::{
    ADDR_FROM_KERNEL, ADDR_FROM_USER, Endpoint, Hook, RecordKind, Ring, SOCK_FLAG_ICMP_DGRAM,
    SOCK_FLAG_PACKET, SOCK_FLAG_RAW, SockOp, SockRecord,
};

use super::{
    record::emit,
    sockaddr,
    syscall::{Pending, save, syscall_pair},
};
use crate::{
    kernel::{self, ReadResult},
    maps::{net_rate_ok, net_wanted},
};

const AF_PACKET: u16 = 17;
const SOCK_DGRAM: u16 = 2;
const SOCK_RAW: u16 = 3;
const IPPROTO_ICMP: u16 = 1;
const IPPROTO_ICMPV6: u16 = 58;

/// Entry: remember the call when the caller's cgroup is reported.
#[inline(always)]
fn enter(ctx: &TracePointContext, hook: Hook) -> ReadResult<()> {
    if !net_wanted(kernel::current_cgroup_id()) {
        return Ok(());
    }
    if hook == Hook::Connect || hook == Hook::Bind {
        sockaddr::clear();
    }
    save(ctx, hook, 0)
}

/// The flags of a socket's kind.
#[inline(always)]
fn kind_flags(family: u16, sock_type: u16, protocol: u16) -> u8 {
    let mut flags = 0;
    if sock_type == SOCK_RAW {
        flags |= SOCK_FLAG_RAW;
    }
    if family == AF_PACKET {
        flags |= SOCK_FLAG_PACKET;
    }
    if sock_type == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6) {
        flags |= SOCK_FLAG_ICMP_DGRAM;
    }
    flags
}

#[inline(always)]
fn exit(p: &Pending, ret: i64, op: SockOp) -> ReadResult<()> {
    let caller = kernel::caller();
    let now = kernel::boot_ns();
    if !net_rate_ok(caller.cgroup_id, now) {
        return Ok(());
    }
    emit(Ring::Network, RecordKind::Sock, |rec: &mut SockRecord| {
        rec.caller = caller;
        rec.local = Endpoint::default();
        rec.remote = Endpoint::default();
        rec.ret = ret;
        rec.fd = p.args[0] as i32;
        rec.family = 0;
        rec.sock_type = 0;
        rec.protocol = 0;
        rec.op = op as u8;
        rec.flags = 0;
        rec.addr_source = ADDR_FROM_USER;
        rec._pad = [0; 3];
        let res = fill(p, ret, op, rec);
        rec.flags = kind_flags(rec.family, rec.sock_type, rec.protocol);
        res
    })
}

#[inline(always)]
fn fill(p: &Pending, ret: i64, op: SockOp, rec: &mut SockRecord) -> ReadResult<()> {
    // Which fd names the socket whose state is read: the new one for socket/accept.
    let sock_fd = match op {
        SockOp::Socket | SockOp::Accept => ret,
        _ => p.args[0] as i64,
    };
    if op == SockOp::Socket {
        rec.family = p.args[0] as u16;
        rec.sock_type = (p.args[1] & 0xf) as u16;
        rec.protocol = p.args[2] as u16;
    }
    if op == SockOp::Connect || op == SockOp::Bind {
        let target = if op == SockOp::Connect {
            &mut rec.remote
        } else {
            &mut rec.local
        };
        match sockaddr::take() {
            Some(copy) => {
                *target = copy;
                rec.addr_source = ADDR_FROM_KERNEL;
            }
            None => kernel::user_sockaddr(p.args[1], target)?,
        }
    }
    if sock_fd < 0 {
        return Ok(());
    }
    let Some(sk) = kernel::fd_sock(sock_fd)? else {
        return Ok(());
    };
    let (family, sock_type, protocol) = kernel::sock_kind(sk)?;
    rec.family = family;
    rec.sock_type = sock_type;
    rec.protocol = protocol;
    let (mut local, mut remote) = (Endpoint::default(), Endpoint::default());
    kernel::sock_endpoints(sk, &mut local, &mut remote)?;
    match op {
        // The caller's address is what was asked for; the socket's is what it got.
        SockOp::Connect => rec.local = local,
        SockOp::Bind => {}
        _ => {
            rec.local = local;
            rec.remote = remote;
        }
    }
    Ok(())
}

syscall_pair!(
    sys_enter_socket,
    sys_exit_socket,
    Hook::Socket,
    |c| enter(c, Hook::Socket),
    |p, r| exit(p, r, SockOp::Socket)
);
syscall_pair!(
    sys_enter_connect,
    sys_exit_connect,
    Hook::Connect,
    |c| enter(c, Hook::Connect),
    |p, r| exit(p, r, SockOp::Connect)
);
syscall_pair!(
    sys_enter_accept,
    sys_exit_accept,
    Hook::Accept,
    |c| enter(c, Hook::Accept),
    |p, r| exit(p, r, SockOp::Accept)
);
syscall_pair!(
    sys_enter_accept4,
    sys_exit_accept4,
    Hook::Accept,
    |c| enter(c, Hook::Accept),
    |p, r| exit(p, r, SockOp::Accept)
);
syscall_pair!(
    sys_enter_bind,
    sys_exit_bind,
    Hook::Bind,
    |c| enter(c, Hook::Bind),
    |p, r| exit(p, r, SockOp::Bind)
);
syscall_pair!(
    sys_enter_listen,
    sys_exit_listen,
    Hook::Listen,
    |c| enter(c, Hook::Listen),
    |p, r| exit(p, r, SockOp::Listen)
);
