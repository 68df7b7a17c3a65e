//! containerd's own event stream (`containerd.services.events.v1.Events/Subscribe`, served on
//! the socket its CRI is served on). containerd 1.6's CRI has no `GetContainerEvents`, but
//! containerd publishes `/containers/create` when CRI creates a container or a pod's sandbox,
//! before either starts: the id to ask CRI about before the container's first process runs.
//!
//! Only the three messages of containerd's API this needs are declared here (field numbers as
//! in containerd's `api/services/events/v1/events.proto` and `api/events/container.proto`);
//! nothing else of that API is used, so no bindings crate is pulled in for it.

use tonic::{codegen::http::uri::PathAndQuery, transport::Channel};

use super::ContainerId;

/// The namespace CRI keeps its containers in (Docker's, when it shares containerd, is `moby`).
const CRI_NAMESPACE: &str = "k8s.io";
const SUBSCRIBE: &str = "/containerd.services.events.v1.Events/Subscribe";
const CREATED: &str = "/containers/create";

#[derive(Clone, PartialEq, prost::Message)]
struct SubscribeRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<prost_types::Timestamp>,
    #[prost(string, tag = "2")]
    namespace: String,
    #[prost(string, tag = "3")]
    topic: String,
    #[prost(message, optional, tag = "4")]
    event: Option<prost_types::Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerCreate {
    #[prost(string, tag = "1")]
    id: String,
}

/// Subscribes to the creations of CRI's containers and sandboxes.
pub async fn subscribe(channel: Channel) -> Result<tonic::Streaming<Envelope>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = SubscribeRequest {
        filters: vec![format!(
            r#"topic=="{CREATED}",namespace=="{CRI_NAMESPACE}""#
        )],
    };
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, Envelope>::default();
    let answer = grpc
        .server_streaming(
            tonic::Request::new(request),
            PathAndQuery::from_static(SUBSCRIBE),
            codec,
        )
        .await?;
    Ok(answer.into_inner())
}

/// The container or sandbox a creation event names.
pub fn created_id(e: &Envelope) -> Option<ContainerId> {
    if e.topic != CREATED || e.namespace != CRI_NAMESPACE {
        return None;
    }
    let any = e.event.as_ref()?;
    let created: ContainerCreate = prost::Message::decode(any.value.as_slice()).ok()?;
    ContainerId::from_oci(&created.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_creation_in_cri_s_namespace_names_its_container() {
        let id = "ab".repeat(32);
        let envelope = |namespace: &str, topic: &str| Envelope {
            timestamp: None,
            namespace: namespace.into(),
            topic: topic.into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.ContainerCreate".into(),
                value: ContainerCreate { id: id.clone() }.encode_to_vec(),
            }),
        };
        assert_eq!(
            created_id(&envelope("k8s.io", "/containers/create"))
                .unwrap()
                .as_str(),
            id
        );
        assert!(created_id(&envelope("moby", "/containers/create")).is_none());
        assert!(created_id(&envelope("k8s.io", "/tasks/start")).is_none());
    }
}
