//! Runtimes besides Docker, for real: Kubernetes pods made through the CRI of a private
//! containerd as kubelet makes them (kubelet's cgroupfs layout, its labels, a CNI network), and
//! podman containers named by podman's Docker-compatible API. Events and alerts must carry the
//! pod (name, namespace, uid, labels), the container's name in it and the runtime; rules and
//! exceptions use them. Traffic: none leaves the pods and containers the tests make.

use std::time::{Duration, Instant};

use sensor_tests::{
    Sensor, Subject, cri::Containerd, ev, pb, podman::Podman, shipped_rule_with_exceptions,
};

const SETTLE: Duration = Duration::from_secs(3);
const BACKDOOR: [&str; 6] = ["nc", "-l", "-p", "8080", "-e", "/bin/sh"];

/// CRS-008 as shipped, allow-listing the pods of Kubernetes namespace `namespace`.
fn netcat_rule_allowing_namespace(namespace: &str) -> String {
    shipped_rule_with_exceptions(
        "008-netcat-c2.yaml",
        &format!(
            "\x20 - name: ci-namespace\n\
             \x20   reason: the CI namespace's integration tests run netcat\n\
             \x20   k8s_namespaces: [\"{namespace}\"]\n"
        ),
    )
}

/// The agent's health line about the runtime APIs (GetHealth has it from the first health
/// report on, which is published a moment after its JSON line: wait up to 10 s).
fn runtime_status(sensor: &Sensor) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sensor.grpc_health().health.and_then(|e| e.body) {
            Some(sensor_proto::event::Body::Health(h)) => return h.runtime_api,
            other => assert!(
                Instant::now() < deadline,
                "GetHealth without a health report: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every event of container `cid` of kind `kind`.
fn events_of(sensor: &Sensor, cid: &str, kind: &str) -> Vec<pb::Event> {
    sensor
        .events()
        .into_iter()
        .filter(|e| e.kind == kind && e.cid() == cid)
        .collect()
}

#[test]
fn pods_are_named_on_events_and_alerts_and_a_namespace_exception_silences_only_its_pods() {
    let containerd = Containerd::start("cri");
    let rules = sensor_tests::scratch_dir("cri-rules");
    std::fs::write(
        rules.join("008-allow-ci.yaml"),
        netcat_rule_allowing_namespace("ci"),
    )
    .unwrap();
    let socket = containerd.socket().display().to_string();
    let sensor = Sensor::start_with(
        "cri",
        &["--cri-socket", &socket, "--rules", rules.to_str().unwrap()],
    );
    let status = runtime_status(&sensor);
    assert!(
        status.contains(&format!("cri {socket}: connected (containerd 1.")),
        "{status}"
    );

    let prod = containerd.run_pod("prod", &[("app", "web")], false);
    let cid = prod.run("backdoor", &BACKDOOR);
    let a = sensor.expect_alert("CRS-008", &cid);
    let c = a.container();
    let pod = a.pod();
    assert_eq!(c.id, cid, "{a:?}");
    assert_eq!(c.runtime, "containerd", "{a:?}");
    assert_eq!(c.name, "backdoor", "{a:?}");
    assert_eq!(pod.name, prod.name, "{a:?}");
    assert_eq!(pod.namespace, "prod", "{a:?}");
    assert_eq!(pod.uid, prod.uid, "{a:?}");
    assert_eq!(
        pod.labels.get("app").map(String::as_str),
        Some("web"),
        "{a:?}"
    );
    assert_eq!(c.pod_uid, prod.uid, "{a:?}");
    assert_eq!(c.network_mode, "pod", "{a:?}");
    assert!(
        c.cgroup_path
            .contains(&format!("/kubepods/besteffort/pod{}/{cid}", prod.uid)),
        "kubelet's cgroupfs layout: {a:?}"
    );
    // Every event of the container carries the pod and its name in it, from its start on:
    // CRI answers a few milliseconds after the container's first process runs, so the agent
    // holds a new container's events until the answer.
    let execs = events_of(&sensor, &cid, "exec");
    assert!(execs.iter().any(|e| ev::is_exec_of(e, "nc")), "{execs:?}");
    let unnamed: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.cid() == cid)
        .filter(|e| e.container().name != "backdoor" || e.pod().namespace != "prod")
        .collect();
    assert!(unnamed.is_empty(), "events without the pod: {unnamed:?}");

    // The same backdoor in the allow-listed namespace: seen, named, and quiet.
    let ci = containerd.run_pod("ci", &[("app", "tests")], false);
    let allowed = ci.run("backdoor", &BACKDOOR);
    sensor.expect("an exec in the ci pod carrying its namespace", |e| {
        e.kind == "exec" && e.cid() == allowed && e.pod().namespace == "ci"
    });
    drop(ci);
    sensor.assert_no_alert("CRS-008", &allowed, SETTLE);

    // A hostNetwork pod: the kernel sees the host's network namespace (CRS-001) and the alert
    // names the pod and its mode.
    let node_agent = containerd.run_pod("kube-system", &[("app", "agent")], true);
    let host = node_agent.run("agent", &["sh", "-c", "sleep 1; exec sleep 30"]);
    let a = sensor.expect_alert("CRS-001", &host);
    assert_eq!(a.pod().namespace, "kube-system", "{a:?}");
    assert_eq!(a.container().network_mode, "host", "{a:?}");
    drop(node_agent);
    drop(prod);
    sensor.expect("the prod container's exit", |e| {
        e.kind == "container_exited" && e.cid() == cid
    });
    let _ = std::fs::remove_dir_all(&rules);
}

#[test]
fn podman_containers_are_named_by_podman_s_api() {
    let podman = Podman::start("podman");
    let socket = podman.socket().display().to_string();
    let sensor = Sensor::start_with("podman", &["--podman-socket", &socket]);
    let status = runtime_status(&sensor);
    assert!(
        status.contains(&format!("podman {socket}: connected (Podman 4.")),
        "{status}"
    );
    let name = sensor_tests::marker("web");
    let cid = podman.run_detached(&["--name", &name, "--label", "team=red"], &BACKDOOR);
    let a = sensor.expect_alert("CRS-008", &cid);
    let c = a.container();
    assert_eq!(c.runtime, "podman", "{a:?}");
    assert_eq!(c.name, name, "{a:?}");
    assert_eq!(
        c.labels.get("team").map(String::as_str),
        Some("red"),
        "{a:?}"
    );
    assert!(c.cgroup_path.contains(&format!("libpod-{cid}")), "{a:?}");
    // Every event of the container is named, its start and the runtime's `runc init` included:
    // podman answers only once the start is over (and its file events backend is polled), so
    // the agent holds a new container's events until the answer.
    let unnamed: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.cid() == cid)
        .filter(|e| e.container().name != name)
        .collect();
    assert!(unnamed.is_empty(), "execs without the name: {unnamed:?}");
    // A look-alike that must stay quiet: an ordinary podman container serving on a port.
    let web = podman.run_detached(&[], &["httpd", "-f", "-p", "8081"]);
    sensor.expect("the listener's exec", |e| {
        e.kind == "exec" && e.cid() == web
    });
    podman.podman(&["rm", "-f", "-t", "0", &web, &cid]);
    sensor.assert_no_alert("CRS-008", &web, SETTLE);
}
