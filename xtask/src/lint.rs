//! `cargo xtask lint`: rustfmt, clippy for the workspace (stable, host) and clippy for the eBPF
//! crate (nightly, `bpfel-unknown-none`), all with warnings as errors.

use std::path::Path;

use anyhow::{Context, Result};

use crate::build_ebpf;
use crate::setup;
use crate::util::{self, run, step};

pub fn lint(root: &Path) -> Result<()> {
    setup::ensure_component("current", "rustfmt")?;
    setup::ensure_component("current", "clippy")?;
    setup::ensure_component("nightly", "clippy")?;

    step("checking formatting (cargo fmt --all -- --check)...");
    let mut fmt = util::cargo(root)?;
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(&mut fmt).context("the code is not formatted; run `cargo fmt --all`")?;

    // sensor-ebpf is excluded here: it only builds for the BPF target (linted below).
    step("running clippy on the workspace (stable)...");
    let mut clippy = util::cargo(root)?;
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "sensor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let obj = build_ebpf::object_path(root);
    if obj.is_file() {
        clippy.env("SENSOR_BPF_OBJ", &obj);
    }
    run(&mut clippy).context("clippy found problems in the workspace; see its output above")?;

    step("running clippy on sensor-ebpf (nightly, bpfel-unknown-none)...");
    let mut ebpf = util::cargo_nightly(root)?;
    ebpf.arg("clippy")
        .args(build_ebpf::nightly_bpf_args(root))
        .args(["--", "-D", "warnings"]);
    run(&mut ebpf).context("clippy found problems in sensor-ebpf; see its output above")?;
    Ok(())
}
