//! Prometheus metrics: counters kept by the delivery layer, rendered in the text exposition
//! format (version 0.0.4) on `GET /metrics` of a small HTTP/1.1 endpoint (`--metrics-addr`, off
//! by default).
//!
//! Every way data can be lost has a series, present (at 0) from the first health report on:
//! kernel ring drops and undecodable records (`sensor_events_dropped_total{ring,reason}`, and
//! by cgroup `sensor_cgroup_events_dropped_total{cgroup_id,container,ring,reason}`),
//! subscriber overflow (`sensor_subscriber_missed_total`), spool eviction
//! (`sensor_spool_evicted_total`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use sensor_proto::{Health, TableHealth};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::Shared;

/// Upper bounds (seconds) of the event-to-alert latency buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct State {
    events_by_kind: BTreeMap<String, u64>,
    /// From the latest health report: the kernel's and the decoder's counts since start.
    latest_health: Option<Health>,
    alerts: BTreeMap<(String, String), u64>,
    /// Event-to-alert latency per rule id.
    latency: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    pub fn count_event(&self, kind: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(n) = s.events_by_kind.get_mut(kind) {
            *n += 1;
        } else {
            s.events_by_kind.insert(kind.to_string(), 1);
        }
    }

    pub fn health(&self, health: &Health) {
        self.state.lock().unwrap().latest_health = Some(health.clone());
    }

    pub fn count_alert(&self, rule_id: &str, severity: &str, latency: Option<Duration>) {
        let mut s = self.state.lock().unwrap();
        *s.alerts
            .entry((rule_id.to_string(), severity.to_string()))
            .or_default() += 1;
        if let Some(latency) = latency {
            let secs = latency.as_secs_f64();
            let h = s.latency.entry(rule_id.to_string()).or_default();
            h.count += 1;
            h.sum += secs;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
        }
    }

    /// Makes every loaded rule's alert and latency series exist at 0, so a rule that never fired
    /// is visible (and `increase()` works from its first alert).
    pub fn declare_rules(&self, rules: &[(String, String)]) {
        let mut s = self.state.lock().unwrap();
        for key in rules {
            s.alerts.entry(key.clone()).or_default();
            s.latency.entry(key.0.clone()).or_default();
        }
    }

    pub fn alerts_by_rule(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((rule, _), n) in &self.state.lock().unwrap().alerts {
            *out.entry(rule.clone()).or_default() += n;
        }
        out
    }
}

/// Escapes a label value per the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The whole exposition, from the counters and the live state of spool, subscribers and exporter.
pub(super) fn render(shared: &Shared) -> String {
    let mut o = Out(String::with_capacity(8 << 10));
    let s = shared.metrics.state.lock().unwrap();

    o.family(
        "sensor_events_total",
        "counter",
        "Events emitted by the agent, by kind.",
    );
    for (kind, n) in &s.events_by_kind {
        o.sample("sensor_events_total", &[("kind", kind)], n);
    }

    let health = s.latest_health.clone().unwrap_or_default();
    o.family(
        "sensor_events_dropped_total",
        "counter",
        "Records lost before enrichment: ring_full = the kernel could not reserve ring space, \
         rate_limited = a cgroup exceeded its record rate, undecodable = user space could not \
         decode the record.",
    );
    for ring in &health.rings {
        let by_reason = [
            ("ring_full", ring.dropped_ring_full),
            ("rate_limited", ring.dropped_rate_limited),
        ];
        for (reason, n) in by_reason {
            o.sample(
                "sensor_events_dropped_total",
                &[("ring", &ring.ring), ("reason", reason)],
                n,
            );
        }
        // Drops the kernel counted without a reason, so the sum stays `dropped`.
        let other = ring
            .dropped
            .saturating_sub(by_reason.iter().map(|(_, n)| n).sum());
        if other > 0 {
            o.sample(
                "sensor_events_dropped_total",
                &[("ring", &ring.ring), ("reason", "other")],
                other,
            );
        }
    }
    if s.latest_health.is_some() {
        o.sample(
            "sensor_events_dropped_total",
            &[("ring", "all"), ("reason", "undecodable")],
            health.decode_errors,
        );
    }
    if let Some(r) = &health.runtime_requests {
        o.family(
            "sensor_runtime_api_requests_total",
            "counter",
            "Container inspects asked of the runtime's API: answered; failed and timed_out \
             attempts (timed_out is part of failed); retried attempts; gave_up = every attempt \
             failed; dropped_queue_full = refused by the bounded queue.",
        );
        let outcomes = [
            ("answered", r.answered),
            ("failed", r.failed),
            ("timed_out", r.timed_out),
            ("retried", r.retried),
            ("gave_up", r.gave_up),
            ("dropped_queue_full", r.dropped_queue_full),
        ];
        for (outcome, n) in outcomes {
            o.sample(
                "sensor_runtime_api_requests_total",
                &[("outcome", outcome)],
                n,
            );
        }
        o.family(
            "sensor_runtime_held_events_total",
            "counter",
            "Events of new containers held (at most 1 s) until their runtime named them; \
             released = went out at the deadline without the runtime's answer.",
        );
        for (outcome, n) in [
            ("held", r.held_events),
            ("released_unnamed", r.held_unnamed),
        ] {
            o.sample(
                "sensor_runtime_held_events_total",
                &[("outcome", outcome)],
                n,
            );
        }
    }
    o.family(
        "sensor_cgroup_events_dropped_total",
        "counter",
        "Records lost by the cgroup whose records they were (who flooded), for the cgroups that \
         lost most; container is empty for a host cgroup.",
    );
    for d in &health.cgroup_drops {
        o.sample(
            "sensor_cgroup_events_dropped_total",
            &[
                ("cgroup_id", &d.cgroup_id.to_string()),
                ("container", &d.container_id),
                ("ring", &d.ring),
                ("reason", &d.reason),
            ],
            d.dropped,
        );
    }
    o.family(
        "sensor_rule_state_evicted_total",
        "counter",
        "Keys a rule's engine state evicted to make room (a container over its quota, or a full \
         table): state lost, so a window or sequence started over.",
    );
    for r in &health.rules {
        o.sample(
            "sensor_rule_state_evicted_total",
            &[("rule", &r.rule_id)],
            r.evicted,
        );
    }
    o.family(
        "sensor_rule_alerts_suppressed_total",
        "counter",
        "Alerts a rule's per-container cap held back; each is counted in a later \
         \"N more like this\" alert.",
    );
    for r in &health.rules {
        o.sample(
            "sensor_rule_alerts_suppressed_total",
            &[("rule", &r.rule_id)],
            r.suppressed,
        );
    }
    for (name, kind, help, value) in [
        (
            "sensor_table_entries",
            "gauge",
            "Entries in each of the agent's in-memory tables (processes, cgroups, containers, ...).",
            (|t| t.entries) as fn(&TableHealth) -> u64,
        ),
        (
            "sensor_table_capacity",
            "gauge",
            "The bound of each in-memory table.",
            |t| t.capacity,
        ),
        (
            "sensor_table_evicted_total",
            "counter",
            "Entries a table evicted to stay within its bound.",
            |t| t.evicted,
        ),
        (
            "sensor_table_pruned_total",
            "counter",
            "Entries removed because the kernel no longer had them: their exit or rmdir record \
             was lost.",
            |t| t.pruned,
        ),
    ] {
        o.family(name, kind, help);
        for table in &health.tables {
            o.sample(name, &[("table", &table.table)], value(table));
        }
    }
    o.family(
        "sensor_ring_received_total",
        "counter",
        "Records user space read from each kernel ring.",
    );
    for ring in &health.rings {
        o.sample(
            "sensor_ring_received_total",
            &[("ring", &ring.ring)],
            ring.received,
        );
    }
    o.family(
        "sensor_hook_errors_total",
        "counter",
        "Failed reads or malformed data in each kernel hook.",
    );
    for hook in &health.hooks {
        o.sample(
            "sensor_hook_errors_total",
            &[("hook", &hook.hook), ("attach", &hook.attach)],
            hook.errors,
        );
    }
    if let Some(uptime) = health.uptime {
        o.family(
            "sensor_uptime_seconds",
            "gauge",
            "Time since the agent started.",
        );
        o.sample(
            "sensor_uptime_seconds",
            &[],
            uptime.seconds as f64 + uptime.nanos as f64 / 1e9,
        );
    }

    o.family(
        "sensor_alerts_total",
        "counter",
        "Alerts raised, by rule and severity.",
    );
    for ((rule, severity), n) in &s.alerts {
        o.sample(
            "sensor_alerts_total",
            &[("rule", rule), ("severity", severity)],
            n,
        );
    }
    o.family(
        "sensor_event_to_alert_seconds",
        "histogram",
        "From the newest triggering event (kernel time) to the alert being spooled, by rule.",
    );
    for (rule, h) in &s.latency {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            o.sample(
                "sensor_event_to_alert_seconds_bucket",
                &[("rule", rule), ("le", &bound.to_string())],
                h.counts[i],
            );
        }
        o.sample(
            "sensor_event_to_alert_seconds_bucket",
            &[("rule", rule), ("le", "+Inf")],
            h.count,
        );
        o.sample(
            "sensor_event_to_alert_seconds_sum",
            &[("rule", rule)],
            h.sum,
        );
        o.sample(
            "sensor_event_to_alert_seconds_count",
            &[("rule", rule)],
            h.count,
        );
    }
    drop(s);

    let subscribers = [
        ("alerts", shared.alerts.subscribers()),
        ("events", shared.events.subscribers()),
    ];
    o.family(
        "sensor_subscribers",
        "gauge",
        "Open gRPC streams, by stream.",
    );
    for (stream, subs) in &subscribers {
        o.sample("sensor_subscribers", &[("stream", stream)], subs.len());
    }
    for (name, help) in [
        (
            "sensor_subscriber_queue_depth",
            "Items waiting in a subscriber's bounded queue.",
        ),
        (
            "sensor_subscriber_lag",
            "Sequence numbers published but not yet taken by a subscriber.",
        ),
        (
            "sensor_subscriber_missed_total",
            "Items a subscriber missed because its queue was full.",
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        o.family(name, kind, help);
        for (stream, subs) in &subscribers {
            for sub in subs {
                let id = sub.id.to_string();
                let labels = [
                    ("stream", *stream),
                    ("subscriber", &id),
                    ("peer", &sub.peer),
                ];
                let value = match name {
                    "sensor_subscriber_queue_depth" => sub.depth as u64,
                    "sensor_subscriber_lag" => sub.lag,
                    _ => sub.missed,
                };
                o.sample(name, &labels, value);
            }
        }
    }
    o.family(
        "sensor_subscriber_missed_all_total",
        "counter",
        "Items missed by subscribers that have since disconnected or are still open, by stream.",
    );
    for (stream, n) in [
        ("alerts", &shared.missed_alerts),
        ("events", &shared.missed_events),
    ] {
        o.sample(
            "sensor_subscriber_missed_all_total",
            &[("stream", stream)],
            n.load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    let spool = shared.spool_health();
    for (name, kind, help, value) in [
        (
            "sensor_spool_bytes",
            "gauge",
            "Size of the alert spool on disk.",
            spool.bytes,
        ),
        (
            "sensor_spool_max_bytes",
            "gauge",
            "Size bound of the alert spool.",
            spool.max_bytes,
        ),
        (
            "sensor_spool_records",
            "gauge",
            "Alerts in the spool.",
            spool.records,
        ),
        (
            "sensor_spool_last_seq",
            "gauge",
            "Sequence number of the newest spooled alert.",
            spool.last_seq,
        ),
        (
            "sensor_spool_evicted_total",
            "counter",
            "Alerts removed from the spool by its size bound.",
            spool.evicted,
        ),
        (
            "sensor_spool_errors_total",
            "counter",
            "Alerts that could not be written to the spool (disk full or failing): delivered live only, never replayed or exported.",
            shared
                .spool_errors
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "sensor_spool_evicted_unexported_total",
            "counter",
            "Evicted alerts the OTLP collector had not acknowledged (lost for it).",
            spool.evicted_unexported,
        ),
    ] {
        o.family(name, kind, help);
        o.sample(name, &[], value);
    }

    if let Some(otlp) = shared.otlp_health() {
        let endpoint = otlp.endpoint.as_str();
        for (name, kind, help, value) in [
            (
                "sensor_otlp_exported_total",
                "counter",
                "Alerts the OTLP collector acknowledged.",
                otlp.exported,
            ),
            (
                "sensor_otlp_failures_total",
                "counter",
                "Failed OTLP export attempts (retried, or split when refused for good).",
                otlp.failures,
            ),
            (
                "sensor_otlp_dead_lettered_total",
                "counter",
                "Alerts the OTLP collector refused for good on their own, kept in the dead letter file.",
                otlp.dead_lettered,
            ),
            (
                "sensor_otlp_dead_letter_errors_total",
                "counter",
                "Alerts refused for good that could not be written to the dead letter file either.",
                otlp.dead_letter_errors,
            ),
            (
                "sensor_otlp_rejected_total",
                "counter",
                "Log records the OTLP collector reported rejected in a partial success.",
                otlp.rejected,
            ),
            (
                "sensor_otlp_pending",
                "gauge",
                "Spooled alerts not yet acknowledged by the OTLP collector.",
                otlp.pending,
            ),
        ] {
            o.family(name, kind, help);
            o.sample(name, &[("endpoint", endpoint)], value);
        }
    }
    if let Some(json) = shared.json_out.as_ref().map(|s| s.health()) {
        let target = [("target", json.target.as_str())];
        o.family(
            "sensor_json_out_lines_total",
            "counter",
            "JSON lines by outcome: written, dropped_queue_full (the reader is slower than the \
             agent), dropped_write_failed (a full disk, a reader that went away).",
        );
        for (outcome, n) in [
            ("written", json.written),
            ("dropped_queue_full", json.dropped_queue_full),
            ("dropped_write_failed", json.dropped_write_failed),
        ] {
            let labels = [target[0], ("outcome", outcome)];
            o.sample("sensor_json_out_lines_total", &labels, n);
        }
        for (name, kind, help, value) in [
            (
                "sensor_json_out_write_errors_total",
                "counter",
                "Failed writes of JSON lines (the last one's text is in GetHealth).",
                json.write_errors,
            ),
            (
                "sensor_json_out_failing",
                "gauge",
                "1 while writing JSON lines fails.",
                u64::from(json.failing),
            ),
            (
                "sensor_json_out_queued_bytes",
                "gauge",
                "Encoded JSON lines waiting for the writer.",
                json.queued_bytes,
            ),
        ] {
            o.family(name, kind, help);
            o.sample(name, &target, value);
        }
    }
    o.0
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, &shared).await {
                            log::debug!("metrics endpoint: {err:#}");
                        }
                    });
                }
                Err(err) => {
                    log::warn!("metrics endpoint: accepting a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// One request per connection: enough for Prometheus and curl.
async fn answer(mut stream: TcpStream, shared: &Shared) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() > 16 << 10 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("reading the request timed out")??;
    let request = String::from_utf8_lossy(&buf);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(shared),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn latency_lands_in_cumulative_buckets() {
        let m = Metrics::default();
        m.count_alert("r", "high", Some(Duration::from_millis(30)));
        m.count_alert("r", "high", Some(Duration::from_secs(2)));
        m.count_alert("other", "low", Some(Duration::from_secs(90)));
        let s = m.state.lock().unwrap();
        let h = &s.latency["r"];
        let at = |bound: f64| h.counts[LATENCY_BUCKETS.iter().position(|b| *b == bound).unwrap()];
        assert_eq!((at(0.025), at(0.05), at(2.5), at(60.0)), (0, 1, 2, 2));
        assert_eq!(h.count, 2);
        assert_eq!(
            (s.latency["other"].count, s.latency["other"].counts[13]),
            (1, 0)
        );
        drop(s);
        assert_eq!(m.alerts_by_rule()["r"], 2);
    }
}
