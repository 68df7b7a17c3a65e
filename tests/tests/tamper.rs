//! The sensor-tampering rules (CRS-014 to CRS-017) against real tools in real containers:
//! bpftool loading a program, kill and strace aimed at the sensor, strace attaching inside a
//! container, a tracefs mount and perf. Each also runs a benign look-alike that must stay quiet.
//! The bpf, ptrace, perf_event_open and mount signals come from those syscalls' own kernel
//! functions (fentry or kprobes) in the default set; on a kernel with neither (this host) they
//! exist only on the syscall path, so there the tests run the sensor with the opt-in syscall
//! fallback ([`hooks`]). Signals aimed at the sensor come from `signal:signal_generate` in every
//! set. The binary is also part of `cargo xtask vm-test`'s suite, once per hook set.

use std::{process::Command, time::Duration};

use sensor_tests::{Bodies, Sensor, Subject, assert_alert_fields, run_rm};

const SETTLE: Duration = Duration::from_secs(3);

/// The hook set these signals need: the one the run asked for (`SENSOR_TEST_HOOKS`: vm-test's
/// default, kprobe and syscall runs), except where it has no function hooks (this host, without
/// fentry or kprobes, or an explicit `tracepoint` run): there the syscall fallback.
fn hooks() -> &'static [&'static str] {
    match std::env::var("SENSOR_TEST_HOOKS").as_deref() {
        Ok("tracepoint") | Err(_) => &["--hooks", "syscall"],
        Ok(_) => &[],
    }
}

/// Where bpf and mount arguments are read with that set: the kernel's own copy with function
/// hooks, the caller's memory with the syscall fallback.
fn args_source() -> &'static str {
    match std::env::var("SENSOR_TEST_HOOKS").as_deref() {
        Ok("tracepoint" | "syscall") | Err(_) => "user",
        Ok(_) => "kernel",
    }
}

#[test]
fn crs014_ebpf_program_loaded_from_a_container() {
    let sensor = Sensor::start_with("crs014", hooks());
    // bpftool loads a two-instruction socket filter to probe the kernel before it drops its
    // capabilities (then its unprivileged probes are refused).
    let cid = run_rm(
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "bpftool feature probe kernel unprivileged >/dev/null 2>&1; exit 0",
        ],
    );
    let a = sensor.expect_alert("CRS-014", &cid);
    assert_alert_fields(&a, "CRS-014", &cid);
    let bpf = a.events[0].bpf();
    assert_eq!(bpf.cmd, "prog_load", "{a:?}");
    assert_eq!(bpf.r#type, "socket_filter", "{a:?}");
    assert_eq!(bpf.args_source, args_source(), "{a:?}");
    assert_eq!(a.process().exe, "/usr/sbin/bpftool", "{a:?}");
    let benign = run_rm(&[], &["bpftool", "version"]);
    sensor.assert_no_alert("CRS-014", &benign, SETTLE);
}

#[test]
fn crs015_a_signal_or_ptrace_aimed_at_the_sensor() {
    // The signal half is every set's; the ptrace half needs the function hooks or the fallback.
    let sensor = Sensor::start_with("crs015", hooks());
    let pid = sensor.pid().to_string();
    // SIGCONT is harmless to a running process; only a --pid host container can name the sensor.
    let cid = run_rm(&["--pid", "host"], &["kill", "-CONT", &pid]);
    let a = sensor.expect_alert("CRS-015", &cid);
    assert_alert_fields(&a, "CRS-015", &cid);
    let signal = a.events[0].signal();
    assert_eq!(signal.name, "SIGCONT", "{a:?}");
    assert_eq!(signal.target.to_string(), pid, "{a:?}");
    assert!(signal.target_is_sensor, "{a:?}");
    // An attach to the sensor: refused (the container lacks CAP_SYS_PTRACE and the sensor's
    // capabilities), and still an alert.
    let tracer = run_rm(
        &["--pid", "host"],
        &[
            "sh",
            "-c",
            &format!("strace -p {pid} -e trace=none 2>/dev/null; exit 0"),
        ],
    );
    let a = sensor.expect_alert("CRS-015", &tracer);
    let ptrace = a.events[0].ptrace();
    assert_eq!(ptrace.request, "seize", "{a:?}");
    assert_eq!(ptrace.error, "EPERM", "{a:?}");
    assert!(sensor.alive(), "the sensor survived");
    // Benign: the same kill aimed at another host process.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let benign = run_rm(
        &["--pid", "host"],
        &["kill", "-CONT", &other.id().to_string()],
    );
    let _ = other.kill();
    let _ = other.wait();
    sensor.assert_no_alert("CRS-015", &benign, SETTLE);
}

#[test]
fn crs016_ptrace_attach_from_a_container() {
    let sensor = Sensor::start_with("crs016", hooks());
    let cid = run_rm(
        &["--cap-add", "SYS_PTRACE"],
        &[
            "sh",
            "-c",
            "sleep 2 & strace -p $! -e trace=none 2>/dev/null; exit 0",
        ],
    );
    let a = sensor.expect_alert("CRS-016", &cid);
    assert_alert_fields(&a, "CRS-016", &cid);
    assert_eq!(a.events[0].ptrace().request, "seize", "{a:?}");
    assert_eq!(a.process().comm, "strace", "{a:?}");
    let benign = run_rm(&["--cap-add", "SYS_PTRACE"], &["cat", "/proc/1/status"]);
    sensor.assert_no_alert("CRS-016", &benign, SETTLE);
}

#[test]
fn crs017_tracefs_mount_and_perf_events_from_a_container() {
    let sensor = Sensor::start_with("crs017", hooks());
    let mount = run_rm(
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "mkdir -p /mnt/t && mount -t tracefs nodev /mnt/t; exit 0",
        ],
    );
    let a = sensor.expect_alert("CRS-017", &mount);
    assert_alert_fields(&a, "CRS-017", &mount);
    assert_eq!(a.events[0].mount().fstype, "tracefs", "{a:?}");
    assert_eq!(a.events[0].mount().args_source, args_source(), "{a:?}");
    let perf = run_rm(
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "perf stat -e task-clock true 2>/dev/null; exit 0",
        ],
    );
    let a = sensor.expect_alert("CRS-017", &perf);
    assert_eq!(a.events[0].perf_event_open().r#type, "software", "{a:?}");
    // Benign: a tmpfs mount is not tracing.
    let benign = run_rm(
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t; exit 0",
        ],
    );
    sensor.assert_no_alert("CRS-017", &benign, SETTLE);
}

#[test]
fn default_hooks_see_a_signal_at_the_sensor_and_name_the_rules_they_are_blind_to() {
    // Named, so every run of the suite (vm-test) also tests the default set.
    let sensor = Sensor::start_with("crs015_default", &["--hooks", "default"]);
    let pid = sensor.pid().to_string();
    let cid = run_rm(&["--pid", "host"], &["kill", "-CONT", &pid]);
    let a = sensor.expect_alert("CRS-015", &cid);
    assert_eq!(a.events[0].signal().name, "SIGCONT", "{a:?}");
    let health = sensor.expect("a health event", |e| e.kind == "health");
    let h = health.health();
    let blind: Vec<&str> = h.blind_rules.iter().map(String::as_str).collect();
    // `default` resolves to what the kernel has: on a kernel without fentry and kprobes (this
    // host) it is blind to what only the syscall path shows, and says so; elsewhere it sees it.
    match h.hook_set.as_str() {
        "tracepoint" => {
            assert!(blind.contains(&"CRS-014: bpf"), "{h:?}");
            assert!(blind.contains(&"CRS-017: perf_event_open, mount"), "{h:?}");
        }
        "fentry" | "kprobe" => assert!(blind.is_empty(), "{h:?}"),
        other => panic!("--hooks default resolved to {other:?}: {h:?}"),
    }
    // vm-test's `default` runs are on Debian kernels, which have fentry: it must be chosen.
    if std::env::var("SENSOR_TEST_HOOKS").as_deref() == Ok("default") {
        assert_eq!(h.hook_set, "fentry", "{h:?}");
    }
}
