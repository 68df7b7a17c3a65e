//! Stdio redirection: `dup`, `dup2` and `dup3` that put a socket on fd 0, 1 or 2 (the heart of a
//! reverse shell). Only those are saved at entry, so ordinary dups cost one fd lookup.
//! Reported on the process ring: rare, and too important to rate limit.

use aya_ebpf::programs::TracePointContext;
use sensor_common::{DupRecord, Endpoint, Hook, RecordKind, Ring};

use super::{
    record::emit,
    syscall::{Pending, arg, save, syscall_pair},
};
use crate::kernel::{self, ReadResult};

/// dup2/dup3 entry: a socket moving onto 0-2?
#[inline(always)]
fn enter_dup2(ctx: &TracePointContext) -> ReadResult<()> {
    let (oldfd, newfd) = (arg(ctx, 0)? as i64, arg(ctx, 1)? as i64);
    if !(0..=2).contains(&newfd) || kernel::fd_sock(oldfd)?.is_none() {
        return Ok(());
    }
    save(ctx, Hook::Dup, 0)
}

/// dup entry: the new fd is only known at exit.
#[inline(always)]
fn enter_dup(ctx: &TracePointContext) -> ReadResult<()> {
    if kernel::fd_sock(arg(ctx, 0)? as i64)?.is_none() {
        return Ok(());
    }
    save(ctx, Hook::Dup, 0)
}

#[inline(always)]
fn exit(p: &Pending, ret: i64, newfd: i64) -> ReadResult<()> {
    if !(0..=2).contains(&newfd) {
        return Ok(());
    }
    emit(Ring::Process, RecordKind::Dup, |rec: &mut DupRecord| {
        rec.caller = kernel::caller();
        rec.local = Endpoint::default();
        rec.remote = Endpoint::default();
        rec.oldfd = p.args[0] as i32;
        rec.newfd = newfd as i32;
        rec.ret = ret as i32;
        rec.sock_type = 0;
        rec.protocol = 0;
        fill(rec)
    })
}

#[inline(always)]
fn fill(rec: &mut DupRecord) -> ReadResult<()> {
    // After a successful dup the socket sits on both fds; read it from the old one.
    let Some(sk) = kernel::fd_sock(rec.oldfd as i64)? else {
        return Ok(());
    };
    let (_, sock_type, protocol) = kernel::sock_kind(sk)?;
    rec.sock_type = sock_type;
    rec.protocol = protocol;
    kernel::sock_endpoints(sk, &mut rec.local, &mut rec.remote)
}

syscall_pair!(sys_enter_dup, sys_exit_dup, Hook::Dup, enter_dup, |p, r| {
    exit(p, r, r)
});
syscall_pair!(
    sys_enter_dup2,
    sys_exit_dup2,
    Hook::Dup,
    enter_dup2,
    |p: &Pending, r| exit(p, r, p.args[1] as i64)
);
syscall_pair!(
    sys_enter_dup3,
    sys_exit_dup3,
    Hook::Dup,
    enter_dup2,
    |p: &Pending, r| exit(p, r, p.args[1] as i64)
);
