//! Alerts lost before export (CRS-021): the spool, at its size bound, evicts alerts the OTLP
//! exporter has not sent. The collector here is a hostile peer that accepts connections and
//! never answers, so nothing is ever exported; a real container raises a burst of real alerts
//! until a 1 MiB spool evicts. The look-alike is the spool's ordinary work: the same burst
//! with no exporter evicts as much and stays quiet.

use std::{
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{Containers, Sensor, docker, image};

/// nc -e runs (CRS-008 each, a few KiB per alert) until stopped, at most 5000.
const BURST: &str = "i=0; while [ $i -lt 5000 ]; do nc 127.0.0.1 9 -e /bin/true 2>/dev/null; \
                     i=$((i+1)); done; sleep 60";

/// Starts the burst and waits until the spool of `sensor` evicted something; returns the
/// spool's health then.
fn burst_until_evicted(sensor: &Sensor) -> sensor_proto::SpoolHealth {
    let cid = docker(&["run", "-d", &image(), "sh", "-c", BURST]);
    let _burst = Containers(vec![cid]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let spool = sensor.grpc_health().delivery.unwrap().spool.unwrap();
        if spool.evicted > 0 {
            return spool;
        }
        assert!(
            Instant::now() < deadline,
            "no eviction within 120 s: {spool:?}"
        );
        thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn evicting_alerts_the_collector_never_got_raises_crs_021_and_ordinary_eviction_does_not() {
    // The hostile collector: connections are accepted (by the kernel's backlog) and never
    // read from or answered.
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let small = ["--spool-max-mb", "1", "--alert-cap", "0"];

    let args = [&small[..], &["--otlp-endpoint", endpoint.as_str()]].concat();
    let sensor = Sensor::start_with("export_loss", &args);
    let live = sensor.live_alerts();
    burst_until_evicted(&sensor);
    let alert = live.wait_for("CRS-021", |_| true);
    let event = alert.events.last().cloned().expect("the alert's event");
    let Some(sensor_proto::event::Body::SpoolEvicted(lost)) = event.body else {
        panic!("CRS-021 without its spool_evicted event: {event:?}")
    };
    assert!(lost.lost > 0 && lost.lost_total >= lost.lost, "{lost:?}");
    assert_eq!(lost.exported_seq, 0, "nothing was ever exported: {lost:?}");
    assert_eq!(lost.max_bytes, 1 << 20);
    assert!(event.container.is_none(), "about the node: {event:?}");
    assert!(
        alert.summary.contains("never received"),
        "{}",
        alert.summary
    );
    let health = sensor.grpc_health().delivery.unwrap();
    let spool = health.spool.unwrap();
    assert!(spool.evicted_unexported >= lost.lost_total, "{spool:?}");
    assert_eq!(health.otlp.unwrap().acked_seq, 0);
    // One alert per 5 minutes; later losses are counted, not alerted.
    thread::sleep(Duration::from_secs(2));
    let raised = live
        .received()
        .iter()
        .filter(|a| a.rule_id == "CRS-021")
        .count();
    assert_eq!(raised, 1);
    drop(sensor);

    // No exporter: evicting is what the bound is for.
    let sensor = Sensor::start_with("export_loss_quiet", &small);
    let live = sensor.live_alerts();
    let spool = burst_until_evicted(&sensor);
    assert_eq!(spool.evicted_unexported, 0, "{spool:?}");
    thread::sleep(Duration::from_secs(2));
    let received = live.received();
    assert!(received.iter().any(|a| a.rule_id == "CRS-008"));
    assert!(
        !received.iter().any(|a| a.rule_id == "CRS-021"),
        "CRS-021 without an exporter"
    );
    drop(collector);
}
