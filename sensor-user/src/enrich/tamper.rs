//! Enrichment of tamper records (see `sensor_common::tamper`): `bpf`, `signal`, `ptrace`,
//! `perf_event_open` and `mount` events, with the kernel's numbers turned into names.

use sensor_common::{
    BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_PROG_ATTACH, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN,
    TAMPER_KERNEL_COPY, TAMPER_TARGETS_SENSOR, TamperOp, TamperRecord,
};
use sensor_proto::{self as pb, event::Body};

use super::{Enricher, names};
use crate::{decode::c_str, types::BootNs};

/// `enum bpf_prog_type`, by value.
const PROG_TYPES: &[&str] = &[
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// `enum bpf_map_type`, by value.
const MAP_TYPES: &[&str] = &[
    "unspec",
    "hash",
    "array",
    "prog_array",
    "perf_event_array",
    "percpu_hash",
    "percpu_array",
    "stack_trace",
    "cgroup_array",
    "lru_hash",
    "lru_percpu_hash",
    "lpm_trie",
    "array_of_maps",
    "hash_of_maps",
    "devmap",
    "sockmap",
    "cpumap",
    "xskmap",
    "sockhash",
    "cgroup_storage",
    "reuseport_sockarray",
    "percpu_cgroup_storage",
    "queue",
    "stack",
    "sk_storage",
    "devmap_hash",
    "struct_ops",
    "ringbuf",
    "inode_storage",
    "task_storage",
    "bloom_filter",
    "user_ringbuf",
    "cgrp_storage",
    "arena",
];

/// Signal names 1-31 (x86-64 numbering).
const SIGNALS: &[&str] = &[
    "0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

const PTRACE_REQUESTS: &[(u64, &str)] = &[
    (0, "traceme"),
    (1, "peektext"),
    (2, "peekdata"),
    (3, "peekuser"),
    (4, "poketext"),
    (5, "pokedata"),
    (6, "pokeuser"),
    (7, "cont"),
    (8, "kill"),
    (9, "singlestep"),
    (12, "getregs"),
    (13, "setregs"),
    (16, "attach"),
    (17, "detach"),
    (24, "syscall"),
    (0x4200, "setoptions"),
    (0x4206, "seize"),
    (0x4207, "interrupt"),
    (0x4208, "listen"),
];

/// `perf_event_attr.type` values below PERF_TYPE_MAX; others are dynamic PMUs.
const PERF_TYPES: &[&str] = &[
    "hardware",
    "software",
    "tracepoint",
    "hw_cache",
    "raw",
    "breakpoint",
];

fn indexed(table: &[&str], v: u64) -> String {
    table
        .get(v as usize)
        .map_or_else(|| v.to_string(), |s| s.to_string())
}

pub fn signal_name(n: i32) -> String {
    indexed(SIGNALS, n as u64)
}

fn ptrace_request(r: u64) -> String {
    PTRACE_REQUESTS
        .iter()
        .find(|(n, _)| *n == r)
        .map_or_else(|| r.to_string(), |(_, s)| s.to_string())
}

/// A perf event type's name; dynamic PMUs (kprobe, uprobe, ...) by their sysfs name.
fn perf_type(t: u64) -> String {
    if let Some(name) = PERF_TYPES.get(t as usize) {
        return name.to_string();
    }
    std::fs::read_dir("/sys/bus/event_source/devices")
        .into_iter()
        .flatten()
        .flatten()
        .find(|d| {
            std::fs::read_to_string(d.path().join("type")).is_ok_and(|s| s.trim().parse() == Ok(t))
        })
        .map_or_else(|| t.to_string(), |d| d.file_name().to_string_lossy().into())
}

fn bpf_body(r: &TamperRecord) -> pb::Bpf {
    let [cmd, head, tail] = r.args;
    let (low, high) = (head & 0xffff_ffff, head >> 32);
    let (cmd_name, kind, insn_count, attach_type) = match cmd {
        BPF_PROG_LOAD => ("prog_load", indexed(PROG_TYPES, low), high as u32, 0),
        BPF_MAP_CREATE => ("map_create", indexed(MAP_TYPES, low), 0, 0),
        BPF_PROG_ATTACH => ("prog_attach", String::new(), 0, tail as u32),
        BPF_RAW_TRACEPOINT_OPEN => ("raw_tracepoint_open", String::new(), 0, 0),
        BPF_LINK_CREATE => ("link_create", String::new(), 0, tail as u32),
        _ => ("", String::new(), 0, 0),
    };
    pb::Bpf {
        cmd: if cmd_name.is_empty() {
            cmd.to_string()
        } else {
            cmd_name.into()
        },
        r#type: kind,
        name: c_str(&r.name, r.name.len()),
        insn_count,
        attach_type,
        result: r.ret,
        error: names::errno(r.ret),
        args_source: args_source(r).into(),
    }
}

/// Where a record's arguments were read (see `args_source` in the proto).
fn args_source(r: &TamperRecord) -> &'static str {
    if r.flags & TAMPER_KERNEL_COPY != 0 {
        "kernel"
    } else {
        "user"
    }
}

/// The event body of a tamper record.
pub fn body(r: &TamperRecord) -> Option<Body> {
    let [a0, a1, a2] = r.args;
    let to_sensor = r.flags & TAMPER_TARGETS_SENSOR != 0;
    let (result, error) = (r.ret, names::errno(r.ret));
    let signal = |syscall: &str| {
        let number = a1 as i32;
        Body::Signal(pb::Signal {
            syscall: syscall.into(),
            target: a0 as i32,
            number,
            name: signal_name(number),
            target_is_sensor: to_sensor,
            result,
            error: error.clone(),
        })
    };
    Some(match TamperOp::from_u8(r.op)? {
        TamperOp::Bpf => Body::Bpf(bpf_body(r)),
        TamperOp::Signal => signal(""),
        TamperOp::Ptrace => Body::Ptrace(pb::Ptrace {
            request: ptrace_request(a0),
            target_pid: a1 as i32,
            target_is_sensor: to_sensor,
            result,
            error,
        }),
        TamperOp::PerfEventOpen => Body::PerfEventOpen(pb::PerfEventOpen {
            r#type: perf_type(a0),
            config: a1,
            target_pid: (a2 >> 32) as i32,
            cpu: a2 as u32 as i32,
            result,
            error,
            args_source: args_source(r).into(),
        }),
        TamperOp::Mount | TamperOp::Fsopen => Body::Mount(pb::Mount {
            syscall: if r.op == TamperOp::Mount as u8 {
                "mount"
            } else {
                "fsopen"
            }
            .into(),
            fstype: c_str(&r.name, r.name.len()),
            flags: a0,
            result,
            error,
            args_source: args_source(r).into(),
        }),
        TamperOp::IoUringSetup => Body::IoUring(pb::IoUringSetup {
            fd: r.ret as i32,
            sq_entries: a0 as u32,
            cq_entries: a1 as u32,
            flags: uring_setup_flags(a2 as u32),
        }),
    })
}

/// `IORING_SETUP_*` bits in order (include/uapi/linux/io_uring.h).
const IORING_SETUP: [&str; 17] = [
    "iopoll",
    "sqpoll",
    "sq_aff",
    "cqsize",
    "clamp",
    "attach_wq",
    "r_disabled",
    "submit_all",
    "coop_taskrun",
    "taskrun_flag",
    "sqe128",
    "cqe32",
    "single_issuer",
    "defer_taskrun",
    "no_mmap",
    "registered_fd_only",
    "no_sqarray",
];

/// The names of the set `IORING_SETUP_*` bits of `flags`, unknown ones in hex.
fn uring_setup_flags(flags: u32) -> Vec<String> {
    (0..32)
        .filter(|bit| flags & (1 << bit) != 0)
        .map(|bit| match IORING_SETUP.get(bit) {
            Some(name) => name.to_string(),
            None => format!("{:#x}", 1u32 << bit),
        })
        .collect()
}

impl Enricher {
    pub(super) fn on_tamper(&mut self, r: &TamperRecord, out: &mut Vec<pb::Event>) {
        let Some(body) = body(r) else {
            return;
        };
        let info = self.caller_info(&r.caller);
        self.process_event(&info, r.caller.pid, BootNs(r.header.boot_ns), body, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::{Caller, RecordHeader};

    fn record(op: TamperOp, args: [u64; 3], ret: i64, name: &[u8]) -> TamperRecord {
        let mut n = [0u8; 16];
        n[..name.len()].copy_from_slice(name);
        TamperRecord {
            header: RecordHeader {
                version: 0,
                kind: 0,
                cpu: 0,
                boot_ns: 0,
            },
            caller: Caller {
                pid: 1,
                tgid: 1,
                cgroup_id: 1,
                comm: [0; 16],
            },
            ret,
            args,
            name: n,
            op: op as u8,
            flags: TAMPER_TARGETS_SENSOR,
            _pad: [0; 6],
        }
    }

    #[test]
    fn names_what_the_kernel_numbers() {
        let load = record(
            TamperOp::Bpf,
            [BPF_PROG_LOAD, 2 | (9 << 32), 0],
            7,
            b"probe",
        );
        let Some(Body::Bpf(b)) = body(&load) else {
            panic!()
        };
        assert_eq!(
            (
                b.cmd.as_str(),
                b.r#type.as_str(),
                b.name.as_str(),
                b.insn_count
            ),
            ("prog_load", "kprobe", "probe", 9)
        );
        assert_eq!(b.args_source, "user");
        let copied = TamperRecord {
            flags: TAMPER_KERNEL_COPY,
            ..load
        };
        let Some(Body::Bpf(b)) = body(&copied) else {
            panic!()
        };
        assert_eq!(b.args_source, "kernel");
        let kill = record(TamperOp::Signal, [1234, 18, 1], 0, b"");
        let Some(Body::Signal(s)) = body(&kill) else {
            panic!()
        };
        assert_eq!(
            (s.name.as_str(), s.target, s.target_is_sensor),
            ("SIGCONT", 1234, true)
        );
        assert_eq!(s.syscall, "");
        let seize = record(TamperOp::Ptrace, [0x4206, 99, 0], -1, b"");
        let Some(Body::Ptrace(p)) = body(&seize) else {
            panic!()
        };
        assert_eq!(p.request, "seize");
        let perf = record(
            TamperOp::PerfEventOpen,
            [1, 0, (u32::MAX as u64) << 32 | 3],
            5,
            b"",
        );
        let Some(Body::PerfEventOpen(p)) = body(&perf) else {
            panic!()
        };
        assert_eq!(
            (p.r#type.as_str(), p.target_pid, p.cpu),
            ("software", -1, 3)
        );
        let ring = record(TamperOp::IoUringSetup, [8, 16, 0b10_0010], 5, b"");
        let Some(Body::IoUring(b)) = body(&ring) else {
            panic!("not an io_uring body")
        };
        assert_eq!((b.fd, b.sq_entries, b.cq_entries), (5, 8, 16));
        assert_eq!(b.flags, ["sqpoll", "attach_wq"]);
        assert_eq!(uring_setup_flags(1 << 30), ["0x40000000"]);
        let mount = record(TamperOp::Fsopen, [0, 0, 0], 3, b"tracefs");
        let Some(Body::Mount(m)) = body(&mount) else {
            panic!()
        };
        assert_eq!(
            (m.syscall.as_str(), m.fstype.as_str()),
            ("fsopen", "tracefs")
        );
    }
}
