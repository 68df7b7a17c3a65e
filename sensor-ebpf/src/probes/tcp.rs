//! TCP state changes from the `inet_sock_set_state` tracepoint, attributed to the socket's cgroup
//! (the change may happen in softirq context, where the current task is unrelated). The program
//! is a BTF tracepoint (`tp_btf`): it runs on the tracepoint's arguments (the socket and both
//! states) without the kernel first filling a trace record, so the transitions it ignores (about
//! six of a connection's ten) cost little more than the two comparisons, and it reads the socket
//! by plain loads the verifier checks against the kernel's types ([`kernel::Typed`]), not by a
//! helper call per field. It writes a record for a connection established (either side) and a
//! socket listening, none for the other transitions (a connection's FIN states and close are
//! several per connection and no rule reads them), and the socket operations they reveal,
//! whichever way they were asked for (a syscall or an io_uring request):
//! - entering `LISTEN`: a listen, in the listening task's context; the listener's process is
//!   saved by (cgroup, port) for the connections it will take;
//! - `SYN_RECV` to `ESTABLISHED`: an accepted connection (the child socket shares the
//!   listener's cgroup and port), attributed to the listening process;
//! - leaving `SYN_SENT`: the outcome of a connect saved by the cgroup `connect` hook (which
//!   took the record's rate token), with the local address the kernel picked and, for a
//!   failure, the socket's error;
//! - a connection closing: its volume since its last sample ([`super::tcp_volume`]).

use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_skc_to_tcp_sock,
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use sensor_common::{
    Caller, Endpoint, Hook, ListenerKey, REPEAT_TCP_STATE, RecordKind, RepeatKey, Ring, ServiceEnd,
    SockOp, TcpStateRecord,
};

use super::{
    record::emit,
    repeats::admit,
    run_probe,
    sock_cgroup::{Sock, take_connect},
    tcp_volume,
};
use crate::{
    abi::{
        IPPROTO_TCP, SOCK_STREAM, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_ESTABLISHED,
        TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT,
    },
    kernel::{self, ReadResult, Typed},
    maps::net_wanted,
};

/// What a connect closed before it was established reports when the socket holds no error.
const ECONNABORTED: i64 = 103;

/// The process behind each listening socket, for the connections it accepts (seeded by the
/// agent at start with the listeners older than it).
#[map]
static LISTENERS: LruHashMap<ListenerKey, Caller> = LruHashMap::with_max_entries(16384, 0);

/// Whether a socket in `state` may have moved data (a connection, established once).
#[inline(always)]
fn carried_data(state: u32) -> bool {
    matches!(
        state,
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    )
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    run_probe!(Hook::TcpState, try_tcp_state(&ctx))
}

fn try_tcp_state(ctx: &BtfTracePointContext) -> ReadResult<()> {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let old_state = ctx.arg::<u64>(1) as u32;
    let new_state = ctx.arg::<u64>(2) as u32;
    // Most of a connection's transitions (SYN_RECV, the FIN states, CLOSE) say nothing the
    // socket operations do not: they leave before any map or kernel read.
    let closed = new_state == TCP_CLOSE && carried_data(old_state);
    let wanted = new_state == TCP_LISTEN
        || new_state == TCP_ESTABLISHED
        || old_state == TCP_SYN_SENT
        || (old_state == TCP_LISTEN && new_state == TCP_CLOSE)
        || closed;
    if !wanted {
        return Ok(());
    }
    // The kernel fires it for other protocols' sockets too (MPTCP's): the cast to a TCP socket
    // answers null for those. What it returns is typed for plain loads, the tcp_sock members
    // included.
    // SAFETY: the helper checks the type of the socket it is given.
    let sk = unsafe { bpf_skc_to_tcp_sock(ctx.arg::<*mut c_void>(0)) } as *const u8;
    if sk.is_null() {
        return Ok(());
    }
    if closed {
        return tcp_volume::on_close(sk);
    }
    let cgroup_id = kernel::sock_cgroup_id::<Typed>(sk).unwrap_or(0);
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    let (mut local, mut remote) = (Endpoint::default(), Endpoint::default());
    kernel::sock_endpoints::<Typed>(sk, &mut local, &mut remote)?;
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
        let sock = Sock::new(SockOp::Listen, kind, local, remote);
        if let Some(repeats) = sock.admit(caller.cgroup_id, caller.tgid) {
            sock.report(caller, 0, repeats)?;
        }
    } else if old_state == TCP_LISTEN && new_state == TCP_CLOSE {
        // The listener closed. (A child socket also starts as a clone of the listener, going
        // from LISTEN to SYN_RECV: that one keeps the entry.)
        let _ = LISTENERS.remove(key);
    } else if old_state == TCP_SYN_RECV && new_state == TCP_ESTABLISHED {
        let sock = Sock {
            op: SockOp::Accept,
            kind,
            local,
            remote,
            flags: 0,
        };
        // SAFETY: copied out of the map value.
        if let Some(owner) = unsafe { LISTENERS.get(key) }.copied()
            && let Some(repeats) = sock.admit(owner.cgroup_id, owner.tgid)
        {
            sock.report(owner, 0, repeats)?;
        }
    } else if old_state == TCP_SYN_SENT
        && let Some(pending) = take_connect(sk as u64)
    {
        let ret = if new_state == TCP_ESTABLISHED {
            0
        } else {
            match kernel::sock_error::<Typed>(sk)? {
                0 => -ECONNABORTED,
                err => -(err as i64),
            }
        };
        let sock = Sock {
            op: SockOp::Connect,
            kind,
            local,
            remote: pending.remote,
            flags: pending.flags,
        };
        sock.report(pending.caller, ret, pending.repeats)?;
    }
    // The record: a connection up (either side) or a socket listening.
    if !(new_state == TCP_ESTABLISHED || new_state == TCP_LISTEN) {
        return Ok(());
    }
    // The end that serves: the listener's (an accepted connection, a listen) or the peer
    // (a connect).
    let service = if new_state == TCP_LISTEN || old_state == TCP_SYN_RECV {
        ServiceEnd::Local
    } else if old_state == TCP_SYN_SENT {
        ServiceEnd::Remote
    } else {
        ServiceEnd::ByPorts
    };
    let repeat = RepeatKey::new(
        cgroup_id,
        0,
        REPEAT_TCP_STATE | new_state as u8,
        0,
        kind,
        &local,
        &remote,
        service,
    );
    let Some(repeats) = admit(&repeat) else {
        return Ok(());
    };
    emit(
        Ring::Network,
        RecordKind::TcpState,
        |rec: &mut TcpStateRecord| {
            rec.cgroup_id = cgroup_id;
            rec.local = local;
            rec.remote = remote;
            rec.old_state = old_state;
            rec.new_state = new_state;
            rec.repeats = repeats;
            rec._pad = 0;
            Ok(())
        },
    )
}
