//! The hook table: every program the sensor attaches, where, and which error counter it uses.
//!
//! The default set has **no syscall tracepoint**: attaching even one puts every syscall of
//! every task on the node on the slow path (docs/benchmarks.md). Operations are seen where the
//! kernel does the work, which is also where io_uring requests pass: sched and cgroup
//! tracepoints, cgroup sock / sock_addr programs on the cgroup2 root, cgroup skb programs on
//! containers' cgroups, `sock` and `signal` tracepoints and TC classifiers on bridges and routed
//! container links, all of which load on every kernel with BTF.
//!
//! What the kernel shows nowhere but on the syscall path (socket creation of the netlink and
//! packet families, ptrace, bpf(), perf_event_open, mount, fsopen) is watched on those
//! syscalls' own kernel functions (`__x64_sys_bpf`, ...) by fentry/fexit, else kprobes, where
//! the kernel has either: a trampoline on one function costs only that syscall. On a kernel
//! with neither (this project's CI host), it is the opt-in [`HookSet::Syscall`]: tracepoints
//! that put every syscall on the slow path.

use sensor_common::Hook;

/// How a hook attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
    /// A BTF tracepoint (`tp_btf`): a raw tracepoint whose arguments the verifier types from
    /// BTF, so the program reads them by plain loads.
    BtfTracePoint { name: &'static str },
    /// A cgroup skb program (`egress` or `ingress`) on the cgroups that hold containers (on the
    /// cgroup2 root with `--net-host`): the host's packets run none.
    CgroupSkb { egress: bool },
    /// A cgroup sock program on the cgroup2 root (`sock_create`, `post_bind4`, `post_bind6`).
    CgroupSock { attach: &'static str },
    /// A cgroup sock_addr program on the cgroup2 root (`connect4`, `connect6`, `sendmsg4`,
    /// `sendmsg6`).
    CgroupSockAddr { attach: &'static str },
    /// A TC classifier, attached to every eligible interface as interfaces come and go.
    Tc { ingress: bool },
    /// A probe on one kernel function: only its callers pay for it.
    Function {
        probe: FunctionProbe,
        function: Function,
    },
}

/// A kernel function a probe attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// A syscall's own function (`__x64_sys_<name>`), which takes the user registers.
    Syscall(&'static str),
    /// A function called inside those syscalls with the kernel's copy of an argument.
    Kernel(&'static str),
}

impl Function {
    /// The kernel symbol. Only x86_64's syscall register layout is built into the probes.
    pub fn symbol(self) -> anyhow::Result<String> {
        match self {
            Function::Kernel(name) => Ok(name.to_string()),
            Function::Syscall(name) if cfg!(target_arch = "x86_64") => {
                Ok(format!("__x64_sys_{name}"))
            }
            Function::Syscall(_) => anyhow::bail!(
                "hooks on syscall functions are built for x86_64 only; on this architecture use \
                 --hooks syscall"
            ),
        }
    }
}

/// How a program is attached to a kernel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionProbe {
    FEntry,
    FExit,
    KProbe,
    KRetProbe,
}

impl FunctionProbe {
    fn name(self) -> &'static str {
        match self {
            FunctionProbe::FEntry => "fentry",
            FunctionProbe::FExit => "fexit",
            FunctionProbe::KProbe => "kprobe",
            FunctionProbe::KRetProbe => "kretprobe",
        }
    }
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
            Attach::BtfTracePoint { name } => write!(f, "tp_btf {name}"),
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
                write!(f, "tc ingress on every bridge and routed container link")
            }
            Attach::Tc { ingress: false } => {
                write!(f, "tc egress on every bridge and routed container link")
            }
            Attach::Function { probe, function } => match function.symbol() {
                Ok(symbol) => write!(f, "{} {symbol}", probe.name()),
                Err(_) => write!(f, "{} on {function:?}", probe.name()),
            },
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
    /// kernel was built without; for a function hook, any failure to attach); `None`: the
    /// sensor (or its hook set) cannot run without it.
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
    HookSpec {
        hook: Hook::Exec,
        name: "exec",
        program: "sched_process_exec",
        attach: Attach::BtfTracePoint {
            name: "sched_process_exec",
        },
        optional: None,
    },
    HookSpec {
        hook: Hook::Fork,
        name: "fork",
        program: "sched_process_fork",
        attach: Attach::BtfTracePoint {
            name: "sched_process_fork",
        },
        optional: None,
    },
    HookSpec {
        hook: Hook::Exit,
        name: "exit",
        program: "sched_process_exit",
        attach: Attach::BtfTracePoint {
            name: "sched_process_exit",
        },
        optional: None,
    },
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
    HookSpec {
        hook: Hook::TcpState,
        name: "tcp_state",
        program: "inet_sock_set_state",
        attach: Attach::BtfTracePoint {
            name: "inet_sock_set_state",
        },
        optional: None,
    },
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

/// The syscalls whose signals only the syscall path shows: `$pair!(ARGS..., hook, name,
/// syscall)` for each.
macro_rules! syscall_hooks {
    ($pair:ident $(, $($args:tt)+)?) => {
        [
            $pair!($($($args)+,)? Hook::Socket, "socket_other", "socket"),
            $pair!($($($args)+,)? Hook::Bpf, "bpf", "bpf"),
            $pair!($($($args)+,)? Hook::Ptrace, "ptrace", "ptrace"),
            $pair!($($($args)+,)? Hook::PerfEvent, "perf_event_open", "perf_event_open"),
            $pair!($($($args)+,)? Hook::Mount, "mount", "mount"),
            $pair!($($($args)+,)? Hook::Mount, "mount", "fsopen"),
        ]
    };
}

const fn on_function(
    hook: Hook,
    name: &'static str,
    program: &'static str,
    probe: FunctionProbe,
    function: Function,
) -> HookSpec {
    HookSpec {
        hook,
        name,
        program,
        attach: Attach::Function { probe, function },
        optional: None,
    }
}

/// A probe at a syscall function's entry and one at its return (programs named after the
/// probe and the syscall).
macro_rules! on_syscall_function {
    ($entry:ident $entry_prefix:literal, $exit:ident $exit_prefix:literal,
     $hook:expr, $name:literal, $call:literal) => {
        [
            on_function(
                $hook,
                $name,
                concat!($entry_prefix, $call),
                FunctionProbe::$entry,
                Function::Syscall($call),
            ),
            on_function(
                $hook,
                $name,
                concat!($exit_prefix, $call),
                FunctionProbe::$exit,
                Function::Syscall($call),
            ),
        ]
    };
}

const FENTRY: [[HookSpec; 2]; 6] =
    syscall_hooks!(on_syscall_function, FEntry "fentry_", FExit "fexit_");
const KPROBE: [[HookSpec; 2]; 6] =
    syscall_hooks!(on_syscall_function, KProbe "kprobe_", KRetProbe "kretprobe_");

/// Functions inside those calls that hold the kernel's own copy of an argument (bpf's attr,
/// the filesystem type of mount and fsopen): what the kernel acts on, which a racing thread
/// can no longer change. The exits report it instead of the caller's memory.
macro_rules! inside_calls {
    ($probe:expr, $bpf:literal, $fs_type:literal) => {
        [
            HookSpec {
                optional: Some(
                    "bpf: no security_bpf to hook here (a kernel built without CONFIG_SECURITY): \
                     bpf() arguments are read from the caller's memory (args_source \"user\")",
                ),
                ..on_function(
                    Hook::Bpf,
                    "bpf",
                    $bpf,
                    $probe,
                    Function::Kernel("security_bpf"),
                )
            },
            HookSpec {
                optional: Some(
                    "mount: no get_fs_type to hook here: the filesystem type of mount() and \
                     fsopen() is read from the caller's memory (args_source \"user\")",
                ),
                ..on_function(
                    Hook::Mount,
                    "mount",
                    $fs_type,
                    $probe,
                    Function::Kernel("get_fs_type"),
                )
            },
        ]
    };
}

const FENTRY_INSIDE: [HookSpec; 2] = inside_calls!(
    FunctionProbe::FEntry,
    "fentry_security_bpf",
    "fentry_get_fs_type"
);
const KPROBE_INSIDE: [HookSpec; 2] = inside_calls!(
    FunctionProbe::KProbe,
    "kprobe_security_bpf",
    "kprobe_get_fs_type"
);
/// The syscall fallback: the same signals from the syscalls' tracepoints (filtered in the
/// kernel, but every syscall on the node takes the slow path).
const SYSCALL_FALLBACK: [[HookSpec; 2]; 6] = syscall_hooks!(syscall);

/// Which hooks the sensor attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HookSet {
    /// No syscall tracepoint: no cost on syscalls the sensor does not watch. The few syscalls
    /// whose signals only the syscall path shows are watched on their own kernel functions by
    /// fentry, else kprobes; on a kernel with neither, the sensor is blind to them (see
    /// `sensor check`). Resolves to `fentry`, `kprobe` or `tracepoint` at start.
    #[default]
    Default,
    /// The default set with fentry/fexit on those syscalls' functions (fails if fentry is
    /// unusable here).
    Fentry,
    /// The default set with kprobes/kretprobes on those syscalls' functions.
    Kprobe,
    /// The default set without function hooks: what a kernel without fentry or kprobes gets.
    Tracepoint,
    /// The default set without function hooks, plus syscall tracepoints for socket (netlink,
    /// packet), bpf, ptrace, perf_event_open, mount and fsopen: every syscall on the node takes
    /// the slow path. For kernels without fentry or kprobes.
    Syscall,
}

impl std::fmt::Display for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookSet::Default => "default",
            HookSet::Fentry => "fentry",
            HookSet::Kprobe => "kprobe",
            HookSet::Tracepoint => "tracepoint",
            HookSet::Syscall => "syscall",
        })
    }
}

/// Event kinds only the function hooks or the syscall fallback produce: rules on them are
/// blind without either.
const FALLBACK_KINDS: [&str; 4] = ["bpf", "ptrace", "perf_event_open", "mount"];

/// How to lift the blindness, and what it costs: said by `sensor check` and the start-up line.
pub const FALLBACK_ADVICE: &str = "this kernel has neither fentry nor kprobes for watching those \
     syscalls' own functions; turn on the syscall fallback with --hooks syscall \
     (SENSOR_HOOKS=syscall), which puts every syscall of every task on the node on the slow \
     path (docs/benchmarks.md, mode floor)";

impl HookSet {
    /// Event kinds no attached hook produces with this (resolved) set.
    pub fn blind_kinds(self) -> &'static [&'static str] {
        match self {
            HookSet::Tracepoint => &FALLBACK_KINDS,
            HookSet::Default | HookSet::Fentry | HookSet::Kprobe | HookSet::Syscall => &[],
        }
    }

    /// The sets `--hooks default` tries, in order (the last always attaches).
    pub fn candidates(self) -> &'static [HookSet] {
        match self {
            HookSet::Default => &[HookSet::Fentry, HookSet::Kprobe, HookSet::Tracepoint],
            HookSet::Fentry => &[HookSet::Fentry],
            HookSet::Kprobe => &[HookSet::Kprobe],
            HookSet::Tracepoint => &[HookSet::Tracepoint],
            HookSet::Syscall => &[HookSet::Syscall],
        }
    }
}

/// The programs a resolved hook set adds to the default hooks.
pub fn variant_hooks(set: HookSet) -> Vec<HookSpec> {
    let (table, inside): (&[[HookSpec; 2]], &[HookSpec]) = match set {
        HookSet::Default | HookSet::Tracepoint => (&[], &[]),
        HookSet::Fentry => (&FENTRY, &FENTRY_INSIDE),
        HookSet::Kprobe => (&KPROBE, &KPROBE_INSIDE),
        HookSet::Syscall => (&SYSCALL_FALLBACK, &[]),
    };
    table.iter().flatten().chain(inside).copied().collect()
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
        let all: Vec<HookSpec> = hooks.iter().chain(&fallback).copied().collect();
        for i in 0..sensor_common::HOOK_COUNT {
            assert!(
                all.iter().any(|h| h.hook as u32 == i),
                "hook {i} has no program"
            );
        }
        assert!(variant_hooks(HookSet::Default).is_empty());
        // The function sets watch the same syscalls as the fallback, off the syscall path.
        for set in [HookSet::Fentry, HookSet::Kprobe] {
            let hooks = variant_hooks(set);
            assert_eq!(hooks.len(), fallback.len() + FENTRY_INSIDE.len(), "{set}");
            for (f, t) in hooks.iter().zip(&fallback) {
                assert_eq!((f.hook, f.name), (t.hook, t.name), "{set}");
                assert!(!f.attach.on_syscall_path(), "{set}: {}", f.attach);
            }
            assert!(set.blind_kinds().is_empty());
        }
        assert_eq!(HookSet::Tracepoint.blind_kinds(), FALLBACK_KINDS);
        assert_eq!(
            HookSet::Default.candidates().last(),
            Some(&HookSet::Tracepoint),
            "the default always resolves"
        );
    }
}
