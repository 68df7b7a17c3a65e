//! The gRPC API against greedy, oversized and stalled clients, on the real agent:
//! - one client cannot hold every stream: past its own limit it is refused with a message that
//!   names the limit, while another process still subscribes, and closing frees the slots;
//! - an oversized request is refused and the agent serves on;
//! - a subscriber stopped with SIGSTOP during a flood of events falls behind alone: the rings
//!   keep draining, another subscriber still gets its alert, and the stopped one resumes.

use std::{
    thread,
    time::{Duration, Instant},
};

use sensor_proto::{self as pb, event::Body};
use sensor_tests::{Sensor, docker_run_rm, image, marker, netcat_exec_listener, watch::Watch};
use tonic::Code;

/// The `stream` subscribers the sensor reports, as (peer, missed).
fn subscribers(sensor: &Sensor, stream: &str) -> Vec<(String, u64)> {
    let delivery = sensor.grpc_health().delivery.unwrap();
    delivery
        .subscribers
        .into_iter()
        .filter(|s| s.stream == stream)
        .map(|s| (s.peer, s.missed))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_stream_and_an_oversized_request_is_refused() {
    let sensor = Sensor::start("grpc_limits");
    let mut client = sensor.client().await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let stream = client
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .expect("a stream within the client's limit");
        held.push(stream.into_inner());
    }
    let refused = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect_err("a ninth stream of one client");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("holds 8 WatchEvents streams")
            && refused.message().contains("the most one client may open"),
        "{}",
        refused.message()
    );

    // Another process is another client: it still subscribes.
    let other = Watch::start(&sensor, &["--events"]);
    let count = || subscribers(&sensor, "events").len();
    tokio::task::block_in_place(|| wait_until("the other client's stream", || count() == 9));
    drop(other);

    // Oversized: 2000 container ids of 64 characters (128 KiB) in one filter.
    let filter = pb::EventFilter {
        container_ids: (0..2000).map(|i| format!("{i:064}")).collect(),
        ..Default::default()
    };
    let too_big = client
        .watch_events(pb::WatchEventsRequest {
            filter: Some(filter),
        })
        .await
        .expect_err("a 128 KiB request");
    assert_eq!(too_big.code(), Code::OutOfRange, "{too_big:?}");

    // Closed streams free their slots; the agent served on through all of it.
    drop(held);
    tokio::task::block_in_place(|| wait_until("the streams freed", || count() == 0));
    client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("a stream once the client closed its others");
    assert!(sensor.alive());
}

#[test]
fn a_stopped_subscriber_falls_behind_alone() {
    let sensor = Sensor::start("grpc_stopped_subscriber");
    let stopped = Watch::start(&sensor, &["--events"]);
    wait_until("the watcher's stream", || {
        subscribers(&sensor, "events").len() == 1
    });
    let peer = subscribers(&sensor, "events").remove(0).0;
    stopped.signal(libc::SIGSTOP);
    let live = sensor.live_alerts();

    // A flood of events (20000 execs, each with its exit) while the subscriber cannot read:
    // far more than its queue (4096), the stream's buffer and the socket's hold.
    docker_run_rm(&[
        &image(),
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do /bin/true; i=$((i+1)); done",
    ]);
    let cid = netcat_exec_listener();
    live.wait_for("CRS-008", |a| {
        a.container.as_ref().is_some_and(|c| c.id == cid)
    });
    let event = sensor.grpc_health().health.unwrap();
    let Some(Body::Health(health)) = event.body else {
        panic!("GetHealth without its health body: {event:?}")
    };
    let ring_full: u64 = health.rings.iter().map(|r| r.dropped_ring_full).sum();
    assert_eq!(ring_full, 0, "the rings kept draining: {:?}", health.rings);
    let missed = subscribers(&sensor, "events")
        .into_iter()
        .find(|(p, _)| *p == peer)
        .map(|(_, missed)| missed);
    assert!(
        missed.is_some_and(|m| m > 0),
        "the stopped subscriber ({peer}) is reported behind: {missed:?}"
    );

    // Resumed, it reads on and gets what comes next.
    stopped.signal(libc::SIGCONT);
    let m = marker("resumed");
    let resumed = docker_run_rm(&[&image(), "sh", "-c", &format!(": {m}")]);
    stopped.wait_for("the resumed subscriber's next events", |l| {
        l.contains(&resumed[..12])
    });
}
