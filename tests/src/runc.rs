//! The `docker` commands the tests use, carried out with runc: how the same tests run in the
//! qemu guests of `cargo xtask vm-test`, where there is no dockerd.
//!
//! Containers are real OCI containers run by runc (Debian's), each in its own copy of the test
//! image's root filesystem, in cgroups shaped like Docker's (`/docker/<id>`) or Kubernetes'
//! ([`CgroupShape`]), with a veth on a `docker0` bridge for the default network, as Docker
//! would set them up. Only the `docker` arguments the tests use are understood; any other one
//! makes the test report itself skipped ([`skip`]) rather than run something different
//! from what it asked for.
//!
//! Environment: `SENSOR_TEST_RUNTIME=runc`, `SENSOR_TEST_ROOTFS` (the unpacked test image),
//! optional `SENSOR_TEST_CGROUP_SHAPE` (`docker`, `kubepods` or `containerd`). The guest's
//! init creates the `docker0` bridge at [`GATEWAY`].

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::skip;

/// The address of the guest's `docker0` bridge (Docker's default).
pub const GATEWAY: &str = "172.17.0.1";

/// Where each container's bundle and state live.
const STATE: &str = "/run/sensor-vm/containers";

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability of the guest kernels (6.1 and later), for `--cap-add ALL`.
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// How container cgroups are laid out, as different runtimes and orchestrators do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupShape {
    /// `/docker/<id>` (Docker, cgroupfs driver).
    Docker,
    /// `/kubepods/besteffort/pod<uid>/<id>` (kubelet, cgroupfs driver).
    Kubepods,
    /// `/kubepods.slice/…/cri-containerd-<id>.scope` (kubelet with containerd, systemd driver).
    Containerd,
}

impl CgroupShape {
    pub fn from_env() -> CgroupShape {
        match std::env::var("SENSOR_TEST_CGROUP_SHAPE").as_deref() {
            Err(_) | Ok("docker") => CgroupShape::Docker,
            Ok("kubepods") => CgroupShape::Kubepods,
            Ok("containerd") => CgroupShape::Containerd,
            Ok(other) => panic!(
                "SENSOR_TEST_CGROUP_SHAPE={other:?}: expected docker, kubepods or containerd"
            ),
        }
    }

    /// The cgroup path (relative to the cgroup2 root) of container `id` in pod `pod`.
    pub fn path(self, id: &str, pod: &str) -> String {
        match self {
            CgroupShape::Docker => format!("/docker/{id}"),
            CgroupShape::Kubepods => format!("/kubepods/besteffort/pod{pod}/{id}"),
            CgroupShape::Containerd => {
                let pod_ = pod.replace('-', "_");
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/\
                     kubepods-besteffort-pod{pod_}.slice/cri-containerd-{id}.scope"
                )
            }
        }
    }

    /// The runtime the sensor should name for this shape.
    pub fn runtime(self) -> &'static str {
        match self {
            CgroupShape::Docker => "docker",
            CgroupShape::Kubepods => "kubernetes",
            CgroupShape::Containerd => "containerd",
        }
    }
}

/// `docker ARGS` done with runc; returns what docker would print on stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    match args {
        ["run", rest @ ..] => run(rest),
        ["wait", ids @ ..] => ids.iter().map(|id| wait(id)).collect::<Vec<_>>().join("\n"),
        ["rm", "-f", ids @ ..] => {
            ids.iter().for_each(|id| remove(id));
            ids.join("\n")
        }
        ["exec", id, cmd @ ..] => {
            let mut c = Command::new("runc");
            c.arg("exec").arg(id).args(cmd);
            checked(&mut c)
        }
        ["inspect", "-f", "{{.NetworkSettings.IPAddress}}", id] => {
            fs::read_to_string(state_dir(id).join("ip")).unwrap_or_default()
        }
        _ => skip(&format!(
            "`docker {}` has no runc equivalent in the VM harness",
            args.join(" ")
        )),
    }
}

/// Removes containers, ignoring ones already gone.
pub fn remove(id: &str) {
    let _ = Command::new("runc")
        .args(["kill", id, "KILL"])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && status(id).as_deref() == Some("running") {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("runc")
        .args(["delete", "-f", id])
        .stderr(Stdio::null())
        .status();
    let dir = state_dir(id);
    if let Ok(netns) = fs::read_to_string(dir.join("netns")) {
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    }
    if let Ok(ip) = fs::read_to_string(dir.join("ip")) {
        let _ = fs::remove_file(Path::new(STATE).join("ips").join(ip));
    }
    let _ = fs::remove_dir_all(dir);
}

/// What `docker run` was asked for.
#[derive(Default)]
struct RunSpec {
    detach: bool,
    remove: bool,
    cidfile: Option<String>,
    host_net: bool,
    host_pid: bool,
    caps: Vec<String>,
    user: Option<(u32, u32)>,
    /// `-v SOURCE:DESTINATION[:ro]` bind mounts: (source, destination, read-only).
    binds: Vec<(String, String, bool)>,
    /// `--sysctl KEY=VALUE`: set in the container's namespaces by runc, as Docker does.
    sysctls: Vec<(String, String)>,
    cmd: Vec<String>,
}

fn parse_run(args: &[&str]) -> RunSpec {
    let mut spec = RunSpec {
        caps: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = || *it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg {
            "-d" | "--detach" => spec.detach = true,
            "--rm" => spec.remove = true,
            "--cidfile" => spec.cidfile = Some(value().to_string()),
            "--network" | "--net" => match value() {
                "host" => spec.host_net = true,
                "bridge" => {}
                other => skip(&format!("--network {other} is not built in the VM harness")),
            },
            "--pid" => match value() {
                "host" => spec.host_pid = true,
                other => skip(&format!("--pid {other} is not built in the VM harness")),
            },
            "--cap-add" => match value() {
                "ALL" => spec.caps = ALL_CAPS.iter().map(|c| c.to_string()).collect(),
                cap => spec.caps.push(cap.trim_start_matches("CAP_").to_string()),
            },
            "--cap-drop" => {
                let cap = value().trim_start_matches("CAP_");
                spec.caps.retain(|c| c != cap);
            }
            // runc runs without seccomp or AppArmor profiles: unconfined is what it does anyway.
            "--security-opt" => match value() {
                "seccomp=unconfined" | "apparmor=unconfined" => {}
                other => skip(&format!(
                    "--security-opt {other} is not built in the VM harness"
                )),
            },
            "-v" | "--volume" => {
                let v = value();
                let parts: Vec<&str> = v.split(':').collect();
                match parts[..] {
                    [src, dst] => spec.binds.push((src.into(), dst.into(), false)),
                    [src, dst, "ro"] => spec.binds.push((src.into(), dst.into(), true)),
                    _ => skip(&format!(
                        "-v {v}: only SOURCE:DESTINATION[:ro] bind mounts are built in the VM harness"
                    )),
                }
            }
            "--sysctl" => {
                let v = value();
                let (key, val) = v
                    .split_once('=')
                    .unwrap_or_else(|| panic!("--sysctl {v}: KEY=VALUE"));
                spec.sysctls.push((key.into(), val.into()));
            }
            "--user" => {
                let v = value();
                let (u, g) = v.split_once(':').unwrap_or((v, v));
                let num = |s: &str| {
                    s.parse()
                        .unwrap_or_else(|_| skip(&format!("--user {v}: only numeric ids")))
                };
                spec.user = Some((num(u), num(g)));
            }
            flag if flag.starts_with('-') => {
                skip(&format!("docker run {flag} is not built in the VM harness"))
            }
            image => {
                assert_eq!(image, crate::image(), "the VM has only the test image");
                spec.cmd = it.by_ref().map(|s| s.to_string()).collect();
                break;
            }
        }
    }
    assert!(!spec.cmd.is_empty(), "docker run without a command");
    spec
}

fn run(args: &[&str]) -> String {
    let spec = parse_run(args);
    let id = random_hex(32);
    let pod = uuid();
    let dir = state_dir(&id);
    fs::create_dir_all(&dir).expect("container state dir");
    let rootfs = std::env::var("SENSOR_TEST_ROOTFS").expect("SENSOR_TEST_ROOTFS is not set");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&rootfs)
        .arg(dir.join("rootfs"))
        .status()
        .expect("cp");
    assert!(copied.success(), "copying the test rootfs for {id}");
    let netns = (!spec.host_net).then(|| setup_network(&id, &dir));
    let cgroup = CgroupShape::from_env().path(&id, &pod);
    let cgroups = Path::new(STATE).join("cgroups");
    fs::create_dir_all(&cgroups).expect("cgroups dir");
    fs::write(cgroups.join(&id), &cgroup).expect("cgroup file");
    let config = oci_config(&spec, &id, &cgroup, netns.as_deref());
    fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
    if let Some(path) = &spec.cidfile {
        fs::write(path, &id).expect("cidfile");
    }
    let mut runc = Command::new("runc");
    runc.args(["run", "--no-pivot", "--bundle"])
        .arg(&dir)
        .stdin(Stdio::null());
    if spec.detach {
        let log = fs::File::create(dir.join("output")).expect("container log");
        runc.arg("-d")
            .arg(&id)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let status = runc.status().expect("runc run -d");
        assert!(status.success(), "runc run -d {id} failed ({status})");
        return id;
    }
    runc.arg(&id);
    let out = runc.output().expect("runc run");
    if spec.remove {
        remove(&id);
    }
    assert!(
        out.status.success(),
        "container {id} ({}) failed ({}): {}",
        spec.cmd.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The OCI runtime spec for one container, close to what Docker would generate.
fn oci_config(spec: &RunSpec, id: &str, cgroup: &str, netns: Option<&str>) -> Value {
    let caps: Vec<String> = spec.caps.iter().map(|c| format!("CAP_{c}")).collect();
    let (uid, gid) = spec.user.unwrap_or((0, 0));
    let mut namespaces = vec![
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if !spec.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if let Some(ns) = netns {
        namespaces.push(json!({"type": "network", "path": format!("/run/netns/{ns}")}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for (source, destination, ro) in &spec.binds {
        let mode = if *ro { "ro" } else { "rw" };
        mounts.push(
            json!({"destination": destination, "type": "bind", "source": source,
                           "options": ["rbind", mode]}),
        );
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": spec.cmd,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": &id[..12],
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup,
            "namespaces": namespaces,
            "sysctl": spec
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect::<serde_json::Map<String, Value>>(),
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// A network namespace with `eth0` on the `docker0` bridge (through a host-side `veth…`), an
/// address of its own and a default route to [`GATEWAY`]; returns the namespace's name.
fn setup_network(id: &str, dir: &Path) -> String {
    let ns = format!("c{}", &id[..12]);
    let host_end = format!("veth{}", &id[..7]);
    let peer = format!("vp{}", &id[..7]);
    let ip = claim_ip();
    let ip_cmd = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(args);
        checked(&mut c);
    };
    ip_cmd(&["netns", "add", &ns]);
    fs::write(dir.join("netns"), &ns).unwrap();
    fs::write(dir.join("ip"), &ip).unwrap();
    ip_cmd(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", &peer,
    ]);
    ip_cmd(&["link", "set", &peer, "netns", &ns]);
    ip_cmd(&["link", "set", &host_end, "master", "docker0", "up"]);
    let inside = |args: &[&str]| {
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        ip_cmd(&all);
    };
    inside(&["link", "set", &peer, "name", "eth0"]);
    inside(&["addr", "add", &format!("{ip}/16"), "dev", "eth0"]);
    inside(&["link", "set", "eth0", "up"]);
    inside(&["link", "set", "lo", "up"]);
    inside(&["route", "add", "default", "via", GATEWAY]);
    ns
}

/// A free address in 172.17.0.0/16, claimed by creating a file named after it. Addresses are
/// handed out in turn, after the last one claimed, not the lowest free one: a removed
/// container's namespace is destroyed in the background, and until it is, its veth still
/// answers for the address, which a new container must not hold yet.
fn claim_ip() -> String {
    // Slot s is 172.17.(s / 250).(s % 250 + 2): from s = FIRST, 172.17.0.4, to 172.17.254.251.
    const FIRST: u32 = 2;
    const SLOTS: u32 = 250 * 255 - FIRST;
    let dir = Path::new(STATE).join("ips");
    fs::create_dir_all(&dir).unwrap();
    let next_file = dir.join("next");
    let start = fs::read_to_string(&next_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    for n in (0..SLOTS).map(|i| (start + i) % SLOTS) {
        let slot = n + FIRST;
        let ip = format!("172.17.{}.{}", slot / 250, slot % 250 + 2);
        if fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(&ip))
            .is_ok()
        {
            // A hint only: two claims at once may read the same one, and the files decide.
            let _ = fs::write(&next_file, (n + 1).to_string());
            return ip;
        }
    }
    panic!("no free address left in 172.17.0.0/16");
}

/// `docker wait`: blocks until the container stopped. runc does not keep a detached
/// container's exit code, so this prints 0.
fn wait(id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    while matches!(status(id).as_deref(), Some("running" | "created")) {
        assert!(Instant::now() < deadline, "container {id} still runs");
        thread::sleep(Duration::from_millis(100));
    }
    "0".to_string()
}

/// runc's status of a container (`created`, `running`, `stopped`), None if unknown.
fn status(id: &str) -> Option<String> {
    let out = Command::new("runc")
        .args(["state", id])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let state: Value = serde_json::from_slice(&out.stdout).ok()?;
    state["status"].as_str().map(str::to_string)
}

/// The cgroup path container `id` was given (kept after the container is removed).
pub fn cgroup_path(id: &str) -> String {
    fs::read_to_string(Path::new(STATE).join("cgroups").join(id))
        .unwrap_or_else(|e| panic!("no state for container {id}: {e}"))
}

fn state_dir(id: &str) -> PathBuf {
    Path::new(STATE).join(id)
}

fn checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4-shaped UUID, as the API server gives pods.
pub(crate) fn uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_shapes_match_the_runtimes_layouts() {
        let id = "a".repeat(64);
        let pod = "0123abcd-0000-1111-2222-333344445555";
        assert_eq!(CgroupShape::Docker.path(&id, pod), format!("/docker/{id}"));
        assert_eq!(
            CgroupShape::Kubepods.path(&id, pod),
            format!("/kubepods/besteffort/pod{pod}/{id}")
        );
        assert!(CgroupShape::Containerd.path(&id, pod).ends_with(&format!(
            "pod0123abcd_0000_1111_2222_333344445555.slice/cri-containerd-{id}.scope"
        )));
    }

    #[test]
    fn uuid_shape() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
