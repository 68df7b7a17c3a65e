//! The cgroup table (`cgroup id -> path`) and the containers it implies.
//!
//! Learned from `cgroup_mkdir`/`cgroup_rmdir` records (a runtime creates a container's cgroup
//! before its first process runs, so even a container that lives a few milliseconds is known by
//! the time its first exec arrives) plus one scan of the cgroup2 mount at start-up.

use std::{collections::HashMap, fs, os::unix::fs::MetadataExt, path::Path};

use sensor_proto as pb;

use super::{
    bounded::Departures,
    container_id::{ContainerId, ContainerRef, resolve},
    kernel_view::{KernelView, Misses},
};
use crate::types::{BootNs, CgroupId};

/// A known cgroup.
#[derive(Clone, Debug)]
pub struct CgroupEntry {
    pub path: String,
    pub container: Option<ContainerRef>,
    /// When the table learned it.
    pub since: BootNs,
}

/// A container that is running (its cgroup exists).
#[derive(Clone, Debug)]
pub struct LiveContainer {
    pub cref: ContainerRef,
    /// The container's own cgroup.
    pub cgroup_path: String,
    pub cgroup_id: CgroupId,
    /// When its cgroup was created, or an estimate (see `exact`).
    pub started: BootNs,
    /// `started` is the cgroup's creation (seen by the kernel hook), not an estimate.
    pub exact: bool,
}

/// A change in the set of running containers.
#[derive(Clone, Debug)]
pub enum ContainerChange {
    Started {
        container: LiveContainer,
        already_running: bool,
    },
    Exited {
        container: LiveContainer,
        at: BootNs,
    },
}

#[derive(Default)]
pub struct CgroupTable {
    cgroups: HashMap<CgroupId, CgroupEntry>,
    containers: HashMap<ContainerId, LiveContainer>,
    /// Host cgroups learned (`true`) or removed (`false`) since the last take.
    host_updates: Vec<(CgroupId, bool)>,
    /// Containers' cgroup directories started (`true`) or exited (`false`) since the last take.
    container_updates: Vec<(String, bool)>,
    /// Removed cgroups and exited containers, kept for [`DEPARTED_GRACE`] so that reports that
    /// arrive after the removal (traffic and ICMP aggregates) are still attributed.
    departed: HashMap<CgroupId, (BootNs, CgroupEntry)>,
    departed_containers: HashMap<ContainerId, (BootNs, LiveContainer)>,
    /// Cgroups and containers the last kernel view missed.
    missing_cgroups: Misses<CgroupId>,
    missing_containers: Misses<ContainerId>,
    /// What left each table other than by an rmdir record.
    left: TableDepartures,
}

#[derive(Default)]
struct TableDepartures {
    cgroups: Departures,
    containers: Departures,
    departed: Departures,
    departed_containers: Departures,
}

/// Live cgroups kept at most (a node's whole hierarchy: slices, services, containers and
/// their nested cgroups); beyond it the newest go first, so a flood of cgroups evicts itself.
pub const MAX_CGROUPS: usize = 65_536;
/// Running containers kept at most; the newest go first.
pub const MAX_CONTAINERS: usize = 16_384;
/// Removed cgroups and exited containers kept at most (each for [`DEPARTED_GRACE`]); the
/// oldest go first.
pub const MAX_DEPARTED: usize = 16_384;

/// How long a removed cgroup stays resolvable.
pub const DEPARTED_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl CgroupTable {
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }

    /// A cgroup, live or recently removed.
    pub fn get(&self, id: CgroupId) -> Option<&CgroupEntry> {
        self.cgroups
            .get(&id)
            .or_else(|| self.departed.get(&id).map(|(_, e)| e))
    }

    /// A container, running or recently exited.
    pub fn container(&self, id: &ContainerId) -> Option<&LiveContainer> {
        self.containers
            .get(id)
            .or_else(|| self.departed_containers.get(id).map(|(_, c)| c))
    }

    /// Forgets what departed more than [`DEPARTED_GRACE`] before `now`.
    pub fn prune(&mut self, now: BootNs) {
        let keep = |t: &BootNs| now.since(*t) < DEPARTED_GRACE;
        self.departed.retain(|_, (t, _)| keep(t));
        self.departed_containers.retain(|_, (t, _)| keep(t));
    }

    /// Removes the cgroups and containers that two kernel views in a row missed (their rmdir
    /// records were lost), as an rmdir would: containers among them are reported exited at the
    /// time of the view.
    pub fn prune_missing(&mut self, view: &KernelView) -> Vec<ContainerChange> {
        let Some((ids, paths)) = &view.cgroups else {
            return Vec::new();
        };
        let judged = |since: BootNs| since < view.taken_at;
        let gone = self.missing_cgroups.confirm(
            self.cgroups
                .iter()
                .filter(|(id, e)| judged(e.since) && !ids.contains(id))
                .map(|(id, _)| *id),
        );
        let mut changes = Vec::new();
        for id in gone {
            let path = self.cgroups[&id].path.clone();
            self.left.cgroups.pruned += 1;
            changes.extend(self.remove(id, &path, view.taken_at));
        }
        // A container known through a nested cgroup only, whose own cgroup was never recorded.
        let gone = self.missing_containers.confirm(
            self.containers
                .values()
                .filter(|c| judged(c.started) && !paths.contains(&c.cgroup_path))
                .map(|c| c.cref.id.clone()),
        );
        for id in gone {
            if let Some(c) = self.containers.get(&id) {
                let (cgroup, path) = (c.cgroup_id, c.cgroup_path.clone());
                self.left.containers.pruned += 1;
                changes.extend(self.remove(cgroup, &path, view.taken_at));
            }
        }
        changes
    }

    /// Sizes, bounds and departures of the cgroup and container tables.
    pub fn health(&self) -> Vec<pb::TableHealth> {
        let l = &self.left;
        vec![
            l.cgroups.health("cgroups", self.cgroups.len(), MAX_CGROUPS),
            l.containers
                .health("containers", self.containers.len(), MAX_CONTAINERS),
            l.departed
                .health("departed_cgroups", self.departed.len(), MAX_DEPARTED),
            l.departed_containers.health(
                "departed_containers",
                self.departed_containers.len(),
                MAX_DEPARTED,
            ),
        ]
    }

    fn insert_cgroup(&mut self, id: CgroupId, entry: CgroupEntry) {
        if !self.cgroups.contains_key(&id) {
            self.left
                .cgroups
                .make_room(&mut self.cgroups, MAX_CGROUPS, |_, e| {
                    std::cmp::Reverse(e.since)
                });
        }
        self.cgroups.insert(id, entry);
    }

    /// Walks the cgroup2 hierarchy under `mount`; every container found is reported as already
    /// running, with `now` as its provisional start.
    pub fn scan(&mut self, mount: &Path, now: BootNs) -> Vec<ContainerChange> {
        let mut changes = Vec::new();
        for (id, rel) in walk(mount) {
            if let Some(change) = self.add(id, &rel, now, false) {
                changes.push(change);
            }
        }
        changes
            .into_iter()
            .map(|c| match c {
                ContainerChange::Started { container, .. } => ContainerChange::Started {
                    container,
                    already_running: true,
                },
                other => other,
            })
            .collect()
    }

    /// A cgroup was created (or found). Reports a container start when the cgroup is a
    /// container's own and the container was not known yet.
    pub fn add(
        &mut self,
        id: CgroupId,
        path: &str,
        at: BootNs,
        exact: bool,
    ) -> Option<ContainerChange> {
        let container = resolve(path);
        if container.is_none() {
            self.host_updates.push((id, true));
        }
        self.insert_cgroup(
            id,
            CgroupEntry {
                path: path.to_string(),
                container: container.clone(),
                since: at,
            },
        );
        let cref = container?;
        if !cref.is_root(path) || self.containers.contains_key(&cref.id) {
            return None;
        }
        Some(self.start(cref, path, id, at, exact))
    }

    fn start(
        &mut self,
        cref: ContainerRef,
        path: &str,
        id: CgroupId,
        at: BootNs,
        exact: bool,
    ) -> ContainerChange {
        let live = LiveContainer {
            cgroup_path: path[..cref.root_len.min(path.len())].to_string(),
            cref,
            cgroup_id: id,
            started: at,
            exact,
        };
        self.left
            .containers
            .make_room(&mut self.containers, MAX_CONTAINERS, |_, c| {
                std::cmp::Reverse(c.started)
            });
        self.containers.insert(live.cref.id.clone(), live.clone());
        self.container_updates
            .push((live.cgroup_path.clone(), true));
        ContainerChange::Started {
            container: live,
            already_running: false,
        }
    }

    /// A process runs in container `cref` (found through cgroup `id`): reports a start when the
    /// container was not known (its cgroup creation was missed).
    pub fn ensure_container(
        &mut self,
        cref: &ContainerRef,
        path: &str,
        id: CgroupId,
        at: BootNs,
    ) -> Option<ContainerChange> {
        // Known, or exited already (a late report is not a new start).
        if self.containers.contains_key(&cref.id) || self.departed_containers.contains_key(&cref.id)
        {
            return None;
        }
        let root_id = if cref.is_root(path) { id } else { CgroupId(0) };
        Some(self.start(cref.clone(), path, root_id, at, false))
    }

    /// A cgroup was removed. Reports a container exit when it was a container's own cgroup.
    pub fn remove(&mut self, id: CgroupId, path: &str, at: BootNs) -> Option<ContainerChange> {
        let entry = self.cgroups.remove(&id);
        if entry.as_ref().is_some_and(|e| e.container.is_none()) {
            self.host_updates.push((id, false));
        }
        let cref = entry
            .as_ref()
            .and_then(|e| e.container.clone())
            .or_else(|| resolve(path));
        if let Some(entry) = entry {
            self.left
                .departed
                .make_room(&mut self.departed, MAX_DEPARTED, |_, (t, _)| *t);
            self.departed.insert(id, (at, entry));
        }
        let cref = cref?;
        if !cref.is_root(path) {
            return None;
        }
        let container = self.containers.remove(&cref.id)?;
        self.container_updates
            .push((container.cgroup_path.clone(), false));
        self.left.departed_containers.make_room(
            &mut self.departed_containers,
            MAX_DEPARTED,
            |_, (t, _)| *t,
        );
        self.departed_containers
            .insert(cref.id.clone(), (at, container.clone()));
        Some(ContainerChange::Exited { container, at })
    }

    /// Registers a cgroup learned from `/proc/PID/cgroup` when its id is not known: the id is the
    /// inode of the directory under the cgroup2 mount.
    pub fn learn_path(&mut self, mount: &Path, path: &str) -> Option<CgroupId> {
        let meta = fs::metadata(mount.join(path.trim_start_matches('/'))).ok()?;
        let id = CgroupId(meta.ino());
        if !self.cgroups.contains_key(&id) {
            let entry = CgroupEntry {
                path: path.to_string(),
                container: resolve(path),
                since: crate::clock::Clock::boot_now(),
            };
            self.insert_cgroup(id, entry);
        }
        Some(id)
    }

    /// See [`CgroupTable::container_updates`].
    pub fn take_container_updates(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.container_updates)
    }

    /// See [`CgroupTable::host_updates`].
    pub fn take_host_updates(&mut self) -> Vec<(CgroupId, bool)> {
        std::mem::take(&mut self.host_updates)
    }

    /// Lowers a container's provisional start to `t` (the start of its oldest process).
    pub fn note_process_start(&mut self, id: &ContainerId, t: BootNs) {
        if let Some(c) = self.containers.get_mut(id)
            && !c.exact
            && t.0 > 0
            && t < c.started
        {
            c.started = t;
        }
    }
}

/// Every cgroup under `mount`: its id (the directory's inode) and its path relative to the
/// mount ("/" for the root).
pub fn walk(mount: &Path) -> Vec<(CgroupId, String)> {
    let mut found = Vec::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        let rel = dir
            .strip_prefix(mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_default();
        let rel = if rel == "/" {
            rel
        } else {
            rel.trim_end_matches('/').to_string()
        };
        found.push((CgroupId(meta.ino()), rel));
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    #[test]
    fn container_lifecycle_from_mkdir_rmdir() {
        let mut t = CgroupTable::default();
        assert!(t.add(CgroupId(10), "/docker", BootNs(1), true).is_none());
        let path = format!("/docker/{ID}");
        let Some(ContainerChange::Started {
            container,
            already_running,
        }) = t.add(CgroupId(11), &path, BootNs(100), true)
        else {
            panic!("no start")
        };
        assert!(!already_running);
        assert_eq!(container.cref.id.as_str(), ID);
        assert_eq!(container.cgroup_path, path);
        // A nested cgroup of the same container is not a second start, nor is its removal an exit.
        assert!(
            t.add(
                CgroupId(12),
                &format!("{path}/init.scope"),
                BootNs(150),
                true
            )
            .is_none()
        );
        assert!(
            t.remove(CgroupId(12), &format!("{path}/init.scope"), BootNs(160))
                .is_none()
        );
        assert_eq!(
            t.get(CgroupId(11))
                .unwrap()
                .container
                .as_ref()
                .unwrap()
                .id
                .as_str(),
            ID
        );
        let Some(ContainerChange::Exited { container, at }) =
            t.remove(CgroupId(11), &path, BootNs(400))
        else {
            panic!("no exit")
        };
        assert_eq!(at.since(container.started).as_nanos(), 300);
        assert_eq!(t.container_count(), 0);
        assert!(t.remove(CgroupId(11), &path, BootNs(500)).is_none());
    }

    #[test]
    fn departed_cgroups_stay_resolvable_for_a_while() {
        let mut t = CgroupTable::default();
        let path = format!("/docker/{ID}");
        t.add(CgroupId(11), &path, BootNs(100), true);
        t.remove(CgroupId(11), &path, BootNs(200));
        let cref = t
            .get(CgroupId(11))
            .and_then(|e| e.container.clone())
            .expect("still resolvable");
        assert_eq!(t.container(&cref.id).unwrap().cgroup_id, CgroupId(11));
        // A late report must not restart the container.
        assert!(
            t.ensure_container(&cref, &path, CgroupId(11), BootNs(300))
                .is_none()
        );
        t.prune(BootNs(200 + DEPARTED_GRACE.as_nanos() as u64 + 1));
        assert!(t.get(CgroupId(11)).is_none());
        assert!(t.container(&cref.id).is_none());
    }

    fn view(taken_at: u64, cgroups: &[(u64, &str)]) -> KernelView {
        KernelView {
            taken_at: BootNs(taken_at),
            procs: Default::default(),
            cgroups: Some((
                cgroups.iter().map(|(id, _)| CgroupId(*id)).collect(),
                cgroups.iter().map(|(_, p)| p.to_string()).collect(),
            )),
        }
    }

    #[test]
    fn a_lost_rmdir_is_pruned_after_two_views_as_an_exit() {
        let mut t = CgroupTable::default();
        let path = format!("/docker/{ID}");
        t.add(CgroupId(10), "/docker", BootNs(1), true);
        t.add(CgroupId(11), &path, BootNs(100), true);
        // Added after the view was read: not judged by it.
        t.add(CgroupId(12), "/late", BootNs(600), true);
        let gone = view(500, &[(10, "/docker")]);
        assert!(t.prune_missing(&gone).is_empty());
        let changes = t.prune_missing(&gone);
        let [ContainerChange::Exited { container, at }] = &changes[..] else {
            panic!("{changes:?}")
        };
        assert_eq!((container.cref.id.as_str(), *at), (ID, BootNs(500)));
        assert!(t.get(CgroupId(12)).is_some());
        assert_eq!(t.container_count(), 0);
        // Departed, so a late report still resolves, and the exit is not reported twice.
        assert!(t.get(CgroupId(11)).is_some());
        assert!(t.remove(CgroupId(11), &path, BootNs(700)).is_none());
        let health = t.health();
        assert_eq!((health[0].table.as_str(), health[0].pruned), ("cgroups", 1));
    }

    #[test]
    fn a_cgroup_flood_evicts_its_newest() {
        let mut t = CgroupTable::default();
        for i in 0..MAX_CGROUPS as u64 {
            t.add(CgroupId(i + 1), &format!("/flood/{i}"), BootNs(i + 1), true);
        }
        t.add(CgroupId(u64::MAX), "/one-more", BootNs(u64::MAX), true);
        assert!(t.get(CgroupId(1)).is_some());
        assert!(t.get(CgroupId(MAX_CGROUPS as u64)).is_none());
        assert!(t.get(CgroupId(u64::MAX)).is_some());
        assert_eq!(t.health()[0].evicted, (MAX_CGROUPS / 16) as u64);
    }

    #[test]
    fn missed_mkdir_is_recovered_once() {
        let mut t = CgroupTable::default();
        let path = format!("/system.slice/docker-{ID}.scope");
        let cref = resolve(&path).unwrap();
        assert!(
            t.ensure_container(&cref, &path, CgroupId(5), BootNs(9))
                .is_some()
        );
        assert!(
            t.ensure_container(&cref, &path, CgroupId(5), BootNs(9))
                .is_none()
        );
        t.note_process_start(&cref.id, BootNs(3));
        assert_eq!(t.container(&cref.id).unwrap().started, BootNs(3));
    }
}
