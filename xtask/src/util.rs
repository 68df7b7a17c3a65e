//! Helpers shared by the tasks: where the workspace is, who we run as, and running
//! commands so that a failure says which command failed and how.

use std::env;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Prints one progress line for a step.
pub fn step(msg: impl AsRef<str>) {
    eprintln!("xtask: {}", msg.as_ref());
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The directory `cargo build` writes to (`<root>/target`; `CARGO_TARGET_DIR` is not honoured,
/// see [`cargo`]).
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target")
}

/// True when the effective user id is 0 (read from `/proc/self/status`, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_effective_uid(&s))
        == Some(0)
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `$HOME`, required for the tool locations below.
pub fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set; set it to your home directory")
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let cargo_home = match env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => home()?.join(".cargo"),
    };
    Ok(cargo_home.join("bin"))
}

/// `PATH` with `$CARGO_HOME/bin` in front (unless already present), so that tools that cargo
/// installs (bpf-linker) are found by the builds we start.
pub fn path_with_cargo_bin() -> Result<OsString> {
    let bin = cargo_bin_dir()?;
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if !dirs.contains(&bin) {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).context("PATH contains an entry with ':'; fix PATH")
}

/// The host target triple of the default toolchain (`rustc -vV`).
pub fn host_triple() -> Result<&'static str> {
    static HOST: OnceLock<String> = OnceLock::new();
    if let Some(h) = HOST.get() {
        return Ok(h);
    }
    let out = output(Command::new("rustc").arg("-vV"))
        .context("could not ask rustc for the host triple")?;
    let host = out
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("`rustc -vV` printed no `host:` line")?
        .trim()
        .to_string();
    Ok(HOST.get_or_init(|| host))
}

/// Environment variables that `cargo run` (and rustup's proxy) set for xtask and that would pin
/// a child build to the outer stable toolchain, the outer target dir or host-only flags.
const TOOLCHAIN_PINNING_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "RUST_RECURSION_COUNT",
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
];

/// A stable `cargo` for the workspace, started in the workspace root.
///
/// It uses the toolchain that runs xtask (rustup passes it on in `RUSTUP_TOOLCHAIN`), but not
/// `CARGO_TARGET_DIR`: xtask hands out paths below `<root>/target`.
pub fn cargo(root: &Path) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("PATH", path_with_cargo_bin()?);
    Ok(cmd)
}

/// `cargo +nightly` with every variable that would force the outer stable toolchain removed.
pub fn cargo_nightly(root: &Path) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(root);
    scrub_toolchain_env(&mut cmd);
    cmd.env("PATH", path_with_cargo_bin()?)
        // Never let rustup download a different nightly (its LLVM would not match bpf-linker's).
        .env("RUSTUP_AUTO_INSTALL", "0");
    Ok(cmd)
}

/// Removes the variables in [`TOOLCHAIN_PINNING_VARS`] and cargo's additions to
/// `LD_LIBRARY_PATH` (the outer toolchain's and target's library dirs).
pub fn scrub_toolchain_env(cmd: &mut Command) {
    for var in TOOLCHAIN_PINNING_VARS {
        cmd.env_remove(var);
    }
    if let Some(v) = env::var_os("LD_LIBRARY_PATH") {
        let kept = filtered_ld_path(&v, &workspace_root(), &rustup_home());
        if kept.is_empty() {
            cmd.env_remove("LD_LIBRARY_PATH");
        } else if let Ok(joined) = env::join_paths(kept) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
    }
}

fn rustup_home() -> PathBuf {
    env::var_os("RUSTUP_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().ok().map(|h| h.join(".rustup")))
        .unwrap_or_default()
}

fn filtered_ld_path(value: &OsString, root: &Path, rustup_home: &Path) -> Vec<PathBuf> {
    let toolchains = rustup_home.join("toolchains");
    let target = target_dir(root);
    let drop_toolchains = !rustup_home.as_os_str().is_empty();
    env::split_paths(value)
        .filter(|p| !(p.starts_with(&target) || drop_toolchains && p.starts_with(&toolchains)))
        .collect()
}

/// `program arg arg` for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '{', '$']) {
            s.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn spawn_error(cmd: &Command) -> String {
    format!("could not start `{}`", cmd.get_program().to_string_lossy())
}

fn status_error(cmd: &Command, status: ExitStatus) -> anyhow::Error {
    anyhow!("`{}` failed ({status})", display(cmd))
}

/// Runs a command with inherited stdio; an error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| spawn_error(cmd))?;
    if !status.success() {
        return Err(status_error(cmd, status));
    }
    Ok(())
}

/// Runs a command and returns its stdout; on failure the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| spawn_error(cmd))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(status_error(cmd, out.status)).context(stderr.trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its stdout, or `None` if it cannot start or fails.
pub fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with captured output, killing it after `timeout`.
/// `Ok(None)` means it timed out.
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| spawn_error(cmd))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_t = reader(Box::new(child.stdout.take().expect("piped")));
    let err_t = reader(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(25));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to a pid, or to a process group when `pid` is negative,
/// with the `kill` program. Errors (e.g. no such process) are ignored.
pub fn signal(pid: i64, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the `(comm)` field, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every pid in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Whether a live process (not a zombie awaiting its reaper, which `pgrep` still lists) has
/// the command name `comm`.
pub fn process_running(comm: &str) -> bool {
    pids().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
            && pid_alive(p)
    })
}

/// The pids whose parent is `pid` (scans `/proc/*/stat`).
pub fn children(pid: u32) -> Vec<u32> {
    pids()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `1m 05s` / `12.3s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = d.as_secs();
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

/// Bails with a one-line message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name: x\n"), None);
    }

    #[test]
    fn ld_path_drops_cargo_additions_only() {
        let root = Path::new("/w");
        let v = OsString::from(
            "/w/target/debug:/w/target/debug/deps:/r/toolchains/stable/lib:/opt/lib",
        );
        assert_eq!(
            filtered_ld_path(&v, root, Path::new("/r")),
            vec![PathBuf::from("/opt/lib")]
        );
    }

    #[test]
    fn nightly_cargo_does_not_inherit_the_stable_pin() {
        let cmd = cargo_nightly(&workspace_root()).unwrap();
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in [
            "RUSTUP_TOOLCHAIN",
            "CARGO",
            "RUSTC",
            "RUSTC_WRAPPER",
            "CARGO_TARGET_DIR",
        ] {
            assert!(removed.iter().any(|r| r == var), "{var} not removed");
        }
    }

    #[test]
    fn display_quotes_odd_arguments() {
        let mut cmd = Command::new("docker");
        cmd.args(["version", "--format", "{{.Server.Version}}"]);
        assert_eq!(
            display(&cmd),
            "docker version --format '{{.Server.Version}}'"
        );
    }

    #[test]
    fn timeout_kills_slow_commands() {
        let out =
            output_timeout(Command::new("sleep").arg("5"), Duration::from_millis(200)).unwrap();
        assert!(out.is_none());
        let out = output_timeout(Command::new("echo").arg("hi"), Duration::from_secs(5)).unwrap();
        assert_eq!(out.unwrap().stdout, b"hi\n");
    }
}
