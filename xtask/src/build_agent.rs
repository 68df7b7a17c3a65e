//! `cargo xtask build [--debug]`: builds the agent `sensor` (crate `sensor-user`) with the
//! eBPF object embedded by its build script (`SENSOR_BPF_OBJ`), so the binary is self-contained.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util::{self, run, step};

/// The agent binary for a profile.
pub fn sensor_path(root: &Path, release: bool) -> PathBuf {
    util::target_dir(root)
        .join(if release { "release" } else { "debug" })
        .join("sensor")
}

/// Builds `sensor-user` embedding `bpf_obj`; returns the binary's path.
pub fn build_agent(root: &Path, bpf_obj: &Path, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    step(format!(
        "building the agent ({profile}, cargo build -p sensor-user)..."
    ));
    let mut cmd = util::cargo(root)?;
    cmd.args(["build", "--package", "sensor-user"])
        .env("SENSOR_BPF_OBJ", bpf_obj);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd).context("building the agent failed; see the compiler output above")?;
    let bin = sensor_path(root, release);
    anyhow::ensure!(
        bin.is_file(),
        "the build succeeded but {} is missing",
        bin.display()
    );
    Ok(bin)
}
