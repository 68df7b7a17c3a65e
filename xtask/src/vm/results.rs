//! Test results: parsed from libtest's output (the host run's and the guests' serial consoles),
//! saved per column as TSV, and printed as the kernel x hook set x test matrix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// The marker the test harness panics with when a test cannot run here
/// (`sensor_tests::runc::skip`).
const SKIP_MARKER: &str = "SENSOR-TEST-SKIP: ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// One test's result in one column: `binary::test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub test: String,
    pub outcome: Outcome,
}

/// The results of one libtest run of test binary `binary`, from its output.
///
/// A failed test whose panic message carries the skip marker is a skip with that reason; any
/// other failure keeps its panic message (first line) as the reason.
pub fn parse_libtest(binary: &str, output: &str) -> Vec<TestResult> {
    let mut status: Vec<(String, Option<bool>)> = Vec::new();
    let mut blocks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    // A test whose verdict a kernel message or a program's stderr on the serial console pushed
    // to the next line ("test x ... [  104.7] watchdog: ...", then "ok").
    let mut interrupted: Option<String> = None;
    let verdict_of = |v: &str| match v.trim() {
        "ok" => Some(true),
        "FAILED" => Some(false),
        _ => None,
    };
    for line in output.lines().map(|l| l.trim_end_matches('\r')) {
        if let (Some(name), Some(ok)) = (&interrupted, verdict_of(line)) {
            status.push((name.clone(), Some(ok)));
            interrupted = None;
        } else if let Some((name, verdict)) = line
            .strip_prefix("test ")
            .and_then(|r| r.rsplit_once(" ... "))
        {
            let name = name.trim().to_string();
            match verdict_of(verdict) {
                None if !verdict.trim_start().starts_with("ignored") => interrupted = Some(name),
                ok => status.push((name, ok)),
            }
        } else if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            current = Some(name.to_string());
        } else if line == "failures:" || line.starts_with("test result:") {
            current = None;
        } else if let Some(name) = &current {
            blocks
                .entry(name.clone())
                .or_default()
                .push(line.trim().to_string());
        }
    }
    status
        .into_iter()
        .filter_map(|(name, ok)| {
            let outcome = match ok? {
                true => Outcome::Pass,
                false => failure(blocks.get(&name).map(Vec::as_slice).unwrap_or_default()),
            };
            Some(TestResult {
                test: format!("{binary}::{name}"),
                outcome,
            })
        })
        .collect()
}

/// A failed test's outcome from its captured output: a skip if the harness said so, else a
/// failure with the panic message's first line.
fn failure(block: &[String]) -> Outcome {
    if let Some((_, reason)) = block.iter().find_map(|l| l.split_once(SKIP_MARKER)) {
        return Outcome::Skip(reason.trim().to_string());
    }
    let message = block
        .iter()
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .or_else(|| block.iter().find(|l| !l.is_empty()))
        .map(String::as_str)
        .unwrap_or("failed (no message)");
    Outcome::Fail(truncate(message, 200))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A column's results as TSV lines: `test \t pass|fail|skip \t reason`.
pub fn save(path: &Path, results: &[TestResult]) -> Result<()> {
    let mut text = String::new();
    for r in results {
        let (word, reason) = match &r.outcome {
            Outcome::Pass => ("pass", ""),
            Outcome::Fail(why) => ("fail", why.as_str()),
            Outcome::Skip(why) => ("skip", why.as_str()),
        };
        let reason = reason.replace(['\t', '\n'], " ");
        text.push_str(&format!("{}\t{word}\t{reason}\n", r.test));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

/// Reads what [`save`] wrote; None if the file does not exist.
pub fn load(path: &Path) -> Option<Vec<TestResult>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let test = parts.next()?.to_string();
                let word = parts.next()?;
                let reason = parts.next().unwrap_or("").to_string();
                let outcome = match word {
                    "pass" => Outcome::Pass,
                    "skip" => Outcome::Skip(reason),
                    _ => Outcome::Fail(reason),
                };
                Some(TestResult { test, outcome })
            })
            .collect(),
    )
}

/// The matrix: one row per test, one column per (kernel, hook set[, cgroup shape]); then the
/// reason of every failure and skip.
pub fn matrix(columns: &[(String, Vec<TestResult>)]) -> String {
    let tests: BTreeSet<&str> = columns
        .iter()
        .flat_map(|(_, rs)| rs.iter().map(|r| r.test.as_str()))
        .collect();
    let width = tests.iter().map(|t| t.len()).max().unwrap_or(4).max(4);
    let col_width = |name: &str| name.len().max(4);
    let mut out = format!("{:width$}", "test");
    for (name, _) in columns {
        out.push_str(&format!("  {name:w$}", w = col_width(name)));
    }
    out.push('\n');
    let mut notes = Vec::new();
    for test in &tests {
        out.push_str(&format!("{test:width$}"));
        for (name, results) in columns {
            let cell = match results.iter().find(|r| r.test == *test).map(|r| &r.outcome) {
                None => "-",
                Some(Outcome::Pass) => "pass",
                Some(Outcome::Fail(why)) => {
                    notes.push(format!("FAIL {name} {test}: {why}"));
                    "FAIL"
                }
                Some(Outcome::Skip(why)) => {
                    notes.push(format!("skip {name} {test}: {why}"));
                    "skip"
                }
            };
            out.push_str(&format!("  {cell:w$}", w = col_width(name)));
        }
        out.push('\n');
    }
    let count = |f: fn(&Outcome) -> bool| {
        columns
            .iter()
            .flat_map(|(_, rs)| rs.iter())
            .filter(|r| f(&r.outcome))
            .count()
    };
    out.push_str(&format!(
        "{} passed, {} failed, {} skipped (\"-\": not run in that column)\n",
        count(|o| *o == Outcome::Pass),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skip(_))),
    ));
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test a_pass ... ok
test b_skip ... FAILED
test c_fail ... FAILED
test d_ignored ... ignored

failures:

---- b_skip stdout ----

thread 'b_skip' panicked at tests/src/runc.rs:10:5:
SENSOR-TEST-SKIP: --hooks kprobe is not usable on this kernel: no kprobes
note: run with `RUST_BACKTRACE=1`

---- c_fail stdout ----

thread 'c_fail' panicked at tests/tests/x.rs:3:9:
no event: exec of sh; sensor stderr: ...
more

failures:
    b_skip
    c_fail

test result: FAILED. 1 passed; 2 failed; 1 ignored
";

    #[test]
    fn parses_pass_skip_fail_and_leaves_out_ignored() {
        let r = parse_libtest("bin", OUTPUT);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].test, "bin::a_pass");
        assert_eq!(r[0].outcome, Outcome::Pass);
        assert_eq!(
            r[1].outcome,
            Outcome::Skip("--hooks kprobe is not usable on this kernel: no kprobes".into())
        );
        assert_eq!(
            r[2].outcome,
            Outcome::Fail("no event: exec of sh; sensor stderr: ...".into())
        );
    }

    #[test]
    fn a_verdict_after_a_kernel_message_on_the_console() {
        let out =
            "test x ... [  104.765891] watchdog: BUG: soft lockup - CPU#0 stuck for 24s!\nok\n";
        let r = parse_libtest("n", out);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, Outcome::Pass);
        let out = "test y ... uring-tcp: bind and listen by syscall\nFAILED\n";
        assert!(matches!(
            parse_libtest("n", out)[0].outcome,
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn parallel_output_lines_and_crlf() {
        let r = parse_libtest("n", "test x ... ok\r\ntest y ... ok\r\n");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|t| t.outcome == Outcome::Pass));
    }

    #[test]
    fn save_load_round_trip_and_matrix() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        let path = dir.join("c.tsv");
        let results = parse_libtest("bin", OUTPUT);
        save(&path, &results).unwrap();
        assert_eq!(load(&path).unwrap(), results);
        let m = matrix(&[("6.1/fentry".into(), results)]);
        assert!(m.contains("bin::a_pass"), "{m}");
        assert!(m.contains("1 passed, 1 failed, 1 skipped"), "{m}");
        assert!(
            m.contains("skip 6.1/fentry bin::b_skip: --hooks kprobe"),
            "{m}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
