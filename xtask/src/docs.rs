//! `cargo xtask docs`: writes `docs/detections.md` from the rule files (through the agent's own
//! rule loader, so the document is exactly what the sensor runs).

use std::{fs, path::Path};

use anyhow::{Context, Result};

use crate::util::{self, step};

pub fn docs(root: &Path) -> Result<()> {
    step("generating docs/detections.md from rules/ (cargo run -p sensor-user -- rules docs)...");
    let mut cmd = util::cargo(root)?;
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "sensor-user",
        "--bin",
        "sensor",
        "--",
        "rules",
        "docs",
    ]);
    let text = util::output(&mut cmd).context("generating the detections document failed")?;
    let out = root.join("docs/detections.md");
    fs::create_dir_all(out.parent().unwrap())?;
    fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    step(format!("wrote {}", out.display()));
    Ok(())
}
