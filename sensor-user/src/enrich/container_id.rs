//! Container attribution from cgroup paths.
//!
//! This module owns one question: given a cgroup path (as the kernel reports it relative to a
//! hierarchy root, e.g. from the `cgroup:cgroup_mkdir` tracepoint or `/proc/PID/cgroup`, or
//! relative to a cgroup mount), which container does it belong to? The answer keeps the FULL
//! container id (64 lowercase hex for OCI runtimes, the container name for LXC), the runtime that
//! named it, the Kubernetes pod UID when the path carries one, and where in the path the
//! container's own cgroup ends.
//!
//! Shapes recognised, as one path component (`<id>` is exactly 64 chars of `[0-9a-f]`):
//!
//! | component                              | runtime      | notes                                    |
//! |----------------------------------------|--------------|------------------------------------------|
//! | `docker-<id>.scope`                    | docker       | systemd cgroup driver (rootful/rootless) |
//! | `cri-containerd-<id>.scope`            | containerd   |                                          |
//! | `crio-<id>.scope`, `crio-conmon-<id>.scope` | cri-o   | conmon gets its container's id           |
//! | `libpod-<id>.scope`, `libpod-conmon-<id>.scope` | podman | rootful and rootless              |
//! | the same prefixes without `.scope`     | as above     | cgroupfs driver (`crio-<id>`, `libpod-<id>`) |
//! | `<x>.slice:<prefix>:<id>`              | as above     | systemd-style `slice:prefix:name` cgroups path used literally, e.g. `system.slice:cri-containerd:<id>` |
//! | `<id>` under `docker`                  | docker       | cgroupfs driver, v1 and v2               |
//! | `<id>` under `actions_job`             | actions      | GitHub Actions runner job containers     |
//! | `<id>` under `kubepods[/<qos>]/pod<uid>` | kubernetes | cgroupfs driver: the runtime can't be told |
//! | `lxc.payload.<name>`, `<name>` under `lxc` | lxc      | id is the name                           |
//!
//! A pod UID is taken from the component just above the container: `pod<uid>` (cgroupfs, under
//! `kubepods` or `kubepods/<besteffort|burstable>`) or `…kubepods[-<qos>]-pod<uid>.slice` (systemd
//! driver, where kubelet writes the UID's dashes as underscores; they are turned back into dashes).
//!
//! Components may appear anywhere in the path, so mount-relative paths (`/sys/fs/cgroup/...`),
//! v1 hybrid `name=systemd` paths, leading/trailing/doubled slashes all work. Anything else —
//! `/`, `/init.scope`, `/system.slice/sshd.service`, `/docker` alone, a 63- or 65-char or
//! uppercase id, `/<containerd-namespace>/<id>` (too loose to trust) — resolves to `None`.
//!
//! **Outermost wins.** When containers nest (docker-in-docker, kind nodes, a CI job running
//! containers), the first matching component from the root is chosen: the outer container is
//! the one the node's runtime knows and can be asked about, and the one alerts should name.
//! The inner ids are still visible in the path for anyone who needs them.
//!
//! Parsing walks the path once without allocating; only a match allocates (the id, and the pod
//! UID when there is one).

use std::borrow::Borrow;
use std::fmt;

/// A container's id as its runtime names it: 64 lowercase hex for OCI runtimes, or a name for LXC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// An OCI runtime's id as an API reports it: exactly 64 lowercase hex characters.
    pub fn from_oci(id: &str) -> Option<Self> {
        is_hex64(id).then(|| Self(id.to_string()))
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, as `docker ps` shows them (the whole id if shorter).
    pub fn short(&self) -> &str {
        match self.0.char_indices().nth(12) {
            Some((end, _)) => &self.0[..end],
            None => &self.0,
        }
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lets a `HashMap<ContainerId, _>` be looked up by `&str`.
impl Borrow<str> for ContainerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The runtime that created a container, as far as the cgroup path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A kubepods cgroupfs path (`/kubepods/.../pod<uid>/<id>`), where the runtime can't be told.
    Kubernetes,
    GithubActions,
    Lxc,
}

impl Runtime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
            Runtime::GithubActions => "actions",
            Runtime::Lxc => "lxc",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub runtime: Runtime,
    pub id: ContainerId,
    /// Kubernetes pod UID with dashes, when the path has one.
    pub pod_uid: Option<String>,
    /// The length of the prefix of the path that is the container's own cgroup (so a nested cgroup like
    /// `/docker/<id>/init.scope` can be told from the container's root cgroup `/docker/<id>`).
    pub root_len: usize,
}

impl ContainerRef {
    /// Whether `path` is the container's own cgroup rather than one nested in it (a trailing `/` is
    /// tolerated). `root_len` counts bytes of the path this ref was resolved from, so `path` must be
    /// spelled the same way up to there (same leading slash, same mount prefix).
    pub fn is_root(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        path.len() == self.root_len
            && path
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(self.id.as_str()))
    }
}

/// Component prefixes (before `-<id>[.scope]`, or between colons in `<x>.slice:<prefix>:<id>`).
const PREFIXES: &[(&str, Runtime)] = &[
    ("docker", Runtime::Docker),
    ("cri-containerd", Runtime::Containerd),
    ("crio", Runtime::CriO),
    ("crio-conmon", Runtime::CriO),
    ("libpod", Runtime::Podman),
    ("libpod-conmon", Runtime::Podman),
];

/// Parents under which a bare `<id>` component is a container.
const PARENTS: &[(&str, Runtime)] = &[
    ("docker", Runtime::Docker),
    ("actions_job", Runtime::GithubActions),
];

/// Resolves a cgroup path to the (outermost) container it belongs to.
pub fn resolve(path: &str) -> Option<ContainerRef> {
    // The previous non-empty components, nearest first.
    let mut up: [&str; 3] = [""; 3];
    let mut start = 0;
    for comp in path.split('/') {
        let end = start + comp.len();
        if !comp.is_empty() {
            if let Some((runtime, id, pod_uid)) = match_component(comp, &up) {
                return Some(ContainerRef {
                    runtime,
                    id: ContainerId(id.to_owned()),
                    pod_uid,
                    root_len: end,
                });
            }
            up = [comp, up[0], up[1]];
        }
        start = end + 1;
    }
    None
}

/// Matches one component, given the components above it (nearest first).
fn match_component<'a>(
    comp: &'a str,
    up: &[&str; 3],
) -> Option<(Runtime, &'a str, Option<String>)> {
    // `<prefix>-<id>.scope` / `<prefix>-<id>`.
    for &(prefix, runtime) in PREFIXES {
        if let Some(rest) = comp.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) {
            let id = rest.strip_suffix(".scope").unwrap_or(rest);
            if is_hex64(id) {
                return Some((runtime, id, pod_uid_of_parent(up)));
            }
        }
    }

    // `<x>.slice:<prefix>:<id>`: a systemd-style cgroups path taken literally as a cgroupfs name.
    if let Some((head, id)) = comp.rsplit_once(':')
        && let Some((slice, prefix)) = head.split_once(':')
        && slice.ends_with(".slice")
        && is_hex64(id)
        && let Some(&(_, runtime)) = PREFIXES.iter().find(|(p, _)| *p == prefix)
    {
        return Some((runtime, id, systemd_pod_uid(slice)));
    }

    // A bare `<id>` under a known parent.
    if is_hex64(comp) {
        if let Some(&(_, runtime)) = PARENTS.iter().find(|(p, _)| *p == up[0]) {
            return Some((runtime, comp, None));
        }
        if let Some(uid) = cgroupfs_pod_uid(up) {
            return Some((Runtime::Kubernetes, comp, Some(uid.to_owned())));
        }
    }

    // LXC names.
    let name =
        comp.strip_prefix("lxc.payload.")
            .or(if up[0] == "lxc" { Some(comp) } else { None })?;
    (!name.is_empty()).then_some((Runtime::Lxc, name, None))
}

/// The pod UID from the component just above a container, in either driver's spelling.
fn pod_uid_of_parent(up: &[&str; 3]) -> Option<String> {
    systemd_pod_uid(up[0]).or_else(|| cgroupfs_pod_uid(up).map(str::to_owned))
}

/// `kubepods/[besteffort|burstable/]pod<uid>` (nearest first in `up`) -> `<uid>`.
fn cgroupfs_pod_uid<'a>(up: &[&'a str; 3]) -> Option<&'a str> {
    let uid = up[0].strip_prefix("pod")?;
    let under_kubepods = match up[1] {
        "kubepods" => true,
        "besteffort" | "burstable" => up[2] == "kubepods",
        _ => false,
    };
    (under_kubepods && is_uid(uid)).then_some(uid)
}

/// `…kubepods[-besteffort|-burstable]-pod<uid_with_underscores>.slice` -> `<uid-with-dashes>`.
fn systemd_pod_uid(slice: &str) -> Option<String> {
    let (head, uid) = slice.strip_suffix(".slice")?.rsplit_once("-pod")?;
    let qos_ok = ["kubepods", "kubepods-besteffort", "kubepods-burstable"]
        .iter()
        .any(|q| head.ends_with(q));
    (qos_ok && is_uid(uid)).then(|| uid.replace('_', "-"))
}

/// Pod UIDs are UUIDs, or 32 hex for static pods; be lenient about anything else kubelet accepts.
fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::Runtime::*;
    use super::*;

    const A: &str = "95a71a609669cd306e69ae28fcd38c53a1f3bd5f33bbe56fce65c9f59b632cdd";
    const B: &str = "76b95fb3a8a3fa6f7c7c46fe5fbd78d83195ad87d0bd0d9820520eb504373cd7";
    const U: &str = "a7ada38b-8465-4c0c-820b-d673ec03ed9f";
    /// A static pod's UID (hash of its manifest).
    const S: &str = "c5099dd024a5f3b6d86f16b700147c46";

    /// `{A}`, `{B}`: container ids; `{U}`: pod UID; `{U_}`: the same with underscores (systemd
    /// driver); `{S}`: a static pod's UID.
    fn expand(s: &str) -> String {
        s.replace("{A}", A)
            .replace("{B}", B)
            .replace("{U_}", &U.replace('-', "_"))
            .replace("{U}", U)
            .replace("{S}", S)
    }

    type Expect = Option<(Runtime, &'static str, Option<&'static str>, bool)>;

    #[test]
    fn resolves_real_world_paths() {
        let rows: &[(&str, Expect)] = &[
            // Docker, cgroupfs driver (v1 per-controller, v2 unified: same shape).
            ("/docker/{A}", Some((Docker, A, None, true))),
            ("docker/{A}/", Some((Docker, A, None, true))),
            (
                "/sys/fs/cgroup/memory/docker/{A}",
                Some((Docker, A, None, true)),
            ),
            ("/docker/{A}/init.scope", Some((Docker, A, None, false))),
            // Docker, systemd driver; rootless docker.
            (
                "/system.slice/docker-{A}.scope",
                Some((Docker, A, None, true)),
            ),
            (
                "/system.slice/docker-{A}.scope/",
                Some((Docker, A, None, true)),
            ),
            (
                "/system.slice/docker-{A}.scope/init.scope",
                Some((Docker, A, None, false)),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{A}.scope",
                Some((Docker, A, None, true)),
            ),
            // Docker-in-docker: outermost wins.
            ("/docker/{A}/docker/{B}", Some((Docker, A, None, false))),
            (
                "/system.slice/docker-{A}.scope/docker/{B}",
                Some((Docker, A, None, false)),
            ),
            // containerd, systemd-style names used literally.
            (
                "/system.slice:cri-containerd:{A}",
                Some((Containerd, A, None, true)),
            ),
            (
                "/kubepods-burstable-pod{U_}.slice:cri-containerd:{A}",
                Some((Containerd, A, Some(U), true)),
            ),
            // Kubernetes, systemd driver, each QoS class and runtime.
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/cri-containerd-{A}.scope",
                Some((Containerd, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{A}.scope",
                Some((Containerd, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{A}.scope",
                Some((Containerd, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/crio-{A}.scope",
                Some((CriO, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/crio-conmon-{A}.scope",
                Some((CriO, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/crio-{A}.scope/container",
                Some((CriO, A, Some(U), false)),
            ),
            (
                "/kubepods.slice/kubepods-pod{U_}.slice/crio-{A}.scope",
                Some((CriO, A, Some(U), true)),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/docker-{A}.scope",
                Some((Docker, A, Some(U), true)),
            ),
            // kind node (kubelet cgroup root under /kubelet.slice), seen from the host: the node
            // container is the outer one.
            (
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{U_}.slice/cri-containerd-{A}.scope",
                Some((Containerd, A, Some(U), true)),
            ),
            (
                "/system.slice/docker-{B}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{U_}.slice/cri-containerd-{A}.scope",
                Some((Docker, B, None, false)),
            ),
            // Kubernetes, cgroupfs driver, each QoS class: runtime unknown.
            (
                "/kubepods/besteffort/pod{U}/{A}",
                Some((Kubernetes, A, Some(U), true)),
            ),
            (
                "/kubepods/burstable/pod{U}/{A}",
                Some((Kubernetes, A, Some(U), true)),
            ),
            ("/kubepods/pod{U}/{A}", Some((Kubernetes, A, Some(U), true))),
            (
                "/kubepods/burstable/pod{S}/{A}/",
                Some((Kubernetes, A, Some(S), true)),
            ),
            (
                "/kubepods/burstable/pod{U}/{A}/docker/{B}",
                Some((Kubernetes, A, Some(U), false)),
            ),
            (
                "/kubepods/burstable/pod{U}/crio-{A}",
                Some((CriO, A, Some(U), true)),
            ),
            // Podman: rootful systemd, conmon, rootless (crun's `container` leaf), cgroupfs.
            (
                "/machine.slice/libpod-{A}.scope",
                Some((Podman, A, None, true)),
            ),
            (
                "/machine.slice/libpod-{A}.scope/container",
                Some((Podman, A, None, false)),
            ),
            (
                "/machine.slice/libpod-conmon-{A}.scope",
                Some((Podman, A, None, true)),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope",
                Some((Podman, A, None, true)),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope/container",
                Some((Podman, A, None, false)),
            ),
            ("/libpod_parent/libpod-{A}", Some((Podman, A, None, true))),
            // GitHub Actions runner.
            ("/actions_job/{A}", Some((GithubActions, A, None, true))),
            (
                "/actions_job/{A}/docker/{B}",
                Some((GithubActions, A, None, false)),
            ),
            // LXC / LXD (4.0+ payload cgroups, legacy /lxc/<name>).
            ("/lxc.payload.web01", Some((Lxc, "web01", None, true))),
            ("lxc.payload.web01/", Some((Lxc, "web01", None, true))),
            (
                "/lxc.payload.web01/system.slice/sshd.service",
                Some((Lxc, "web01", None, false)),
            ),
            (
                "/lxc.payload.default_db-1/init.scope",
                Some((Lxc, "default_db-1", None, false)),
            ),
            ("/lxc/web01", Some((Lxc, "web01", None, true))),
            ("/lxc/web01/docker/{A}", Some((Lxc, "web01", None, false))),
            // Not containers.
            ("/", None),
            ("", None),
            ("/init.scope", None),
            ("/system.slice/sshd.service", None),
            ("/system.slice/docker.service", None),
            ("/system.slice/containerd.service", None),
            ("/system.slice/docker-{A}.scopex", None),
            ("/user.slice/user-1000.slice/session-3.scope", None),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
                None,
            ),
            ("/machine.slice/machine-qemu\\x2d1\\x2dvm.scope", None),
            ("/docker", None),
            ("/docker/", None),
            ("/docker/notanid", None),
            ("/docker/{A}0", None),
            (
                "/docker/95a71a609669cd306e69ae28fcd38c53a1f3bd5f33bbe56fce65c9f59b632cd",
                None,
            ),
            (
                "/docker/95A71A609669CD306E69AE28FCD38C53A1F3BD5F33BBE56FCE65C9F59B632CDD",
                None,
            ),
            (
                "/system.slice/docker-95a71a609669cd306e69ae28fcd38c53a1f3bd5f33bbe56fce65c9f59b632cd.scope",
                None,
            ),
            ("/default/{A}", None),
            ("/pod{U}/{A}", None),
            ("/kubepods/burstable/pod{U}", None),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice",
                None,
            ),
            ("/kubepods.slice/kubepods-besteffort.slice", None),
            ("/lxc", None),
            ("/lxc.payload.", None),
            ("/lxc.monitor.web01", None),
        ];
        assert!(rows.len() >= 30);
        for &(path, expect) in rows {
            let path = expand(path);
            let got = resolve(&path);
            let got_cmp = got.as_ref().map(|c| {
                (
                    c.runtime,
                    c.id.as_str(),
                    c.pod_uid.as_deref(),
                    c.is_root(&path),
                )
            });
            assert_eq!(got_cmp, expect, "path {path:?}");
            if let Some(c) = got {
                // The root prefix is itself the container's root cgroup, and resolves the same.
                let root = &path[..c.root_len];
                assert!(c.is_root(root), "path {path:?}, root {root:?}");
                assert_eq!(
                    resolve(root).as_ref(),
                    Some(&c),
                    "path {path:?}, root {root:?}"
                );
            }
        }
    }

    #[test]
    fn is_root() {
        let root = format!("/system.slice/docker-{A}.scope");
        let c = resolve(&root).unwrap();
        assert_eq!(c.root_len, root.len());
        assert!(c.is_root(&root));
        assert!(c.is_root(&format!("{root}/")));
        assert!(c.is_root(&format!("{root}//")));
        assert!(!c.is_root(&format!("{root}/init.scope")));
        assert!(!c.is_root("/system.slice"));
        assert!(!c.is_root(""));
        // Same length, different container.
        assert!(!c.is_root(&format!("/system.slice/docker-{B}.scope")));

        let nested = format!("/docker/{A}/docker/{B}");
        let c = resolve(&nested).unwrap();
        assert_eq!(c.id.as_str(), A);
        assert!(!c.is_root(&nested));
        assert!(c.is_root(&nested[..c.root_len]));
        assert_eq!(&nested[..c.root_len], format!("/docker/{A}"));
    }

    #[test]
    fn short_and_display() {
        let c = resolve(&format!("/docker/{A}")).unwrap();
        assert_eq!(c.id.short(), "95a71a609669");
        assert_eq!(c.id.to_string(), A);
        assert_eq!(c.runtime.to_string(), "docker");
        // Names shorter than 12 come back whole; longer ones are cut on a char boundary.
        assert_eq!(resolve("/lxc.payload.web01").unwrap().id.short(), "web01");
        assert_eq!(
            resolve("/lxc.payload.ünïcödé-naméd").unwrap().id.short(),
            "ünïcödé-namé"
        );
        let names: Vec<_> = [
            Docker,
            Containerd,
            CriO,
            Podman,
            Kubernetes,
            GithubActions,
            Lxc,
        ]
        .iter()
        .map(Runtime::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "docker",
                "containerd",
                "cri-o",
                "podman",
                "kubernetes",
                "actions",
                "lxc"
            ]
        );
    }
}
