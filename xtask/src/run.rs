//! `cargo xtask run [-- ARGS...]`: builds the agent, then replaces this process with
//! `target/release/sensor run --json-out - ARGS...` so that Ctrl-C reaches the sensor directly.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::{self, Purpose};
use crate::util::{self, step};
use crate::{build_agent, build_ebpf};

pub fn run(root: &Path, args: &[OsString]) -> Result<()> {
    util::require_root(
        "the sensor needs root (eBPF, tracefs); run `sudo -E env \"PATH=$PATH\" cargo xtask run` \
         or `cargo xtask run` as root",
    )?;
    setup::setup(Purpose::Run)?;
    let obj = build_ebpf::build_ebpf(root)?;
    let bin = build_agent::build_agent(root, &obj, true)?;
    step(format!(
        "starting {} run --json-out - (Ctrl-C stops it)",
        bin.display()
    ));
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--json-out", "-"]).args(args);
    // Leave out what `cargo run` set up for xtask itself (LD_LIBRARY_PATH, toolchain pins).
    util::scrub_toolchain_env(&mut cmd);
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not start {}", bin.display()))
}
