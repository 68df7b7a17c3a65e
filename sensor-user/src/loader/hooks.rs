//! The hook table: every program the sensor attaches, where, and which error counter it uses.
//!
//! The default set has **no syscall tracepoint**: attaching even one puts every syscall of
//! every task on the node on the slow path (docs/benchmarks.md). Operations are seen where the
//! kernel does the work, which is also where io_uring requests pass: sched and cgroup
//! tracepoints, cgroup sock / sock_addr programs on the cgroup2 root, cgroup skb programs on
//! containers' cgroups, `sock` and `signal` tracepoints and TC classifiers on bridges and veths,
//! all of which load on every kernel with BTF.
//!
//! What only the syscall path shows on such a kernel (socket creation of the netlink and packet
//! families, ptrace, bpf(), perf_event_open, mount) is the opt-in [`HookSet::Syscall`].

use sensor_common::Hook;

/// How a hook attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
    RawTracePoint {
        name: &'static str,
    },
    /// A cgroup skb program (`egress` or `ingress`) on the cgroups that hold containers (on the
    /// cgroup2 root with `--net-host`): the host's packets run none.
    CgroupSkb {
        egress: bool,
    },
    /// A cgroup sock program on the cgroup2 root (`sock_create`, `post_bind4`, `post_bind6`).
    CgroupSock {
        attach: &'static str,
    },
    /// A cgroup sock_addr program on the cgroup2 root (`connect4`, `connect6`, `sendmsg4`,
    /// `sendmsg6`).
    CgroupSockAddr {
        attach: &'static str,
    },
    /// A TC classifier, attached to every eligible interface as interfaces come and go.
    Tc {
        ingress: bool,
    },
}

impl Attach {
    /// Whether this hook sits on the syscall path (a `syscalls:*` tracepoint).
    pub fn on_syscall_path(&self) -> bool {
        matches!(self, Attach::TracePoint { category, .. } if *category == "syscalls")
    }

    /// Whether the kernel has this attach point (tracepoints: listed in tracefs; the other
    /// kinds are taken to exist and fail to attach with their own reason).
    fn exists(&self) -> bool {
        match self {
            Attach::TracePoint { category, name } => {
                super::tracefs::ensure_tracefs().is_ok_and(|root| {
                    std::path::Path::new(&format!("{root}/events/{category}/{name}")).exists()
                })
            }
            _ => true,
        }
    }
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attach::TracePoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Attach::RawTracePoint { name } => write!(f, "raw_tracepoint {name}"),
            Attach::CgroupSkb { egress: true } => {
                write!(f, "cgroup_skb/egress on the cgroups holding containers")
            }
            Attach::CgroupSkb { egress: false } => {
                write!(f, "cgroup_skb/ingress on the cgroups holding containers")
            }
            Attach::CgroupSock { attach } => write!(f, "cgroup/{attach} on the cgroup2 root"),
            Attach::CgroupSockAddr { attach } => {
                write!(f, "cgroup/{attach} on the cgroup2 root")
            }
            Attach::Tc { ingress: true } => {
                write!(f, "tc ingress on every bridge and veth")
            }
            Attach::Tc { ingress: false } => {
                write!(f, "tc egress on every bridge and veth")
            }
        }
    }
}

/// One program: which hook it serves and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    pub hook: Hook,
    /// The hook's name in `health` and `sensor check`.
    pub name: &'static str,
    pub program: &'static str,
    pub attach: Attach,
    /// Left out, with this warning, where the kernel lacks the attach point (a feature the
    /// kernel was built without); `None`: the sensor cannot run without it.
    pub optional: Option<&'static str>,
}

impl HookSpec {
    /// For an optional hook whose attach point this kernel lacks: why it is left out. A hook
    /// that failed to attach for any other reason is a failure.
    pub fn left_out(&self) -> Option<&'static str> {
        self.optional.filter(|_| !self.attach.exists())
    }
}

const fn tp(
    hook: Hook,
    name: &'static str,
    category: &'static str,
    tracepoint: &'static str,
) -> HookSpec {
    HookSpec {
        hook,
        name,
        program: tracepoint,
        attach: Attach::TracePoint {
            category,
            name: tracepoint,
        },
        optional: None,
    }
}

/// A syscall's entry and exit tracepoints (programs are named after them).
macro_rules! syscall {
    ($hook:expr, $name:literal, $call:literal) => {
        [
            tp($hook, $name, "syscalls", concat!("sys_enter_", $call)),
            tp($hook, $name, "syscalls", concat!("sys_exit_", $call)),
        ]
    };
}

const PROCESS: [HookSpec; 5] = [
    tp(Hook::Exec, "exec", "sched", "sched_process_exec"),
    HookSpec {
        hook: Hook::Fork,
        name: "fork",
        program: "sched_process_fork",
        attach: Attach::RawTracePoint {
            name: "sched_process_fork",
        },
        optional: None,
    },
    tp(Hook::Exit, "exit", "sched", "sched_process_exit"),
    tp(Hook::CgroupMkdir, "cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    tp(Hook::CgroupRmdir, "cgroup_rmdir", "cgroup", "cgroup_rmdir"),
];

const fn on_cgroup(
    hook: Hook,
    name: &'static str,
    program: &'static str,
    attach: Attach,
) -> HookSpec {
    HookSpec {
        hook,
        name,
        program,
        attach,
        optional: None,
    }
}

/// Socket operations where the kernel carries them out (io_uring requests included).
const SOCKET: [HookSpec; 7] = [
    on_cgroup(
        Hook::Socket,
        "socket",
        "sock_create",
        Attach::CgroupSock {
            attach: "sock_create",
        },
    ),
    on_cgroup(
        Hook::Connect,
        "connect",
        "connect4",
        Attach::CgroupSockAddr { attach: "connect4" },
    ),
    on_cgroup(
        Hook::Connect,
        "connect",
        "connect6",
        Attach::CgroupSockAddr { attach: "connect6" },
    ),
    on_cgroup(
        Hook::Send,
        "send",
        "sendmsg4",
        Attach::CgroupSockAddr { attach: "sendmsg4" },
    ),
    on_cgroup(
        Hook::Send,
        "send",
        "sendmsg6",
        Attach::CgroupSockAddr { attach: "sendmsg6" },
    ),
    on_cgroup(
        Hook::Bind,
        "bind",
        "post_bind4",
        Attach::CgroupSock {
            attach: "post_bind4",
        },
    ),
    on_cgroup(
        Hook::Bind,
        "bind",
        "post_bind6",
        Attach::CgroupSock {
            attach: "post_bind6",
        },
    ),
];

const NETWORK: [HookSpec; 5] = [
    tp(Hook::TcpState, "tcp_state", "sock", "inet_sock_set_state"),
    HookSpec {
        hook: Hook::Traffic,
        name: "traffic",
        program: "traffic_egress",
        attach: Attach::CgroupSkb { egress: true },
        optional: None,
    },
    HookSpec {
        hook: Hook::Traffic,
        name: "traffic",
        program: "traffic_ingress",
        attach: Attach::CgroupSkb { egress: false },
        optional: None,
    },
    HookSpec {
        hook: Hook::IcmpTc,
        name: "icmp_tc",
        program: "icmp_tc_ingress",
        attach: Attach::Tc { ingress: true },
        optional: None,
    },
    HookSpec {
        hook: Hook::IcmpTc,
        name: "icmp_tc",
        program: "icmp_tc_egress",
        attach: Attach::Tc { ingress: false },
        optional: None,
    },
];

/// Signals aimed at the sensor, whichever call (or the kernel) sent them.
const SIGNAL: HookSpec = tp(Hook::Signal, "signal", "signal", "signal_generate");

/// io_uring rings set up by containers (once per ring, never on the syscall path).
const IO_URING: HookSpec = HookSpec {
    optional: Some(
        "io_uring: this kernel has no io_uring:io_uring_create tracepoint (built without \
         CONFIG_IO_URING): no ring can be set up here, so there is nothing to watch",
    ),
    ..tp(Hook::IoUring, "io_uring", "io_uring", "io_uring_create")
};

/// The syscall fallback: signals that exist only on the syscall path of a kernel without
/// kprobes or fentry (filtered in the kernel).
const SYSCALL_FALLBACK: [[HookSpec; 2]; 6] = [
    syscall!(Hook::Socket, "socket_other", "socket"),
    syscall!(Hook::Bpf, "bpf", "bpf"),
    syscall!(Hook::Ptrace, "ptrace", "ptrace"),
    syscall!(Hook::PerfEvent, "perf_event_open", "perf_event_open"),
    syscall!(Hook::Mount, "mount", "mount"),
    syscall!(Hook::Mount, "mount", "fsopen"),
];

/// Which hooks the sensor attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HookSet {
    /// No syscall tracepoint: no cost on syscalls the sensor does not watch. Blind on this
    /// kind of kernel to the events only the syscall path shows (see `sensor check`).
    #[default]
    Default,
    /// The default set plus syscall tracepoints for socket (netlink, packet), bpf, ptrace,
    /// perf_event_open, mount and fsopen: every syscall on the node takes the slow path.
    Syscall,
}

impl std::fmt::Display for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookSet::Default => "default",
            HookSet::Syscall => "syscall",
        })
    }
}

/// Event kinds that only the syscall fallback produces here: rules on them are blind without it.
const FALLBACK_KINDS: [&str; 4] = ["bpf", "ptrace", "perf_event_open", "mount"];

/// How to lift the blindness, and what it costs: said by `sensor check` and the start-up line.
pub const FALLBACK_ADVICE: &str = "turn it on with --hooks syscall (SENSOR_HOOKS=syscall), which \
     puts every syscall of every task on the node on the slow path (docs/benchmarks.md, mode floor)";

impl HookSet {
    /// Event kinds no attached hook produces with this set on a kernel like this one.
    pub fn blind_kinds(self) -> &'static [&'static str] {
        match self {
            HookSet::Default => &FALLBACK_KINDS,
            HookSet::Syscall => &[],
        }
    }
}

/// The programs a hook set adds to the default hooks.
pub fn variant_hooks(set: HookSet) -> Vec<HookSpec> {
    match set {
        HookSet::Default => Vec::new(),
        HookSet::Syscall => SYSCALL_FALLBACK.iter().flatten().copied().collect(),
    }
}

/// The default hook set, in attach order (process hooks first).
pub fn default_hooks() -> Vec<HookSpec> {
    let mut hooks = PROCESS.to_vec();
    hooks.extend(SOCKET);
    hooks.extend(NETWORK);
    hooks.push(SIGNAL);
    hooks.push(IO_URING);
    hooks
}

/// Hooks grouped by name, with all their attach points, in table order.
pub fn grouped(hooks: &[HookSpec]) -> Vec<(Hook, &'static str, String)> {
    let mut out: Vec<(Hook, &'static str, String)> = Vec::new();
    for h in hooks {
        match out.iter_mut().find(|(_, name, _)| *name == h.name) {
            Some((_, _, attach)) => {
                attach.push_str(", ");
                attach.push_str(&h.attach.to_string());
            }
            None => out.push((h.hook, h.name, h.attach.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let hooks = default_hooks();
        let mut programs: Vec<&str> = hooks.iter().map(|h| h.program).collect();
        programs.sort();
        programs.dedup();
        assert_eq!(programs.len(), hooks.len(), "a program attached twice");
        let groups = grouped(&hooks);
        let names: Vec<&str> = groups.iter().map(|g| g.1).collect();
        assert_eq!(
            names[..5],
            ["exec", "fork", "exit", "cgroup_mkdir", "cgroup_rmdir"]
        );
        let connect = groups.iter().find(|g| g.1 == "connect").unwrap();
        assert_eq!(
            connect.2,
            "cgroup/connect4 on the cgroup2 root, cgroup/connect6 on the cgroup2 root"
        );
        assert!(
            !hooks.iter().any(|h| h.attach.on_syscall_path()),
            "a syscall tracepoint in the default set"
        );
        // Every Hook has at least one program, in the default set or the fallback.
        let fallback = variant_hooks(HookSet::Syscall);
        assert!(fallback.iter().all(|h| h.attach.on_syscall_path()));
        let all: Vec<HookSpec> = hooks.iter().copied().chain(fallback).collect();
        for i in 0..sensor_common::HOOK_COUNT {
            assert!(
                all.iter().any(|h| h.hook as u32 == i),
                "hook {i} has no program"
            );
        }
        assert!(variant_hooks(HookSet::Default).is_empty());
    }
}
