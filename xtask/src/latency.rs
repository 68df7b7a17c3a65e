//! `cargo xtask latency`: each rule's detection latency, from the alerts the integration tests'
//! sensors wrote (`target/test-artifacts/*.events.jsonl`, one file per sensor a test started).
//!
//! An alert's latency is its `detected_time` (when the agent raised it) minus the `time` of its
//! newest triggering event (the kernel's timestamp of the record that completed the match). It
//! covers the ring buffer, decoding, enrichment and the engine. What a rule waits for by design
//! (a lifetime rule's exit, a window's closing event, the traffic report interval) happens
//! before that newest event, so it is not in the figure; the rules' docs say what they wait for.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use serde_json::Value;

/// Latencies of one rule's alerts, with the kinds of the events that completed them.
#[derive(Default)]
struct RuleLatency {
    samples: Vec<Duration>,
    kinds: BTreeMap<String, usize>,
}

/// Prints the table for the artifacts in `dir` written since `since` (all when `None`).
pub fn report(dir: &Path, since: Option<SystemTime>) -> Result<()> {
    let mut rules: BTreeMap<String, RuleLatency> = BTreeMap::new();
    let mut files = 0;
    let entries = fs::read_dir(dir).with_context(|| {
        format!(
            "no test artifacts in {} (run `cargo xtask test` first)",
            dir.display()
        )
    })?;
    for entry in entries {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".events.jsonl") {
            continue;
        }
        let modified = fs::metadata(&path)?.modified()?;
        if since.is_some_and(|t| modified < t) {
            continue;
        }
        files += 1;
        let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let Ok(v) = serde_json::from_str::<Value>(&line?) else {
                continue; // a torn last line of a killed sensor
            };
            if v["kind"] != "alert" {
                continue;
            }
            if let Some((rule, kind, latency)) = measure(&v["alert"]) {
                let r = rules.entry(rule).or_default();
                r.samples.push(latency);
                *r.kinds.entry(kind).or_default() += 1;
            }
        }
    }
    print_table(&mut rules, files, dir);
    Ok(())
}

/// `(rule id, kind of the newest event, latency)` of one alert; `None` for an alert without a
/// `detected_time` (written by an older sensor) or without timed events.
fn measure(alert: &Value) -> Option<(String, String, Duration)> {
    let detected = time(&alert["detected_time"])?;
    let (newest, kind) = alert["events"]
        .as_array()?
        .iter()
        .filter_map(|e| Some((time(&e["time"])?, e["kind"].as_str().unwrap_or("?"))))
        .max_by_key(|(t, _)| *t)?;
    // A clock step between the two can make this negative; it then counts as 0.
    let latency = detected.duration_since(newest).unwrap_or_default();
    Some((
        alert["rule_id"].as_str()?.to_string(),
        kind.to_string(),
        latency,
    ))
}

/// A 64-bit integer as the sensor writes it (protobuf JSON mapping: a string, or a number from
/// other writers); `None` when absent, as proto3 omits zeros.
pub fn proto_u64(v: &Value) -> Option<u64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
}

/// An RFC 3339 timestamp as the sensor writes it (protobuf JSON mapping).
pub fn time(v: &Value) -> Option<SystemTime> {
    let ts: pbjson_types::Timestamp = serde_json::from_value(v.clone()).ok()?;
    let since_epoch = Duration::new(ts.seconds.try_into().ok()?, ts.nanos.try_into().ok()?);
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

fn print_table(rules: &mut BTreeMap<String, RuleLatency>, files: usize, dir: &Path) {
    println!(
        "\ndetection latency (event to alert) from {files} sensor output(s) in {}:",
        dir.display()
    );
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>9}  completed by",
        "rule", "alerts", "min ms", "median ms", "max ms"
    );
    for (rule, r) in rules.iter_mut() {
        r.samples.sort();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let kinds: Vec<String> = r.kinds.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        println!(
            "{rule:<10} {:>6} {:>9} {:>9} {:>9}  {}",
            r.samples.len(),
            ms(r.samples[0]),
            ms(r.samples[r.samples.len() / 2]),
            ms(r.samples[r.samples.len() - 1]),
            kinds.join(", ")
        );
    }
    if rules.is_empty() {
        println!("(no alerts with a detected_time)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_detection_minus_the_newest_event() {
        let alert = serde_json::json!({
            "rule_id": "CRS-006",
            "detected_time": "2026-11-26T14:50:30.000000000+00:00",
            "events": [
                {"kind": "connect", "time": "2026-11-26T14:50:29.000000000+00:00"},
                {"kind": "container_exited", "time": "2026-11-26T14:50:29.990000000Z"},
            ],
        });
        let (rule, kind, latency) = measure(&alert).unwrap();
        assert_eq!(
            (rule.as_str(), kind.as_str()),
            ("CRS-006", "container_exited")
        );
        assert_eq!(latency, Duration::from_millis(10));
        assert!(measure(&serde_json::json!({"rule_id": "x", "events": []})).is_none());
    }
}
