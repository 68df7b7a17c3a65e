//! The alert spool on a full disk, for real: a small tmpfs filled while alerts are raised. The
//! agent survives, appends are all or nothing (no torn record hides later alerts from a replay),
//! sequence numbers stay unique and gap-free, and a restart replays the same alerts.

use std::{thread, time::Duration};

use sensor_tests::{
    Sensor,
    disk::{Tmpfs, fill},
    ev, netcat_exec_listener,
};

#[test]
fn a_full_disk_fails_appends_whole_and_the_spool_resumes_without_a_gap() {
    let disk = Tmpfs::new("spool_full", "2m");
    let spool = disk.path("spool").display().to_string();
    let args = ["--spool-dir", spool.as_str()];
    let sensor = Sensor::start_with("spool_full", &args);
    let before = netcat_exec_listener();
    sensor.grpc_alert("CRS-008", &before);

    let filler = disk.path("filler");
    fill(&filler);
    // Alerts raised on the full disk reach the JSON lines (unspooled, without a sequence
    // number) and are counted; the agent carries on.
    let during: Vec<String> = (0..3).map(|_| netcat_exec_listener()).collect();
    for cid in &during {
        sensor.expect_alert("CRS-008", cid);
    }
    let health = sensor.grpc_health().delivery.unwrap().spool.unwrap();
    assert!(health.append_errors > 0, "{health:?}");
    assert!(sensor.alive());

    std::fs::remove_file(&filler).unwrap();
    let after = netcat_exec_listener();
    sensor.grpc_alert("CRS-008", &after);
    let replayed = sensor.grpc_spooled_alerts();
    let seqs: Vec<u64> = replayed.iter().map(|a| a.seq).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "unique and gap-free"
    );
    let containers: Vec<&str> = replayed
        .iter()
        .filter_map(|a| a.container.as_ref().map(|c| c.id.as_str()))
        .collect();
    for cid in [&before, &after] {
        assert!(containers.contains(&cid.as_str()), "{cid} not replayed");
    }

    // The JSON lines carry a number only for alerts that were spooled: none twice.
    let mut numbered: Vec<u64> = (sensor.events().iter())
        .filter(|e| e["kind"] == "alert")
        .map(|e| ev::u64_of(&e["alert"]["seq"]))
        .filter(|&seq| seq > 0)
        .collect();
    let lines = numbered.len();
    numbered.sort_unstable();
    numbered.dedup();
    assert_eq!(
        numbered.len(),
        lines,
        "a sequence number on two JSON alerts"
    );

    // A restart on the same spool replays the same alerts, in the same order.
    sensor.kill_9();
    thread::sleep(Duration::from_millis(200));
    let again = Sensor::start_with("spool_full_restarted", &args);
    let ids = |alerts: &[sensor_proto::Alert]| -> Vec<(u64, String)> {
        alerts.iter().map(|a| (a.seq, a.id.clone())).collect()
    };
    let restarted = again.grpc_spooled_alerts();
    assert_eq!(
        ids(&restarted[..replayed.len()]),
        ids(&replayed),
        "the restart replays what was spooled"
    );
    let recovered = again.grpc_health().delivery.unwrap().spool.unwrap();
    assert_eq!(
        recovered.truncated_at_recovery, 0,
        "no torn record: {recovered:?}"
    );
}
