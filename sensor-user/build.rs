//! Embeds the eBPF object so `sensor` is one self-contained binary.
//!
//! `cargo xtask build` compiles sensor-ebpf and passes its path in `SENSOR_BPF_OBJ`. Without it
//! (a plain `cargo build`, clippy, unit tests) the default build location is used if present,
//! else an empty object is embedded and the agent says how to build it properly when run.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=SENSOR_BPF_OBJ");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("sensor.bpf.o");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpf/bpfel-unknown-none/release/sensor-ebpf");
    let source = env::var_os("SENSOR_BPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", source.display());
    match fs::read(&source) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=no eBPF object at {}: the agent is built without its programs (use `cargo xtask build`)",
                source.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
