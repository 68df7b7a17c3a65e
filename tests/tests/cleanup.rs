//! Stopping the sensor leaves nothing of it attached. In a test binary of its own, so no other
//! sensor of this suite runs at the same time.

use std::process::Command;

use sensor_tests::Sensor;
use serde_json::Value;

/// Ids of loaded programs whose names are the sensor's (bpftool cuts names to 15 bytes).
fn sensor_programs() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = [
        "sched_process_exec",
        "sched_process_fork",
        "sched_process_exit",
        "cgroup_mkdir",
        "cgroup_rmdir",
    ];
    progs
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| ours.iter().any(|o| o.starts_with(n)))
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn stopping_the_sensor_detaches_everything() {
    let before = sensor_programs();
    let sensor = Sensor::start("cleanup");
    let running: Vec<u64> = sensor_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(
        running.len(),
        5,
        "the sensor's five programs are loaded while it runs"
    );
    let status = sensor.stop();
    assert!(
        status.success(),
        "sensor exit status after SIGINT: {status}"
    );
    let after = sensor_programs();
    let left: Vec<_> = running.iter().filter(|id| after.contains(id)).collect();
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
}
