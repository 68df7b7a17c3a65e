//! Debian kernels for the guests: resolved from Debian's meta-packages, downloaded with
//! `apt-get download` and unpacked with `dpkg -x` into `target/vm` (never installed on the
//! host; both steps are cached), plus the modules the guest needs, in load order.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{output_ok, run, step};

/// The kernel lines `--kernel` knows, with the Debian meta-package that names the current
/// image of each. Any other value is taken as a `linux-image-…` package name.
pub const LINES: &[(&str, &str)] = &[
    ("6.1", "linux-image-amd64"),
    ("6.12", "linux-image-6.12-amd64"),
];

/// Modules the guest loads: veth and the bridge for container networks, clsact and cls_bpf
/// for TC programs attached through netlink (kernels without TCX, before 6.6).
const MODULES: &[&str] = &["veth", "bridge", "sch_ingress", "cls_bpf"];

/// An unpacked kernel.
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the kernel.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Module files (decompressed) in the order they must be loaded.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// Resolves, downloads (cached in `vm_dir/cache`) and unpacks (cached in `vm_dir/kernels`).
pub fn fetch(vm_dir: &Path, line: &str) -> Result<Kernel> {
    let package = resolve(line)?;
    let cache = vm_dir.join("cache");
    fs::create_dir_all(&cache)?;
    let deb = match cached_deb(&cache, &package)? {
        Some(deb) => deb,
        None => {
            step(format!("downloading {package} (apt-get download)..."));
            run(Command::new("apt-get")
                .args(["download", &package])
                .current_dir(&cache))
            .with_context(|| format!("could not download {package} from Debian's archive"))?;
            cached_deb(&cache, &package)?
                .with_context(|| format!("apt-get download left no {package}_*.deb"))?
        }
    };
    let unpacked = vm_dir.join("kernels").join(&package);
    if !unpacked.join("boot").is_dir() {
        let partial = unpacked.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))
            .with_context(|| format!("could not unpack {}", deb.display()))?;
        let _ = fs::remove_dir_all(&unpacked);
        fs::rename(&partial, &unpacked)?;
    }
    let release = only_entry(&unpacked.join("lib/modules"))?;
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    anyhow::ensure!(vmlinuz.is_file(), "{} is missing", vmlinuz.display());
    let modules = modules(&unpacked.join("lib/modules").join(&release))?;
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        modules,
    })
}

/// `6.1` -> `linux-image-6.1.0-56-amd64` through the meta-package's dependency.
fn resolve(line: &str) -> Result<String> {
    let Some((_, meta)) = LINES.iter().find(|(l, _)| *l == line) else {
        if line.starts_with("linux-image-") {
            return Ok(line.to_string());
        }
        let known: Vec<&str> = LINES.iter().map(|(l, _)| *l).collect();
        bail!(
            "unknown kernel {line:?}: use one of {} or a Debian package name (linux-image-…)",
            known.join(", ")
        );
    };
    let depends = |meta: &str| {
        output_ok(Command::new("apt-cache").args(["depends", "--important", meta])).and_then(
            |text| {
                text.lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends: "))
                    .find(|d| d.starts_with("linux-image-"))
                    .map(str::to_string)
            },
        )
    };
    if let Some(pkg) = depends(meta) {
        return Ok(pkg);
    }
    step("apt-cache does not know the kernel packages yet: apt-get update...");
    run(Command::new("apt-get").arg("update")).context("`apt-get update` failed")?;
    depends(meta).with_context(|| format!("Debian's archive has no {meta} (apt-cache depends)"))
}

fn cached_deb(cache: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(fs::read_dir(cache)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        }))
}

fn only_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("could not read {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in {}, found {names:?}", dir.display()),
    }
}

/// [`MODULES`] and what they depend on, decompressed, dependencies first; built-in ones are
/// left out.
fn modules(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let mut files = Vec::new();
    collect_files(&dir.join("kernel"), &mut files)?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in MODULES {
        add_module(name, &files, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn add_module(
    name: &str,
    files: &[PathBuf],
    builtin: &str,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let matches = |p: &&PathBuf| {
        let file = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let stem = file.trim_end_matches(".xz").trim_end_matches(".ko");
        stem.replace('-', "_") == name.replace('-', "_")
    };
    let Some(path) = files.iter().find(matches) else {
        if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
            return Ok(());
        }
        bail!("the kernel has no module {name} (neither a file nor built in)");
    };
    let bytes = if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("could not run xz (install xz-utils)")?;
        anyhow::ensure!(out.status.success(), "xz -dc {} failed", path.display());
        out.stdout
    } else {
        fs::read(path)?
    };
    for dep in depends(&bytes) {
        add_module(&dep, files, builtin, seen, order)?;
    }
    order.push((format!("{name}.ko"), bytes));
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo` strings.
fn depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("could not read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `release (package, N modules)`, for messages.
pub fn describe(k: &Kernel) -> String {
    format!("{} ({}, {} modules)", k.release, k.package, k.modules.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_from_modinfo_strings() {
        let blob = b"\x7fELF...\0license=GPL\0depends=stp,llc\0intree=Y\0";
        assert_eq!(depends(blob), ["stp", "llc"]);
        assert!(depends(b"\0depends=\0name=veth\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }

    #[test]
    fn unknown_line_is_refused_with_the_known_ones() {
        let err = resolve("5.10").unwrap_err().to_string();
        assert!(err.contains("6.1, 6.12"), "{err}");
        assert_eq!(
            resolve("linux-image-6.1.0-56-amd64").unwrap(),
            "linux-image-6.1.0-56-amd64"
        );
    }
}
