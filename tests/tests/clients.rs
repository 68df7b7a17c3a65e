//! Stock gRPC clients against the real agent: the Python example client
//! (`examples/python/sensor_client.py`, grpcio from PyPI, stubs compiled from `proto/` by
//! grpcio-tools) replays and streams real alerts and reads health and rules; an unconfigured
//! grpcio client (the socket path as `:authority`) is refused and the agent's log says what to
//! change; grpcio-reflection discovers the API from the server alone.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{
    Bodies, Containers, Sensor, Subject, netcat_exec_listener, pb,
    python::{example_client, python},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `sensor_client.py --socket SOCKET ARGS...`, to completion.
fn client(sensor: &Sensor, args: &[&str]) -> Output {
    example_client()
        .arg("--socket")
        .arg(sensor.socket())
        .args(args)
        .output()
        .expect("running the Python client")
}

/// The client's stdout lines, each the proto3 JSON of a `T` (json_format.MessageToDict).
fn json_lines<T: DeserializeOwned>(out: &Output) -> Vec<T> {
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| proto_json(l))
        .collect()
}

/// One line of the client's output, decoded as the proto3 JSON of a `T`.
fn proto_json<T: DeserializeOwned>(line: &str) -> T {
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "a JSON line of {} ({e}): {line}",
            std::any::type_name::<T>()
        )
    })
}

#[test]
fn the_python_client_replays_streams_and_reads_health_and_rules() {
    let sensor = Sensor::start("python_client");
    let first = netcat_exec_listener();
    let _first = Containers(vec![first.clone()]);
    let raised = sensor.expect_alert("CRS-008", &first);

    // Replay from the spool.
    let out = client(
        &sensor,
        &[
            "alerts", "--since", "0", "--rule", "CRS-008", "--count", "1",
        ],
    );
    let replayed: &pb::Alert = &json_lines(&out)[0];
    assert_eq!(replayed.rule_id, "CRS-008");
    assert_eq!(replayed.cid(), first);
    assert_eq!(replayed.id, raised.id);
    assert_eq!(replayed.seq, raised.seq);
    // The client writes the uint64 as a JSON string, as the agent does.
    let text = String::from_utf8_lossy(&out.stdout);
    let raw: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        raw["seq"],
        raised.seq.to_string(),
        "uint64 as a JSON string both ways"
    );

    // Live: the client subscribes, then a second container raises the alert.
    let mut live = example_client()
        .arg("--socket")
        .arg(sensor.socket())
        .args(["alerts", "--rule", "CRS-008", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let peer = format!("unix pid {}", live.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sensor
        .grpc_health()
        .delivery
        .unwrap()
        .subscribers
        .iter()
        .any(|s| s.peer.contains(&peer))
    {
        assert!(
            Instant::now() < deadline,
            "the Python client never subscribed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (tx, rx) = mpsc::channel();
    let stdout = live.stdout.take().unwrap();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let second = netcat_exec_listener();
    let _second = Containers(vec![second.clone()]);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a live alert within 30 s");
    let alert: pb::Alert = proto_json(&line);
    assert_eq!(alert.cid(), second);
    assert!(live.wait().unwrap().success(), "--count 1 ends the stream");

    let health: &pb::GetHealthResponse = &json_lines(&client(&sensor, &["health"]))[0];
    assert!(
        health
            .health
            .as_ref()
            .is_some_and(|e| !e.health().rings.is_empty()),
        "{health:?}"
    );
    let rules: &pb::ListRulesResponse = &json_lines(&client(&sensor, &["rules"]))[0];
    assert!(rules.rules.iter().any(|r| r.id == "CRS-008"), "{rules:?}");
}

#[test]
fn an_unconfigured_grpcio_client_is_refused_and_the_agent_says_what_to_set() {
    let sensor = Sensor::start("python_authority");
    let out = client(&sensor, &["--stock-authority", "health"]);
    assert!(
        !out.status.success(),
        "grpcio's default authority was accepted"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    // HTTP/2 error code 1: PROTOCOL_ERROR.
    assert!(said.contains("RST_STREAM with error code 1"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sensor
        .stderr_text()
        .contains("grpc.default_authority=localhost")
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not say why: {}",
            sensor.stderr_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Lists the services by reflection, then resolves the Sensor service's methods from the
/// descriptors the server sends (their imports included).
const REFLECT: &str = r#"
import sys, grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
ch = grpc.insecure_channel("unix://" + sys.argv[1], options=[("grpc.default_authority", "localhost")])
db = ProtoReflectionDescriptorDatabase(ch)
print(" ".join(sorted(db.get_services())))
service = DescriptorPool(db).FindServiceByName("sensor.v1.Sensor")
print(" ".join(m.name for m in service.methods))
"#;

#[test]
fn grpc_reflection_describes_the_api() {
    let sensor = Sensor::start("reflection");
    let out = Command::new(python())
        .args(["-c", REFLECT])
        .arg(sensor.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reflection failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].split(' ').any(|s| s == "sensor.v1.Sensor"),
        "{text}"
    );
    assert_eq!(
        lines[1], "WatchAlerts WatchEvents GetHealth ListRules",
        "{text}"
    );
}
