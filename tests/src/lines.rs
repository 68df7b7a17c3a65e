//! The sensor's JSON lines decoded into the `sensor.v1` proto types, so a test reads
//! `e.exec().stdio_peer` rather than `e["exec"]["stdio_peer"]`: a renamed or removed field
//! breaks the build, not a test at run time.
//!
//! A line is an event (the proto3 JSON mapping of `Event`) or an alert
//! (`{"kind":"alert","alert":{...}}`). The mapping's decoder rejects fields the schema does not
//! have, so a line the agent writes with a field the tests' schema lacks fails the test that
//! reads it, saying which.
//!
//! [`Subject`] gives events and alerts the same accessors for what they are about (container,
//! process); [`Bodies`] gives an event's `body` oneof one accessor per kind. Both return an
//! empty message where the event has none, as the JSON mapping omits empty fields: a test
//! asserting `e.exec().args_truncated` on a fork reads `false`, as it read `null` before.

use std::sync::LazyLock;

pub use sensor_proto as pb;
use serde::Deserialize;

use pb::event::Body;

/// One JSON line of `sensor run --json-out`.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Event(Box<pb::Event>),
    Alert(Box<pb::Alert>),
}

impl Line {
    /// Decodes one line; the error names what is wrong and quotes the line.
    pub fn parse(text: &str) -> Result<Line, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if value["kind"] == "alert" {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct AlertLine {
                #[allow(dead_code)]
                kind: String,
                alert: pb::Alert,
            }
            let line = AlertLine::deserialize(value)
                .map_err(|e| format!("not a sensor.v1 alert line ({e}): {text}"))?;
            Ok(Line::Alert(Box::new(line.alert)))
        } else {
            let event = pb::Event::deserialize(value)
                .map_err(|e| format!("not a sensor.v1 event ({e}): {text}"))?;
            Ok(Line::Event(Box::new(event)))
        }
    }

    pub fn event(&self) -> Option<&pb::Event> {
        match self {
            Line::Event(e) => Some(e),
            Line::Alert(_) => None,
        }
    }

    pub fn alert(&self) -> Option<&pb::Alert> {
        match self {
            Line::Alert(a) => Some(a),
            Line::Event(_) => None,
        }
    }
}

/// The events among `lines`.
pub fn events(lines: &[Line]) -> impl Iterator<Item = &pb::Event> {
    lines.iter().filter_map(Line::event)
}

/// The alerts among `lines`.
pub fn alerts(lines: &[Line]) -> impl Iterator<Item = &pb::Alert> {
    lines.iter().filter_map(Line::alert)
}

/// An optional endpoint, or an empty one.
pub fn endpoint(e: &Option<pb::Endpoint>) -> &pb::Endpoint {
    static NONE: LazyLock<pb::Endpoint> = LazyLock::new(Default::default);
    e.as_ref().unwrap_or(&NONE)
}

/// What an event or an alert is about: its container and process (empty when absent).
pub trait Subject {
    fn container(&self) -> &pb::Container;
    fn process(&self) -> &pb::Process;

    /// The container's full id ("" for a host process or a node-level line).
    fn cid(&self) -> &str {
        &self.container().id
    }

    /// The container's pod (empty outside Kubernetes).
    fn pod(&self) -> &pb::Pod {
        static NONE: LazyLock<pb::Pod> = LazyLock::new(Default::default);
        self.container().pod.as_ref().unwrap_or(&NONE)
    }
}

static NO_CONTAINER: LazyLock<pb::Container> = LazyLock::new(Default::default);
static NO_PROCESS: LazyLock<pb::Process> = LazyLock::new(Default::default);

impl Subject for pb::Event {
    fn container(&self) -> &pb::Container {
        self.container.as_ref().unwrap_or(&NO_CONTAINER)
    }
    fn process(&self) -> &pb::Process {
        self.process.as_ref().unwrap_or(&NO_PROCESS)
    }
}

impl Subject for pb::Alert {
    fn container(&self) -> &pb::Container {
        self.container.as_ref().unwrap_or(&NO_CONTAINER)
    }
    fn process(&self) -> &pb::Process {
        self.process.as_ref().unwrap_or(&NO_PROCESS)
    }
}

macro_rules! bodies {
    ($($name:ident: $variant:ident($ty:ident)),* $(,)?) => {
        /// One accessor per kind of the `body` oneof: the body when the event is of that kind,
        /// an empty message otherwise.
        pub trait Bodies {
            $(fn $name(&self) -> &pb::$ty;)*
        }

        impl Bodies for pb::Event {
            $(fn $name(&self) -> &pb::$ty {
                static NONE: LazyLock<pb::$ty> = LazyLock::new(Default::default);
                match &self.body {
                    Some(Body::$variant(b)) => b,
                    _ => &NONE,
                }
            })*
        }
    };
}

bodies! {
    exec: Exec(Exec),
    fork: Fork(Fork),
    exit: Exit(Exit),
    container_started: ContainerStarted(ContainerStarted),
    container_exited: ContainerExited(ContainerExited),
    health: Health(Health),
    socket: Socket(SocketCall),
    namespace_change: NamespaceChange(NamespaceChange),
    tcp_state: TcpState(TcpState),
    traffic: Traffic(Traffic),
    icmp: Icmp(Icmp),
    bpf: Bpf(Bpf),
    signal: Signal(Signal),
    ptrace: Ptrace(Ptrace),
    perf_event_open: PerfEventOpen(PerfEventOpen),
    mount: Mount(Mount),
    io_uring: IoUring(IoUringSetup),
    stdio_relay: StdioRelay(StdioRelay),
    events_dropped: EventsDropped(EventsDropped),
    spool_failing: SpoolFailing(SpoolFailing),
    spool_evicted: SpoolEvicted(SpoolEvicted),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_into_events_and_alerts() {
        let exec = r#"{"kind":"exec","seq":"7","container":{"id":"abc","runtime":"docker"},
            "process":{"pid":3,"args":["sh","-c"]},"exec":{"stdio_socket_fds":[0,1]}}"#;
        let Line::Event(e) = Line::parse(&exec.replace('\n', "")).unwrap() else {
            panic!("an event");
        };
        assert_eq!((e.kind.as_str(), e.seq, e.cid()), ("exec", 7, "abc"));
        assert_eq!(e.process().args, ["sh", "-c"]);
        assert_eq!(e.exec().stdio_socket_fds, [0, 1]);
        // Another kind's body reads as empty, as does an absent pod.
        assert_eq!(e.socket().op, "");
        assert_eq!(e.pod().name, "");

        let alert = r#"{"kind":"alert","alert":{"rule_id":"CRS-008","severity":"SEVERITY_HIGH",
            "container":{"id":"abc"},"events":[{"kind":"exec"}]}}"#;
        let line = Line::parse(&alert.replace('\n', "")).unwrap();
        let a = line.alert().expect("an alert");
        assert_eq!((a.rule_id.as_str(), a.cid()), ("CRS-008", "abc"));
        assert_eq!(a.severity(), pb::Severity::High);
        assert_eq!(a.events[0].kind, "exec");
        assert!(line.event().is_none());

        // A field the schema lacks, in an event or an alert, is an error naming it.
        let err = Line::parse(r#"{"kind":"exec","no_such_field":1}"#).unwrap_err();
        assert!(err.contains("no_such_field"), "{err}");
        let err = Line::parse(r#"{"kind":"alert","alert":{"rule":"x"}}"#).unwrap_err();
        assert!(err.contains("rule"), "{err}");
        assert!(Line::parse("not json").is_err());
    }
}
