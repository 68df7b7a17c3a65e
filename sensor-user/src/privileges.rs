//! Refusing early, in one line, when the agent lacks the privileges it needs.

use anyhow::{Result, bail};

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// Fails unless running as root: loading eBPF programs, mounting tracefs and reading every
/// process's `/proc` entry all need it.
pub fn require_root(command: &str) -> Result<()> {
    let euid = euid();
    if euid != 0 {
        bail!(
            "`{command}` must run as root (it loads eBPF programs and reads every process's /proc \
             entry), but runs as uid {euid}: run it with sudo"
        );
    }
    Ok(())
}
