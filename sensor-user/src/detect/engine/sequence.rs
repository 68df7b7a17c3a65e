//! `sequence` rules: an event matching `first`, then one matching `then` with the same key
//! within `within_seconds`.

use sensor_proto as pb;

use super::{excepted, key_of, keys::KeyTable, owner, secs};
use crate::detect::{condition::Fields, rule::CompiledRule};

/// A key's latest first step: when, and the event.
pub type FirstStep = (f64, pb::Event);

/// Remembers first-step events by key; fires when a second step follows within the window.
pub fn observe(
    rule: &CompiledRule,
    started: &mut KeyTable<FirstStep>,
    view: &dyn Fields,
    event: &pb::Event,
    key: &[String],
    within: f64,
) -> Option<Vec<pb::Event>> {
    let now = secs(event);
    let key = key_of(view, key);
    let excepted = excepted(rule, view);
    if !excepted
        && rule.then.as_ref().is_some_and(|t| t.eval(view))
        && let Some((t, _)) = started.get(&key)
        && now - t <= within
    {
        let (_, first) = started.remove(&key)?;
        return Some(vec![first, event.clone()]);
    }
    if !excepted && rule.condition.eval(view) {
        *started.entry(&key, owner(event), || (now, event.clone())) = (now, event.clone());
    }
    None
}
