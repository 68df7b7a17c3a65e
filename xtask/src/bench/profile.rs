//! The second half of `--hook-costs`: what the sensor's programs cost the workload's own
//! processes, the kernel's work of running them included, from a CPU profile of the node.
//!
//! The run-time statistics ([`super::hook_cost`]) time each program from its first instruction
//! to its last, and add two clock reads to every run. What runs a program also costs: the
//! kernel's loop over a cgroup's programs (`__cgroup_bpf_run_filter_skb` saves and restores the
//! packet's control block around them), a tracepoint's dispatch (`bpf_trace_run*`). And
//! which task pays matters: in a connect storm the client's single thread also carries the
//! server's side of each handshake (the kernel delivers a veth's packets in the sender's
//! softirq), so its share bounds the request rate, while the machine's total share does not.
//!
//! Each workload runs once more under the sensor, statistics off, while `perf record -a -g`
//! samples every CPU; a sample counts for the sensor when its call chain passes through one of
//! the kernel's program runners ([`RUNNERS`]) or a program itself (`bpf_prog_*`). Reported per
//! busy process: its share of the samples, and the share of its own samples in the sensor's
//! programs by runner. A share is a count of samples, so its noise is binomial (a 4% share of
//! 15 000 samples is 4.0 +- 0.16%), far below the run-to-run drift of a request rate: two
//! builds compare better here than in the overhead table. Effects outside the call chain
//! (caches the programs evict) are not counted.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::{
    fixture::Fixture,
    mode::{Mode, Paths},
    workload::{Size, Workload},
};
use crate::util;

/// The kernel functions that run the sensor's kinds of programs, by the name the report gives
/// (`bpf_trace_run` for its variants by argument count, `bpf_trace_run1` to `12`). They run
/// every program at their hook, another tool's too: the bench's node runs the sensor's alone.
const RUNNERS: [(&str, &str); 4] = [
    ("cgroup skb", "__cgroup_bpf_run_filter_skb"),
    ("cgroup sock", "__cgroup_bpf_run_filter_sk"),
    ("cgroup sock_addr", "__cgroup_bpf_run_filter_sock_addr"),
    ("tracing", "bpf_trace_run"),
];
/// What stops `perf record`.
const SIGINT: i32 = 2;
/// A process is listed when it holds at least this share of the samples.
const BUSY: f64 = 0.05;

/// Samples of one process: all of them, and those in each runner (or `other`: a program with
/// no runner in its chain: a TC classifier's, or a chain the unwinder cut short at the
/// program, which then names the user-space call that led there).
#[derive(Default)]
struct Tally {
    samples: u64,
    sensor: u64,
    by_runner: BTreeMap<&'static str, u64>,
}

/// The report section, as markdown.
pub fn measure(fx: &Fixture, paths: &Paths, selected: &[Workload], size: Size) -> Result<String> {
    let sensor = Mode::Sensor.start(paths)?;
    let mut md = String::from(
        "\n## What the programs cost the workload's processes (`perf record`)\n\n\
         Each workload once more under the sensor, run-time statistics off, with `perf record -a \
         -g` sampling both cores: per process with at least 5% of the samples, its share of \
         them, and how many of its own samples were in the sensor's programs, counted from the \
         kernel function that ran them (so the kernel's work around each run is included; \
         `other`: a program whose call chain names no such function, a TC classifier's or one \
         the unwinder cut short). In \
         a connect storm the client's thread also carries the server's side of each handshake \
         and sets the request rate.\n",
    );
    for w in selected {
        util::step(format!("profile: {}", w.name()));
        let data = paths.dir.join(format!("profile-{}.data", w.name()));
        let tallies = record(&data, || w.run(fx, size).map(drop))?;
        md.push_str(&section(&w.name(), &tallies));
    }
    sensor.stop("profile")?;
    Ok(md)
}

/// Runs `work` while `perf` samples every CPU into `data`, and tallies the samples.
fn record(data: &Path, work: impl FnOnce() -> Result<()>) -> Result<BTreeMap<String, Tally>> {
    let perf = Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `perf record` (install linux-perf: `cargo xtask setup --for bench`)")?;
    let worked = work();
    // perf writes its file on SIGINT, then ends by that signal.
    util::signal(perf.id().into(), "INT");
    let out = perf
        .wait_with_output()
        .context("waiting for `perf record`")?;
    worked?;
    if !(out.status.success() || out.status.signal() == Some(SIGINT)) {
        bail!(
            "`perf record` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let script = util::output(
        Command::new("perf")
            .args(["script", "-F", "comm,ip,sym", "-i"])
            .arg(data),
    )
    .context("`perf script`")?;
    Ok(tally(&script))
}

/// Per process name, the samples of `perf script -F comm,ip,sym` output: blocks separated by
/// a blank line, the process name first, then one `address symbol+offset` line per frame.
fn tally(script: &str) -> BTreeMap<String, Tally> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for block in script.split("\n\n") {
        let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(comm) = lines.next() else { continue };
        let frames: Vec<&str> = lines
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|s| s.split('+').next().unwrap_or(s))
            .collect();
        let t = tallies.entry(comm.to_string()).or_default();
        t.samples += 1;
        let runner = frames.iter().find_map(|s| runner_of(s)).or_else(|| {
            frames
                .iter()
                .any(|s| s.starts_with("bpf_prog_"))
                .then_some("other")
        });
        if let Some(runner) = runner {
            t.sensor += 1;
            *t.by_runner.entry(runner).or_default() += 1;
        }
    }
    tallies
}

/// The runner a frame's symbol names: the symbol without a compiler suffix (`.isra.0`) equal
/// to one of [`RUNNERS`], `bpf_trace_run1` to `bpf_trace_run12` standing for `bpf_trace_run`.
/// (Equal, not a prefix: `__cgroup_bpf_run_filter_sk` begins `__cgroup_bpf_run_filter_skb`.)
fn runner_of(symbol: &str) -> Option<&'static str> {
    let base = symbol.split('.').next().unwrap_or(symbol);
    let base = match base.strip_prefix("bpf_trace_run") {
        Some(args) if !args.is_empty() && args.bytes().all(|b| b.is_ascii_digit()) => {
            "bpf_trace_run"
        }
        _ => base,
    };
    RUNNERS
        .iter()
        .find(|(_, function)| *function == base)
        .map(|(name, _)| *name)
}

/// One workload's table.
fn section(name: &str, tallies: &BTreeMap<String, Tally>) -> String {
    let total: u64 = tallies.values().map(|t| t.samples).sum();
    let mut busy: Vec<(&String, &Tally)> = tallies
        .iter()
        .filter(|(_, t)| t.samples as f64 >= BUSY * total as f64)
        .collect();
    busy.sort_by_key(|(_, t)| std::cmp::Reverse(t.samples));
    let pct = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
    let mut md = format!(
        "\n`{name}`: {total} samples\n\n\
         | process | share of samples | in the sensor's programs | {} | other |\n|{}\n",
        RUNNERS.map(|r| r.0).join(" | "),
        "---|".repeat(RUNNERS.len() + 4)
    );
    for (comm, t) in busy {
        let runners: Vec<String> = RUNNERS
            .iter()
            .map(|r| r.0)
            .chain(["other"])
            .map(|r| {
                format!(
                    "{:.2}%",
                    pct(t.by_runner.get(r).copied().unwrap_or(0), t.samples)
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {comm} | {:.1}% | {:.2}% | {} |",
            pct(t.samples, total),
            pct(t.sensor, t.samples),
            runners.join(" | ")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "wrk \n\
        \tffffffff81 bpf_prog_a0bc_inet_sock_set_s+0x1c\n\
        \tffffffff82 bpf_trace_run3+0x90\n\
        \tffffffff83 tcp_set_state+0x10\n\
        \n\
        wrk \n\
        \tffffffff84 tcp_v4_rcv+0x10\n\
        \n\
        nginx \n\
        \tffffffff85 __bpf_prog_run_save_cb+0x10\n\
        \tffffffff86 __cgroup_bpf_run_filter_skb+0x20\n\
        \n\
        nginx \n\
        \tffffffff87 bpf_prog_1234_icmp_tc_ingress+0x5\n\
        \tffffffff88 tcx_run+0x5\n";

    #[test]
    fn samples_count_by_the_runner_in_their_chain() {
        let t = tally(SCRIPT);
        assert_eq!((t["wrk"].samples, t["wrk"].sensor), (2, 1));
        assert_eq!(t["wrk"].by_runner["tracing"], 1);
        assert_eq!((t["nginx"].samples, t["nginx"].sensor), (2, 2));
        assert_eq!(t["nginx"].by_runner["cgroup skb"], 1);
        assert_eq!(t["nginx"].by_runner["other"], 1);
    }

    #[test]
    fn a_runner_is_named_by_its_whole_symbol() {
        assert_eq!(runner_of("__cgroup_bpf_run_filter_skb"), Some("cgroup skb"));
        assert_eq!(runner_of("__cgroup_bpf_run_filter_sk"), Some("cgroup sock"));
        assert_eq!(
            runner_of("__cgroup_bpf_run_filter_sock_addr.isra.0"),
            Some("cgroup sock_addr")
        );
        assert_eq!(runner_of("bpf_trace_run12"), Some("tracing"));
        assert_eq!(runner_of("bpf_trace_runner"), None);
        assert_eq!(runner_of("__cgroup_bpf_run_filter_sock_ops"), None);
    }

    #[test]
    fn the_table_lists_busy_processes_with_their_shares() {
        let md = section("connect-container", &tally(SCRIPT));
        assert!(md.contains("`connect-container`: 4 samples"), "{md}");
        assert!(md.contains("\n|---|---|---|---|---|---|---|---|\n"), "{md}");
        assert!(
            md.contains("| wrk | 50.0% | 50.00% | 0.00% | 0.00% | 0.00% | 50.00% | 0.00% |"),
            "{md}"
        );
        assert!(
            md.contains("| nginx | 50.0% | 100.00% | 50.00% | 0.00% | 0.00% | 0.00% | 50.00% |"),
            "{md}"
        );
    }
}
