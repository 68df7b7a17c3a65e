//! `--json-out` never stops or stalls the sensor: a reader that goes away (`| head -1`), a
//! reader that stops reading, and a full disk, each against the real agent. Lines that cannot
//! be written are counted in `GetHealth`; alerts still reach gRPC subscribers.

use std::{
    io::BufRead,
    thread,
    time::{Duration, Instant},
};

use sensor_proto as pb;
use sensor_tests::{
    Containers, JsonOut, Line, Sensor,
    disk::{Tmpfs, fill},
    docker, docker_run_rm, image, netcat_exec_listener,
};

fn json_health(sensor: &Sensor) -> pb::JsonOutHealth {
    let health = sensor.grpc_health();
    health
        .delivery
        .and_then(|d| d.json_out)
        .expect("GetHealth reports --json-out")
}

/// Polls `GetHealth` until `done` holds for the sink's figures, up to `timeout`.
fn wait_json(
    sensor: &Sensor,
    timeout: Duration,
    done: impl Fn(&pb::JsonOutHealth) -> bool,
) -> pb::JsonOutHealth {
    let deadline = Instant::now() + timeout;
    loop {
        let h = json_health(sensor);
        if done(&h) || Instant::now() > deadline {
            return h;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_reader_that_goes_away_is_counted_and_alerts_still_reach_grpc() {
    let sensor = Sensor::start_json("json_out_head", &[], JsonOut::FirstLineThenClosed);
    // Health events every second keep the sink writing into the closed pipe.
    let h = wait_json(&sensor, Duration::from_secs(20), |h| {
        h.dropped_write_failed > 0
    });
    assert!(h.dropped_write_failed > 0 && h.failing, "{h:?}");
    assert!(h.last_error.contains("reader went away"), "{h:?}");
    assert_eq!(h.target, "stdout");
    let cid = netcat_exec_listener();
    let alert = sensor.grpc_alert("CRS-008", &cid);
    assert_eq!(alert.container.unwrap().id, cid);
    assert!(
        sensor.alive(),
        "the sensor exited: {}",
        sensor.stderr_text()
    );
    let stderr = sensor.stderr_text();
    assert!(
        stderr.contains("--json-out: writing to stdout: the reader went away"),
        "the failure is logged once: {stderr}"
    );
    let status = sensor.stop();
    assert!(status.success(), "a clean exit after SIGINT: {status:?}");
}

#[test]
fn a_reader_that_stops_reading_costs_lines_not_the_pipeline() {
    let sensor = Sensor::start_json("json_out_unread", &[], JsonOut::Unread);
    // A bounded exec loop: some tens of megabytes of JSON, far more than the pipe (64 KiB) and
    // the sink's queue (8 MiB) hold.
    let busy = docker(&[
        "run",
        "-d",
        &image(),
        "sh",
        "-c",
        "i=0; while [ $i -lt 4000 ]; do /bin/true; i=$((i+1)); done",
    ]);
    let _cleanup = Containers(vec![busy.clone()]);
    let h = wait_json(&sensor, Duration::from_secs(60), |h| {
        h.dropped_queue_full > 0
    });
    assert!(h.dropped_queue_full > 0, "{h:?}");
    assert!(!h.failing, "a slow reader is not a failure: {h:?}");
    assert_eq!(docker(&["wait", &busy]).trim(), "0");
    // The pipeline still detects, and promptly: the alert comes while stdout stays unread.
    let cid = netcat_exec_listener();
    let alert = sensor.grpc_alert("CRS-008", &cid);
    assert_eq!(alert.container.unwrap().id, cid);
    assert!(sensor.alive());
}

#[test]
fn a_full_disk_drops_whole_lines_and_writing_resumes_when_space_returns() {
    let disk = Tmpfs::new("json_out_full", "1m");
    let out = disk.path("events.jsonl");
    let sensor = Sensor::start_json("json_out_full", &[], JsonOut::File(out.clone()));
    let written = wait_json(&sensor, Duration::from_secs(20), |h| h.written > 0).written;
    assert!(written > 0, "nothing written to {}", out.display());
    let filler = disk.path("filler");
    fill(&filler);
    // Health events (every second) and this container's events meet the full disk.
    docker_run_rm(&[
        &image(),
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do /bin/true; done",
    ]);
    let h = wait_json(&sensor, Duration::from_secs(20), |h| {
        h.failing && h.dropped_write_failed > 0
    });
    assert!(h.failing && h.dropped_write_failed > 0, "{h:?}");
    assert!(h.last_error.contains("No space left on device"), "{h:?}");
    // Alerts still reach gRPC while the disk is full.
    let cid = netcat_exec_listener();
    sensor.grpc_alert("CRS-008", &cid);
    std::fs::remove_file(&filler).unwrap();
    let after = wait_json(&sensor, Duration::from_secs(20), |now| {
        !now.failing && now.written > h.written
    });
    assert!(!after.failing && after.written > h.written, "{after:?}");
    assert!(sensor.alive());
    drop(sensor);
    // No torn line: every line in the file is a whole JSON document.
    let file = std::fs::File::open(&out).unwrap();
    let mut lines = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        Line::parse(&line).unwrap_or_else(|e| panic!("torn line {lines} ({e}): {line}"));
        lines += 1;
    }
    assert!(lines as u64 >= after.written, "{lines} lines, {after:?}");
}
