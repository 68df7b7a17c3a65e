//! Delivery: how events and alerts leave the agent.
//!
//! [`Delivery`] is the one door the pipeline uses: [`Delivery::publish_event`] for every event,
//! [`Delivery::publish_alert`] for alerts (spooled on disk first, then fanned out), and
//! [`Delivery::update_health`] for the periodic self-report. Behind it:
//! - `json`: the `--json-out` JSON lines, written by their own thread behind a bounded queue;
//! - `spool`: the durable, bounded alert log (at-least-once, resume by sequence number);
//! - `bus`: fan-out to subscribers with a bounded queue each;
//! - `grpc`: the `sensor.v1.Sensor` service on a Unix socket and, optionally, TCP with mTLS;
//! - `otlp`: push of spooled alerts to an OpenTelemetry collector;
//! - `metrics`: the Prometheus endpoint;
//! - `filter`: the subscribers' filters; `cli`: the command-line flags;
//! - `watch`: `sensor watch`, the command-line client of the service.
//!
//! Nothing here blocks the pipeline on a consumer: subscribers and the JSON lines writer are
//! behind bounded queues and the exporter reads the spool at its own pace. Only `publish_alert`
//! touches the disk (one append and, by default, an fdatasync), which is the price of not losing
//! alerts.

pub mod bus;
pub mod cli;
pub mod dead_letter;
pub mod filter;
pub mod grpc;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod spool;
#[cfg(test)]
mod tests;
pub mod watch;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use prost::Message;
use sensor_proto::{self as pb, Alert, Event, event::Body};
use tokio::{sync::watch as tokio_watch, task::JoinHandle};

use self::{
    bus::Bus,
    spool::{Spool, SpoolConfig},
};

/// The TCP listener's address and its mutual-TLS material (PEM files).
#[derive(Clone, Debug)]
pub struct TcpTlsConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to; clients without one are refused.
    pub client_ca: PathBuf,
}

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The gRPC Unix socket (root-only, mode 0600).
    pub grpc_socket: PathBuf,
    pub grpc_tcp: Option<TcpTlsConfig>,
    pub spool: SpoolConfig,
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317` or `https://collector:4317`.
    pub otlp_endpoint: Option<String>,
    /// TLS to an `https://` collector.
    pub otlp_tls: otlp::OtlpTls,
    /// Prometheus endpoint; off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Items each subscriber may have queued before it starts missing them.
    pub subscriber_queue: usize,
    /// Where JSON lines go (`-` for stdout, or a file); off when `None`.
    pub json_out: Option<String>,
    pub node: String,
}

impl DeliveryConfig {
    pub const DEFAULT_SOCKET: &'static str = "/run/sensor/sensor.sock";

    pub fn new(node: impl Into<String>) -> Self {
        Self {
            grpc_socket: PathBuf::from(Self::DEFAULT_SOCKET),
            grpc_tcp: None,
            spool: SpoolConfig::default(),
            otlp_endpoint: None,
            otlp_tls: otlp::OtlpTls::default(),
            metrics_addr: None,
            subscriber_queue: 4096,
            json_out: None,
            node: node.into(),
        }
    }
}

/// The rules the detection engine has loaded, for `ListRules` and `GetHealth`.
#[derive(Default)]
struct Rules {
    rules: Vec<pb::RuleInfo>,
    version: String,
    /// Whether a rule set was ever loaded; until then `ListRules` says none is.
    loaded: bool,
}

/// State shared by the facade, the gRPC service, the exporter and the metrics endpoint.
pub(crate) struct Shared {
    node: String,
    started: Instant,
    spool: Mutex<Spool>,
    /// The newest spooled sequence number, for the exporter to wait on.
    spooled: tokio_watch::Sender<u64>,
    alerts: Arc<Bus<Arc<Alert>>>,
    events: Arc<Bus<Arc<Event>>>,
    health: Mutex<Option<Event>>,
    rules: Mutex<Rules>,
    metrics: metrics::Metrics,
    otlp: Option<otlp::ExporterState>,
    /// Items missed by any subscriber since start (open or gone).
    missed_alerts: AtomicU64,
    missed_events: AtomicU64,
    /// Alerts that could not be spooled (and so were not delivered).
    spool_errors: AtomicU64,
    /// The `--json-out` sink's figures.
    json_out: Option<Arc<json::JsonOutStats>>,
}

impl Shared {
    fn spool_health(&self) -> pb::SpoolHealth {
        let spool = self.spool.lock().unwrap();
        let stats = spool.stats();
        pb::SpoolHealth {
            dir: spool.config().dir.display().to_string(),
            bytes: spool.bytes(),
            max_bytes: spool.config().max_bytes,
            records: spool.records(),
            first_seq: spool.first_seq().unwrap_or(0),
            last_seq: spool.last_seq(),
            evicted: stats.evicted,
            evicted_unexported: stats.evicted_unacked,
            truncated_at_recovery: stats.truncated_at_recovery,
            append_errors: self.spool_errors.load(Ordering::Relaxed),
        }
    }

    fn otlp_health(&self) -> Option<pb::OtlpHealth> {
        let state = self.otlp.as_ref()?;
        let acked = self.spool.lock().unwrap().cursor(otlp::CONSUMER);
        let last = *self.spooled.borrow();
        Some(state.health(acked, last.saturating_sub(acked)))
    }

    fn delivery_health(&self) -> pb::DeliveryHealth {
        let subscribers = [
            ("alerts", self.alerts.subscribers()),
            ("events", self.events.subscribers()),
        ]
        .into_iter()
        .flat_map(|(stream, subs)| {
            subs.into_iter().map(move |s| pb::SubscriberHealth {
                stream: stream.to_string(),
                peer: s.peer,
                queue_depth: s.depth as u64,
                queue_capacity: s.capacity as u64,
                missed: s.missed,
            })
        })
        .collect();
        pb::DeliveryHealth {
            spool: Some(self.spool_health()),
            subscribers,
            otlp: self.otlp_health(),
            alerts_by_rule: self.metrics.alerts_by_rule().into_iter().collect(),
            json_out: self.json_out.as_ref().map(|s| s.health()),
        }
    }
}

/// The delivery layer of a running agent; see the module doc.
pub struct Delivery {
    shared: Arc<Shared>,
    json_out: Option<json::JsonOut>,
    shutdown: tokio_watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<String>,
    socket: PathBuf,
}

impl Delivery {
    /// Opens the spool and starts the listeners and the exporter. Fails, saying which and what
    /// to do, when a socket or address cannot be bound or the spool cannot be opened.
    pub async fn start(cfg: DeliveryConfig) -> Result<Delivery> {
        let mut spool = Spool::open(cfg.spool.clone()).with_context(|| {
            format!(
                "opening the alert spool in {} (choose another place with --spool-dir)",
                cfg.spool.dir.display()
            )
        })?;
        crate::trust::ensure_trusted(&cfg.spool.dir, "spool directory (--spool-dir)")?;
        let otlp = cfg.otlp_endpoint.as_ref().map(|endpoint| {
            spool.register_consumer(otlp::CONSUMER);
            otlp::ExporterState::new(endpoint, &cfg.spool.dir)
        });
        let json_out = cfg
            .json_out
            .as_deref()
            .map(json::JsonOut::open)
            .transpose()?;
        let (spooled, _) = tokio_watch::channel(spool.last_seq());
        let shared = Arc::new(Shared {
            node: cfg.node.clone(),
            started: Instant::now(),
            spool: Mutex::new(spool),
            spooled,
            alerts: Bus::new(cfg.subscriber_queue),
            events: Bus::new(cfg.subscriber_queue),
            health: Mutex::new(None),
            rules: Mutex::default(),
            metrics: metrics::Metrics::default(),
            otlp,
            missed_alerts: AtomicU64::new(0),
            missed_events: AtomicU64::new(0),
            spool_errors: AtomicU64::new(0),
            json_out: json_out.as_ref().map(json::JsonOut::stats),
        });
        let (shutdown, _) = tokio_watch::channel(false);
        let mut tasks = Vec::new();
        let mut endpoints = Vec::new();

        let unix = grpc::bind_unix(&cfg.grpc_socket)?;
        tasks.push(tokio::spawn(grpc::serve_unix(
            unix,
            shared.clone(),
            shutdown.subscribe(),
        )));
        endpoints.push(format!("gRPC unix://{}", cfg.grpc_socket.display()));
        if let Some(tcp) = &cfg.grpc_tcp {
            let (listener, tls) = grpc::bind_tcp(tcp).await?;
            tasks.push(tokio::spawn(grpc::serve_tcp(
                listener,
                tls,
                shared.clone(),
                shutdown.subscribe(),
            )));
            endpoints.push(format!("gRPC https://{} (mutual TLS)", tcp.addr));
        }
        if let Some(addr) = cfg.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the metrics endpoint {addr} (choose another --metrics-addr)")
            })?;
            tasks.push(tokio::spawn(metrics::serve(
                listener,
                shared.clone(),
                shutdown.subscribe(),
            )));
            endpoints.push(format!("metrics http://{addr}/metrics"));
        }
        if let Some(endpoint) = &cfg.otlp_endpoint {
            let exporter = otlp::Exporter::new(endpoint, &cfg.otlp_tls, shared.clone())?;
            tasks.push(tokio::spawn(exporter.run(shutdown.subscribe())));
            endpoints.push(format!("OTLP {endpoint}"));
        }
        Ok(Delivery {
            shared,
            json_out,
            shutdown,
            tasks,
            endpoints,
            socket: cfg.grpc_socket,
        })
    }

    /// Where the layer serves, for the agent's ready line.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(", ")
    }

    /// Where JSON lines go (`stdout` or a path), if anywhere.
    pub fn json_target(&self) -> Option<&str> {
        self.json_out.as_ref().map(json::JsonOut::target)
    }

    /// Writes an event to the JSON lines, hands it to `WatchEvents` subscribers and counts it.
    /// Never blocks.
    pub fn publish_event(&self, event: &Event) {
        if let Some(out) = &self.json_out {
            out.event(event);
        }
        self.shared.metrics.count_event(&event.kind);
        if self.shared.events.has_subscribers() {
            self.shared.events.publish(&Arc::new(event.clone()));
        }
    }

    /// Hands the queued JSON lines to their writer when they are due (the pipeline calls it
    /// once a turn; see [`json::HAND_OFF_AFTER`]).
    pub fn flush_json(&self) {
        if let Some(out) = &self.json_out {
            out.flush_due();
        }
    }

    /// When queued JSON lines are due at their writer: the pipeline wakes then if no turn
    /// came first.
    pub fn json_due(&self) -> Option<std::time::Instant> {
        self.json_out.as_ref().and_then(|out| out.due())
    }

    /// Alerts the spool evicted before the exporter sent them, since start (`lost_total`; 0
    /// without an exporter), with the spool's bound and the exporter's position.
    pub fn unexported_evictions(&self) -> pb::SpoolEvicted {
        let spool = self.shared.spool.lock().unwrap();
        pb::SpoolEvicted {
            lost: 0,
            lost_total: spool.stats().evicted_unacked,
            max_bytes: spool.config().max_bytes,
            exported_seq: spool.cursor(otlp::CONSUMER),
        }
    }

    /// Keeps the latest `health` event for `GetHealth` and the metrics.
    pub fn update_health(&self, event: Event) {
        if let Some(Body::Health(h)) = &event.body {
            self.shared.metrics.health(h);
        }
        *self.shared.health.lock().unwrap() = Some(event);
    }

    /// Gives `alert` what it lacks of an id, the node, its time and its detection time (now).
    fn stamp(&self, alert: &mut Alert) {
        if alert.id.is_empty() {
            alert.id = new_alert_id();
        }
        if alert.node.is_empty() {
            alert.node = self.shared.node.clone();
        }
        let now = || Some(timestamp(SystemTime::now()));
        if alert.time.is_none() {
            alert.time = now();
        }
        if alert.detected_time.is_none() {
            alert.detected_time = now();
        }
    }

    /// [`Self::publish_alerts`] for one alert; returns its sequence number.
    pub fn publish_alert(&self, alert: Alert) -> Result<u64> {
        self.publish_alerts(vec![alert]).map(|seqs| seqs.start)
    }

    /// Spools `alerts` as one group commit (numbering them, and [stamping](Self::stamp) what
    /// they lack): one write and one fdatasync for all, then hands them to subscribers, the
    /// exporter and the JSON lines. Returns their sequence numbers. When this returns Ok, they
    /// are on disk (see the spool's fsync policy).
    ///
    /// On Err (a full or broken disk) they are still delivered live, unnumbered (`seq` 0):
    /// to `WatchAlerts` subscribers and the JSON lines, never to the exporter, which reads the
    /// spool, nor to a later replay. The error names the spool's problem,
    /// `sensor_spool_errors_total` counts the alerts, and the caller should report it (how
    /// many alerts were not spooled) and carry on rather than stop the sensor.
    pub fn publish_alerts(&self, mut alerts: Vec<Alert>) -> Result<std::ops::Range<u64>> {
        for alert in &mut alerts {
            self.stamp(alert);
        }
        let published = self.spool_and_publish(&mut alerts);
        if let Some(out) = &self.json_out {
            for alert in &alerts {
                out.alert(alert);
            }
        }
        published
    }

    fn spool_and_publish(&self, alerts: &mut [Alert]) -> Result<std::ops::Range<u64>> {
        let mut spool = self.shared.spool.lock().unwrap();
        let first = spool.next_seq();
        let appended = spool.append_many(alerts.len(), |seq| {
            let alert = &mut alerts[(seq - first) as usize];
            alert.seq = seq;
            alert.encode_to_vec()
        });
        let result = appended.map_err(|err| {
            // The numbers went to no record: the next append gets them.
            for alert in alerts.iter_mut() {
                alert.seq = 0;
            }
            let n = alerts.len() as u64;
            self.shared.spool_errors.fetch_add(n, Ordering::Relaxed);
            err.into()
        });
        // Published while the spool is locked, so subscribers see sequence numbers in order.
        for alert in alerts.iter() {
            self.shared.alerts.publish(&Arc::new(alert.clone()));
        }
        drop(spool);
        if let Ok(seqs) = &result
            && !seqs.is_empty()
        {
            self.shared.spooled.send_replace(seqs.end - 1);
        }
        for alert in alerts.iter() {
            let severity = pb::Severity::try_from(alert.severity)
                .unwrap_or_default()
                .short_name();
            self.shared
                .metrics
                .count_alert(&alert.rule_id, severity, detection_latency(alert));
        }
        result
    }

    /// Replaces the rule list `ListRules` reports (for the detection engine).
    pub fn set_rules(&self, rules: Vec<pb::RuleInfo>, version: impl Into<String>) {
        let keys: Vec<(String, String)> = rules
            .iter()
            .map(|r| {
                let severity = pb::Severity::try_from(r.severity).unwrap_or_default();
                (r.id.clone(), severity.short_name().to_string())
            })
            .collect();
        self.shared.metrics.declare_rules(&keys);
        *self.shared.rules.lock().unwrap() = Rules {
            rules,
            version: version.into(),
            loaded: true,
        };
    }

    /// Stops listeners, streams and the exporter (an export in flight is retried at the next
    /// start) and removes the Unix socket. The spool closes when `self` is dropped.
    pub async fn shutdown(&mut self) {
        if let Some(out) = &mut self.json_out {
            out.close(Duration::from_secs(2));
        }
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Stream tasks end on the same signal; once they have, dropping `self` closes the spool
        // (and releases its lock) at once.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// From the newest triggering event's kernel time to when the alert was raised.
fn detection_latency(alert: &Alert) -> Option<Duration> {
    let newest = alert
        .events
        .iter()
        .filter_map(|e| e.time)
        .max_by_key(|t| (t.seconds, t.nanos))?;
    let detected = system_time(alert.detected_time.as_ref()?)?;
    detected.duration_since(system_time(&newest)?).ok()
}

pub(crate) fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub(crate) fn system_time(t: &pbjson_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A random UUID (v4) from the kernel.
fn new_alert_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            format!("{nanos:032x}")
        })
}

/// Counts items a subscriber missed, for the all-time metric.
pub(crate) fn count_missed(shared: &Shared, stream: &str, n: u64) {
    let counter = if stream == "alerts" {
        &shared.missed_alerts
    } else {
        &shared.missed_events
    };
    counter.fetch_add(n, Ordering::Relaxed);
}
