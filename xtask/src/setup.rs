//! `cargo xtask setup [--for run|test]`: idempotent bootstrap of a fresh machine.
//!
//! - `rust-src` for the nightly toolchain (needed by `-Z build-std=core`);
//! - bpf-linker 0.13, built against the nightly toolchain's own LLVM 22;
//! - protoc (Debian's `protobuf-compiler`), which the CRI bindings (`k8s-cri`) are built with;
//! - for `test` only: the Debian packages the integration tests use (Docker, busybox-static, ...);
//! - tracefs mounted at `/sys/kernel/tracing`.
//!
//! Every check is cheap; nothing is printed for what is already in place.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::util::{self, output, output_ok, run, step};

/// What the machine is being prepared for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// Build and run the sensor.
    Run,
    /// Also run the integration tests (Docker and friends).
    Test,
    /// Also run `cargo xtask bench` (the test packages, nginx, wrk, bpftrace, ping).
    Bench,
}

/// Debian packages the integration tests need.
pub const TEST_PACKAGES: &[&str] = &[
    "docker.io",
    "busybox-static",
    "iptables",
    "bpftool",
    // Carried into the test image with bpftool for the sensor-tampering rules.
    "strace",
    "linux-perf",
    "util-linux",
    "iproute2",
    "procps",
    // The delivery tests scrape the metrics endpoint with a real Prometheus server.
    "prometheus",
    // vm-test (and its smoke run in `test`): qemu guests with runc containers.
    "qemu-system-x86",
    "cpio",
    "runc",
    "xz-utils",
    // The runtime metadata tests: a private containerd with CRI (pods, CNI networks) and podman.
    "containerd",
    "containernetworking-plugins",
    "podman",
];

/// Debian packages every build needs: `k8s-cri` runs protoc in its build script.
pub const BUILD_PACKAGES: &[&str] = &["protobuf-compiler"];

/// Debian packages `cargo xtask bench` needs besides [`TEST_PACKAGES`]: the workloads' servers
/// and load tools, and bpftrace for the floor and peer modes.
pub const BENCH_PACKAGES: &[&str] = &["nginx-light", "wrk", "bpftrace", "iputils-ping"];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_LIB_PREFIX: &str = "libLLVM.so.22.1-rust-";

pub fn setup(purpose: Purpose) -> Result<()> {
    toolchain()?;
    if purpose != Purpose::Run {
        debian_packages(TEST_PACKAGES)?;
    }
    if purpose == Purpose::Bench {
        debian_packages(BENCH_PACKAGES)?;
    }
    tracefs()?;
    Ok(())
}

/// What the build needs: nightly with rust-src and bpf-linker for the eBPF side, protoc for
/// the agent's CRI bindings.
pub fn toolchain() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages(BUILD_PACKAGES)?;
    Ok(())
}

/// The rustup toolchain name `+nightly` resolves to.
fn nightly_name() -> Result<String> {
    Ok(format!("nightly-{}", util::host_triple()?))
}

fn nightly_rust_src() -> Result<()> {
    let nightly = nightly_name()?;
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("could not list rustup toolchains; is rustup installed?")?;
    if !toolchains
        .lines()
        .any(|l| l.split_whitespace().next() == Some(nightly.as_str()))
    {
        bail!(
            "the Rust toolchain `{nightly}` is not installed; the eBPF programs are built with it. \
             The machines come with it preinstalled (its LLVM must match bpf-linker's); on another \
             machine install it with `rustup toolchain install nightly --component rust-src`"
        );
    }
    ensure_component("nightly", "rust-src")
}

/// Adds a rustup component to a toolchain unless it is installed.
/// `toolchain` is a rustup toolchain name, or `current` for the one running xtask.
pub fn ensure_component(toolchain: &str, component: &str) -> Result<()> {
    let host = util::host_triple()?;
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if toolchain != "current" {
        list.args(["--toolchain", toolchain]);
    }
    let installed = output(&mut list)
        .with_context(|| format!("could not list the components of the {toolchain} toolchain"))?;
    if component_installed(&installed, component, host) {
        return Ok(());
    }
    step(format!(
        "installing {component} for the {toolchain} toolchain (rustup component add)..."
    ));
    let mut add = Command::new("rustup");
    add.args(["component", "add", component]);
    if toolchain != "current" {
        add.args(["--toolchain", toolchain]);
    }
    run(&mut add)
        .with_context(|| format!("could not install {component}; check the network, then retry"))
}

fn component_installed(list: &str, component: &str, host: &str) -> bool {
    let with_host = format!("{component}-{host}");
    list.lines()
        .map(str::trim)
        .any(|l| l == component || l == with_host)
}

/// The bpf-linker that builds will use: `$CARGO_HOME/bin` first (where we install it), then PATH.
fn bpf_linker_version() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(bin) = util::cargo_bin_dir() {
        candidates.push(bin.join("bpf-linker"));
    }
    candidates.push(PathBuf::from("bpf-linker"));
    candidates
        .into_iter()
        .find_map(|p| output_ok(Command::new(p).arg("--version")))
}

fn is_wanted_bpf_linker(version_output: &str) -> bool {
    // `bpf-linker 0.13.0`
    version_output
        .split_whitespace()
        .nth(1)
        .is_some_and(|v| v.starts_with("0.13."))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_version().is_some_and(|v| is_wanted_bpf_linker(&v)) {
        return Ok(());
    }
    let sysroot = output(
        Command::new("rustc")
            .arg("+nightly")
            .args(["--print", "sysroot"])
            .env("RUSTUP_AUTO_INSTALL", "0"),
    )
    .context("could not find the nightly toolchain's sysroot")?;
    let llvm_dir = llvm_dir()?;
    llvm_symlinks(Path::new(sysroot.trim()), &llvm_dir)?;
    step(format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM 22 (about 1 min)..."
    ));
    let mut cmd = util::cargo(&util::workspace_root())?;
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--force",
    ])
    .args(["--no-default-features", "--features", "llvm-22"])
    .env("LLVM_PREFIX", &llvm_dir);
    run(&mut cmd).context(
        "building bpf-linker failed; it needs crates.io and the nightly toolchain's libLLVM \
         (see the compiler output above)",
    )?;
    match bpf_linker_version() {
        Some(v) if is_wanted_bpf_linker(&v) => Ok(()),
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` says {other:?}; \
             is another bpf-linker earlier in PATH?"
        ),
    }
}

/// `$XDG_DATA_HOME/sensor-llvm` (default `~/.local/share/sensor-llvm`). bpf-linker finds LLVM
/// through an rpath to `<dir>/lib`, so this must stay put after the install.
fn llvm_dir() -> Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => util::home()?.join(".local/share"),
    };
    Ok(data.join("sensor-llvm"))
}

/// Makes `<dir>/lib/{libLLVM.so, libLLVM.so.22.1-rust-*}` point at the nightly sysroot's LLVM.
fn llvm_symlinks(sysroot: &Path, dir: &Path) -> Result<()> {
    let sys_lib = sysroot.join("lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&sys_lib)
        .with_context(|| format!("could not read {}", sys_lib.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(LLVM_LIB_PREFIX))
        .map(|e| e.path())
        .collect();
    found.sort();
    let Some(llvm) = found.pop() else {
        bail!(
            "no {LLVM_LIB_PREFIX}* in {}; bpf-linker 0.13 (feature llvm-22) needs a nightly \
             toolchain whose LLVM is 22.1",
            sys_lib.display()
        );
    };
    let lib = dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("could not create {}", lib.display()))?;
    let own_name = llvm.file_name().expect("a file in a directory");
    for name in [Path::new("libLLVM.so"), Path::new(own_name)] {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|t| t == llvm) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link)
                .with_context(|| format!("could not replace {}", link.display()))?;
        }
        symlink(&llvm, &link)
            .with_context(|| format!("could not create the symlink {}", link.display()))?;
    }
    Ok(())
}

fn package_installed(name: &str) -> bool {
    output_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !util::is_root() {
        bail!(
            "missing Debian packages: {list}; install them as root with: \
             apt-get update && apt-get install -y --no-install-recommends {list}"
        );
    }
    step(format!(
        "installing Debian packages: {list} (apt-get, about 1 min)..."
    ));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("`apt-get update` failed; check the network and /etc/apt/sources.list")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("could not install {list}"))
}

fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    if !util::is_root() {
        step(
            "note: tracefs is not mounted at /sys/kernel/tracing; the sensor mounts it when run as root",
        );
        return Ok(());
    }
    step("mounting tracefs at /sys/kernel/tracing...");
    run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
        .context("could not mount tracefs; the sensor's tracepoints need it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_linker_version_check() {
        assert!(is_wanted_bpf_linker("bpf-linker 0.13.0\n"));
        assert!(is_wanted_bpf_linker("bpf-linker 0.13.2"));
        assert!(!is_wanted_bpf_linker("bpf-linker 0.9.13"));
        assert!(!is_wanted_bpf_linker(""));
    }

    #[test]
    fn components_match_with_or_without_host() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        let host = "x86_64-unknown-linux-gnu";
        assert!(component_installed(list, "rust-src", host));
        assert!(component_installed(list, "cargo", host));
        assert!(!component_installed(list, "clippy", host));
        assert!(!component_installed(list, "rust", host));
    }

    #[test]
    fn llvm_symlinks_in_a_temp_dir() {
        let base = std::env::temp_dir().join(format!("xtask-llvm-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let sysroot = base.join("sysroot");
        fs::create_dir_all(sysroot.join("lib")).unwrap();
        let llvm = sysroot.join("lib/libLLVM.so.22.1-rust-1.97.0-nightly");
        fs::write(&llvm, b"").unwrap();
        fs::write(sysroot.join("lib/libLLVM-22-rust-1.97.0-nightly.so"), b"").unwrap();
        let dir = base.join("sensor-llvm");
        // A stale link is replaced; running twice is a no-op.
        fs::create_dir_all(dir.join("lib")).unwrap();
        symlink("/nonexistent", dir.join("lib/libLLVM.so")).unwrap();
        llvm_symlinks(&sysroot, &dir).unwrap();
        llvm_symlinks(&sysroot, &dir).unwrap();
        assert_eq!(fs::read_link(dir.join("lib/libLLVM.so")).unwrap(), llvm);
        assert_eq!(
            fs::read_link(dir.join("lib/libLLVM.so.22.1-rust-1.97.0-nightly")).unwrap(),
            llvm
        );
        assert_eq!(fs::read_dir(dir.join("lib")).unwrap().count(), 2);
        fs::remove_file(&llvm).unwrap();
        let err = llvm_symlinks(&sysroot, &base.join("other")).unwrap_err();
        assert!(format!("{err:#}").contains("LLVM is 22.1"));
        fs::remove_dir_all(&base).unwrap();
    }
}
