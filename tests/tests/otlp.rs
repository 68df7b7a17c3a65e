//! OTLP export against a collector that refuses: requests over 16 KiB are refused by its gRPC
//! server's own size limit (tonic's, as a collector configured with a small receive limit does),
//! and any request carrying a "poison" record is refused as invalid. The real agent, with a burst
//! of real alerts, splits what is too large, dead-letters the one alert refused on its own (kept
//! on disk, counted) and delivers every other alert, in order, without holding up the queue.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    common::v1::any_value::Value,
};
use sensor_tests::{Containers, Sensor, Subject, docker, free_port, image, pb, scratch_dir};

/// The collector's receive limit.
const MAX_REQUEST: usize = 16 << 10;
const POISON: &str = "poison-marker";

#[derive(Clone, Default)]
struct Refusing {
    /// Sequence numbers accepted, in arrival order.
    seqs: Arc<Mutex<Vec<i64>>>,
}

#[tonic::async_trait]
impl LogsService for Refusing {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        let records: Vec<_> = req
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .collect();
        let poisoned = records.iter().any(|r| {
            matches!(
                r.body.as_ref().and_then(|b| b.value.as_ref()),
                Some(Value::StringValue(body)) if body.contains(POISON)
            )
        });
        if poisoned {
            return Err(tonic::Status::invalid_argument(
                "a record carries the poison marker",
            ));
        }
        let mut seqs = self.seqs.lock().unwrap();
        for r in records {
            let seq = r.attributes.iter().find(|kv| kv.key == "sensor.alert.seq");
            if let Some(Value::IntValue(seq)) = seq.and_then(|kv| kv.value.as_ref()?.value.clone())
            {
                seqs.push(seq);
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// 40 netcat-with-exec runs (CRS-008 each), the 20th with the poison marker in its arguments
/// (and so in its alert's summary); it ends by itself.
const BURST: &str = "i=0; while [ $i -lt 40 ]; do \
                     if [ $i = 20 ]; then nc 127.0.0.1 9 -e /bin/true poison-marker; \
                     else nc 127.0.0.1 9 -e /bin/true; fi 2>/dev/null; i=$((i+1)); done; sleep 120";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_collector_gets_every_other_alert_and_the_refused_one_is_kept() {
    let port = free_port();
    let collector = Refusing::default();
    let server = tonic::transport::Server::builder()
        .add_service(
            LogsServiceServer::new(collector.clone()).max_decoding_message_size(MAX_REQUEST),
        )
        .serve(format!("127.0.0.1:{port}").parse().unwrap());
    let server = tokio::spawn(async move { server.await.expect("the test collector serves") });

    let dir = scratch_dir("otlp-refusing");
    let spool = dir.join("spool");
    let spool_arg = spool.display().to_string();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = [
        "--otlp-endpoint",
        endpoint.as_str(),
        "--spool-dir",
        spool_arg.as_str(),
        "--alert-cap",
        "0",
    ];
    let sensor = Sensor::start_with("otlp_refusing", &args);
    let cid = docker(&["run", "-d", &image(), "sh", "-c", BURST]);
    let _burst = Containers(vec![cid.clone()]);

    // Every alert of the burst is spooled; wait until the exporter has dealt with all of them.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (spooled, otlp) = loop {
        let delivery = tokio::task::block_in_place(|| sensor.grpc_health().delivery.unwrap());
        let spooled = delivery.spool.unwrap().last_seq;
        let otlp = delivery.otlp.unwrap();
        if spooled >= 40 && otlp.acked_seq == spooled {
            break (spooled, otlp);
        }
        assert!(
            Instant::now() < deadline,
            "the exporter is stuck: spooled {spooled}, {otlp:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(otlp.dead_lettered, 1, "{otlp:?}");
    // The first requests (40 alerts of a few KiB each) were over the limit: refused, then split.
    assert!(otlp.failures > 0, "{otlp:?}");
    assert_eq!(otlp.pending, 0, "{otlp:?}");

    // The dead letter holds the poisoned alert, whole, with the collector's answer.
    let text = std::fs::read_to_string(&otlp.dead_letter_path).expect("the dead letter file");
    /// A dead letter line: the alert (proto JSON) and the collector's answer.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DeadLetter {
        refused: String,
        alert: pb::Alert,
    }
    let lines: Vec<DeadLetter> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let refused = &lines[0];
    assert!(refused.alert.summary.contains(POISON), "{refused:?}");
    assert_eq!(refused.alert.cid(), cid.as_str());
    assert!(refused.refused.contains("poison marker"), "{refused:?}");
    let poisoned = i64::try_from(refused.alert.seq).unwrap();
    assert!(poisoned > 0, "the refused alert was spooled: {refused:?}");

    // Everything else arrived once, in order.
    let seqs = collector.seqs.lock().unwrap().clone();
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    let expected: BTreeSet<i64> = (1..=spooled as i64).filter(|s| *s != poisoned).collect();
    assert_eq!(unique, expected, "accepted: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    server.abort();
    drop(sensor);
    let _ = std::fs::remove_dir_all(dir);
}
