//! One sample of the soaking agent: its memory and CPU from `/proc`, its tables, events, alerts
//! and drops from its Prometheus endpoint, its reloads from its log.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{Context, Result};

use super::load::Counts;
use crate::bench::mode::{cpu_seconds, status_kib};

pub struct Sample {
    at: Duration,
    rss_kib: u64,
    cpu_seconds: f64,
    /// `sensor_*` samples summed over their labels, and `sensor_table_entries` by table.
    totals: BTreeMap<String, f64>,
    tables: BTreeMap<String, f64>,
    reloads: usize,
    containers: u64,
    container_failures: u64,
}

/// The tables the lines show, in order, with their column titles.
const TABLES: [(&str, &str); 6] = [
    ("processes", "procs"),
    ("cgroups", "cgroups"),
    ("containers", "ctrs"),
    ("departed_containers", "gone"),
    ("runtime_metadata", "meta"),
    ("stdio_pipes", "pipes"),
];

impl Sample {
    pub fn take(
        at: Duration,
        pid: u32,
        metrics: SocketAddr,
        log: &Path,
        counts: &Counts,
    ) -> Result<Sample> {
        let text = scrape(metrics)?;
        let mut totals = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            *totals.entry(name.to_string()).or_default() += value;
            if name == "sensor_table_entries"
                && let Some(table) = label(series, "table")
            {
                tables.insert(table.to_string(), value);
            }
        }
        let reloads = fs::read_to_string(log)
            .unwrap_or_default()
            .matches("sensor: reloaded")
            .count();
        Ok(Sample {
            at,
            rss_kib: status_kib(pid, "VmRSS:").unwrap_or(0),
            cpu_seconds: cpu_seconds(pid).unwrap_or(0.0),
            totals,
            tables,
            reloads,
            containers: counts.containers.load(Ordering::Relaxed),
            container_failures: counts.container_failures.load(Ordering::Relaxed),
        })
    }

    fn total(&self, name: &str) -> f64 {
        self.totals.get(name).copied().unwrap_or(0.0)
    }

    fn table(&self, name: &str) -> f64 {
        self.tables.get(name).copied().unwrap_or(0.0)
    }

    pub fn header() -> String {
        let tables: Vec<String> = TABLES.iter().map(|(_, t)| format!("{t:>7}")).collect();
        format!(
            "{:>6} {:>8} {:>7} {:>9} {:>7} {:>6} {} {:>8} {:>7} {:>8} {:>7} {:>8}",
            "min",
            "RSS MiB",
            "CPU s",
            "events",
            "alerts",
            "drops",
            tables.join(" "),
            "evicted",
            "pruned",
            "spool KiB",
            "reloads",
            "churned"
        )
    }

    pub fn line(&self) -> String {
        let tables: Vec<String> = TABLES
            .iter()
            .map(|(t, _)| format!("{:>7}", self.table(t)))
            .collect();
        format!(
            "{:>6.1} {:>8.1} {:>7.1} {:>9} {:>7} {:>6} {} {:>8} {:>7} {:>8.0} {:>7} {:>8}",
            self.at.as_secs_f64() / 60.0,
            self.rss_kib as f64 / 1024.0,
            self.cpu_seconds,
            self.total("sensor_events_total"),
            self.total("sensor_alerts_total"),
            self.total("sensor_events_dropped_total"),
            tables.join(" "),
            self.total("sensor_table_evicted_total")
                + self.total("sensor_rule_state_evicted_total"),
            self.total("sensor_table_pruned_total"),
            self.total("sensor_spool_bytes") / 1024.0,
            self.reloads,
            format!("{}/{}", self.containers, self.container_failures),
        )
    }
}

/// What the run shows: memory from warm-up (the first sample after a quarter of the run) to
/// the end, and the tables' sizes then and at the end.
pub fn summary(samples: &[Sample]) -> String {
    let (Some(last), Some(first)) = (samples.last(), samples.first()) else {
        return "no samples".into();
    };
    let warm = samples
        .iter()
        .find(|s| s.at >= last.at / 4)
        .unwrap_or(first);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let growth = (last.rss_kib as f64 / warm.rss_kib.max(1) as f64 - 1.0) * 100.0;
    let tables: Vec<String> = TABLES
        .iter()
        .map(|(t, _)| format!("{t} {} -> {}", warm.table(t), last.table(t)))
        .collect();
    format!(
        "RSS {:.1} MiB at warm-up ({:.1} min), {:.1} MiB at the end ({:+.1}%), {:.1} MiB at most: {}.\n\
         Tables from warm-up to the end: {}.\n\
         {} containers churned ({} failed to run), {} reloads, {} events, {} alerts, {} events \
         dropped, {} table and rule-state entries evicted, {} pruned; agent CPU {:.1} s over {:.1} min.",
        mib(warm.rss_kib),
        warm.at.as_secs_f64() / 60.0,
        mib(last.rss_kib),
        growth,
        mib(max),
        if growth <= 10.0 {
            "flat after warm-up (within 10%)"
        } else {
            "GREW after warm-up (more than 10%)"
        },
        tables.join(", "),
        last.containers,
        last.container_failures,
        last.reloads,
        last.total("sensor_events_total"),
        last.total("sensor_alerts_total"),
        last.total("sensor_events_dropped_total"),
        last.total("sensor_table_evicted_total") + last.total("sensor_rule_state_evicted_total"),
        last.total("sensor_table_pruned_total"),
        last.cpu_seconds,
        last.at.as_secs_f64() / 60.0,
    )
}

/// `name="value"` of a series' labels.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    Some(&rest[..rest.find('"')?])
}

fn scrape(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("the agent's metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_by_name() {
        let series = r#"sensor_table_entries{table="processes",x="y"}"#;
        assert_eq!(label(series, "table"), Some("processes"));
        assert_eq!(label(series, "x"), Some("y"));
        assert_eq!(label(series, "z"), None);
    }
}
