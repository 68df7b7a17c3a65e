//! Entry/exit pairs of syscall tracepoints: the entry saves the arguments (and anything that must
//! be read before the call changes it) keyed by task, the exit restores them with the result.

use aya_ebpf::{macros::map, maps::LruHashMap, programs::TracePointContext};
use sensor_common::Hook;

use crate::{
    kernel::{self, ReadResult},
    maps::off,
};

/// A call between its entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub args: [u64; 3],
    /// What the entry read on its own (setns: the target namespace inode).
    pub extra: u64,
    pub hook: u32,
    pub _pad: u32,
}

/// Calls in flight, by `pid_tgid`. LRU: a missed exit cannot leak entries.
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Syscall argument `n` (0-based) of a `sys_enter_*` tracepoint.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: u32) -> ReadResult<u64> {
    let at = (off!(tp_sys_arg0) + 8 * n) as usize;
    // SAFETY: the offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<u64>(at) }.map_err(|e| e as i64)
}

/// The return value of a `sys_exit_*` tracepoint.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> ReadResult<i64> {
    let at = off!(tp_sys_ret) as usize;
    // SAFETY: the offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<i64>(at) }.map_err(|e| e as i64)
}

/// Saves the first three arguments (and `extra`) for the matching exit.
#[inline(always)]
pub fn save(ctx: &TracePointContext, hook: Hook, extra: u64) -> ReadResult<()> {
    let pending = Pending {
        args: [arg(ctx, 0)?, arg(ctx, 1)?, arg(ctx, 2)?],
        extra,
        hook: hook as u32,
        _pad: 0,
    };
    PENDING
        .insert(kernel::pid_tgid(), pending, 0)
        .map_err(|e| e as i64)
}

/// Takes the saved call of the current task if it is `hook`'s.
#[inline(always)]
pub fn take(hook: Hook) -> Option<Pending> {
    let key = kernel::pid_tgid();
    // SAFETY: copied out before removal.
    let pending = unsafe { *PENDING.get(key)? };
    let _ = PENDING.remove(key);
    (pending.hook == hook as u32).then_some(pending)
}

/// Defines the entry and exit programs of one syscall.
macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, $hook:expr, $on_enter:expr, $on_exit:expr) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::probes::run_probe!($hook, $on_enter(&ctx))
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::probes::run_probe!($hook, {
                match $crate::probes::syscall::take($hook) {
                    Some(p) => $crate::probes::syscall::ret(&ctx).and_then(|r| $on_exit(&p, r)),
                    None => Ok(()),
                }
            })
        }
    };
}
pub(crate) use syscall_pair;
