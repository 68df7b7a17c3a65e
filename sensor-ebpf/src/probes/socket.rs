//! `socket` calls of the families the cgroup `sock_create` hook does not see (netlink, packet
//! and the rest; inet sockets are reported there), on the syscall's kernel function (fentry or
//! kprobe) or, opt-in, its tracepoints (see [`super::syscall`]).

use sensor_common::{Endpoint, Hook, SockOp};

use super::{
    sock_cgroup::Sock,
    syscall::{Pending, SyscallArgs, save, syscall_pair},
};
use crate::{
    abi::{AF_INET, AF_INET6},
    kernel::{self, ReadResult},
    maps::net_wanted,
};

#[inline(always)]
fn enter(ctx: &impl SyscallArgs) -> ReadResult<()> {
    let family = ctx.arg(0)?;
    if family == AF_INET as u64
        || family == AF_INET6 as u64
        || !net_wanted(kernel::current_cgroup_id())
    {
        return Ok(());
    }
    save(ctx, Hook::Socket, 0)
}

#[inline(always)]
fn exit(p: &Pending, ret: i64) -> ReadResult<()> {
    let kind = (p.args[0] as u16, (p.args[1] & 0xf) as u16, p.args[2] as u16);
    let none = Endpoint::default();
    Sock::new(SockOp::Socket, kind, none, none).report_current(kernel::current_cgroup_id(), ret)
}

syscall_pair!(
    Hook::Socket, enter, exit,
    tracepoint: sys_enter_socket / sys_exit_socket,
    fentry: fentry_socket / fexit_socket,
    kprobe: kprobe_socket / kretprobe_socket,
);
