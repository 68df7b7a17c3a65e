//! `lifetime` rules: a container that exits less than `max_lifetime_ms` after it started,
//! having done something notable (the rule's `notable` condition, or another rule's alert
//! about it); the alert is raised at its exit and lists what it did.

use sensor_proto::{self as pb, event::Body};

use super::{excepted, keys::KeyTable, matches};
use crate::detect::{condition::Fields, rule::CompiledRule};

/// Events kept as evidence per tracked container.
const MAX_EVIDENCE: usize = 8;

/// What a container did that a lifetime rule finds notable.
#[derive(Default)]
pub struct Activity {
    evidence: Vec<pb::Event>,
    count: usize,
}

impl Activity {
    /// Counts `event` (once, however many rules it raised) and keeps it as evidence.
    pub fn note(&mut self, event: &pb::Event) {
        if self.evidence.last() == Some(event) {
            return;
        }
        self.count += 1;
        if self.evidence.len() < MAX_EVIDENCE {
            self.evidence.push(event.clone());
        }
    }
}

/// Tracks notable activity per container; fires at a short-lived container's exit.
pub fn observe(
    rule: &CompiledRule,
    activity: &mut KeyTable<Activity>,
    view: &dyn Fields,
    event: &pb::Event,
    max_ms: u64,
) -> Option<Vec<pb::Event>> {
    let container = event.container.as_ref()?.id.as_str();
    if let Some(Body::ContainerExited(exited)) = &event.body {
        let did = activity.remove(container)?;
        // The exit carries everything the runtime said about the container, which its first
        // events may have lacked: an exception by image, name or label applies here too.
        if excepted(rule, view) {
            return None;
        }
        let lived_ms = exited
            .lifetime
            .as_ref()
            .map(|d| d.seconds as u64 * 1000 + d.nanos as u64 / 1_000_000)?;
        if lived_ms >= max_ms || did.count == 0 {
            return None;
        }
        let mut evidence = did.evidence;
        evidence.push(event.clone());
        return Some(evidence);
    }
    if matches(rule, view) {
        activity
            .entry(container, container, Activity::default)
            .note(event);
    }
    None
}
