//! Container metadata from the runtime's API (Docker) on events and alerts, and rule exceptions
//! (allow-lists) by image, container name and label, on real containers against the real
//! sensor. Traffic goes only to the docker bridge gateway.

use std::time::Duration;

use sensor_tests::{
    Bodies, Containers, ImageTag, Sensor, Subject, docker, docker_run_rm, image, marker, pb,
    shipped_rule_with_exceptions,
};

const SETTLE: Duration = Duration::from_secs(3);

/// `docker run -d FLAGS IMAGE CMD...`: the full id.
fn run_detached(flags: &[&str], image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(flags);
    args.push(image);
    args.extend_from_slice(cmd);
    let id = docker(&args);
    assert_eq!(id.len(), 64, "docker's container id {id:?}");
    id
}

const BACKDOOR: [&str; 6] = ["nc", "-l", "-p", "8080", "-e", "/bin/sh"];

#[test]
fn alerts_and_events_name_the_container_its_image_and_labels() {
    let sensor = Sensor::start("metadata");
    let name = marker("web");
    // The backdoor is the container's first process: the name must be known by then, because
    // the sensor inspects containers as Docker creates them.
    let cid = run_detached(
        &["--name", &name, "--label", "team=red"],
        &image(),
        &BACKDOOR,
    );
    let _cleanup = Containers(vec![cid.clone()]);
    let a = sensor.expect_alert("CRS-008", &cid);
    let c = a.container();
    assert_eq!(c.id, cid, "{a:?}");
    assert_eq!(c.name, name, "{a:?}");
    assert_eq!(c.image, image(), "{a:?}");
    assert_eq!(
        c.labels.get("team").map(String::as_str),
        Some("red"),
        "{a:?}"
    );
    // The inspect answer (image id, network mode) may arrive after the first process's alert
    // (the module doc of `enrich::runtime`); a later event of the container carries it.
    docker(&["exec", &cid, "true"]);
    let e = sensor.expect("an event carrying the inspect answer", |e| {
        e.cid() == cid && e.container().image_id.starts_with("sha256:")
    });
    assert!(
        ["default", "bridge"].contains(&e.container().network_mode.as_str()),
        "{e:?}"
    );
    // Every event of the container, its start included, carries the name.
    let unnamed: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.cid() == cid && e.container().name != name)
        .collect();
    assert!(unnamed.is_empty(), "events without the name: {unnamed:?}");

    // A lifetime alert is raised at the container's exit and still names it.
    // (CRS-006 needs something suspicious in the short life: a program run from /tmp.)
    let short = marker("short");
    let script = "cp /bin/busybox /tmp/true && /tmp/true";
    let sid = docker_run_rm(&["--name", &short, &image(), "sh", "-c", script]);
    let a = sensor.expect_alert("CRS-006", &sid);
    assert_eq!(a.container().name, short, "{a:?}");
    assert_eq!(a.container().image, image(), "{a:?}");

    let health = sensor.expect("health naming the runtime API", |e| {
        e.kind == "health" && e.health().runtime_api.contains("connected")
    });
    assert!(health.health().runtime_api.contains("/var/run/docker.sock"));
}

#[test]
fn a_missing_docker_socket_is_a_warning_not_a_failure() {
    let sensor = Sensor::start_with(
        "metadata-nodocker",
        &["--docker-socket", "/nonexistent.sock"],
    );
    assert!(
        sensor
            .stderr_text()
            .lines()
            .any(|l| l.starts_with("sensor: warning: docker /nonexistent.sock: unavailable")),
        "{}",
        sensor.stderr_text()
    );
    // Containers are still attributed, by id.
    let cid = docker_run_rm(&[&image(), "true"]);
    let started = sensor.expect("container start", |e| {
        e.kind == "container_started" && e.cid() == cid
    });
    assert!(started.container().name.is_empty(), "{started:?}");
}

/// CRS-008 as shipped, plus the allow-list entries a detection engineer would add.
fn netcat_rule_with_exceptions(allowed_image: &str, name_glob: &str) -> String {
    shipped_rule_with_exceptions(
        "008-netcat-c2.yaml",
        &format!(
            "\x20 - name: trusted-image\n\
         \x20   reason: the debugging image ships nc on purpose\n\
         \x20   images: [\"{allowed_image}\"]\n\
         \x20 - name: trusted-name\n\
         \x20   reason: named debug containers\n\
         \x20   container_names: [\"{name_glob}\"]\n\
         \x20 - name: infra-team\n\
         \x20   reason: the infra team's containers\n\
         \x20   labels: {{team: infra, purpose: \"debug*\"}}\n"
        ),
    )
}

#[test]
fn allow_lists_by_image_name_and_label_silence_only_what_they_name() {
    let dir = sensor_tests::scratch_dir("allow-rules");
    let tag = ImageTag::new(
        &image(),
        &format!("sensor-test/allowed-{}:latest", std::process::id()),
    );
    let trusted = marker("trusted");
    std::fs::write(
        dir.join("008-allow.yaml"),
        netcat_rule_with_exceptions(&tag.0.replace(":latest", ""), "trusted-*"),
    )
    .unwrap();
    let sensor = Sensor::start_with("allow-lists", &["--rules", dir.to_str().unwrap()]);

    let by_image = run_detached(&[], &tag.0, &BACKDOOR);
    let by_name = run_detached(&["--name", &trusted], &image(), &BACKDOOR);
    let by_label = run_detached(
        &["--label", "team=infra", "--label", "purpose=debugging"],
        &image(),
        &BACKDOOR,
    );
    // Not listed: one of the two labels only, and a plain container.
    let half_label = run_detached(&["--label", "team=infra"], &image(), &BACKDOOR);
    let plain = run_detached(&[], &image(), &BACKDOOR);
    let all = vec![
        by_image.clone(),
        by_name.clone(),
        by_label.clone(),
        half_label.clone(),
        plain.clone(),
    ];
    let _cleanup = Containers(all.clone());

    let a = sensor.expect_alert("CRS-008", &plain);
    assert_eq!(a.container().id, plain);
    sensor.expect_alert("CRS-008", &half_label);
    let mut rm = vec!["rm", "-f"];
    rm.extend(all.iter().map(String::as_str));
    docker(&rm);
    for (cid, what) in [
        (&by_image, "image"),
        (&by_name, "name"),
        (&by_label, "labels"),
    ] {
        sensor.assert_no_alert("CRS-008", cid, SETTLE);
        // The container was seen, and named, so the exception had something to match.
        let seen = sensor.events().into_iter().any(|e| {
            e.kind == "exec" && e.cid() == cid.as_str() && !e.container().image.is_empty()
        });
        assert!(seen, "allow-listed by {what}: no exec with its metadata");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
