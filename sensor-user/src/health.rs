//! Self-reporting: counts of what was received and lost, emitted as periodic `health` events.

use std::{collections::HashMap, time::Instant};

use sensor_common::Ring;
use sensor_proto::{self as pb, event::Body};

use crate::{
    clock::{Clock, duration},
    loader::{HookSpec, KernelCounters},
};

/// What user space counted.
#[derive(Default)]
pub struct Stats {
    pub events_by_kind: HashMap<String, u64>,
    pub decode_errors: u64,
    pub received_proc: u64,
}

impl Stats {
    pub fn count_event(&mut self, kind: &str) {
        *self.events_by_kind.entry(kind.to_string()).or_default() += 1;
    }
}

/// A `health` event from the kernel counters and `stats`.
pub fn health_event(
    started: Instant,
    counters: &KernelCounters,
    hooks: &[HookSpec],
    stats: &Stats,
    clock: &Clock,
    node: &str,
) -> pb::Event {
    let rings = vec![pb::RingHealth {
        ring: "process".into(),
        dropped: counters.ring_drops(Ring::Process as u32),
        received: stats.received_proc,
    }];
    let hooks = hooks
        .iter()
        .map(|h| pb::HookHealth {
            hook: h.name.into(),
            attach: h.attach.to_string(),
            errors: counters.hook_errors(h.hook as u32),
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
    }))
}
