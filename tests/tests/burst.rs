//! A bounded burst of containers: every one started, exited and attributed exactly once.

use std::{collections::HashMap, sync::Mutex, thread, time::Duration};

use sensor_tests::{Bodies, Line, Sensor, Subject, docker_run_rm, ev, image, lines, marker, pb};

const CONTAINERS: usize = 100;
const PARALLEL: usize = 10;

#[test]
fn a_burst_of_100_containers_is_counted_exactly() {
    let sensor = Sensor::start("burst");
    let run = marker("burst");
    let ids: Mutex<HashMap<String, String>> = Mutex::default(); // marker -> container id
    thread::scope(|s| {
        for worker in 0..PARALLEL {
            let (ids, run) = (&ids, &run);
            s.spawn(move || {
                for i in (worker..CONTAINERS).step_by(PARALLEL) {
                    let m = format!("{run}-{i}");
                    let cid = docker_run_rm(&[&image(), "true", &m]);
                    ids.lock().unwrap().insert(m, cid);
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), CONTAINERS);
    let cids: std::collections::HashSet<&str> = ids.values().map(String::as_str).collect();
    let count = |lines: &[Line], kind: &str| {
        lines::events(lines)
            .filter(|e| e.kind == kind && cids.contains(e.cid()))
            .count()
    };
    let complete = sensor.wait_until(Duration::from_secs(60), |lines| {
        count(lines, "container_exited") >= CONTAINERS
    });
    let lines = sensor.lines();
    let events: Vec<&pb::Event> = lines::events(&lines).collect();
    assert!(
        complete,
        "only {} of {CONTAINERS} exits seen",
        count(&lines, "container_exited")
    );
    assert_eq!(
        count(&lines, "container_started"),
        CONTAINERS,
        "exactly one start per container"
    );
    assert_eq!(
        count(&lines, "container_exited"),
        CONTAINERS,
        "exactly one exit per container"
    );
    // Every container's own `true <marker>` exec is attributed to that container, and no other.
    for (m, cid) in &ids {
        let execs: Vec<_> = events
            .iter()
            .filter(|e| ev::is_exec_of(e, "true") && ev::args(e).contains(&m.as_str()))
            .collect();
        assert_eq!(execs.len(), 1, "exec of {m}");
        assert_eq!(execs[0].cid(), cid, "{m} misattributed: {:?}", execs[0]);
    }
    let health = events.iter().rev().find(|e| e.kind == "health").unwrap();
    assert_eq!(
        health.health().dropped_total,
        0,
        "drops during the burst: {health:?}"
    );
}
