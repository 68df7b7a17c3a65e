//! Where the traffic programs (cgroup skb, [`Attach::CgroupSkb`]) run: on each container's
//! cgroup, attached when the container starts and detached when it exits, so the host's own
//! packets (loopback included) run no program of ours. A cgroup created inside a container's
//! cgroup inherits them. With `--net-host` (the host's traffic watched too) they sit on the
//! cgroup2 root instead, once.
//!
//! A container's first packets can precede the attachment by the time the agent takes to see
//! its cgroup created (milliseconds; its process starts later than that); they go uncounted.

use std::{collections::HashMap, fs::File, path::Path};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, cgroup_skb::CgroupSkbLinkId},
};

use super::{Attach, HookSpec};

/// The cgroups the traffic programs are attached to.
#[derive(Default)]
pub struct TrafficCgroups {
    /// cgroup directory (relative to the cgroup2 mount) -> (program, link) of each program.
    links: HashMap<String, Vec<(&'static str, CgroupSkbLinkId)>>,
}

impl TrafficCgroups {
    /// How many cgroups the programs are attached to.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Attaches every traffic program of `hooks` to the cgroup at `dir` (under `mount`).
    pub fn watch(
        &mut self,
        ebpf: &mut Ebpf,
        hooks: &[HookSpec],
        mount: &Path,
        dir: &str,
    ) -> Result<()> {
        if self.links.contains_key(dir) {
            return Ok(());
        }
        let path = mount.join(dir.trim_start_matches('/'));
        let cgroup = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut links = Vec::new();
        for spec in hooks {
            let Attach::CgroupSkb { egress } = spec.attach else {
                continue;
            };
            let result = program(ebpf, spec.program).and_then(|p| {
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
        self.links.insert(dir.to_string(), links);
        Ok(())
    }

    /// Detaches the programs from the cgroup at `dir` (a removed cgroup has detached them
    /// already; this frees the links).
    pub fn unwatch(&mut self, ebpf: &mut Ebpf, dir: &str) {
        if let Some(links) = self.links.remove(dir) {
            detach(ebpf, links);
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing"))?
        .try_into()
        .map_err(anyhow::Error::from)
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSkbLinkId)>) {
    for (name, link) in links {
        if let Ok(p) = program(ebpf, name) {
            let _ = p.detach(link);
        }
    }
}
