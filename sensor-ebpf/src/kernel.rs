//! Reading kernel structs through offsets resolved from BTF at load time.
//!
//! Every read goes through `bpf_probe_read_kernel`, so a stale pointer yields an error, never a
//! fault. Readers return `Result` and callers decide whether a missing field spoils the record.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use sensor_common::{COMM_LEN, Creds, Namespaces, TaskIds};

use crate::maps::off;

/// A kernel read failed (the helper's negative errno).
pub type ReadResult<T> = Result<T, i64>;

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, offset: u32) -> ReadResult<T> {
    if base.is_null() {
        return Err(-14); // EFAULT
    }
    // SAFETY: the helper validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .map_err(|e| e as i64)
}

/// Reads a pointer member.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> ReadResult<*const u8> {
    read::<*const u8>(base, offset)
}

/// Copies a NUL-terminated kernel string into `dst`; returns the length without the NUL.
#[inline(always)]
pub fn read_kernel_str(src: *const u8, dst: &mut [u8]) -> ReadResult<usize> {
    // SAFETY: the helper writes at most `dst.len()` bytes and validates `src`.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(dst.as_mut_ptr().cast(), dst.len() as u32, src.cast())
    };
    if n <= 0 { Err(n) } else { Ok(n as usize - 1) }
}

/// The current task.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: always valid in tracing programs.
    unsafe { generated::bpf_get_current_task() as *const u8 }
}

/// `CLOCK_BOOTTIME` now, in ns.
#[inline(always)]
pub fn boot_ns() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { generated::bpf_ktime_get_boot_ns() }
}

/// The CPU the program runs on.
#[inline(always)]
pub fn cpu() -> u32 {
    // SAFETY: no arguments, no side effects.
    unsafe { generated::bpf_get_smp_processor_id() }
}

/// pid, tgid, parent, cgroup, start time and comm of `task`.
#[inline(always)]
pub fn task_ids(task: *const u8, out: &mut TaskIds) -> ReadResult<()> {
    out.pid = read::<u32>(task, off!(task_pid))?;
    out.tgid = read::<u32>(task, off!(task_tgid))?;
    let parent = read_ptr(task, off!(task_real_parent))?;
    out.ppid = read::<u32>(parent, off!(task_tgid))?;
    out.start_boot_ns = read::<u64>(task, off!(task_start_boottime))?;
    out.comm = read::<[u8; COMM_LEN]>(task, off!(task_comm))?;
    out.cgroup_id = task_cgroup_id(task)?;
    out.ns_tgid = task_ns_pid(task).map(|(nr, _)| nr).unwrap_or(0);
    Ok(())
}

/// The cgroup2 id of `task`: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8) -> ReadResult<u64> {
    let css_set = read_ptr(task, off!(task_cgroups))?;
    let cgrp = read_ptr(css_set, off!(css_set_dfl_cgrp))?;
    let kn = read_ptr(cgrp, off!(cgroup_kn))?;
    read::<u64>(kn, off!(kernfs_node_id))
}

/// The task's pid in its own pid namespace and that namespace's `struct pid_namespace *`.
#[inline(always)]
fn task_ns_pid(task: *const u8) -> ReadResult<(u32, *const u8)> {
    let pid = read_ptr(task, off!(task_thread_pid))?;
    let level = read::<u32>(pid, off!(pid_level))?;
    // Bounded so the verifier sees a finite offset; pid namespaces nest at most 32 deep.
    let upid = pid.wrapping_add((off!(pid_numbers) + (level & 31) * off!(upid_size)) as usize);
    let nr = read::<u32>(upid, off!(upid_nr))?;
    let ns = read_ptr(upid, off!(upid_ns))?;
    Ok((nr, ns))
}

/// Real and effective ids and effective capabilities of `task`.
#[inline(always)]
pub fn task_creds(task: *const u8, out: &mut Creds) -> ReadResult<()> {
    let cred = read_ptr(task, off!(task_cred))?;
    out.uid = read::<u32>(cred, off!(cred_uid))?;
    out.gid = read::<u32>(cred, off!(cred_gid))?;
    out.euid = read::<u32>(cred, off!(cred_euid))?;
    out.egid = read::<u32>(cred, off!(cred_egid))?;
    out.cap_effective = read::<u64>(cred, off!(cred_cap_effective))?;
    Ok(())
}

/// Inode numbers of the task's namespaces.
#[inline(always)]
pub fn task_namespaces(task: *const u8, out: &mut Namespaces) -> ReadResult<()> {
    let nsproxy = read_ptr(task, off!(task_nsproxy))?;
    out.uts = ns_inum(nsproxy, off!(nsproxy_uts_ns), off!(uts_ns_inum))?;
    out.ipc = ns_inum(nsproxy, off!(nsproxy_ipc_ns), off!(ipc_ns_inum))?;
    out.mnt = ns_inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_ns_inum))?;
    out.net = ns_inum(nsproxy, off!(nsproxy_net_ns), off!(net_ns_inum))?;
    out.cgroup = ns_inum(nsproxy, off!(nsproxy_cgroup_ns), off!(cgroup_ns_inum))?;
    let cred = read_ptr(task, off!(task_cred))?;
    out.user = ns_inum(cred, off!(cred_user_ns), off!(user_ns_inum))?;
    let (_, pid_ns) = task_ns_pid(task)?;
    out.pid = read::<u32>(pid_ns, off!(pid_ns_inum))?;
    Ok(())
}

#[inline(always)]
fn ns_inum(holder: *const u8, ptr_offset: u32, inum_offset: u32) -> ReadResult<u32> {
    let ns = read_ptr(holder, ptr_offset)?;
    read::<u32>(ns, inum_offset)
}
