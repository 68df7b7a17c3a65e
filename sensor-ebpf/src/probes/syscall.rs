//! Entry/exit pairs of the syscalls only the syscall path shows (bpf, ptrace, perf_event_open,
//! mount, fsopen, socket of the non-inet families): the entry saves the arguments (and anything
//! that must be read before the call changes it) keyed by task, the exit restores them with the
//! result.
//!
//! Each pair is hooked in one of two places, with the same logic:
//! - on the syscall's own kernel function (`__x64_sys_bpf`, ...) by fentry/fexit or
//!   kprobe/kretprobe, where the kernel has either: only that syscall pays, every other one
//!   runs as without the sensor;
//! - on its `syscalls:sys_enter_*`/`sys_exit_*` tracepoints (the opt-in fallback of kernels with
//!   neither), which put every syscall of every task on the node on the slow path.

use aya_ebpf::{macros::map, maps::LruHashMap, programs::TracePointContext};
use sensor_common::{Hook, TAMPER_NAME};

use crate::{
    kernel::{self, ReadResult},
    maps::off,
};

/// A call between its entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub args: [u64; 3],
    /// What the entry read on its own (ptrace: whether the sensor is the target; mount: which
    /// argument holds the filesystem type).
    pub extra: u64,
    pub hook: u32,
    /// Non-zero once a hook inside the call copied `head` and `name` from the kernel's own
    /// copy of the arguments (see [`with_pending`]): what the kernel acts on, which a racing
    /// thread can no longer change.
    pub copied: u32,
    /// bpf: the first 16 bytes of the kernel's `union bpf_attr`.
    pub head: [u64; 2],
    /// bpf: the program or map name; mount, fsopen: the filesystem type.
    pub name: [u8; TAMPER_NAME],
}

/// Calls in flight, by `pid_tgid`. LRU: a missed exit cannot leak entries.
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Where a syscall's arguments are read at its entry.
pub trait SyscallArgs {
    /// Argument `n` (0-based).
    fn arg(&self, n: u32) -> ReadResult<u64>;
}

impl SyscallArgs for TracePointContext {
    /// A `sys_enter_*` tracepoint's record.
    #[inline(always)]
    fn arg(&self, n: u32) -> ReadResult<u64> {
        let at = (off!(tp_sys_arg0) + 8 * n) as usize;
        // SAFETY: the offset comes from the tracepoint's format file.
        unsafe { self.read_at::<u64>(at) }.map_err(|e| e as i64)
    }
}

/// The user registers a syscall's kernel function receives: on x86_64 (the only architecture
/// user space attaches these hooks on) `__x64_sys_*` takes a `struct pt_regs *`.
pub struct UserRegs(pub *const u8);

/// `struct pt_regs` offsets (x86_64) of the syscall arguments: di, si, dx, r10, r8, r9.
const ARG_REGS: [u32; 6] = [112, 104, 96, 56, 72, 64];

impl SyscallArgs for UserRegs {
    #[inline(always)]
    fn arg(&self, n: u32) -> ReadResult<u64> {
        let at = *ARG_REGS.get(n as usize).ok_or(-22i64)?;
        kernel::read::<u64>(self.0, at)
    }
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
pub fn save(args: &impl SyscallArgs, hook: Hook, extra: u64) -> ReadResult<()> {
    let pending = Pending {
        args: [args.arg(0)?, args.arg(1)?, args.arg(2)?],
        extra,
        hook: hook as u32,
        copied: 0,
        head: [0; 2],
        name: [0; TAMPER_NAME],
    };
    PENDING
        .insert(kernel::pid_tgid(), pending, 0)
        .map_err(|e| e as i64)
}

/// The current task's call in flight if it is `hook`'s, for a hook inside the call to add what
/// it read (nothing happens when the task has none: the call was filtered at its entry).
#[inline(always)]
pub fn with_pending(
    hook: Hook,
    add: impl FnOnce(&mut Pending) -> ReadResult<()>,
) -> ReadResult<()> {
    let Some(p) = PENDING.get_ptr_mut(kernel::pid_tgid()) else {
        return Ok(());
    };
    // SAFETY: the entry is this task's own; only this task writes it while the call runs.
    let p = unsafe { &mut *p };
    if p.hook != hook as u32 {
        return Ok(());
    }
    add(p)
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

/// Defines the programs of one syscall: its tracepoint pair, and the fentry/fexit and
/// kprobe/kretprobe pairs user space attaches to its kernel function instead where it can.
/// `$on_enter` takes any [`SyscallArgs`], `$on_exit` the saved call and the result.
macro_rules! syscall_pair {
    (
        $hook:expr, $on_enter:expr, $on_exit:expr,
        tracepoint: $tp_enter:ident / $tp_exit:ident,
        fentry: $fentry:ident / $fexit:ident,
        kprobe: $kprobe:ident / $kretprobe:ident $(,)?
    ) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $tp_enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::probes::run_probe!($hook, $on_enter(&ctx))
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $tp_exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::probes::run_probe!(
                $hook,
                $crate::probes::syscall::exit_with(
                    $hook,
                    $crate::probes::syscall::ret(&ctx),
                    $on_exit
                )
            )
        }

        #[aya_ebpf::macros::fentry]
        pub fn $fentry(ctx: aya_ebpf::programs::FEntryContext) -> u32 {
            let regs = $crate::probes::syscall::UserRegs(ctx.arg::<*const u8>(0));
            $crate::probes::run_probe!($hook, $on_enter(&regs))
        }

        #[aya_ebpf::macros::fexit]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> u32 {
            let ret = ctx.ret::<i64>().map_err(|e| e as i64);
            $crate::probes::run_probe!(
                $hook,
                $crate::probes::syscall::exit_with($hook, ret, $on_exit)
            )
        }

        #[aya_ebpf::macros::kprobe]
        pub fn $kprobe(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            let regs = ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null());
            let regs = $crate::probes::syscall::UserRegs(regs);
            $crate::probes::run_probe!($hook, $on_enter(&regs))
        }

        #[aya_ebpf::macros::kretprobe]
        pub fn $kretprobe(ctx: aya_ebpf::programs::RetProbeContext) -> u32 {
            let ret = Ok(ctx.ret::<i64>());
            $crate::probes::run_probe!(
                $hook,
                $crate::probes::syscall::exit_with($hook, ret, $on_exit)
            )
        }
    };
}
pub(crate) use syscall_pair;

/// Defines the fentry and kprobe programs of a kernel function called inside one of these
/// syscalls with the kernel's own copy of an argument: `$on` gets its pointer argument `$n`.
macro_rules! inside_call {
    ($hook:expr, $on:expr, arg: $n:literal, fentry: $fentry:ident, kprobe: $kprobe:ident $(,)?) => {
        #[aya_ebpf::macros::fentry]
        pub fn $fentry(ctx: aya_ebpf::programs::FEntryContext) -> u32 {
            $crate::probes::run_probe!($hook, $on(ctx.arg::<*const u8>($n)))
        }

        #[aya_ebpf::macros::kprobe]
        pub fn $kprobe(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            let at = ctx.arg::<*const u8>($n).unwrap_or(core::ptr::null());
            $crate::probes::run_probe!($hook, $on(at))
        }
    };
}
pub(crate) use inside_call;

/// The exit half of every pair: the saved call of this task, with the result.
#[inline(always)]
pub fn exit_with(
    hook: Hook,
    ret: ReadResult<i64>,
    on_exit: impl FnOnce(&Pending, i64) -> ReadResult<()>,
) -> ReadResult<()> {
    match take(hook) {
        Some(p) => on_exit(&p, ret?),
        None => Ok(()),
    }
}
