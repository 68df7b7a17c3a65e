//! Runtime metadata: what a container's runtime knows and its cgroup path does not (name, image,
//! labels, privileged, network and pid mode; for Kubernetes the pod's name, namespace, uid and
//! labels), fetched from the runtime's own API.
//!
//! Three APIs, each asked only about the containers its runtime's cgroups name ([`Api`]):
//! Docker's Engine API (`docker`), podman's Docker-compatible API (`podman system service`,
//! `libpod-<id>` cgroups) and the Kubernetes CRI of containerd or CRI-O (`cri-containerd-<id>`,
//! `crio-<id>` and kubelet's `kubepods/.../pod<uid>/<id>` cgroups).
//!
//! Two halves, so the event pipeline never waits on a runtime:
//! - [`Fetcher`] (tokio tasks, one set per API) follows the runtime's event stream (Docker's and
//!   podman's `/events`, whose `create` event already names the container, its image and labels
//!   before its first process runs; an inspect sent then would wait for the start to finish,
//!   about 0.3 s; CRI's `GetContainerEvents` where the runtime has it), inspects the containers
//!   the stream and the pipeline ask about (those that predate the sensor, whose event was
//!   missed, or whose runtime streams no events: these are asked when their cgroup appears),
//!   and sends answers back on a channel. It keeps a one-line status for health and start-up.
//! - [`MetadataCache`] (owned by the enricher) holds the answers by full container id and asks
//!   for the ones it lacks. Events that arrive before an answer go out without the fields; later
//!   ones carry them. Entries outlive their container by a grace period, so alerts raised at a
//!   container's exit still name it.
//!
//! The daemon is not trusted to behave: every request has deadlines and size caps (`http`),
//! inspects wait in one bounded queue for a fixed number of workers (a flood of events cannot
//! spawn unbounded work), a failed inspect is retried with backoff, and a request that was
//! dropped or gave up is asked again at the container's next event after [`RETRY_AFTER`]. Every
//! outcome is counted ([`RequestStats`], in health as `runtime_requests`).

pub mod containerd_events;
pub mod cri;
pub mod docker;
pub mod http;

use self::{cri::CriError, docker::DockerError, http::HttpError};

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::container_id::{ContainerId, ContainerRef, Runtime};

/// What the runtime says about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    /// The image as the user ran it.
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// `None` until an inspect answered: the creation event names the container, its image and
    /// labels, not how it runs.
    pub privileged: Option<bool>,
    pub network_mode: String,
    pub pid_mode: String,
    /// The runtime that answered, as it names itself ("containerd", "cri-o"), when its API
    /// says; the cgroup path alone cannot tell it for kubelet's cgroupfs layout.
    pub runtime: String,
    /// The Kubernetes pod the container belongs to (from CRI).
    pub pod: Option<PodMeta>,
}

/// A Kubernetes pod as kubelet described it to the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

impl ContainerMeta {
    /// From an inspect (complete), not from an event (partial).
    pub fn inspected(&self) -> bool {
        self.privileged.is_some()
    }
}

/// Entries and pending requests are forgotten this long after the container left (or, for a
/// container never seen running, after the answer arrived).
pub const GRACE: Duration = Duration::from_secs(300);
/// Entries kept at most; beyond it the oldest are dropped.
const MAX_ENTRIES: usize = 20_000;
/// Requests waiting for the fetcher at most; beyond it a request is dropped and asked again later.
const QUEUE: usize = 1024;
/// Inspects in flight at once.
const CONCURRENCY: usize = 4;
/// Attempts of one inspect, and the wait before the second (doubling after).
const ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Asks of CRI about an id it does not know yet (its creation still under way), and the wait
/// before the second (doubling after: 1.3 s in all). A container's creation call ends a few
/// milliseconds after containerd's event, and its first process runs some 30 ms later.
const NOT_YET_ATTEMPTS: u32 = 7;
const NOT_YET_BACKOFF: Duration = Duration::from_millis(10);
/// A request not answered within this is asked again at the container's next event.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Outcomes of the requests to the runtime's API since start.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Inspects answered (the container's metadata, or "no such container").
    pub answered: AtomicU64,
    /// Attempts that failed (an error, a malformed or oversized answer) or timed out.
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    /// Attempts after a failed one.
    pub retried: AtomicU64,
    /// Inspects that failed every attempt (asked again at a later event).
    pub gave_up: AtomicU64,
    /// Requests refused because the queue was full (asked again at a later event).
    pub dropped_queue_full: AtomicU64,
}

impl RequestStats {
    pub fn snapshot(&self) -> sensor_proto::RuntimeRequests {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        sensor_proto::RuntimeRequests {
            answered: get(&self.answered),
            failed: get(&self.failed),
            timed_out: get(&self.timed_out),
            retried: get(&self.retried),
            gave_up: get(&self.gave_up),
            dropped_queue_full: get(&self.dropped_queue_full),
            // The pipeline's holdback fills these in.
            ..Default::default()
        }
    }
}

/// One API's bounded queue of inspects.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<ContainerId>,
    stats: Arc<RequestStats>,
}

impl Queue {
    /// Queues an inspect of `id`; false (counted) when the queue is full.
    fn ask(&self, id: &ContainerId) -> bool {
        let queued = self.tx.try_send(id.clone()).is_ok();
        if !queued {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

/// Where the pipeline asks for metadata: the queue of the API that knows each runtime's
/// containers.
#[derive(Clone, Default)]
pub struct Requests {
    routes: Vec<(Runtime, Queue)>,
}

impl Requests {
    fn queue(&self, runtime: Runtime) -> Option<&Queue> {
        self.routes
            .iter()
            .find(|(r, _)| *r == runtime)
            .map(|(_, q)| q)
    }
}

/// An answer: the container and what its runtime says.
pub type Update = (ContainerId, ContainerMeta);

/// Metadata by full container id; see the module doc.
#[derive(Default)]
pub struct MetadataCache {
    entries: HashMap<ContainerId, (Instant, Arc<ContainerMeta>)>,
    /// Asked and not answered yet, with when.
    requested: HashMap<ContainerId, Instant>,
    /// Pods by uid, from any answer about one of their containers or their sandbox: a pod's
    /// new container is named by its pod (and its runtime) before its own answer arrives.
    pods: HashMap<String, Arc<ContainerMeta>>,
    requests: Option<Requests>,
    /// Entries dropped to stay within [`MAX_ENTRIES`].
    evicted: u64,
}

impl MetadataCache {
    /// A cache that asks `requests` for what it lacks (`None`: never asks).
    pub fn new(requests: Option<Requests>) -> Self {
        Self {
            requests,
            ..Default::default()
        }
    }

    pub fn get(&self, id: &ContainerId) -> Option<&ContainerMeta> {
        self.entries.get(id).map(|(_, m)| m.as_ref())
    }

    /// Whether `id`'s runtime was asked about it less than `hold` ago and has not answered.
    pub fn awaiting(&self, id: &str, hold: Duration) -> bool {
        !self.entries.contains_key(id) && self.requested.get(id).is_some_and(|t| t.elapsed() < hold)
    }

    /// The latest answer about a container of the pod with `uid` (for its pod and runtime).
    pub fn pod(&self, uid: &str) -> Option<&ContainerMeta> {
        self.pods.get(uid).map(Arc::as_ref)
    }

    /// Asks for `container`'s metadata unless it is known or was asked for less than
    /// [`RETRY_AFTER`] ago. Only the API of the container's runtime is asked; containers of
    /// runtimes without one (LXC, CI runners) have no metadata.
    pub fn want(&mut self, container: &ContainerRef) {
        let Some(queue) = self
            .requests
            .as_ref()
            .and_then(|r| r.queue(container.runtime))
        else {
            return;
        };
        if self
            .get(&container.id)
            .is_some_and(ContainerMeta::inspected)
            || self
                .requested
                .get(&container.id)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return;
        }
        // A full queue drops the request; a later event of the container asks again.
        if queue.ask(&container.id) {
            self.requested.insert(container.id.clone(), Instant::now());
        }
    }

    /// Records an answer; a partial one (from an event) never replaces an inspect's.
    pub fn insert(&mut self, id: ContainerId, meta: ContainerMeta) {
        if !meta.inspected() && self.get(&id).is_some_and(ContainerMeta::inspected) {
            return;
        }
        if meta.inspected() {
            self.requested.remove(&id);
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&id) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        let meta = Arc::new(meta);
        if let Some(pod) = &meta.pod {
            self.pods.insert(pod.uid.clone(), meta.clone());
        }
        self.entries.insert(id, (Instant::now(), meta));
    }

    /// Forgets entries older than [`GRACE`] whose container `known` no longer reports (running
    /// or recently exited), and requests that went unanswered for as long.
    pub fn prune(&mut self, known: impl Fn(&ContainerId) -> bool) {
        let now = Instant::now();
        self.entries
            .retain(|id, (t, _)| known(id) || now.duration_since(*t) < GRACE);
        self.requested.retain(|_, t| now.duration_since(*t) < GRACE);
        let entries = &self.entries;
        self.pods.retain(|uid, _| {
            entries
                .values()
                .any(|(_, m)| m.pod.as_ref().is_some_and(|p| p.uid == *uid))
        });
    }

    /// The cache's size, bound and evictions (`Health.tables`).
    pub fn health(&self) -> sensor_proto::TableHealth {
        sensor_proto::TableHealth {
            table: "runtime_metadata".into(),
            entries: self.entries.len() as u64,
            capacity: MAX_ENTRIES as u64,
            evicted: self.evicted,
            pruned: 0,
        }
    }
}

/// The runtime APIs' status lines ("docker /var/run/docker.sock: connected (...)"), one per
/// API, shared with the health reporter.
#[derive(Clone, Default)]
pub struct Status(Arc<Mutex<Vec<String>>>);

impl Status {
    /// Every API's line, `; `-separated ("off" when none is asked).
    pub fn get(&self) -> String {
        let lines = self.0.lock().unwrap();
        if lines.is_empty() {
            return "off".into();
        }
        lines.join("; ")
    }

    /// The lines that are warnings: an API whose socket exists (or was named) and fails.
    pub fn warnings(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("unavailable"))
            .cloned()
            .collect()
    }

    fn slot(&self) -> usize {
        let mut lines = self.0.lock().unwrap();
        lines.push(String::new());
        lines.len() - 1
    }

    fn set(&self, slot: usize, s: String) {
        self.0.lock().unwrap()[slot] = s;
    }

    fn line(&self, slot: usize) -> String {
        self.0.lock().unwrap()[slot].clone()
    }
}

/// A runtime API's socket, and whether the user named it: a missing default socket is a
/// runtime this node does not run (watched for quietly), a missing named one is a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSocket {
    pub path: PathBuf,
    pub named: bool,
}

impl RuntimeSocket {
    pub fn named(path: impl Into<PathBuf>) -> Self {
        RuntimeSocket {
            path: path.into(),
            named: true,
        }
    }

    fn default_at(path: &str) -> Self {
        RuntimeSocket {
            path: path.into(),
            named: false,
        }
    }
}

/// The runtime APIs asked for metadata, each by its socket (`None`: not asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sockets {
    pub docker: Option<RuntimeSocket>,
    pub podman: Option<RuntimeSocket>,
    pub cri: Option<RuntimeSocket>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            docker: Some(RuntimeSocket::default_at(docker::DEFAULT_SOCKET)),
            podman: Some(RuntimeSocket::default_at(docker::PODMAN_SOCKET)),
            cri: Some(RuntimeSocket::default_at(cri::DEFAULT_SOCKET)),
        }
    }
}

/// One runtime API and the cgroup runtimes whose containers it knows.
enum Api {
    /// Docker's Engine API, or podman's compatible one.
    Engine { product: Runtime },
    /// Boxed: the client is much larger than the Engine API's socket path.
    Cri(Box<cri::Cri>),
}

impl Api {
    fn name(&self) -> &'static str {
        match self {
            Api::Engine { product } => product.as_str(),
            Api::Cri(_) => "cri",
        }
    }

    /// The cgroup runtimes whose containers this API is asked about: kubelet's cgroupfs layout
    /// (`kubepods/.../pod<uid>/<id>`) does not say which CRI runtime made the container.
    fn serves(&self) -> &'static [Runtime] {
        match self {
            Api::Engine {
                product: Runtime::Podman,
            } => &[Runtime::Podman],
            Api::Engine { .. } => &[Runtime::Docker],
            Api::Cri(_) => &[Runtime::Containerd, Runtime::CriO, Runtime::Kubernetes],
        }
    }
}

/// Why a request to a runtime API failed.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Engine(#[from] DockerError),
    #[error(transparent)]
    Cri(#[from] CriError),
}

impl ApiError {
    /// The runtime is away or hangs: an outage, not one odd answer about one container.
    fn is_outage(&self) -> bool {
        match self {
            ApiError::Engine(DockerError::Http(HttpError::Timeout { .. } | HttpError::Io(_))) => {
                true
            }
            ApiError::Engine(_) => false,
            ApiError::Cri(e) => e.is_outage(),
        }
    }

    fn is_timeout(&self) -> bool {
        match self {
            ApiError::Engine(DockerError::Http(HttpError::Timeout { .. })) => true,
            ApiError::Engine(_) => false,
            ApiError::Cri(e) => e.is_timeout(),
        }
    }
}

/// The tasks that ask one runtime API; see the module doc.
pub struct Fetcher {
    api: Api,
    socket: PathBuf,
    /// The user named the socket: missing, it is a warning.
    named: bool,
    updates: mpsc::Sender<Update>,
    status: Status,
    slot: usize,
    queue: Queue,
    /// How the runtime names itself (CRI's `Version`), once it answered.
    runtime_name: Mutex<String>,
    /// The runtime refused the event stream (containerd 1.6): its containers are asked about
    /// when their cgroup appears.
    no_event_stream: AtomicBool,
}

/// The running fetchers: where to send requests, where answers arrive, their status and figures.
pub struct RuntimeApi {
    pub requests: Option<Requests>,
    pub updates: mpsc::Receiver<Update>,
    pub status: Status,
    pub stats: Arc<RequestStats>,
}

impl RuntimeApi {
    /// Starts a fetcher for each socket of `sockets`. Waits up to a few seconds for each one's
    /// first answer, so the status says at start-up whether the runtimes answer; the fetchers
    /// keep trying in the background either way.
    pub async fn start(sockets: &Sockets) -> RuntimeApi {
        let (update_tx, updates) = mpsc::channel(QUEUE);
        let status = Status::default();
        let stats = Arc::new(RequestStats::default());
        let apis = [
            (&sockets.docker, Runtime::Docker),
            (&sockets.podman, Runtime::Podman),
            (&sockets.cri, Runtime::Kubernetes),
        ];
        let mut requests = Requests::default();
        for (socket, kind) in apis {
            let Some(RuntimeSocket {
                path: socket,
                named,
            }) = socket.clone()
            else {
                continue;
            };
            let api = match kind {
                Runtime::Kubernetes => Api::Cri(Box::new(cri::Cri::new(&socket))),
                product => Api::Engine { product },
            };
            let (tx, request_rx) = mpsc::channel(QUEUE);
            let queue = Queue {
                tx,
                stats: stats.clone(),
            };
            for &runtime in api.serves() {
                requests.routes.push((runtime, queue.clone()));
            }
            let fetcher = Arc::new(Fetcher {
                api,
                socket,
                named,
                updates: update_tx.clone(),
                slot: status.slot(),
                status: status.clone(),
                queue,
                runtime_name: Mutex::default(),
                no_event_stream: AtomicBool::new(false),
            });
            fetcher.check().await;
            tokio::spawn(fetcher.clone().follow_events());
            tokio::spawn(fetcher.serve(request_rx));
        }
        RuntimeApi {
            requests: (!requests.routes.is_empty()).then_some(requests),
            updates,
            status,
            stats,
        }
    }
}

impl Fetcher {
    fn describe(&self) -> String {
        format!("{} {}", self.api.name(), self.socket.display())
    }

    fn set_status(&self, line: String) {
        self.status.set(self.slot, line);
    }

    /// Asks the runtime's version; records whether it answered.
    async fn check(&self) -> bool {
        let version = match &self.api {
            Api::Engine { .. } => docker::version(&self.socket).await.map_err(ApiError::from),
            Api::Cri(cri) => cri
                .version()
                .await
                .map_err(ApiError::from)
                .map(|(name, line)| {
                    *self.runtime_name.lock().unwrap() = name;
                    line
                }),
        };
        match version {
            Ok(version) => {
                let mut line = format!("{}: connected ({version})", self.describe());
                if self.no_event_stream.load(Ordering::Relaxed) {
                    line.push_str(
                        "; no container event stream: containers are asked about when their cgroup appears",
                    );
                }
                self.set_status(line);
                true
            }
            Err(e) => {
                self.unavailable(&e.to_string());
                false
            }
        }
    }

    /// Records an outage; a socket that does not exist is a runtime this node does not run
    /// (watched for, not warned about).
    fn unavailable(&self, why: &str) {
        let line = if self.named || self.socket.exists() {
            format!(
                "{}: unavailable ({why}); its containers are reported without name, image and labels",
                self.describe()
            )
        } else {
            format!("{}: absent (no socket)", self.describe())
        };
        self.set_status(line);
    }

    async fn inspect(&self, id: &ContainerId) -> Result<Option<ContainerMeta>, ApiError> {
        match &self.api {
            Api::Engine { .. } => Ok(docker::inspect(&self.socket, id.as_str()).await?),
            Api::Cri(cri) => {
                let name = self.runtime_name.lock().unwrap().clone();
                Ok(cri.inspect(id, &name).await?)
            }
        }
    }

    /// Inspects one container, retrying with backoff, and sends the answer; a container the
    /// runtime does not know is left out (gone already, or not this runtime's).
    async fn fetch(self: Arc<Self>, id: ContainerId) {
        let stats = &self.queue.stats;
        let mut backoff = RETRY_BACKOFF;
        let mut not_yet = 0;
        let mut attempt = 1;
        while attempt <= ATTEMPTS {
            match self.inspect(&id).await {
                // CRI names a container or sandbox only once its creation call is over, and
                // the creation event and the cgroup come before that: ask again shortly.
                Ok(None) if matches!(self.api, Api::Cri(_)) && not_yet < NOT_YET_ATTEMPTS => {
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(NOT_YET_BACKOFF * (1 << not_yet)).await;
                    not_yet += 1;
                }
                Ok(answer) => {
                    stats.answered.fetch_add(1, Ordering::Relaxed);
                    // The runtime answers again after an outage: say so.
                    if !self.status.line(self.slot).contains("connected") {
                        self.check().await;
                    }
                    if let Some(meta) = answer {
                        let _ = self.updates.send((id, meta)).await;
                    }
                    return;
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    if e.is_timeout() {
                        stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    if e.is_outage() {
                        self.unavailable(&e.to_string());
                    } else if attempt == ATTEMPTS {
                        log::warn!("inspecting container {id} ({}): {e}", self.describe());
                    }
                    attempt += 1;
                    if attempt <= ATTEMPTS {
                        stats.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
        stats.gave_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers the pipeline's (and the event stream's) requests with at most [`CONCURRENCY`]
    /// inspects in flight, until every sender hangs up.
    async fn serve(self: Arc<Self>, mut requests: mpsc::Receiver<ContainerId>) {
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                id = requests.recv(), if inflight.len() < CONCURRENCY => match id {
                    Some(id) => {
                        inflight.spawn(self.clone().fetch(id));
                    }
                    None => break,
                },
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            }
        }
    }

    /// Follows the runtime's event stream, reconnecting (backing off up to 30 s) when it breaks
    /// or the runtime is away. A runtime without one is asked at each container's first event.
    async fn follow_events(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.updates.is_closed() {
                return;
            }
            let outcome = match &self.api {
                Api::Engine { .. } => self.follow_engine_events().await,
                Api::Cri(cri) => self.follow_cri_events(cri).await,
            };
            match outcome {
                Ok(true) => backoff = Duration::from_millis(500),
                Ok(false) => return,
                Err(e) => self.unavailable(&e.to_string()),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Docker's or podman's `/events` until it ends: what a creation event says now (before
    /// the container starts, when an inspect would wait for the start to finish), then the
    /// rest by an inspect. `Ok(true)`: the stream ran and ended.
    async fn follow_engine_events(&self) -> Result<bool, ApiError> {
        let mut lines = docker::events(&self.socket).await?;
        self.check().await;
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some((id, partial)) = docker::event_meta(&line) {
                        self.queue.ask(&id);
                        let _ = self.updates.send((id, partial)).await;
                    }
                }
                Ok(None) => return Ok(true),
                Err(e) => {
                    log::debug!("{} event stream: {e}", self.describe());
                    return Ok(true);
                }
            }
        }
    }

    /// Inspects each container a creation stream names, until the stream ends or breaks.
    async fn ask_each<T>(
        &self,
        mut events: tonic::Streaming<T>,
        created: fn(&T) -> Option<ContainerId>,
    ) {
        self.check().await;
        while let Ok(Some(event)) = events.message().await {
            if let Some(id) = created(&event) {
                self.queue.ask(&id);
            }
        }
    }

    /// CRI's `GetContainerEvents` until it ends, or where the runtime has none, containerd's
    /// own creation events (containerd 1.6): each created container is inspected. `Ok(false)`:
    /// the runtime has neither (CRI-O without evented PLEG), said once in the status.
    async fn follow_cri_events(&self, cri: &cri::Cri) -> Result<bool, ApiError> {
        let unimplemented = |e: &CriError| matches!(e, CriError::Status { status, .. } if status.code() == tonic::Code::Unimplemented);
        match cri.created().await {
            Ok(events) => {
                self.ask_each(events, cri::created_id).await;
                return Ok(true);
            }
            Err(e) if !unimplemented(&e) => return Err(e.into()),
            Err(_) => {}
        }
        match cri.containerd_created().await {
            Ok(events) => {
                self.ask_each(events, containerd_events::created_id).await;
                Ok(true)
            }
            Err(e) if unimplemented(&e) => {
                self.no_event_stream.store(true, Ordering::Relaxed);
                self.check().await;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::container_id::resolve;

    /// Requests routed to one queue for Docker's containers.
    fn requests(capacity: usize) -> (Requests, mpsc::Receiver<ContainerId>) {
        let (tx, rx) = mpsc::channel(capacity);
        let queue = Queue {
            tx,
            stats: Arc::default(),
        };
        let routes = vec![(Runtime::Docker, queue)];
        (Requests { routes }, rx)
    }

    fn docker_ref(n: u8) -> ContainerRef {
        resolve(&format!("/docker/{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    #[test]
    fn each_runtime_s_containers_go_to_its_own_api() {
        let (docker_q, mut docker_rx) = requests(8);
        let (cri_tx, mut cri_rx) = mpsc::channel(8);
        let cri = Queue {
            tx: cri_tx,
            stats: Arc::default(),
        };
        let mut routes = docker_q.routes;
        for runtime in [Runtime::Containerd, Runtime::Kubernetes] {
            routes.push((runtime, cri.clone()));
        }
        let mut cache = MetadataCache::new(Some(Requests { routes }));
        let uid = "8e1f5c34-0c0b-4f52-9d50-2d8f5b0c4a11";
        let pod = resolve(&format!(
            "/kubepods/besteffort/pod{uid}/{}",
            "cd".repeat(32)
        ))
        .unwrap();
        let docker = docker_ref(3);
        let podman = resolve(&format!("/libpod_parent/libpod-{}", "ef".repeat(32))).unwrap();
        for c in [&pod, &docker, &podman] {
            cache.want(c);
        }
        assert_eq!(cri_rx.try_recv().unwrap(), pod.id);
        assert_eq!(docker_rx.try_recv().unwrap(), docker.id);
        // No podman API: its container is not asked about anywhere.
        assert!(cri_rx.try_recv().is_err() && docker_rx.try_recv().is_err());
    }

    #[test]
    fn asks_once_per_container_and_only_docker() {
        let (tx, mut rx) = requests(8);
        let mut cache = MetadataCache::new(Some(tx));
        let a = docker_ref(1);
        cache.want(&a);
        cache.want(&a);
        let lxc = resolve("/lxc.payload.web").unwrap();
        cache.want(&lxc);
        assert_eq!(rx.try_recv().unwrap(), a.id);
        assert!(rx.try_recv().is_err(), "asked twice, or asked about LXC");
        let inspected = ContainerMeta {
            name: "web".into(),
            privileged: Some(false),
            ..Default::default()
        };
        cache.insert(a.id.clone(), inspected);
        assert_eq!(cache.get(&a.id).unwrap().name, "web");
        cache.want(&a);
        assert!(rx.try_recv().is_err(), "asked about a known container");
        // A late event's partial answer does not undo the inspect's.
        let partial = ContainerMeta {
            name: "old".into(),
            ..Default::default()
        };
        cache.insert(a.id.clone(), partial.clone());
        assert_eq!(cache.get(&a.id).unwrap().name, "web");
        // A partial answer alone still leaves the container to inspect.
        let b = docker_ref(2);
        cache.insert(b.id.clone(), partial);
        cache.want(&b);
        assert_eq!(rx.try_recv().unwrap(), b.id);
    }

    #[test]
    fn a_full_queue_or_no_answer_is_counted_and_a_later_want_asks_again() {
        let (tx, mut rx) = requests(1);
        let stats = tx.routes[0].1.stats.clone();
        let mut cache = MetadataCache::new(Some(tx));
        let (a, b) = (docker_ref(1), docker_ref(2));
        cache.want(&a);
        cache.want(&b); // queue full
        assert_eq!(stats.snapshot().dropped_queue_full, 1);
        assert_eq!(rx.try_recv().unwrap(), a.id);
        cache.want(&b);
        assert_eq!(rx.try_recv().unwrap(), b.id);
        // Unanswered: asked again once RETRY_AFTER passed, not before.
        cache.want(&a);
        assert!(rx.try_recv().is_err());
        *cache.requested.get_mut(&a.id).unwrap() -= RETRY_AFTER;
        cache.want(&a);
        assert_eq!(rx.try_recv().unwrap(), a.id);
    }

    #[test]
    fn prune_keeps_known_containers_and_recent_answers() {
        let mut cache = MetadataCache::new(None);
        let (a, b) = (docker_ref(1), docker_ref(2));
        cache.insert(a.id.clone(), ContainerMeta::default());
        cache.insert(b.id.clone(), ContainerMeta::default());
        // Backdate both answers past the grace period.
        for (t, _) in cache.entries.values_mut() {
            *t -= GRACE + Duration::from_secs(1);
        }
        cache.prune(|id| *id == a.id);
        assert!(cache.get(&a.id).is_some());
        assert!(cache.get(&b.id).is_none());
    }
}
