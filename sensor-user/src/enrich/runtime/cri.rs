//! The Kubernetes Container Runtime Interface (CRI, `runtime.v1`) as the source of pod and
//! container metadata: what kubelet told containerd or CRI-O about a pod (name, namespace, uid,
//! labels, host network) and about each of its containers (name in the pod, image, labels,
//! privileged), asked over the runtime's gRPC socket with the bindings of the `k8s-cri` crate.
//!
//! A container id is answered with `ListContainers` (filtered by the id: the container and its
//! pod sandbox id), `ContainerStatus` (verbose: the config kubelet sent, for `privileged`) and
//! `PodSandboxStatus`; the id of a pod's sandbox (its `pause` container, which has a cgroup of
//! its own) is answered with `PodSandboxStatus` alone. Runtimes that stream container events
//! (`GetContainerEvents`, containerd 1.7 and later) have each container asked about as it is
//! created; older ones (containerd 1.6) are asked when the container's cgroup appears, before
//! its first process runs.
//!
//! Like the Docker client, every call has a deadline and an answer size cap: a runtime that
//! hangs or floods shows as failed or timed-out requests, never as a stuck sensor.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_cri::v1::{
    ContainerFilter, ContainerStatusRequest, GetEventsRequest, ListContainersRequest,
    NamespaceMode, PodSandboxStatus, PodSandboxStatusRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::{Code, transport::Channel};

use super::{ContainerId, ContainerMeta, PodMeta};

/// Where containerd serves CRI by default (CRI-O: `/run/crio/crio.sock`).
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// Deadline of one call.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer accepted (one container's verbose status holds its whole OCI spec).
const MAX_ANSWER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{call}: {status}", status = describe(.status))]
    Status {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("{call}: no answer within {TIMEOUT:?}")]
    Timeout { call: &'static str },
    #[error("{call}: the answer is not what CRI specifies: {why}")]
    Malformed { call: &'static str, why: String },
}

impl CriError {
    /// The runtime is away or hangs (an outage), rather than one odd answer.
    pub fn is_outage(&self) -> bool {
        match self {
            CriError::Timeout { .. } => true,
            CriError::Status { status, .. } => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            }
            CriError::Malformed { .. } => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        match self {
            CriError::Timeout { .. } => true,
            CriError::Status { status, .. } => status.code() == Code::DeadlineExceeded,
            CriError::Malformed { .. } => false,
        }
    }
}

/// A status as people read it: the code and message, and the transport's own cause (the socket
/// that is missing or refused) when there is one.
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// A client of one runtime's CRI socket. Cheap to clone (the channel is shared); it connects
/// when first used and reconnects after the runtime restarts.
#[derive(Clone)]
pub struct Cri {
    client: RuntimeServiceClient<Channel>,
    channel: Channel,
}

impl Cri {
    /// A client of the CRI socket `socket`; nothing is sent until the first call.
    pub fn new(socket: &Path) -> Cri {
        let path = socket.to_path_buf();
        // The URI is required by the API but unused: the connector decides where to connect.
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Cri {
            client: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_ANSWER),
            channel,
        }
    }

    /// `call` with the deadline applied around the whole exchange, connection included.
    async fn call<T>(
        call: &'static str,
        f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(TIMEOUT, f).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(CriError::Status { call, status }),
            Err(_) => Err(CriError::Timeout { call }),
        }
    }

    /// The runtime and the CRI version it speaks ("containerd 1.6.20, CRI v1").
    pub async fn version(&self) -> Result<(String, String), CriError> {
        let v = Self::call(
            "Version",
            self.client.clone().version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .await?;
        let line = format!(
            "{} {}, CRI {}",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        );
        Ok((v.runtime_name, line))
    }

    /// What the runtime says about container (or pod sandbox) `id`; `None` when it knows
    /// neither (removed already, or another runtime's).
    pub async fn inspect(
        &self,
        id: &ContainerId,
        runtime: &str,
    ) -> Result<Option<ContainerMeta>, CriError> {
        let filter = ContainerFilter {
            id: id.as_str().into(),
            ..Default::default()
        };
        let listed = Self::call(
            "ListContainers",
            self.client.clone().list_containers(ListContainersRequest {
                filter: Some(filter),
            }),
        )
        .await?;
        let Some(c) = listed.containers.into_iter().find(|c| c.id == id.as_str()) else {
            // Not a container: perhaps a pod's sandbox.
            return Ok(self
                .sandbox(id.as_str())
                .await?
                .map(|pod| sandbox_meta(&pod, runtime)));
        };
        let mut client = self.client.clone();
        let status = Self::call(
            "ContainerStatus",
            client.container_status(ContainerStatusRequest {
                container_id: id.as_str().into(),
                verbose: true,
            }),
        );
        let status = match status.await {
            Ok(s) => Some(s),
            // Removed between the two calls: what the list said is still true.
            Err(CriError::Status { status, .. }) if status.code() == Code::NotFound => None,
            Err(e) => return Err(e),
        };
        let pod = self.sandbox(&c.pod_sandbox_id).await?;
        let mut meta = pod
            .as_ref()
            .map(|p| sandbox_meta(p, runtime))
            .unwrap_or_else(|| ContainerMeta {
                runtime: runtime.into(),
                ..Default::default()
            });
        meta.name = c.metadata.map(|m| m.name).unwrap_or_default();
        meta.image = c.image.map(|i| i.image).unwrap_or_default();
        meta.image_id = c.image_ref;
        meta.labels = c.labels.into_iter().collect();
        meta.privileged = Some(
            status
                .as_ref()
                .and_then(|s| s.info.get("info"))
                .is_some_and(|info| privileged(info)),
        );
        Ok(Some(meta))
    }

    /// `PodSandboxStatus` of `id`; `None` when the runtime has no such sandbox.
    async fn sandbox(&self, id: &str) -> Result<Option<PodSandboxStatus>, CriError> {
        if id.is_empty() {
            return Ok(None);
        }
        let answer = Self::call(
            "PodSandboxStatus",
            self.client
                .clone()
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.into(),
                    verbose: false,
                }),
        )
        .await;
        match answer {
            Ok(a) => a.status.map(Some).ok_or(CriError::Malformed {
                call: "PodSandboxStatus",
                why: "no status in the answer".into(),
            }),
            Err(CriError::Status { status, .. }) if status.code() == Code::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ids of containers as the runtime creates them, until the stream ends or fails.
    /// `Unimplemented` (containerd 1.6, CRI-O without evented PLEG): the caller falls back to
    /// [`Cri::containerd_created`], or to asking at each container's cgroup creation.
    pub async fn created(&self) -> Result<tonic::Streaming<ContainerEvent>, CriError> {
        Self::call(
            "GetContainerEvents",
            self.client
                .clone()
                .get_container_events(GetEventsRequest {}),
        )
        .await
    }

    /// containerd's own stream of container creations, on the same socket
    /// ([`super::containerd_events`]): for containerd before 1.7, which has no CRI event stream.
    pub async fn containerd_created(
        &self,
    ) -> Result<tonic::Streaming<super::containerd_events::Envelope>, CriError> {
        super::containerd_events::subscribe(self.channel.clone())
            .await
            .map_err(|status| CriError::Status {
                call: "containerd Events/Subscribe",
                status,
            })
    }
}

pub use k8s_cri::v1::ContainerEventResponse as ContainerEvent;

/// The container a creation event names (other events are not worth a request).
pub fn created_id(e: &ContainerEvent) -> Option<ContainerId> {
    (e.container_event_type == k8s_cri::v1::ContainerEventType::ContainerCreatedEvent as i32)
        .then(|| ContainerId::from_oci(&e.container_id))
        .flatten()
}

/// A pod's sandbox as metadata: the pod, and its namespaces as Docker's modes name them.
fn sandbox_meta(pod: &PodSandboxStatus, runtime: &str) -> ContainerMeta {
    let m = pod.metadata.clone().unwrap_or_default();
    let options = pod
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref());
    let node = |mode: Option<i32>| mode == Some(NamespaceMode::Node as i32);
    ContainerMeta {
        runtime: runtime.into(),
        pod: Some(PodMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            labels: pod.labels.clone().into_iter().collect::<BTreeMap<_, _>>(),
        }),
        network_mode: if node(options.map(|o| o.network)) {
            "host"
        } else {
            "pod"
        }
        .into(),
        pid_mode: if node(options.map(|o| o.pid)) {
            "host"
        } else {
            ""
        }
        .into(),
        privileged: Some(false),
        ..Default::default()
    }
}

/// Whether the verbose `info` of a container (JSON: the CRI config kubelet sent, under
/// `config`) asks for a privileged container.
fn privileged(info: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(info)
        .ok()
        .and_then(|v| v["config"]["linux"]["security_context"]["privileged"].as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxStatus, Namespace, NamespaceOption, PodSandboxMetadata};

    #[test]
    fn a_sandbox_names_its_pod_and_host_namespaces() {
        let pod = PodSandboxStatus {
            id: "ab".repeat(32),
            metadata: Some(PodSandboxMetadata {
                name: "web-0".into(),
                uid: "8e1f5c34-0c0b-4f52-9d50-2d8f5b0c4a11".into(),
                namespace: "prod".into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                }),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let m = sandbox_meta(&pod, "containerd");
        let p = m.pod.as_ref().unwrap();
        assert_eq!((p.name.as_str(), p.namespace.as_str()), ("web-0", "prod"));
        assert_eq!(p.labels["app"], "web");
        assert_eq!((m.network_mode.as_str(), m.pid_mode.as_str()), ("host", ""));
        assert_eq!(m.runtime, "containerd");
        // No namespace options at all: the pod's own network.
        let m = sandbox_meta(&PodSandboxStatus::default(), "containerd");
        assert_eq!(m.network_mode, "pod");
    }

    #[test]
    fn privileged_from_the_verbose_config() {
        let info =
            r#"{"sandboxID":"x","config":{"linux":{"security_context":{"privileged":true}}}}"#;
        assert!(privileged(info));
        assert!(!privileged(r#"{"config":{"linux":{}}}"#));
        assert!(!privileged("not json"));
    }
}
