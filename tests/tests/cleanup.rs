//! What the sensor attaches, read back from the kernel: nothing on the syscall path by default,
//! and nothing at all once it stopped. In a test binary of its own, so no other sensor of this
//! suite runs at the same time; its tests take [`ONE_SENSOR`] so they do not overlap either.

use std::process::Command;

use std::time::{Duration, Instant};

use sensor_tests::{
    Containers, Sensor,
    bpf_links::{names, tracepoints_of},
    cgroup_path, docker, image,
};
use serde_json::Value;

/// Held by each test while its sensor runs: a test counts every program that appears as its
/// sensor's.
static ONE_SENSOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Ids of all loaded programs.
fn programs() -> Vec<u64> {
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
    progs.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// Interfaces with a clsact qdisc (`tc qdisc show`).
fn clsact_interfaces() -> Vec<String> {
    let out = Command::new("tc")
        .args(["qdisc", "show"])
        .output()
        .expect("tc");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("qdisc clsact"))
        .filter_map(|l| l.split(" dev ").nth(1)?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup/unified` on a hybrid host, `/sys/fs/cgroup` on a
/// cgroup2-only one such as the VM guests).
fn cgroup2_mount() -> String {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .expect("a cgroup2 mount")
}

/// The programs `bpftool cgroup show DIR` lists as attached to a cgroup directory.
fn cgroup_programs(dir: &str) -> String {
    bpftool_cgroup_show(&[dir])
}

/// The programs that run for a cgroup directory: its own and its ancestors'.
fn effective_programs(dir: &str) -> String {
    bpftool_cgroup_show(&[dir, "effective"])
}

fn bpftool_cgroup_show(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bpftool cgroup show {args:?}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The traffic programs: on the cgroups holding containers, not on the root.
const TRAFFIC_PROGRAMS: [&str; 2] = ["traffic_egress", "traffic_ingress"];

/// Our cgroup programs on the root, by name.
const CGROUP_PROGRAMS: [&str; 7] = [
    "sock_create",
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "post_bind4",
    "post_bind6",
];

fn on_syscall_path(tracepoint: &str) -> bool {
    tracepoint.starts_with("sys_enter") || tracepoint.starts_with("sys_exit")
}

#[test]
fn the_default_hooks_put_nothing_on_the_syscall_path() {
    let _one = ONE_SENSOR.lock().unwrap_or_else(|e| e.into_inner());
    // Named, so a `--hooks syscall` run of the suite (vm-test) still tests the default set.
    let sensor = Sensor::start_with("no_syscall_hooks", &["--hooks", "default"]);
    let attached = tracepoints_of(sensor.pid());
    assert!(
        attached.iter().any(|t| names(t, "sched_process_exec")),
        "the listing shows our tracepoints: {attached:?}"
    );
    // io_uring rings are watched where they are set up, not on the syscall path.
    if std::path::Path::new("/sys/kernel/tracing/events/io_uring/io_uring_create").exists() {
        assert!(
            attached.iter().any(|t| names(t, "io_uring_create")),
            "io_uring:io_uring_create attached: {attached:?}"
        );
    }
    let syscall: Vec<&String> = attached.iter().filter(|t| on_syscall_path(t)).collect();
    assert!(
        syscall.is_empty(),
        "syscall tracepoints attached by default: {syscall:?}"
    );
    let root = cgroup_programs(&cgroup2_mount());
    for program in CGROUP_PROGRAMS {
        assert!(
            root.contains(program),
            "{program} on the cgroup2 root:\n{root}"
        );
    }
    // The host's packets run no program of ours: traffic is counted on the cgroups that hold
    // containers.
    for program in TRAFFIC_PROGRAMS {
        assert!(
            !root.contains(program),
            "{program} on the cgroup2 root:\n{root}"
        );
    }
    let cid = docker(&["run", "-d", &image(), "sleep", "30"]);
    let _cleanup = Containers(vec![cid.clone()]);
    let dir = format!("{}{}", cgroup2_mount(), cgroup_path(&cid));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut on_container = effective_programs(&dir);
    while !TRAFFIC_PROGRAMS.iter().all(|p| on_container.contains(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        on_container = effective_programs(&dir);
    }
    // Each runs once per packet: from the runtime's parent cgroup, never also from the
    // container's own.
    for program in TRAFFIC_PROGRAMS {
        assert_eq!(
            on_container.matches(program).count(),
            1,
            "{program} runs once for the container's cgroup {dir}:\n{on_container}"
        );
        let own = cgroup_programs(&dir);
        assert!(!own.contains(program), "{program} on {dir} itself:\n{own}");
    }
    let parent = dir.rsplit_once('/').unwrap().0;
    let on_parent = cgroup_programs(parent);
    for program in TRAFFIC_PROGRAMS {
        assert!(
            on_parent.contains(program),
            "{program} on the runtime's cgroup {parent}:\n{on_parent}"
        );
    }
    drop(sensor);
    // The opt-in puts its programs there: the listing would show a regression.
    // (With --net-host, the host's traffic is counted too: the traffic programs sit on the root.)
    let sensor = Sensor::start_with("syscall_hooks", &["--hooks", "syscall", "--net-host"]);
    let root = cgroup_programs(&cgroup2_mount());
    for program in TRAFFIC_PROGRAMS {
        assert!(
            root.contains(program),
            "{program} on the cgroup2 root with --net-host:\n{root}"
        );
    }
    let attached = tracepoints_of(sensor.pid());
    for call in ["sys_enter_ptrace", "sys_exit_bpf", "sys_enter_mount"] {
        assert!(
            attached.iter().any(|t| names(t, call)),
            "{call} with --hooks syscall: {attached:?}"
        );
    }
}

#[test]
fn stopping_the_sensor_detaches_everything() {
    let _one = ONE_SENSOR.lock().unwrap_or_else(|e| e.into_inner());
    let qdiscs_before = clsact_interfaces();
    let before = programs();
    let sensor = Sensor::start("cleanup");
    // No other sensor of the suite runs now, so every new program is this sensor's.
    let running: Vec<u64> = programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    // The default set is 19 programs, 18 on a kernel without io_uring (`sensor check`).
    assert!(
        running.len() >= 18,
        "the sensor's programs are loaded while it runs: {running:?}"
    );
    let status = sensor.stop();
    assert!(
        status.success(),
        "sensor exit status after SIGINT: {status}"
    );
    // Programs are freed after an RCU grace period: poll briefly.
    let left = || -> Vec<u64> {
        let after = programs();
        running
            .iter()
            .copied()
            .filter(|id| after.contains(id))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = left();
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
    // Nothing of ours stays attached to the cgroup2 root either. The kernel releases cgroup links
    // asynchronously after the process exits, so allow it a moment.
    let attached = || {
        let out = Command::new("bpftool")
            .args(["cgroup", "show", &cgroup2_mount()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let ours = |text: &str| CGROUP_PROGRAMS.iter().any(|p| text.contains(p));
    while ours(&attached()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = attached();
    assert!(
        !ours(&text),
        "cgroup programs left attached 5 s after exit:\n{text}"
    );
    // Kernels without TCX (before 6.6) need a clsact qdisc for the TC programs; the sensor
    // removes the ones it added (with TCX it adds none).
    let added: Vec<String> = clsact_interfaces()
        .into_iter()
        .filter(|i| !qdiscs_before.contains(i))
        .collect();
    assert!(
        added.is_empty(),
        "clsact qdiscs left by the sensor on {added:?}"
    );
}
