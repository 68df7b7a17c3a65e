//! A new container's first events, held until its runtime names it.
//!
//! Docker announces a container (name, image, labels) before its first process runs; other
//! runtimes answer only once their start call is over (podman's inspect waits for the start,
//! its file events backend is polled) or a few milliseconds after the first process (CRI),
//! so a container's first exec, the one a backdoor alert is raised on, would go out unnamed.
//! The pipeline therefore holds the events of a container whose runtime was asked about it
//! and has not answered yet, for at most [`HOLD`], and releases them in order, named, when the
//! answer arrives; at the deadline they go out as they are. Events of other containers are
//! not delayed, and nothing is held for a container whose runtime has no API or was answered.
//!
//! Bounded: at most [`MAX_PER_CONTAINER`] events per container and [`MAX_HELD`] in all; beyond
//! that an event goes out at once. What was held, and what went out unnamed at the deadline, is
//! counted (`Health.runtime_requests.held_events`, `.held_unnamed`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sensor_proto as pb;

use super::container_id::ContainerId;

/// The longest an event waits for its container's runtime to answer.
pub const HOLD: Duration = Duration::from_secs(1);
const MAX_PER_CONTAINER: usize = 256;
const MAX_HELD: usize = 4096;

/// Events held since start, and those released at the deadline without the runtime's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldStats {
    pub held: u64,
    pub unnamed: u64,
}

/// Held events by container; see the module doc.
#[derive(Default)]
pub struct Holdback {
    held: HashMap<ContainerId, (Instant, Vec<pb::Event>)>,
    total: usize,
    stats: HoldStats,
}

impl Holdback {
    /// Whether events of `id` are waiting (so later ones must wait behind them).
    pub fn is_holding(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// Holds `event` of container `id`; gives it back when the bounds are reached.
    pub fn hold(&mut self, id: &ContainerId, event: pb::Event) -> Option<pb::Event> {
        if self.total >= MAX_HELD {
            return Some(event);
        }
        let (_, events) = self
            .held
            .entry(id.clone())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        if events.len() >= MAX_PER_CONTAINER {
            return Some(event);
        }
        events.push(event);
        self.total += 1;
        self.stats.held += 1;
        None
    }

    /// The events of `id`, in order: its runtime answered.
    pub fn release(&mut self, id: &str) -> Vec<pb::Event> {
        let events = self.held.remove(id).map(|(_, e)| e).unwrap_or_default();
        self.total -= events.len();
        events
    }

    /// The events held [`HOLD`] or longer (all of them with `all`), oldest container first.
    pub fn expired(&mut self, all: bool) -> Vec<pb::Event> {
        let now = Instant::now();
        let mut due: Vec<(Instant, ContainerId)> = self
            .held
            .iter()
            .filter(|(_, (since, _))| all || now.duration_since(*since) >= HOLD)
            .map(|(id, (since, _))| (*since, id.clone()))
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, id) in due {
            let events = self.release(id.as_str());
            self.stats.unnamed += events.len() as u64;
            out.extend(events);
        }
        out
    }

    /// When the oldest held events are due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|(since, _)| *since + HOLD).min()
    }

    pub fn stats(&self) -> HoldStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContainerId {
        ContainerId::from_oci(&format!("{n:02x}").repeat(32)).unwrap()
    }

    fn event(seq: u64) -> pb::Event {
        pb::Event {
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn held_events_come_back_in_order_and_are_counted() {
        let mut h = Holdback::default();
        let (a, b) = (id(1), id(2));
        assert!(h.hold(&a, event(1)).is_none());
        assert!(h.hold(&b, event(2)).is_none());
        assert!(h.hold(&a, event(3)).is_none());
        assert!(h.is_holding(a.as_str()));
        let seqs: Vec<u64> = h.release(a.as_str()).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert!(!h.is_holding(a.as_str()));
        assert!(h.expired(false).is_empty(), "b is not due yet");
        assert!(h.next_deadline().is_some());
        assert_eq!(h.expired(true).len(), 1);
        assert_eq!(
            h.stats(),
            HoldStats {
                held: 3,
                unnamed: 1
            }
        );
        assert!(h.next_deadline().is_none());
    }

    #[test]
    fn a_flooding_container_is_not_held_beyond_its_bound() {
        let mut h = Holdback::default();
        let a = id(1);
        for seq in 0..MAX_PER_CONTAINER as u64 {
            assert!(h.hold(&a, event(seq)).is_none());
        }
        assert!(h.hold(&a, event(9999)).is_some(), "given back at once");
        assert_eq!(h.release(a.as_str()).len(), MAX_PER_CONTAINER);
    }
}
