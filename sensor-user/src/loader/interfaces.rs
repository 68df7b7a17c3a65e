//! Following network interfaces: the TC classifiers are attached to the interfaces container
//! traffic crosses, bridges and veths (any link with a peer), including veths created after
//! start (checked when a container's first process runs and on every flow interval). Loopback
//! and the host's own uplinks carry no container traffic that the cgroup skb programs miss
//! (NAT has rewritten container addresses by the uplink), so they pay nothing per packet.
//!
//! On kernels with TCX (6.6+) aya attaches through TCX links, which need no qdisc and vanish
//! with the process or the interface. Older kernels use netlink filters on a `clsact` qdisc,
//! which is added when missing; the sensor deletes the qdiscs it added when it stops
//! ([`super::qdisc`]). Only a sensor killed with SIGKILL leaves them behind, empty.

use std::{collections::HashMap, fs};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, tc},
};

use super::{Attach, HookSpec};

/// ARPHRD_ETHER: interfaces whose frames start with an ethernet header.
const ARPHRD_ETHER: u32 = 1;

/// Interfaces the classifiers are attached to, by ifindex.
#[derive(Default)]
pub struct Interfaces {
    attached: HashMap<u32, String>,
    /// Names of current and past interfaces, so a report that arrives after a veth went away
    /// still names it (ifindexes are not reused soon; pruned when it grows past a bound).
    names: HashMap<u32, String>,
    /// Attach failures, by interface, reported once each.
    failed: HashMap<String, String>,
    /// clsact qdiscs the sensor added (kernels without TCX): name -> ifindex.
    added_clsact: HashMap<String, u32>,
}

fn read_u32(path: String) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Interfaces {
    /// ifindex -> name of every interface the classifiers are on.
    pub fn names(&self) -> &HashMap<u32, String> {
        &self.names
    }

    /// Attaches the TC programs of `hooks` to interfaces not yet covered; forgets removed ones.
    /// Returns the failures that are new since the last call.
    pub fn sync(&mut self, ebpf: &mut Ebpf, hooks: &[HookSpec]) -> Vec<String> {
        let mut present = HashMap::new();
        if let Ok(dir) = fs::read_dir("/sys/class/net") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(index) = container_facing(&name) {
                    present.insert(index, name);
                }
            }
        }
        self.attached.retain(|index, _| present.contains_key(index));
        let mut errors = Vec::new();
        for (index, name) in present {
            if self.attached.contains_key(&index) {
                continue;
            }
            match attach_all(ebpf, hooks, &name) {
                Ok(added_clsact) => {
                    if added_clsact {
                        self.added_clsact.insert(name.clone(), index);
                    }
                    self.failed.remove(&name);
                    if self.names.len() > 4096 {
                        self.names.retain(|i, _| self.attached.contains_key(i));
                    }
                    self.names.insert(index, name.clone());
                    self.attached.insert(index, name);
                }
                // The interface went away while we attached (a short-lived container's veth).
                Err(_) if !std::path::Path::new(&format!("/sys/class/net/{name}")).exists() => {}
                Err(e) => {
                    let e = super::describe(&e);
                    if self.failed.insert(name.clone(), e.clone()).as_ref() != Some(&e) {
                        errors.push(format!("interface {name}: {e}"));
                    }
                }
            }
        }
        errors
    }
}

impl Drop for Interfaces {
    /// Deletes the clsact qdiscs the sensor added, where the interface still exists.
    fn drop(&mut self) {
        for (name, index) in self.added_clsact.drain() {
            if read_u32(format!("/sys/class/net/{name}/ifindex")) != Some(index) {
                continue;
            }
            if let Err(e) = super::qdisc::delete_clsact(index) {
                log::warn!("could not remove the clsact qdisc the sensor added on {name}: {e}");
            }
        }
    }
}

/// The ifindex of `name` if container traffic crosses it: an ethernet bridge, or an ethernet
/// link with a peer (`iflink` differs from `ifindex`: a veth, macvlan or vlan).
fn container_facing(name: &str) -> Option<u32> {
    let at = |f: &str| read_u32(format!("/sys/class/net/{name}/{f}"));
    let index = at("ifindex")?;
    let bridge = std::path::Path::new(&format!("/sys/class/net/{name}/bridge")).exists();
    (at("type")? == ARPHRD_ETHER && (bridge || at("iflink")? != index)).then_some(index)
}

/// Attaches the TC programs to `name`; true if a clsact qdisc had to be added for them.
fn attach_all(ebpf: &mut Ebpf, hooks: &[HookSpec], name: &str) -> Result<bool> {
    let mut added = false;
    for spec in hooks {
        let Attach::Tc { ingress } = spec.attach else {
            continue;
        };
        let program: &mut SchedClassifier = ebpf
            .program_mut(spec.program)
            .with_context(|| format!("program {} missing", spec.program))?
            .try_into()?;
        let kind = if ingress {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        };
        if let Err(first) = program.attach(name, kind) {
            // Netlink attachment (kernels without TCX) needs a clsact qdisc.
            added |= tc::qdisc_add_clsact(name).is_ok();
            program
                .attach(name, kind)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("attaching {} to {name} (first try: {first})", spec.program)
                })?;
        }
    }
    Ok(added)
}
