//! OTLP export to real collectors: `rotel-agent` (a Rust OpenTelemetry collector, from PyPI)
//! prints the log records it receives, and a collector served over TLS that asks for a client
//! certificate (mutual TLS, certificates the test makes). A real container raises the alerts.

use std::{
    io::Read,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use sensor_tests::{
    Containers, Sensor, free_port, netcat_exec_listener, pki::Pki, python::rotel_agent, scratch_dir,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Waits up to 60 s for `done` over the agent's OTLP health; returns the last health.
fn wait_otlp(
    sensor: &Sensor,
    done: impl Fn(&sensor_proto::OtlpHealth) -> bool,
) -> sensor_proto::OtlpHealth {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let otlp = sensor.grpc_health().delivery.unwrap().otlp.unwrap();
        if done(&otlp) || Instant::now() > deadline {
            return otlp;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn rotel_receives_the_alerts_of_a_real_container() {
    let port = free_port();
    let dir = scratch_dir("rotel");
    let log = dir.join("rotel.out");
    let mut rotel = Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--exporter", "blackhole", "--debug-log", "logs"])
        .args(["--debug-log-verbosity", "detailed"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting rotel-agent");
    let endpoint = format!("http://127.0.0.1:{port}");
    let sensor = Sensor::start_with("otlp_rotel", &["--otlp-endpoint", &endpoint]);
    let cid = netcat_exec_listener();
    let _c = Containers(vec![cid.clone()]);
    let alert = sensor.expect_alert("CRS-008", &cid);
    let seq = alert.seq;
    assert!(seq > 0, "spooled with a sequence number: {alert:?}");
    assert!(!alert.id.is_empty(), "alert without an id: {alert:?}");
    let otlp = wait_otlp(&sensor, |o| o.acked_seq >= seq);
    assert!(
        otlp.acked_seq >= seq,
        "rotel did not acknowledge seq {seq}: {otlp:?}"
    );
    // What rotel printed of the records: the alert's id and its full container id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut printed = String::new();
    while Instant::now() < deadline {
        printed.clear();
        let _ = std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut printed);
        if printed.contains(&alert.id) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = &alert.id;
    for attribute in [
        format!("sensor.alert.id: Str({id})"),
        format!("container.id: Str({cid})"),
        "sensor.rule.id: Str(CRS-008)".to_string(),
    ] {
        assert!(printed.contains(&attribute), "no {attribute} in: {printed}");
    }
    let _ = rotel.kill();
    let _ = rotel.wait();
    drop(sensor);
}

/// Counts the records it receives.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<u64>>);

#[tonic::async_trait]
impl LogsService for Counting {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let records = req
            .into_inner()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len() as u64)
            .sum::<u64>();
        *self.0.lock().unwrap() += records;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_collector_over_mutual_tls_and_a_wrong_ca_is_refused() {
    let dir = scratch_dir("otlp-tls");
    let pki = Pki::make(&dir);
    let file = |n: &str| dir.join(n).display().to_string();
    std::fs::write(dir.join("client.pem"), &pki.client_cert).unwrap();
    std::fs::write(dir.join("client.key"), &pki.client_key).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(dir.join("server.pem")).unwrap(),
            std::fs::read(dir.join("server.key")).unwrap(),
        ))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let port = free_port();
    let collector = Counting::default();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(LogsServiceServer::new(collector.clone()))
        .serve(format!("127.0.0.1:{port}").parse().unwrap());
    let server = tokio::spawn(server);
    let endpoint = format!("https://localhost:{port}");

    // A CA the collector's certificate does not chain to: nothing is delivered, and health
    // says why.
    let other = scratch_dir("otlp-tls-other");
    Pki::make(&other);
    let wrong_ca = other.join("ca.pem").display().to_string();
    let (cert, key) = (file("client.pem"), file("client.key"));
    let args = |ca: &str| {
        [
            "--otlp-endpoint",
            endpoint.as_str(),
            "--otlp-ca",
            ca,
            "--otlp-cert",
            &cert,
            "--otlp-key",
            &key,
        ]
        .map(String::from)
    };
    let strange = args(&wrong_ca);
    let strange: Vec<&str> = strange.iter().map(String::as_str).collect();
    let sensor = Sensor::start_with("otlp_tls_wrong_ca", &strange);
    let cid = tokio::task::spawn_blocking(netcat_exec_listener)
        .await
        .unwrap();
    let _c1 = Containers(vec![cid.clone()]);
    tokio::task::block_in_place(|| {
        sensor.expect_alert("CRS-008", &cid);
        let otlp = wait_otlp(&sensor, |o| o.failures > 0);
        assert!(otlp.failures > 0 && otlp.acked_seq == 0, "{otlp:?}");
        assert!(
            otlp.last_error.to_lowercase().contains("certificate"),
            "{otlp:?}"
        );
    });
    assert_eq!(*collector.0.lock().unwrap(), 0);
    drop(sensor);

    // The right CA, and a client certificate the collector asks for.
    let good = args(&file("ca.pem"));
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let sensor = Sensor::start_with("otlp_tls", &good);
    let cid = tokio::task::spawn_blocking(netcat_exec_listener)
        .await
        .unwrap();
    let _c2 = Containers(vec![cid.clone()]);
    tokio::task::block_in_place(|| {
        let alert = sensor.expect_alert("CRS-008", &cid);
        let seq = alert.seq;
        assert!(seq > 0, "spooled with a sequence number: {alert:?}");
        let otlp = wait_otlp(&sensor, |o| o.acked_seq >= seq);
        assert!(otlp.acked_seq >= seq, "{otlp:?}");
    });
    assert!(*collector.0.lock().unwrap() >= 1);
    drop(sensor);

    // TLS flags with a plaintext endpoint are refused at the start.
    let out = Command::new(sensor_tests::sensor_bin())
        .args([
            "run",
            "--otlp-endpoint",
            "http://127.0.0.1:1",
            "--otlp-ca",
            &file("ca.pem"),
        ])
        .args([
            "--spool-dir",
            &file("spool"),
            "--grpc-socket",
            &file("s.sock"),
        ])
        .args(["--state-dir", &file("state")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("are for an https:// collector"),
        "{said}"
    );
    server.abort();
}
