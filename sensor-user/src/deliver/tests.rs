//! The delivery layer end to end in one process: a real tonic server on a Unix socket, the
//! generated client, a real spool on disk, and an in-process OTLP collector built from the
//! official protobuf definitions. Alerts here are made up by the test: these tests prove
//! delivery (ordering, resume, retry), not detection.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use sensor_proto::{
    self as pb, Alert, Severity, sensor_client::SensorClient, watch_alerts_response::Item,
};
use tonic::{Request, Response, Status, transport::Channel};

use super::{
    Delivery, DeliveryConfig,
    spool::{FsyncPolicy, SpoolConfig},
};

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-deliver-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &std::path::Path) -> DeliveryConfig {
    let mut cfg = DeliveryConfig::new("test-node");
    cfg.grpc_socket = dir.join("sensor.sock");
    cfg.spool = SpoolConfig {
        dir: dir.join("spool"),
        max_bytes: 1 << 20,
        fsync: FsyncPolicy::Never,
    };
    cfg
}

fn alert(rule: &str) -> Alert {
    Alert {
        rule_id: rule.into(),
        rule_name: format!("rule {rule}"),
        severity: Severity::High as i32,
        ..Default::default()
    }
}

async fn client(cfg: &DeliveryConfig) -> SensorClient<Channel> {
    SensorClient::new(sensor_proto::connect_unix(&cfg.grpc_socket).await.unwrap())
}

/// Takes `n` items from an alert stream: alerts as `Ok(seq)`, notices as `Err(reason)`.
async fn take(
    stream: &mut tonic::Streaming<pb::WatchAlertsResponse>,
    n: usize,
) -> Vec<Result<u64, String>> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an item within 10 s")
            .unwrap()
            .expect("the stream stays open");
        out.push(match msg.item.unwrap() {
            Item::Alert(a) => Ok(a.seq),
            Item::Missed(m) => Err(format!("{} {}..{}", m.reason, m.first_seq, m.last_seq)),
        });
    }
    out
}

fn oks(range: std::ops::RangeInclusive<u64>) -> Vec<Result<u64, String>> {
    range.map(Ok).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_since_seq_then_live_without_gap_or_duplicate() {
    let dir = tmpdir("resume");
    let cfg = config(&dir);
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    for _ in 0..5 {
        delivery.publish_alert(alert("a")).unwrap();
    }
    let mut c = client(&cfg).await;
    let mut stream = c
        .watch_alerts(pb::WatchAlertsRequest {
            filter: None,
            since_seq: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    // Live alerts race the replay: the seam must still be exact.
    for _ in 0..5 {
        delivery.publish_alert(alert("a")).unwrap();
    }
    assert_eq!(take(&mut stream, 8).await, oks(3..=10));

    // Disconnect, more alerts, resume after the last one seen.
    drop(stream);
    for _ in 0..3 {
        delivery.publish_alert(alert("b")).unwrap();
    }
    let mut stream = c
        .watch_alerts(pb::WatchAlertsRequest {
            filter: Some(pb::AlertFilter {
                rule_ids: vec!["b".into()],
                ..Default::default()
            }),
            since_seq: Some(10),
        })
        .await
        .unwrap()
        .into_inner();
    delivery.publish_alert(alert("a")).unwrap();
    delivery.publish_alert(alert("b")).unwrap();
    assert_eq!(
        take(&mut stream, 4).await,
        vec![Ok(11), Ok(12), Ok(13), Ok(15)]
    );
    delivery.shutdown().await;
    assert!(
        !cfg.grpc_socket.exists(),
        "the socket is removed at shutdown"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_watch_resumes_across_a_sensor_restart_without_loss_or_repeat() {
    use super::watch::{Output, WatchOptions, follow_alerts};
    let dir = tmpdir("follow");
    let cfg = config(&dir);
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    delivery.publish_alert(alert("before")).unwrap();
    let opts = WatchOptions {
        addr: format!("unix://{}", cfg.grpc_socket.display()),
        rules: vec![],
        min_severity: None,
        containers: vec![],
        kinds: vec![],
        events: false,
        since: None,
        output: Output::Json,
        tls: None,
    };
    let lines: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = lines.clone();
    let c = client(&cfg).await;
    let watcher = tokio::spawn(async move {
        let mut out = move |line: &str| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = v["alert"]["seq"].as_str().unwrap().parse().unwrap();
            sink.lock().unwrap().push(seq);
            Ok(())
        };
        follow_alerts(c, &opts, &mut out).await
    });
    let wait_for = |n: usize| {
        let lines = lines.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while lines.lock().unwrap().len() < n {
                assert!(tokio::time::Instant::now() < deadline, "{:?}", lines);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Live only: the alert from before the watch is not shown.
    while !delivery.shared.alerts.has_subscribers() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    delivery.publish_alert(alert("a")).unwrap();
    delivery.publish_alert(alert("a")).unwrap();
    wait_for(2).await;
    delivery.shutdown().await;
    drop(delivery);
    // While the sensor is away, a new one on the same spool raises more alerts.
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    for _ in 0..3 {
        delivery.publish_alert(alert("b")).unwrap();
    }
    wait_for(5).await;
    delivery.publish_alert(alert("c")).unwrap();
    wait_for(6).await;
    assert_eq!(*lines.lock().unwrap(), (2..=7).collect::<Vec<u64>>());
    watcher.abort();
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_alert_subscriber_is_refilled_from_the_spool() {
    let dir = tmpdir("overflow");
    let mut cfg = config(&dir);
    cfg.subscriber_queue = 2;
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    let mut c = client(&cfg).await;
    let mut stream = c
        .watch_alerts(pb::WatchAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Far more than queue + stream buffers hold, without reading.
    for _ in 0..2000 {
        delivery.publish_alert(alert("a")).unwrap();
    }
    assert_eq!(take(&mut stream, 2000).await, oks(1..=2000));
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_alerts_are_reported_as_missed_and_restart_keeps_the_spool() {
    let dir = tmpdir("evict");
    let mut cfg = config(&dir);
    cfg.spool.max_bytes = 32 << 10;
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    for _ in 0..600 {
        let mut a = alert("big");
        a.summary = "x".repeat(200);
        delivery.publish_alert(a).unwrap();
    }
    delivery.shutdown().await;
    drop(delivery);

    // A new agent on the same spool: numbering goes on, old alerts can be replayed.
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    assert_eq!(delivery.publish_alert(alert("next")).unwrap(), 601);
    let mut c = client(&cfg).await;
    let health = c
        .get_health(pb::GetHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    let spool = health.delivery.unwrap().spool.unwrap();
    let first = spool.first_seq;
    assert!(first > 1 && spool.last_seq == 601, "{spool:?}");
    let mut stream = c
        .watch_alerts(pb::WatchAlertsRequest {
            filter: None,
            since_seq: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    let got = take(&mut stream, (601 - first + 2) as usize).await;
    assert_eq!(got[0], Err(format!("evicted 1..{}", first - 1)));
    assert_eq!(got[1..], oks(first..=601)[..]);
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rules_says_no_rules_are_loaded_and_bad_filters_are_refused() {
    let dir = tmpdir("rules");
    let cfg = config(&dir);
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    let mut c = client(&cfg).await;
    let rules = c
        .list_rules(pb::ListRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(rules.rules.is_empty());
    assert!(
        rules.note.contains("no rule set has been loaded"),
        "{}",
        rules.note
    );
    let err = c
        .watch_events(pb::WatchEventsRequest {
            filter: Some(pb::EventFilter {
                kinds: vec!["nope".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown event kind"), "{err}");
    // A second agent cannot take over a live socket.
    let mut other = config(&dir);
    other.spool.dir = dir.join("spool2");
    let err = Delivery::start(other).await.err().unwrap();
    assert!(format!("{err:#}").contains("serves on"), "{err:#}");
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_event_subscriber_is_told_how_many_it_missed_and_the_producer_never_waits() {
    use sensor_proto::{Event, event::Body, watch_events_response::Item as EventItem};
    let dir = tmpdir("stuck");
    let mut cfg = config(&dir);
    cfg.subscriber_queue = 16;
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    let mut c = client(&cfg).await;
    let mut stream = c
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // 10 MB of events while the client reads nothing: far beyond the HTTP/2 window and every
    // buffer, so the subscriber's queue overflows.
    const N: u64 = 10_000;
    let started = std::time::Instant::now();
    for seq in 1..=N {
        let event = Event {
            seq,
            process: Some(pb::Process {
                args: vec!["x".repeat(1000)],
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_body(Body::Exec(Default::default()));
        delivery.publish_event(&event);
    }
    let publish_time = started.elapsed();
    assert!(
        publish_time < Duration::from_secs(5),
        "publishing waited on the subscriber: {publish_time:?}"
    );
    let (mut received, mut missed, mut notices, mut last) = (0u64, 0u64, 0, 0u64);
    while received + missed < N {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream goes on")
            .unwrap()
            .unwrap();
        match msg.item.unwrap() {
            EventItem::Event(e) => {
                assert!(e.seq > last, "in order");
                last = e.seq;
                received += 1;
            }
            EventItem::Missed(m) => {
                assert_eq!(m.first_seq, last + 1, "the notice sits where the gap is");
                assert_eq!(m.count, m.last_seq - m.first_seq + 1);
                assert_eq!(m.reason, "queue_full");
                last = m.last_seq;
                missed += m.count;
                notices += 1;
            }
        }
    }
    assert!(notices > 0 && missed > 0, "the queue never overflowed");
    assert_eq!(last, N);
    let health = c
        .get_health(pb::GetHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    let sub = &health.delivery.unwrap().subscribers[0];
    assert_eq!((sub.stream.as_str(), sub.missed), ("events", missed));
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_drops_alerts_and_latency() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tmpdir("metrics");
    let mut cfg = config(&dir);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cfg.metrics_addr = Some(addr);
    let mut delivery = Delivery::start(cfg).await.unwrap();
    let health = pb::Health {
        rings: vec![pb::RingHealth {
            ring: "process".into(),
            dropped: 7,
            dropped_ring_full: 5,
            dropped_rate_limited: 2,
            received: 100,
        }],
        decode_errors: 1,
        ..Default::default()
    };
    let event = pb::Event::default().with_body(pb::event::Body::Health(health));
    delivery.publish_event(&event);
    delivery.update_health(event);
    let mut a = alert("reverse-shell");
    a.events = vec![pb::Event {
        time: Some(super::timestamp(
            std::time::SystemTime::now() - Duration::from_millis(30),
        )),
        ..Default::default()
    }];
    delivery.publish_alert(a).unwrap();

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "sensor_events_total{kind=\"health\"} 1",
        "sensor_events_dropped_total{ring=\"process\",reason=\"ring_full\"} 5",
        "sensor_events_dropped_total{ring=\"process\",reason=\"rate_limited\"} 2",
        "sensor_events_dropped_total{ring=\"all\",reason=\"undecodable\"} 1",
        "sensor_alerts_total{rule=\"reverse-shell\",severity=\"high\"} 1",
        "sensor_event_to_alert_seconds_bucket{rule=\"reverse-shell\",le=\"0.025\"} 0",
        "sensor_event_to_alert_seconds_bucket{rule=\"reverse-shell\",le=\"+Inf\"} 1",
        "sensor_spool_records 1",
        "sensor_spool_evicted_total 0",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    delivery.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// An OTLP logs collector that records the `sensor.alert.seq` of what it receives.
#[derive(Clone, Default)]
struct Collector {
    seqs: Arc<Mutex<Vec<i64>>>,
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut seqs = self.seqs.lock().unwrap();
        for rl in &req.get_ref().resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    let seq = r
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "sensor.alert.seq")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::IntValue(i) => Some(*i),
                            _ => None,
                        })
                        .expect("sensor.alert.seq attribute");
                    seqs.push(seq);
                }
            }
        }
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_waits_out_a_collector_outage_in_order() {
    let dir = tmpdir("otlp");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(&dir);
    cfg.otlp_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    for _ in 0..10 {
        delivery.publish_alert(alert("a")).unwrap();
    }
    // The collector is down: the exporter fails and keeps everything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let otlp = delivery.shared.otlp_health().unwrap();
    assert!(otlp.failures > 0 && otlp.pending == 10, "{otlp:?}");
    for _ in 0..5 {
        delivery.publish_alert(alert("a")).unwrap();
    }
    let collector = Collector::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(collector.clone()))
            .serve(format!("127.0.0.1:{port}").parse().unwrap()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while collector.seqs.lock().unwrap().len() < 15 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "export did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *collector.seqs.lock().unwrap(),
        (1..=15).collect::<Vec<i64>>()
    );
    let otlp = delivery.shared.otlp_health().unwrap();
    assert_eq!((otlp.acked_seq, otlp.pending), (15, 0), "{otlp:?}");
    delivery.shutdown().await;
    drop(delivery);

    // Restarted: nothing is sent again, new alerts continue the order.
    let mut delivery = Delivery::start(cfg.clone()).await.unwrap();
    delivery.publish_alert(alert("a")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while collector.seqs.lock().unwrap().len() < 16 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "export after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *collector.seqs.lock().unwrap(),
        (1..=16).collect::<Vec<i64>>()
    );
    delivery.shutdown().await;
    server.abort();
    std::fs::remove_dir_all(dir).unwrap();
}
