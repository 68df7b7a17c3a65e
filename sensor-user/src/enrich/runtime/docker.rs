//! The Docker Engine API as the source of container metadata: `GET /containers/<id>/json`
//! (inspect) for one container, and the `/events` stream, whose `create` events let the sensor
//! ask about a container before its first process runs. Podman's Docker-compatible API
//! (`podman system service`) answers the same requests the same way.

use std::path::Path;

use serde_json::Value;

use super::{
    ContainerId, ContainerMeta,
    http::{self, HttpError, Lines},
};

/// Where dockerd listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Where rootful `podman system service` (and its systemd socket unit) listens by default.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("HTTP {status} for {path}: {message}")]
    Status {
        status: u16,
        path: String,
        message: String,
    },
    #[error("answer to {path} is not the expected JSON: {why}")]
    Json { path: String, why: String },
}

async fn get_json(socket: &Path, path: &str) -> Result<Option<Value>, DockerError> {
    let r = http::get(socket, path).await?;
    if r.status == 404 {
        return Ok(None);
    }
    if r.status != 200 {
        return Err(DockerError::Status {
            status: r.status,
            path: path.into(),
            message: String::from_utf8_lossy(&r.body).trim().to_string(),
        });
    }
    serde_json::from_slice(&r.body)
        .map(Some)
        .map_err(|e| DockerError::Json {
            path: path.into(),
            why: e.to_string(),
        })
}

/// The daemon's version and API version ("Docker 20.10.24, API 1.41"; podman's compatible API
/// names itself among its components: "Podman 4.3.1, API 1.41").
pub async fn version(socket: &Path) -> Result<String, DockerError> {
    let v = get_json(socket, "/version")
        .await?
        .ok_or_else(|| DockerError::Json {
            path: "/version".into(),
            why: "404".into(),
        })?;
    let podman = v["Components"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["Name"].as_str().is_some_and(|n| n.contains("Podman")));
    Ok(format!(
        "{} {}, API {}",
        if podman { "Podman" } else { "Docker" },
        v["Version"].as_str().unwrap_or("?"),
        v["ApiVersion"].as_str().unwrap_or("?")
    ))
}

/// Inspects container `id`; `None` when the daemon does not know it (already removed).
pub async fn inspect(socket: &Path, id: &str) -> Result<Option<ContainerMeta>, DockerError> {
    let path = format!("/containers/{id}/json");
    Ok(get_json(socket, &path).await?.map(|v| parse_inspect(&v)))
}

/// The fields the sensor keeps from an inspect answer.
pub fn parse_inspect(v: &Value) -> ContainerMeta {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let labels = v["Config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    ContainerMeta {
        name: text(&v["Name"]).trim_start_matches('/').to_string(),
        image: text(&v["Config"]["Image"]),
        image_id: text(&v["Image"]),
        labels,
        privileged: Some(v["HostConfig"]["Privileged"].as_bool().unwrap_or(false)),
        network_mode: text(&v["HostConfig"]["NetworkMode"]),
        pid_mode: text(&v["HostConfig"]["PidMode"]),
        ..Default::default()
    }
}

/// The container lifecycle events worth a (re-)inspect: a new container, or a new name.
const WATCHED: &str = r#"{"type":["container"],"event":["create","rename"]}"#;

/// Opens the `/events` stream of container creations and renames.
pub async fn events(socket: &Path) -> Result<Lines, DockerError> {
    let path = format!("/events?filters={}", http::encode_query(WATCHED));
    let (status, lines) = http::stream_lines(socket, &path).await?;
    if status != 200 {
        return Err(DockerError::Status {
            status,
            path,
            message: "the event stream was refused".into(),
        });
    }
    Ok(lines)
}

/// The container an `/events` line is about, and what it says: name, image and labels (the
/// event's attributes are the labels plus `name` and `image`; a rename adds `oldName`).
pub fn event_meta(line: &str) -> Option<(ContainerId, ContainerMeta)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let id = ContainerId::from_oci(v["Actor"]["ID"].as_str().or_else(|| v["id"].as_str())?)?;
    let attrs = v["Actor"]["Attributes"].as_object();
    let attr = |k: &str| {
        attrs
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let labels = attrs
        .into_iter()
        .flatten()
        .filter(|(k, _)| !["name", "image", "oldName"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let meta = ContainerMeta {
        name: attr("name"),
        image: attr("image"),
        labels,
        ..Default::default()
    };
    Some((id, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"{
      "Id": "3f4c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a",
      "Name": "/web-1",
      "Image": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
      "Config": {"Image": "registry.local:5000/team/web:1.2", "Labels": {"team": "infra", "tier": "front"}},
      "HostConfig": {"Privileged": true, "NetworkMode": "host", "PidMode": "host"}
    }"#;

    #[test]
    fn inspect_fields() {
        let m = parse_inspect(&serde_json::from_str(INSPECT).unwrap());
        assert_eq!(m.name, "web-1");
        assert_eq!(m.image, "registry.local:5000/team/web:1.2");
        assert!(m.image_id.starts_with("sha256:0123"));
        assert_eq!(m.labels["team"], "infra");
        assert_eq!(m.privileged, Some(true));
        assert_eq!(
            (m.network_mode.as_str(), m.pid_mode.as_str()),
            ("host", "host")
        );
        // Null labels and missing sections are empty, not errors.
        let m = parse_inspect(&serde_json::json!({"Name": "/x", "Config": {"Labels": null}}));
        assert!(m.labels.is_empty() && m.privileged == Some(false) && m.image.is_empty());
    }

    #[test]
    fn event_lines() {
        let id = "ab".repeat(32);
        let line = format!(
            r#"{{"status":"create","id":"{id}","Type":"container","Action":"create","Actor":{{"ID":"{id}","Attributes":{{"name":"x","image":"nginx:1","team":"infra"}}}}}}"#
        );
        let (got, meta) = event_meta(&line).unwrap();
        assert_eq!(got.as_str(), id);
        assert_eq!((meta.name.as_str(), meta.image.as_str()), ("x", "nginx:1"));
        assert_eq!(meta.labels.len(), 1);
        assert_eq!(meta.labels["team"], "infra");
        assert!(!meta.inspected());
        assert!(event_meta(r#"{"Actor":{"ID":"short"}}"#).is_none());
        assert!(event_meta("not json").is_none());
    }

    #[tokio::test]
    async fn inspect_over_a_socket() {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{INSPECT}",
            INSPECT.len()
        );
        let (path, server) = super::super::http::tests::serve_once(answer.into_bytes()).await;
        let m = inspect(&path, "abc").await.unwrap().unwrap();
        assert_eq!(m.name, "web-1");
        assert!(
            server
                .await
                .unwrap()
                .starts_with("GET /containers/abc/json ")
        );
        let (path, _) = super::super::http::tests::serve_once(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        )
        .await;
        assert!(inspect(&path, "gone").await.unwrap().is_none());
        let (path, _) = super::super::http::tests::serve_once(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom".to_vec(),
        )
        .await;
        let e = inspect(&path, "x").await.unwrap_err();
        assert!(
            e.to_string().contains("HTTP 500") && e.to_string().contains("boom"),
            "{e}"
        );
    }
}
