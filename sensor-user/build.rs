//! Embeds the eBPF object so `sensor` is one self-contained binary.
//!
//! `cargo xtask build` compiles sensor-ebpf and passes its path in `SENSOR_BPF_OBJ`. Without it
//! (a plain `cargo build`, clippy, unit tests) the default build location is used if present,
//! else an empty object is embedded and the agent says how to build it properly when run.

use std::{env, fs, path::PathBuf};

/// Writes `OUT_DIR/rules.rs`: every `rules/*.yaml` file, embedded.
fn embed_rules(manifest: &std::path::Path, out_dir: &std::path::Path) {
    let dir = manifest.join("../rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut code = String::from("pub const FILES: &[(&str, &str)] = &[\n");
    for f in files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        let path = f.canonicalize().unwrap();
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    fs::write(out_dir.join("rules.rs"), code).unwrap();
}

fn main() {
    println!("cargo:rerun-if-env-changed=SENSOR_BPF_OBJ");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("sensor.bpf.o");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    embed_rules(&manifest, out.parent().unwrap());
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
