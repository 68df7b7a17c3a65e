//! Ring buffer records: process lifecycle and cgroup lifecycle.
//!
//! Layout rules: `repr(C)`, every struct a multiple of 8 bytes with explicit padding, sizes fixed at
//! compile time (the agent checks `size_of` against the record length before reading).

/// Version of every layout in this module; the agent drops records of any other version.
pub const RECORD_VERSION: u16 = 6;

/// Bytes of `argv` copied per exec (NUL-separated, as in `/proc/PID/cmdline`).
pub const ARGV_MAX: usize = 1024;
/// Bytes of the executable path copied per exec.
pub const FILENAME_MAX: usize = 512;
/// Bytes of a cgroup path copied per cgroup event.
pub const CGROUP_PATH_MAX: usize = 512;
/// Bytes of `comm`.
pub const COMM_LEN: usize = 16;

/// Ring buffers, one per domain so one domain's flood cannot starve another.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// Process and container lifecycle, namespace changes, stdio redirection, tamper calls.
    Process = 0,
    /// Socket operations and TCP state changes (rate limited per cgroup).
    Network = 1,
}

/// Number of [`Ring`]s.
pub const RING_COUNT: u32 = 2;

/// Wakeup coalescing: a record wakes the agent only when no record of its ring woke it within
/// this many nanoseconds; the others are submitted without a wakeup. The agent drains again
/// this long after every drain that found records, so no record waits longer than this.
/// (Each wakeup costs the writing task an interrupt and a cross-CPU wakeup, several
/// microseconds on a virtual machine: more than the probe itself.)
pub const RING_WAKE_GAP_NS: u64 = 2_000_000;

/// Why a record was not delivered (index into the drop counters, `ring * DROP_REASONS + reason`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room.
    RingFull = 0,
    /// The cgroup exceeded its network record rate.
    RateLimited = 1,
}

/// Number of [`DropReason`]s.
pub const DROP_REASONS: u32 = 2;

/// The programs, as indexes of the per-hook error counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Exec = 0,
    Fork = 1,
    Exit = 2,
    CgroupMkdir = 3,
    CgroupRmdir = 4,
    /// cgroup `sock_create` on the cgroup2 root (inet sockets); with the syscall fallback, the
    /// `socket` syscall for the other families (netlink, packet).
    Socket = 5,
    /// cgroup `connect4`/`connect6` on the cgroup2 root.
    Connect = 6,
    /// cgroup `post_bind4`/`post_bind6` on the cgroup2 root.
    Bind = 7,
    /// The `inet_sock_set_state` raw tracepoint: TCP states, and from them listen, accept and connect results.
    TcpState = 8,
    /// cgroup skb programs: traffic volume, and ICMP of containers' sockets.
    Traffic = 9,
    /// TC classifiers counting ICMP on interfaces.
    IcmpTc = 10,
    /// `signal:signal_generate`: signals aimed at the sensor.
    Signal = 11,
    /// Syscall fallback: bpf() from containers.
    Bpf = 12,
    /// Syscall fallback: ptrace of the sensor, or attaches from containers.
    Ptrace = 13,
    /// Syscall fallback: perf_event_open from containers.
    PerfEvent = 14,
    /// Syscall fallback: mount/fsopen of tracefs, debugfs or bpffs from containers.
    Mount = 15,
    /// `io_uring:io_uring_create`: io_uring rings set up by containers.
    IoUring = 16,
    /// cgroup `sendmsg4`/`sendmsg6` on the cgroup2 root: UDP datagrams sent to an address.
    Send = 17,
}

/// Number of [`Hook`]s.
pub const HOOK_COUNT: u32 = 18;

/// Why a probe failed: the errno its helper returned, in a few buckets (index into the error
/// counters, `hook * HOOK_ERROR_KINDS + kind`), so `health` says why, not only that.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookError {
    /// The kernel offsets user space writes at load were not there yet.
    OffsetsMissing = 0,
    /// EFAULT: a read of kernel or user memory failed (paged out, or a moved field).
    Fault = 1,
    /// EBADF: an fd the probe followed was gone.
    BadFd = 2,
    /// ENOMEM/E2BIG/ENOSPC: a map or scratch slot had no room.
    NoRoom = 3,
    /// EINVAL: a helper refused its arguments (malformed packet or tracepoint data).
    Invalid = 4,
    /// ENOENT: a map entry or object the probe expected was missing.
    Missing = 5,
    /// An empty string where one was expected (a read that returned 0 bytes).
    Empty = 6,
    /// Any other errno.
    Other = 7,
}

/// Number of [`HookError`] kinds.
pub const HOOK_ERROR_KINDS: u32 = 8;

/// The per-hook error counter array's size.
pub const HOOK_ERROR_SLOTS: u32 = HOOK_COUNT * HOOK_ERROR_KINDS;

impl HookError {
    /// Every kind, in index order.
    pub const ALL: [HookError; HOOK_ERROR_KINDS as usize] = [
        HookError::OffsetsMissing,
        HookError::Fault,
        HookError::BadFd,
        HookError::NoRoom,
        HookError::Invalid,
        HookError::Missing,
        HookError::Empty,
        HookError::Other,
    ];

    /// The kind of a helper's return value `ret` (a negative errno, or 0 for an empty read).
    pub const fn from_ret(ret: i64) -> HookError {
        match ret {
            0 => HookError::Empty,
            -14 => HookError::Fault,
            -9 => HookError::BadFd,
            -12 | -7 | -28 => HookError::NoRoom,
            -22 => HookError::Invalid,
            -2 => HookError::Missing,
            _ => HookError::Other,
        }
    }

    /// Its name in `health` (`hooks[].errors_by_reason`).
    pub const fn name(self) -> &'static str {
        match self {
            HookError::OffsetsMissing => "offsets_missing",
            HookError::Fault => "EFAULT",
            HookError::BadFd => "EBADF",
            HookError::NoRoom => "no_room",
            HookError::Invalid => "EINVAL",
            HookError::Missing => "ENOENT",
            HookError::Empty => "empty_read",
            HookError::Other => "other_errno",
        }
    }
}

/// What follows a [`RecordHeader`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    CgroupMkdir = 4,
    CgroupRmdir = 5,
    Sock = 6,
    Ns = 8,
    TcpState = 9,
    Tamper = 10,
}

impl RecordKind {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::CgroupMkdir,
            5 => Self::CgroupRmdir,
            6 => Self::Sock,
            8 => Self::Ns,
            9 => Self::TcpState,
            10 => Self::Tamper,
            _ => return None,
        })
    }
}

/// The first 16 bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub version: u16,
    pub kind: u16,
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` when the hook ran.
    pub boot_ns: u64,
}

/// Identity of a task as seen from the root pid namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskIds {
    /// Thread id.
    pub pid: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// The real parent's tgid.
    pub ppid: u32,
    /// The tgid inside the task's own pid namespace.
    pub ns_tgid: u32,
    /// cgroup2 id (`bpf_get_current_cgroup_id()` for the current task).
    pub cgroup_id: u64,
    /// Task start, `CLOCK_BOOTTIME` ns (`task_struct.start_boottime`).
    pub start_boot_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// Credentials from `task_struct.cred`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// Effective capability set (`kernel_cap_t`, bit N = capability N).
    pub cap_effective: u64,
    /// `task_struct.seccomp.mode`: [`SECCOMP_DISABLED`], 1 strict, 2 filter.
    pub seccomp_mode: u32,
    pub _pad: u32,
}

/// `Creds.seccomp_mode` of a task no seccomp filter confines.
pub const SECCOMP_DISABLED: u32 = 0;

/// Namespace inode numbers (as in `readlink /proc/PID/ns/*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub mnt: u32,
    pub pid: u32,
    pub net: u32,
    pub uts: u32,
    pub ipc: u32,
    pub user: u32,
    pub cgroup: u32,
    pub _pad: u32,
}

/// `ExecRecord.flags`: argv was longer than [`ARGV_MAX`].
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
/// `ExecRecord.flags`: the filename was longer than [`FILENAME_MAX`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 1;
/// `ExecRecord.flags`: some fields could not be read (see the hook's error counter).
pub const EXEC_PARTIAL: u32 = 1 << 2;
/// `ExecRecord.flags`: the new program's executable file has no link in any filesystem (a
/// memfd, a deleted file, an `O_TMPFILE` file): fileless execution. `exe_file` names it.
pub const EXEC_EXE_UNLINKED: u32 = 1 << 3;

/// Bytes kept of an unlinked executable's own file name (`memfd:NAME`).
pub const EXE_FILE_MAX: usize = 48;

/// `ExecRecord.stdio_sockets`: bit N set when fd N (0, 1, 2) is a socket.
pub const STDIO_SOCKET_MASK: u32 = 0b111;

/// `ExecRecord.stdio_sockets`: bit `STDIO_PTY_SHIFT + N` set when fd N is the terminal side of
/// a pseudo-terminal (`/dev/pts/N`), whose other side some process relays.
pub const STDIO_PTY_SHIFT: u32 = 8;

/// A successful `execve`, from `sched:sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: RecordHeader,
    pub task: TaskIds,
    pub creds: Creds,
    pub ns: Namespaces,
    pub flags: u32,
    /// Bytes of `argv` filled.
    pub argv_len: u32,
    /// Bytes of `filename` filled, without the NUL.
    pub filename_len: u32,
    /// Bit N set when the new program's fd N (0-2) is a socket.
    pub stdio_sockets: u32,
    /// The peer of the first of fds 0-2 that is a socket.
    pub stdio_peer: crate::net::Endpoint,
    pub _pad2: u32,
    /// The inode of each of fds 0-2 that is a pipe or FIFO (the two ends of a pipe share it), a
    /// Unix socket (one end of a socket pair) or a pty's terminal side; 0: none of these.
    pub stdio_pipes: [u64; 3],
    pub filename: [u8; FILENAME_MAX],
    /// With [`EXEC_EXE_UNLINKED`]: the executable file's dentry name, NUL-terminated.
    pub exe_file: [u8; EXE_FILE_MAX],
    pub argv: [u8; ARGV_MAX],
}

/// A new process (not a thread), from `sched_process_fork`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: RecordHeader,
    /// The child; `ppid` is the forking process.
    pub child: TaskIds,
    /// Bit N set when the child's fd N (0-2) is a socket (inherited from the parent: a
    /// process that put a socket on its stdio is seen at its next fork or exec).
    pub stdio_sockets: u32,
    /// The peer of the first of fds 0-2 that is a socket.
    pub stdio_peer: crate::net::Endpoint,
}

/// A process whose last thread exited, from `sched:sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: RecordHeader,
    pub task: TaskIds,
    /// `task_struct.exit_code`: `(status << 8) | signal`, as `wait(2)` reports it.
    pub exit_code: i32,
    pub _pad: u32,
}

/// `CgroupRecord.flags`: the path was longer than [`CGROUP_PATH_MAX`].
pub const CGROUP_PATH_TRUNCATED: u32 = 1 << 0;

/// A cgroup created or removed in the default hierarchy, from `cgroup:cgroup_{mkdir,rmdir}`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupRecord {
    pub header: RecordHeader,
    pub cgroup_id: u64,
    pub hierarchy_id: i32,
    pub level: i32,
    pub flags: u32,
    /// Bytes of `path` filled, without the NUL.
    pub path_len: u32,
    pub path: [u8; CGROUP_PATH_MAX],
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn records_are_8_byte_multiples() {
        for size in [
            size_of::<RecordHeader>(),
            size_of::<TaskIds>(),
            size_of::<Creds>(),
            size_of::<Namespaces>(),
            size_of::<ExecRecord>(),
            size_of::<ForkRecord>(),
            size_of::<ExitRecord>(),
            size_of::<CgroupRecord>(),
        ] {
            assert_eq!(size % 8, 0, "size {size}");
        }
    }

    #[test]
    fn record_kinds_round_trip() {
        for k in [
            RecordKind::Exec,
            RecordKind::Fork,
            RecordKind::Exit,
            RecordKind::CgroupMkdir,
            RecordKind::CgroupRmdir,
            RecordKind::Sock,
            RecordKind::Ns,
            RecordKind::TcpState,
            RecordKind::Tamper,
        ] {
            assert_eq!(RecordKind::from_u16(k as u16), Some(k));
        }
        assert_eq!(RecordKind::from_u16(0), None);
    }

    #[test]
    fn hook_errors_index_in_order_and_bucket_errnos() {
        for (i, why) in HookError::ALL.iter().enumerate() {
            assert_eq!(*why as usize, i, "{why:?}");
        }
        assert_eq!(HookError::from_ret(-14), HookError::Fault);
        assert_eq!(HookError::from_ret(-7), HookError::NoRoom);
        assert_eq!(HookError::from_ret(0), HookError::Empty);
        assert_eq!(HookError::from_ret(-95), HookError::Other);
        assert_eq!(HookError::Fault.name(), "EFAULT");
    }
}
