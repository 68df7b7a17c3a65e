//! What the agent reads its instructions from must be as privileged as the agent.
//!
//! Rule files decide what is detected and what is allowed; the state directory holds what rules
//! learned (baselines an attacker would like to widen) and the spool. A directory or file that
//! another user can write, or that another user owns, lets that user blind the sensor: such a
//! place is refused at start, with the command that fixes it. Directories the agent creates are
//! created with mode 0700 from the start (never created loose and tightened later).

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::Path,
};

use anyhow::{Context, Result, bail};

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Fails unless `path` is owned by the agent's user and no one else can write it. `what` names
/// the place in the error (`--rules directory`).
pub fn ensure_trusted(path: &Path, what: &str) -> Result<()> {
    // Symbolic links are followed (Kubernetes mounts ConfigMap files as links): what counts is
    // the file read, and the directory the link sits in is checked itself.
    let meta =
        fs::metadata(path).with_context(|| format!("inspecting the {what} {}", path.display()))?;
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    if let Some(problem) = untrusted(meta.uid(), me, meta.mode()) {
        let p = path.display();
        if meta.is_dir() && meta.mode() & 0o1000 != 0 {
            // /tmp and its kind: shared by design, never to be tightened.
            bail!(
                "the {what} {p} {problem}: it is a shared directory (sticky bit), where another \
                 user could change what the sensor detects or allows; give the sensor a \
                 directory of its own"
            );
        }
        let fix = if meta.is_dir() {
            format!("chown -R {me} {p} && chmod -R go-w {p}")
        } else {
            format!("chown {me} {p} && chmod go-w {p}")
        };
        bail!(
            "the {what} {p} {problem}: another user could change what the sensor detects or \
             allows; run `{fix}`, or point the sensor elsewhere"
        );
    }
    Ok(())
}

/// Fails unless `dir` and each file in it are [trusted](ensure_trusted).
pub fn ensure_trusted_tree(dir: &Path, what: &str) -> Result<()> {
    ensure_trusted(dir, what)?;
    let entries =
        fs::read_dir(dir).with_context(|| format!("reading the {what} {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading the {what} {}", dir.display()))?
            .path();
        ensure_trusted(&path, &format!("file in the {what}"))?;
    }
    Ok(())
}

/// Why a file of owner `uid` and `mode` is not trusted by user `me`, if it is not.
fn untrusted(uid: u32, me: u32, mode: u32) -> Option<String> {
    if uid != me {
        return Some(format!("is owned by uid {uid}, not {me}"));
    }
    if mode & 0o022 != 0 {
        return Some(format!("is writable by others (mode {:o})", mode & 0o7777));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_unshared_files_are_trusted() {
        assert_eq!(untrusted(0, 0, 0o40755), None);
        assert_eq!(untrusted(0, 0, 0o100600), None);
        assert!(untrusted(0, 0, 0o41777).unwrap().contains("mode 1777"));
        assert!(
            untrusted(0, 0, 0o40775)
                .unwrap()
                .contains("writable by others")
        );
        assert!(untrusted(1000, 0, 0o40755).unwrap().contains("uid 1000"));
    }
}
