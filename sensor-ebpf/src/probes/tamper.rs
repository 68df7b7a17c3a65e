//! Calls that could blind or tamper with the sensor: signals aimed at the sensor (always, from
//! `signal:signal_generate`: whichever call sent them, one map lookup per signal on the node);
//! and `bpf()` loads and attaches, `perf_event_open` and tracefs/debugfs/bpffs mounts from
//! containers, and ptrace of the sensor or attaches from containers, on those syscalls' kernel
//! functions or, opt-in, their tracepoints (see [`super::syscall`]).
//!
//! Filtered at entry so that only what matters is saved for the exit: the sensor's own calls
//! never, host processes only when they aim at the sensor. Reported on the process ring (rare,
//! and never to be rate limited).

use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{
    BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_PROG_ATTACH, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN, Hook,
    PTRACE_ATTACH, PTRACE_SEIZE, RecordKind, Ring, TAMPER_KERNEL_COPY, TAMPER_NAME,
    TAMPER_TARGETS_SENSOR, TamperOp, TamperRecord,
};

use super::{
    record, run_probe,
    syscall::{Pending, SyscallArgs, inside_call, save, syscall_pair, with_pending},
};
use crate::{
    kernel::{self, ReadResult},
    maps::{from_sensor, is_host_cgroup, is_sensor_pid, off},
};

/// Offsets in `union bpf_attr` of the program name (BPF_PROG_LOAD) and map name (MAP_CREATE):
/// user ABI, the same on every kernel.
const PROG_NAME_OFFSET: u64 = 48;
const MAP_NAME_OFFSET: u64 = 28;

/// Filesystems that expose or steer the kernel's tracing: tracefs, debugfs (which holds a
/// tracing/ directory) and bpffs (pinned programs and maps).
const WATCHED_FS: [&[u8]; 3] = [b"tracefs\0", b"debugfs\0", b"bpf\0"];

/// A call by a container process (not the host's, not the sensor's). The root cgroup (id 1) is
/// never a container's, which keeps host processes out even before user space has classified
/// the node's cgroups.
#[inline(always)]
pub(super) fn from_container() -> bool {
    let cgroup = kernel::current_cgroup_id();
    cgroup > 1 && !is_host_cgroup(cgroup) && !from_sensor()
}

/// Whether a pid argument names the sensor. Only a caller in the root pid namespace names the
/// sensor's pids; elsewhere the same number is another process. `-1` (every process the
/// caller may signal) counts when `groups`.
#[inline(always)]
fn names_sensor(pid: i64, groups: bool) -> bool {
    kernel::in_root_pid_ns() && (is_sensor_pid(pid, groups) || (groups && pid == -1))
}

#[inline(always)]
fn user<T>(addr: u64) -> T
where
    T: Default,
{
    // SAFETY: the helper validates the user address; a failed read gives the default.
    unsafe { bpf_probe_read_user(addr as *const T) }.unwrap_or_default()
}

/// A NUL-terminated string at `addr` in user memory, NUL-padded (empty if unreadable).
#[inline(always)]
fn user_name(addr: u64) -> [u8; TAMPER_NAME] {
    let mut name = [0u8; TAMPER_NAME];
    // SAFETY: the helper validates the user address and bounds the copy by `name`.
    let _ = unsafe { bpf_probe_read_user_str_bytes(addr as *const u8, &mut name) };
    name
}

/// Whether a NUL-padded filesystem type is one of the watched ones.
#[inline(always)]
fn watched_fs(name: &[u8; TAMPER_NAME]) -> bool {
    WATCHED_FS.iter().any(|fs| name.starts_with(fs))
}

/// Writes and submits one record.
#[inline(always)]
pub(super) fn emit(
    op: TamperOp,
    ret: i64,
    flags: u8,
    args: [u64; 3],
    name: [u8; TAMPER_NAME],
) -> ReadResult<()> {
    record::emit(
        Ring::Process,
        RecordKind::Tamper,
        |rec: &mut TamperRecord| {
            rec.caller = kernel::caller();
            rec.ret = ret;
            rec.args = args;
            rec.name = name;
            rec.op = op as u8;
            rec.flags = flags;
            rec._pad = [0; 6];
            Ok(())
        },
    )
}

#[inline(always)]
fn enter_bpf(ctx: &impl SyscallArgs) -> ReadResult<()> {
    let cmd = ctx.arg(0)?;
    let watched = matches!(
        cmd,
        BPF_MAP_CREATE
            | BPF_PROG_LOAD
            | BPF_PROG_ATTACH
            | BPF_RAW_TRACEPOINT_OPEN
            | BPF_LINK_CREATE
    );
    if !watched || !from_container() {
        return Ok(());
    }
    save(ctx, Hook::Bpf, 0)
}

#[inline(always)]
fn exit_bpf(p: &Pending, ret: i64) -> ReadResult<()> {
    let (cmd, attr) = (p.args[0], p.args[1]);
    if p.copied != 0 {
        return emit(
            TamperOp::Bpf,
            ret,
            TAMPER_KERNEL_COPY,
            [cmd, p.head[0], p.head[1]],
            p.name,
        );
    }
    // No kernel copy (the syscall fallback, or a call refused before its security check): the
    // caller's memory, which a racing thread may have changed since the kernel read it.
    let head: [u64; 2] = user(attr);
    let mut name = [0u8; TAMPER_NAME];
    let name_at = match cmd {
        BPF_PROG_LOAD => attr + PROG_NAME_OFFSET,
        BPF_MAP_CREATE => attr + MAP_NAME_OFFSET,
        _ => 0,
    };
    if name_at != 0 {
        // SAFETY: the helper validates the user address; `name` bounds the copy.
        let _ = unsafe { bpf_probe_read_user_buf(name_at as *const u8, &mut name) };
    } else if cmd == BPF_RAW_TRACEPOINT_OPEN {
        name = user_name(head[0]);
    }
    emit(TamperOp::Bpf, ret, 0, [cmd, head[0], head[1]], name)
}

/// `security_bpf(cmd, attr, size, ...)`, inside bpf(): `attr` is the kernel's copy of the
/// caller's `union bpf_attr`, what the command acts on.
#[inline(always)]
fn copy_bpf_attr(attr: *const u8) -> ReadResult<()> {
    with_pending(Hook::Bpf, |p| {
        p.head = kernel::read::<[u64; 2]>(attr, 0)?;
        match p.args[0] {
            BPF_PROG_LOAD => p.name = kernel::read(attr, PROG_NAME_OFFSET as u32)?,
            BPF_MAP_CREATE => p.name = kernel::read(attr, MAP_NAME_OFFSET as u32)?,
            // The tracepoint's name is still a pointer into the caller's memory.
            BPF_RAW_TRACEPOINT_OPEN => p.name = user_name(p.head[0]),
            _ => {}
        }
        p.copied = 1;
        Ok(())
    })
}

/// `get_fs_type(name)`, inside mount() and fsopen(): `name` is the kernel's copy of the
/// filesystem type the call mounts.
#[inline(always)]
fn copy_fs_type(name: *const u8) -> ReadResult<()> {
    with_pending(Hook::Mount, |p| {
        p.name = [0; TAMPER_NAME];
        kernel::read_kernel_str(name, &mut p.name)?;
        p.copied = 1;
        Ok(())
    })
}

#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::Signal, on_signal(&ctx))
}

#[inline(always)]
pub(super) fn field<T>(ctx: &TracePointContext, at: u32) -> ReadResult<T> {
    // SAFETY: offsets come from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(at as usize) }.map_err(|e| e as i64)
}

/// A signal generated for one of the sensor's threads, by anyone but the sensor. The
/// tracepoint runs in the sender's context after the permission check (it sees signals sent
/// with kill, tkill, tgkill, pidfd_send_signal, or by the kernel on a task's behalf).
#[inline(always)]
fn on_signal(ctx: &TracePointContext) -> ReadResult<()> {
    let target = field::<i32>(ctx, off!(tp_sig_pid))?;
    if !is_sensor_pid(target as i64, false) || from_sensor() {
        return Ok(());
    }
    let sig = field::<i32>(ctx, off!(tp_sig_sig))?;
    let group = field::<i32>(ctx, off!(tp_sig_group))? != 0;
    emit(
        TamperOp::Signal,
        0,
        TAMPER_TARGETS_SENSOR,
        [target as u64, sig as u64, group as u64],
        [0; TAMPER_NAME],
    )
}

/// ptrace(request, pid, ...): any request aimed at the sensor; attaches from containers.
#[inline(always)]
fn enter_ptrace(ctx: &impl SyscallArgs) -> ReadResult<()> {
    if from_sensor() {
        return Ok(());
    }
    let request = ctx.arg(0)?;
    let targets_sensor = names_sensor(ctx.arg(1)? as i32 as i64, false);
    let attach = request == PTRACE_ATTACH || request == PTRACE_SEIZE;
    if targets_sensor || (attach && from_container()) {
        save(ctx, Hook::Ptrace, targets_sensor as u64)?;
    }
    Ok(())
}

#[inline(always)]
fn exit_ptrace(p: &Pending, ret: i64) -> ReadResult<()> {
    let flags = if p.extra != 0 {
        TAMPER_TARGETS_SENSOR
    } else {
        0
    };
    emit(
        TamperOp::Ptrace,
        ret,
        flags,
        [p.args[0], p.args[1], 0],
        [0; TAMPER_NAME],
    )
}

#[inline(always)]
fn enter_perf_event_open(ctx: &impl SyscallArgs) -> ReadResult<()> {
    if from_container() {
        save(ctx, Hook::PerfEvent, 0)?;
    }
    Ok(())
}

#[inline(always)]
fn exit_perf_event_open(p: &Pending, ret: i64) -> ReadResult<()> {
    // struct perf_event_attr starts with u32 type, u32 size, u64 config.
    let head: [u64; 2] = user(p.args[0]);
    let target = (p.args[1] << 32) | (p.args[2] & 0xffff_ffff);
    emit(
        TamperOp::PerfEventOpen,
        ret,
        0,
        [head[0] & 0xffff_ffff, head[1], target],
        [0; TAMPER_NAME],
    )
}

/// mount(source, target, fstype, flags, data) and fsopen(fstype, flags) from a container: the
/// filesystem type is argument `fs_arg`. Every such call is saved, whatever type it names now:
/// the type is judged at the exit, from the kernel's copy where a hook inside the call took
/// one, so a thread that rewrites the string after the entry read cannot slip past.
#[inline(always)]
fn enter_mount(ctx: &impl SyscallArgs, fs_arg: u32) -> ReadResult<()> {
    if from_container() {
        save(ctx, Hook::Mount, fs_arg as u64)?;
    }
    Ok(())
}

#[inline(always)]
fn exit_mount(p: &Pending, ret: i64) -> ReadResult<()> {
    let (op, fstype, flags) = if p.extra == 0 {
        (TamperOp::Fsopen, p.args[0], p.args[1])
    } else {
        (TamperOp::Mount, p.args[2], 0)
    };
    let (name, copy) = if p.copied != 0 {
        (p.name, TAMPER_KERNEL_COPY)
    } else {
        (user_name(fstype), 0)
    };
    if !watched_fs(&name) {
        return Ok(());
    }
    emit(op, ret, copy, [flags, 0, 0], name)
}

syscall_pair!(
    Hook::Bpf, enter_bpf, exit_bpf,
    tracepoint: sys_enter_bpf / sys_exit_bpf,
    fentry: fentry_bpf / fexit_bpf,
    kprobe: kprobe_bpf / kretprobe_bpf,
);
syscall_pair!(
    Hook::Ptrace, enter_ptrace, exit_ptrace,
    tracepoint: sys_enter_ptrace / sys_exit_ptrace,
    fentry: fentry_ptrace / fexit_ptrace,
    kprobe: kprobe_ptrace / kretprobe_ptrace,
);
syscall_pair!(
    Hook::PerfEvent, enter_perf_event_open, exit_perf_event_open,
    tracepoint: sys_enter_perf_event_open / sys_exit_perf_event_open,
    fentry: fentry_perf_event_open / fexit_perf_event_open,
    kprobe: kprobe_perf_event_open / kretprobe_perf_event_open,
);
syscall_pair!(
    Hook::Mount, |c| enter_mount(c, 2), exit_mount,
    tracepoint: sys_enter_mount / sys_exit_mount,
    fentry: fentry_mount / fexit_mount,
    kprobe: kprobe_mount / kretprobe_mount,
);
syscall_pair!(
    Hook::Mount, |c| enter_mount(c, 0), exit_mount,
    tracepoint: sys_enter_fsopen / sys_exit_fsopen,
    fentry: fentry_fsopen / fexit_fsopen,
    kprobe: kprobe_fsopen / kretprobe_fsopen,
);
inside_call!(
    Hook::Bpf, copy_bpf_attr, arg: 1,
    fentry: fentry_security_bpf,
    kprobe: kprobe_security_bpf,
);
inside_call!(
    Hook::Mount, copy_fs_type, arg: 0,
    fentry: fentry_get_fs_type,
    kprobe: kprobe_get_fs_type,
);
