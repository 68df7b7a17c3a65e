//! Reading a guest's serial console: which runs of its plan ended, which one the guest died
//! in, and why (a kernel panic or oops, named with its first console lines; a time-out; a
//! guest that stopped without a word).

use super::guest::Run;
use super::results::{self, TestResult};

/// Lines that start a kernel's report of its own failure.
const DEATH_MARKERS: &[&str] = &[
    "Kernel panic",
    "Oops",
    "BUG:",
    "general protection fault",
    "Fatal exception",
    "watchdog: BUG",
    "kernel BUG at",
];

/// How many console lines of a death report the matrix quotes.
const DEATH_LINES: usize = 4;

/// What became of one run of a boot's plan.
#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// It printed its END marker: the results of every test it ran.
    Ended(Vec<TestResult>),
    /// It began and the guest died before it ended.
    Died {
        /// The tests that finished before the death.
        finished: Vec<TestResult>,
        /// The test that was running (its libtest line had no verdict), if any.
        running: Option<String>,
        death: Death,
    },
    /// The guest never began it.
    NotStarted,
}

/// Why a guest stopped in the middle of a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Death {
    /// The kernel reported a panic or oops: its first console lines.
    Panic(String),
    /// The guest did not power off before the deadline and was killed.
    TimedOut,
    /// qemu exited with nothing on the console that says why.
    Silent,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Death::Panic(lines) => write!(f, "guest kernel panic: {lines}"),
            Death::TimedOut => write!(f, "the guest timed out and was killed"),
            Death::Silent => write!(
                f,
                "the guest stopped without a kernel message (see the console log)"
            ),
        }
    }
}

/// The outcome of each of `runs` (in order) from one boot's `console`.
pub fn outcomes(console: &str, runs: &[Run], timed_out: bool) -> Vec<RunOutcome> {
    runs.iter()
        .map(|run| {
            let begin = format!("VMTEST-BEGIN {} {} {}\n", run.id, run.column, run.binary);
            let end = format!("VMTEST-END {} {} {} rc=", run.id, run.column, run.binary);
            let Some((_, rest)) = console.split_once(&begin) else {
                return RunOutcome::NotStarted;
            };
            if let Some((block, _)) = rest.split_once(&end) {
                return RunOutcome::Ended(results::parse_libtest(&run.binary, block));
            }
            RunOutcome::Died {
                finished: results::parse_libtest(&run.binary, rest),
                running: running_test(rest),
                death: match death_report(rest) {
                    Some(lines) => Death::Panic(lines),
                    None if timed_out => Death::TimedOut,
                    None => Death::Silent,
                },
            }
        })
        .collect()
}

/// The test whose `test NAME ... ` line has no verdict: the one the guest was running.
/// (The kernel's report may follow on the same console line.)
fn running_test(block: &str) -> Option<String> {
    block.lines().rev().find_map(|line| {
        let (name, verdict) = line.strip_prefix("test ")?.split_once(" ... ")?;
        let verdict = verdict.trim();
        let done = ["ok", "FAILED", "ignored"].contains(&verdict);
        (!done).then(|| name.trim().to_string())
    })
}

/// Whether a console line starts the kernel's report of its own failure.
pub fn starts_death_report(line: &str) -> bool {
    DEATH_MARKERS.iter().any(|m| line.contains(m))
}

/// The first lines of the kernel's first failure report in `block`, joined with " | ".
fn death_report(block: &str) -> Option<String> {
    let lines: Vec<&str> = block.lines().collect();
    let start = lines.iter().position(|l| starts_death_report(l))?;
    let quoted: Vec<&str> = lines[start..]
        .iter()
        .map(|l| strip_timestamp(l))
        .filter(|l| !l.is_empty())
        .take(DEATH_LINES)
        .collect();
    Some(quoted.join(" | "))
}

/// `[  123.456789] text` -> `text`.
fn strip_timestamp(line: &str) -> &str {
    let t = line.trim();
    match t.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest.trim(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::super::results::Outcome;
    use super::*;

    fn run(id: usize, binary: &str) -> Run {
        Run {
            id,
            column: "6.12/tracepoint".into(),
            hooks: "default".into(),
            shape: "docker".into(),
            binary: binary.into(),
            filters: Vec::new(),
        }
    }

    /// The shape of the 6.12 console when the guest died in the tamper run.
    const PANIC: &str = "\
VMTEST-BEGIN 0 6.12/tracepoint network
test a ... ok
VMTEST-END 0 6.12/tracepoint network rc=0
VMTEST-BEGIN 1 6.12/tracepoint tamper
test crs016 ... ok
test crs017_tracefs ... [  412.101010] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[  412.101011] CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 6.12.57+deb13-amd64
[  412.101012]
[  412.101013] RIP: 0010:__schedule+0x407/0xb80
[  412.101014] Code: 0f 1f 44 00 00 cc
[  412.101015] Kernel panic - not syncing: Fatal exception in interrupt
";

    #[test]
    fn a_panic_is_named_with_its_first_lines_and_the_runs_behind_it_are_not_started() {
        let runs = [run(0, "network"), run(1, "tamper"), run(2, "cleanup")];
        let out = outcomes(PANIC, &runs, false);
        assert!(matches!(&out[0], RunOutcome::Ended(r) if r.len() == 1));
        let RunOutcome::Died {
            finished,
            running,
            death,
        } = &out[1]
        else {
            panic!("the tamper run died: {:?}", out[1]);
        };
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].outcome, Outcome::Pass);
        assert_eq!(running.as_deref(), Some("crs017_tracefs"));
        assert_eq!(
            death.to_string(),
            "guest kernel panic: test crs017_tracefs ... [  412.101010] Oops: int3: 0000 [#1] \
             PREEMPT SMP NOPTI | CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted \
             6.12.57+deb13-amd64 | RIP: 0010:__schedule+0x407/0xb80 | Code: 0f 1f 44 00 00 cc"
        );
        assert_eq!(out[2], RunOutcome::NotStarted);
    }

    #[test]
    fn time_out_and_silent_stop() {
        let console = "VMTEST-BEGIN 0 6.12/tracepoint network\ntest a ... ok\n";
        let runs = [run(0, "network")];
        let died = |timed_out| match outcomes(console, &runs, timed_out).remove(0) {
            RunOutcome::Died { death, running, .. } => (death, running),
            other => panic!("{other:?}"),
        };
        assert_eq!(died(true), (Death::TimedOut, None));
        assert_eq!(died(false), (Death::Silent, None));
    }

    #[test]
    fn repeated_runs_are_told_apart_by_id() {
        let console = "VMTEST-BEGIN 0 c network\ntest a ... ok\nVMTEST-END 0 c network rc=0\n\
                       VMTEST-BEGIN 1 c network\ntest a ... FAILED\nVMTEST-END 1 c network rc=1\n";
        let mut r0 = run(0, "network");
        r0.column = "c".into();
        let mut r1 = r0.clone();
        r1.id = 1;
        let out = outcomes(console, &[r0, r1], false);
        assert!(matches!(&out[0], RunOutcome::Ended(r) if r[0].outcome == Outcome::Pass));
        assert!(matches!(&out[1], RunOutcome::Ended(r) if r[0].outcome != Outcome::Pass));
    }
}
