//! `cargo xtask bench [--quick] [--workload NAME]...`: what the sensor costs the workloads a node
//! owner runs, next to what the syscall path alone costs and what a bpftrace peer costs.
//!
//! Each round runs every workload under every mode: a workload's modes back to back, each
//! traced mode between two runs with nothing traced (none, floor, none, peer, none, sensor,
//! none; the traced modes reversed every other round), so that a per-round cost ratio compares
//! a run with the mean of the runs seconds before and after it: the machine's drift cancels out
//! and its noise shows as the spread of the ratios. The sensor's own CPU time, peak RSS, events
//! and drops are read per run (one run per workload; per round with `--quick`); then one more
//! sensor run measures alert latency through a gRPC client. Results go to stdout,
//! `docs/benchmarks.md` and `docs/benchmarks.svg` (a partial run writes them under
//! `target/bench/` instead, so the docs always hold a whole run).

mod alert_latency;
mod chart;
mod fixture;
mod hook_cost;
pub(crate) mod mode;
mod profile;
mod report;
mod workload;

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::{Context, Result, bail};

use crate::{
    build_agent, build_ebpf, docker,
    setup::{self, Purpose},
    util::{self, step},
};
use mode::{Mode, Paths};
use report::{Report, Row, SensorRun, Spread};
use workload::{Size, Workload};

/// The name `--workload` takes for the alert-latency measurement.
const LATENCY: &str = "latency";
/// Alerts per latency phase.
const LATENCY_ALERTS: usize = 200;

pub struct Options {
    pub quick: bool,
    pub workloads: Vec<String>,
    /// Rounds instead of the default (5, or 2 with `quick`).
    pub rounds: Option<usize>,
    /// Traced modes to run besides `none` (all of floor, peer, sensor and, with a baseline,
    /// baseline when empty).
    pub modes: Vec<String>,
    /// Another build of the agent, run as the mode `baseline`: a change and the build before it
    /// compared in the same interleaved rounds.
    pub baseline: Option<std::path::PathBuf>,
    /// Instead of the overhead table: each workload once under the sensor with BPF run-time
    /// statistics, per program ([`hook_cost`]).
    pub hook_costs: bool,
}

/// What one round of one workload measured, per mode.
struct Sample {
    mode: Mode,
    value: workload::Measurement,
}

/// Per workload, per round, one sample per mode.
type Samples = Vec<Vec<Vec<Sample>>>;

pub fn bench(root: &Path, opts: &Options) -> Result<()> {
    util::require_root("the bench runs the sensor and bpftrace, which need root")?;
    let (selected, latency) = select(&opts.workloads)?;
    let modes = modes(opts)?;
    setup::setup(Purpose::Bench)?;
    let obj = build_ebpf::build_ebpf(root)?;
    let sensor = build_agent::build_agent(root, &obj, true)?;
    let dir = util::target_dir(root).join("bench");
    fs::create_dir_all(&dir)?;
    let _dockerd = docker::Dockerd::ensure(root)?;
    let fx = fixture::Fixture::start(root, &dir)?;
    let paths = Paths {
        dir: dir.clone(),
        sensor,
        baseline: opts.baseline.clone(),
        events: dir.join("events.jsonl"),
        socket: dir.join("sensor.sock"),
    };
    let (rounds, size) = if opts.quick {
        (2, Size::QUICK)
    } else {
        (5, Size::FULL)
    };
    let rounds = opts.rounds.unwrap_or(rounds);
    if opts.hook_costs {
        let mut md = hook_cost::measure(&fx, &paths, &selected, size)?;
        md.push_str(&profile::measure(&fx, &paths, &selected, size)?);
        println!("\n{md}");
        let path = paths.dir.join("hook-costs.md");
        fs::write(&path, &md)?;
        step(format!("wrote {}", path.display()));
        return Ok(());
    }
    let started = Instant::now();
    let (samples, mut runs) = matrix(&fx, &paths, &selected, &modes, rounds, size, !opts.quick)?;
    let mut ready_line = runs
        .first()
        .map(|r| r.ready_line.clone())
        .unwrap_or_default();
    let mut latency_rows = Vec::new();
    if latency {
        step(format!(
            "alert latency: {LATENCY_ALERTS} alerts idle, {LATENCY_ALERTS} under an exec storm"
        ));
        let (phases, run) = alert_latency::measure(&fx, &paths, LATENCY_ALERTS)?;
        latency_rows = phases;
        ready_line = run.ready_line.clone();
        runs.push(run);
    }
    drop(fx);
    let rows = selected
        .iter()
        .zip(&samples)
        .map(|(w, rounds)| row(*w, size, &modes, rounds))
        .collect();
    let report = Report {
        context: report::Context {
            command: command_line(opts),
            machine: machine(),
            kernel: util::output(Command::new("uname").args(["-sr"]))?
                .trim()
                .to_string(),
            hook_set: hook_set(&ready_line),
            date: util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
                .trim()
                .to_string(),
            rounds,
        },
        rows,
        runs,
        latency: latency_rows,
    };
    let md = report.markdown();
    println!("\n{md}");
    // Only a run of everything, as the defaults have it, replaces the docs.
    let whole = opts.workloads.is_empty()
        && opts.modes.is_empty()
        && opts.rounds.is_none()
        && opts.baseline.is_none();
    let out_dir = if whole { root.join("docs") } else { dir };
    fs::write(out_dir.join("benchmarks.md"), &md)?;
    chart::draw(
        &out_dir.join("benchmarks.svg"),
        &format!("Cost ratio to no sensor ({})", report.context.command),
        &report.chart_groups(),
    )?;
    step(format!(
        "wrote {0}/benchmarks.md and {0}/benchmarks.svg in {1}",
        out_dir.display(),
        util::fmt_duration(started.elapsed())
    ));
    Ok(())
}

/// Every round, every workload under every mode. A full run (`per_workload`) runs one
/// workload's modes back to back, each traced one between two untraced runs ([`bracketed`];
/// the traced ones in the opposite order every other round), each mode started for it alone:
/// a ratio compares a run with the mean of the untraced runs seconds before and after it
/// ([`bracket`]). This machine's speed drifts over tens of seconds: 24 back-to-back 5-s connect
/// storms with no sensor read 9 910-13 059 req/s; the ratio of each run to the next spread
/// with a standard deviation of 0.085, that of each run to the mean of its neighbours 0.048.
/// The sensor's peak RSS and drops are then the workload's own (a stop detaches its programs,
/// about 4 s). `--quick` starts each mode once per round for every workload. Returns the
/// samples per workload and round, and the sensor's runs merged over the rounds.
fn matrix(
    fx: &fixture::Fixture,
    paths: &Paths,
    selected: &[Workload],
    modes: &[Mode],
    rounds: usize,
    size: Size,
    per_workload: bool,
) -> Result<(Samples, Vec<SensorRun>)> {
    let started = Instant::now();
    let mut samples: Samples = selected.iter().map(|_| Vec::new()).collect();
    let mut runs: Vec<SensorRun> = Vec::new();
    let progress = |round: usize, what: &str| {
        step(format!(
            "round {round}/{rounds}, {what} ({} elapsed)",
            util::fmt_duration(started.elapsed())
        ))
    };
    for round in 1..=rounds {
        for per in &mut samples {
            per.push(Vec::new());
        }
        if !per_workload {
            for mode in bracketed(modes) {
                progress(round, mode.name());
                let active = mode.start(paths)?;
                let mut work = Vec::new();
                for (i, w) in selected.iter().enumerate() {
                    let (value, done) = measure(*w, fx, size, &active)
                        .with_context(|| format!("workload {} under {}", w.name(), mode.name()))?;
                    samples[i][round - 1].push(Sample { mode, value });
                    work.push(done);
                }
                finish(active, "all workloads", &work, paths, &mut runs)?;
            }
            continue;
        }
        let mut traced = modes.to_vec();
        if round % 2 == 0 {
            traced.reverse();
        }
        let order = bracketed(&traced);
        for (i, w) in selected.iter().enumerate() {
            for &mode in &order {
                progress(round, &format!("{} under {}", w.name(), mode.name()));
                let active = mode.start(paths)?;
                let (value, done) = measure(*w, fx, size, &active)
                    .with_context(|| format!("workload {} under {}", w.name(), mode.name()))?;
                samples[i][round - 1].push(Sample { mode, value });
                let what = format!("`{}`", w.name());
                finish(active, &what, &[done], paths, &mut runs)?;
            }
        }
    }
    Ok((samples, runs))
}

/// The order of a round's runs: every traced mode of `modes` (in their order) between two runs
/// of [`Mode::None`], which the modes next to each other share.
fn bracketed(modes: &[Mode]) -> Vec<Mode> {
    let mut order = vec![Mode::None];
    for &m in modes.iter().filter(|m| **m != Mode::None) {
        order.extend([m, Mode::None]);
    }
    order
}

/// The untraced measurement a traced run at `at` of a round's runs is compared with: the mean
/// of the [`Mode::None`] runs just before and after it (one of them, when the other is missing).
fn bracket(round: &[Sample], at: usize, of: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let near: Vec<f64> = [at.checked_sub(1), Some(at + 1)]
        .into_iter()
        .flatten()
        .filter_map(|i| round.get(i))
        .filter(|s| s.mode == Mode::None)
        .filter_map(of)
        .collect();
    (!near.is_empty()).then(|| near.iter().sum::<f64>() / near.len() as f64)
}

/// A stretch of work under a mode: when it ran, and the sensor's CPU time meanwhile.
struct Work {
    window: (SystemTime, SystemTime),
    seconds: f64,
    sensor_cpu: f64,
}

fn measure(
    w: Workload,
    fx: &fixture::Fixture,
    size: Size,
    on: &mode::Active,
) -> Result<(workload::Measurement, Work)> {
    let cpu0 = on.sensor_cpu_seconds();
    let (t0, i0) = (SystemTime::now(), Instant::now());
    let value = w.run(fx, size)?;
    let seconds = i0.elapsed().as_secs_f64();
    let sensor_cpu = match (cpu0, on.sensor_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let window = (t0, SystemTime::now());
    Ok((
        value,
        Work {
            window,
            seconds,
            sensor_cpu,
        },
    ))
}

/// Stops a mode; a sensor's run, restricted to `work`, is merged into the run named `what`.
fn finish(
    active: mode::Active,
    what: &str,
    work: &[Work],
    paths: &Paths,
    runs: &mut Vec<SensorRun>,
) -> Result<()> {
    let Some(mut run) = active.stop(what)? else {
        return Ok(());
    };
    run.seconds = work.iter().map(|w| w.seconds).sum();
    run.cpu_seconds = work.iter().map(|w| w.sensor_cpu).sum();
    let windows: Vec<_> = work.iter().map(|w| w.window).collect();
    run.events = events_in(&paths.events, &windows)?;
    match runs.iter_mut().find(|r| r.what == run.what) {
        Some(r) => r.merge(run),
        None => runs.push(run),
    }
    Ok(())
}

/// The workloads `--workload` names (all when none), and whether alert latency is measured.
fn select(names: &[String]) -> Result<(Vec<Workload>, bool)> {
    if names.is_empty() {
        return Ok((workload::ALL.to_vec(), true));
    }
    let mut selected = Vec::new();
    let mut latency = false;
    for name in names {
        if name == LATENCY {
            latency = true;
        } else if let Some(w) = workload::ALL.iter().find(|w| w.name() == *name) {
            selected.push(*w);
        } else {
            let known: Vec<String> = workload::ALL.iter().map(|w| w.name()).collect();
            bail!(
                "unknown workload `{name}`; the workloads are {} and {LATENCY}",
                known.join(", ")
            );
        }
    }
    Ok((selected, latency))
}

/// The modes every round runs, in their round-robin order: `none` and those `--mode` names
/// (by default floor, peer and sensor), and baseline whenever `--baseline` gives one.
fn modes(opts: &Options) -> Result<Vec<Mode>> {
    let asked = opts
        .modes
        .iter()
        .map(|name| Mode::parse(name))
        .collect::<Result<Vec<_>>>()?;
    if asked.contains(&Mode::Baseline) && opts.baseline.is_none() {
        bail!("--mode baseline needs --baseline PATH (another build of `sensor`)");
    }
    if let Some(path) = &opts.baseline
        && !path.is_file()
    {
        bail!("--baseline {}: no such file", path.display());
    }
    Ok(mode::ALL
        .into_iter()
        .filter(|m| match m {
            Mode::None => true,
            Mode::Baseline => opts.baseline.is_some(),
            _ => asked.is_empty() || asked.contains(m),
        })
        .collect())
}

/// The overhead line of a workload from its rounds.
fn row(w: Workload, size: Size, modes: &[Mode], rounds: &[Vec<Sample>]) -> Row {
    // Per round, `of` the run of `mode` over `of` the untraced runs around it.
    let per_round = |mode: Mode, of: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| {
                let at = r.iter().position(|s| s.mode == mode)?;
                Some(of(&r[at])? / bracket(r, at, of)?)
            })
            .collect()
    };
    let ratios = (modes.iter().copied())
        .filter(|m| *m != Mode::None)
        .map(|m| {
            let with_over_none = per_round(m, &|s: &Sample| Some(s.value.value));
            let cost: Vec<f64> = if w.is_rate() {
                with_over_none.iter().map(|r| 1.0 / r).collect()
            } else {
                with_over_none
            };
            (m, Spread::of(&cost))
        })
        .collect();
    let none: Vec<f64> = rounds
        .iter()
        .flatten()
        .filter(|s| s.mode == Mode::None)
        .map(|s| s.value.value)
        .collect();
    let p99 = per_round(Mode::Sensor, &|s: &Sample| s.value.p99_ms);
    let baseline = Spread::of(&none).map_or("—".to_string(), |s| {
        format!("{} {}", significant(s.median), w.unit())
    });
    Row {
        name: w.name(),
        label: w.label(size),
        baseline,
        ratios,
        target: Some(w.target()),
        p99_ratio: Spread::of(&p99),
    }
}

/// Three significant digits, without exponent.
fn significant(x: f64) -> String {
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

/// Events of the sensor's output (health reports aside) whose time falls in one of `windows`.
fn events_in(events: &Path, windows: &[(SystemTime, SystemTime)]) -> Result<u64> {
    let text = fs::read_to_string(events)?;
    let count = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["kind"] != "health")
        .filter_map(|v| crate::latency::time(&v["time"]))
        .filter(|t| windows.iter().any(|(from, to)| from <= t && t <= to))
        .count();
    Ok(count as u64)
}

fn command_line(opts: &Options) -> String {
    let mut cmd = "cargo xtask bench".to_string();
    if opts.quick {
        cmd.push_str(" --quick");
    }
    if opts.hook_costs {
        cmd.push_str(" --hook-costs");
    }
    for w in &opts.workloads {
        cmd.push_str(&format!(" --workload {w}"));
    }
    if let Some(n) = opts.rounds {
        cmd.push_str(&format!(" --rounds {n}"));
    }
    for m in &opts.modes {
        cmd.push_str(&format!(" --mode {m}"));
    }
    if let Some(path) = &opts.baseline {
        cmd.push_str(&format!(" --baseline {}", path.display()));
    }
    cmd
}

/// "2 cores (CPU model), 24 GiB".
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores ({model}), {:.0} GiB",
        mem_kib as f64 / (1 << 20) as f64
    )
}

/// "default, 16 programs" from the sensor's start-up line.
fn hook_set(ready_line: &str) -> String {
    let set = ready_line
        .split("(hook set: ")
        .nth(1)
        .and_then(|s| s.split([';', ')']).next());
    let programs = ready_line
        .split(" programs attached")
        .next()
        .and_then(|s| s.rsplit(' ').next());
    match (set, programs) {
        (Some(set), Some(n)) => format!("{set}, {n} programs (the sensor's defaults)"),
        _ => "unknown (no sensor run)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_set_from_the_ready_line() {
        let line = "sensor: 16 programs attached in 430 ms (hook set: default), ready in 443 ms";
        assert_eq!(
            hook_set(line),
            "default, 16 programs (the sensor's defaults)"
        );
        assert_eq!(significant(2.41234), "2.41");
        assert_eq!(significant(30411.3), "30411");
    }

    #[test]
    fn modes_run_none_first_and_a_baseline_only_when_given() {
        let opts = |modes: &[&str], baseline: Option<&str>| Options {
            quick: false,
            workloads: Vec::new(),
            hook_costs: false,
            rounds: None,
            modes: modes.iter().map(|m| m.to_string()).collect(),
            baseline: baseline.map(Into::into),
        };
        let names =
            |o: &Options| -> Vec<&str> { modes(o).unwrap().iter().map(|m| m.name()).collect() };
        assert_eq!(names(&opts(&[], None)), ["none", "floor", "peer", "sensor"]);
        assert_eq!(names(&opts(&["sensor"], None)), ["none", "sensor"]);
        // Any existing file stands for an agent build here.
        let file = "/proc/self/exe";
        assert_eq!(
            names(&opts(&["sensor"], Some(file))),
            ["none", "sensor", "baseline"]
        );
        assert_eq!(names(&opts(&[], Some(file))).len(), 5);
        let err = modes(&opts(&["baseline"], None)).unwrap_err().to_string();
        assert!(err.contains("--baseline PATH"), "{err}");
        let err = modes(&opts(&["nope"], None)).unwrap_err().to_string();
        assert!(err.contains("floor, peer, sensor, baseline"), "{err}");
    }

    #[test]
    fn each_traced_run_is_compared_with_the_untraced_runs_around_it() {
        use Mode::*;
        assert_eq!(
            bracketed(&[None, Floor, Sensor]),
            [None, Floor, None, Sensor, None]
        );
        assert_eq!(bracketed(&[Sensor, Peer]), [None, Sensor, None, Peer, None]);
        let run = |mode, value, p99_ms| Sample {
            mode,
            value: workload::Measurement { value, p99_ms },
        };
        // A machine slowing down over the round: 100, then 90 and 80 req/s untraced.
        let round = vec![
            run(None, 100.0, Some(2.0)),
            run(Floor, 95.0, Option::None),
            run(None, 90.0, Some(2.0)),
            run(Sensor, 85.0, Some(3.0)),
            run(None, 80.0, Some(2.0)),
        ];
        let value = |s: &Sample| Some(s.value.value);
        assert_eq!(bracket(&round, 1, value), Some(95.0));
        assert_eq!(bracket(&round, 3, value), Some(85.0));
        // A run at an end has one neighbour; the neighbours' p99 whatever the run's own (a run
        // without one is left out of the p99 ratio by `row`).
        assert_eq!(bracket(&round[1..], 0, value), Some(90.0));
        assert_eq!(bracket(&round, 1, |s| s.value.p99_ms), Some(2.0));
        let w = workload::ALL[5];
        assert!(w.is_rate());
        let row = row(w, Size::FULL, &[None, Floor, Sensor], &[round]);
        let cost = |m| row.ratios.iter().find(|(r, _)| *r == m).unwrap().1.unwrap();
        // The drift cancels: each traced run costs nothing against its neighbours.
        assert_eq!(cost(Floor).median, 1.0);
        assert_eq!(cost(Sensor).median, 1.0);
        assert_eq!(row.p99_ratio.unwrap().median, 1.5);
        assert_eq!(row.baseline, "90.0 req/s");
    }

    #[test]
    fn unknown_workloads_are_refused_with_the_list() {
        let err = select(&["dd".into()]).unwrap_err().to_string();
        assert!(err.contains("dd-host") && err.contains("latency"), "{err}");
        let (w, latency) = select(&["dd-host".into(), "latency".into()]).unwrap();
        assert_eq!((w.len(), latency), (1, true));
    }
}
