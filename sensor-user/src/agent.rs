//! `sensor run`: load, drain, decode, enrich, detect, deliver, until SIGINT or SIGTERM.
//!
//! One task owns the way from ring buffers to delivery, so events of a ring leave in the order the
//! kernel reserved them. Rings are drained through epoll (`AsyncFd`), never by busy polling; the
//! traffic and ICMP aggregates are read on their own interval.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use sensor_common::{FilterConfig, RING_WAKE_GAP_NS, Ring};
use sensor_proto as pb;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    clock::Clock,
    decode,
    deliver::{Delivery, DeliveryConfig},
    detect::{
        catalog,
        engine::{AlertCap, Engine},
        learn,
        rule::CompiledRule,
    },
    drops::DropEpisodes,
    enrich::{
        Enricher,
        container_id::ContainerId,
        holdback::Holdback,
        kernel_view,
        runtime::{ContainerMeta, RuntimeApi},
    },
    health::{Setup, Stats, health_event},
    loader::{
        AggregationMaps, FALLBACK_ADVICE, HostCgroupFilter, KernelCounters, LoadOptions,
        LoadedSensor, RepeatWindows,
    },
    privileges, trust,
};

/// Options of `sensor run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub health_interval: Duration,
    /// How often traffic and ICMP aggregates are read and reported.
    pub flow_interval: Duration,
    pub load: LoadOptions,
    pub node: String,
    /// gRPC, spool, OTLP and metrics (`deliver`).
    pub delivery: DeliveryConfig,
    /// Rules that extend or override the embedded catalog (by id); reloaded on SIGHUP.
    pub rules_dir: Option<std::path::PathBuf>,
    /// The runtime APIs asked for container and pod names, images and labels.
    pub runtime_sockets: crate::enrich::runtime::Sockets,
    /// Where what rules learn is kept across restarts (`learned.json`).
    pub state_dir: std::path::PathBuf,
    /// Alerts per rule and container per period before "N more like this".
    pub alert_cap: AlertCap,
}

impl RunOptions {
    /// Defaults for `node`, as `sensor run` with no flags uses them.
    pub fn new(node: String) -> Self {
        Self {
            health_interval: Duration::from_secs(10),
            flow_interval: Duration::from_secs(5),
            load: LoadOptions {
                filter: FilterConfig::default_const(),
                ..LoadOptions::default()
            },
            delivery: DeliveryConfig {
                json_out: Some("-".into()),
                ..DeliveryConfig::new(node.clone())
            },
            rules_dir: None,
            runtime_sockets: Default::default(),
            state_dir: "/var/lib/sensor".into(),
            alert_cap: AlertCap::default(),
            node,
        }
    }
}

/// Events, numbered, counted, and handed to the delivery layer.
struct Emitter {
    seq: u64,
    stats: Stats,
    delivery: Delivery,
    engine: Engine,
    /// Where the engine's learning is saved.
    learned_path: std::path::PathBuf,
    node: String,
    /// Alerts raised since the last [`Emitter::commit`].
    pending: Vec<pb::Alert>,
    spool: SpoolState,
}

/// Whether the alert spool is failing, to raise `spool_failing` once per episode, and what it
/// evicted unexported, to raise `spool_evicted` when that grows.
#[derive(Default)]
struct SpoolState {
    failing: bool,
    /// Alerts not spooled since start.
    unspooled: u64,
    /// Unexported alerts evicted since start, as last reported.
    lost: u64,
}

impl Emitter {
    fn emit(&mut self, mut event: pb::Event) {
        self.seq += 1;
        event.seq = self.seq;
        self.stats.count_event(&event.kind);
        self.delivery.publish_event(&event);
        for alert in self.engine.on_event(&event) {
            self.alert(alert);
        }
        if matches!(event.body, Some(pb::event::Body::Health(_))) {
            self.delivery.update_health(event);
        }
    }

    /// Queues an alert for the next [`Self::commit`].
    fn alert(&mut self, alert: pb::Alert) {
        self.stats.count_event("alert");
        self.pending.push(alert);
    }

    /// Spools and delivers the alerts raised since the last call as one group commit (one
    /// fdatasync for all). A spool failure is never fatal: the alerts go out live, unnumbered,
    /// and the first failure of an episode is logged and raises a `spool_failing` event (rule
    /// CRS-020), itself delivered live. A commit that made the spool evict alerts the OTLP
    /// exporter had not sent raises a `spool_evicted` event (rule CRS-021). Then the queued
    /// JSON lines go to their writer if they are due.
    fn commit(&mut self) {
        self.commit_alerts();
        self.delivery.flush_json();
    }

    fn commit_alerts(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let alerts = std::mem::take(&mut self.pending);
        let count = alerts.len() as u64;
        match self.delivery.publish_alerts(alerts) {
            Ok(_) if self.spool.failing => {
                self.spool.failing = false;
                log::warn!(
                    "alert spool writes again; {} alerts since start were delivered live only",
                    self.spool.unspooled
                );
            }
            Ok(_) => self.report_unexported_evictions(),
            Err(e) => {
                self.spool.unspooled += count;
                if !std::mem::replace(&mut self.spool.failing, true) {
                    log::error!(
                        "{count} alert(s) delivered live only, not spooled (not replayable, not \
                         exported) until the spool writes again: {e:#}"
                    );
                    let failing = pb::SpoolFailing {
                        error: format!("{e:#}"),
                        unspooled_total: self.spool.unspooled,
                    };
                    self.raise_about_node(pb::event::Body::SpoolFailing(failing));
                }
            }
        }
    }

    /// Raises `spool_evicted` when the spool evicted unexported alerts since the last call.
    fn report_unexported_evictions(&mut self) {
        let mut evicted = self.delivery.unexported_evictions();
        if evicted.lost_total <= self.spool.lost {
            return;
        }
        evicted.lost =
            evicted.lost_total - std::mem::replace(&mut self.spool.lost, evicted.lost_total);
        log::error!(
            "alert spool: {} alerts evicted before the OTLP exporter sent them ({} since start; \
             the collector acknowledged up to {}): raise --spool-max-mb or fix the collector",
            evicted.lost,
            evicted.lost_total,
            evicted.exported_seq
        );
        self.raise_about_node(pb::event::Body::SpoolEvicted(evicted));
    }

    /// Emits an event about the node itself (the agent's own delivery) and commits what it
    /// raised at once.
    fn raise_about_node(&mut self, body: pb::event::Body) {
        let event = pb::Event {
            time: Some(crate::deliver::timestamp(std::time::SystemTime::now())),
            node: self.node.clone(),
            ..Default::default()
        }
        .with_body(body);
        self.emit(event);
        self.commit();
    }

    /// The "N more like this" alerts of cap periods that ended: reported even when the flood
    /// that filled them stopped.
    fn flush_held_alerts(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for alert in self.engine.tick(now) {
            self.alert(alert);
        }
    }

    /// Saves what the rules learned, when they learned something since the last save.
    fn save_learning(&mut self) {
        if self.engine.learned_changed()
            && let Err(e) = learn::save(&self.learned_path, &self.engine.learned())
        {
            log::warn!("learned rule state not saved: {e:#}");
        }
    }

    /// Replaces the rules with a new set, or keeps the current one when the new one fails.
    fn reload_rules(&mut self, dir: Option<&std::path::Path>) {
        match load_rules(dir) {
            Ok(rules) => {
                let version = catalog::version(&rules);
                let count = rules.len();
                self.delivery.set_rules(rule_infos(&rules), version.clone());
                let reloaded = self.engine.reload(rules, version.clone());
                eprintln!(
                    "sensor: reloaded {count} rules (version {version}); state kept for {}, \
                     started over for changed [{}], new [{}]",
                    reloaded.kept,
                    reloaded.changed.join(", "),
                    reloaded.added.join(", ")
                );
            }
            Err(e) => eprintln!("sensor: rule reload failed, keeping the current rules: {e:#}"),
        }
    }
}

/// The embedded rules and those of `dir`, which must be as privileged as the agent.
fn load_rules(dir: Option<&std::path::Path>) -> Result<Vec<CompiledRule>> {
    if let Some(dir) = dir {
        trust::ensure_trusted_tree(dir, "--rules directory")?;
    }
    catalog::load(dir)
}

/// The rule list the gRPC API shows.
fn rule_infos(rules: &[CompiledRule]) -> Vec<pb::RuleInfo> {
    rules
        .iter()
        .map(|r| pb::RuleInfo {
            id: r.doc.id.clone(),
            name: r.doc.name.clone(),
            severity: r.doc.severity as i32,
            techniques: r.doc.attack.techniques.clone(),
            tactics: vec![r.doc.attack.tactic.clone()],
            description: r.doc.goal.trim().to_string(),
            enabled: r.doc.enabled,
        })
        .collect()
}

/// Everything the loop owns besides the rings.
struct Pipeline {
    enricher: Enricher,
    out: Emitter,
    host_filter: HostCgroupFilter,
    batch: Vec<pb::Event>,
    /// New containers' events waiting for their runtime's answer.
    holdback: Holdback,
}

impl Pipeline {
    /// Drains both rings and handles their records in kernel-timestamp order, so a connect is
    /// never seen before the exec that preceded it, nor after its container's exit.
    fn drain(&mut self, proc: &mut RingBuf<MapData>, net: &mut RingBuf<MapData>) -> Drained {
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        for (ring, which) in [(proc, Ring::Process), (net, Ring::Network)] {
            while let Some(item) = ring.next() {
                self.out.stats.received[which as usize] += 1;
                records.push((decode::timestamp(&item), item.to_vec()));
            }
        }
        // Stable: records of one ring keep their order when timestamps tie.
        records.sort_by_key(|(t, _)| *t);
        let drained = records.len();
        for (_, bytes) in records {
            match decode::decode(&bytes) {
                Ok(record) => self.enricher.handle(record, &mut self.batch),
                Err(err) => {
                    self.out.stats.decode_errors += 1;
                    if self.out.stats.decode_errors == 1 {
                        log::warn!("dropping undecodable record: {err}");
                    }
                }
            }
            self.flush_batch();
        }
        Drained {
            records: drained,
            netns_ready: self.enricher.take_netns_ready(),
        }
    }

    /// Emits the batch's events, but holds those of containers whose runtime has not answered
    /// yet ([`holdback`](crate::enrich::holdback)).
    fn flush_batch(&mut self) {
        // Taken and put back, so the batch keeps its capacity.
        let mut batch = std::mem::take(&mut self.batch);
        for event in batch.drain(..) {
            // Looked up by the id as the event spells it: no allocation for the common case.
            let waiting = event
                .container
                .as_ref()
                .map(|c| c.id.as_str())
                .filter(|id| self.holdback.is_holding(id) || self.enricher.awaits_metadata(id));
            let event = match waiting.and_then(ContainerId::from_oci) {
                Some(id) => self.holdback.hold(&id, event),
                None => Some(event),
            };
            if let Some(event) = event {
                self.out.emit(event);
            }
        }
        self.batch = batch;
    }

    /// The runtime's answer about `id`: its held events go out, named.
    fn runtime_metadata(&mut self, id: ContainerId, meta: ContainerMeta) {
        self.enricher.runtime_metadata(id.clone(), meta);
        let held = self.holdback.release(id.as_str());
        self.emit_held(held);
    }

    /// Held events past their deadline (all with `all`) go out with what is known by now.
    fn release_held(&mut self, all: bool) {
        let held = self.holdback.expired(all);
        self.emit_held(held);
    }

    fn emit_held(&mut self, events: Vec<pb::Event>) {
        for mut event in events {
            if let Some(c) = event.container.as_mut() {
                self.enricher.apply_metadata(c);
            }
            self.out.emit(event);
        }
    }

    /// Tells the kernel which cgroups are the host's (their network activity is filtered) and
    /// which are containers' (their packets run the traffic programs).
    fn apply_cgroups(&mut self, sensor: &mut LoadedSensor) {
        for (cgroup, host) in self.enricher.take_host_cgroup_updates() {
            if host {
                if let Err(e) = self.host_filter.mark_host(cgroup.0) {
                    log::warn!("{e:#}");
                }
            } else {
                self.host_filter.forget(cgroup.0);
            }
        }
        for (dir, started) in self.enricher.take_container_cgroup_updates() {
            if !started {
                sensor.unwatch_traffic(&dir);
            } else if let Err(e) = sensor.watch_traffic(&dir) {
                // Quiet when the cgroup is gone already (a container that lived milliseconds).
                let gone = e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                });
                if !gone {
                    log::warn!("traffic of container cgroup {dir} not counted: {e:#}");
                }
            }
        }
    }

    /// After a drain: container cgroups are applied, a new container's routed link (or bridge)
    /// is watched from its first packet, and when the drain found records, the rings are
    /// drained again [`RING_WAKE_GAP_NS`] later for the records the kernel submitted meanwhile
    /// without waking us.
    fn after_drain(&mut self, drained: &Drained, sensor: &mut LoadedSensor, recheck: &mut Recheck) {
        self.apply_cgroups(sensor);
        if drained.netns_ready {
            for error in sensor.sync_interfaces() {
                log::warn!("{error}");
            }
        }
        if drained.records > 0 {
            recheck.arm();
        }
    }

    /// One `events_dropped` event per cgroup (and for the node) that lost records since the
    /// last health report.
    fn report_losses(&mut self, counters: &KernelCounters, episodes: &mut DropEpisodes) {
        for loss in episodes.since_last(counters.cgroup_drops(), &counters.ring_totals()) {
            for event in self.enricher.dropped(loss.cgroup, loss.body) {
                self.out.emit(event);
            }
        }
    }

    fn aggregates(
        &mut self,
        maps: &AggregationMaps,
        interfaces: &std::collections::HashMap<u32, String>,
    ) {
        self.enricher.aggregates(
            maps.snapshot(),
            interfaces,
            Clock::boot_now(),
            &mut self.batch,
        );
        self.flush_batch();
    }

    /// The repeats of the windows that ended with no report to carry them (with `all`, of
    /// every window, ended or not).
    fn ended_windows(&mut self, windows: &mut RepeatWindows, all: bool) {
        let now = Clock::boot_now();
        match windows.take_ended(if all { u64::MAX } else { now.0 }) {
            Ok(ended) => {
                for window in &ended {
                    self.enricher.ended_window(window, now, &mut self.batch);
                }
            }
            Err(e) => log::warn!("repeat windows not read: {e:#}"),
        }
        self.flush_batch();
    }
}

/// What one drain of the rings found.
struct Drained {
    records: usize,
    /// A container's first process ran: its network links exist now.
    netns_ready: bool,
}

/// A ring registered with epoll.
fn watch(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until it is dropped
    // together with the AsyncFd.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering a ring buffer with epoll")
}

/// The drain [`RING_WAKE_GAP_NS`] after one that found records, for the records the kernel
/// submitted meanwhile without waking the agent. Armed explicitly: a deadline that passed while
/// another branch of the loop won the race is still owed its drain (`Sleep::is_elapsed` calls it
/// done, and the ring, whose kernel side wakes only a consumer that has caught up, then filled
/// unread until the health tick: an exec storm lost thousands of records to `ring_full`).
struct Recheck {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Recheck {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    fn arm(&mut self) {
        let at = tokio::time::Instant::now() + Duration::from_nanos(RING_WAKE_GAP_NS);
        self.sleep.as_mut().reset(at);
        self.armed = true;
    }
}

pub async fn run(opts: RunOptions) -> Result<()> {
    privileges::require_root("sensor run")?;
    // Before anything is announced: a Ctrl-C right after the ready line still stops cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let started = Instant::now();
    let clock = Clock::new();
    // First: a socket or spool that cannot be used fails the start before any program loads.
    // A broken or untrusted rule directory stops the start, before anything is attached; so
    // does a state directory others could write (what rules learned is kept there).
    let rules = load_rules(opts.rules_dir.as_deref())?;
    trust::create_private_dir(&opts.state_dir)?;
    trust::ensure_trusted(&opts.state_dir, "state directory (--state-dir)")?;
    let rules_version = catalog::version(&rules);
    let delivery = Delivery::start(opts.delivery.clone()).await?;
    delivery.set_rules(rule_infos(&rules), rules_version.clone());
    // Asked before the programs load, so containers created from now on are inspected early.
    let mut runtime = RuntimeApi::start(&opts.runtime_sockets).await;
    let runtime_status = runtime.status.clone();
    let runtime_stats = runtime.stats.clone();
    for warning in runtime_status.warnings() {
        eprintln!("sensor: warning: {warning}");
    }
    let mut sensor = LoadedSensor::load(&opts.load)?;
    let proc_ring = sensor.take_proc_ring()?;
    let net_ring = sensor.take_net_ring()?;
    let counters = sensor.take_counters()?;
    let aggregation = sensor.take_aggregation()?;
    let mut self_filter = sensor.take_self_filter()?;
    let repeat_ms = opts.load.filter.net_repeat_ms;
    let mut repeat_windows = sensor.take_repeat_windows(u64::from(repeat_ms) * 1_000_000)?;
    let attached_in = started.elapsed();

    // Hooks are attached before the scans, so nothing falls between scan and first record.
    let mut engine = Engine::new(rules, rules_version).with_cap(opts.alert_cap);
    let learned_path = opts.state_dir.join(learn::LEARNED_FILE);
    match learn::load(&learned_path) {
        Ok(saved) => engine.restore_learned(saved),
        Err(e) => eprintln!("sensor: warning: starting to learn afresh: {e:#}"),
    }
    let mut enricher = Enricher::new(clock, opts.node.clone());
    enricher.set_runtime_requests(runtime.requests.take());
    let mut p = Pipeline {
        enricher,
        out: Emitter {
            seq: 0,
            stats: Stats::default(),
            delivery,
            engine,
            learned_path,
            node: opts.node.clone(),
            pending: Vec::new(),
            spool: SpoolState::default(),
        },
        host_filter: sensor.take_host_filter()?,
        batch: Vec::new(),
        holdback: Holdback::default(),
    };
    for event in p.enricher.bootstrap() {
        p.out.emit(event);
    }
    p.apply_cgroups(&mut sensor);
    let hook_set = sensor.hook_set.to_string();
    let missing = sensor.hook_set.blind_kinds();
    let hooks = sensor.hooks.clone();
    let health = |p: &Pipeline| {
        let setup = Setup {
            hooks: &hooks,
            hook_set: &hook_set,
            blind_rules: p.out.engine.blind_rules(missing),
            runtime_api: runtime_status.get(),
            runtime_requests: {
                let held = p.holdback.stats();
                pb::RuntimeRequests {
                    held_events: held.held,
                    held_unnamed: held.unnamed,
                    ..runtime_stats.snapshot()
                }
            },
            rules: p.out.engine.stats(),
            tables: p.enricher.tables(),
            container_of: &|cgroup| p.enricher.container_id_of(cgroup),
        };
        health_event(started, &counters, setup, &p.out.stats, &clock, &opts.node)
    };
    p.out.emit(health(&p));
    p.out.commit();
    let blind = p.out.engine.blind_rules(missing);
    if !blind.is_empty() {
        eprintln!(
            "sensor: warning: blind on this kernel without the syscall fallback: {}; {FALLBACK_ADVICE}",
            blind.join("; ")
        );
    }
    eprintln!(
        "sensor: {} programs attached in {} ms (hook set: {}), ready in {} ms ({} processes, {} \
         containers known); writing JSON lines to {}; serving {}",
        sensor.hooks.len(),
        attached_in.as_millis(),
        sensor.hook_set,
        started.elapsed().as_millis(),
        p.enricher.process_count(),
        p.enricher.container_count(),
        p.out.delivery.json_target().unwrap_or("nowhere"),
        p.out.delivery.endpoints(),
    );

    let mut proc_ring = watch(proc_ring)?;
    let mut net_ring = watch(net_ring)?;
    let mut rules_stamp = opts.rules_dir.as_deref().and_then(catalog::dir_stamp);
    let tick = |d: Duration| tokio::time::interval_at(tokio::time::Instant::now() + d, d);
    let (mut health_tick, mut flow_tick) = (tick(opts.health_interval), tick(opts.flow_interval));
    // Once a window: the repeats of windows that ended with no report to carry them.
    let mut repeat_tick = tick(Duration::from_millis(u64::from(repeat_ms.max(100))));
    let mut episodes = DropEpisodes::default();
    let mut kernel_views =
        kernel_view::spawn(crate::cgroupfs::cgroup2_mount(), opts.health_interval);
    let mut recheck = Recheck::new();
    loop {
        let hold_due = p.holdback.next_deadline();
        let held_until = hold_due.map_or_else(tokio::time::Instant::now, Into::into);
        let json_due = p.out.delivery.json_due();
        let json_until = json_due.map_or_else(tokio::time::Instant::now, Into::into);
        tokio::select! {
            // Re-arm before draining: a record committed after our last read then wakes us
            // again. (Clearing after draining can lose that wakeup, and the kernel only notifies
            // a consumer that has caught up, so the ring would go quiet.)
            guard = proc_ring.readable_mut() => {
                let mut guard = guard.context("waiting for the process ring")?;
                guard.clear_ready();
                let drained = p.drain(guard.get_inner_mut(), net_ring.get_mut());
                drop(guard);
                p.after_drain(&drained, &mut sensor, &mut recheck);
            }
            guard = net_ring.readable_mut() => {
                let mut guard = guard.context("waiting for the network ring")?;
                guard.clear_ready();
                let drained = p.drain(proc_ring.get_mut(), guard.get_inner_mut());
                drop(guard);
                p.after_drain(&drained, &mut sensor, &mut recheck);
            }
            // Records the kernel submitted without a wakeup (RING_WAKE_GAP_NS).
            () = recheck.sleep.as_mut(), if recheck.armed => {
                recheck.armed = false;
                let drained = p.drain(proc_ring.get_mut(), net_ring.get_mut());
                p.after_drain(&drained, &mut sensor, &mut recheck);
            }
            _ = flow_tick.tick() => {
                // The rings first: an aggregate names a cgroup id, resolved through the cgroups
                // and containers the rings announced (after a stall both are due at once).
                let drained = p.drain(proc_ring.get_mut(), net_ring.get_mut());
                p.after_drain(&drained, &mut sensor, &mut recheck);
                for error in sensor.sync_interfaces() {
                    log::warn!("{error}");
                }
                p.aggregates(&aggregation, sensor.interface_names());
            }
            _ = repeat_tick.tick(), if repeat_ms > 0 => {
                // The rings first: a report in them took its window's count already.
                let drained = p.drain(proc_ring.get_mut(), net_ring.get_mut());
                p.after_drain(&drained, &mut sensor, &mut recheck);
                p.ended_windows(&mut repeat_windows, false);
            }
            _ = health_tick.tick() => {
                // Backstop for a missed wakeup: never leave records waiting longer than a tick.
                let drained = p.drain(proc_ring.get_mut(), net_ring.get_mut());
                p.after_drain(&drained, &mut sensor, &mut recheck);
                if let Err(e) = self_filter.refresh() {
                    log::warn!("{e:#}");
                }
                // Rule files changed on disk: reload as SIGHUP would.
                if let Some(dir) = opts.rules_dir.as_deref() {
                    let stamp = catalog::dir_stamp(dir);
                    if stamp != rules_stamp {
                        rules_stamp = stamp;
                        p.out.reload_rules(Some(dir));
                    }
                }
                p.out.flush_held_alerts();
                p.report_losses(&counters, &mut episodes);
                p.out.emit(health(&p));
                p.out.save_learning();
            }
            Some((id, meta)) = runtime.updates.recv() => p.runtime_metadata(id, meta),
            () = tokio::time::sleep_until(held_until), if hold_due.is_some() => p.release_held(false),
            // Queued JSON lines due at their writer: the commit below hands them over.
            () = tokio::time::sleep_until(json_until), if json_due.is_some() => {}
            Some(view) = kernel_views.recv() => {
                // What the rings hold first: their exits and rmdirs are better than a prune.
                let drained = p.drain(proc_ring.get_mut(), net_ring.get_mut());
                p.after_drain(&drained, &mut sensor, &mut recheck);
                for event in p.enricher.apply_view(&view) {
                    p.out.emit(event);
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => p.out.reload_rules(opts.rules_dir.as_deref()),
        }
        // What this turn raised: one group commit.
        p.out.commit();
    }
    // Whatever is still in the rings and maps, then a last health report.
    p.drain(proc_ring.get_mut(), net_ring.get_mut());
    // Every window's count, ended or not.
    p.ended_windows(&mut repeat_windows, true);
    p.release_held(true);
    p.aggregates(&aggregation, sensor.interface_names());
    p.report_losses(&counters, &mut episodes);
    p.out.emit(health(&p));
    p.out.commit();
    p.out.save_learning();
    p.out.delivery.shutdown().await;
    let events = p.out.seq;
    drop(sensor);
    eprintln!("sensor: stopped after {events} events; all hooks detached");
    Ok(())
}
