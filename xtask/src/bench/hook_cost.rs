//! `cargo xtask bench --hook-costs`: where the sensor's kernel-side time goes, per workload.
//!
//! Runs each selected workload once under the sensor with the kernel's BPF run-time statistics
//! on (`kernel.bpf_stats_enabled`, restored afterwards) and reports, per program, the runs and
//! run time the workload caused (`bpftool prog show`: `run_cnt`, `run_time_ns`). The statistics
//! cost two clock reads per program run, so these runs are never part of the overhead table,
//! and `ns/run` includes about one of them: on the 2-core development VM a program that returns
//! at once reads 60-80 ns/run. Compare `ns/run` between builds, not as a run's absolute cost.
//! What programs do not account for (the syscall slow path that any attached syscall tracepoint
//! puts every task on) shows as the gap between a workload's cost and its BPF time.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{
    fixture::Fixture,
    mode::{Mode, Paths},
    workload::{Size, Workload},
};
use crate::util;

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Programs listed per workload.
const TOP: usize = 8;

/// Program id -> `(name, type, runs, run time ns)` of the sensor's programs.
type Counters = BTreeMap<u64, (String, String, u64, u64)>;

/// The report, as markdown.
pub fn measure(fx: &Fixture, paths: &Paths, selected: &[Workload], size: Size) -> Result<String> {
    let before = fs::read_to_string(STATS).context("reading kernel.bpf_stats_enabled")?;
    fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = per_workload(fx, paths, selected, size);
    let _ = fs::write(STATS, before.trim());
    result
}

fn per_workload(fx: &Fixture, paths: &Paths, selected: &[Workload], size: Size) -> Result<String> {
    let sensor = Mode::Sensor.start(paths)?;
    let ours = programs_of(sensor.pid().context("the sensor has no process")?)?;
    let mut md = String::from(
        "## Where the sensor's kernel time goes (`--hook-costs`)\n\n\
         One run per workload under the sensor with `kernel.bpf_stats_enabled`: each program's \
         runs and run time during the workload, and their share of the workload's wall time \
         (on 2 cores, 100% = one core). The kernel cuts program names to 15 characters \
         (`sched_process_e` is `sched_process_exec` or `_exit`); the `sys_*_bpf` runs are the \
         bench's own `bpftool` reading the counters.\n",
    );
    for w in selected {
        util::step(format!("hook costs: {}", w.name()));
        let start = counters(&ours)?;
        let began = Instant::now();
        w.run(fx, size)?;
        let wall = began.elapsed().as_secs_f64();
        let end = counters(&ours)?;
        let mut rows: Vec<(u64, u64, &str, &str)> = end
            .iter()
            .filter_map(|(id, (name, kind, runs, ns))| {
                let (r0, t0) = start.get(id).map_or((0, 0), |c| (c.2, c.3));
                (runs > &r0).then(|| (ns - t0, runs - r0, name.as_str(), kind.as_str()))
            })
            .collect();
        rows.sort_by(|a, b| b.cmp(a));
        let total: u64 = rows.iter().map(|r| r.0).sum();
        let _ = writeln!(
            md,
            "\n`{}`: {wall:.2} s of work, {:.3} s in the sensor's programs ({:.1}%)\n\n\
             | program | type | runs | ms | ns/run |\n|---|---|---|---|---|",
            w.name(),
            total as f64 / 1e9,
            total as f64 / 1e7 / wall
        );
        for (ns, runs, name, kind) in rows.into_iter().take(TOP) {
            let _ = writeln!(
                md,
                "| {name} | {kind} | {runs} | {:.1} | {} |",
                ns as f64 / 1e6,
                ns / runs.max(1)
            );
        }
    }
    sensor.stop("hook costs")?;
    Ok(md)
}

/// The ids of the BPF programs a process holds, from its fds' `/proc/PID/fdinfo` (`prog_id:`).
fn programs_of(pid: u32) -> Result<BTreeSet<u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let info = fs::read_to_string(entry?.path()).unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    Ok(ids)
}

/// Run counters of the programs in `ours` (`bpftool prog show -j`).
fn counters(ours: &BTreeSet<u64>) -> Result<Counters> {
    let json = util::output(Command::new("bpftool").args(["prog", "show", "-j"]))
        .context("`bpftool prog show` (install bpftool: `cargo xtask setup --for bench`)")?;
    let progs: Value = serde_json::from_str(&json).context("bpftool's JSON")?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ours.contains(&id)))
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["name"].as_str()?.to_string(),
                    p["type"].as_str().unwrap_or("?").to_string(),
                    p["run_cnt"].as_u64().unwrap_or(0),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect())
}
