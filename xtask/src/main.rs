//! `cargo xtask`: bootstrap, build, run, lint and test the sensor (one module per task).
//!
//! Run `cargo xtask --help` for the commands. Each step prints one line; steps already done
//! are skipped quietly.

mod bench;
mod build_agent;
mod build_ebpf;
mod docker;
mod docs;
mod fuzz;
mod image;
mod latency;
mod lint;
mod python;
mod run;
mod setup;
mod soak;
mod test;
mod util;
mod vm;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use setup::Purpose;
use util::step;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test the container threat sensor",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prepare this machine: nightly rust-src, bpf-linker 0.13, (for test) Debian packages, tracefs.
    Setup {
        /// What to prepare for; `test` also installs Docker and the test tools.
        #[arg(long = "for", value_enum, default_value_t = Purpose::Test)]
        purpose: Purpose,
    },
    /// Build the eBPF programs (nightly, bpfel-unknown-none) into target/bpf.
    BuildEbpf,
    /// Build the self-contained agent target/release/sensor (eBPF object embedded).
    Build {
        /// Build target/debug/sensor instead.
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run `sensor run --json-out - ARGS...` (needs root).
    Run {
        /// Extra arguments for `sensor run`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// rustfmt and clippy (workspace on stable, sensor-ebpf on nightly), warnings are errors.
    Lint,
    /// Everything CI checks: setup, lint, build, unit tests, integration tests with Docker.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Before starting dockerd, remove its state (`/var/lib/docker`, `docker0`) so that
        /// this run proves the suite on dockerd's first start, as on a new machine (CI does).
        #[arg(long)]
        docker_first_start: bool,
        /// Passed to the integration test harness (test name filters).
        #[arg(last = true)]
        filter: Vec<String>,
    },
    /// Start dockerd (if none is running) and build the test image; leave both for manual tests.
    DockerUp,
    /// Stop the dockerd that docker-up (or an interrupted `test`) started.
    DockerDown {
        /// Then remove dockerd's state (`/var/lib/docker`: networks, images, containers) and
        /// the `docker0` bridge, so that its next start is a first start, as on a new machine.
        #[arg(long)]
        forget: bool,
    },
    /// The kernel-facing tests on Debian's 6.1 and 6.12 kernels under qemu, per hook set.
    VmTest {
        /// Kernel lines (6.1, 6.12) or Debian package names; repeatable. Default: 6.1 and 6.12.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Hook sets (default, kprobe, syscall); repeatable. Default: all three.
        #[arg(long = "hooks")]
        hook_sets: Vec<String>,
        /// Test binaries or `binary::test` (suite: attribution, network, tamper, cleanup); repeatable.
        #[arg(long = "test")]
        tests: Vec<String>,
        /// Skip the runs with Kubernetes-shaped cgroups.
        #[arg(long)]
        no_shapes: bool,
        /// Run each run this many times (columns KERNEL/HOOKS#N), to reproduce rare failures.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// qemu's TCG threading. Default single: multi-threaded TCG crashed a 6.12 guest
        /// (see `vm::EMULATION`).
        #[arg(long, value_enum, default_value_t = vm::EMULATION.threads)]
        tcg_threads: vm::qemu::TcgThreads,
        /// The guest's CPU count.
        #[arg(long, default_value_t = vm::EMULATION.cpus)]
        cpus: u8,
        /// Give up on a guest boot after this many minutes.
        #[arg(long, default_value_t = 60)]
        timeout_minutes: u64,
    },
    /// Fuzz the parsers of untrusted input (cargo-fuzz, nightly, AddressSanitizer): ring
    /// records, conditions, rule YAML, the spool's recovery, Docker API JSON. Kept crashes in
    /// fuzz/regressions/ are replayed first; a new crash is saved there and fails the run.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// As root: the agent under a steady, bounded load (container churn, many peers, rule
    /// reloads) for N minutes; prints its memory, tables, events and drops over time and
    /// writes them to target/soak/soak.md.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Build the agent's container image sensor/agent:VERSION offline (the agent and its
    /// libraries only); `deploy/` says how to run it.
    Image,
    /// Generate docs/detections.md from the rule files.
    Docs,
    /// Each rule's detection latency (event to alert), from the last integration tests' alerts.
    Latency,
    /// As root: the sensor's cost to real workloads (host and containers) against no sensor,
    /// the syscall-hook floor and a bpftrace peer, interleaved; alert latency over gRPC. Writes
    /// docs/benchmarks.md and docs/benchmarks.svg.
    Bench {
        /// 2 rounds of smaller workloads (under 4 minutes) instead of 5 full rounds.
        #[arg(long)]
        quick: bool,
        /// Only these workloads (repeatable): dd-host, nginx-container, ..., latency. The
        /// results then go to target/bench/ instead of docs/.
        #[arg(long = "workload", value_name = "NAME")]
        workloads: Vec<String>,
        /// Instead: each workload once under the sensor with the kernel's BPF run-time
        /// statistics on, and the time each of the sensor's programs took; then once more
        /// under `perf record`, and the share of each busy process's CPU in the sensor's
        /// programs, the kernel's work of running them included (target/bench/).
        #[arg(long)]
        hook_costs: bool,
        /// Rounds instead of 5 (2 with --quick). The results then go to target/bench/.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        rounds: Option<u16>,
        /// Only these traced modes besides `none` (repeatable): floor, peer, sensor (baseline
        /// runs whenever --baseline is given).
        /// The results then go to target/bench/.
        #[arg(long = "mode", value_name = "MODE")]
        modes: Vec<String>,
        /// Another build of the agent (a copy of target/release/sensor from before a change),
        /// run as the mode `baseline` in the same interleaved rounds as this build.
        #[arg(long, value_name = "PATH")]
        baseline: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<()> {
    let root = util::workspace_root();
    match command {
        Cmd::Setup { purpose } => setup::setup(purpose),
        Cmd::BuildEbpf => {
            setup::toolchain()?;
            let obj = build_ebpf::build_ebpf(&root)?;
            step(format!("eBPF object: {}", obj.display()));
            Ok(())
        }
        Cmd::Build { debug } => {
            setup::setup(Purpose::Run)?;
            let obj = build_ebpf::build_ebpf(&root)?;
            let bin = build_agent::build_agent(&root, &obj, !debug)?;
            step(format!("built {}", bin.display()));
            Ok(())
        }
        Cmd::Run { args } => run::run(&root, &args),
        Cmd::Fuzz { seconds, targets } => {
            setup::toolchain()?;
            fuzz::fuzz(&root, seconds, &targets)
        }
        Cmd::Lint => {
            setup::toolchain()?;
            lint::lint(&root)
        }
        Cmd::Test {
            no_lint,
            docker_first_start,
            filter,
        } => test::test(
            &root,
            test::Options {
                no_lint,
                docker_first_start,
            },
            &filter,
        ),
        Cmd::DockerUp => {
            setup::setup(Purpose::Test)?;
            let dockerd = docker::Dockerd::ensure(&root)?;
            docker::ensure_test_image(&root)?;
            let python = python::ensure(&root)?;
            step(format!(
                "the client tests need SENSOR_PYTHON={}",
                python.display()
            ));
            if dockerd.started_here() {
                step("dockerd keeps running; stop it with `cargo xtask docker-down`");
            }
            dockerd.keep_running();
            Ok(())
        }
        Cmd::DockerDown { forget } => {
            docker::docker_down(&root)?;
            if forget {
                docker::forget_state()?;
            }
            Ok(())
        }
        Cmd::Bench {
            quick,
            workloads,
            hook_costs,
            rounds,
            modes,
            baseline,
        } => bench::bench(
            &root,
            &bench::Options {
                quick,
                workloads,
                hook_costs,
                rounds: rounds.map(usize::from),
                modes,
                baseline,
            },
        ),
        Cmd::Soak { minutes } => soak::soak(&root, minutes),
        Cmd::Image => image::image(&root).map(drop),
        Cmd::Docs => docs::docs(&root),
        Cmd::Latency => latency::report(&util::target_dir(&root).join("test-artifacts"), None),
        Cmd::VmTest {
            kernels,
            hook_sets,
            tests,
            no_shapes,
            repeat,
            tcg_threads,
            cpus,
            timeout_minutes,
        } => {
            let or = |v: Vec<String>, d: &[&str]| {
                if v.is_empty() {
                    d.iter().map(|s| s.to_string()).collect()
                } else {
                    v
                }
            };
            let plan = vm::Plan {
                kernels: or(kernels, &["6.1", "6.12"]),
                hook_sets: or(hook_sets, vm::HOOK_SETS),
                tests,
                shapes: !no_shapes,
                repeat: repeat.max(1),
                emulation: vm::qemu::Emulation {
                    threads: tcg_threads,
                    cpus: cpus.max(1),
                },
                timeout: std::time::Duration::from_secs(timeout_minutes * 60),
            };
            vm::vm_test(&root, &plan)
        }
    }
}
