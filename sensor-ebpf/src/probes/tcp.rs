//! TCP state changes from `sock:inet_sock_set_state`, attributed to the socket's cgroup (the
//! change may happen in softirq context, where the current task is unrelated): a record for a
//! connection established (either side) and a socket listening, none for the other transitions
//! (a connection's FIN states and close are several per connection and no rule reads them),
//! and the socket operations they reveal, whichever way they were asked for (a syscall or an
//! io_uring request):
//! - entering `LISTEN`: a listen, in the listening task's context; the listener's process is
//!   saved by (cgroup, port) for the connections it will take;
//! - `SYN_RECV` to `ESTABLISHED`: an accepted connection (the child socket shares the
//!   listener's cgroup and port), attributed to the listening process;
//! - leaving `SYN_SENT`: the outcome of a connect saved by the cgroup `connect` hook, with the
//!   local address the kernel picked and, for a failure, the socket's error.

use aya_ebpf::{macros::map, macros::tracepoint, maps::LruHashMap, programs::TracePointContext};
use sensor_common::{
    Caller, Endpoint, Hook, ListenerKey, RecordKind, Ring, SockOp, TcpStateRecord,
};

use super::{
    record::emit,
    run_probe,
    sock_cgroup::{kind_flags, report, take_connect},
};
use crate::{
    abi::{AF_INET6, IPPROTO_TCP, SOCK_STREAM},
    kernel::{self, ReadResult},
    maps::{net_rate_ok, net_wanted, off},
};

const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;
/// What a connect closed before it was established reports when the socket holds no error.
const ECONNABORTED: i64 = 103;

/// The process behind each listening socket, for the connections it accepts (seeded by the
/// agent at start with the listeners older than it).
#[map]
static LISTENERS: LruHashMap<ListenerKey, Caller> = LruHashMap::with_max_entries(16384, 0);

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::TcpState, try_tcp_state(&ctx))
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, at: u32) -> ReadResult<T> {
    // SAFETY: offsets come from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(at as usize) }.map_err(|e| e as i64)
}

fn try_tcp_state(ctx: &TracePointContext) -> ReadResult<()> {
    let old_state = field::<u32>(ctx, off!(tp_tcp_oldstate))?;
    let new_state = field::<u32>(ctx, off!(tp_tcp_newstate))?;
    // Most of a connection's transitions (SYN_RECV, the FIN states, CLOSE) say nothing the
    // socket operations do not: they leave before any map or kernel read.
    let wanted = new_state == TCP_LISTEN
        || new_state == TCP_ESTABLISHED
        || old_state == TCP_SYN_SENT
        || (old_state == TCP_LISTEN && new_state == TCP_CLOSE);
    if !wanted || field::<u16>(ctx, off!(tp_tcp_protocol))? != IPPROTO_TCP {
        return Ok(());
    }
    let sk = field::<u64>(ctx, off!(tp_tcp_skaddr))?;
    let cgroup_id = kernel::sock_cgroup_id(sk as *const u8).unwrap_or(0);
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    let (mut local, mut remote) = (Endpoint::default(), Endpoint::default());
    endpoints(ctx, &mut local, &mut remote)?;
    let key = ListenerKey {
        cgroup_id,
        port: local.port,
        _pad: [0; 6],
    };
    let kind = (local.family, SOCK_STREAM, IPPROTO_TCP);
    if new_state == TCP_LISTEN {
        // listen() runs in the listening task.
        let caller = kernel::caller();
        let _ = LISTENERS.insert(key, caller, 0);
        let flags = kind_flags(kind.0, kind.1, kind.2);
        report(caller, SockOp::Listen, kind, local, remote, 0, flags)?;
    } else if old_state == TCP_LISTEN && new_state == TCP_CLOSE {
        // The listener closed. (A child socket also starts as a clone of the listener, going
        // from LISTEN to SYN_RECV: that one keeps the entry.)
        let _ = LISTENERS.remove(key);
    } else if old_state == TCP_SYN_RECV && new_state == TCP_ESTABLISHED {
        // SAFETY: copied out of the map value.
        if let Some(owner) = unsafe { LISTENERS.get(key) }.copied() {
            report(owner, SockOp::Accept, kind, local, remote, 0, 0)?;
        }
    } else if old_state == TCP_SYN_SENT
        && let Some(pending) = take_connect(sk)
    {
        let ret = if new_state == TCP_ESTABLISHED {
            0
        } else {
            match kernel::sock_error(sk as *const u8)? {
                0 => -ECONNABORTED,
                err => -(err as i64),
            }
        };
        let asked = pending.remote;
        report(
            pending.caller,
            SockOp::Connect,
            kind,
            local,
            asked,
            ret,
            pending.flags,
        )?;
    }
    // The record: a connection up (either side) or a socket listening.
    if !(new_state == TCP_ESTABLISHED || new_state == TCP_LISTEN)
        || !net_rate_ok(cgroup_id, kernel::boot_ns())
    {
        return Ok(());
    }
    emit(
        Ring::Network,
        RecordKind::TcpState,
        |rec: &mut TcpStateRecord| {
            rec.cgroup_id = cgroup_id;
            rec.local = local;
            rec.remote = remote;
            rec.old_state = old_state;
            rec.new_state = new_state;
            Ok(())
        },
    )
}

/// The socket's addresses from the tracepoint's fields.
#[inline(always)]
fn endpoints(
    ctx: &TracePointContext,
    local: &mut Endpoint,
    remote: &mut Endpoint,
) -> ReadResult<()> {
    let family = field::<u16>(ctx, off!(tp_tcp_family))?;
    local.family = family;
    remote.family = family;
    local.port = field::<u16>(ctx, off!(tp_tcp_sport))?;
    remote.port = field::<u16>(ctx, off!(tp_tcp_dport))?;
    if family == AF_INET6 {
        local.addr = field::<[u8; 16]>(ctx, off!(tp_tcp_saddr_v6))?;
        remote.addr = field::<[u8; 16]>(ctx, off!(tp_tcp_daddr_v6))?;
    } else {
        local.addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_tcp_saddr))?);
        remote.addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_tcp_daddr))?);
    }
    Ok(())
}
