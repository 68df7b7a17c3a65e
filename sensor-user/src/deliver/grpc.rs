//! The `sensor.v1.Sensor` gRPC service (tonic) and its listeners.
//!
//! - Unix socket (default `/run/sensor/sensor.sock`): its directory is created, a stale socket
//!   left by a killed agent is replaced, a live one is not; the socket is mode 0600, so only root
//!   (the agent's user) can connect.
//! - TCP, only with mutual TLS (rustls): the server presents `--tls-cert`/`--tls-key` and requires
//!   a client certificate that chains to `--tls-client-ca`; a client without one fails the
//!   handshake before any RPC.
//!
//! Limits (constants below): streams per kind in all and per client, streams per connection,
//! request, response and header sizes. A refused stream says which limit it met.
//!
//! `WatchAlerts` joins the spool and the live bus without a seam: it subscribes first, replays
//! the spool after `since_seq`, then takes live alerts, dropping any sequence number it already
//! sent and re-reading from the spool any it has not seen (a gap means its queue overflowed).

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use prost::Message;
use sensor_proto::{
    self as pb, Alert, Event,
    sensor_server::{Sensor, SensorServer},
    watch_alerts_response, watch_events_response,
};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{mpsc, watch},
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::{
    Request, Response, Status,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::UdsConnectInfo},
};

use super::{
    Shared, TcpTlsConfig,
    bus::{Delivery, Peer, SubscriberInfo, Subscription},
    count_missed, filter,
};
use crate::clock::duration;

/// Spooled alerts read per step of a replay.
const REPLAY_CHUNK: usize = 256;
/// Responses buffered per stream between its task and tonic.
const STREAM_BUFFER: usize = 64;
/// Open streams per kind: each holds a bounded queue, so this bounds their memory.
const MAX_STREAMS: usize = 64;
/// Open streams per kind of one client (a process on the Unix socket, an address on TCP), so
/// that no client can take every stream from the others.
const MAX_STREAMS_PER_CLIENT: usize = 8;
/// HTTP/2 streams one connection may have open (unary calls included).
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// The largest request decoded: requests are filters and sequence numbers, far smaller.
const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The largest response encoded: an alert with its evidence is a few KiB.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// The largest header block a client may send.
const MAX_HEADER_BYTES: u32 = 16 << 10;

/// Refuses a new `what` stream for `peer` when the sensor, or that client, holds the most it
/// may: `open` lists the streams of that kind open now.
fn check_capacity(open: &[SubscriberInfo], peer: &Peer, what: &str) -> Result<(), Status> {
    if open.len() >= MAX_STREAMS {
        return Err(Status::resource_exhausted(format!(
            "{} {what} streams are open, the most this sensor serves: close one and retry",
            open.len()
        )));
    }
    let own = open.iter().filter(|s| s.client == peer.client).count();
    if own >= MAX_STREAMS_PER_CLIENT {
        return Err(Status::resource_exhausted(format!(
            "{} holds {own} {what} streams, the most one client may open: close one, or \
             share one stream between its readers",
            peer.client
        )));
    }
    Ok(())
}

pub(super) struct Service {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// Who asks: the address and port on TCP (the client: the address, whatever port it comes
/// from), the process and user on the Unix socket (the client: the process).
fn peer_of<T>(req: &Request<T>) -> Peer {
    if let Some(addr) = req.remote_addr() {
        return Peer {
            name: addr.to_string(),
            client: addr.ip().to_string(),
        };
    }
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred);
    let name = match cred {
        Some(cred) => match cred.pid() {
            Some(pid) => format!("unix pid {pid} uid {}", cred.uid()),
            None => format!("unix uid {}", cred.uid()),
        },
        None => "unix".to_string(),
    };
    Peer::from(name.as_str())
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Sensor for Service {
    type WatchAlertsStream = Stream<pb::WatchAlertsResponse>;
    type WatchEventsStream = Stream<pb::WatchEventsResponse>;

    async fn watch_alerts(
        &self,
        req: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let peer = peer_of(&req);
        let req = req.into_inner();
        let filter = filter::Alerts::new(req.filter)
            .map_err(|e| Status::invalid_argument(format!("filter: {e}")))?;
        check_capacity(&self.shared.alerts.subscribers(), &peer, "WatchAlerts")?;
        // Subscribe before reading the spool's end: an alert is published while the spool is
        // locked, so everything after `last` is in the subscription.
        let sub = self.shared.alerts.subscribe(peer, |_| true);
        let last = self.shared.spool.lock().unwrap().last_seq();
        // A since_seq past the end (a spool wiped since) resumes at the end.
        let start = req.since_seq.map_or(last, |s| s.min(last));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = AlertStream {
            shared: self.shared.clone(),
            filter,
            last: start,
            tx,
        };
        tokio::spawn(stream.run(sub, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let peer = peer_of(&req);
        let filter = filter::Events::new(req.into_inner().filter)
            .map_err(|e| Status::invalid_argument(format!("filter: {e}")))?;
        check_capacity(&self.shared.events.subscribers(), &peer, "WatchEvents")?;
        let sub = self
            .shared
            .events
            .subscribe(peer, move |e: &Arc<Event>| filter.matches(e));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(stream_events(
            self.shared.clone(),
            sub,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_health(
        &self,
        _req: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        let s = &self.shared;
        Ok(Response::new(pb::GetHealthResponse {
            health: s.health.lock().unwrap().clone(),
            delivery: Some(s.delivery_health()),
            rule_set_version: s.rules.lock().unwrap().version.clone(),
            uptime: Some(duration(s.started.elapsed())),
        }))
    }

    async fn list_rules(
        &self,
        _req: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let rules = self.shared.rules.lock().unwrap();
        let note = if rules.loaded {
            String::new()
        } else {
            "no rule set has been loaded yet (the agent loads its catalog at start-up): until \
             then no alerts are raised; WatchEvents works"
                .to_string()
        };
        Ok(Response::new(pb::ListRulesResponse {
            rules: rules.rules.clone(),
            rule_set_version: rules.version.clone(),
            note,
        }))
    }
}

/// One `WatchAlerts` stream: everything after `last`, in sequence order, filtered.
struct AlertStream {
    shared: Arc<Shared>,
    filter: filter::Alerts,
    /// The newest sequence number accounted for (sent, filtered out or reported missed).
    last: u64,
    tx: mpsc::Sender<Result<pb::WatchAlertsResponse, Status>>,
}

/// The subscriber went away (or the server is stopping): end the stream.
struct Gone;

impl AlertStream {
    async fn run(mut self, mut sub: Subscription<Arc<Alert>>, mut shutdown: watch::Receiver<bool>) {
        let _ = self.run_inner(&mut sub, &mut shutdown).await;
    }

    async fn run_inner(
        &mut self,
        sub: &mut Subscription<Arc<Alert>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Gone> {
        self.catch_up(None).await?;
        loop {
            let delivery = tokio::select! {
                d = sub.recv() => d,
                _ = self.tx.closed() => return Err(Gone),
                _ = shutdown.changed() => return Err(Gone),
            };
            match delivery {
                // Unspooled (the spool cannot write): live only, nothing to order it by.
                Delivery::Item(alert) if alert.seq == 0 => {
                    if self.filter.matches(&alert) {
                        self.send(watch_alerts_response::Item::Alert((*alert).clone()))
                            .await?;
                    }
                }
                Delivery::Item(alert) => {
                    if alert.seq <= self.last {
                        continue;
                    }
                    if alert.seq > self.last + 1 {
                        self.catch_up(Some(alert.seq - 1)).await?;
                    }
                    self.last = alert.seq;
                    if self.filter.matches(&alert) {
                        self.send(watch_alerts_response::Item::Alert((*alert).clone()))
                            .await?;
                    }
                }
                Delivery::Missed {
                    count,
                    last_seq,
                    unnumbered,
                    ..
                } => {
                    count_missed(&self.shared, "alerts", count);
                    if unnumbered > 0 {
                        // Lost for this subscriber: no spool holds them.
                        let missed = pb::Missed {
                            count: unnumbered,
                            reason: "queue_full_unspooled".into(),
                            ..pb::Missed::default()
                        };
                        self.send(watch_alerts_response::Item::Missed(missed))
                            .await?;
                    }
                    // The numbered ones are not lost: re-read them from the spool.
                    self.catch_up(Some(last_seq)).await?;
                }
            }
        }
    }

    async fn send(&self, item: watch_alerts_response::Item) -> Result<(), Gone> {
        self.tx
            .send(Ok(pb::WatchAlertsResponse { item: Some(item) }))
            .await
            .map_err(|_| Gone)
    }

    async fn missed(&mut self, upto: u64, reason: &str) -> Result<(), Gone> {
        let missed = pb::Missed {
            count: upto - self.last,
            first_seq: self.last + 1,
            last_seq: upto,
            reason: reason.to_string(),
        };
        self.last = upto;
        self.send(watch_alerts_response::Item::Missed(missed)).await
    }

    /// Sends spooled alerts after `last` up to `upto` (the spool's end when `None`). Numbers the
    /// spool no longer holds are reported as missed ("evicted").
    async fn catch_up(&mut self, upto: Option<u64>) -> Result<(), Gone> {
        loop {
            let reader = self.shared.spool.lock().unwrap().read_from(self.last);
            let upto = upto.unwrap_or(reader.until()).min(reader.until());
            if self.last >= upto {
                return Ok(());
            }
            let chunk: Vec<_> = tokio::task::spawn_blocking(move || {
                reader
                    .take_while(|r| r.seq <= upto)
                    .take(REPLAY_CHUNK)
                    .collect()
            })
            .await
            .map_err(|_| Gone)?;
            if chunk.is_empty() {
                return self.missed(upto, "evicted").await;
            }
            for record in chunk {
                if record.seq > self.last + 1 {
                    self.missed(record.seq - 1, "evicted").await?;
                }
                match Alert::decode(record.payload.as_slice()) {
                    Ok(alert) => {
                        self.last = record.seq;
                        if self.filter.matches(&alert) {
                            self.send(watch_alerts_response::Item::Alert(alert)).await?;
                        }
                    }
                    Err(err) => {
                        log::warn!("alert spool: record {} does not decode: {err}", record.seq);
                        self.missed(record.seq, "undecodable").await?;
                    }
                }
            }
        }
    }
}

async fn stream_events(
    shared: Arc<Shared>,
    mut sub: Subscription<Arc<Event>>,
    tx: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let delivery = tokio::select! {
            d = sub.recv() => d,
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let item = match delivery {
            Delivery::Item(event) => watch_events_response::Item::Event((*event).clone()),
            Delivery::Missed {
                count,
                first_seq,
                last_seq,
                ..
            } => {
                count_missed(&shared, "events", count);
                watch_events_response::Item::Missed(pb::Missed {
                    count,
                    first_seq,
                    last_seq,
                    reason: "queue_full".into(),
                })
            }
        };
        let response = pb::WatchEventsResponse { item: Some(item) };
        if tx.send(Ok(response)).await.is_err() {
            return;
        }
    }
}

/// Binds the Unix socket at `path`: creates its directory, replaces a stale socket, refuses to
/// take over a live one, and restricts it to its owner (mode 0600).
pub(super) fn bind_unix(path: &Path) -> Result<UnixListener> {
    let hint = "choose another path with --grpc-socket";
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    crate::trust::create_private_dir(dir)
        .with_context(|| format!("a directory for the gRPC socket ({hint})"))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another process (a sensor already running?) serves on {}: stop it, or {hint}",
                    path.display()
                ),
                // Left behind by an agent that was killed: nobody listens.
                Err(_) => std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?,
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: remove it, or {hint}",
            path.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("inspecting {} ({hint})", path.display()));
        }
    }
    // The agent runs as root, so root owns the socket; 0600 keeps everyone else out. It is bound
    // in a directory only root can enter, given its mode there and renamed into place: at its
    // path it never has a looser mode, whatever the umask.
    let staging = dir.join(format!(".sensor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    crate::trust::create_private_dir(&staging)?;
    let bound = staging.join("s");
    let placed = UnixListener::bind(&bound)
        .with_context(|| format!("binding the gRPC socket {} ({hint})", bound.display()))
        .and_then(|listener| {
            std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {} to mode 0600", bound.display()))?;
            std::fs::rename(&bound, path).with_context(|| {
                format!("moving the gRPC socket to {} ({hint})", path.display())
            })?;
            Ok(listener)
        });
    let _ = std::fs::remove_dir_all(&staging);
    placed
}

/// A server that pings idle connections, so a vanished subscriber (a dead peer behind a NAT, a
/// killed client) is noticed and its subscription freed, and bounds what one connection holds.
fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
}

/// gRPC server reflection (v1 and v1alpha) of the `sensor.v1` schema, so that generic tools
/// (grpcurl, grpcui, grpcio-reflection) discover the API from the server alone.
fn reflection() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sensor_proto::FILE_DESCRIPTOR_SET)
    };
    // The schema is compiled into the agent: its descriptors always parse.
    let parsed = "the compiled schema's descriptors parse";
    (
        builder().build_v1().expect(parsed),
        builder().build_v1alpha().expect(parsed),
    )
}

fn service(shared: Arc<Shared>, shutdown: &watch::Receiver<bool>) -> SensorServer<Service> {
    SensorServer::new(Service {
        shared,
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

pub(super) async fn serve_unix(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = service(shared, &shutdown);
    let (reflect, reflect_alpha) = reflection();
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(err) = server()
        .add_service(svc)
        .add_service(reflect)
        .add_service(reflect_alpha)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await
    {
        log::error!("gRPC server on the Unix socket stopped: {err}");
    }
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
}

/// Binds the TCP listener and loads its mutual-TLS configuration, so that a bad address or bad
/// PEM file fails the start rather than the first connection.
pub(super) async fn bind_tcp(cfg: &TcpTlsConfig) -> Result<(TcpListener, ServerTlsConfig)> {
    let identity = Identity::from_pem(
        read_pem(&cfg.cert, "--tls-cert")?,
        read_pem(&cfg.key, "--tls-key")?,
    );
    let ca = Certificate::from_pem(read_pem(&cfg.client_ca, "--tls-client-ca")?);
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca)
        .client_auth_optional(false);
    Server::builder().tls_config(tls.clone()).with_context(|| {
        format!(
            "loading the TLS material (--tls-cert {}, --tls-key {}, --tls-client-ca {}): \
             they must be PEM, the key matching the certificate",
            cfg.cert.display(),
            cfg.key.display(),
            cfg.client_ca.display()
        )
    })?;
    let listener = TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding the gRPC TCP address {} (--grpc-tcp)", cfg.addr))?;
    Ok((listener, tls))
}

pub(super) async fn serve_tcp(
    listener: TcpListener,
    tls: ServerTlsConfig,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = service(shared, &shutdown);
    let (reflect, reflect_alpha) = reflection();
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    let result = match server().tls_config(tls) {
        Ok(mut builder) => {
            builder
                .add_service(svc)
                .add_service(reflect)
                .add_service(reflect_alpha)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        log::error!("gRPC server on TCP stopped: {err}");
    }
}
