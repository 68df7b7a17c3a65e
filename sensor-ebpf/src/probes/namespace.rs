//! Namespace changes: `setns`, `unshare` and `clone`/`clone3` with `CLONE_NEW*` flags.
//!
//! setns reports the inode of the namespace the fd refers to (read at entry, while the fd is
//! what the caller passed) and the caller's namespaces after the call. A clone's new namespaces
//! are the child's: the fork hook reports them, using the flags saved here at entry.

use aya_ebpf::programs::TracePointContext;
use sensor_common::{CLONE_NEW_MASK, Hook, Namespaces, NsOp, NsRecord, RecordKind, Ring};

use super::{
    record,
    syscall::{Pending, arg, save, syscall_pair, take},
};
use crate::{
    kernel::{self, ReadResult, read, read_ptr},
    maps::off,
};

#[inline(always)]
fn enter_setns(ctx: &TracePointContext) -> ReadResult<()> {
    let fd = arg(ctx, 0)? as i64;
    let file = kernel::fd_file(kernel::current_task(), fd)?;
    let inode = read_ptr(file, off!(file_f_inode))?;
    let inum = read::<u64>(inode, off!(inode_i_ino))?;
    save(ctx, Hook::Setns, inum)
}

#[inline(always)]
fn enter_unshare(ctx: &TracePointContext) -> ReadResult<()> {
    if arg(ctx, 0)? & CLONE_NEW_MASK == 0 {
        return Ok(());
    }
    save(ctx, Hook::Unshare, 0)
}

#[inline(always)]
fn enter_clone(ctx: &TracePointContext) -> ReadResult<()> {
    let flags = arg(ctx, 0)?;
    if flags & CLONE_NEW_MASK == 0 {
        return Ok(());
    }
    save(ctx, Hook::Clone, flags)
}

#[inline(always)]
fn enter_clone3(ctx: &TracePointContext) -> ReadResult<()> {
    // struct clone_args starts with `u64 flags`.
    let uargs = arg(ctx, 0)?;
    // SAFETY: the helper validates the user address.
    let flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(uargs as *const u64) }
        .map_err(|e| e as i64)?;
    if flags & CLONE_NEW_MASK == 0 {
        return Ok(());
    }
    save(ctx, Hook::Clone, flags)
}

/// Emits a namespace change by `task` (namespaces read from `ns_task`).
#[inline(always)]
fn emit(
    op: NsOp,
    flags: u64,
    ret: i64,
    fd: i32,
    target_inum: u64,
    ns_task: *const u8,
) -> ReadResult<()> {
    record::emit(Ring::Process, RecordKind::Ns, |rec: &mut NsRecord| {
        rec.caller = kernel::caller();
        rec.ns_after = Namespaces::default();
        rec.flags = flags;
        rec.ret = ret;
        rec.target_inum = target_inum as u32;
        rec.fd = fd;
        rec.op = op as u8;
        rec._pad = [0; 7];
        kernel::task_namespaces(ns_task, &mut rec.ns_after)
    })
}

#[inline(always)]
fn exit_setns(p: &Pending, ret: i64) -> ReadResult<()> {
    emit(
        NsOp::Setns,
        p.args[1],
        ret,
        p.args[0] as i32,
        p.extra,
        kernel::current_task(),
    )
}

#[inline(always)]
fn exit_unshare(p: &Pending, ret: i64) -> ReadResult<()> {
    emit(NsOp::Unshare, p.args[0], ret, -1, 0, kernel::current_task())
}

/// clone/clone3 exit: the fork hook consumed the saved flags when a child was created; what is
/// left is a clone that failed (an attempt worth reporting, such as a refused user namespace).
#[inline(always)]
fn exit_clone(p: &Pending, ret: i64) -> ReadResult<()> {
    emit(NsOp::Clone, p.extra, ret, -1, 0, kernel::current_task())
}

/// Called by the fork hook in the parent's context: reports the child's new namespaces.
#[inline(always)]
pub fn on_fork(child: *const u8, child_tgid: u32) -> ReadResult<()> {
    let Some(p) = take(Hook::Clone) else {
        return Ok(());
    };
    emit(NsOp::Clone, p.extra, child_tgid as i64, -1, 0, child)
}

syscall_pair!(
    sys_enter_setns,
    sys_exit_setns,
    Hook::Setns,
    enter_setns,
    exit_setns
);
syscall_pair!(
    sys_enter_unshare,
    sys_exit_unshare,
    Hook::Unshare,
    enter_unshare,
    exit_unshare
);
syscall_pair!(
    sys_enter_clone,
    sys_exit_clone,
    Hook::Clone,
    enter_clone,
    exit_clone
);
syscall_pair!(
    sys_enter_clone3,
    sys_exit_clone3,
    Hook::Clone,
    enter_clone3,
    exit_clone
);
