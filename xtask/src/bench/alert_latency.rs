//! Alert latency as a SIEM sees it: a `WatchAlerts` client (`sensor watch -o json`, the
//! project's own gRPC stubs) stamps each alert when its line arrives; the latency is that
//! receipt time minus the alert's `time`, the kernel's timestamp of the trigger. The trigger is a
//! real attack exec in the client container, `nc -e /bin/true 127.0.0.1 1` (CRS-008), paced so
//! that each alert stands alone; once on an otherwise idle node, once while the server container
//! runs an exec storm.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    fixture::Fixture,
    mode::{Mode, Paths},
    report::{Latency, SensorRun},
};
use crate::latency::{proto_u64, time as json_time};

/// Pause between two triggers: alerts arrive one at a time, not in batches.
const PACE_US: u32 = 20_000;
/// The exec storm's bound; the bench stops it as soon as the trigger is done.
const STORM_SECONDS: u32 = 120;
const RULE: &str = "CRS-008";

/// A line of the client's output and when it arrived.
type Received = (SystemTime, String);

pub fn measure(fx: &Fixture, paths: &Paths, alerts: usize) -> Result<(Vec<Latency>, SensorRun)> {
    // Each of the 200 alerts is measured: without the per-container cap, which would hold
    // all but the first 20 of one container's minute back for one "N more" alert.
    let sensor = Mode::Sensor.start_with(paths, &["--alert-cap", "0"])?;
    let mut client = Command::new(&paths.sensor)
        .arg("watch")
        .arg("--addr")
        .arg(format!("unix://{}", paths.socket.display()))
        .args(["-o", "json", "--rule", RULE, "--container", &fx.client.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sensor watch`")?;
    let result = phases(fx, &mut client, alerts);
    let _ = client.kill();
    let _ = client.wait();
    let (phases, missed) = result?;
    let mut run = sensor
        .stop("alert latency (idle, then exec storm)")?
        .expect("the sensor mode reports");
    run.subscriber_missed = Some(missed);
    Ok((phases, run))
}

fn phases(fx: &Fixture, client: &mut Child, alerts: usize) -> Result<(Vec<Latency>, u64)> {
    let (tx, rx) = mpsc::channel::<Received>();
    let stdout = client.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((SystemTime::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut missed = 0;
    // The stream is up once a first alert arrives.
    let started = Instant::now();
    loop {
        trigger(fx, 1)?;
        if !collect(&rx, 1, Duration::from_secs(3), &mut missed)?.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("`sensor watch` received no {RULE} alert within 60 s of nc -e execs");
        }
    }
    let idle = phase("idle node", fx, &rx, alerts, &mut missed)?;
    let seconds = STORM_SECONDS.to_string();
    let mut storm = fx
        .server
        .exec(&[
            "timeout",
            &seconds,
            "sh",
            "-c",
            "while :; do /bin/true; done",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the exec storm")?;
    thread::sleep(Duration::from_secs(1));
    let stormy = phase(
        "exec storm in another container",
        fx,
        &rx,
        alerts,
        &mut missed,
    );
    // The storm's shell is the only `sh` in the server container (nginx runs there).
    let _ = fx.server.exec(&["killall", "sh"]).output();
    let _ = storm.wait();
    Ok((vec![idle, stormy?], missed))
}

fn phase(
    name: &str,
    fx: &Fixture,
    rx: &mpsc::Receiver<Received>,
    alerts: usize,
    missed: &mut u64,
) -> Result<Latency> {
    // Drop what the previous phase left behind.
    while rx.try_recv().is_ok() {}
    trigger(fx, alerts)?;
    let got = collect(rx, alerts, Duration::from_secs(30), missed)?;
    if got.len() < alerts {
        bail!(
            "{name}: {} of {alerts} {RULE} alerts reached `sensor watch` within 30 s",
            got.len()
        );
    }
    let sorted_ms = |part: fn(&Sample) -> Duration| {
        let mut ms: Vec<f64> = got.iter().map(|s| part(s).as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let pct =
        |ms: &[f64], p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    let total = sorted_ms(|s| s.total);
    let agent = sorted_ms(|s| s.agent);
    Ok(Latency {
        phase: name.to_string(),
        alerts: total.len(),
        p50_ms: pct(&total, 0.50),
        p99_ms: pct(&total, 0.99),
        max_ms: total[total.len() - 1],
        agent_p99_ms: pct(&agent, 0.99),
    })
}

/// `count` paced `nc -e` execs in the client container; returns when the last has run.
fn trigger(fx: &Fixture, count: usize) -> Result<()> {
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do nc -e /bin/true 127.0.0.1 1 2>/dev/null; \
         usleep {PACE_US}; i=$((i+1)); done"
    );
    let out = fx.client.exec(&["sh", "-c", &script]).output()?;
    if !out.status.success() {
        bail!(
            "the trigger loop failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One alert's latency: to its receipt, and the agent's part (to its `detected_time`).
struct Sample {
    total: Duration,
    agent: Duration,
}

/// Latencies of up to `want` alerts, waiting at most `quiet` after the last line.
fn collect(
    rx: &mpsc::Receiver<Received>,
    want: usize,
    quiet: Duration,
    missed: &mut u64,
) -> Result<Vec<Sample>> {
    let mut got = Vec::new();
    while got.len() < want {
        let Ok((received, line)) = rx.recv_timeout(quiet) else {
            break;
        };
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("`sensor watch` printed a line that is not JSON: {line}"))?;
        if let Some(m) = v.get("missed") {
            *missed += proto_u64(&m["count"]).unwrap_or(1);
            continue;
        }
        let (Some(at), Some(detected)) = (
            json_time(&v["alert"]["time"]),
            json_time(&v["alert"]["detected_time"]),
        ) else {
            bail!("an alert without time and detected_time: {line}");
        };
        // A clock step can make a part negative; it then counts as 0.
        got.push(Sample {
            total: received.duration_since(at).unwrap_or_default(),
            agent: detected.duration_since(at).unwrap_or_default(),
        });
    }
    Ok(got)
}
