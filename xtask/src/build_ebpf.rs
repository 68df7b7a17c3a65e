//! `cargo xtask build-ebpf`: builds the eBPF programs (crate `sensor-ebpf`) with the nightly
//! toolchain for `bpfel-unknown-none`, linked by bpf-linker.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util::{self, run, step};

pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// `target/bpf`, kept apart from the stable builds' `target/`.
pub fn bpf_target_dir(root: &Path) -> PathBuf {
    util::target_dir(root).join("bpf")
}

/// The eBPF object that `build_ebpf` produces (an absolute path).
pub fn object_path(root: &Path) -> PathBuf {
    bpf_target_dir(root)
        .join(BPF_TARGET)
        .join("release/sensor-ebpf")
}

/// The rustc flags of the eBPF build, both for bpf-linker beyond its defaults:
/// - `--disable-expand-memcpy-in-order`: its default (`-bpf-expand-memcpy-in-order`) keeps LLVM
///   from expanding `memset` into stores, so every zeroed field (an address, a key's padding)
///   became a call to a byte-at-a-time loop: 44 iterations for one repeat key.
/// - `target-cpu=v3` (rustc passes it on as `--cpu`): 32-bit jumps and ALU (Linux 5.1; the
///   programs need 5.9 anyway), so a `u32` compare is one instruction instead of two shifts and
///   a compare.
const BPF_RUSTFLAGS: [&str; 4] = [
    "-C",
    "link-arg=--disable-expand-memcpy-in-order",
    "-C",
    "target-cpu=v3",
];

/// Arguments shared by the nightly build and clippy of `sensor-ebpf`.
pub fn nightly_bpf_args(root: &Path) -> Vec<String> {
    vec![
        "--package".into(),
        "sensor-ebpf".into(),
        "--target".into(),
        BPF_TARGET.into(),
        "-Z".into(),
        "build-std=core".into(),
        "--config".into(),
        format!("target.{BPF_TARGET}.rustflags = {BPF_RUSTFLAGS:?}"),
        "--release".into(),
        "--target-dir".into(),
        bpf_target_dir(root).to_string_lossy().into_owned(),
    ]
}

/// Builds the eBPF object and returns its path. Expects `setup::toolchain()` to have run.
pub fn build_ebpf(root: &Path) -> Result<PathBuf> {
    step("building the eBPF programs (cargo +nightly build --target bpfel-unknown-none)...");
    let mut cmd = util::cargo_nightly(root)?;
    cmd.arg("build").args(nightly_bpf_args(root));
    run(&mut cmd).context("building the eBPF programs failed; see the compiler output above")?;
    let obj = object_path(root);
    anyhow::ensure!(
        obj.is_file(),
        "the eBPF build succeeded but {} is missing; is sensor-ebpf's binary still named sensor-ebpf?",
        obj.display()
    );
    Ok(obj)
}
