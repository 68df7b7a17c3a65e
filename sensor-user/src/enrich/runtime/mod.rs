//! Runtime metadata: what a container's runtime knows and its cgroup path does not (name, image,
//! labels, privileged, network and pid mode), fetched from the runtime's own API.
//!
//! Two halves, so the event pipeline never waits on the runtime:
//! - [`Fetcher`] (tokio tasks) talks to the Docker Engine API: it follows the `/events` stream,
//!   whose `create` event already names the container, its image and labels (Docker emits it
//!   before the start, so this arrives before the container's first process runs; an inspect
//!   sent then would wait for the start to finish, about 0.3 s), then inspects the container for
//!   the rest; it inspects the containers the pipeline asks about (those that predate the
//!   sensor or whose event was missed), and sends answers back on a channel. It keeps a
//!   one-line status for health and start-up.
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

pub mod docker;
pub mod http;

use self::{docker::DockerError, http::HttpError};

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
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
        }
    }
}

/// Where the pipeline asks for metadata: the fetcher's bounded queue.
#[derive(Clone)]
pub struct Requests {
    queue: mpsc::Sender<ContainerId>,
    stats: Arc<RequestStats>,
}

impl Requests {
    /// Queues an inspect of `id`; false (counted) when the queue is full.
    fn ask(&self, id: &ContainerId) -> bool {
        let queued = self.queue.try_send(id.clone()).is_ok();
        if !queued {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
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

    /// Asks for `container`'s metadata unless it is known or was asked for less than
    /// [`RETRY_AFTER`] ago. Only Docker is asked; other runtimes' containers have no metadata.
    pub fn want(&mut self, container: &ContainerRef) {
        if container.runtime != Runtime::Docker
            || self
                .get(&container.id)
                .is_some_and(ContainerMeta::inspected)
            || self
                .requested
                .get(&container.id)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return;
        }
        let Some(requests) = &self.requests else {
            return;
        };
        // A full queue drops the request; a later event of the container asks again.
        if requests.ask(&container.id) {
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
        self.entries.insert(id, (Instant::now(), Arc::new(meta)));
    }

    /// Forgets entries older than [`GRACE`] whose container `known` no longer reports (running
    /// or recently exited), and requests that went unanswered for as long.
    pub fn prune(&mut self, known: impl Fn(&ContainerId) -> bool) {
        let now = Instant::now();
        self.entries
            .retain(|id, (t, _)| known(id) || now.duration_since(*t) < GRACE);
        self.requested.retain(|_, t| now.duration_since(*t) < GRACE);
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

/// The runtime API status line, shared with the health reporter.
#[derive(Clone, Default)]
pub struct Status(Arc<Mutex<String>>);

impl Status {
    pub fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn set(&self, s: String) {
        *self.0.lock().unwrap() = s;
    }
}

/// The tasks that ask Docker; see the module doc.
pub struct Fetcher {
    socket: PathBuf,
    updates: mpsc::Sender<Update>,
    status: Status,
    requests: Requests,
}

/// A running fetcher: where to send requests, where answers arrive, its status and figures.
pub struct RuntimeApi {
    pub requests: Option<Requests>,
    pub updates: mpsc::Receiver<Update>,
    pub status: Status,
    pub stats: Arc<RequestStats>,
}

impl RuntimeApi {
    /// Starts a fetcher for the Docker socket `socket` (`None`: metadata off). Waits up to a few
    /// seconds for a first answer, so the status says at start-up whether Docker answers; the
    /// fetcher keeps trying in the background either way.
    pub async fn start(socket: Option<PathBuf>) -> RuntimeApi {
        let (update_tx, updates) = mpsc::channel(QUEUE);
        let status = Status::default();
        let stats = Arc::new(RequestStats::default());
        let Some(socket) = socket else {
            status.set("off".into());
            return RuntimeApi {
                requests: None,
                updates,
                status,
                stats,
            };
        };
        let (queue, request_rx) = mpsc::channel(QUEUE);
        let requests = Requests {
            queue,
            stats: stats.clone(),
        };
        let fetcher = Arc::new(Fetcher {
            socket,
            updates: update_tx,
            status: status.clone(),
            requests: requests.clone(),
        });
        fetcher.check().await;
        tokio::spawn(fetcher.clone().follow_events());
        tokio::spawn(fetcher.serve(request_rx));
        RuntimeApi {
            requests: Some(requests),
            updates,
            status,
            stats,
        }
    }
}

impl Fetcher {
    fn describe(&self) -> String {
        format!("docker {}", self.socket.display())
    }

    /// Asks the daemon's version; records whether it answered.
    async fn check(&self) -> bool {
        match docker::version(&self.socket).await {
            Ok(version) => {
                self.status
                    .set(format!("{}: connected ({version})", self.describe()));
                true
            }
            Err(e) => {
                self.unavailable(&e.to_string());
                false
            }
        }
    }

    fn unavailable(&self, why: &str) {
        self.status.set(format!(
            "{}: unavailable ({why}); containers are reported without name, image and labels",
            self.describe()
        ));
    }

    /// Inspects one container, retrying with backoff, and sends the answer; a container the
    /// daemon does not know is left out (gone already, or not Docker's).
    async fn fetch(self: Arc<Self>, id: ContainerId) {
        let stats = &self.requests.stats;
        let mut backoff = RETRY_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match docker::inspect(&self.socket, id.as_str()).await {
                Ok(answer) => {
                    stats.answered.fetch_add(1, Ordering::Relaxed);
                    // The daemon answers again after an outage: say so.
                    if self.status.get().contains("unavailable") {
                        self.check().await;
                    }
                    if let Some(meta) = answer {
                        let _ = self.updates.send((id, meta)).await;
                    }
                    return;
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    // The daemon is away or hangs: an outage.
                    match &e {
                        DockerError::Http(HttpError::Timeout { .. }) => {
                            stats.timed_out.fetch_add(1, Ordering::Relaxed);
                            self.unavailable(&e.to_string());
                        }
                        DockerError::Http(HttpError::Io(_)) => self.unavailable(&e.to_string()),
                        // One odd answer about one container is not an outage.
                        _ if attempt == ATTEMPTS => log::warn!("inspecting container {id}: {e}"),
                        _ => {}
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

    /// Inspects every container created or renamed, reconnecting to the event stream (backing
    /// off up to 30 s) when it breaks or the daemon is away.
    async fn follow_events(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.updates.is_closed() {
                return;
            }
            match docker::events(&self.socket).await {
                Ok(mut lines) => {
                    self.check().await;
                    backoff = Duration::from_millis(500);
                    loop {
                        match lines.next_line().await {
                            Ok(Some(line)) => {
                                // What the event says now (before the container starts, when
                                // an inspect would wait for the start to finish), then the rest.
                                if let Some((id, partial)) = docker::event_meta(&line) {
                                    self.requests.ask(&id);
                                    let _ = self.updates.send((id, partial)).await;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                log::debug!("docker event stream: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => self.unavailable(&e.to_string()),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::container_id::resolve;

    fn requests(capacity: usize) -> (Requests, mpsc::Receiver<ContainerId>) {
        let (queue, rx) = mpsc::channel(capacity);
        let stats = Arc::default();
        (Requests { queue, stats }, rx)
    }

    fn docker_ref(n: u8) -> ContainerRef {
        resolve(&format!("/docker/{}", format!("{n:02x}").repeat(32))).unwrap()
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
        let stats = tx.stats.clone();
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
