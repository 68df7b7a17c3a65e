//! Following network interfaces: the TC classifiers are attached where container traffic
//! enters and leaves the host: bridges, and links with a peer (veths, macvlans, vlans) that
//! are no bridge's port (routed container links), including those created after start
//! (checked when a container's first process runs and on every flow interval). A bridge's
//! ports are left alone: what a container exchanges with the host or beyond crosses the
//! bridge itself, and what two containers of one bridge exchange would otherwise pay two
//! classifier runs per packet (measured: 4 points of the connect storm between containers
//! and of container nginx, `cargo xtask bench`); the cgroup skb programs see the ICMP such
//! containers' own sockets send and receive. Loopback and the host's own uplinks carry no
//! container traffic that the cgroup skb programs miss (NAT has rewritten container addresses
//! by the uplink), so they pay nothing per packet.
//!
//! On kernels with TCX (6.6+) aya attaches through TCX links, which need no qdisc and vanish
//! with the process or the interface. Older kernels use netlink filters on a `clsact` qdisc,
//! which is added when missing; the sensor deletes the qdiscs it added when it stops
//! ([`super::qdisc`]). Only a sensor killed with SIGKILL leaves them behind, empty.

use std::{collections::HashMap, fs};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};

use super::{Attach, HookSpec, program_as};

/// ARPHRD_ETHER: interfaces whose frames start with an ethernet header.
const ARPHRD_ETHER: u32 = 1;

/// IFF_UP: an interface set up by its owner.
const IFF_UP: u32 = 0x1;

/// The classifiers on one interface.
struct Attached {
    name: String,
    /// (program, its link on this interface).
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

/// Interfaces the classifiers are attached to, by ifindex.
#[derive(Default)]
pub struct Interfaces {
    attached: HashMap<u32, Attached>,
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

    /// Attaches the TC programs of `hooks` to interfaces not yet covered; forgets removed ones
    /// and detaches from those that no longer qualify (a link that became a bridge's port after
    /// it was attached). Returns the failures that are new since the last call.
    pub fn sync(&mut self, ebpf: &mut Ebpf, hooks: &[HookSpec]) -> Vec<String> {
        // ifindex -> (name, whether the classifiers belong on it)
        let mut present = HashMap::new();
        if let Ok(dir) = fs::read_dir("/sys/class/net") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(index) = read_u32(format!("/sys/class/net/{name}/ifindex")) {
                    let facing = container_facing(&name, index);
                    present.insert(index, (name, facing));
                }
            }
        }
        // Gone interfaces took their classifiers with them.
        self.attached.retain(|index, _| present.contains_key(index));
        let leaving: Vec<u32> = self
            .attached
            .keys()
            .filter(|index| present.get(index).is_some_and(|(_, facing)| !facing))
            .copied()
            .collect();
        for index in leaving {
            if let Some(attached) = self.attached.remove(&index) {
                detach_all(ebpf, attached);
            }
        }
        let mut errors = Vec::new();
        for (index, (name, facing)) in present {
            if !facing || self.attached.contains_key(&index) {
                continue;
            }
            match attach_all(ebpf, hooks, &name) {
                Ok((links, added_clsact)) => {
                    if added_clsact {
                        self.added_clsact.insert(name.clone(), index);
                    }
                    self.failed.remove(&name);
                    if self.names.len() > 4096 {
                        self.names.retain(|i, _| self.attached.contains_key(i));
                    }
                    self.names.insert(index, name.clone());
                    self.attached.insert(index, Attached { name, links });
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

/// Whether container traffic enters or leaves the host through `name` (ifindex `index`): an
/// ethernet bridge, or an ethernet link with a peer (`iflink` differs from `ifindex`: a veth,
/// macvlan or vlan) that is set up and is no bridge's port (a port's traffic to and from the
/// host crosses its bridge; a link is set up once it is where it belongs, so a veth on its way
/// into a bridge is not taken for a routed one).
fn container_facing(name: &str, index: u32) -> bool {
    let at = |f: &str| read_u32(format!("/sys/class/net/{name}/{f}"));
    let has = |f: &str| std::path::Path::new(&format!("/sys/class/net/{name}/{f}")).exists();
    let up = || {
        fs::read_to_string(format!("/sys/class/net/{name}/flags"))
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & IFF_UP != 0)
    };
    let routed = || at("iflink") != Some(index) && !has("brport") && up();
    at("type") == Some(ARPHRD_ETHER) && (has("bridge") || routed())
}

/// Detaches the classifiers of one interface (which still exists).
fn detach_all(ebpf: &mut Ebpf, attached: Attached) {
    for (program, link) in attached.links {
        let detached = program_as::<SchedClassifier>(ebpf, program)
            .and_then(|p| p.detach(link).map_err(anyhow::Error::from));
        if let Err(e) = detached {
            log::warn!("could not detach {program} from {}: {e:#}", attached.name);
        }
    }
}

/// Attaches the TC programs to `name`: their links, and true if a clsact qdisc had to be added
/// for them.
fn attach_all(
    ebpf: &mut Ebpf,
    hooks: &[HookSpec],
    name: &str,
) -> Result<(Vec<(&'static str, SchedClassifierLinkId)>, bool)> {
    let mut added = false;
    let mut links = Vec::new();
    for spec in hooks {
        let Attach::Tc { ingress } = spec.attach else {
            continue;
        };
        let program = program_as::<SchedClassifier>(ebpf, spec.program)?;
        let kind = if ingress {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        };
        let link = match program.attach(name, kind) {
            Ok(link) => link,
            Err(first) => {
                // Netlink attachment (kernels without TCX) needs a clsact qdisc.
                added |= aya::programs::tc::qdisc_add_clsact(name).is_ok();
                program
                    .attach(name, kind)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!("attaching {} to {name} (first try: {first})", spec.program)
                    })?
            }
        };
        links.push((spec.program, link));
    }
    Ok((links, added))
}
