//! Drop episodes: what each cgroup, and the node, lost since the last health report, as
//! `events_dropped` bodies. The kernel counts drops cumulatively (per ring and reason, and per
//! cgroup in an LRU map); this turns them into per-interval losses, each naming the cgroup (so
//! the flooding container) and saying whether it starts a new episode, the first interval
//! with drops after one without. CRS-011 alerts on each new episode.

use std::collections::{HashMap, HashSet};

use sensor_common::{DropKey, DropReason, Ring};
use sensor_proto as pb;

use crate::types::CgroupId;

/// (cgroup, ring, reason); cgroup 0 for what no cgroup was charged with.
type LossKey = (u64, u32, u32);

/// The cumulative counters seen at the last report, and which keys were losing then.
#[derive(Default)]
pub struct DropEpisodes {
    last: HashMap<LossKey, u64>,
    /// The node's unattributed totals, per (ring, reason).
    node_total: HashMap<(u32, u32), u64>,
    losing: HashSet<LossKey>,
}

/// One cgroup's (or the node's) loss in the last interval.
pub struct Loss {
    pub cgroup: CgroupId,
    pub body: pb::EventsDropped,
}

pub fn ring_name(ring: u32) -> &'static str {
    if ring == Ring::Process as u32 {
        "process"
    } else {
        "network"
    }
}

pub fn reason_name(reason: u32) -> &'static str {
    if reason == DropReason::RingFull as u32 {
        "ring_full"
    } else {
        "rate_limited"
    }
}

impl DropEpisodes {
    /// The losses since the last call, from the per-cgroup counters and each ring's totals
    /// (`(ring, reason, total)`): the part of a ring's loss no cgroup was charged with is the
    /// node's.
    pub fn since_last(
        &mut self,
        cgroups: Vec<(DropKey, u64)>,
        rings: &[(u32, u32, u64)],
    ) -> Vec<Loss> {
        let mut deltas: Vec<(LossKey, u64, u64)> = Vec::new();
        let mut now = HashMap::new();
        let mut attributed: HashMap<(u32, u32), u64> = HashMap::new();
        for (k, total) in cgroups {
            let key = (k.cgroup_id, k.ring, k.reason);
            let before = self.last.get(&key).copied().unwrap_or(0);
            // A smaller count: the LRU map evicted and re-created the entry.
            let delta = if total >= before {
                total - before
            } else {
                total
            };
            *attributed.entry((k.ring, k.reason)).or_default() += delta;
            if delta > 0 {
                deltas.push((key, delta, total));
            }
            now.insert(key, total);
        }
        for &(ring, reason, total) in rings {
            let key = (0, ring, reason);
            let before = self.last.get(&key).copied().unwrap_or(0);
            let delta = total.saturating_sub(before);
            let node = delta.saturating_sub(attributed.get(&(ring, reason)).copied().unwrap_or(0));
            now.insert(key, total);
            if node > 0 {
                let t = self.node_total.entry((ring, reason)).or_default();
                *t += node;
                deltas.push((key, node, *t));
            }
        }
        self.last = now;
        let losing: HashSet<LossKey> = deltas.iter().map(|(k, _, _)| *k).collect();
        let out = deltas
            .into_iter()
            .map(|((cgroup, ring, reason), dropped, total)| Loss {
                cgroup: CgroupId(cgroup),
                body: pb::EventsDropped {
                    cgroup_id: cgroup,
                    ring: ring_name(ring).into(),
                    reason: reason_name(reason).into(),
                    dropped,
                    total,
                    episode_start: !self.losing.contains(&(cgroup, ring, reason)),
                },
            })
            .collect();
        self.losing = losing;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64) -> DropKey {
        DropKey {
            cgroup_id,
            ring: Ring::Network as u32,
            reason: DropReason::RateLimited as u32,
        }
    }

    const NET: u32 = Ring::Network as u32;
    const LIMITED: u32 = DropReason::RateLimited as u32;

    fn summary(losses: &[Loss]) -> Vec<(u64, u64, u64, bool)> {
        let mut v: Vec<_> = losses
            .iter()
            .map(|l| {
                let b = &l.body;
                (b.cgroup_id, b.dropped, b.total, b.episode_start)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_interval_reports_its_own_losses_and_new_episodes() {
        let mut e = DropEpisodes::default();
        // Interval 1: cgroup 7 loses 10; the ring lost 12, so 2 are the node's.
        let l = e.since_last(vec![(key(7), 10)], &[(NET, LIMITED, 12)]);
        assert_eq!(summary(&l), [(0, 2, 2, true), (7, 10, 10, true)]);
        assert_eq!(l[0].body.ring, "network");
        // Interval 2: 7 keeps losing (same episode); the node lost nothing new.
        let l = e.since_last(vec![(key(7), 15)], &[(NET, LIMITED, 17)]);
        assert_eq!(summary(&l), [(7, 5, 15, false)]);
        // Interval 3: quiet.
        assert!(
            e.since_last(vec![(key(7), 15)], &[(NET, LIMITED, 17)])
                .is_empty()
        );
        // Interval 4: 7 again (a new episode), and 9 for the first time.
        let l = e.since_last(vec![(key(7), 16), (key(9), 3)], &[(NET, LIMITED, 21)]);
        assert_eq!(summary(&l), [(7, 1, 16, true), (9, 3, 3, true)]);
    }

    #[test]
    fn an_evicted_counter_that_returns_counts_from_zero() {
        let mut e = DropEpisodes::default();
        e.since_last(vec![(key(7), 100)], &[(NET, LIMITED, 100)]);
        let l = e.since_last(vec![(key(7), 4)], &[(NET, LIMITED, 104)]);
        assert_eq!(summary(&l), [(7, 4, 4, false)]);
    }
}
