//! Process lifecycle: `sched_process_exec`, `sched_process_fork` and `sched_process_exit`.
//!
//! All three are BTF tracepoints (`tp_btf`): their arguments are the kernel's own, typed (the
//! task, the fork's child, the exec's `linux_binprm`), so the tasks are read by plain loads
//! ([`Typed`]) rather than a helper call per field, and the kernel fills no trace record. Both
//! exec and fork also read which of fds 0-2 are sockets ([`super::stdio`]) and compare
//! namespaces ([`super::namespace`]). Their records are rate limited per cgroup
//! ([`admitted`]), so one container's exec or fork flood cannot cost another container its
//! events.

use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::{
    ARGV_MAX, Creds, EXEC_ARGV_TRUNCATED, EXEC_EXE_UNLINKED, EXEC_FILENAME_TRUNCATED, EXEC_PARTIAL,
    Endpoint, ExecRecord, ExitRecord, FILENAME_MAX, ForkRecord, Hook, Namespaces, RecordKind, Ring,
    TaskIds,
};

use super::{namespace, record::emit, run_probe, stdio};
use crate::{
    clock,
    kernel::{self, Memory, ReadResult, Typed, read},
    maps::{off, proc_rate_ok},
};

/// Whether the current cgroup may emit one more exec, fork or exit record now (a refusal is
/// counted against the cgroup).
#[inline(always)]
fn admitted() -> bool {
    proc_rate_ok(kernel::current_cgroup_id(), clock::window_ns())
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

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    run_probe!(Hook::Exec, try_exec(&ctx)) as i32
}

fn try_exec(ctx: &BtfTracePointContext) -> ReadResult<()> {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm); `p` is the
    // current task.
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
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
        let filename = exec_filename(bprm, rec);
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

/// The path given to execve (`bprm->filename`, what the tracepoint's own record would copy).
#[inline(always)]
fn exec_filename(bprm: *const u8, rec: &mut ExecRecord) -> ReadResult<()> {
    let name = Typed::get::<*const u8>(bprm, off!(bprm_filename))?;
    let len = kernel::read_kernel_str(name, &mut rec.filename)?;
    rec.filename_len = len as u32;
    // A full buffer: longer when the byte after what fit is not the end.
    if len + 1 == FILENAME_MAX && read::<u8>(name, len as u32).is_ok_and(|b| b != 0) {
        rec.flags |= EXEC_FILENAME_TRUNCATED;
    }
    Ok(())
}

/// Whether the new program's executable (`mm->exe_file`) has a link: with none (a memfd, a
/// deleted file, an `O_TMPFILE` file) the exec is fileless; its file's own name is kept.
#[inline(always)]
fn exe_link(task: *const u8, rec: &mut ExecRecord) -> ReadResult<()> {
    let mm = Typed::get::<*const u8>(task, off!(task_mm))?;
    let file = Typed::get::<*const u8>(mm, off!(mm_exe_file))?;
    let inode = Typed::get::<*const u8>(file, off!(file_f_inode))?;
    // A typed load through null reads 0: that must not pass for a file without a link.
    if inode.is_null() {
        return Err(-14); // EFAULT
    }
    if Typed::get::<u32>(inode, off!(inode_nlink))? != 0 {
        return Ok(());
    }
    rec.flags |= EXEC_EXE_UNLINKED;
    let dentry = Typed::get::<*const u8>(file, off!(file_dentry))?;
    // A `const unsigned char *`: a plain number to the verifier, read through the helper.
    let name = Typed::get::<*const u8>(dentry, off!(dentry_name))?;
    kernel::read_kernel_str(name, &mut rec.exe_file).map(|_| ())
}

/// The first [`ARGV_MAX`] bytes of the new program's arguments (`mm->arg_start..arg_end`).
#[inline(always)]
fn exec_argv(task: *const u8, rec: &mut ExecRecord) -> ReadResult<()> {
    let mm = Typed::get::<*const u8>(task, off!(task_mm))?;
    let start = Typed::get::<u64>(mm, off!(mm_arg_start))?;
    let end = Typed::get::<u64>(mm, off!(mm_arg_end))?;
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

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    run_probe!(Hook::Fork, try_fork(&ctx)) as i32
}

fn try_fork(ctx: &BtfTracePointContext) -> ReadResult<()> {
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let pid = Typed::get::<u32>(child, off!(task_pid))?;
    let tgid = Typed::get::<u32>(child, off!(task_tgid))?;
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

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    run_probe!(Hook::Exit, try_exit(&ctx)) as i32
}

fn try_exit(ctx: &BtfTracePointContext) -> ReadResult<()> {
    // TP_PROTO(struct task_struct *p, ...); `p` is the current task.
    let task: *const u8 = ctx.arg(0);
    // Only the last thread of a process: do_exit decrements signal->live before this tracepoint.
    let signal = Typed::get::<*const u8>(task, off!(task_signal))?;
    if Typed::get::<i32>(signal, off!(signal_live))? != 0 {
        return Ok(());
    }
    namespace::on_exit((kernel::pid_tgid() >> 32) as u32);
    if !admitted() {
        return Ok(());
    }
    emit(Ring::Process, RecordKind::Exit, |rec: &mut ExitRecord| {
        rec.task = EMPTY_IDS;
        rec._pad = 0;
        rec.exit_code = Typed::get::<i32>(task, off!(task_exit_code)).unwrap_or(0);
        kernel::task_ids(task, &mut rec.task)
    })
}
