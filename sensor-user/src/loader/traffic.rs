//! Where the traffic programs (cgroup skb, [`Attach::CgroupSkb`]) run: on the cgroups that
//! hold containers, so the host's own packets (loopback included) run no program of ours.
//!
//! A program attached to a cgroup runs for every cgroup below it, those created later included:
//! the kernel gives a new cgroup its ancestors' programs when it is made. So the programs go on
//! the runtime's parent cgroup (`/docker`, `/kubepods.slice`, ...), not on each container's: a
//! container created under a watched parent counts from its first packet, however late the
//! agent reads of its creation (a container that pings and exits while the agent is stalled is
//! still counted). The parents of the cgroupfs drivers ([`RUNTIME_PARENTS`]) are watched from
//! load when they exist; any other parent from its first container on. A container whose cgroup
//! sits directly under the root gets the programs on its own cgroup, from its start until its
//! exit. With `--net-host` (the host's traffic watched too) they sit on the cgroup2 root, once.
//!
//! A parent shared with host services (the systemd driver's `/system.slice`) makes those
//! services run the programs too; the programs filter host cgroups first thing.
//!
//! A cgroup never gets the programs twice: a directory under a watched one is not attached, and
//! attaching a parent detaches what was attached below it.

use std::{collections::HashMap, fs::File, path::Path};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLinkId},
};

use super::{Attach, HookSpec, program_as};

/// The cgroups the traffic programs are attached to.
#[derive(Default)]
pub struct TrafficCgroups {
    /// cgroup directory (relative to the cgroup2 mount) -> (program, link) of each program.
    links: HashMap<String, Vec<(&'static str, CgroupSkbLinkId)>>,
}

/// The cgroupfs drivers' parent cgroups (under the cgroup2 root), which hold containers only:
/// Docker's, Kubernetes', podman's (cgroupfs and systemd).
pub const RUNTIME_PARENTS: [&str; 5] = [
    "docker",
    "kubepods",
    "kubepods.slice",
    "libpod_parent",
    "machine.slice",
];

impl TrafficCgroups {
    /// How many cgroups the programs are attached to.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Attaches the programs to those of [`RUNTIME_PARENTS`] that exist under `mount`.
    pub fn watch_runtime_parents(
        &mut self,
        ebpf: &mut Ebpf,
        hooks: &[HookSpec],
        mount: &Path,
    ) -> Result<()> {
        for parent in RUNTIME_PARENTS {
            if mount.join(parent).is_dir() {
                self.watch(ebpf, hooks, mount, &format!("/{parent}"))?;
            }
        }
        Ok(())
    }

    /// Attaches every traffic program of `hooks` to the cgroup at `dir` (under `mount`), unless
    /// `dir` or one of its ancestors has them.
    pub fn watch(
        &mut self,
        ebpf: &mut Ebpf,
        hooks: &[HookSpec],
        mount: &Path,
        dir: &str,
    ) -> Result<()> {
        if self.links.keys().any(|watched| within(dir, watched)) {
            return Ok(());
        }
        let path = mount.join(dir.trim_start_matches('/'));
        let cgroup = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut links = Vec::new();
        for spec in hooks {
            let Attach::CgroupSkb { egress } = spec.attach else {
                continue;
            };
            let result = program_as::<CgroupSkb>(ebpf, spec.program).and_then(|p| {
                let kind = if egress {
                    CgroupSkbAttachType::Egress
                } else {
                    CgroupSkbAttachType::Ingress
                };
                // A bpf_link coexists with other programs on the cgroup (the runtime's).
                p.attach(&cgroup, kind, CgroupAttachMode::Single)
                    .map_err(anyhow::Error::from)
            });
            match result {
                Ok(link) => links.push((spec.program, link)),
                Err(e) => {
                    detach(ebpf, links);
                    return Err(e.context(format!(
                        "attaching {} to cgroup {}",
                        spec.program,
                        path.display()
                    )));
                }
            }
        }
        let nested: Vec<String> = (self.links.keys())
            .filter(|watched| within(watched, dir))
            .cloned()
            .collect();
        for watched in nested {
            self.unwatch(ebpf, &watched);
        }
        self.links.insert(dir.to_string(), links);
        Ok(())
    }

    /// Detaches the programs from the cgroup at `dir` when they were attached to it: a
    /// container's own cgroup at its exit (a removed cgroup has detached them already; this
    /// frees the links). A parent stays watched.
    pub fn unwatch(&mut self, ebpf: &mut Ebpf, dir: &str) {
        if let Some(links) = self.links.remove(dir) {
            detach(ebpf, links);
        }
    }
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSkbLinkId)>) {
    for (name, link) in links {
        if let Ok(p) = program_as::<CgroupSkb>(ebpf, name) {
            let _ = p.detach(link);
        }
    }
}

/// Where the programs go for a container whose cgroup is `dir`: its parent, or `dir` itself
/// when its parent is the root.
pub fn holder(dir: &str) -> &str {
    match dir.rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => parent,
        _ => dir,
    }
}

/// Whether cgroup `dir` is `ancestor` or below it (paths relative to the cgroup2 mount, `/` the
/// root).
fn within(dir: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    ancestor.is_empty()
        || dir == ancestor
        || dir
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::{holder, within};

    #[test]
    fn a_cgroup_is_within_itself_its_ancestors_and_the_root() {
        assert!(within("/docker/abc", "/docker"));
        assert!(within("/docker", "/docker"));
        assert!(within("/docker/abc", "/"));
        assert!(within("/", "/"));
        assert!(!within("/docker", "/docker/abc"));
        assert!(!within("/dockerd/abc", "/docker"));
        assert!(!within("/system.slice", "/docker"));
    }

    #[test]
    fn a_container_is_held_by_its_parent_unless_that_is_the_root() {
        assert_eq!(holder("/docker/abc"), "/docker");
        assert_eq!(
            holder("/kubepods.slice/pod1/cri-abc"),
            "/kubepods.slice/pod1"
        );
        assert_eq!(holder("/abc"), "/abc");
    }
}
