//! Crash consistency of the alert spool, for real: the agent is killed with SIGKILL twenty times
//! while a container raises a burst of alerts, each time at another moment of its work (appending,
//! syncing, rotating a segment, answering a replay). After each restart the spool recovers on its
//! own; at the end:
//! - every alert a subscriber received (the agent publishes only after the sync) is still in the
//!   spool with the same sequence number and id: what was acknowledged survives;
//! - sequence numbers in the spool are unique and gap-free, across all twenty recoveries;
//! - alert ids are unique, so a consumer that gets an alert twice (delivery is at least once) can
//!   drop the copy by id.

use std::{collections::BTreeMap, thread, time::Duration};

use sensor_tests::{Containers, JsonOut, Sensor, docker, image, scratch_dir};

const ROUNDS: u64 = 20;

/// Netcat with an exec flag (CRS-008) against a closed port on the container's own loopback,
/// every 5 ms; bounded (at most 60000 runs, over 5 minutes), and the test removes it sooner.
const BURST: &str = "i=0; while [ $i -lt 60000 ]; do nc 127.0.0.1 9 -e /bin/true 2>/dev/null; \
                     usleep 5000; i=$((i+1)); done";

#[test]
fn twenty_kill_9s_during_an_alert_burst_lose_no_acknowledged_alert_and_reuse_no_number() {
    let dir = scratch_dir("crash");
    let spool = dir.join("spool").display().to_string();
    let socket = dir.join("sensor.sock").display().to_string();
    let args = [
        "--spool-dir",
        spool.as_str(),
        "--grpc-socket",
        socket.as_str(),
        // Every alert of the burst is spooled: no "N more like this" aggregation.
        "--alert-cap",
        "0",
        // Segments of 2 MiB: the burst rotates through several of them.
        "--spool-max-mb",
        "16",
    ];
    let cid = docker(&["run", "-d", &image(), "sh", "-c", BURST]);
    let burst = Containers(vec![cid.clone()]);

    // seq -> id of every alert a subscriber received, over all rounds.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    // Torn tails the recoveries cut off (records never acknowledged).
    let mut truncated = 0;
    for round in 0..ROUNDS {
        let out = JsonOut::File(dir.join(format!("out-{round}.jsonl")));
        let sensor = Sensor::start_json(&format!("crash_{round}"), &args, out);
        truncated += sensor
            .grpc_health()
            .delivery
            .unwrap()
            .spool
            .unwrap()
            .truncated_at_recovery;
        let live = sensor.live_alerts();
        live.wait_for("CRS-008", |a| {
            a.container.as_ref().is_some_and(|c| c.id == cid)
        });
        // A different moment of the burst each round (50 ms to 1.5 s after the first alert).
        thread::sleep(Duration::from_millis(50 + round * 7919 % 1450));
        let received = live.received();
        sensor.kill_9();
        for alert in received.into_iter().filter(|a| a.seq != 0) {
            if let Some(id) = acknowledged.insert(alert.seq, alert.id.clone()) {
                assert_eq!(
                    id, alert.id,
                    "round {round}: sequence number {} given to two alerts",
                    alert.seq
                );
            }
        }
    }
    drop(burst);
    assert!(
        acknowledged.len() as u64 >= ROUNDS,
        "only {} alerts acknowledged in {ROUNDS} rounds",
        acknowledged.len()
    );

    let sensor = Sensor::start_json("crash_final", &args, JsonOut::File(dir.join("out.jsonl")));
    let health = sensor.grpc_health().delivery.unwrap().spool.unwrap();
    let spooled = sensor.grpc_spooled_alerts();
    let seqs: Vec<u64> = spooled.iter().map(|a| a.seq).collect();
    assert_eq!(
        seqs.first(),
        Some(&1),
        "the spool starts at 1 (no eviction): {health:?}"
    );
    if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        panic!(
            "sequence numbers not unique and gap-free: {} then {}",
            w[0], w[1]
        );
    }
    let by_seq: BTreeMap<u64, &str> = spooled.iter().map(|a| (a.seq, a.id.as_str())).collect();
    for (seq, id) in &acknowledged {
        assert_eq!(
            by_seq.get(seq),
            Some(&id.as_str()),
            "acknowledged alert {seq} ({id}) not in the spool after {ROUNDS} kills"
        );
    }
    let mut ids: Vec<&str> = spooled.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spooled.len(), "alert ids are unique");
    eprintln!(
        "{} alerts spooled over {ROUNDS} kills, {} acknowledged live; recoveries cut {} torn tails; {} bytes",
        spooled.len(),
        acknowledged.len(),
        truncated + health.truncated_at_recovery,
        health.bytes
    );
    drop(sensor);
    let _ = std::fs::remove_dir_all(dir);
}
