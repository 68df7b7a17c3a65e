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
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use self::sample::Sample;
use crate::{
    bench::mode::{Mode, Paths},
    build_agent, build_ebpf, docker,
    setup::{self, Purpose},
    util::{self, step},
};

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
    let paths = Paths {
        dir: dir.clone(),
        sensor,
        baseline: None,
        events: dir.join("events.jsonl"),
        socket: dir.join("sensor.sock"),
    };
    let state = dir.join("state").display().to_string();
    let rules_arg = rules.display().to_string();
    let metrics_arg = metrics_addr.to_string();
    let mut agent = Mode::Sensor.start_with(
        &paths,
        &[
            "--state-dir",
            &state,
            "--rules",
            &rules_arg,
            "--metrics-addr",
            &metrics_arg,
        ],
    )?;
    let pid = agent.pid().context("the sensor mode has a process")?;
    let log = agent.log().to_path_buf();

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
        if let Some(status) = agent.exited()? {
            load.finish();
            bail!(
                "the sensor exited during the soak ({status}); see {}",
                log.display()
            );
        }
        let sample = Sample::take(started.elapsed(), pid, metrics_addr, &log, &load.counts)?;
        println!("{}", sample.line());
        samples.push(sample);
        if fs::metadata(&paths.events).is_ok_and(|m| m.len() > JSON_OUT_KEEP) {
            // The agent appends, so it goes on writing at the new end.
            fs::File::options()
                .write(true)
                .open(&paths.events)?
                .set_len(0)?;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    load.finish();
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
    // As Ctrl-C would; an agent that fails to stop cleanly fails the soak.
    agent.stop("soak")?;
    Ok(())
}
