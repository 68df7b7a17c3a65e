//! Calls that could blind or tamper with the sensor: `bpf()` program loads and attaches and
//! `perf_event_open` from containers, tracefs/debugfs/bpffs mounts from containers, signals
//! aimed at the sensor, ptrace of the sensor or from containers, and io_uring rings set up by
//! containers (a way around syscall-based monitoring).
//!
//! The kernel filters (these calls are common on a node, signals very much so): only what a
//! container does, or what targets one of the tasks user space put in the sensor's own map.

use crate::{net::Caller, records::RecordHeader};

/// Which call a [`TamperRecord`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamperOp {
    Bpf = 1,
    Ptrace = 6,
    PerfEventOpen = 7,
    Mount = 8,
    Fsopen = 9,
    /// A signal generated for a task, whichever call (or the kernel) sent it, from
    /// `signal:signal_generate`.
    Signal = 10,
    /// An io_uring ring set up by a container (`io_uring:io_uring_create`): requests on it
    /// bypass the syscalls a syscall-hooking sensor watches.
    IoUringSetup = 11,
}

impl TamperOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Bpf,
            6 => Self::Ptrace,
            7 => Self::PerfEventOpen,
            8 => Self::Mount,
            9 => Self::Fsopen,
            10 => Self::Signal,
            11 => Self::IoUringSetup,
            _ => return None,
        })
    }
}

/// `TamperRecord.flags`: the call's target is one of the sensor's tasks or its process group.
pub const TAMPER_TARGETS_SENSOR: u8 = 1 << 0;
/// `TamperRecord.flags`: `args` and `name` come from the kernel's own copy of the call's
/// arguments (what it acted on), not from the caller's memory.
pub const TAMPER_KERNEL_COPY: u8 = 1 << 1;

/// Values of the sensor's own task map: a thread of the sensor (tid or tgid).
pub const SELF_TASK: u8 = 1 << 0;
/// Values of the sensor's own task map: the sensor's process group id.
pub const SELF_GROUP: u8 = 1 << 1;

/// `bpf()` commands reported: the ones that put code in the kernel or hook it somewhere.
pub const BPF_MAP_CREATE: u64 = 0;
pub const BPF_PROG_LOAD: u64 = 5;
pub const BPF_PROG_ATTACH: u64 = 8;
pub const BPF_RAW_TRACEPOINT_OPEN: u64 = 17;
pub const BPF_LINK_CREATE: u64 = 28;

pub const PTRACE_ATTACH: u64 = 16;
pub const PTRACE_SEIZE: u64 = 0x4206;

/// Bytes of a name kept (`bpf` program or map name, filesystem type, tracepoint name).
pub const TAMPER_NAME: usize = 16;

/// One of the calls above: at its return (syscall fallback), or as the kernel acts on it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TamperRecord {
    pub header: RecordHeader,
    pub caller: Caller,
    /// The return value (`-errno` on failure).
    pub ret: i64,
    /// By op:
    /// - bpf: the command; the first 8 and the next 8 bytes of its `union bpf_attr` (prog/map
    ///   type and instruction count or key size; fds and the attach type for attaches);
    /// - signal: the target thread, the signal, 1 for a process-wide signal;
    /// - ptrace: request, target pid;
    /// - perf_event_open: `attr.type`, `attr.config`, `pid << 32 | cpu` (as u32s);
    /// - mount: flags; fsopen: flags;
    /// - io_uring setup: submission and completion queue sizes, `IORING_SETUP_*` flags (`ret`
    ///   is the ring's fd).
    pub args: [u64; 3],
    /// bpf: program or map name (or the tracepoint of a raw tracepoint open); mount/fsopen: the
    /// filesystem type. NUL-padded.
    pub name: [u8; TAMPER_NAME],
    pub op: u8,
    pub flags: u8,
    pub _pad: [u8; 6],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_ops() {
        assert_eq!(core::mem::size_of::<TamperRecord>() % 8, 0);
        for v in [1, 6, 7, 8, 9, 10, 11] {
            assert_eq!(TamperOp::from_u8(v).map(|o| o as u8), Some(v));
        }
        for v in [0, 2, 3, 4, 5, 12] {
            assert_eq!(TamperOp::from_u8(v), None);
        }
    }
}
