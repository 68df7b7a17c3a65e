//! The `sensor.v1` schema: prost types generated from `sensor.proto`, with serde impls that follow
//! the proto3 JSON mapping. The JSON the agent writes is this mapping, not a second schema.
//!
//! Also the tonic stubs of the `sensor.v1.Sensor` service (`sensor_client`, `sensor_server`) and
//! [`connect_unix`], a channel to an agent's Unix socket.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.serde.rs"));
}

pub use v1::*;

/// A gRPC channel to the agent listening on the Unix socket `path` (`/run/sensor/sensor.sock` by
/// default). The connection is made now, so a missing socket or a refused connection is reported here.
pub async fn connect_unix(
    path: impl AsRef<std::path::Path>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.as_ref().to_path_buf();
    // The URI is required by the API but unused: the connector below decides where to connect.
    tonic::transport::Endpoint::from_static("http://sensor.sock")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

impl Severity {
    /// The lower-case name without prefix ("high"), as people write it on a command line.
    pub fn short_name(self) -> &'static str {
        match self {
            Severity::Unspecified => "unspecified",
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses "high", "HIGH" or "SEVERITY_HIGH".
    pub fn parse(s: &str) -> Option<Severity> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SEVERITY_").unwrap_or(&upper);
        Severity::from_str_name(&format!("SEVERITY_{name}"))
    }
}

/// The compiled schema (all `sensor.v1` files), as a `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sensor_descriptor.bin"));

impl Event {
    /// Every `kind` an event can have: the fields of the `body` oneof, read from the schema
    /// itself so the list cannot drift from it.
    pub fn kinds() -> Vec<String> {
        use prost::Message;
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes");
        let event = fds
            .file
            .iter()
            .filter(|f| f.package() == "sensor.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Event")
            .expect("sensor.v1.Event is in the schema");
        let body = event
            .oneof_decl
            .iter()
            .position(|o| o.name() == "body")
            .expect("Event has a body oneof") as i32;
        event
            .field
            .iter()
            .filter(|f| f.oneof_index == Some(body))
            .map(|f| f.name().to_string())
            .collect()
    }

    /// The `kind` string for a body: the name of its oneof field.
    pub fn kind_of(body: &event::Body) -> &'static str {
        match body {
            event::Body::Exec(_) => "exec",
            event::Body::Fork(_) => "fork",
            event::Body::Exit(_) => "exit",
            event::Body::ContainerStarted(_) => "container_started",
            event::Body::ContainerExited(_) => "container_exited",
            event::Body::Health(_) => "health",
            event::Body::Socket(_) => "socket",
            event::Body::NamespaceChange(_) => "namespace_change",
            event::Body::TcpState(_) => "tcp_state",
            event::Body::Traffic(_) => "traffic",
            event::Body::Icmp(_) => "icmp",
            event::Body::Bpf(_) => "bpf",
            event::Body::Signal(_) => "signal",
            event::Body::Ptrace(_) => "ptrace",
            event::Body::PerfEventOpen(_) => "perf_event_open",
            event::Body::Mount(_) => "mount",
            event::Body::IoUring(_) => "io_uring",
            event::Body::StdioRelay(_) => "stdio_relay",
            event::Body::EventsDropped(_) => "events_dropped",
            event::Body::SpoolFailing(_) => "spool_failing",
            event::Body::SpoolEvicted(_) => "spool_evicted",
        }
    }

    /// Sets the body and the matching `kind`.
    pub fn with_body(mut self, body: event::Body) -> Self {
        self.kind = Self::kind_of(&body).to_string();
        self.body = Some(body);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_proto_names_and_kind() {
        let ev = Event {
            container: Some(Container {
                id: "a".repeat(64),
                runtime: "docker".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_body(event::Body::ContainerStarted(ContainerStarted {
            already_running: true,
        }));
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], "container_started");
        assert_eq!(v["container"]["id"], "a".repeat(64));
        assert_eq!(v["container_started"]["already_running"], true);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn kinds_come_from_the_schema() {
        let kinds = Event::kinds();
        assert!(kinds.contains(&"exec".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"health".to_string()), "{kinds:?}");
        assert!(!kinds.contains(&"kind".to_string()), "{kinds:?}");
    }

    #[test]
    fn severities_parse_as_people_write_them() {
        assert_eq!(Severity::parse("high"), Some(Severity::High));
        assert_eq!(Severity::parse("SEVERITY_LOW"), Some(Severity::Low));
        assert_eq!(Severity::parse("severe"), None);
        assert_eq!(Severity::Critical.short_name(), "critical");
    }
}
