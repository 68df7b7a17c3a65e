//! Reading kernel structs through offsets resolved from BTF at load time.
//!
//! Reads go through `bpf_probe_read_kernel`, so a stale pointer yields an error, never a fault;
//! the task readers take plain loads through a pointer typed from BTF ([`Typed`]: the BTF
//! tracepoints' arguments), and the socket readers either. Readers return `Result` and callers
//! decide whether a missing field spoils the record.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use sensor_common::{COMM_LEN, Caller, Creds, Endpoint, Namespaces, TaskIds};

use crate::{
    abi::{AF_INET, AF_INET6},
    maps::off,
};

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

/// pid, tgid, parent, cgroup, start time and comm of `task`, read by plain loads. The comm array
/// and the pid-namespace walk (an index the verifier cannot follow in a typed pointer) always
/// go through the helper.
#[inline(always)]
pub fn task_ids(task: *const u8, out: &mut TaskIds) -> ReadResult<()> {
    out.pid = Typed::get::<u32>(task, off!(task_pid))?;
    out.tgid = Typed::get::<u32>(task, off!(task_tgid))?;
    let parent = Typed::get::<*const u8>(task, off!(task_real_parent))?;
    out.ppid = Typed::get::<u32>(parent, off!(task_tgid))?;
    out.start_boot_ns = Typed::get::<u64>(task, off!(task_start_boottime))?;
    out.comm = read::<[u8; COMM_LEN]>(task, off!(task_comm))?;
    out.cgroup_id = task_cgroup_id(task)?;
    out.ns_tgid = task_ns_pid(task).map(|(nr, _)| nr).unwrap_or(0);
    Ok(())
}

/// The cgroup2 id of `task`: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8) -> ReadResult<u64> {
    let css_set = Typed::get::<*const u8>(task, off!(task_cgroups))?;
    let cgrp = Typed::get::<*const u8>(css_set, off!(css_set_dfl_cgrp))?;
    let kn = Typed::get::<*const u8>(cgrp, off!(cgroup_kn))?;
    Typed::get::<u64>(kn, off!(kernfs_node_id))
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

/// Real and effective ids, effective capabilities and seccomp mode of `task`, read by plain
/// loads. The capabilities go through the helper: before Linux 6.3 `kernel_cap_t` is two 32-bit
/// words, which one typed 64-bit load may not span.
#[inline(always)]
pub fn task_creds(task: *const u8, out: &mut Creds) -> ReadResult<()> {
    let cred = Typed::get::<*const u8>(task, off!(task_cred))?;
    out.uid = Typed::get::<u32>(cred, off!(cred_uid))?;
    out.gid = Typed::get::<u32>(cred, off!(cred_gid))?;
    out.euid = Typed::get::<u32>(cred, off!(cred_euid))?;
    out.egid = Typed::get::<u32>(cred, off!(cred_egid))?;
    out.cap_effective = read::<u64>(cred, off!(cred_cap_effective))?;
    out.seccomp_mode = Typed::get::<u32>(task, off!(task_seccomp_mode))?;
    Ok(())
}

/// Inode numbers of the task's namespaces, read by plain loads (the pid namespace's through the
/// helper, as in [`task_ids`]).
#[inline(always)]
pub fn task_namespaces(task: *const u8, out: &mut Namespaces) -> ReadResult<()> {
    let nsproxy = Typed::get::<*const u8>(task, off!(task_nsproxy))?;
    out.uts = ns_inum(nsproxy, off!(nsproxy_uts_ns), off!(uts_ns_inum))?;
    out.ipc = ns_inum(nsproxy, off!(nsproxy_ipc_ns), off!(ipc_ns_inum))?;
    out.mnt = ns_inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_ns_inum))?;
    out.net = ns_inum(nsproxy, off!(nsproxy_net_ns), off!(net_ns_inum))?;
    out.cgroup = ns_inum(nsproxy, off!(nsproxy_cgroup_ns), off!(cgroup_ns_inum))?;
    let cred = Typed::get::<*const u8>(task, off!(task_cred))?;
    out.user = ns_inum(cred, off!(cred_user_ns), off!(user_ns_inum))?;
    let (_, pid_ns) = task_ns_pid(task)?;
    out.pid = read::<u32>(pid_ns, off!(pid_ns_inum))?;
    Ok(())
}

#[inline(always)]
fn ns_inum(holder: *const u8, ptr_offset: u32, inum_offset: u32) -> ReadResult<u32> {
    let ns = Typed::get::<*const u8>(holder, ptr_offset)?;
    Typed::get::<u32>(ns, inum_offset)
}

/// A task's open files: the fd array and its size.
pub struct FdTable {
    /// `fdt->fd`, a `struct file **`: a plain number to the verifier, read through the helper.
    array: *const u8,
    max_fds: u32,
}

impl FdTable {
    /// `task->files->fdt`, read by plain loads.
    #[inline(always)]
    pub fn of(task: *const u8) -> ReadResult<FdTable> {
        let files = Typed::get::<*const u8>(task, off!(task_files))?;
        let fdt = Typed::get::<*const u8>(files, off!(files_fdt))?;
        Ok(FdTable {
            max_fds: Typed::get::<u32>(fdt, off!(fdtable_max_fds))?,
            array: Typed::get::<*const u8>(fdt, off!(fdtable_fd))?,
        })
    }

    /// The `struct file *` behind `fd` (null when it is closed).
    #[inline(always)]
    pub fn file(&self, fd: u32) -> ReadResult<*const u8> {
        if fd >= self.max_fds {
            return Err(-9); // EBADF
        }
        read_ptr(self.array.wrapping_add((fd as usize) * 8), 0)
    }
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const S_IFIFO: u16 = 0o010000;
const S_IFCHR: u16 = 0o020000;

/// What an open file is, from its inode's mode.
pub enum FileKind {
    /// A pipe or FIFO, by inode number (both ends share it).
    Fifo(u64),
    /// A socket: its `struct sock *`, and its inode number.
    Socket(*const u8, u64),
    /// The terminal side of a pseudo-terminal (a character device of the UNIX98 pty slave
    /// majors 136-143, `/dev/pts/N`), by inode number.
    Pty(u64),
    Other,
}

/// What `file` is: its inode is read once, its mode once.
#[inline(always)]
pub fn file_kind(file: *const u8) -> ReadResult<FileKind> {
    let inode = read_ptr(file, off!(file_f_inode))?;
    let mode = read::<u16>(inode, off!(inode_i_mode))? & S_IFMT;
    let ino = || read::<u64>(inode, off!(inode_i_ino));
    Ok(match mode {
        S_IFIFO => FileKind::Fifo(ino()?),
        S_IFSOCK => {
            let socket = read_ptr(file, off!(file_private_data))?;
            FileKind::Socket(read_ptr(socket, off!(socket_sk))?, ino()?)
        }
        S_IFCHR if (136..=143).contains(&(read::<u32>(inode, off!(inode_i_rdev))? >> 20)) => {
            FileKind::Pty(ino()?)
        }
        _ => FileKind::Other,
    })
}

/// How a reader reaches kernel memory: [`Probed`] through `bpf_probe_read_kernel` (any
/// pointer), [`Typed`] by plain loads (a pointer the verifier typed from BTF).
pub trait Memory {
    /// The `T` at `base + offset`.
    fn get<T: Copy>(base: *const u8, offset: u32) -> ReadResult<T>;
}

/// Reads through `bpf_probe_read_kernel`: any pointer; a bad one is an error.
pub enum Probed {}

impl Memory for Probed {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, offset: u32) -> ReadResult<T> {
        read(base, offset)
    }
}

/// Plain loads through a pointer the verifier typed from BTF (a `tp_btf` argument, what a BTF
/// cast helper returned, and the pointer members read through those): no helper call. The
/// verifier checks each load against the member at its offset, which it knows because the
/// offsets are frozen read-only data; a load that faults reads 0 instead of failing.
pub enum Typed {}

impl Memory for Typed {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, offset: u32) -> ReadResult<T> {
        // SAFETY: the verifier turns a load through a BTF pointer into one that cannot fault.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) })
    }
}

/// Local and remote addresses and ports of a socket.
#[inline(always)]
pub fn sock_endpoints<M: Memory>(
    sk: *const u8,
    local: &mut Endpoint,
    remote: &mut Endpoint,
) -> ReadResult<()> {
    local.port = M::get::<u16>(sk, off!(sk_num))?;
    sock_addresses::<M>(sk, local, remote)
}

/// Family and addresses of a socket, and its peer's port (not the local port). Addresses are
/// read as the kernel declares them (`__be32`, and `in6_addr` as four of those), which a
/// [`Typed`] load must match.
#[inline(always)]
pub fn sock_addresses<M: Memory>(
    sk: *const u8,
    local: &mut Endpoint,
    remote: &mut Endpoint,
) -> ReadResult<()> {
    let family = M::get::<u16>(sk, off!(sk_family))?;
    local.family = family;
    remote.family = family;
    remote.port = u16::from_be(M::get::<u16>(sk, off!(sk_dport))?);
    if family == AF_INET {
        local.addr[..4].copy_from_slice(&M::get::<u32>(sk, off!(sk_rcv_saddr))?.to_ne_bytes());
        remote.addr[..4].copy_from_slice(&M::get::<u32>(sk, off!(sk_daddr))?.to_ne_bytes());
    } else if family == AF_INET6 {
        local.addr = in6_addr::<M>(sk, off!(sk_v6_rcv_saddr))?;
        remote.addr = in6_addr::<M>(sk, off!(sk_v6_daddr))?;
    }
    Ok(())
}

/// The `struct in6_addr` at `base + offset`, read as its four `__be32` words.
#[inline(always)]
fn in6_addr<M: Memory>(base: *const u8, offset: u32) -> ReadResult<[u8; 16]> {
    let word = |i: u32| M::get::<u32>(base, offset + i * 4).map(u32::to_ne_bytes);
    let (a, b, c, d) = (word(0)?, word(1)?, word(2)?, word(3)?);
    Ok([
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ])
}

/// The cgroup2 id a socket is charged to.
#[inline(always)]
pub fn sock_cgroup_id<M: Memory>(sk: *const u8) -> ReadResult<u64> {
    let cgrp = M::get::<*const u8>(sk, off!(sk_cgroup))?;
    let kn = M::get::<*const u8>(cgrp, off!(cgroup_kn))?;
    M::get::<u64>(kn, off!(kernfs_node_id))
}

/// `sk->sk_err`: the error a failed connect ended with (0 when none was set).
#[inline(always)]
pub fn sock_error<M: Memory>(sk: *const u8) -> ReadResult<i32> {
    M::get::<i32>(sk, off!(sk_err))
}

/// Whether the TCP socket `sk` serves its connection: it is a listener, or a connection a
/// listener accepted. `listen()` sets the socket's backlog, and each connection the listener
/// accepts starts as a copy of it; a socket that connected has none. So the kernel answers
/// for as long as the socket lives, its listener closed or not, without a map lookup. (A
/// listener with a backlog of 0, `listen(fd, 0)`, has its connections taken for a client's.)
#[inline(always)]
pub fn sock_serves<M: Memory>(sk: *const u8) -> ReadResult<bool> {
    Ok(M::get::<u32>(sk, off!(sk_max_ack_backlog))? != 0)
}

/// `PF_IO_WORKER`: the task is an io_uring worker thread.
const PF_IO_WORKER: u32 = 0x10;

/// Whether the current task is an io_uring worker (running a request submitted through a
/// ring). A plain load through the typed current task (the probe-read helper costs several
/// times as much, and this runs on every socket operation of a container).
#[inline(always)]
pub fn in_io_worker() -> bool {
    // SAFETY: no arguments; the result is a typed pointer the verifier checks loads through.
    let task = unsafe { generated::bpf_get_current_task_btf() } as *const u8;
    Typed::get::<u32>(task, off!(task_flags)).is_ok_and(|flags| flags & PF_IO_WORKER != 0)
}

/// The current task as a [`Caller`].
#[inline(always)]
pub fn caller() -> Caller {
    // SAFETY: helpers without arguments.
    let (pid_tgid, cgroup_id) = unsafe {
        (
            generated::bpf_get_current_pid_tgid(),
            generated::bpf_get_current_cgroup_id(),
        )
    };
    Caller {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        cgroup_id,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// `pid_tgid` of the current task: the key of entry/exit pairs.
#[inline(always)]
pub fn pid_tgid() -> u64 {
    // SAFETY: no arguments.
    unsafe { generated::bpf_get_current_pid_tgid() }
}

/// The current task's cgroup2 id.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: no arguments.
    unsafe { generated::bpf_get_current_cgroup_id() }
}

/// Whether the current task lives in the root pid namespace (where the pids it passes to kill or
/// ptrace are the ones the sensor knows itself by).
#[inline(always)]
pub fn in_root_pid_ns() -> bool {
    read_ptr(current_task(), off!(task_thread_pid))
        .and_then(|pid| read::<u32>(pid, off!(pid_level)))
        .is_ok_and(|level| level == 0)
}
