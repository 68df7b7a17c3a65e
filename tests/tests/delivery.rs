//! Delivery on a real sensor: the gRPC API through the generated stubs (Unix socket, TCP with
//! mutual TLS), Prometheus (the Debian server) scraping the metrics endpoint, and restarts after
//! `kill -9`.
//!
//! The alert-path tests at the end need real alerts, which need the detection engine (issue 4);
//! until it exists they are ignored, never fed with made-up alerts. (The delivery layer's own
//! in-process tests, in `sensor-user/src/deliver/tests.rs`, cover resume, overflow, eviction and
//! the OTLP outage with synthetic alerts.)

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use sensor_proto::{
    self as pb, Event, sensor_client::SensorClient, watch_alerts_response, watch_events_response,
};
use sensor_tests::{
    Sensor, Subject, docker_run_rm, free_port, http_get, image, marker, pki::Pki, scratch_dir,
    sensor_bin, watch::Watch,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// `docker run --rm` on a blocking thread, so the async test keeps reading its stream.
async fn run_container(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_run_rm(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_receives_filtered_events_of_a_real_container() {
    let sensor = Sensor::start("delivery_watch_events");
    let mut client = sensor.client().await;
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            filter: Some(pb::EventFilter {
                kinds: vec!["exec".into(), "container_started".into()],
                containers_only: true,
                ..Default::default()
            }),
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let m = marker("grpc-events");
    let container = tokio::spawn(run_container(vec![
        image(),
        "sh".into(),
        "-c".into(),
        format!("id; : {m}"),
    ]));

    let mut events: Vec<Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let is_marked_sh = |e: &Event| {
        e.kind == "exec"
            && e.process
                .as_ref()
                .is_some_and(|p| p.args.iter().any(|a| a.contains(&m)))
    };
    while !events.iter().any(is_marked_sh) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("no exec of the container's sh on the stream within 30 s: {events:#?}")
            })
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        match msg.item {
            Some(watch_events_response::Item::Event(e)) => events.push(e),
            Some(watch_events_response::Item::Missed(missed)) => {
                panic!("an idle subscriber missed events: {missed:?}")
            }
            None => {}
        }
    }
    let cid = container.await.unwrap();
    let sh = events.iter().find(|e| is_marked_sh(e)).unwrap();
    let c = sh.container.as_ref().unwrap();
    assert_eq!(c.id, cid, "the stream carries the full container id");
    assert_eq!(c.runtime, "docker");
    assert_eq!(
        sh.process.as_ref().unwrap().args,
        ["sh", "-c", &format!("id; : {m}")]
    );
    // The filter ran in the server: nothing else came down the stream.
    for e in &events {
        assert!(
            ["exec", "container_started"].contains(&e.kind.as_str()) && e.container.is_some(),
            "the server let through {e:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e.kind == "container_started" && e.container.as_ref().unwrap().id == cid),
        "container_started for {cid}: {events:#?}"
    );

    let health = client
        .get_health(pb::GetHealthRequest {})
        .await
        .expect("GetHealth")
        .into_inner();
    assert_eq!(health.health.as_ref().unwrap().kind, "health");
    let subs = health.delivery.unwrap().subscribers;
    assert!(subs.iter().any(|s| s.stream == "events"), "{subs:?}");
    let rules = client
        .list_rules(pb::ListRulesRequest {})
        .await
        .expect("ListRules")
        .into_inner();
    assert!(
        !rules.note.is_empty() || !rules.rules.is_empty(),
        "ListRules says why it is empty: {rules:?}"
    );
}

#[test]
fn sensor_watch_prints_events_as_json_lines_and_compact_lines() {
    let sensor = Sensor::start("delivery_watch_cli");
    let json = Watch::start(&sensor, &["--events", "--kind", "exec", "-o", "json"]);
    let compact = Watch::start(&sensor, &["--events", "--kind", "exec"]);
    // Both streams are open before the container runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while unix_health_subscribers(&sensor) < 2 {
        assert!(Instant::now() < deadline, "the watchers did not subscribe");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = marker("watch-cli");
    let cid = docker_run_rm(&[&image(), "sh", "-c", &format!(": {m}")]);
    let line = json.wait_for("JSON line of the container's sh", |l| {
        l.contains(&m) && l.contains(&cid)
    });
    let v: pb::WatchEventsResponse = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("a WatchEventsResponse JSON line ({e}): {line}"));
    let Some(watch_events_response::Item::Event(e)) = &v.item else {
        panic!("an event: {v:?}");
    };
    assert_eq!(e.kind, "exec", "{v:?}");
    assert_eq!(e.cid(), cid, "{v:?}");
    let line = compact.wait_for("compact line of the container's sh", |l| {
        l.contains(&m) && l.contains(&cid[..12])
    });
    assert!(
        line.contains(" exec ") && line.contains(&cid[..12]) && line.contains("sh -c"),
        "{line}"
    );
}

/// Open `WatchEvents` streams of `sensor`, from its own `GetHealth`.
fn unix_health_subscribers(sensor: &Sensor) -> usize {
    let health = sensor.grpc_health();
    let subscribers = health.delivery.unwrap().subscribers;
    subscribers.iter().filter(|s| s.stream == "events").count()
}

#[test]
fn the_unix_socket_is_root_only_and_other_users_are_refused() {
    let sensor = Sensor::start("delivery_socket_mode");
    let meta = std::fs::metadata(sensor.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0, "socket owner");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(sensor_bin())
        .args(["watch", "--events", "--addr"])
        .arg(format!("unix://{}", sensor.socket().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody could watch: {stderr}");
    assert!(
        stderr.contains("connecting to the sensor's socket") && stderr.contains("ermission denied"),
        "{stderr}"
    );
}

async fn tls_health(port: u16, ca: &str, identity: Option<(&str, &str)>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| format!("tls config: {e}"))?
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    SensorClient::new(channel)
        .get_health(pb::GetHealthRequest {})
        .await
        .map(|_| ())
        .map_err(|e| format!("GetHealth: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_a_client_certificate_from_the_configured_ca() {
    let dir = scratch_dir("mtls");
    let pki = Pki::make(&dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let path = |n: &str| dir.join(n).display().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let sensor = Sensor::start_with(
        "delivery_mtls",
        &[
            "--grpc-tcp",
            &addr,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );

    tls_health(port, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap_or_else(|e| panic!("a client with a certificate is served: {e}"));
    let refused = tls_health(port, &pki.ca, None).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    // A certificate from another CA is no better than none.
    let other = scratch_dir("mtls-other");
    let stranger = Pki::make(&other);
    let refused = tls_health(
        port,
        &pki.ca,
        Some((&stranger.client_cert, &stranger.client_key)),
    );
    assert!(refused.await.is_err(), "a client of another CA was served");

    // Plain gRPC over TCP is not spoken at all.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        SensorClient::new(channel)
            .get_health(pb::GetHealthRequest {})
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err(), "a plaintext client was served");

    // `sensor watch` over mutual TLS: health events arrive (the harness asks for one a second).
    std::fs::write(dir.join("client.pem"), &pki.client_cert).unwrap();
    std::fs::write(dir.join("client.key"), &pki.client_key).unwrap();
    let (client_cert, client_key) = (path("client.pem"), path("client.key"));
    let out = Command::new("timeout")
        .arg("4")
        .arg(sensor_bin())
        .args([
            "watch", "--events", "--kind", "health", "-o", "json", "--addr",
        ])
        .arg(format!("https://{addr}"))
        .args([
            "--tls-ca",
            &ca,
            "--tls-cert",
            &client_cert,
            "--tls-key",
            &client_key,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"kind\":\"health\""),
        "sensor watch over mTLS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Python example client (grpcio) over mutual TLS.
    let out = sensor_tests::python::example_client()
        .args(["--addr", &format!("localhost:{port}"), "--ca", &ca])
        .args(["--cert", &client_cert, "--key", &client_key, "health"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"rings\""),
        "the Python client over mTLS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sensor);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other);
}

/// A Prometheus server (the Debian package) scraping `target` every second.
struct Prometheus {
    child: Child,
    web: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: sensor\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let web = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (Debian package `prometheus`; `cargo xtask setup` installs it)");
        Prometheus { child, web }
    }

    /// The result vector of an instant query, once it is non-empty (or after 60 s).
    fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = http_get(&self.web, &format!("/api/v1/query?query={query}")) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
                if !result.is_empty() {
                    return result;
                }
            }
            if Instant::now() > deadline {
                return Vec::new();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_events_and_drop_counters() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let sensor = Sensor::start_with("delivery_metrics", &["--metrics-addr", &metrics]);
    let (status, text) = http_get(&metrics, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("sensor_events_dropped_total{ring=\"process\",reason=\"ring_full\"}"),
        "{text}"
    );
    // Prometheus's own linter finds nothing to say about the exposition.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    {
        use std::io::Write;
        lint.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let dir = scratch_dir("prometheus");
    let prom = Prometheus::start(&dir, &metrics);
    let up = prom.query("up");
    assert_eq!(
        up.first().map(|s| s["value"][1].clone()),
        Some("1".into()),
        "target up: {up:?}; prometheus log: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    let drops = prom.query("sensor_events_dropped_total");
    let labels: Vec<(String, String)> = drops
        .iter()
        .map(|s| {
            (
                s["metric"]["ring"].as_str().unwrap_or("").to_string(),
                s["metric"]["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        labels.contains(&("process".into(), "ring_full".into())),
        "{drops:?}"
    );
    assert!(
        labels.iter().any(|(_, reason)| reason == "undecodable"),
        "{drops:?}"
    );
    assert!(
        labels.iter().any(|(_, reason)| reason == "rate_limited"),
        "{drops:?}"
    );
    for series in [
        "sensor_events_total",
        "sensor_spool_evicted_total",
        "sensor_subscriber_missed_all_total",
        "sensor_event_to_alert_seconds_count",
    ] {
        assert!(!prom.query(series).is_empty(), "no {series} scraped");
    }
    drop(prom);
    drop(sensor);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_killed_with_sigkill_restarts_on_its_socket_and_spool() {
    let dir = scratch_dir("kill9");
    let socket = dir.join("sensor.sock").display().to_string();
    let spool = dir.join("spool").display().to_string();
    let args = [
        "--grpc-socket",
        socket.as_str(),
        "--spool-dir",
        spool.as_str(),
    ];
    let first = Sensor::start_with("delivery_kill9_first", &args);
    first.kill_9();
    assert!(
        Path::new(&socket).exists(),
        "the killed agent left its socket behind"
    );

    let second = Sensor::start_with("delivery_kill9_second", &args);
    let health = second
        .client()
        .await
        .get_health(pb::GetHealthRequest {})
        .await
        .expect("GetHealth on the restarted sensor")
        .into_inner();
    let spool_health = health.delivery.unwrap().spool.unwrap();
    assert_eq!(spool_health.dir, spool);
    assert_eq!(spool_health.truncated_at_recovery, 0, "{spool_health:?}");
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

// ---- The alert path: needs real alerts from the detection engine (issue 4). ----

/// Runs a busybox netcat with `-e` in a container (the netcat/socat C2 rule of the catalog).
async fn provoke_alert() -> String {
    tokio::task::spawn_blocking(sensor_tests::netcat_exec_listener)
        .await
        .unwrap()
}

async fn next_alert(stream: &mut tonic::Streaming<pb::WatchAlertsResponse>) -> pb::Alert {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an alert within 30 s")
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        match msg.item {
            Some(watch_alerts_response::Item::Alert(a)) => return a,
            Some(watch_alerts_response::Item::Missed(m)) => panic!("missed alerts: {m:?}"),
            None => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_receives_alerts_with_the_detection_fields() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let sensor = Sensor::start_with("delivery_alerts", &["--metrics-addr", &metrics]);
    let mut stream = sensor
        .client()
        .await
        .watch_alerts(pb::WatchAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cid = provoke_alert().await;
    // Every sensor sees every container on the node: skip alerts about other tests' containers.
    let alert = loop {
        let a = next_alert(&mut stream).await;
        if a.container.as_ref().is_some_and(|c| c.id == cid) {
            break a;
        }
    };
    assert!(!alert.id.is_empty() && alert.seq > 0 && alert.time.is_some());
    assert!(!alert.rule_id.is_empty() && !alert.rule_name.is_empty());
    assert_ne!(alert.severity, pb::Severity::Unspecified as i32);
    assert!(!alert.techniques.is_empty(), "{alert:?}");
    // Named by the runtime: Docker's name and the image as it was run.
    let container = alert.container.as_ref().unwrap();
    assert!(!container.name.is_empty(), "{alert:?}");
    assert_eq!(container.image, image(), "{alert:?}");
    assert!(alert.process.as_ref().is_some_and(|p| p.pid > 0));
    assert!(
        !alert.events.is_empty() && !alert.response.is_empty(),
        "{alert:?}"
    );
    // Prometheus scrapes the alert counter and the latency histogram.
    let dir = scratch_dir("prometheus-alerts");
    let prom = Prometheus::start(&dir, &metrics);
    let by_rule = prom.query("sensor_alerts_total");
    assert!(
        by_rule
            .iter()
            .any(|s| s["metric"]["rule"] == alert.rule_id.as_str()),
        "{by_rule:?}"
    );
    assert!(!prom.query("sensor_event_to_alert_seconds_count").is_empty());
    drop(prom);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_since_seq_misses_and_reorders_nothing() {
    let sensor = Sensor::start("delivery_resume");
    let mut client = sensor.client().await;
    let mut stream = client
        .watch_alerts(pb::WatchAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    provoke_alert().await;
    let first = next_alert(&mut stream).await;
    drop(stream);
    for _ in 0..3 {
        provoke_alert().await;
    }
    let mut stream = client
        .watch_alerts(pb::WatchAlertsRequest {
            filter: None,
            since_seq: Some(first.seq),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seq = first.seq;
    for _ in 0..3 {
        let a = next_alert(&mut stream).await;
        assert_eq!(a.seq, seq + 1, "contiguous, in order");
        seq = a.seq;
    }
}

/// An OTLP/gRPC logs collector built from the official protobuf definitions, recording the
/// `sensor.alert.seq` of each log record in arrival order, and its `container.image.name`.
#[derive(Clone, Default)]
struct Collector {
    seqs: Arc<Mutex<Vec<i64>>>,
    images: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut seqs = self.seqs.lock().unwrap();
        for r in req
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            let attr = |key: &str| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.as_ref()?.value.clone())
            };
            if let Some(Value::IntValue(seq)) = attr("sensor.alert.seq") {
                seqs.push(seq);
            }
            if let Some(Value::StringValue(image)) = attr("container.image.name") {
                self.images.lock().unwrap().push(image);
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn start_collector(port: u16) -> (Collector, tokio::task::JoinHandle<()>) {
    let collector = Collector::default();
    let server = tonic::transport::Server::builder()
        .add_service(LogsServiceServer::new(collector.clone()))
        .serve(format!("127.0.0.1:{port}").parse().unwrap());
    let task = tokio::spawn(async move {
        server.await.expect("the test collector serves");
    });
    (collector, task)
}

async fn wait_for_seqs(collector: &Collector, n: usize, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    while collector.seqs.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    collector.seqs.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_collector_down_for_30_s_gets_every_alert_in_order() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let sensor = Sensor::start_with("delivery_otlp", &["--otlp-endpoint", &endpoint]);
    let outage = Instant::now();
    let mut provoked = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        provoke_alert().await;
        provoked += 1;
    }
    let (collector, server) = start_collector(port);
    let seqs = wait_for_seqs(&collector, provoked, Duration::from_secs(90)).await;
    assert!(
        seqs.len() >= provoked,
        "{} of {provoked} alerts arrived",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {seqs:?}"
    );
    // The records name the image (container.image.name), as the runtime reported it.
    let images = collector.images.lock().unwrap().clone();
    assert!(images.contains(&image()), "{images:?}");
    server.abort();
    drop(sensor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_spooled_before_a_kill_9_are_delivered_after_the_restart() {
    let dir = scratch_dir("kill9-alerts");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let spool = dir.join("spool").display().to_string();
    let socket = dir.join("sensor.sock").display().to_string();
    let args = [
        "--otlp-endpoint",
        endpoint.as_str(),
        "--spool-dir",
        spool.as_str(),
        "--grpc-socket",
        socket.as_str(),
    ];
    let first = Sensor::start_with("delivery_kill9_alerts_first", &args);
    let mut stream = first
        .client()
        .await
        .watch_alerts(pb::WatchAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        provoke_alert().await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = next_alert(&mut stream).await.seq;
    }
    drop(stream);
    first.kill_9();

    let _second = Sensor::start_with("delivery_kill9_alerts_second", &args);
    let (collector, server) = start_collector(port);
    let seqs = wait_for_seqs(&collector, 3, Duration::from_secs(60)).await;
    assert!(
        seqs.contains(&(last as i64)) && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "alerts up to {last} delivered after the restart, in order: {seqs:?}"
    );
    server.abort();
}
