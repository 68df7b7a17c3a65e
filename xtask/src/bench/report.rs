//! The bench's results and how they are shown: the tables printed on stdout, the generated
//! `docs/benchmarks.md`, and the chart's input.
//!
//! Every overhead figure is a *cost ratio* to the "none" mode measured in the same round: how
//! much longer the same work took (for a rate, how many fewer per second: none / mode). 1.00
//! is free, 1.15 is 15% slower. Each cell shows the median over the rounds and the smallest and
//! largest per-round ratio, so the machine's noise stands next to the figure.

use std::fmt::Write as _;

use super::chart::{ChartBar, ChartGroup};
use super::mode::Mode;

/// Median, smallest and largest of the per-round cost ratios of one workload and mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: s[0],
            max: s[n - 1],
        })
    }
}

/// One workload's line of the overhead table.
pub struct Row {
    pub name: String,
    pub label: String,
    /// What was measured, with its median value without a sensor ("2.41 s", "31250 req/s").
    pub baseline: String,
    /// Cost ratio per traced mode (floor, peer, sensor), when measured.
    pub ratios: Vec<(Mode, Option<Spread>)>,
    /// The target cost ratio for the sensor, with how the issue states it.
    pub target: Option<(f64, &'static str)>,
    /// nginx p99 latency ratio (sensor to none), where the workload reports one.
    pub p99_ratio: Option<Spread>,
}

/// What `sensor run` did: one run, or a workload's runs over the rounds merged.
pub struct SensorRun {
    pub what: String,
    pub rounds: usize,
    /// How long the measured work ran under the sensor (0: not a timed workload).
    pub seconds: f64,
    /// The agent's CPU time (user + system) while the work ran.
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// Events the agent emitted while the work ran.
    pub events: u64,
    /// `(ring, dropped because full, dropped by the per-cgroup rate limit)`.
    pub drops: Vec<(String, u64, u64)>,
    pub decode_errors: u64,
    /// Items the gRPC subscriber's queue dropped (`missed`), where a subscriber ran.
    pub subscriber_missed: Option<u64>,
    /// The sensor's start-up line (programs attached, hook set).
    pub ready_line: String,
}

impl SensorRun {
    /// Adds another round's run of the same work.
    pub fn merge(&mut self, other: SensorRun) {
        self.rounds += other.rounds;
        self.seconds += other.seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
        self.events += other.events;
        self.decode_errors += other.decode_errors;
        for (ring, full, limited) in other.drops {
            match self.drops.iter_mut().find(|(r, _, _)| *r == ring) {
                Some(d) => {
                    d.1 += full;
                    d.2 += limited;
                }
                None => self.drops.push((ring, full, limited)),
            }
        }
        if let Some(n) = other.subscriber_missed {
            *self.subscriber_missed.get_or_insert(0) += n;
        }
    }
}

/// Alert latency of one phase: receipt by a `WatchAlerts` client minus the trigger's kernel time.
pub struct Latency {
    pub phase: String,
    pub alerts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// p99 of the agent's part: the alert's `detected_time` minus its trigger time.
    pub agent_p99_ms: f64,
}

/// Where and how the figures were taken.
pub struct Context {
    pub command: String,
    pub machine: String,
    pub kernel: String,
    pub hook_set: String,
    pub date: String,
    pub rounds: usize,
}

pub struct Report {
    pub context: Context,
    pub rows: Vec<Row>,
    pub runs: Vec<SensorRun>,
    pub latency: Vec<Latency>,
}

pub const LATENCY_TARGETS: &str = "p99 <= 10 ms idle, <= 50 ms under the exec storm";
pub const RSS_TARGET_KIB: u64 = 64 << 10;

fn cell(s: Option<Spread>) -> String {
    s.map_or_else(
        || "—".to_string(),
        |s| format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max),
    )
}

fn verdict(row: &Row) -> String {
    let sensor = row
        .ratios
        .iter()
        .find(|(m, _)| *m == Mode::Sensor)
        .and_then(|(_, s)| *s);
    match (row.target, sensor) {
        (Some((t, how)), Some(s)) => {
            let mark = if s.median <= t { "met" } else { "missed" };
            format!("{how}: {mark}")
        }
        (Some((_, how)), None) => how.to_string(),
        (None, _) => "—".to_string(),
    }
}

impl Report {
    /// The whole document: `docs/benchmarks.md` and, the same text, the bench's stdout.
    pub fn markdown(&self) -> String {
        let c = &self.context;
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `{}` on {}. Do not edit: run the command again.\n",
            c.command, c.date
        );
        let _ = writeln!(md, "- machine: {}", c.machine);
        let _ = writeln!(md, "- kernel: {}", c.kernel);
        let _ = writeln!(md, "- sensor hook set: {}", c.hook_set);
        let _ = writeln!(
            md,
            "- {} rounds; in each, every workload under every mode back to back, each traced \
             mode between two runs with none (the traced modes' order reversed every other \
             round)\n",
            c.rounds
        );
        md.push_str(
            "Cost ratio to no sensor, per round: the same work's time with the mode over the \
             mean of its times without just before and after (for rates, the mean rate without \
             over the rate with), so the machine's drift over the round cancels. Median over \
             the rounds, \
             then (smallest–largest). **floor**: bpftrace holding one empty \
             `syscalls:sys_enter_setns` tracepoint, what the syscall slow path alone costs. \
             **peer**: bpftrace printing exec with arguments, connect, accept and sendto/recvmsg \
             (ICMP) for the whole node. **sensor**: `sensor run` with its default hooks and rules, \
             JSON to a file. **baseline** (`--baseline PATH`): another build of the agent, run \
             as the sensor is. Chart: [benchmarks.svg](benchmarks.svg).\n\n",
        );
        md.push_str("## Overhead\n\n");
        // The traced modes measured, in their round-robin order.
        let modes: Vec<Mode> = (super::mode::ALL.into_iter())
            .filter(|m| {
                self.rows
                    .iter()
                    .any(|r| r.ratios.iter().any(|(x, _)| x == m))
            })
            .collect();
        md.push_str("| workload | none |");
        for m in &modes {
            let _ = write!(md, " {} |", m.name());
        }
        md.push_str(" sensor target |\n|---|---|");
        md.push_str(&"---|".repeat(modes.len() + 1));
        md.push('\n');
        for row in &self.rows {
            let _ = write!(md, "| {} (`{}`) | {} |", row.label, row.name, row.baseline);
            for m in &modes {
                let ratio = row.ratios.iter().find(|(mode, _)| mode == m);
                let _ = write!(md, " {} |", cell(ratio.and_then(|(_, s)| *s)));
            }
            let _ = writeln!(md, " {} |", verdict(row));
        }
        let p99: Vec<&Row> = self.rows.iter().filter(|r| r.p99_ratio.is_some()).collect();
        if !p99.is_empty() {
            md.push_str("\nnginx p99 latency, sensor over none: ");
            let parts: Vec<String> = p99
                .iter()
                .map(|r| format!("`{}` {}", r.name, cell(r.p99_ratio)))
                .collect();
            md.push_str(&parts.join("; "));
            md.push('\n');
        }
        let _ = writeln!(
            md,
            "\n## What the sensor did\n\nOne `sensor run` per workload and round (with `--quick`, \
             one per round: the row `all workloads`), figures summed over the rounds (peak RSS: \
             the largest). Agent CPU from `/proc/PID/stat` (user + \
             system) while the work ran; events the agent emitted meanwhile; drops from its last \
             health report. Targets: peak RSS <= {} MiB; 0 kernel drops with default sizes.\n",
            RSS_TARGET_KIB >> 10
        );
        md.push_str(
            "| run | rounds | agent CPU s | per second of work | events | events/s | peak RSS (VmHWM) | kernel drops (ring: full/rate-limited) | undecodable | subscriber queue drops |\n",
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.runs {
            let per = |x: f64, decimals: usize| {
                if r.seconds > 0.0 {
                    format!("{:.decimals$}", x / r.seconds)
                } else {
                    "—".to_string()
                }
            };
            let drops: Vec<String> = r
                .drops
                .iter()
                .map(|(ring, full, limited)| format!("{ring}: {full}/{limited}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {} | {} | {} | {:.1} MiB | {} | {} | {} |",
                r.what,
                r.rounds,
                r.cpu_seconds,
                per(r.cpu_seconds, 3),
                r.events,
                per(r.events as f64, 0),
                r.peak_rss_kib as f64 / 1024.0,
                drops.join(", "),
                r.decode_errors,
                r.subscriber_missed
                    .map_or_else(|| "no subscriber".to_string(), |n| n.to_string()),
            );
        }
        let _ = writeln!(
            md,
            "\n## Alert latency\n\nA `WatchAlerts` client (`sensor watch -o json`) stamps each alert \
             on receipt; latency is that time minus the alert's trigger time (the kernel's \
             timestamp of the `nc -e` exec in a container). Targets: {LATENCY_TARGETS}.\n"
        );
        md.push_str(
            "| phase | alerts | p50 ms | p99 ms | max ms | p99 ms in the agent (to detected_time) |\n\
             |---|---|---|---|---|---|\n",
        );
        for l in &self.latency {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                l.phase, l.alerts, l.p50_ms, l.p99_ms, l.max_ms, l.agent_p99_ms
            );
        }
        md
    }

    /// One group per workload (named as `--workload` names it), one bar per traced mode.
    pub fn chart_groups(&self) -> Vec<ChartGroup> {
        self.rows
            .iter()
            .map(|row| ChartGroup {
                label: row.name.clone(),
                bars: row
                    .ratios
                    .iter()
                    .filter_map(|(mode, s)| {
                        s.map(|s| ChartBar {
                            mode: mode.name(),
                            median: s.median,
                            min: s.min,
                            max: s.max,
                        })
                    })
                    .collect(),
                target: row.target.map(|(t, _)| t),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[1.3, 1.0, 1.1, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max), (1.1, 1.0, 1.3));
        assert_eq!(Spread::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Spread::of(&[]).is_none());
    }

    fn sample() -> Report {
        let s = |m, lo, hi| {
            Some(Spread {
                median: m,
                min: lo,
                max: hi,
            })
        };
        Report {
            context: Context {
                command: "cargo xtask bench".into(),
                machine: "2 cores".into(),
                kernel: "6.18.44".into(),
                hook_set: "default".into(),
                date: "2026-12-02".into(),
                rounds: 5,
            },
            rows: vec![Row {
                name: "dd-host".into(),
                label: "dd 1-byte (host)".into(),
                baseline: "2.41 s".into(),
                ratios: vec![
                    (Mode::Floor, s(1.154, 1.1, 1.2)),
                    (Mode::Peer, None),
                    (Mode::Sensor, s(1.168, 1.15, 1.19)),
                ],
                target: Some((1.02, "<= 1.02")),
                p99_ratio: None,
            }],
            runs: vec![SensorRun {
                what: "`dd-host`".into(),
                rounds: 5,
                seconds: 10.0,
                cpu_seconds: 0.5,
                peak_rss_kib: 20 << 10,
                events: 100,
                drops: vec![("process".into(), 0, 3)],
                decode_errors: 0,
                subscriber_missed: None,
                ready_line: String::new(),
            }],
            latency: vec![Latency {
                phase: "idle".into(),
                alerts: 200,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0,
                agent_p99_ms: 0.5,
            }],
        }
    }

    /// Every table row has as many cells as its header, and the figures land in their columns.
    #[test]
    fn markdown_tables_are_well_formed() {
        let md = sample().markdown();
        assert!(md.starts_with("# Benchmarks\n"));
        assert!(md.contains("Generated by `cargo xtask bench` on 2026-12-02"));
        let mut header_cells = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                header_cells = None;
                continue;
            }
            let cells = line.matches('|').count();
            match header_cells {
                None => header_cells = Some(cells),
                Some(n) => assert_eq!(cells, n, "row has wrong cell count: {line}"),
            }
        }
        assert!(md.contains(
            "| dd 1-byte (host) (`dd-host`) | 2.41 s | 1.154 (1.100–1.200) | — | 1.168 (1.150–1.190) | <= 1.02: missed |"
        ));
        assert!(md.contains(
            "| `dd-host` | 5 | 0.50 | 0.050 | 100 | 10 | 20.0 MiB | process: 0/3 | 0 | no subscriber |"
        ));
        assert!(md.contains("| idle | 200 | 1.00 | 2.00 | 3.00 | 0.50 |"));
        assert!(md.contains("[benchmarks.svg](benchmarks.svg)"));
    }

    #[test]
    fn runs_merge_by_ring() {
        let mut a = sample().runs.remove(0);
        let mut b = sample().runs.remove(0);
        b.drops = vec![("process".into(), 1, 1), ("network".into(), 0, 7)];
        b.peak_rss_kib = 10 << 10;
        a.merge(b);
        assert_eq!((a.rounds, a.events, a.peak_rss_kib), (10, 200, 20 << 10));
        assert_eq!(
            a.drops,
            [("process".to_string(), 1, 4), ("network".to_string(), 0, 7)]
        );
    }

    #[test]
    fn chart_has_a_bar_per_measured_mode() {
        let groups = sample().chart_groups();
        assert_eq!(groups.len(), 1);
        let modes: Vec<&str> = groups[0].bars.iter().map(|b| b.mode).collect();
        assert_eq!(modes, ["floor", "sensor"]);
        assert_eq!(groups[0].target, Some(1.02));
    }
}
