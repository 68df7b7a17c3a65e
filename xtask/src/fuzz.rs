//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the cargo-fuzz targets in `fuzz/` (libFuzzer
//! with AddressSanitizer, nightly): the ring record decoder, the condition parser, rule YAML,
//! the spool's recovery and the Docker API's JSON.
//!
//! Each target first replays its kept crashes (`fuzz/regressions/TARGET/`, which must all pass
//! now), then fuzzes for N seconds from its seeds (`fuzz/seeds/TARGET/`) and the corpus grown
//! by earlier runs on this machine (`target/fuzz-corpus/TARGET/`). A new crash is written to
//! `fuzz/regressions/TARGET/` and fails the run: fix it and commit the file, so every later run
//! replays it. `cargo xtask test` runs each target briefly.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, run, step};

/// The targets (`fuzz/fuzz_targets/NAME.rs`).
const TARGETS: [&str; 5] = [
    "ring_record",
    "condition",
    "rule_yaml",
    "spool_segment",
    "docker_json",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz when `cargo fuzz` is missing.
fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let installed = util::cargo(root)?
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    step(format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 1 min)..."
    ));
    let mut cmd = util::cargo(root)?;
    cmd.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]);
    run(&mut cmd).context("installing cargo-fuzz failed (it needs crates.io)")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// `cargo +nightly fuzz run TARGET` in `fuzz/`, with libFuzzer options after `--`.
fn cargo_fuzz(root: &Path, target: &str) -> Result<Command> {
    let mut cmd = util::cargo_nightly(root)?;
    cmd.current_dir(root.join("fuzz"))
        .args(["fuzz", "run", target]);
    Ok(cmd)
}

/// Runs `targets` (all when empty) for `seconds` each after replaying their kept crashes.
pub fn fuzz(root: &Path, seconds: u64, targets: &[String]) -> Result<()> {
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "no fuzz target {t:?}; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    ensure_cargo_fuzz(root)?;
    let fuzz_dir = root.join("fuzz");
    let mut failed = Vec::new();
    for target in targets {
        let regressions = fuzz_dir.join("regressions").join(target);
        let kept = files_in(&regressions);
        if !kept.is_empty() {
            step(format!(
                "fuzz {target}: replaying {} kept crashes",
                kept.len()
            ));
            let mut cmd = cargo_fuzz(root, target)?;
            cmd.arg("--").args(&kept).arg("-runs=1");
            if run(&mut cmd).is_err() {
                failed.push(format!(
                    "{target} (a kept crash in {})",
                    regressions.display()
                ));
                continue;
            }
        }
        let corpus = util::target_dir(root).join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        std::fs::create_dir_all(&regressions)
            .with_context(|| format!("creating {}", regressions.display()))?;
        step(format!("fuzz {target}: {seconds} s"));
        let mut cmd = cargo_fuzz(root, target)?;
        cmd.arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", regressions.display()))
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1");
        if run(&mut cmd).is_err() {
            failed.push(format!(
                "{target} (see above: a build error, or a crash saved in {}: fix it, then \
                 commit the file)",
                regressions.display()
            ));
        }
    }
    if !failed.is_empty() {
        bail!("fuzzing failed: {}", failed.join("; "));
    }
    step("fuzz: no crash");
    Ok(())
}
