//! The `sensor.v1` schema: prost types generated from `sensor.proto`, with serde impls that follow
//! the proto3 JSON mapping. The JSON the agent writes is this mapping, not a second schema.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/sensor.v1.serde.rs"));
}

pub use v1::*;

impl Event {
    /// The `kind` string for a body: the name of its oneof field.
    pub fn kind_of(body: &event::Body) -> &'static str {
        match body {
            event::Body::Exec(_) => "exec",
            event::Body::Fork(_) => "fork",
            event::Body::Exit(_) => "exit",
            event::Body::ContainerStarted(_) => "container_started",
            event::Body::ContainerExited(_) => "container_exited",
            event::Body::Health(_) => "health",
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
}
