//! Self-reporting: counts of what was received and lost, emitted as periodic `health` events.

use std::{collections::HashMap, time::Instant};

use sensor_common::{DropReason, RING_COUNT, Ring};
use sensor_proto::{self as pb, event::Body};

use crate::{
    clock::{Clock, duration},
    loader::{HookSpec, KernelCounters, grouped},
};

/// What user space counted.
#[derive(Default)]
pub struct Stats {
    pub events_by_kind: HashMap<String, u64>,
    pub decode_errors: u64,
    /// Records received, per [`Ring`].
    pub received: [u64; RING_COUNT as usize],
}

impl Stats {
    pub fn count_event(&mut self, kind: &str) {
        *self.events_by_kind.entry(kind.to_string()).or_default() += 1;
    }
}

/// What the agent runs with: reported as is in every `health` event.
pub struct Setup<'a> {
    pub hooks: &'a [HookSpec],
    /// The hook set ("default" or "syscall").
    pub hook_set: &'a str,
    /// Rules blind with this hook set, with the kinds they miss.
    pub blind_rules: Vec<String>,
    /// The runtime API's status line (container names, images, labels).
    pub runtime_api: String,
}

/// A `health` event from the kernel counters and `stats`.
pub fn health_event(
    started: Instant,
    counters: &KernelCounters,
    setup: Setup,
    stats: &Stats,
    clock: &Clock,
    node: &str,
) -> pb::Event {
    let rings = [(Ring::Process, "process"), (Ring::Network, "network")]
        .into_iter()
        .map(|(ring, name)| {
            let full = counters.ring_drops(ring as u32, DropReason::RingFull);
            let limited = counters.ring_drops(ring as u32, DropReason::RateLimited);
            pb::RingHealth {
                ring: name.into(),
                dropped: full + limited,
                received: stats.received[ring as usize],
                dropped_ring_full: full,
                dropped_rate_limited: limited,
            }
        })
        .collect::<Vec<_>>();
    let hooks = grouped(setup.hooks)
        .into_iter()
        .map(|(hook, name, attach)| pb::HookHealth {
            hook: name.into(),
            attach,
            errors: counters.hook_errors(hook as u32),
        })
        .collect();
    let dropped_total = rings.iter().map(|r| r.dropped).sum();
    pb::Event {
        time: Some(clock.timestamp(Clock::boot_now())),
        node: node.to_string(),
        ..Default::default()
    }
    .with_body(Body::Health(pb::Health {
        uptime: Some(duration(started.elapsed())),
        rings,
        hooks,
        events_by_kind: stats.events_by_kind.clone(),
        decode_errors: stats.decode_errors,
        dropped_total,
        hook_set: setup.hook_set.to_string(),
        runtime_api: setup.runtime_api,
        blind_rules: setup.blind_rules,
    }))
}
