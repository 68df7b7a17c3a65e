//! A private Python for the tests of stock gRPC clients and of a real OpenTelemetry collector: a
//! venv in `target/python` with grpcio, grpcio-tools, grpcio-reflection and rotel (whose wheel
//! bundles the `rotel-agent` collector) from PyPI, pinned. Created once; recreated when the pins
//! change.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{self, run, step};

/// What the example clients and their tests need, pinned.
const PACKAGES: &[&str] = &[
    "grpcio==1.85.3",
    "grpcio-tools==1.85.1",
    "grpcio-reflection==1.85.1",
    "rotel==0.0.1a15",
];

/// The venv's interpreter, creating or updating the venv first if needed.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let venv = util::target_dir(root).join("python");
    let python = venv.join("bin").join("python3");
    let stamp = venv.join("sensor-packages.txt");
    let wanted = PACKAGES.join("\n");
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(python);
    }
    step(format!(
        "installing {} into {} (PyPI, about 30 s once)...",
        PACKAGES.join(" "),
        venv.display()
    ));
    let _ = fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("could not create a Python venv (Debian: `apt-get install python3-venv`)")?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES))
    .context("could not install the gRPC client packages from PyPI")?;
    fs::write(&stamp, wanted)?;
    Ok(python)
}
