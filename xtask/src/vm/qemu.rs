//! Boots a guest under qemu with software emulation (TCG: this machine's /dev/kvm cannot run
//! a stock kernel) and returns its serial console, echoing test progress as it comes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::util::step;

/// How qemu emulates the guest's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulation {
    /// One host thread per vCPU (`thread=multi`) or all vCPUs on one (`thread=single`).
    pub threads: TcgThreads,
    /// The guest's CPU count (`-smp`).
    pub cpus: u8,
}

/// qemu's TCG threading (`-accel tcg,thread=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcgThreads {
    Single,
    Multi,
}

impl Emulation {
    fn accel(&self) -> String {
        let threads = match self.threads {
            TcgThreads::Single => "single",
            TcgThreads::Multi => "multi",
        };
        format!("tcg,thread={threads}")
    }
}

impl std::fmt::Display for Emulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "-accel {} -smp {}", self.accel(), self.cpus)
    }
}

/// What a boot produced.
pub struct Boot {
    pub console: String,
    pub elapsed: Duration,
    /// The guest did not power off in time and was killed.
    pub timed_out: bool,
}

/// Boots `vmlinuz` with `initramfs`, saving the console in `log`.
pub fn boot(
    vmlinuz: &Path,
    initramfs: &Path,
    log: &Path,
    label: &str,
    emulation: Emulation,
    timeout: Duration,
) -> Result<Boot> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", &emulation.accel(), "-cpu", "max"])
        .args(["-smp", &emulation.cpus.to_string(), "-m", "3072"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 loglevel=3 panic=-1 rdinit=/init net.ifnames=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64 (install qemu-system-x86)")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut file = std::fs::File::create(log)
        .with_context(|| format!("could not create {}", log.display()))?;
    let mut console = String::new();
    let deadline = started + timeout;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                progress(label, &line);
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    if !status.success() && !timed_out {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        anyhow::bail!("qemu failed ({status}): {}", err.trim());
    }
    Ok(Boot {
        console,
        elapsed: started.elapsed(),
        timed_out,
    })
}

/// Echoes the lines that say how the guest is doing.
fn progress(label: &str, line: &str) {
    if line.starts_with("test ") && line.contains(" ... ") {
        println!("  [{label}] {line}");
    } else if let Some(rest) = line.strip_prefix("VMTEST-") {
        if rest.starts_with("BEGIN") || rest.starts_with("KERNEL") || rest.starts_with("WARN") {
            step(format!("[{label}] {rest}"));
        }
    } else if super::console::starts_death_report(line) {
        step(format!("[{label}] {line}"));
    }
}
