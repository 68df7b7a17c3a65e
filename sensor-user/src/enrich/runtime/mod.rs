//! Runtime metadata: what a container's runtime knows and its cgroup path does not (name, image,
//! labels, privileged, network and pid mode), fetched from the runtime's own API.
//!
//! Two halves, so the event pipeline never waits on the runtime:
//! - [`Fetcher`] (a tokio task) talks to the Docker Engine API: it follows the `/events` stream,
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

pub mod docker;
pub mod http;

use self::http::HttpError;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, mpsc};

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
const TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: the container and what its runtime says.
pub type Update = (ContainerId, ContainerMeta);

/// Metadata by full container id; see the module doc.
#[derive(Default)]
pub struct MetadataCache {
    entries: HashMap<ContainerId, (Instant, Arc<ContainerMeta>)>,
    /// Asked and not answered yet, with when.
    requested: HashMap<ContainerId, Instant>,
    requests: Option<mpsc::Sender<ContainerId>>,
}

impl MetadataCache {
    /// A cache that asks `requests` for what it lacks (`None`: never asks).
    pub fn new(requests: Option<mpsc::Sender<ContainerId>>) -> Self {
        Self {
            requests,
            ..Default::default()
        }
    }

    pub fn get(&self, id: &ContainerId) -> Option<&ContainerMeta> {
        self.entries.get(id).map(|(_, m)| m.as_ref())
    }

    /// Asks for `container`'s metadata unless it is known or asked for already. Only Docker is
    /// asked; other runtimes' containers have no metadata.
    pub fn want(&mut self, container: &ContainerRef) {
        if container.runtime != Runtime::Docker
            || self
                .get(&container.id)
                .is_some_and(ContainerMeta::inspected)
            || self.requested.contains_key(&container.id)
        {
            return;
        }
        let Some(requests) = &self.requests else {
            return;
        };
        // A full queue drops the request; a later event of the container asks again.
        if requests.try_send(container.id.clone()).is_ok() {
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

/// The task that asks Docker; see the module doc.
pub struct Fetcher {
    socket: PathBuf,
    updates: mpsc::Sender<Update>,
    status: Status,
    limit: Arc<Semaphore>,
}

/// A running fetcher: where to send requests, where answers arrive, and its status.
pub struct RuntimeApi {
    pub requests: Option<mpsc::Sender<ContainerId>>,
    pub updates: mpsc::Receiver<Update>,
    pub status: Status,
}

impl RuntimeApi {
    /// Starts a fetcher for the Docker socket `socket` (`None`: metadata off). Waits up to a few
    /// seconds for a first answer, so the status says at start-up whether Docker answers; the
    /// fetcher keeps trying in the background either way.
    pub async fn start(socket: Option<PathBuf>) -> RuntimeApi {
        let (update_tx, updates) = mpsc::channel(QUEUE);
        let status = Status::default();
        let Some(socket) = socket else {
            status.set("off".into());
            return RuntimeApi {
                requests: None,
                updates,
                status,
            };
        };
        let (requests, request_rx) = mpsc::channel(QUEUE);
        let fetcher = Arc::new(Fetcher {
            socket,
            updates: update_tx,
            status: status.clone(),
            limit: Arc::new(Semaphore::new(CONCURRENCY)),
        });
        fetcher.check().await;
        tokio::spawn(fetcher.clone().follow_events());
        tokio::spawn(fetcher.serve(request_rx));
        RuntimeApi {
            requests: Some(requests),
            updates,
            status,
        }
    }
}

impl Fetcher {
    fn describe(&self) -> String {
        format!("docker {}", self.socket.display())
    }

    /// Asks the daemon's version; records whether it answered.
    async fn check(&self) -> bool {
        match tokio::time::timeout(TIMEOUT, docker::version(&self.socket)).await {
            Ok(Ok(version)) => {
                self.status
                    .set(format!("{}: connected ({version})", self.describe()));
                true
            }
            Ok(Err(e)) => {
                self.unavailable(&e.to_string());
                false
            }
            Err(_) => {
                self.unavailable("no answer within 5 s");
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

    /// Inspects one container and sends the answer; a container the daemon does not know is
    /// left out (gone already, or not Docker's).
    async fn fetch(self: Arc<Self>, id: ContainerId) {
        let Ok(_permit) = self.limit.clone().acquire_owned().await else {
            return;
        };
        let answer =
            tokio::time::timeout(TIMEOUT, docker::inspect(&self.socket, id.as_str())).await;
        match answer {
            Ok(Ok(answer)) => {
                // The daemon answers again after an outage: say so.
                if self.status.get().contains("unavailable") {
                    self.check().await;
                }
                if let Some(meta) = answer {
                    let _ = self.updates.send((id, meta)).await;
                }
            }
            // The daemon is away; one odd answer about one container is not an outage.
            Ok(Err(docker::DockerError::Http(HttpError::Io(e)))) => {
                self.unavailable(&e.to_string())
            }
            Ok(Err(e)) => log::warn!("inspecting container {id}: {e}"),
            Err(_) => self.unavailable("no answer within 5 s"),
        }
    }

    /// Answers the pipeline's requests until it hangs up.
    async fn serve(self: Arc<Self>, mut requests: mpsc::Receiver<ContainerId>) {
        while let Some(id) = requests.recv().await {
            tokio::spawn(self.clone().fetch(id));
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
                                    let _ = self.updates.send((id.clone(), partial)).await;
                                    tokio::spawn(self.clone().fetch(id));
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

    fn docker_ref(n: u8) -> ContainerRef {
        resolve(&format!("/docker/{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    #[test]
    fn asks_once_per_container_and_only_docker() {
        let (tx, mut rx) = mpsc::channel(8);
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
    fn a_full_queue_drops_the_request_and_a_later_want_asks_again() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut cache = MetadataCache::new(Some(tx));
        let (a, b) = (docker_ref(1), docker_ref(2));
        cache.want(&a);
        cache.want(&b); // queue full
        assert_eq!(rx.try_recv().unwrap(), a.id);
        cache.want(&b);
        assert_eq!(rx.try_recv().unwrap(), b.id);
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
