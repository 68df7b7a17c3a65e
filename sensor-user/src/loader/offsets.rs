//! Fills [`KernelOffsets`] for the running kernel from BTF and tracepoint format files.

use anyhow::Result;
use sensor_common::{KernelOffsets, OFFSETS_MAGIC};

use super::{btf::KernelBtf, tracefs::TracepointFormat};

/// The cgroup2 ("default") hierarchy is the first the kernel registers, so its id is 0; v1
/// hierarchies get 1 and up (see `/proc/self/cgroup`, whose cgroup2 line starts with `0::`).
pub const DFL_HIERARCHY_ID: u32 = 0;

/// Resolves every offset the programs use; fails naming the first member this kernel lacks.
pub fn resolve(btf: &KernelBtf, tracefs: &str) -> Result<KernelOffsets> {
    let mkdir = TracepointFormat::read(tracefs, "cgroup", "cgroup_mkdir")?;
    let sys_enter = TracepointFormat::read(tracefs, "syscalls", "sys_enter_connect")?;
    let sys_exit = TracepointFormat::read(tracefs, "syscalls", "sys_exit_connect")?;
    let signal = TracepointFormat::read(tracefs, "signal", "signal_generate")?;
    // Absent on a kernel built without io_uring: the hook is then left out (see `load`).
    let uring = TracepointFormat::read(tracefs, "io_uring", "io_uring_create").ok();
    let uring_field = |f: &str| uring.as_ref().map_or(Ok(0), |u| u.offset(f));
    let sk = |m: &str| -> Result<u32> {
        Ok(btf.offset("sock", "__sk_common")? + btf.offset("sock_common", m)?)
    };
    let o = |s: &str, m: &str| btf.offset(s, m);
    let ns = |s: &str| btf.ns_inum_offset(s);
    let offsets = KernelOffsets {
        magic: OFFSETS_MAGIC,
        task_pid: o("task_struct", "pid")?,
        task_tgid: o("task_struct", "tgid")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_cred: o("task_struct", "cred")?,
        task_nsproxy: o("task_struct", "nsproxy")?,
        task_thread_pid: o("task_struct", "thread_pid")?,
        task_start_boottime: o("task_struct", "start_boottime")?,
        task_mm: o("task_struct", "mm")?,
        task_signal: o("task_struct", "signal")?,
        task_exit_code: o("task_struct", "exit_code")?,
        task_comm: o("task_struct", "comm")?,
        task_cgroups: o("task_struct", "cgroups")?,
        task_seccomp_mode: o("task_struct", "seccomp")? + o("seccomp", "mode")?,
        task_flags: o("task_struct", "flags")?,
        css_set_dfl_cgrp: o("css_set", "dfl_cgrp")?,
        cgroup_kn: o("cgroup", "kn")?,
        kernfs_node_id: o("kernfs_node", "id")?,
        cred_uid: o("cred", "uid")?,
        cred_gid: o("cred", "gid")?,
        cred_euid: o("cred", "euid")?,
        cred_egid: o("cred", "egid")?,
        cred_cap_effective: o("cred", "cap_effective")?,
        cred_user_ns: o("cred", "user_ns")?,
        nsproxy_uts_ns: o("nsproxy", "uts_ns")?,
        nsproxy_ipc_ns: o("nsproxy", "ipc_ns")?,
        nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
        nsproxy_net_ns: o("nsproxy", "net_ns")?,
        nsproxy_cgroup_ns: o("nsproxy", "cgroup_ns")?,
        uts_ns_inum: ns("uts_namespace")?,
        ipc_ns_inum: ns("ipc_namespace")?,
        mnt_ns_inum: ns("mnt_namespace")?,
        pid_ns_inum: ns("pid_namespace")?,
        net_ns_inum: ns("net")?,
        cgroup_ns_inum: ns("cgroup_namespace")?,
        user_ns_inum: ns("user_namespace")?,
        pid_level: o("pid", "level")?,
        pid_numbers: o("pid", "numbers")?,
        upid_size: btf.size("upid")?,
        upid_nr: o("upid", "nr")?,
        upid_ns: o("upid", "ns")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        signal_live: o("signal_struct", "live")?,
        bprm_filename: o("linux_binprm", "filename")?,
        tp_cgroup_root: mkdir.offset("root")?,
        tp_cgroup_level: mkdir.offset("level")?,
        tp_cgroup_id: mkdir.offset("id")?,
        tp_cgroup_path: mkdir.offset("path")?,
        task_files: o("task_struct", "files")?,
        files_fdt: o("files_struct", "fdt")?,
        fdtable_fd: o("fdtable", "fd")?,
        fdtable_max_fds: o("fdtable", "max_fds")?,
        file_f_inode: o("file", "f_inode")?,
        file_dentry: o("file", "f_path")? + o("path", "dentry")?,
        dentry_name: o("dentry", "d_name")? + o("qstr", "name")?,
        inode_nlink: o("inode", "__i_nlink")?,
        mm_exe_file: o("mm_struct", "exe_file")?,
        file_private_data: o("file", "private_data")?,
        inode_i_mode: o("inode", "i_mode")?,
        inode_i_ino: o("inode", "i_ino")?,
        inode_i_rdev: o("inode", "i_rdev")?,
        socket_sk: o("socket", "sk")?,
        sk_family: sk("skc_family")?,
        sk_daddr: sk("skc_daddr")?,
        sk_rcv_saddr: sk("skc_rcv_saddr")?,
        sk_dport: sk("skc_dport")?,
        sk_num: sk("skc_num")?,
        sk_v6_daddr: sk("skc_v6_daddr")?,
        sk_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        sk_type: o("sock", "sk_type")?,
        sk_protocol: o("sock", "sk_protocol")?,
        sk_cgroup: o("sock", "sk_cgrp_data")? + o("sock_cgroup_data", "cgroup")?,
        sk_err: o("sock", "sk_err")?,
        inet_sport: o("inet_sock", "inet_sport")?,
        sk_cookie: sk("skc_cookie")?,
        sk_max_ack_backlog: o("sock", "sk_max_ack_backlog")?,
        tcp_bytes_acked: o("tcp_sock", "bytes_acked")?,
        tcp_bytes_received: o("tcp_sock", "bytes_received")?,
        tcp_segs_in: o("tcp_sock", "segs_in")?,
        tcp_segs_out: o("tcp_sock", "segs_out")?,
        // Arguments follow `__syscall_nr`, 8 bytes each.
        tp_sys_arg0: sys_enter.offset("fd")?,
        tp_sys_ret: sys_exit.offset("ret")?,
        tp_sig_sig: signal.offset("sig")?,
        tp_sig_pid: signal.offset("pid")?,
        tp_sig_group: signal.offset("group")?,
        tp_uring_fd: uring_field("fd")?,
        tp_uring_sq_entries: uring_field("sq_entries")?,
        tp_uring_cq_entries: uring_field("cq_entries")?,
        tp_uring_flags: uring_field("flags")?,
        dfl_hierarchy_id: DFL_HIERARCHY_ID,
    };
    // cgroup_rmdir shares cgroup_mkdir's event class; make sure this kernel agrees.
    let rmdir = TracepointFormat::read(tracefs, "cgroup", "cgroup_rmdir")?;
    for field in ["root", "level", "id", "path"] {
        anyhow::ensure!(
            rmdir.offset(field)? == mkdir.offset(field)?,
            "cgroup:cgroup_rmdir field `{field}` differs from cgroup_mkdir's on this kernel"
        );
    }
    Ok(offsets)
}
