//! Self-reporting: counts of what was received and lost, emitted as periodic `health` events.

use std::{collections::HashMap, time::Instant};

use sensor_common::{DropKey, DropReason, RING_COUNT, Ring};
use sensor_proto::{self as pb, event::Body};

use crate::{
    clock::{Clock, duration},
    detect::engine::RuleStats,
    drops,
    loader::{HookSpec, KernelCounters, grouped},
    types::CgroupId,
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
    /// The hook set in use ("fentry", "kprobe", "tracepoint" or "syscall").
    pub hook_set: &'a str,
    /// Rules blind with this hook set, with the kinds they miss.
    pub blind_rules: Vec<String>,
    /// The container a cgroup belongs to, if any.
    pub container_of: &'a dyn Fn(CgroupId) -> Option<String>,
    /// The runtime API's status line (container names, images, labels).
    pub runtime_api: String,
    /// What became of the inspects asked of it.
    pub runtime_requests: pb::RuntimeRequests,
    /// The detection engine's per-rule state.
    pub rules: Vec<RuleStats>,
    /// The enrichment tables' sizes and bounds.
    pub tables: Vec<pb::TableHealth>,
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
        .map(|(hook, name, attach)| {
            let by_reason = counters.hook_errors(hook as u32);
            pb::HookHealth {
                hook: name.into(),
                attach,
                errors: by_reason.iter().map(|(_, n)| n).sum(),
                errors_by_reason: by_reason
                    .into_iter()
                    .map(|(why, n)| (why.name().to_string(), n))
                    .collect(),
            }
        })
        .collect();
    let dropped_total = rings.iter().map(|r| r.dropped).sum();
    let cgroup_drops = cgroup_drops(counters.cgroup_drops(), setup.container_of);
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
        runtime_requests: Some(setup.runtime_requests),
        tables: setup.tables,
        blind_rules: setup.blind_rules,
        cgroup_drops,
        rules: setup
            .rules
            .into_iter()
            .filter(|r| r.keys + r.evicted + r.throttled + r.suppressed > 0)
            .map(|r| pb::RuleHealth {
                rule_id: r.rule_id,
                keys: r.keys,
                evicted: r.evicted,
                throttled: r.throttled,
                suppressed: r.suppressed,
            })
            .collect(),
    }))
}

/// How many cgroups a health event names.
const CGROUP_DROPS_REPORTED: usize = 20;

/// The cgroups that lost the most records, named by container.
fn cgroup_drops(
    mut drops: Vec<(DropKey, u64)>,
    container_of: &dyn Fn(CgroupId) -> Option<String>,
) -> Vec<pb::CgroupDrops> {
    drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cgroup_id.cmp(&b.0.cgroup_id)));
    drops
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .take(CGROUP_DROPS_REPORTED)
        .map(|(key, dropped)| pb::CgroupDrops {
            cgroup_id: key.cgroup_id,
            container_id: container_of(CgroupId(key.cgroup_id)).unwrap_or_default(),
            ring: drops::ring_name(key.ring).into(),
            reason: drops::reason_name(key.reason).into(),
            dropped,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroups_that_lost_most_come_first_named_by_container() {
        let key = |cgroup_id, ring: Ring, reason: DropReason| DropKey {
            cgroup_id,
            ring: ring as u32,
            reason: reason as u32,
        };
        let drops = vec![
            (key(7, Ring::Network, DropReason::RateLimited), 5),
            (key(9, Ring::Process, DropReason::RateLimited), 50),
            (key(8, Ring::Process, DropReason::RingFull), 0),
        ];
        let named = |c: CgroupId| (c.0 == 9).then(|| "c9".to_string());
        let out = cgroup_drops(drops, &named);
        let summary: Vec<(u64, &str, &str, &str, u64)> = out
            .iter()
            .map(|d| {
                (
                    d.cgroup_id,
                    d.container_id.as_str(),
                    d.ring.as_str(),
                    d.reason.as_str(),
                    d.dropped,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (9, "c9", "process", "rate_limited", 50),
                (7, "", "network", "rate_limited", 5)
            ]
        );
    }
}
