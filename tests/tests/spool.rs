//! The alert spool on a full disk, for real: a small tmpfs filled while alerts are raised. The
//! agent survives, appends are all or nothing (no torn record hides later alerts from a replay),
//! sequence numbers stay unique and gap-free, and a restart replays the same alerts. While the
//! spool cannot write, live subscribers still receive every alert (unnumbered) and CRS-020 says
//! so once.

use std::{thread, time::Duration};

use sensor_tests::{
    Sensor,
    disk::{Tmpfs, fill},
    netcat_exec_listener,
};

#[test]
fn a_full_disk_fails_appends_whole_and_the_spool_resumes_without_a_gap() {
    let disk = Tmpfs::new("spool_full", "2m");
    let spool = disk.path("spool").display().to_string();
    let args = ["--spool-dir", spool.as_str()];
    let sensor = Sensor::start_with("spool_full", &args);
    let before = netcat_exec_listener();
    sensor.grpc_alert("CRS-008", &before);

    let live = sensor.live_alerts();
    let filler = disk.path("filler");
    fill(&filler);
    // Alerts raised on the full disk reach live subscribers and the JSON lines (unspooled,
    // without a sequence number) and are counted; the agent carries on.
    // (The first may still fit in the spool's last, partly used page of the tmpfs.)
    let during: Vec<String> = (0..3).map(|_| netcat_exec_listener()).collect();
    let mut unspooled = 0;
    for cid in &during {
        sensor.expect_alert("CRS-008", cid);
        let alert = live.wait_for("CRS-008", |a| {
            a.container.as_ref().is_some_and(|c| &c.id == cid)
        });
        unspooled += usize::from(alert.seq == 0);
    }
    assert!(unspooled >= 2, "{unspooled} of 3 live alerts unnumbered");
    // (Itself small, it may fit where the batch before did not: spooled or not.)
    let failing = live.wait_for("CRS-020", |_| true);
    let error = &failing.events[0];
    let Some(sensor_proto::event::Body::SpoolFailing(body)) = &error.body else {
        panic!("CRS-020 without its spool_failing event: {failing:?}")
    };
    assert!(
        body.error.contains("No space left on device") && body.error.contains(&spool),
        "the error names the cause and the file: {body:?}"
    );
    let health = sensor.grpc_health().delivery.unwrap().spool.unwrap();
    assert!(health.append_errors >= 3, "{health:?}");
    assert!(sensor.alive());

    std::fs::remove_file(&filler).unwrap();
    let after = netcat_exec_listener();
    sensor.grpc_alert("CRS-008", &after);
    let spooled = live.wait_for("CRS-008", |a| {
        a.container.as_ref().is_some_and(|c| c.id == after)
    });
    assert!(spooled.seq > 0, "spooled again once space returned");
    let episodes = live
        .received()
        .iter()
        .filter(|a| a.rule_id == "CRS-020")
        .count();
    assert_eq!(episodes, 1, "one CRS-020 for a flapping full disk");
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
    let mut numbered: Vec<u64> = (sensor.alerts().iter())
        .map(|a| a.seq)
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
