//! `cargo xtask test [--no-lint] [-- TEST-FILTER...]`: the whole check that CI runs.
//!
//! setup (incl. Debian packages) -> eBPF build -> lint -> agent build -> unit tests -> each
//! fuzz target for 20 s -> dockerd + test image -> integration tests (real containers against the real sensor) ->
//! stop the dockerd this run started (also when a step failed) -> the VM smoke subset
//! (Debian 6.1 under qemu with the default, kprobe and syscall hook sets) and the kernel matrix.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::docker::{self, Dockerd};
use crate::setup::{self, Purpose};
use crate::util::{self, fmt_duration, run, step};
use crate::{build_agent, build_ebpf, fuzz, image, latency, lint, python, vm};

/// Records how long each step took, for the summary line.
struct Steps {
    started: Instant,
    done: Vec<(&'static str, Duration)>,
    failed: Option<&'static str>,
}

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        self.done.push((name, t.elapsed()));
        if r.is_err() {
            self.failed = Some(name);
        }
        r
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(n, d)| format!("{n} {}", fmt_duration(*d)))
            .collect();
        format!(
            "in {} ({})",
            fmt_duration(self.started.elapsed()),
            parts.join(", ")
        )
    }
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u64 = 20;

/// How `cargo xtask test` runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Skip rustfmt and clippy.
    pub no_lint: bool,
    /// Remove dockerd's state before starting it ([`docker::forget_state`]).
    pub docker_first_start: bool,
}

pub fn test(root: &Path, options: Options, filter: &[String]) -> Result<()> {
    util::require_root(
        "the tests need root (eBPF, Docker); run `cargo xtask test` as root \
         (or `sudo -E env \"PATH=$PATH\" cargo xtask test`)",
    )?;
    let mut steps = Steps {
        started: Instant::now(),
        done: Vec::new(),
        failed: None,
    };
    let result = test_steps(root, options, filter, &mut steps);
    let summary = steps.summary();
    match &result {
        Ok(()) => step(format!("test: all passed {summary}")),
        Err(_) => step(format!(
            "test: FAILED at {} {summary}",
            steps.failed.unwrap_or("?")
        )),
    }
    result
}

fn test_steps(root: &Path, options: Options, filter: &[String], steps: &mut Steps) -> Result<()> {
    steps.time("setup", || setup::setup(Purpose::Test))?;
    // The eBPF object comes first so that clippy, the build and the unit tests all see the
    // same SENSOR_BPF_OBJ (otherwise sensor-user's build script reruns between them).
    let obj = steps.time("build-ebpf", || build_ebpf::build_ebpf(root))?;
    if !options.no_lint {
        steps.time("lint", || lint::lint(root))?;
    }
    let sensor = steps.time("build", || build_agent::build_agent(root, &obj, true))?;

    steps.time("unit tests", || {
        step("running unit tests (sensor-common, sensor-user, sensor-proto, xtask)...");
        let mut cmd = util::cargo(root)?;
        cmd.args(["test", "--release"])
            .args([
                "-p",
                "sensor-common",
                "-p",
                "sensor-user",
                "-p",
                "sensor-proto",
                "-p",
                "xtask",
            ])
            .env("SENSOR_BPF_OBJ", &obj);
        run(&mut cmd).context("unit tests failed; see the output above")
    })?;

    // Each fuzz target briefly (its kept crashes first): `cargo xtask fuzz` runs them longer.
    // Skipped by a filtered run, which is about the integration tests it names.
    if filter.is_empty() {
        steps.time("fuzz", || fuzz::fuzz(root, FUZZ_SECONDS, &[]))?;
    }

    // Stops dockerd when dropped if this run started it: after the integration tests, and
    // also when anything below fails.
    let dockerd = steps.time("docker", || {
        if options.docker_first_start {
            docker::forget_state()?;
        }
        let d = Dockerd::ensure(root)?;
        docker::ensure_test_image(root)?;
        Ok(d)
    })?;
    let python = steps.time("python", || python::ensure(root))?;
    let agent_image = steps.time("agent image", || image::image(root))?;

    let artifacts = util::target_dir(root).join("test-artifacts");
    fs::create_dir_all(&artifacts)
        .with_context(|| format!("could not create {}", artifacts.display()))?;
    let started = SystemTime::now();
    let integration = steps.time("integration tests", || {
        step("running integration tests (sensor-tests, real containers)...");
        let mut cmd = util::cargo(root)?;
        cmd.args([
            "test",
            "--release",
            "-p",
            "sensor-tests",
            "--",
            "--test-threads=2",
        ])
        .args(filter)
        .env("SENSOR_BPF_OBJ", &obj)
        .env("SENSOR_BIN", &sensor)
        .env("SENSOR_TEST_IMAGE", docker::TEST_IMAGE)
        .env("SENSOR_TEST_ARTIFACTS", &artifacts)
        .env("SENSOR_PYTHON", &python)
        .env("SENSOR_AGENT_IMAGE", &agent_image);
        let (status, results) = run_collecting(cmd)?;
        // The host column of the kernel matrix (`cargo xtask vm-test`); a filtered run does
        // not replace the full one.
        if filter.is_empty() {
            vm::results::save(&vm::results_path(root, "host"), &results)?;
        }
        anyhow::ensure!(
            status.success(),
            "integration tests failed ({status}); see the output above and {}",
            artifacts.display()
        );
        Ok(())
    });
    drop(dockerd);
    integration?;
    latency::report(&artifacts, Some(started))?;

    // Another kernel (Debian's 6.1 under qemu), with each hook set.
    if filter.is_empty() {
        steps.time("vm smoke", || {
            step("running the VM smoke subset (Debian 6.1 under qemu, default, kprobe and syscall hook sets)...");
            let columns = vm::run_plan(root, &sensor, &vm::Plan::smoke())?;
            anyhow::ensure!(
                vm::report(root, columns)?,
                "tests failed in the VM; see the matrix above and {}",
                vm::vm_dir(root).display()
            );
            Ok(())
        })?;
    }
    Ok(())
}

/// Runs the integration tests, echoing their output and parsing each binary's results.
fn run_collecting(
    mut cmd: std::process::Command,
) -> Result<(std::process::ExitStatus, Vec<vm::results::TestResult>)> {
    use std::io::{BufRead, BufReader};
    // One pipe for both streams keeps cargo's "Running <binary>" (stderr) in order with the
    // binaries' results (stdout).
    let (stdout, writer) = std::io::pipe()?;
    let mut child = cmd
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("could not start {}", util::display(&cmd)))?;
    // `cmd` holds copies of the write end: drop them, or the reader never sees EOF.
    drop(cmd);
    let mut results = Vec::new();
    let mut binary = String::new();
    let mut block = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        // "     Running tests/network.rs (target/release/deps/network-…)"
        if let Some(rest) = line.trim_start().strip_prefix("Running ") {
            results.extend(vm::results::parse_libtest(&binary, &block));
            block.clear();
            binary = rest
                .split_whitespace()
                .next()
                .and_then(|p| std::path::Path::new(p).file_stem())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        } else {
            block.push_str(&line);
            block.push('\n');
        }
    }
    results.extend(vm::results::parse_libtest(&binary, &block));
    Ok((child.wait()?, results))
}
