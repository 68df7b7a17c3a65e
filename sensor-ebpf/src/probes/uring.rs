//! io_uring rings set up by containers, from `io_uring:io_uring_create`: the requests of such
//! a ring (socket, connect, accept, send, open...) never pass the syscalls a syscall-hooking
//! sensor watches, and Docker's default seccomp profile refuses io_uring since Docker 25, so a
//! container with a ring is a signal of its own. The tracepoint fires once per ring, in the
//! caller's context, after the ring exists; it costs nothing on any other syscall.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sensor_common::{Hook, TAMPER_NAME, TamperOp};

use super::{
    run_probe,
    tamper::{emit, field, from_container},
};
use crate::{kernel::ReadResult, maps::off};

#[tracepoint(category = "io_uring", name = "io_uring_create")]
pub fn io_uring_create(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::IoUring, on_create(&ctx))
}

#[inline(always)]
fn on_create(ctx: &TracePointContext) -> ReadResult<()> {
    if !from_container() {
        return Ok(());
    }
    let fd = field::<i32>(ctx, off!(tp_uring_fd))?;
    let sq = field::<u32>(ctx, off!(tp_uring_sq_entries))?;
    let cq = field::<u32>(ctx, off!(tp_uring_cq_entries))?;
    let flags = field::<u32>(ctx, off!(tp_uring_flags))?;
    emit(
        TamperOp::IoUringSetup,
        fd as i64,
        0,
        [sq as u64, cq as u64, flags as u64],
        [0; TAMPER_NAME],
    )
}
