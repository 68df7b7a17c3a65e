//! Small file systems a test can fill: where the agent meets a full disk for real.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::scratch_dir;

/// A small tmpfs (root directory mode 0755, as the agent's own directories are), unmounted
/// when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn new(tag: &str, size: &str) -> Tmpfs {
        let dir = scratch_dir(tag);
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the file system of `path` up with a file at `path`.
pub fn fill(path: &Path) {
    // dd stops with ENOSPC when the file system is full: its status is expected to fail.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", path.display()))
        .output()
        .unwrap();
}
