//! Where the host mounts cgroup2: the loader attaches its cgroup programs to that root and the
//! enricher reads cgroup paths below it. Neither stage owns it, so it lives beside both.

use std::{fs, path::PathBuf};

/// The cgroup2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount() {
        // Every supported host has a cgroup2 mount (hybrid or unified).
        let mount = cgroup2_mount().expect("cgroup2 mount");
        assert!(mount.join("cgroup.procs").exists(), "{}", mount.display());
    }
}
