//! Calls that could blind or tamper with the sensor: signals aimed at the sensor (always, from
//! `signal:signal_generate`: whichever call sent them, one map lookup per signal on the node);
//! and, with the syscall fallback only (`--syscall-hooks`), `bpf()` loads and attaches,
//! `perf_event_open` and tracefs/debugfs/bpffs mounts from containers, and ptrace of the sensor
//! or attaches from containers.
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
    PTRACE_ATTACH, PTRACE_SEIZE, RecordKind, Ring, TAMPER_NAME, TAMPER_TARGETS_SENSOR, TamperOp,
    TamperRecord,
};

use super::{
    record, run_probe,
    syscall::{Pending, arg, save, syscall_pair},
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

/// The name of a watched filesystem type at `addr` (user memory), if it is one.
#[inline(always)]
fn watched_fs(addr: u64) -> Option<[u8; TAMPER_NAME]> {
    let mut name = [0u8; TAMPER_NAME];
    // SAFETY: the helper validates the user address and bounds the copy by `name`.
    unsafe { bpf_probe_read_user_str_bytes(addr as *const u8, &mut name) }.ok()?;
    WATCHED_FS
        .iter()
        .any(|fs| name.starts_with(fs))
        .then_some(name)
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
fn enter_bpf(ctx: &TracePointContext) -> ReadResult<()> {
    let cmd = arg(ctx, 0)?;
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
        // SAFETY: as above; the attr's first member points at the tracepoint's name.
        let _ = unsafe { bpf_probe_read_user_str_bytes(head[0] as *const u8, &mut name) };
    }
    emit(TamperOp::Bpf, ret, 0, [cmd, head[0], head[1]], name)
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
fn enter_ptrace(ctx: &TracePointContext) -> ReadResult<()> {
    if from_sensor() {
        return Ok(());
    }
    let request = arg(ctx, 0)?;
    let targets_sensor = names_sensor(arg(ctx, 1)? as i32 as i64, false);
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
fn enter_perf_event_open(ctx: &TracePointContext) -> ReadResult<()> {
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

/// mount(source, target, fstype, flags, data) and fsopen(fstype, flags) of a watched
/// filesystem type from a container: the filesystem type is argument `fs_arg`.
#[inline(always)]
fn enter_mount(ctx: &TracePointContext, fs_arg: u32) -> ReadResult<()> {
    if from_container() && watched_fs(arg(ctx, fs_arg)?).is_some() {
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
    let name = watched_fs(fstype).unwrap_or([0; TAMPER_NAME]);
    emit(op, ret, 0, [flags, 0, 0], name)
}

syscall_pair!(sys_enter_bpf, sys_exit_bpf, Hook::Bpf, enter_bpf, exit_bpf);
syscall_pair!(
    sys_enter_ptrace,
    sys_exit_ptrace,
    Hook::Ptrace,
    enter_ptrace,
    exit_ptrace
);
syscall_pair!(
    sys_enter_perf_event_open,
    sys_exit_perf_event_open,
    Hook::PerfEvent,
    enter_perf_event_open,
    exit_perf_event_open
);
syscall_pair!(
    sys_enter_mount,
    sys_exit_mount,
    Hook::Mount,
    |c| enter_mount(c, 2),
    exit_mount
);
syscall_pair!(
    sys_enter_fsopen,
    sys_exit_fsopen,
    Hook::Mount,
    |c| enter_mount(c, 0),
    exit_mount
);
