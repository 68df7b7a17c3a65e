//! The Python example client (`examples/python/sensor_client.py`) under the Python with grpcio
//! that `cargo xtask test` prepares (`target/python`, passed as SENSOR_PYTHON).

use std::{path::PathBuf, process::Command};

/// The interpreter with grpcio, grpcio-tools and grpcio-reflection.
pub fn python() -> PathBuf {
    PathBuf::from(std::env::var("SENSOR_PYTHON").unwrap_or_else(|_| {
        panic!("SENSOR_PYTHON is not set: run the integration tests through `cargo xtask test`")
    }))
}

/// The `rotel-agent` collector that the `rotel` wheel bundles.
pub fn rotel_agent() -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, rotel; print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .expect("running the test Python");
    assert!(out.status.success(), "no rotel package in {:?}", python());
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("rotel-agent")
}

/// `python sensor_client.py`, for the caller to add arguments to.
pub fn example_client() -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python/sensor_client.py"));
    cmd
}
