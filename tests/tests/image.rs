//! Deployment: the agent's image (`cargo xtask image`) run as `deploy/daemonset.yaml` says a
//! node should run it (host PID and network, its capabilities, seccomp and AppArmor, its mounts
//! and arguments, turned into the equivalent `docker run`), detects an attack in another
//! container from inside its own; and `deploy/sensor.service` passes `systemd-analyze verify`
//! with the same capabilities.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{
    Containers, Line, Subject, docker, marker, netcat_exec_listener, scratch_dir, sensor_bin,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// The DaemonSet's pod spec and its one container.
fn daemonset() -> (Value, Value) {
    let text = std::fs::read_to_string(deploy("daemonset.yaml")).unwrap();
    let ds = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in deploy/daemonset.yaml");
    let pod = ds["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = containers[0].clone();
    (pod, container)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The capabilities the DaemonSet adds.
fn manifest_capabilities(container: &Value) -> Vec<String> {
    strings(&container["securityContext"]["capabilities"]["add"])
}

/// `docker run` arguments equivalent to the pod spec; the state and socket directories go to
/// `scratch` instead of the host's.
fn docker_run_args(pod: &Value, container: &Value, scratch: &Path, name: &str) -> Vec<String> {
    let mut args: Vec<String> = ["run", "-d", "--name", name].map(String::from).to_vec();
    if pod["hostPID"] == true {
        args.extend(["--pid".into(), "host".into()]);
    }
    if pod["hostNetwork"] == true {
        args.extend(["--network".into(), "host".into()]);
    }
    let security = &container["securityContext"];
    assert_ne!(security["privileged"], true, "the agent is not privileged");
    if strings(&security["capabilities"]["drop"]) == ["ALL"] {
        args.extend(["--cap-drop".into(), "ALL".into()]);
    }
    let bpf_caps = docker_knows_bpf_caps();
    for cap in manifest_capabilities(container) {
        // Docker 20.10 does not know CAP_BPF and CAP_PERFMON (containerd 1.6 and Kubernetes
        // do); the kernel grants what they allow to CAP_SYS_ADMIN too (bpf_capable(),
        // perfmon_capable()), which the spec adds as well.
        if matches!(cap.as_str(), "BPF" | "PERFMON") && !bpf_caps {
            continue;
        }
        args.extend(["--cap-add".into(), cap]);
    }
    if security["seccompProfile"]["type"] == "Unconfined" {
        args.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
    }
    if security["appArmorProfile"]["type"] == "Unconfined" {
        args.extend(["--security-opt".into(), "apparmor=unconfined".into()]);
    }
    if security["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if security["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    let volumes = pod["volumes"].as_sequence().unwrap();
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("every mount has its volume");
        let host = volume["hostPath"]["path"]
            .as_str()
            .expect("hostPath volumes");
        let inside = mount["mountPath"].as_str().unwrap();
        let host = match host {
            "/var/lib/sensor" | "/run/sensor" => {
                let dir = scratch.join(host.trim_start_matches('/').replace('/', "-"));
                std::fs::create_dir_all(&dir).unwrap();
                dir.display().to_string()
            }
            other => other.to_string(),
        };
        let ro = if mount["readOnly"] == true { ":ro" } else { "" };
        args.extend(["-v".into(), format!("{host}:{inside}{ro}")]);
    }
    args.push(container["image"].as_str().unwrap().to_string());
    let node = "image-test-node";
    args.extend(
        strings(&container["args"])
            .into_iter()
            .map(|a| a.replace("$(NODE_NAME)", node)),
    );
    args
}

/// Whether this Docker accepts `--cap-add BPF` (Docker 23 and later).
fn docker_knows_bpf_caps() -> bool {
    Command::new("docker")
        .args([
            "run",
            "--rm",
            "--cap-add",
            "BPF",
            "--entrypoint",
            "/usr/local/bin/sensor",
        ])
        .args([&std::env::var("SENSOR_AGENT_IMAGE").unwrap(), "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn logs(name: &str) -> (String, String) {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_agent_image_run_as_the_daemonset_says_detects_an_attack_from_its_own_container() {
    let image = std::env::var("SENSOR_AGENT_IMAGE").unwrap_or_else(|_| {
        panic!("SENSOR_AGENT_IMAGE is not set: run the tests through `cargo xtask test`")
    });
    let (pod, container) = daemonset();
    assert_eq!(
        container["image"].as_str(),
        Some(image.as_str()),
        "the manifest's image"
    );
    let scratch = scratch_dir("agent-image");
    let name = marker("sensor-agent-image");
    let args = docker_run_args(&pod, &container, &scratch, &name);
    let agent = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let _agent = Containers(vec![agent.clone()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs(&name).1.contains("ready in") {
        let (_, stderr) = logs(&name);
        assert!(
            Instant::now() < deadline,
            "the agent in its container was not ready within 60 s: {stderr}\n`docker {}`",
            args.join(" ")
        );
        thread::sleep(Duration::from_millis(250));
    }

    let attack = netcat_exec_listener();
    let _attack = Containers(vec![attack.clone()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let (stdout, stderr) = logs(&name);
        let found = stdout
            .lines()
            .filter_map(|l| {
                let line = Line::parse(l).unwrap_or_else(|e| {
                    panic!("the agent's container wrote a line the schema does not decode: {e}")
                });
                match line {
                    Line::Alert(a) => Some(a),
                    Line::Event(_) => None,
                }
            })
            .find(|a| a.rule_id == "CRS-008" && a.cid() == attack);
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no CRS-008 for {attack} from the agent's container: {stderr}"
        );
        thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        alert.node, "image-test-node",
        "--node from the spec's NODE_NAME"
    );
    assert_eq!(alert.container().runtime, "docker");
    assert!(alert.process().args.iter().any(|x| x == "-e"), "{alert:?}");
}

#[test]
fn the_systemd_unit_verifies_and_grants_what_the_daemonset_grants() {
    let text = std::fs::read_to_string(deploy("sensor.service")).unwrap();
    // `verify` checks that ExecStart's binary exists: point it at the one under test.
    let unit = scratch_dir("systemd-unit").join("sensor.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/sensor", &sensor_bin().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let caps = |key: &str| -> Vec<String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"));
        let mut caps: Vec<String> = line
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_string())
            .collect();
        caps.sort();
        caps
    };
    let mut granted = manifest_capabilities(&daemonset().1);
    granted.sort();
    assert_eq!(caps("CapabilityBoundingSet="), granted);
    assert_eq!(caps("AmbientCapabilities="), granted);
}
