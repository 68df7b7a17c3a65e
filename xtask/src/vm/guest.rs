//! The guest's initramfs: busybox (init and tools), runc and iproute2 with their libraries, the
//! sensor, the test binaries, the test image's root filesystem, the kernel's modules and the
//! plan of runs. Built as newc cpio archives that the kernel unpacks in order: one common to
//! every kernel, one per kernel (modules), one per run (plan), concatenated into one file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::kernel::Kernel;
use crate::docker;

const INIT: &str = include_str!("init.sh");

/// Host programs the guest runs outside containers (with their libraries).
const GUEST_PROGRAMS: &[(&str, &str)] = &[
    ("/usr/sbin/runc", "usr/sbin/runc"),
    ("/usr/sbin/ip", "usr/sbin/ip"),
    ("/usr/sbin/tc", "usr/sbin/tc"),
    ("/usr/sbin/bpftool", "usr/sbin/bpftool"),
];

/// One run in the guest: a test binary with a hook set, a cgroup shape and name filters.
#[derive(Clone, Debug)]
pub struct Run {
    /// Unique within one plan: the console markers name the run by it.
    pub id: usize,
    pub column: String,
    pub hooks: String,
    pub shape: String,
    pub binary: String,
    pub filters: Vec<String>,
}

/// Builds the part shared by every kernel: `dir/common.cpio`. `helpers` (programs the tests
/// bind-mount into containers) go to the same absolute paths as on the host, which the test
/// binaries were built to expect (`CARGO_BIN_EXE_*`).
pub fn common(
    dir: &Path,
    sensor: &Path,
    tests: &[(String, PathBuf)],
    helpers: &[PathBuf],
) -> Result<PathBuf> {
    let root = dir.join("common-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    docker::busybox_rootfs(&root)?;
    for d in ["usr/sbin", "vmtest/bin", "run", "sys", "proc", "dev", "tmp"] {
        fs::create_dir_all(root.join(d))?;
    }
    let mut programs: Vec<(String, String)> = GUEST_PROGRAMS
        .iter()
        .map(|(h, g)| (h.to_string(), g.to_string()))
        .collect();
    programs.push((path_str(sensor)?, "vmtest/bin/sensor".into()));
    for (name, path) in tests {
        programs.push((path_str(path)?, format!("vmtest/bin/{name}")));
    }
    for path in helpers {
        let host = path_str(path)?;
        let inside = host.trim_start_matches('/').to_string();
        if let Some(parent) = root.join(&inside).parent() {
            fs::create_dir_all(parent)?;
        }
        programs.push((host, inside));
    }
    let pairs: Vec<(&str, &str)> = programs
        .iter()
        .map(|(h, g)| (h.as_str(), g.as_str()))
        .collect();
    docker::add_host_programs(&root, &pairs)?;
    docker::build_test_rootfs(&root.join("vmtest/image"))?;
    let init = root.join("init");
    fs::write(&init, INIT)?;
    set_mode(&init, 0o755)?;
    let archive = dir.join("common.cpio");
    cpio(&root, &archive)?;
    fs::remove_dir_all(&root)?;
    Ok(archive)
}

/// The initramfs for `kernel` and `runs`: common + modules + plan, in `dir`.
pub fn initramfs(dir: &Path, common: &Path, kernel: &Kernel, runs: &[Run]) -> Result<PathBuf> {
    let root = dir.join(format!("root-{}", kernel.release));
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let modules = root.join("vmtest/modules");
    fs::create_dir_all(&modules)?;
    let mut order = String::new();
    for (name, bytes) in &kernel.modules {
        fs::write(modules.join(name), bytes)?;
        order.push_str(name);
        order.push('\n');
    }
    fs::write(root.join("vmtest/modules.order"), order)?;
    let plan: String = runs
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {}\n",
                r.id,
                r.column,
                r.hooks,
                r.shape,
                r.binary,
                r.filters.join(" ")
            )
        })
        .collect();
    fs::write(root.join("vmtest/plan"), plan)?;
    let own = dir.join(format!("kernel-{}.cpio", kernel.release));
    cpio(&root, &own)?;
    fs::remove_dir_all(&root)?;

    let image = dir.join(format!("initramfs-{}.cpio", kernel.release));
    let mut out = fs::File::create(&image)?;
    for part in [common, own.as_path()] {
        out.write_all(&fs::read(part)?)?;
    }
    Ok(image)
}

/// `find . | cpio -o -H newc` in `root`, every file owned by root.
fn cpio(root: &Path, archive: &Path) -> Result<()> {
    let list = Command::new("find")
        .args([".", "-mindepth", "1"])
        .current_dir(root)
        .output()
        .context("could not run find")?;
    anyhow::ensure!(list.status.success(), "find in {} failed", root.display());
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(archive)?)
        .spawn()
        .context("could not run cpio (install the cpio package)")?;
    child.stdin.take().expect("piped").write_all(&list.stdout)?;
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "cpio of {} failed ({status})",
        root.display()
    );
    Ok(())
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
