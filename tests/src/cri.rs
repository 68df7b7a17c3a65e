//! A private containerd with its CRI plugin, driven the way kubelet drives it: the tests' stand-in
//! for a Kubernetes node (there is no kubelet here).
//!
//! [`Containerd::start`] writes a config of its own (root, state and socket in a scratch
//! directory, so the instance Docker runs is not touched), a CNI network (Debian's bridge and
//! host-local plugins, a private subnet, no masquerading: pods reach only each other and the
//! bridge), starts `containerd`, and imports the test image and a sandbox image made from it
//! (`sleep` as the pause process) through `ctr`, from `docker save`: no registry.
//!
//! Pods are made as kubelet makes them: `RunPodSandbox` with a kubelet-shaped cgroup parent
//! (`/kubepods/besteffort/pod<uid>`, the cgroupfs driver) and kubelet's `io.kubernetes.*`
//! labels, then `CreateContainer` and `StartContainer`; [`Pod`]'s drop stops and removes the
//! sandbox, and the instance's drop removes whatever is left, stops containerd and its shims.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    self as cri, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

use crate::{image, marker, scratch_dir};

/// The pods' network: a bridge of its own and a subnet no other test uses.
const BRIDGE: &str = "sensorpod0";
const SUBNET: &str = "10.244.77.0/24";
/// The sandbox image, made from the test image with a long sleep as its command.
const PAUSE_IMAGE: &str = "sensor-test/pause:latest";

/// A running private containerd; see the module doc.
pub struct Containerd {
    dir: PathBuf,
    daemon: Child,
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A pod made by [`Containerd::run_pod`]; stopped and removed when dropped.
pub struct Pod<'a> {
    runtime: &'a Containerd,
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    config: PodSandboxConfig,
}

impl Containerd {
    /// Starts an instance and imports the images; panics saying what failed.
    pub fn start(tag: &str) -> Containerd {
        let dir = scratch_dir(tag);
        let socket = dir.join("containerd.sock");
        let cni = dir.join("cni");
        fs::create_dir_all(&cni).unwrap();
        fs::write(cni.join("10-pods.conflist"), cni_config(&dir)).unwrap();
        fs::write(dir.join("config.toml"), config(&dir, &socket, &cni)).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd (Debian's containerd: cargo xtask setup --for test)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(connect(&socket, &dir));
        let me = Containerd {
            dir,
            daemon,
            socket,
            rt,
            client,
        };
        me.import_images();
        me
    }

    /// The CRI socket, for the agent's `--cri-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `docker save` of the test and sandbox images, imported into containerd's `k8s.io`
    /// namespace (where CRI looks for images).
    fn import_images(&self) {
        let made = crate::docker(&["create", &image()]);
        crate::docker(&[
            "commit",
            "--change",
            r#"CMD ["/bin/sleep", "2147483647"]"#,
            &made,
            PAUSE_IMAGE,
        ]);
        crate::docker(&["rm", &made]);
        let tar = self.dir.join("images.tar");
        let tar_arg = tar.display().to_string();
        crate::docker(&["save", "-o", &tar_arg, &image(), PAUSE_IMAGE]);
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar)
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = fs::remove_file(&tar);
    }

    /// A pod in `namespace` with `labels`, made as kubelet makes one: its own network
    /// namespace on the CNI bridge, or the node's with `host_network`.
    pub fn run_pod(&self, namespace: &str, labels: &[(&str, &str)], host_network: bool) -> Pod<'_> {
        let name = marker("pod");
        let uid = crate::runc::uuid();
        let mut all_labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all_labels.extend(kubelet_labels(&name, namespace, &uid));
        let logs = self
            .dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        fs::create_dir_all(&logs).unwrap();
        let network = if host_network {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // A hostNetwork pod has the node's UTS namespace, so no hostname of its own.
            hostname: if host_network {
                String::new()
            } else {
                name.clone()
            },
            log_directory: logs.display().to_string(),
            labels: all_labels,
            linux: Some(LinuxPodSandboxConfig {
                // kubelet's cgroupfs driver: /kubepods/<qos>/pod<uid>.
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .call(|mut c| {
                let config = config.clone();
                async move {
                    c.run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                }
            })
            .pod_sandbox_id;
        Pod {
            runtime: self,
            id,
            name,
            namespace: namespace.into(),
            uid,
            config,
        }
    }

    /// Runs one CRI call on the instance's client; panics with the status and the log's tail.
    fn call<T, F>(&self, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> T
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.rt.block_on(f(self.client.clone())) {
            Ok(r) => r.into_inner(),
            Err(status) => panic!(
                "CRI call failed: {status:?}\ncontainerd log (tail):\n{}",
                tail(&self.dir.join("containerd.log"))
            ),
        }
    }

    /// Stops and removes every pod left (a test that panicked), ignoring errors.
    fn remove_all_pods(&self) {
        let listed = self.rt.block_on(
            self.client
                .clone()
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        );
        for pod in listed.map(|l| l.into_inner().items).unwrap_or_default() {
            let mut c = self.client.clone();
            let _ = self.rt.block_on(async {
                let _ = c
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await;
                c.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id,
                })
                .await
            });
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all_pods();
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims of this instance outlive it when a pod was not removed: they name its socket.
        let _ = Command::new("pkill")
            .args(["-9", "-f"])
            .arg(format!("containerd-shim.*{}", self.dir.display()))
            .status();
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        for parent in ["kubepods/besteffort", "kubepods"] {
            remove_cgroup(parent);
        }
        crate::remove_scratch_dir(&self.dir);
    }
}

impl Pod<'_> {
    /// Creates and starts container `name` running `cmd`, with kubelet's labels; its full id.
    pub fn run(&self, name: &str, cmd: &[&str]) -> String {
        let mut labels = kubelet_labels(&self.name, &self.namespace, &self.uid);
        labels.insert("io.kubernetes.container.name".into(), name.into());
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            labels,
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        let pod_id = self.id.clone();
        let sandbox = self.config.clone();
        let created = self.runtime.call(|mut c| async move {
            c.create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await
        });
        let id = created.container_id;
        let start = id.clone();
        self.runtime.call(|mut c| async move {
            c.start_container(StartContainerRequest {
                container_id: start,
            })
            .await
        });
        assert_eq!(id.len(), 64, "containerd's container id {id:?}");
        id
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let mut c = self.runtime.client.clone();
        let id = self.id.clone();
        let _ = self.runtime.rt.block_on(async move {
            let _ = c
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        });
        // kubelet removes the pod's cgroup once its containers are gone; so does the stand-in.
        remove_cgroup(&format!("kubepods/besteffort/pod{}", self.uid));
    }
}

/// Removes cgroup `path` (relative to each hierarchy's root) wherever it is empty.
fn remove_cgroup(path: &str) {
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = fs::remove_dir(hierarchy.path().join(path));
    }
}

/// The labels kubelet puts on a pod's sandbox and containers.
fn kubelet_labels(name: &str, namespace: &str, uid: &str) -> HashMap<String, String> {
    [
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.uid", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Connects to the new instance's CRI, waiting up to 30 s for it to answer `Version`.
async fn connect(socket: &Path, dir: &Path) -> RuntimeServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if socket.exists()
            && let Ok(channel) = sensor_proto::connect_unix(socket).await
        {
            let mut client = RuntimeServiceClient::new(channel);
            if client
                .version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .is_ok()
            {
                return client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "containerd's CRI did not answer within 30 s; log:\n{}",
            tail(&dir.join("containerd.log"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// containerd's config: everything under `dir`, CRI on, the sandbox image local, runc with
/// the cgroupfs driver (no systemd here).
fn config(dir: &Path, socket: &Path, cni: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{s}"
[ttrpc]
  address = "{s}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # kubelet's negative oom_score_adj for sandboxes needs CAP_SYS_RESOURCE, which this machine
  # withholds (as `docker run --privileged` finds): keep it at the agent's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        cni = cni.display()
    )
}

/// A bridge network with host-local addresses kept under `dir`, no masquerading.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "sensor-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "dataDir": dir.join("ipam").display().to_string(),
            },
        }],
    })
    .to_string()
}
