//! A hostile or broken runtime API never stops the sensor or its alerts: the real agent, pointed
//! (`--docker-socket`) at a fake daemon written here that never answers, drips its answer a
//! byte a second, or answers with megabytes of labels, while real containers run under the
//! real Docker. Alerts still carry the full container id, the failures are counted in health,
//! and the agent stops promptly.

use std::{
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use sensor_proto::{RuntimeRequests, event::Body};
use sensor_tests::{Sensor, Subject, netcat_exec_listener, scratch_dir};

/// How the fake daemon treats a connection.
#[derive(Clone, Copy)]
enum Daemon {
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Sends the head, then one byte of the body a second.
    Drip,
    /// Answers `/version`; holds `/events` open without an event; answers every inspect with
    /// 8 MiB of labels.
    HugeLabels,
}

/// Listens on a fresh socket, serving each connection as `daemon` on its own thread.
fn fake_daemon(tag: &str, daemon: Daemon) -> PathBuf {
    let path = scratch_dir(tag).join("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream, daemon));
        }
    });
    path
}

fn serve(mut s: UnixStream, daemon: Daemon) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.ends_with(b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request).to_string();
    // Until the agent hangs up (or the test process ends).
    let hold = |s: &mut UnixStream| {
        let _ = s.read(&mut [0u8; 1]);
    };
    match daemon {
        Daemon::Silent => hold(&mut s),
        Daemon::Drip => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            while s.write_all(b" ").is_ok() {
                thread::sleep(Duration::from_secs(1));
            }
        }
        Daemon::HugeLabels if request.starts_with("GET /version") => {
            let body = r#"{"Version":"hostile","ApiVersion":"1.47"}"#;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
        Daemon::HugeLabels if request.starts_with("GET /events") => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            hold(&mut s);
        }
        Daemon::HugeLabels => {
            let labels: Vec<String> = (0..100_000)
                .map(|i| format!(r#""label-{i:06}":"{}""#, "v".repeat(64)))
                .collect();
            let body = format!(
                r#"{{"Name":"/hostile","Config":{{"Image":"x","Labels":{{{}}}}},"HostConfig":{{}}}}"#,
                labels.join(",")
            );
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    }
}

fn runtime_health(sensor: &Sensor) -> (String, RuntimeRequests) {
    let event = sensor.grpc_health().health.expect("a health event");
    let Some(Body::Health(h)) = event.body else {
        panic!("GetHealth without its health body: {event:?}")
    };
    (h.runtime_api, h.runtime_requests.unwrap_or_default())
}

/// The runtime API's health once `done` holds, waiting up to 60 s.
fn wait_for_runtime(
    sensor: &Sensor,
    done: impl Fn(&str, &RuntimeRequests) -> bool,
) -> (String, RuntimeRequests) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, requests) = runtime_health(sensor);
        if done(&status, &requests) {
            return (status, requests);
        }
        assert!(
            Instant::now() < deadline,
            "runtime API health stayed {status:?} {requests:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// Starts the agent on `daemon`, raises a real CRS-008 alert in a container, and checks that it
/// arrives with the full id whatever the daemon does; returns the agent for more checks.
fn agent_against(tag: &str, daemon: Daemon) -> Sensor {
    let socket = fake_daemon(tag, daemon);
    let socket = socket.display().to_string();
    let started = Instant::now();
    let sensor = Sensor::start_with(tag, &["--docker-socket", socket.as_str()]);
    let ready = started.elapsed();
    assert!(
        ready < Duration::from_secs(30),
        "ready after {ready:?}: the start waits at most 5 s for the daemon"
    );
    let cid = netcat_exec_listener();
    let alert = sensor.expect_alert("CRS-008", &cid);
    assert_eq!(alert.cid(), cid.as_str(), "{alert:?}");
    sensor
}

/// The agent stops within a few seconds of SIGINT, connections to the daemon still open.
fn stops_promptly(sensor: Sensor) {
    let asked = Instant::now();
    assert!(sensor.stop().success());
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
}

#[test]
fn a_daemon_that_never_answers_costs_timeouts_not_alerts() {
    let sensor = agent_against("runtime_silent", Daemon::Silent);
    let (status, requests) = wait_for_runtime(&sensor, |_, r| r.timed_out >= 1);
    assert!(
        status.contains("unavailable (no answer within 5 s)"),
        "{status}"
    );
    assert!(requests.failed >= requests.timed_out, "{requests:?}");
    assert_eq!(requests.answered, 0, "{requests:?}");
    // Retried with backoff, then asked again at a later event: never more than the bounded
    // number of attempts in flight, so the agent answers its API meanwhile.
    let (_, requests) = wait_for_runtime(&sensor, |_, r| r.timed_out >= 2);
    assert!(requests.retried >= 1, "{requests:?}");
    stops_promptly(sensor);
}

#[test]
fn a_daemon_that_drips_its_answer_is_cut_off_by_the_body_deadline() {
    let sensor = agent_against("runtime_drip", Daemon::Drip);
    let (status, _) = wait_for_runtime(&sensor, |_, r| r.timed_out >= 1);
    assert!(status.contains("no whole body within 10 s"), "{status}");
    stops_promptly(sensor);
}

#[test]
fn a_daemon_that_answers_with_megabytes_of_labels_is_refused_and_counted() {
    let sensor = agent_against("runtime_huge", Daemon::HugeLabels);
    let (status, requests) = wait_for_runtime(&sensor, |_, r| r.gave_up >= 1);
    assert!(status.contains("connected (Docker hostile"), "{status}");
    assert_eq!(requests.timed_out, 0, "{requests:?}");
    assert_eq!(requests.answered, 0, "refused, not parsed: {requests:?}");
    assert!(
        sensor
            .stderr_text()
            .contains("HTTP body larger than 4194304 bytes"),
        "the refusal is logged: {}",
        sensor.stderr_text()
    );
    // The refused answer was not kept: no event names the container the daemon made up.
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e.container().name == "hostile"),
        "an oversized answer reached an event"
    );
    stops_promptly(sensor);
}
