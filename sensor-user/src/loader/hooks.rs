//! The hook table: every program the sensor attaches, where, and which error counter it uses.
//!
//! The default set uses only tracepoints, raw tracepoints, cgroup skb programs and TC classifiers,
//! which load on every kernel with BTF (kprobe and fentry are unavailable on some, see `sensor
//! check`). ICMP of containers' sockets is counted by the traffic programs (cgroup skb), not on
//! the syscall path.

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
    /// A cgroup skb program on the cgroup2 root (`egress` or `ingress`).
    CgroupSkb {
        egress: bool,
    },
    Kprobe {
        function: &'static str,
    },
    /// A TC classifier, attached to every eligible interface as interfaces come and go.
    Tc {
        ingress: bool,
    },
    Fentry {
        function: &'static str,
    },
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attach::TracePoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Attach::RawTracePoint { name } => write!(f, "raw_tracepoint {name}"),
            Attach::CgroupSkb { egress: true } => {
                write!(f, "cgroup_skb/egress on the cgroup2 root")
            }
            Attach::CgroupSkb { egress: false } => {
                write!(f, "cgroup_skb/ingress on the cgroup2 root")
            }
            Attach::Kprobe { function } => write!(f, "kprobe {function}"),
            Attach::Tc { ingress: true } => {
                write!(f, "tc ingress on every ethernet and loopback interface")
            }
            Attach::Tc { ingress: false } => {
                write!(f, "tc egress on every ethernet and loopback interface")
            }
            Attach::Fentry { function } => write!(f, "fentry {function}"),
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
    },
    tp(Hook::Exit, "exit", "sched", "sched_process_exit"),
    tp(Hook::CgroupMkdir, "cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    tp(Hook::CgroupRmdir, "cgroup_rmdir", "cgroup", "cgroup_rmdir"),
];

const SOCKET: [[HookSpec; 2]; 6] = [
    syscall!(Hook::Socket, "socket", "socket"),
    syscall!(Hook::Connect, "connect", "connect"),
    syscall!(Hook::Accept, "accept", "accept"),
    syscall!(Hook::Accept, "accept", "accept4"),
    syscall!(Hook::Bind, "bind", "bind"),
    syscall!(Hook::Listen, "listen", "listen"),
];

const STDIO_AND_NAMESPACES: [[HookSpec; 2]; 7] = [
    syscall!(Hook::Dup, "dup", "dup"),
    syscall!(Hook::Dup, "dup", "dup2"),
    syscall!(Hook::Dup, "dup", "dup3"),
    syscall!(Hook::Setns, "setns", "setns"),
    syscall!(Hook::Unshare, "unshare", "unshare"),
    syscall!(Hook::Clone, "clone", "clone"),
    syscall!(Hook::Clone, "clone", "clone3"),
];

/// Calls that could blind or tamper with the sensor (filtered in the kernel).
const TAMPER: [[HookSpec; 2]; 9] = [
    syscall!(Hook::Bpf, "bpf", "bpf"),
    syscall!(Hook::Signal, "signal", "kill"),
    syscall!(Hook::Signal, "signal", "tkill"),
    syscall!(Hook::Signal, "signal", "tgkill"),
    syscall!(Hook::Signal, "signal", "pidfd_send_signal"),
    syscall!(Hook::Ptrace, "ptrace", "ptrace"),
    syscall!(Hook::PerfEvent, "perf_event_open", "perf_event_open"),
    syscall!(Hook::Mount, "mount", "mount"),
    syscall!(Hook::Mount, "mount", "fsopen"),
];

const NETWORK: [HookSpec; 5] = [
    tp(Hook::TcpState, "tcp_state", "sock", "inet_sock_set_state"),
    HookSpec {
        hook: Hook::Traffic,
        name: "traffic",
        program: "traffic_egress",
        attach: Attach::CgroupSkb { egress: true },
    },
    HookSpec {
        hook: Hook::Traffic,
        name: "traffic",
        program: "traffic_ingress",
        attach: Attach::CgroupSkb { egress: false },
    },
    HookSpec {
        hook: Hook::IcmpTc,
        name: "icmp_tc",
        program: "icmp_tc_ingress",
        attach: Attach::Tc { ingress: true },
    },
    HookSpec {
        hook: Hook::IcmpTc,
        name: "icmp_tc",
        program: "icmp_tc_egress",
        attach: Attach::Tc { ingress: false },
    },
];

/// Where socket addresses of connect and bind are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookSet {
    /// Syscall tracepoints only: the caller's buffer, re-read at syscall exit.
    Tracepoint,
    /// kprobes on security_socket_{connect,bind}: the kernel's copy.
    Kprobe,
    /// fentry on security_socket_{connect,bind}: the kernel's copy, cheaper than kprobes.
    Fentry,
}

impl std::fmt::Display for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookSet::Tracepoint => "tracepoint",
            HookSet::Kprobe => "kprobe",
            HookSet::Fentry => "fentry",
        })
    }
}

/// The programs a hook set adds to the default hooks.
pub fn variant_hooks(set: HookSet) -> Vec<HookSpec> {
    let spec = |program, attach| HookSpec {
        hook: Hook::SockAddr,
        name: "sockaddr",
        program,
        attach,
    };
    match set {
        HookSet::Tracepoint => Vec::new(),
        HookSet::Kprobe => vec![
            spec(
                "sockaddr_connect_kprobe",
                Attach::Kprobe {
                    function: "security_socket_connect",
                },
            ),
            spec(
                "sockaddr_bind_kprobe",
                Attach::Kprobe {
                    function: "security_socket_bind",
                },
            ),
        ],
        HookSet::Fentry => vec![
            spec(
                "sockaddr_connect_fentry",
                Attach::Fentry {
                    function: "security_socket_connect",
                },
            ),
            spec(
                "sockaddr_bind_fentry",
                Attach::Fentry {
                    function: "security_socket_bind",
                },
            ),
        ],
    }
}

/// The default hook set, in attach order (process hooks first).
pub fn default_hooks() -> Vec<HookSpec> {
    let mut hooks = PROCESS.to_vec();
    hooks.extend(SOCKET.iter().flatten());
    hooks.extend(STDIO_AND_NAMESPACES.iter().flatten());
    hooks.extend(TAMPER.iter().flatten());
    hooks.extend(NETWORK);
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
            "tracepoint syscalls:sys_enter_connect, tracepoint syscalls:sys_exit_connect"
        );
        // Every Hook has at least one program, in the default set or a variant.
        let all: Vec<HookSpec> = hooks
            .iter()
            .copied()
            .chain(variant_hooks(HookSet::Kprobe))
            .collect();
        for i in 0..sensor_common::HOOK_COUNT {
            assert!(
                all.iter().any(|h| h.hook as u32 == i),
                "hook {i} has no program"
            );
        }
        assert!(variant_hooks(HookSet::Tracepoint).is_empty());
        assert_eq!(
            variant_hooks(HookSet::Fentry).len(),
            variant_hooks(HookSet::Kprobe).len()
        );
    }
}
