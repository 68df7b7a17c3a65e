//! `cargo xtask bench`: the sensor's cost and capacity, measured as ratios within one run.
//!
//! Workloads, each run without the sensor, with it, and without it again (the two baselines
//! bracket the sensor run, so drift on a shared machine shows up as baseline spread instead of
//! as overhead):
//! - exec storm: 2 threads each spawning `/bin/true` N times (process hooks, enrichment, JSON);
//! - connect storm: 2 threads each making M refused TCP connects to 127.0.0.1:1 (socket,
//!   connect and TCP state hooks, traffic accounting), once with the default configuration
//!   (host processes filtered in the kernel: the cost of the filter) and once with `--net-host`
//!   (every call recorded: the full path).
//!
//! Absolute times across runs mean nothing here; the ratios and events/s do.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    build_agent, build_ebpf,
    setup::{self, Purpose},
    util::{self, step},
};

const THREADS: usize = 2;

/// Runs `op` `per_thread` times on each of [`THREADS`] threads; returns the wall time.
fn storm(per_thread: usize, op: fn() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(move || -> Result<()> {
                    for _ in 0..per_thread {
                        op()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("bench worker panicked")?;
        }
        Ok(())
    })?;
    Ok(start.elapsed())
}

fn exec_true() -> Result<()> {
    let st = Command::new("/bin/true")
        .status()
        .context("spawning /bin/true")?;
    anyhow::ensure!(st.success(), "/bin/true failed");
    Ok(())
}

/// A refused TCP connect on loopback (nothing listens on port 1): socket, connect, close.
fn refused_connect() -> Result<()> {
    match std::net::TcpStream::connect(("127.0.0.1", 1)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e).context("connecting to 127.0.0.1:1"),
        Ok(_) => {
            anyhow::bail!("something listens on 127.0.0.1:1; the connect bench needs it closed")
        }
    }
}

/// What the sensor reported: its start-up line and its last health event.
struct SensorRun {
    ready_line: String,
    events: u64,
    dropped: u64,
}

fn json_u64(line: &str, key: &str) -> u64 {
    // Values are proto3-JSON: u64 as strings, zero omitted.
    line.split(&format!("\"{key}\":")).nth(1).map_or(0, |rest| {
        rest.trim_start_matches('"')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    })
}

fn with_sensor(
    sensor: &Path,
    out: &Path,
    extra: &[&str],
    workload: impl FnOnce() -> Result<Duration>,
) -> Result<(Duration, SensorRun)> {
    let mut child = Command::new(sensor)
        .args(["run", "--health-interval", "1", "--json-out"])
        .arg(out)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", sensor.display()))?;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut ready_line = String::new();
    stderr.read_line(&mut ready_line)?;
    if !ready_line.contains("ready in") {
        let _ = child.kill();
        bail!("the sensor did not start: {ready_line}");
    }
    let took = workload();
    // Let the pipeline catch up, then stop it as Ctrl-C would.
    thread::sleep(Duration::from_secs(2));
    util::signal(child.id() as i64, "INT");
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the sensor exited with {status}");
    let took = took?;
    let text = fs::read_to_string(out)?;
    let health = text
        .lines()
        .rev()
        .find(|l| l.contains("\"kind\":\"health\""))
        .context("no health event")?;
    let events = text.lines().count() as u64;
    Ok((
        took,
        SensorRun {
            ready_line: ready_line.trim().to_string(),
            events,
            dropped: json_u64(health, "dropped_total"),
        },
    ))
}

/// Baseline, with the sensor (`extra` flags), baseline; prints the comparison.
fn compare(
    title: &str,
    sensor: &Path,
    out: &Path,
    extra: &[&str],
    ops: usize,
    per_thread: usize,
    op: fn() -> Result<()>,
) -> Result<()> {
    let _ = fs::remove_file(out);
    step(format!(
        "{title}: {ops} operations on {THREADS} threads; baseline, with sensor {extra:?}, baseline"
    ));
    storm(per_thread / 10 + 1, op)?; // warm up
    let base1 = storm(per_thread, op)?;
    let (with, run) = with_sensor(sensor, out, extra, || storm(per_thread, op))?;
    let base2 = storm(per_thread, op)?;
    let base = (base1 + base2) / 2;
    let rate = |d: Duration| ops as f64 / d.as_secs_f64();
    let spread = (base1.as_secs_f64() - base2.as_secs_f64()).abs() / base.as_secs_f64() * 100.0;
    println!(
        "  sensor start-up:   {}",
        run.ready_line.trim_start_matches("sensor: ")
    );
    println!(
        "  baseline:          {:>9.0} ops/s (runs {:.2}s and {:.2}s, spread {spread:.1}%)",
        rate(base),
        base1.as_secs_f64(),
        base2.as_secs_f64()
    );
    println!(
        "  with sensor:       {:>9.0} ops/s ({:.2}s)",
        rate(with),
        with.as_secs_f64()
    );
    println!(
        "  overhead:          {:>9.1}% slower (ratio {:.3})",
        (with.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0,
        with.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  events delivered:  {:>9} ({:.0} events/s while the load ran; {} dropped in the kernel)",
        run.events,
        run.events as f64 / with.as_secs_f64(),
        run.dropped
    );
    Ok(())
}

pub fn bench(root: &Path, per_thread: usize) -> Result<()> {
    util::require_root("the bench runs the sensor, which needs root")?;
    setup::setup(Purpose::Run)?;
    let obj = build_ebpf::build_ebpf(root)?;
    let sensor = build_agent::build_agent(root, &obj, true)?;
    let dir = util::target_dir(root).join("bench");
    fs::create_dir_all(&dir)?;
    let out = dir.join("events.jsonl");
    compare(
        "exec storm (/bin/true)",
        &sensor,
        &out,
        &[],
        per_thread * THREADS,
        per_thread,
        exec_true,
    )?;
    let connects = per_thread * 4;
    compare(
        "connect storm, host filtered (default)",
        &sensor,
        &out,
        &[],
        connects * THREADS,
        connects,
        refused_connect,
    )?;
    compare(
        "connect storm, every call recorded",
        &sensor,
        &out,
        &["--net-host", "--net-rate", "0"],
        connects * THREADS,
        connects,
        refused_connect,
    )?;
    println!("events of the last run: {}", out.display());
    Ok(())
}
