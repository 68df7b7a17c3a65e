//! `cargo xtask soak --minutes N`: the agent under a bounded, steady load for N minutes
//! (container churn, many peers, rule reloads), sampled at regular intervals: its resident
//! memory and CPU, its table sizes, events, alerts and drops (from its Prometheus endpoint).
//! Prints one line per sample and a summary, and writes both to `target/soak/soak.md`.
//!
//! The figure that matters is memory after warm-up: bounded tables and a bounded spool mean
//! resident memory stops growing once the tables have seen the load's shape. The summary
//! compares the last sample with the first one after warm-up (a quarter of the run).

mod load;
mod sample;

use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use self::sample::Sample;
use crate::{
    build_agent, build_ebpf, docker,
    setup::{self, Purpose},
    util::{self, step},
};

/// How long the agent may take to be ready, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The JSON lines file is cut back to empty once it is larger (as a log rotation would).
const JSON_OUT_KEEP: u64 = 64 << 20;

pub fn soak(root: &Path, minutes: u64) -> Result<()> {
    util::require_root("the soak runs the sensor and Docker, which need root")?;
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    setup::setup(Purpose::Test)?;
    let obj = build_ebpf::build_ebpf(root)?;
    let sensor = build_agent::build_agent(root, &obj, true)?;
    let dir = util::target_dir(root).join("soak");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let _dockerd = docker::Dockerd::ensure(root)?;
    docker::ensure_test_image(root)?;
    let rules = dir.join("rules");
    load::prepare_rules(&rules)?;

    let metrics_addr = {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let log = dir.join("sensor.log");
    let events = dir.join("events.jsonl");
    let mut child = Command::new(&sensor)
        .arg("run")
        .arg("--json-out")
        .arg(&events)
        .arg("--grpc-socket")
        .arg(dir.join("sensor.sock"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--rules")
        .arg(&rules)
        .arg("--metrics-addr")
        .arg(metrics_addr.to_string())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", sensor.display()))?;
    let pid = child.id();
    let ready = Instant::now();
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready in")
    {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the sensor exited during start-up ({status}); see {}",
                log.display()
            );
        }
        if ready.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            bail!(
                "the sensor was not ready within {START_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }

    let run_for = Duration::from_secs(minutes * 60);
    let every = (run_for / 20).clamp(Duration::from_secs(10), Duration::from_secs(30));
    step(format!(
        "soak: {minutes} min of container churn, peers and rule reloads; a sample every {}s \
         (log: {})",
        every.as_secs(),
        log.display()
    ));
    let started = Instant::now();
    let deadline = started + run_for;
    let load = load::Load::start(deadline, rules, pid)?;
    let mut samples = Vec::new();
    println!("{}", Sample::header());
    loop {
        let next = (started + every * (samples.len() as u32 + 1)).min(deadline);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        if let Some(status) = child.try_wait()? {
            load.finish();
            bail!(
                "the sensor exited during the soak ({status}); see {}",
                log.display()
            );
        }
        let sample = Sample::take(started.elapsed(), pid, metrics_addr, &log, &load.counts)?;
        println!("{}", sample.line());
        samples.push(sample);
        if fs::metadata(&events).is_ok_and(|m| m.len() > JSON_OUT_KEEP) {
            // The agent appends, so it goes on writing at the new end.
            fs::File::options().write(true).open(&events)?.set_len(0)?;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    load.finish();
    util::signal(pid.into(), "INT");
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if stopping.elapsed() > STOP_TIMEOUT {
            let _ = child.kill();
            bail!("the sensor did not stop within {STOP_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(100));
    };
    let summary = sample::summary(&samples);
    println!("\n{summary}");
    let mut md = format!(
        "# Soak: {minutes} min\n\n`cargo xtask soak --minutes {minutes}`\n\n```\n{}\n",
        Sample::header()
    );
    for s in &samples {
        md.push_str(&s.line());
        md.push('\n');
    }
    md.push_str(&format!("```\n\n{summary}\n"));
    fs::write(dir.join("soak.md"), md)?;
    step(format!("wrote {}", dir.join("soak.md").display()));
    if !status.success() {
        bail!("the sensor exited with {status}; see {}", log.display());
    }
    Ok(())
}
