//! The fields rules read, as views of a `sensor.v1.Event`: one table names every field, says
//! what it means and how to read it, so `sensor rules validate` can reject an unknown field and
//! the docs can list them.

use std::{collections::HashMap, sync::LazyLock};

use sensor_proto::{self as pb, event::Body};

use super::condition::{Fields, Schema, Slot, Value};

/// How one field is read from an event.
type Getter = fn(&pb::Event) -> Option<Value>;

/// A field: name, meaning, reader.
pub struct FieldDef {
    pub name: &'static str,
    pub doc: &'static str,
    get: Getter,
}

fn s(v: &str) -> Option<Value> {
    (!v.is_empty()).then(|| Value::Str(v.to_string()))
}

fn i(v: i64) -> Option<Value> {
    Some(Value::Int(v))
}

fn list<T: AsRef<str>>(v: &[T]) -> Option<Value> {
    Some(Value::List(
        v.iter()
            .map(|x| Value::Str(x.as_ref().to_string()))
            .collect(),
    ))
}

fn proc_of(e: &pb::Event) -> Option<&pb::Process> {
    e.process.as_ref()
}

fn container_of(e: &pb::Event) -> Option<&pb::Container> {
    e.container.as_ref()
}

fn pod_of(e: &pb::Event) -> Option<&pb::Pod> {
    container_of(e).and_then(|c| c.pod.as_ref())
}

/// `registry:5000/team/app:1.2@sha256:...` -> (`registry:5000/team/app`, `1.2`); the tag is
/// `latest` when the reference names none (and no digest either).
pub fn image_parts(image: &str) -> (&str, &str) {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(colon) => (&name[..slash + colon], &name[slash + colon + 1..]),
        None if digest => (name, ""),
        None => (name, "latest"),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Multi-call executables: one binary that is many programs, chosen by argv[0] or argv[1].
const MULTI_CALL: [&str; 2] = ["busybox", "toybox"];

/// Options of the glibc and musl dynamic loaders that take a value.
const LOADER_OPTIONS_WITH_VALUE: [&str; 5] = [
    "--library-path",
    "--preload",
    "--argv0",
    "--audit",
    "--inhibit-rpath",
];

/// Whether `name` is a dynamic loader's file name (`ld-linux-x86-64.so.2`, `ld-musl-x86_64.so.1`,
/// `ld.so`): run as a command, it runs the program its arguments name.
fn is_loader(name: &str) -> bool {
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}

/// The program file a process runs and its argv from there: the executable, or for a dynamic
/// loader run as a command (`ld.so [OPTIONS] PROGRAM ARGS`) the program it loads, which is
/// never the process's executable (a renamed tool run this way hides from `proc.exe`).
fn program<'a>(exe: &'a str, args: &'a [String]) -> (&'a str, &'a [String]) {
    if !is_loader(basename(exe)) {
        return (exe, args);
    }
    let mut i = 1;
    while let Some(a) = args.get(i) {
        if LOADER_OPTIONS_WITH_VALUE.contains(&a.as_str()) {
            i += 2;
        } else if a.starts_with("--") {
            i += 1;
        } else {
            return (a, &args[i..]);
        }
    }
    (exe, args)
}

/// The program a process runs: its executable's name, except for a multi-call binary
/// (busybox, toybox, as Alpine and most small images ship them, run as `/bin/busybox`,
/// `/proc/self/exe` or a symlink), where it is the applet argv names (`busybox sh -c ...` and
/// an `sh` symlink both run `sh`), and for a dynamic loader run as a command, the program it
/// loads (so `ld.so /tmp/nc -e sh` runs `nc`).
fn applet<'a>(exe: &'a str, args: &'a [String]) -> &'a str {
    let (exe, args) = program(exe, args);
    let exe_name = basename(exe);
    let multi = |name: &str| MULTI_CALL.iter().any(|m| name.starts_with(m));
    if !multi(exe_name) {
        return exe_name;
    }
    match args.first().map(|a| basename(a)) {
        Some(argv0) if multi(argv0) => args.get(1).map_or(exe_name, |a| basename(a)),
        Some(argv0) if !argv0.is_empty() => argv0,
        _ => exe_name,
    }
}

macro_rules! body {
    ($e:expr, $variant:ident) => {
        match &$e.body {
            Some(Body::$variant(b)) => Some(b),
            _ => None,
        }
    };
}

fn endpoint_addr(e: Option<&pb::Endpoint>) -> Option<Value> {
    e.and_then(|e| s(e.address.strip_prefix("::ffff:").unwrap_or(&e.address)))
}

/// A list of fds as a field value.
fn fds(fds: &[i32]) -> Value {
    Value::List(fds.iter().map(|fd| Value::Int(*fd as i64)).collect())
}

/// The remote end of a network event, whichever kind it is: a socket call's remote address, a
/// traffic or ICMP report's peer, a redirected stdio socket's peer, an exec's stdio peer.
fn peer_of(e: &pb::Event) -> Option<&pb::Endpoint> {
    match e.body.as_ref()? {
        Body::Socket(b) => b.remote.as_ref(),
        Body::Traffic(b) => b.peer.as_ref(),
        Body::Icmp(b) => b.peer.as_ref(),
        Body::Exec(b) => b.stdio_peer.as_ref(),
        Body::Fork(b) => b.stdio_peer.as_ref(),
        Body::StdioRelay(b) => b.peer.as_ref(),
        _ => None,
    }
}

fn endpoint_port(e: Option<&pb::Endpoint>) -> Option<Value> {
    e.map(|e| Value::Int(e.port as i64))
}

fn secs(d: Option<&pbjson_types::Duration>) -> Option<Value> {
    d.map(|d| Value::Int(d.seconds * 1000 + (d.nanos / 1_000_000) as i64))
}

macro_rules! field {
    ($name:literal, $doc:literal, $get:expr) => {
        FieldDef {
            name: $name,
            doc: $doc,
            get: $get,
        }
    };
}

/// Every field a rule may use.
pub const FIELDS: &[FieldDef] = &[
    field!(
        "evt.kind",
        "Event kind: exec, fork, exit, container_started, container_exited, socket, namespace_change, tcp_state, traffic, icmp, bpf, signal, ptrace, perf_event_open, mount, io_uring, stdio_relay, events_dropped, spool_failing, spool_evicted, health",
        |e| s(&e.kind)
    ),
    field!(
        "evt.host",
        "True when the event comes from a host process (not a container)",
        |e| Some(Value::Bool(e.host))
    ),
    field!(
        "container.id",
        "Full container id (absent on the host)",
        |e| e.container.as_ref().and_then(|c| s(&c.id))
    ),
    field!(
        "container.runtime",
        "docker, containerd, cri-o, podman, kubernetes, actions, lxc",
        |e| e.container.as_ref().and_then(|c| s(&c.runtime))
    ),
    field!("container.cgroup_path", "The container's cgroup", |e| e
        .container
        .as_ref()
        .and_then(|c| s(&c.cgroup_path))),
    field!("container.pod_uid", "Kubernetes pod UID", |e| e
        .container
        .as_ref()
        .and_then(|c| s(&c.pod_uid))),
    field!(
        "container.name",
        "The container's name (from the runtime API; absent until it answered)",
        |e| container_of(e).and_then(|c| s(&c.name))
    ),
    field!(
        "container.image",
        "The image as the container was run (`registry/app:1.2`; from the runtime API)",
        |e| container_of(e).and_then(|c| s(&c.image))
    ),
    field!(
        "container.image.repository",
        "The image without tag or digest (`registry/app`)",
        |e| container_of(e).and_then(|c| s(image_parts(&c.image).0))
    ),
    field!(
        "container.image.tag",
        "The image's tag (`latest` when none was given)",
        |e| container_of(e)
            .filter(|c| !c.image.is_empty())
            .and_then(|c| s(image_parts(&c.image).1))
    ),
    field!(
        "container.image_id",
        "The image's content id (`sha256:...`)",
        |e| { container_of(e).and_then(|c| s(&c.image_id)) }
    ),
    field!(
        "container.labels",
        "The container's labels as `key=value` strings",
        |e| container_of(e)
            .filter(|c| !c.labels.is_empty())
            .and_then(|c| list(
                &c.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ))
    ),
    field!(
        "container.privileged",
        "Run with --privileged (absent until the runtime API answered)",
        |e| container_of(e).and_then(|c| c.privileged).map(Value::Bool)
    ),
    field!(
        "container.network_mode",
        "bridge, host, none, container:<id>, or a network's name",
        |e| container_of(e).and_then(|c| s(&c.network_mode))
    ),
    field!(
        "container.pid_mode",
        "host, container:<id>, or absent for its own",
        |e| container_of(e).and_then(|c| s(&c.pid_mode))
    ),
    field!(
        "k8s.ns.name",
        "The Kubernetes namespace of the container's pod (from the runtime's CRI)",
        |e| pod_of(e).and_then(|p| s(&p.namespace))
    ),
    field!(
        "k8s.pod.name",
        "The name of the container's Kubernetes pod (from the runtime's CRI)",
        |e| pod_of(e).and_then(|p| s(&p.name))
    ),
    field!(
        "k8s.pod.uid",
        "The pod's UID (from CRI, or from the cgroup path before CRI answered)",
        |e| pod_of(e)
            .and_then(|p| s(&p.uid))
            .or_else(|| container_of(e).and_then(|c| s(&c.pod_uid)))
    ),
    field!(
        "k8s.pod.labels",
        "The pod's labels as `key=value` strings",
        |e| pod_of(e)
            .filter(|p| !p.labels.is_empty())
            .and_then(|p| list(
                &p.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ))
    ),
    field!(
        "k8s.container.name",
        "The container's name within its pod (absent outside pods)",
        |e| pod_of(e).and(container_of(e)).and_then(|c| s(&c.name))
    ),
    field!(
        "container.already_running",
        "container_started: it predates the sensor",
        |e| body!(e, ContainerStarted).map(|b| Value::Bool(b.already_running))
    ),
    field!(
        "container.lifetime_ms",
        "container_exited: how long it lived, ms",
        |e| body!(e, ContainerExited).and_then(|b| secs(b.lifetime.as_ref()))
    ),
    field!("proc.pid", "Process id", |e| proc_of(e)
        .map(|p| Value::Int(p.pid as i64))),
    field!(
        "proc.ns_pid",
        "Process id in its own pid namespace (1: the container's first process)",
        |e| proc_of(e).map(|p| Value::Int(p.ns_pid as i64))
    ),
    field!("proc.name", "comm (up to 15 characters)", |e| proc_of(e)
        .and_then(|p| s(&p.comm))),
    field!("proc.exe", "Executable path", |e| proc_of(e)
        .and_then(|p| s(&p.exe))),
    field!("proc.exe_name", "Executable file name", |e| proc_of(e)
        .and_then(|p| s(basename(&p.exe)))),
    field!(
        "proc.applet",
        "The program run: the executable's name, or for a multi-call binary (busybox, toybox) the applet argv names",
        |e| proc_of(e).and_then(|p| s(applet(&p.exe, &p.args)))
    ),
    field!(
        "proc.loaded_program",
        "For a dynamic loader run as a command (ld.so PROGRAM ...), the program it loads (absent for any other process)",
        |e| proc_of(e).and_then(|p| {
            let (program, _) = program(&p.exe, &p.args);
            (program != p.exe).then(|| s(program)).flatten()
        })
    ),
    field!(
        "proc.exe_unlinked",
        "The executable has no link in any filesystem (memfd, deleted, O_TMPFILE): fileless execution",
        |e| proc_of(e).map(|p| Value::Bool(p.exe_unlinked))
    ),
    field!(
        "proc.exe_file",
        "An unlinked executable's own file name (memfd:NAME)",
        |e| proc_of(e).and_then(|p| s(&p.exe_file))
    ),
    field!("proc.args", "argv as a list", |e| proc_of(e)
        .and_then(|p| list(&p.args))),
    field!("proc.cmdline", "argv joined with spaces", |e| proc_of(e)
        .and_then(|p| s(&p.args.join(" ")))),
    field!("proc.uid", "Real uid", |e| proc_of(e)
        .map(|p| Value::Int(p.uid as i64))),
    field!("proc.euid", "Effective uid", |e| proc_of(e)
        .map(|p| Value::Int(p.euid as i64))),
    field!(
        "proc.seccomp",
        "Seccomp mode: disabled (no filter confines the process), strict or filter",
        |e| proc_of(e).and_then(|p| s(&p.seccomp))
    ),
    field!(
        "proc.cap_effective",
        "Effective capabilities (CAP_SYS_ADMIN, ...)",
        |e| proc_of(e).and_then(|p| list(&p.cap_effective))
    ),
    field!(
        "proc.host_namespaces",
        "Which of the process's namespaces are the host's (net, pid, ...)",
        |e| proc_of(e).and_then(|p| list(&p.host_namespaces))
    ),
    field!("proc.pname", "Parent's comm", |e| proc_of(e)
        .and_then(|p| p.ancestry.first())
        .and_then(|a| s(&a.comm))),
    field!("proc.pexe", "Parent's executable", |e| proc_of(e)
        .and_then(|p| p.ancestry.first())
        .and_then(|a| s(&a.exe))),
    field!(
        "proc.ancestors",
        "Executables of the ancestors, parent first",
        |e| proc_of(e).and_then(|p| list(
            &p.ancestry
                .iter()
                .map(|a| a.exe.as_str())
                .collect::<Vec<_>>()
        ))
    ),
    field!(
        "fork.stdio_socket_fds",
        "fork: which of the child's fds 0-2 are network sockets (inherited from the parent)",
        |e| body!(e, Fork).map(|b| fds(&b.stdio_socket_fds))
    ),
    field!(
        "exec.stdio_socket_fds",
        "exec: which of fds 0-2 are network sockets",
        |e| body!(e, Exec).map(|b| fds(&b.stdio_socket_fds))
    ),
    field!(
        "exec.stdio_peer.address",
        "exec: the peer of the stdio socket",
        |e| body!(e, Exec).and_then(|b| endpoint_addr(b.stdio_peer.as_ref()))
    ),
    field!(
        "exec.stdio_peer.port",
        "exec: the peer port of the stdio socket",
        |e| body!(e, Exec).and_then(|b| endpoint_port(b.stdio_peer.as_ref()))
    ),
    field!(
        "net.peer.address",
        "The remote address of a network event of any kind: socket.remote, traffic.peer, icmp.peer, exec.stdio_peer, fork.stdio_peer, stdio_relay.peer (for `in_cidr` and `addresses` exceptions)",
        |e| endpoint_addr(peer_of(e))
    ),
    field!(
        "net.peer.port",
        "The remote port of a network event of any kind (as net.peer.address)",
        |e| endpoint_port(peer_of(e))
    ),
    field!("socket.op", "socket, connect, accept, bind, listen", |e| {
        body!(e, Socket).and_then(|b| s(&b.op))
    }),
    field!("socket.family", "inet, inet6, unix, netlink, packet", |e| {
        body!(e, Socket).and_then(|b| s(&b.family))
    }),
    field!("socket.type", "stream, dgram, raw", |e| body!(e, Socket)
        .and_then(|b| s(&b.r#type))),
    field!("socket.protocol", "IP protocol number", |e| body!(
        e, Socket
    )
    .map(|b| Value::Int(b.protocol as i64))),
    field!("socket.result", "Return value (negative: -errno)", |e| {
        body!(e, Socket).and_then(|b| i(b.result))
    }),
    field!("socket.error", "errno name of a failed call", |e| body!(
        e, Socket
    )
    .and_then(|b| s(&b.error))),
    field!("socket.raw", "A SOCK_RAW socket", |e| body!(e, Socket)
        .map(|b| Value::Bool(b.raw))),
    field!("socket.local.port", "Local port", |e| body!(e, Socket)
        .and_then(|b| endpoint_port(b.local.as_ref()))),
    field!("socket.remote.address", "Remote address", |e| body!(
        e, Socket
    )
    .and_then(|b| endpoint_addr(b.remote.as_ref()))),
    field!("socket.remote.port", "Remote port", |e| body!(e, Socket)
        .and_then(|b| endpoint_port(b.remote.as_ref()))),
    field!(
        "socket.io_uring",
        "The operation ran in an io_uring worker (a request submitted through io_uring)",
        |e| body!(e, Socket).map(|b| Value::Bool(b.io_uring))
    ),
    field!(
        "socket.repeats",
        "Identical operations of the process (same operation, socket kind and peer) not reported since the last one that was (the --net-repeat-ms window); 0 for most events",
        |e| body!(e, Socket).map(|b| Value::Int(b.repeats as i64))
    ),
    field!(
        "socket.trailing",
        "The event reports the repeats of a window that ended with no later report to carry them (it stands for the last of them; ephemeral ports 0, no result)",
        |e| body!(e, Socket).map(|b| Value::Bool(b.trailing))
    ),
    field!(
        "ns.op",
        "namespace_change: clone (a child in new namespaces), changed (setns or unshare, seen at the next exec or fork)",
        |e| { body!(e, NamespaceChange).and_then(|b| s(&b.op)) }
    ),
    field!("ns.types", "namespace_change: the types that differ", |e| {
        body!(e, NamespaceChange).and_then(|b| list(&b.types))
    }),
    field!(
        "ns.target_is_host",
        "namespace_change: a namespace that changed is now one of the host's",
        |e| body!(e, NamespaceChange).map(|b| Value::Bool(b.target_is_host))
    ),
    field!(
        "ns.after_host_types",
        "namespace_change: which namespaces are the host's after the call",
        |e| body!(e, NamespaceChange).and_then(|b| list(&b.after_host_types))
    ),
    field!(
        "icmp.source",
        "icmp: socket (a process's) or interface (on the wire)",
        |e| body!(e, Icmp).and_then(|b| s(&b.source))
    ),
    field!("icmp.direction", "icmp: egress or ingress", |e| body!(
        e, Icmp
    )
    .and_then(|b| s(&b.direction))),
    field!(
        "icmp.type_name",
        "icmp: echo_request, echo_reply, ...",
        |e| body!(e, Icmp).and_then(|b| s(&b.type_name))
    ),
    field!("icmp.count", "icmp: messages in the interval", |e| body!(
        e, Icmp
    )
    .map(|b| Value::Int(b.count as i64))),
    field!(
        "icmp.last_payload_size",
        "icmp: payload bytes of the latest message",
        |e| body!(e, Icmp).map(|b| Value::Int(b.last_payload_size as i64))
    ),
    field!(
        "icmp.payload_pattern",
        "icmp: ping-timestamp-incrementing, repeating-byte-XX, timestamp-then-repeating-byte-XX, other, empty",
        |e| body!(e, Icmp).and_then(|b| s(&b.payload_pattern))
    ),
    field!("icmp.peer.address", "icmp (socket): the other side", |e| {
        body!(e, Icmp).and_then(|b| endpoint_addr(b.peer.as_ref()))
    }),
    field!("traffic.direction", "traffic: egress or ingress", |e| {
        body!(e, Traffic).and_then(|b| s(&b.direction))
    }),
    field!("traffic.protocol_name", "traffic: tcp, udp, icmp", |e| {
        body!(e, Traffic).and_then(|b| s(&b.protocol_name))
    }),
    field!("traffic.bytes", "traffic: IP bytes in the interval", |e| {
        body!(e, Traffic).and_then(|b| i(b.bytes as i64))
    }),
    field!("traffic.peer.address", "traffic: the peer", |e| body!(
        e, Traffic
    )
    .and_then(|b| endpoint_addr(b.peer.as_ref()))),
    field!(
        "traffic.peer.port",
        "traffic: the peer's port (0 when the container serves the flow: see traffic.local_port)",
        |e| body!(e, Traffic).and_then(|b| endpoint_port(b.peer.as_ref()))
    ),
    field!(
        "traffic.local_port",
        "traffic: the container's own port when it serves the flow (else 0): for TCP that of a connection it accepted, for UDP a port below 32768 reached from one at or above it",
        |e| body!(e, Traffic).and_then(|b| i(b.local_port as i64))
    ),
    field!(
        "tcp.new_state",
        "tcp_state: the new state, ESTABLISHED (a connection up, either side) or LISTEN; other transitions are not reported",
        |e| body!(e, TcpState).and_then(|b| s(&b.new_state))
    ),
    field!(
        "bpf.cmd",
        "bpf: prog_load, map_create, prog_attach, raw_tracepoint_open, link_create",
        |e| body!(e, Bpf).and_then(|b| s(&b.cmd))
    ),
    field!(
        "bpf.type",
        "bpf: the program type (kprobe, tracepoint, ...) or map type",
        |e| body!(e, Bpf).and_then(|b| s(&b.r#type))
    ),
    field!(
        "bpf.name",
        "bpf: the program or map name, or the raw tracepoint",
        |e| body!(e, Bpf).and_then(|b| s(&b.name))
    ),
    field!("bpf.result", "bpf: return value (negative: -errno)", |e| {
        body!(e, Bpf).and_then(|b| i(b.result))
    }),
    field!(
        "signal.syscall",
        "signal: kill, tkill, tgkill, pidfd_send_signal",
        |e| body!(e, Signal).and_then(|b| s(&b.syscall))
    ),
    field!("signal.number", "signal: the signal number", |e| body!(
        e, Signal
    )
    .map(|b| Value::Int(b.number as i64))),
    field!(
        "signal.name",
        "signal: SIGKILL, SIGCONT, ... (0: a probe)",
        |e| { body!(e, Signal).and_then(|b| s(&b.name)) }
    ),
    field!(
        "signal.target_is_sensor",
        "signal: aimed at the sensor (a thread, its process group, or every process)",
        |e| body!(e, Signal).map(|b| Value::Bool(b.target_is_sensor))
    ),
    field!("signal.result", "signal: return value", |e| body!(
        e, Signal
    )
    .and_then(|b| i(b.result))),
    field!(
        "ptrace.request",
        "ptrace: attach, seize, peekdata, ...",
        |e| { body!(e, Ptrace).and_then(|b| s(&b.request)) }
    ),
    field!("ptrace.target_pid", "ptrace: the traced pid", |e| body!(
        e, Ptrace
    )
    .map(|b| Value::Int(b.target_pid as i64))),
    field!(
        "ptrace.target_is_sensor",
        "ptrace: aimed at the sensor",
        |e| body!(e, Ptrace).map(|b| Value::Bool(b.target_is_sensor))
    ),
    field!("ptrace.result", "ptrace: return value", |e| body!(
        e, Ptrace
    )
    .and_then(|b| i(b.result))),
    field!(
        "perf.type",
        "perf_event_open: hardware, software, tracepoint, kprobe, uprobe, ...",
        |e| body!(e, PerfEventOpen).and_then(|b| s(&b.r#type))
    ),
    field!(
        "perf.target_pid",
        "perf_event_open: the watched pid (-1: every process)",
        |e| body!(e, PerfEventOpen).map(|b| Value::Int(b.target_pid as i64))
    ),
    field!("perf.result", "perf_event_open: return value", |e| {
        body!(e, PerfEventOpen).and_then(|b| i(b.result))
    }),
    field!("mount.fstype", "mount: tracefs, debugfs, bpf", |e| body!(
        e, Mount
    )
    .and_then(|b| s(&b.fstype))),
    field!("mount.syscall", "mount: mount or fsopen", |e| body!(
        e, Mount
    )
    .and_then(|b| s(&b.syscall))),
    field!(
        "relay.via",
        "stdio_relay: pipeline (the relay reads the process's output on its stdin) or parent (a tool running it on pipes of its own)",
        |e| body!(e, StdioRelay).and_then(|b| s(&b.via))
    ),
    field!(
        "relay.exe",
        "stdio_relay: the executable of the process holding the connection",
        |e| body!(e, StdioRelay).and_then(|b| s(&b.relay_exe))
    ),
    field!(
        "io_uring.flags",
        "io_uring: the ring's IORING_SETUP_* flags by name (sqpoll, iopoll, attach_wq, ...)",
        |e| body!(e, IoUring)
            .map(|b| Value::List(b.flags.iter().cloned().map(Value::Str).collect()))
    ),
    field!(
        "io_uring.sq_entries",
        "io_uring: submission queue size",
        |e| body!(e, IoUring).map(|b| Value::Int(b.sq_entries as i64))
    ),
    field!("mount.result", "mount: return value", |e| body!(e, Mount)
        .and_then(|b| i(b.result))),
    field!(
        "health.dropped_total",
        "health: records lost since start",
        |e| body!(e, Health).and_then(|b| i(b.dropped_total as i64))
    ),
    field!(
        "drops.count",
        "events_dropped: records the cgroup (or the node) lost in the last health interval",
        |e| body!(e, EventsDropped).and_then(|b| i(b.dropped as i64))
    ),
    field!(
        "drops.total",
        "events_dropped: records the cgroup (or the node) lost since the sensor started",
        |e| body!(e, EventsDropped).and_then(|b| i(b.total as i64))
    ),
    field!(
        "drops.ring",
        "events_dropped: the ring, process or network",
        |e| body!(e, EventsDropped).and_then(|b| s(&b.ring))
    ),
    field!(
        "drops.reason",
        "events_dropped: why, ring_full or rate_limited",
        |e| body!(e, EventsDropped).and_then(|b| s(&b.reason))
    ),
    field!(
        "drops.episode_start",
        "events_dropped: the first interval with drops after one without (a new episode)",
        |e| body!(e, EventsDropped).map(|b| Value::Bool(b.episode_start))
    ),
    field!(
        "drops.cgroup_id",
        "events_dropped: the cgroup charged with the loss (0: the node, unattributed)",
        |e| body!(e, EventsDropped).and_then(|b| i(b.cgroup_id as i64))
    ),
    field!(
        "spool.error",
        "spool_failing: why the alert spool could not write (the error, with its file)",
        |e| body!(e, SpoolFailing).and_then(|b| s(&b.error))
    ),
    field!(
        "spool.unspooled_total",
        "spool_failing: alerts not spooled since the sensor started",
        |e| body!(e, SpoolFailing).and_then(|b| i(b.unspooled_total as i64))
    ),
    field!(
        "spool.lost",
        "spool_evicted: unexported alerts the spool evicted at this commit",
        |e| body!(e, SpoolEvicted).and_then(|b| i(b.lost as i64))
    ),
    field!(
        "spool.lost_total",
        "spool_evicted: unexported alerts evicted since the sensor started",
        |e| body!(e, SpoolEvicted).and_then(|b| i(b.lost_total as i64))
    ),
    field!(
        "spool.max_bytes",
        "spool_evicted: the spool's size bound in bytes (--spool-max-mb)",
        |e| body!(e, SpoolEvicted).and_then(|b| i(b.max_bytes as i64))
    ),
    field!(
        "spool.exported_seq",
        "spool_evicted: the last alert sequence number the OTLP collector acknowledged",
        |e| body!(e, SpoolEvicted).and_then(|b| i(b.exported_seq as i64))
    ),
];

/// A field read with a key in brackets: `container.label[team]`.
pub struct KeyedFieldDef {
    /// The name with empty brackets (`container.label[]`), as conditions are checked.
    pub name: &'static str,
    pub doc: &'static str,
    get: fn(&pb::Event, &str) -> Option<Value>,
}

/// Every keyed field a rule may use.
pub const KEYED_FIELDS: &[KeyedFieldDef] = &[
    KeyedFieldDef {
        name: "container.label[]",
        doc: "The value of the container's label KEY (`container.label[team]`)",
        get: |e, key| {
            container_of(e).and_then(|c| c.labels.get(key).map(|v| Value::Str(v.clone())))
        },
    },
    KeyedFieldDef {
        name: "k8s.pod.label[]",
        doc: "The value of the pod's label KEY (`k8s.pod.label[app]`)",
        get: |e, key| pod_of(e).and_then(|p| p.labels.get(key).map(|v| Value::Str(v.clone()))),
    },
];

/// The names of [`FIELDS`] and of [`KEYED_FIELDS`] (as `name[]`), for validating conditions.
pub fn known() -> Vec<&'static str> {
    FIELDS
        .iter()
        .map(|f| f.name)
        .chain(KEYED_FIELDS.iter().map(|f| f.name))
        .collect()
}

/// The index in [`FIELDS`] of each name, and in [`KEYED_FIELDS`] of each name before the
/// brackets, built once.
static BY_NAME: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name, i))
        .collect()
});
static KEYED_BY_BASE: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    KEYED_FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.strip_suffix("[]").unwrap_or(f.name), i))
        .collect()
});

/// The fields of `sensor.v1` events ([`FIELDS`], [`KEYED_FIELDS`]): what rules are resolved
/// against when they load, so a compiled condition reads a field through its definition.
pub struct EventSchema;

impl Schema for EventSchema {
    fn resolve(&self, name: &str) -> Option<Slot> {
        if let Some((base, rest)) = name.split_once('[') {
            let key = rest.strip_suffix(']')?;
            return KEYED_BY_BASE
                .get(base)
                .map(|i| Slot::Keyed(*i, key.to_string()));
        }
        BY_NAME.get(name).map(|i| Slot::Field(*i))
    }

    fn names(&self) -> Vec<&str> {
        known()
    }
}

/// An event as rules see it.
pub struct EventView<'a>(pub &'a pb::Event);

impl Fields for EventView<'_> {
    fn field(&self, name: &str) -> Option<Value> {
        self.resolved(&EventSchema.resolve(name)?, name)
    }

    fn resolved(&self, slot: &Slot, _name: &str) -> Option<Value> {
        match slot {
            Slot::Field(i) => FIELDS.get(*i).and_then(|f| (f.get)(self.0)),
            Slot::Keyed(i, key) => KEYED_FIELDS.get(*i).and_then(|f| (f.get)(self.0, key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_call_binary_runs_the_applet_argv_names() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // busybox sh runs its applets as /proc/self/exe, resolved to /bin/busybox.
        assert_eq!(applet("/bin/busybox", &args(&["sleep", "1"])), "sleep");
        assert_eq!(
            applet("/bin/busybox", &args(&["busybox", "sh", "-c", "id"])),
            "sh"
        );
        assert_eq!(applet("/bin/busybox", &args(&["/bin/busybox"])), "busybox");
        assert_eq!(applet("/usr/bin/toybox", &args(&["/bin/ls", "/"])), "ls");
        assert_eq!(applet("/bin/sh", &args(&["sh"])), "sh");
        // Only multi-call binaries take their name from argv: a renamed tool is what it is.
        assert_eq!(applet("/tmp/update", &args(&["sshd"])), "update");
        // A dynamic loader runs the program it names, options skipped.
        let ld = "/lib64/ld-linux-x86-64.so.2";
        assert_eq!(applet(ld, &args(&[ld, "/tmp/x/nc", "-e", "sh"])), "nc");
        assert_eq!(
            applet(
                ld,
                &args(&[
                    ld,
                    "--library-path",
                    "/l",
                    "--inhibit-cache",
                    "/bin/busybox",
                    "nc"
                ])
            ),
            "nc"
        );
        assert_eq!(
            program(
                "/lib/ld-musl-x86_64.so.1",
                &args(&["ld", "/proc/self/fd/3", "-c"])
            )
            .0,
            "/proc/self/fd/3"
        );
        assert_eq!(applet(ld, &args(&[ld, "--list"])), "ld-linux-x86-64.so.2");
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        for (image, repo, tag) in [
            ("nginx", "nginx", "latest"),
            ("nginx:1.25", "nginx", "1.25"),
            ("registry:5000/team/app", "registry:5000/team/app", "latest"),
            ("registry:5000/team/app:2", "registry:5000/team/app", "2"),
            ("app@sha256:abcd", "app", ""),
            ("app:1@sha256:abcd", "app", "1"),
        ] {
            assert_eq!(image_parts(image), (repo, tag), "{image}");
        }
    }

    #[test]
    fn reads_runtime_metadata_and_labels_by_key() {
        let ev = pb::Event {
            container: Some(pb::Container {
                id: "ab".repeat(32),
                name: "web-1".into(),
                image: "registry/app:2".into(),
                labels: [("team".to_string(), "infra".to_string())].into(),
                network_mode: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = EventView(&ev);
        let text = |f: &str| v.field(f).map(|v| v.to_string());
        assert_eq!(text("container.name").as_deref(), Some("web-1"));
        assert_eq!(
            text("container.image.repository").as_deref(),
            Some("registry/app")
        );
        assert_eq!(text("container.image.tag").as_deref(), Some("2"));
        assert_eq!(text("container.label[team]").as_deref(), Some("infra"));
        assert_eq!(v.field("container.label[tier]"), None);
        assert_eq!(v.field("container.privileged"), None, "not inspected yet");
        assert_eq!(
            v.field("container.labels"),
            Some(Value::List(vec![Value::Str("team=infra".into())]))
        );
        assert!(known().contains(&"container.label[]"));
    }

    #[test]
    fn every_field_has_its_own_name() {
        assert_eq!(BY_NAME.len(), FIELDS.len(), "a field name is used twice");
        assert_eq!(KEYED_BY_BASE.len(), KEYED_FIELDS.len());
    }

    #[test]
    fn the_schema_resolves_each_name_to_its_own_definition() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(
                EventSchema.resolve(f.name),
                Some(Slot::Field(i)),
                "{}",
                f.name
            );
        }
        let label = KEYED_FIELDS
            .iter()
            .position(|f| f.name == "container.label[]")
            .unwrap();
        assert_eq!(
            EventSchema.resolve("container.label[team]"),
            Some(Slot::Keyed(label, "team".into()))
        );
        for unknown in [
            "proc.nmae",
            "container.label",
            "container.label[team",
            "x[y]",
        ] {
            assert_eq!(EventSchema.resolve(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn reads_the_pod_from_cri_and_the_uid_from_the_path_before_it() {
        let uid = "8e1f5c34-0c0b-4f52-9d50-2d8f5b0c4a11";
        let mut ev = pb::Event {
            container: Some(pb::Container {
                id: "ab".repeat(32),
                pod_uid: uid.into(),
                name: "backdoor".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Before CRI answered: the uid from the cgroup path, nothing else; a container name
        // alone (Docker's) is not a pod's container name.
        let v = EventView(&ev);
        assert_eq!(v.field("k8s.pod.uid"), Some(Value::Str(uid.into())));
        assert_eq!(v.field("k8s.ns.name"), None);
        assert_eq!(v.field("k8s.container.name"), None);
        ev.container.as_mut().unwrap().pod = Some(pb::Pod {
            name: "web-0".into(),
            namespace: "prod".into(),
            uid: uid.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
        });
        let v = EventView(&ev);
        let text = |f: &str| v.field(f).map(|v| v.to_string());
        assert_eq!(text("k8s.ns.name").as_deref(), Some("prod"));
        assert_eq!(text("k8s.pod.name").as_deref(), Some("web-0"));
        assert_eq!(text("k8s.container.name").as_deref(), Some("backdoor"));
        assert_eq!(text("k8s.pod.label[app]").as_deref(), Some("web"));
        assert_eq!(v.field("k8s.pod.label[tier]"), None);
        assert_eq!(
            v.field("k8s.pod.labels"),
            Some(Value::List(vec![Value::Str("app=web".into())]))
        );
    }

    #[test]
    fn reads_fields_of_an_exec() {
        let ev = pb::Event {
            container: Some(pb::Container {
                id: "ab".repeat(32),
                runtime: "docker".into(),
                ..Default::default()
            }),
            process: Some(pb::Process {
                exe: "/usr/bin/nc".into(),
                args: vec!["nc".into(), "-e".into(), "/bin/sh".into()],
                host_namespaces: vec!["net".into()],
                ancestry: vec![pb::Ancestor {
                    pid: 1,
                    exe: "/bin/sh".into(),
                    comm: "sh".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_body(Body::Exec(pb::Exec {
            stdio_socket_fds: vec![0, 1],
            stdio_peer: Some(pb::Endpoint {
                address: "::ffff:172.17.0.3".into(),
                port: 9001,
                family: "inet6".into(),
            }),
            ..Default::default()
        }));
        let v = EventView(&ev);
        assert_eq!(
            (v.field("net.peer.address"), v.field("net.peer.port")),
            (
                Some(Value::Str("172.17.0.3".into())),
                Some(Value::Int(9001))
            )
        );
        assert_eq!(v.field("evt.kind"), Some(Value::Str("exec".into())));
        assert_eq!(v.field("proc.exe_name"), Some(Value::Str("nc".into())));
        assert_eq!(
            v.field("proc.cmdline"),
            Some(Value::Str("nc -e /bin/sh".into()))
        );
        assert_eq!(v.field("proc.pname"), Some(Value::Str("sh".into())));
        assert_eq!(
            v.field("exec.stdio_socket_fds"),
            Some(Value::List(vec![Value::Int(0), Value::Int(1)]))
        );
        assert_eq!(
            v.field("socket.op"),
            None,
            "a field of another kind is absent"
        );
        assert_eq!(v.field("container.id").unwrap().to_string().len(), 64);
        assert_eq!(v.field("container.name"), None, "not known yet");
        assert_eq!(v.field("container.privileged"), None, "not known yet");
        assert_eq!(v.field("proc.applet"), Some(Value::Str("nc".into())));
        let names = known();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate field name");
    }
}
