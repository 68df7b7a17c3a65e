//! Process lifecycle: `sched_process_exec`, `sched_process_fork` and `sched_process_exit`.
//!
//! exec and exit use the plain tracepoints (stable fields, current task); fork uses the raw
//! tracepoint because only its arguments carry the child's `task_struct`. Both exec and fork
//! also read which of fds 0-2 are sockets ([`super::stdio`]) and compare namespaces
//! ([`super::namespace`]). Their records are rate limited per cgroup ([`admitted`]), so one
//! container's exec or fork flood cannot cost another container its events.

use aya_ebpf::{
    helpers::generated,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    ARGV_MAX, Creds, EXEC_ARGV_TRUNCATED, EXEC_EXE_UNLINKED, EXEC_FILENAME_TRUNCATED, EXEC_PARTIAL,
    Endpoint, ExecRecord, ExitRecord, FILENAME_MAX, ForkRecord, Hook, Namespaces, RecordKind, Ring,
    TaskIds,
};

use super::{namespace, record::emit, run_probe, stdio};
use crate::{
    kernel::{self, ReadResult, read, read_ptr},
    maps::{off, proc_rate_ok},
};

/// Whether the current cgroup may emit one more exec, fork or exit record now (a refusal is
/// counted against the cgroup).
#[inline(always)]
fn admitted() -> bool {
    proc_rate_ok(kernel::current_cgroup_id(), kernel::boot_ns())
}

const EMPTY_IDS: TaskIds = TaskIds {
    pid: 0,
    tgid: 0,
    ppid: 0,
    ns_tgid: 0,
    cgroup_id: 0,
    start_boot_ns: 0,
    comm: [0; 16],
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::Exec, try_exec(&ctx))
}

fn try_exec(ctx: &TracePointContext) -> ReadResult<()> {
    let task = kernel::current_task();
    // Namespaces first: a change since the last exec is reported before the exec, while the
    // process is still the program that made it (nsenter, unshare).
    let mut ns = Namespaces::default();
    let ns_read = kernel::task_namespaces(task, &mut ns);
    let ns_check = if ns_read.is_ok() {
        namespace::compare_and_record((kernel::pid_tgid() >> 32) as u32, &ns)
    } else {
        Ok(())
    };
    if !admitted() {
        return ns_check;
    }
    // Every field read later is written here or covered by a length field.
    emit(Ring::Process, RecordKind::Exec, |rec: &mut ExecRecord| {
        rec.task = EMPTY_IDS;
        rec.creds = Creds {
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            cap_effective: 0,
            seccomp_mode: 0,
            _pad: 0,
        };
        rec.ns = ns;
        rec.flags = 0;
        rec.argv_len = 0;
        rec.filename_len = 0;
        rec.exe_file[0] = 0;
        rec.stdio_sockets = 0;
        rec.stdio_peer = Endpoint::default();
        rec._pad2 = 0;

        rec.stdio_pipes = [0; 3];
        let stdio = stdio::sockets(task, &mut rec.stdio_peer, Some(&mut rec.stdio_pipes));
        rec.stdio_sockets = *stdio.as_ref().unwrap_or(&0);
        // Every part is read whatever failed before it; the first failure is the one counted.
        let ids = kernel::task_ids(task, &mut rec.task);
        let creds = kernel::task_creds(task, &mut rec.creds);
        let filename = exec_filename(ctx, rec);
        let argv = exec_argv(task, rec);
        let exe = exe_link(task, rec);
        let read = ids
            .and(creds)
            .and(ns_read)
            .and(filename)
            .and(argv)
            .and(exe)
            .and(stdio);
        if read.is_err() {
            rec.flags |= EXEC_PARTIAL;
        }
        read.map(|_| ())
    })?;
    ns_check
}

/// The path given to execve, from the tracepoint's `filename` (`__data_loc char[]`).
#[inline(always)]
fn exec_filename(ctx: &TracePointContext, rec: &mut ExecRecord) -> ReadResult<()> {
    let at = off!(tp_exec_filename) as usize;
    // SAFETY: the offset comes from the tracepoint's format file.
    let loc: u32 = unsafe { ctx.read_at(at) }.map_err(|e| e as i64)?;
    let src = (ctx_ptr(ctx)).wrapping_add((loc & 0xffff) as usize);
    let len = kernel::read_kernel_str(src, &mut rec.filename)?;
    rec.filename_len = len as u32;
    if (loc >> 16) as usize > FILENAME_MAX {
        rec.flags |= EXEC_FILENAME_TRUNCATED;
    }
    Ok(())
}

#[inline(always)]
fn ctx_ptr(ctx: &TracePointContext) -> *const u8 {
    use aya_ebpf::EbpfContext;
    ctx.as_ptr() as *const u8
}

/// Whether the new program's executable (`mm->exe_file`) has a link: with none (a memfd, a
/// deleted file, an `O_TMPFILE` file) the exec is fileless; its file's own name is kept.
#[inline(always)]
fn exe_link(task: *const u8, rec: &mut ExecRecord) -> ReadResult<()> {
    let mm = read_ptr(task, off!(task_mm))?;
    let file = read_ptr(mm, off!(mm_exe_file))?;
    let inode = read_ptr(file, off!(file_f_inode))?;
    if read::<u32>(inode, off!(inode_nlink))? != 0 {
        return Ok(());
    }
    rec.flags |= EXEC_EXE_UNLINKED;
    let dentry = read_ptr(file, off!(file_dentry))?;
    let name = read_ptr(dentry, off!(dentry_name))?;
    kernel::read_kernel_str(name, &mut rec.exe_file).map(|_| ())
}

/// The first [`ARGV_MAX`] bytes of the new program's arguments (`mm->arg_start..arg_end`).
#[inline(always)]
fn exec_argv(task: *const u8, rec: &mut ExecRecord) -> ReadResult<()> {
    let mm = read_ptr(task, off!(task_mm))?;
    let start = read::<u64>(mm, off!(mm_arg_start))?;
    let end = read::<u64>(mm, off!(mm_arg_end))?;
    let mut len = end.saturating_sub(start);
    if len > ARGV_MAX as u64 {
        len = ARGV_MAX as u64;
        rec.flags |= EXEC_ARGV_TRUNCATED;
    }
    // SAFETY: `len <= ARGV_MAX`, the size of the destination; the helper validates `start`.
    let ret = unsafe {
        generated::bpf_probe_read_user(
            rec.argv.as_mut_ptr().cast(),
            len as u32,
            start as *const core::ffi::c_void,
        )
    };
    if ret < 0 {
        return Err(ret);
    }
    rec.argv_len = len as u32;
    Ok(())
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    run_probe!(Hook::Fork, try_fork(&ctx)) as i32
}

fn try_fork(ctx: &RawTracePointContext) -> ReadResult<()> {
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let pid = read::<u32>(child, off!(task_pid))?;
    let tgid = read::<u32>(child, off!(task_tgid))?;
    if pid != tgid {
        return Ok(()); // a new thread, not a new process
    }
    // The child starts in its parent's (the current task's) cgroup.
    if admitted() {
        emit(Ring::Process, RecordKind::Fork, |rec: &mut ForkRecord| {
            rec.child = EMPTY_IDS;
            rec.stdio_peer = Endpoint::default();
            rec.stdio_sockets = 0;
            kernel::task_ids(child, &mut rec.child)?;
            rec.stdio_sockets = stdio::sockets(child, &mut rec.stdio_peer, None)?;
            Ok(())
        })?;
    }
    namespace::on_fork(parent, child, tgid)
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    run_probe!(Hook::Exit, try_exit())
}

fn try_exit() -> ReadResult<()> {
    let task = kernel::current_task();
    // Only the last thread of a process: do_exit decrements signal->live before this tracepoint.
    let signal = read_ptr(task, off!(task_signal))?;
    if read::<i32>(signal, off!(signal_live))? != 0 {
        return Ok(());
    }
    namespace::on_exit((kernel::pid_tgid() >> 32) as u32);
    if !admitted() {
        return Ok(());
    }
    emit(Ring::Process, RecordKind::Exit, |rec: &mut ExitRecord| {
        rec.task = EMPTY_IDS;
        rec._pad = 0;
        rec.exit_code = read::<i32>(task, off!(task_exit_code)).unwrap_or(0);
        kernel::task_ids(task, &mut rec.task)
    })
}
