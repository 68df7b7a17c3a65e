//! Kernel struct member offsets and tracepoint field offsets, resolved at load time.
//!
//! Nothing here is hard-coded for one kernel: the agent reads `/sys/kernel/btf/vmlinux` and the
//! tracepoint `format` files, fills a [`KernelOffsets`] and sets it as the programs' `OFFSETS`
//! global. The programs refuse to run (and count an error) while `magic` is not [`OFFSETS_MAGIC`].

/// Marks a [`KernelOffsets`] that user space filled in.
pub const OFFSETS_MAGIC: u32 = 0x5e45_0001;

/// Byte offsets of the members the programs read, all relative to the start of their struct.
///
/// `*_ns_inum` offsets are the offset of the namespace's `ns` member plus the offset of
/// `ns_common.inum`, so one read gets the inode number from a namespace pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub magic: u32,

    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_cred: u32,
    pub task_nsproxy: u32,
    pub task_thread_pid: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub task_comm: u32,
    pub task_cgroups: u32,
    /// `task_struct.seccomp.mode`.
    pub task_seccomp_mode: u32,
    /// `task_struct.flags` (`PF_IO_WORKER`).
    pub task_flags: u32,

    // task->cgroups->dfl_cgrp->kn->id: the cgroup2 id of any task, not only the current one.
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,

    // struct cred
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_cap_effective: u32,
    pub cred_user_ns: u32,

    // struct nsproxy
    pub nsproxy_uts_ns: u32,
    pub nsproxy_ipc_ns: u32,
    pub nsproxy_mnt_ns: u32,
    pub nsproxy_net_ns: u32,
    pub nsproxy_cgroup_ns: u32,

    // <namespace>.ns.inum
    pub uts_ns_inum: u32,
    pub ipc_ns_inum: u32,
    pub mnt_ns_inum: u32,
    pub pid_ns_inum: u32,
    pub net_ns_inum: u32,
    pub cgroup_ns_inum: u32,
    pub user_ns_inum: u32,

    // struct pid / struct upid
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,

    // struct mm_struct / struct signal_struct
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub signal_live: u32,
    /// `linux_binprm.filename`: the path given to execve.
    pub bprm_filename: u32,

    // Tracepoint record fields (from tracefs `format` files).
    pub tp_cgroup_root: u32,
    pub tp_cgroup_level: u32,
    pub tp_cgroup_id: u32,
    pub tp_cgroup_path: u32,

    // fd -> file -> socket: task->files->fdt->fd[n]
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_inode: u32,
    /// `file.f_path.dentry`, `dentry.d_name.name`, `inode.__i_nlink`, `mm_struct.exe_file`:
    /// whether (and under which name) an executable has a link.
    pub file_dentry: u32,
    pub dentry_name: u32,
    pub inode_nlink: u32,
    pub mm_exe_file: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    /// `inode.i_rdev`: which device a character special file is (a pty's terminal side).
    pub inode_i_rdev: u32,
    pub socket_sk: u32,

    // struct sock (sock_common members are relative to struct sock)
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    /// `sk->sk_cgrp_data.cgroup`: the socket's cgroup2.
    pub sk_cgroup: u32,
    /// `sk->sk_err`: why a connect failed.
    pub sk_err: u32,
    /// `inet_sk(sk)->inet_sport`: the local port in network order (kept when a closing socket
    /// releases its port, which zeroes `skc_num`).
    pub inet_sport: u32,
    /// `sk->__sk_common.skc_cookie`: the socket's cookie (0 until something asked for it).
    pub sk_cookie: u32,
    /// `sk->sk_max_ack_backlog`: a listener's backlog, copied into each connection it accepts
    /// (0 on a socket that connected): which end of a connection serves it.
    pub sk_max_ack_backlog: u32,

    // struct tcp_sock (relative to struct sock, which it starts with): a connection's own
    // counters, read when it closes.
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    pub tcp_segs_in: u32,
    pub tcp_segs_out: u32,

    // Syscall tracepoints: first argument of sys_enter_*, return value of sys_exit_*.
    pub tp_sys_arg0: u32,
    pub tp_sys_ret: u32,

    // signal:signal_generate
    pub tp_sig_sig: u32,
    pub tp_sig_pid: u32,
    pub tp_sig_group: u32,
    /// `io_uring:io_uring_create` fields (0 where the kernel has no io_uring: the hook is then
    /// not attached).
    pub tp_uring_fd: u32,
    pub tp_uring_sq_entries: u32,
    pub tp_uring_cq_entries: u32,
    pub tp_uring_flags: u32,

    /// The cgroup hierarchy whose ids `bpf_get_current_cgroup_id()` returns (cgroup2: 0).
    pub dfl_hierarchy_id: u32,
}

impl KernelOffsets {
    /// All zero: what the programs see until user space sets the global.
    pub const fn zeroed() -> Self {
        // SAFETY: only u32 fields; all-zero is a valid value.
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}
