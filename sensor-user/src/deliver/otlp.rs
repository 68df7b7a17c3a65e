//! OTLP/gRPC logs export: pushes spooled alerts to an OpenTelemetry collector
//! (`--otlp-endpoint http://host:4317`, or `https://` with `--otlp-ca` and, for mutual TLS,
//! `--otlp-cert`/`--otlp-key`), so any OpenTelemetry pipeline can route them to a SIEM.
//!
//! The exporter reads the spool after its persisted cursor, in sequence order, a batch at a time
//! (at most 128 alerts and 1 MiB of records), and moves the cursor only when the collector has
//! answered OK. A failed export is retried with capped exponential backoff (0.5 s doubling to
//! 30 s), for ever, unless the collector refused the request for good (invalid, or too large:
//! [`refused_for_good`]): then the batch is split in halves and each sent on its own, down to
//! single alerts, and an alert refused alone goes to the dead letter ([`super::dead_letter`]),
//! kept on disk and counted. An alert leaves this queue only when acknowledged, dead-lettered,
//! or evicted by the spool's size bound (counted as `evicted_unexported`). After a restart it
//! resumes at the cursor, so delivery is at least once: a batch acknowledged by the collector
//! but not yet recorded can be sent again (the `alert.id` attribute lets the receiver drop the
//! copy).
//!
//! Mapping: one log record per alert. `time_unix_nano` is the alert's time, the body is its
//! one-line summary, `event_name` is `sensor.alert`, severity per the OpenTelemetry log data
//! model, attributes named per the semantic conventions (`container.*` with `container.name`,
//! `container.image.name` and `container.label.<key>` once the runtime answered, `process.*`, `network.*`
//! from the newest triggering event that has a peer, `k8s.pod.uid`, and for a pod's container
//! `k8s.pod.name`, `k8s.namespace.name`, `k8s.container.name` and `k8s.pod.label.<key>`,
//! `host.name` on the resource) plus `sensor.*` for the rule, and the whole alert as proto3 JSON
//! in `sensor.alert.json` for consumers that want every field.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use prost::Message;
use sensor_proto::{self as pb, Alert, Severity};
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{Shared, dead_letter::DeadLetter, system_time};

/// The exporter's cursor name in the spool.
pub const CONSUMER: &str = "otlp";
/// Alerts per export request, at most.
const BATCH: usize = 128;
/// Encoded log records per export request, at most (one larger alert goes alone): well under
/// the 4 MiB a gRPC server accepts by default.
const MAX_BATCH_BYTES: usize = 1 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the exporter reports about itself.
pub(crate) struct ExporterState {
    endpoint: String,
    inner: Mutex<Progress>,
    dead_letter: DeadLetter,
}

#[derive(Default)]
struct Progress {
    exported: u64,
    failures: u64,
    last_error: String,
    /// Alerts refused alone for good, kept in the dead letter (or, if it could not be written,
    /// only logged: `dead_letter_errors`).
    dead_lettered: u64,
    dead_letter_errors: u64,
    /// Log records the collector reported rejected in a partial success.
    rejected: u64,
}

impl ExporterState {
    pub(super) fn new(endpoint: &str, spool_dir: &std::path::Path) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            inner: Mutex::default(),
            dead_letter: DeadLetter::new(spool_dir),
        }
    }

    pub(super) fn health(&self, acked_seq: u64, pending: u64) -> pb::OtlpHealth {
        let p = self.inner.lock().unwrap();
        pb::OtlpHealth {
            endpoint: self.endpoint.clone(),
            acked_seq,
            pending,
            exported: p.exported,
            failures: p.failures,
            last_error: p.last_error.clone(),
            dead_lettered: p.dead_lettered,
            dead_letter_errors: p.dead_letter_errors,
            dead_letter_path: self.dead_letter.path().display().to_string(),
            rejected: p.rejected,
        }
    }
}

/// TLS to the collector (`https://` endpoints only).
#[derive(Clone, Debug, Default)]
pub struct OtlpTls {
    /// The CA (PEM) the collector's certificate must chain to.
    pub ca: Option<std::path::PathBuf>,
    /// This agent's certificate and key (PEM), for a collector that asks for one.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl OtlpTls {
    /// The client TLS configuration for `endpoint`, or `None` for `http://`; an error for a
    /// mismatch (TLS flags with `http://`, `https://` without a CA) or an unreadable file.
    fn config(&self, endpoint: &str) -> Result<Option<ClientTlsConfig>> {
        let read = |path: &std::path::Path, flag: &str| {
            std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
        };
        if endpoint.starts_with("http://") {
            if self.ca.is_some() || self.identity.is_some() {
                anyhow::bail!(
                    "--otlp-ca, --otlp-cert and --otlp-key are for an https:// collector;                      --otlp-endpoint is {endpoint:?}"
                );
            }
            return Ok(None);
        }
        let Some(ca) = &self.ca else {
            anyhow::bail!(
                "--otlp-endpoint {endpoint:?} is TLS: give --otlp-ca PEM, the CA its                  certificate chains to (and --otlp-cert/--otlp-key if it asks for a client                  certificate)"
            );
        };
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--otlp-ca")?));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--otlp-cert")?,
                read(key, "--otlp-key")?,
            ));
        }
        Ok(Some(tls))
    }
}

pub(super) struct Exporter {
    shared: Arc<Shared>,
    client: LogsServiceClient<Channel>,
}

impl Exporter {
    /// Checks `endpoint` (`http://host:port`, or `https://host:port` with `tls`) and loads the
    /// TLS material, so that a bad flag fails the start; the connection itself is made lazily
    /// and re-made after failures.
    pub(super) fn new(endpoint: &str, tls: &OtlpTls, shared: Arc<Shared>) -> Result<Exporter> {
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            anyhow::bail!(
                "--otlp-endpoint {endpoint:?}: give http://HOST:PORT (plaintext) or \
                 https://HOST:PORT (TLS, with --otlp-ca)"
            );
        }
        let mut channel = Endpoint::from_shared(endpoint.to_string()).with_context(|| {
            format!("--otlp-endpoint {endpoint:?} is not a URI: give http://HOST:PORT")
        })?;
        if let Some(config) = tls.config(endpoint)? {
            channel = channel.tls_config(config).with_context(|| {
                "loading the TLS material for the collector (--otlp-ca, --otlp-cert, \
                 --otlp-key): they must be PEM, the key matching the certificate"
            })?;
        }
        let channel = channel
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        Ok(Exporter {
            shared,
            client: LogsServiceClient::new(channel),
        })
    }

    fn state(&self) -> &ExporterState {
        self.shared
            .otlp
            .as_ref()
            .expect("an exporter runs only with its state")
    }

    /// Exports until `shutdown` turns true.
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut spooled = self.shared.spooled.subscribe();
        let resource = resource(&self.shared.node);
        loop {
            let batch = {
                let spool = self.shared.spool.lock().unwrap();
                spool.read_from(spool.cursor(CONSUMER))
            };
            let batch: Vec<_> =
                match tokio::task::spawn_blocking(move || batch.take(BATCH).collect::<Vec<_>>())
                    .await
                {
                    Ok(b) => b,
                    Err(_) => return,
                };
            if batch.is_empty() {
                // Caught up: wait for the next alert.
                tokio::select! {
                    _ = spooled.changed() => continue,
                    _ = shutdown.changed() => return,
                }
            }
            let (last, alerts) = pack(batch);
            if !self.deliver(alerts, &resource, &mut shutdown).await {
                return;
            }
            let acked = self.shared.spool.lock().unwrap().ack(CONSUMER, last);
            if let Err(err) = acked {
                log::error!("OTLP export: {err:#}; alerts up to {last} may be sent again");
            }
        }
    }

    /// Exports `alerts` in order, splitting a request the collector refuses for good and
    /// dead-lettering an alert it refuses alone; false when shut down first.
    async fn deliver(
        &mut self,
        alerts: Vec<(Alert, LogRecord)>,
        resource: &Resource,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut chunks = std::collections::VecDeque::from([alerts]);
        while let Some(mut chunk) = chunks.pop_front() {
            if chunk.is_empty() {
                continue;
            }
            let records = chunk.iter().map(|(_, r)| r.clone()).collect();
            match self.export(request(resource, records), shutdown).await {
                Exported::Accepted => {
                    self.state().inner.lock().unwrap().exported += chunk.len() as u64;
                }
                Exported::Shutdown => return false,
                Exported::Refused(why) if chunk.len() > 1 => {
                    log::warn!(
                        "OTLP export: the collector refused {} alerts for good ({why}); sending \
                         them in halves",
                        chunk.len()
                    );
                    let second = chunk.split_off(chunk.len() / 2);
                    chunks.push_front(second);
                    chunks.push_front(chunk);
                }
                Exported::Refused(why) => self.dead_letter(&chunk[0].0, &why),
            }
        }
        true
    }

    fn dead_letter(&self, alert: &Alert, why: &str) {
        let state = self.state();
        let kept = state.dead_letter.keep(alert, why);
        let mut p = state.inner.lock().unwrap();
        match kept {
            Ok(()) => {
                p.dead_lettered += 1;
                log::error!(
                    "OTLP export: the collector refused alert {} ({}) for good: {why}; kept in {}",
                    alert.seq,
                    alert.id,
                    state.dead_letter.path().display()
                );
            }
            Err(err) => {
                p.dead_letter_errors += 1;
                log::error!(
                    "OTLP export: the collector refused alert {} ({}) for good: {why}; writing \
                     it to {} failed too ({err}): it stays only in the spool",
                    alert.seq,
                    alert.id,
                    state.dead_letter.path().display()
                );
            }
        }
    }

    /// Sends `request` until the collector accepts it or refuses it for good.
    async fn export(
        &mut self,
        request: ExportLogsServiceRequest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Exported {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = tokio::select! {
                r = self.client.export(request.clone()) => r,
                _ = shutdown.changed() => return Exported::Shutdown,
            };
            match result {
                Ok(response) => {
                    if let Some(partial) = response.into_inner().partial_success
                        && partial.rejected_log_records > 0
                    {
                        // Rejected for good by the collector, which does not say which:
                        // retrying cannot help.
                        log::warn!(
                            "OTLP export: the collector rejected {} alert(s): {}",
                            partial.rejected_log_records,
                            partial.error_message
                        );
                        self.state().inner.lock().unwrap().rejected +=
                            partial.rejected_log_records.max(0) as u64;
                    }
                    self.state().inner.lock().unwrap().last_error.clear();
                    return Exported::Accepted;
                }
                Err(status) => {
                    let msg = format!("{}: {}", status.code(), status.message());
                    if refused_for_good(&status) {
                        let mut p = self.state().inner.lock().unwrap();
                        p.failures += 1;
                        p.last_error = msg.clone();
                        return Exported::Refused(msg);
                    }
                    {
                        let mut p = self.state().inner.lock().unwrap();
                        if p.failures == 0 || p.last_error != msg {
                            log::warn!(
                                "OTLP export to {} failed ({msg}); retrying in {} ms and keeping \
                                 the alerts spooled",
                                self.state().endpoint,
                                backoff.as_millis()
                            );
                        }
                        p.failures += 1;
                        p.last_error = msg;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return Exported::Shutdown,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// What became of an export request.
enum Exported {
    Accepted,
    /// Refused for good: the collector's answer.
    Refused(String),
    Shutdown,
}

/// Whether the collector refused a request for good: retrying it unchanged cannot succeed. The
/// request is invalid for it (`INVALID_ARGUMENT`), or larger than it receives (`OUT_OF_RANGE`
/// from tonic, `RESOURCE_EXHAUSTED` "larger than max" from grpc-go, the OpenTelemetry
/// Collector's server). Anything else (unavailable, overloaded, a deadline, authentication,
/// a collector without the logs service) is retried: it is the collector's state or setup, and
/// refusing the alerts for it would lose them.
fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code;
    let message = status.message().to_ascii_lowercase();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => true,
        Code::ResourceExhausted => message.contains("larger than") || message.contains("too large"),
        _ => false,
    }
}

/// The alerts of `batch` that go in one request (its first records, up to [`MAX_BATCH_BYTES`]
/// of log records), each with its log record, and the last sequence number they account for
/// (records that do not decode are skipped, logged).
fn pack(batch: Vec<super::spool::Record>) -> (u64, Vec<(Alert, LogRecord)>) {
    let mut last = 0;
    let mut bytes = 0;
    let mut alerts = Vec::new();
    for r in batch {
        let alert = match Alert::decode(r.payload.as_slice()) {
            Ok(alert) => alert,
            Err(err) => {
                log::warn!(
                    "OTLP export: spooled alert {} does not decode ({err}); skipping it",
                    r.seq
                );
                last = r.seq;
                continue;
            }
        };
        let record = log_record(&alert);
        let len = record.encoded_len();
        if !alerts.is_empty() && bytes + len > MAX_BATCH_BYTES {
            break;
        }
        bytes += len;
        last = r.seq;
        alerts.push((alert, record));
    }
    (last, alerts)
}

/// One export request of `records`, from this node.
fn request(resource: &Resource, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "container-sensor".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn resource(node: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", string("container-sensor")),
            kv("service.version", string(env!("CARGO_PKG_VERSION"))),
            kv("host.name", string(node)),
        ],
        ..Default::default()
    }
}

fn string(s: impl Into<String>) -> Value {
    Value::StringValue(s.into())
}

fn int(i: impl Into<i64>) -> Value {
    Value::IntValue(i.into())
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: items
            .into_iter()
            .map(|s| AnyValue {
                value: Some(string(s.as_str())),
            })
            .collect(),
    })
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn unix_nanos(t: Option<&pbjson_types::Timestamp>) -> u64 {
    t.and_then(system_time)
        .unwrap_or_else(SystemTime::now)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// OpenTelemetry severity for an alert severity (the log data model's ranges).
fn severity_number(s: Severity) -> SeverityNumber {
    match s {
        Severity::Unspecified => SeverityNumber::Unspecified,
        Severity::Info => SeverityNumber::Info,
        Severity::Low => SeverityNumber::Info2,
        Severity::Medium => SeverityNumber::Warn,
        Severity::High => SeverityNumber::Error,
        Severity::Critical => SeverityNumber::Fatal,
    }
}

/// One alert as an OTLP log record.
pub fn log_record(alert: &Alert) -> LogRecord {
    let severity = Severity::try_from(alert.severity).unwrap_or_default();
    let mut attrs = vec![
        kv("sensor.alert.id", string(alert.id.as_str())),
        kv("sensor.alert.seq", int(alert.seq as i64)),
        kv("sensor.rule.id", string(alert.rule_id.as_str())),
        kv("sensor.rule.name", string(alert.rule_name.as_str())),
        kv("sensor.rule.techniques", strings(&alert.techniques)),
        kv("sensor.rule.tactics", strings(&alert.tactics)),
    ];
    if !alert.response.is_empty() {
        attrs.push(kv("sensor.alert.response", string(alert.response.as_str())));
    }
    if let Some(c) = &alert.container {
        attrs.push(kv("container.id", string(c.id.as_str())));
        attrs.push(kv("container.runtime", string(c.runtime.as_str())));
        let pod_uid = c
            .pod
            .as_ref()
            .map_or(c.pod_uid.as_str(), |p| p.uid.as_str());
        if !pod_uid.is_empty() {
            attrs.push(kv("k8s.pod.uid", string(pod_uid)));
        }
        if let Some(p) = &c.pod {
            for (key, value) in [
                ("k8s.pod.name", &p.name),
                ("k8s.namespace.name", &p.namespace),
                ("k8s.container.name", &c.name),
            ] {
                if !value.is_empty() {
                    attrs.push(kv(key, string(value.as_str())));
                }
            }
            for (key, value) in &p.labels {
                attrs.push(kv(&format!("k8s.pod.label.{key}"), string(value.as_str())));
            }
        }
        for (key, value) in [
            ("container.name", &c.name),
            ("container.image.name", &c.image),
            ("container.image.id", &c.image_id),
        ] {
            if !value.is_empty() {
                attrs.push(kv(key, string(value.as_str())));
            }
        }
        for (key, value) in &c.labels {
            attrs.push(kv(
                &format!("container.label.{key}"),
                string(value.as_str()),
            ));
        }
    }
    if let Some(p) = &alert.process {
        attrs.push(kv("process.pid", int(p.pid)));
        attrs.push(kv("process.parent_pid", int(p.ppid)));
        attrs.push(kv("process.executable.path", string(p.exe.as_str())));
        attrs.push(kv("process.executable.name", string(p.comm.as_str())));
        attrs.push(kv("process.command_args", strings(&p.args)));
        attrs.push(kv("process.user.id", int(p.uid)));
        attrs.push(kv("process.group.id", int(p.gid)));
    }
    attrs.extend(network_attributes(&alert.events));
    if let Ok(json) = serde_json::to_string(alert) {
        attrs.push(kv("sensor.alert.json", string(json)));
    }
    let body = if alert.summary.is_empty() {
        alert.rule_name.clone()
    } else {
        alert.summary.clone()
    };
    LogRecord {
        time_unix_nano: unix_nanos(alert.time.as_ref()),
        observed_time_unix_nano: unix_nanos(None),
        severity_number: severity_number(severity) as i32,
        severity_text: severity.short_name().to_ascii_uppercase(),
        body: Some(AnyValue {
            value: Some(string(body)),
        }),
        attributes: attrs,
        event_name: "sensor.alert".into(),
        ..Default::default()
    }
}

/// `network.*` attributes from the newest triggering event that names a peer.
fn network_attributes(events: &[pb::Event]) -> Vec<KeyValue> {
    use pb::event::Body;
    let endpoints = |e: &pb::Event| -> Option<(Option<pb::Endpoint>, Option<pb::Endpoint>)> {
        match e.body.as_ref()? {
            Body::Socket(s) => Some((s.local.clone(), s.remote.clone())),
            Body::TcpState(t) => Some((t.local.clone(), t.remote.clone())),
            Body::Traffic(t) => Some((None, t.peer.clone())),
            Body::Icmp(i) => Some((None, i.peer.clone())),
            _ => None,
        }
    };
    let Some((local, Some(peer))) = events
        .iter()
        .rev()
        .filter_map(endpoints)
        .find(|(_, peer)| peer.as_ref().is_some_and(|p| !p.address.is_empty()))
    else {
        return Vec::new();
    };
    let mut attrs = vec![kv("network.peer.address", string(peer.address.as_str()))];
    if peer.port != 0 {
        attrs.push(kv("network.peer.port", int(peer.port)));
    }
    match peer.family.as_str() {
        "inet" => attrs.push(kv("network.type", string("ipv4"))),
        "inet6" => attrs.push(kv("network.type", string("ipv6"))),
        _ => {}
    }
    if let Some(local) = local.filter(|l| !l.address.is_empty()) {
        attrs.push(kv("network.local.address", string(local.address.as_str())));
        if local.port != 0 {
            attrs.push(kv("network.local.port", int(local.port)));
        }
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> &'a Value {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .unwrap_or_else(|| panic!("no attribute {key}"))
    }

    fn spooled(seq: u64, summary_bytes: usize) -> crate::deliver::spool::Record {
        let alert = Alert {
            seq,
            summary: "x".repeat(summary_bytes),
            ..Default::default()
        };
        crate::deliver::spool::Record {
            seq,
            payload: alert.encode_to_vec(),
        }
    }

    #[test]
    fn a_batch_is_packed_up_to_its_byte_cap_and_a_large_alert_goes_alone() {
        let batch: Vec<_> = (1..=8).map(|seq| spooled(seq, 200 << 10)).collect();
        let one = log_record(&Alert::decode(batch[0].payload.as_slice()).unwrap()).encoded_len();
        let fit = MAX_BATCH_BYTES / one;
        assert!((1..8).contains(&fit), "{one} bytes per record");
        let (last, alerts) = pack(batch);
        assert_eq!(
            (last, alerts.len()),
            (fit as u64, fit),
            "as many as fit in 1 MiB"
        );
        let (last, alerts) = pack(vec![spooled(9, 3 << 20), spooled(10, 10)]);
        assert_eq!((last, alerts.len()), (9, 1), "one over the cap goes alone");
        let undecodable = crate::deliver::spool::Record {
            seq: 11,
            payload: vec![0xff; 3],
        };
        let (last, alerts) = pack(vec![undecodable]);
        assert_eq!((last, alerts.len()), (11, 0), "skipped, accounted for");
    }

    #[test]
    fn only_invalid_or_too_large_requests_are_refused_for_good() {
        use tonic::{Code, Status};
        for (status, for_good) in [
            (Status::invalid_argument("bad record"), true),
            (
                Status::out_of_range("decoded message length too large"),
                true,
            ),
            (
                Status::resource_exhausted("grpc: received message larger than max (5 vs. 4)"),
                true,
            ),
            (Status::resource_exhausted("memory limit reached"), false),
            (Status::unavailable("connection refused"), false),
            (Status::unauthenticated("no token"), false),
            (Status::new(Code::Unimplemented, "no logs service"), false),
        ] {
            assert_eq!(refused_for_good(&status), for_good, "{status:?}");
        }
    }

    #[test]
    fn alerts_map_to_semantic_convention_attributes() {
        let alert = Alert {
            id: "u-1".into(),
            seq: 7,
            time: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            rule_id: "reverse-shell".into(),
            rule_name: "Reverse shell".into(),
            severity: Severity::High as i32,
            techniques: vec!["T1059".into()],
            summary: "sh with a socket for stdin".into(),
            container: Some(pb::Container {
                id: "e".repeat(64),
                runtime: "docker".into(),
                name: "web-1".into(),
                image: "registry/app:2".into(),
                labels: [("team".to_string(), "infra".to_string())].into(),
                ..Default::default()
            }),
            process: Some(pb::Process {
                pid: 42,
                exe: "/bin/sh".into(),
                args: vec!["sh".into(), "-i".into()],
                ..Default::default()
            }),
            events: vec![
                pb::Event::default().with_body(pb::event::Body::Socket(pb::SocketCall {
                    op: "connect".into(),
                    remote: Some(pb::Endpoint {
                        address: "172.17.0.1".into(),
                        port: 4444,
                        family: "inet".into(),
                    }),
                    ..Default::default()
                })),
                pb::Event::default().with_body(pb::event::Body::Exec(Default::default())),
            ],
            ..Default::default()
        };
        let r = log_record(&alert);
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_005);
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.severity_text, "HIGH");
        assert_eq!(attr(&r, "container.id"), &string("e".repeat(64)));
        assert_eq!(attr(&r, "container.runtime"), &string("docker"));
        assert_eq!(attr(&r, "container.name"), &string("web-1"));
        assert_eq!(attr(&r, "container.image.name"), &string("registry/app:2"));
        assert_eq!(attr(&r, "container.label.team"), &string("infra"));
        assert_eq!(attr(&r, "process.pid"), &int(42));
        assert_eq!(attr(&r, "process.executable.path"), &string("/bin/sh"));
        assert_eq!(
            attr(&r, "process.command_args"),
            &strings(&["sh".to_string(), "-i".to_string()])
        );
        assert_eq!(attr(&r, "sensor.alert.seq"), &int(7));
        assert_eq!(attr(&r, "network.peer.address"), &string("172.17.0.1"));
        assert_eq!(attr(&r, "network.peer.port"), &int(4444));
        assert_eq!(attr(&r, "network.type"), &string("ipv4"));
        let Value::StringValue(json) = attr(&r, "sensor.alert.json") else {
            panic!("json attribute")
        };
        let back: Alert = serde_json::from_str(json).unwrap();
        assert_eq!(back, alert);
    }

    #[test]
    fn a_pod_s_container_carries_the_k8s_attributes() {
        let alert = Alert {
            container: Some(pb::Container {
                id: "e".repeat(64),
                runtime: "containerd".into(),
                name: "backdoor".into(),
                pod: Some(pb::Pod {
                    name: "web-0".into(),
                    namespace: "prod".into(),
                    uid: "8e1f5c34-0c0b-4f52-9d50-2d8f5b0c4a11".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = log_record(&alert);
        assert_eq!(attr(&r, "container.runtime"), &string("containerd"));
        assert_eq!(attr(&r, "k8s.pod.name"), &string("web-0"));
        assert_eq!(attr(&r, "k8s.namespace.name"), &string("prod"));
        assert_eq!(attr(&r, "k8s.container.name"), &string("backdoor"));
        assert_eq!(
            attr(&r, "k8s.pod.uid"),
            &string("8e1f5c34-0c0b-4f52-9d50-2d8f5b0c4a11")
        );
        assert_eq!(attr(&r, "k8s.pod.label.app"), &string("web"));
    }
}
