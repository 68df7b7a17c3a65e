//! `new_value` rules: learn the values a key shows during its learning period, then fire on
//! a value outside the learned set ([`LearnedSets`], saved across restarts).

use sensor_proto as pb;

use super::{full_key, matches, secs};
use crate::detect::{
    condition::Fields,
    learn::{LearnedSets, Verdict},
    rule::CompiledRule,
};

/// A new_value rule's parameters.
pub struct NewValue<'a> {
    pub key: &'a [String],
    pub value: &'a str,
    pub learn_seconds: f64,
}

impl NewValue<'_> {
    /// Learns values per key; fires on a value outside the key's set after its learning period.
    pub fn observe(
        &self,
        rule: &CompiledRule,
        learned: &mut LearnedSets,
        view: &dyn Fields,
        event: &pb::Event,
    ) -> Option<Vec<pb::Event>> {
        let now = secs(event);
        let key = full_key(view, self.key)?;
        if !matches(rule, view) {
            // A key's learning period may start with its first container.
            if event.kind == "container_started" {
                learned.saw(&key, now);
            }
            return None;
        }
        let value = view.field(self.value)?.to_string();
        (learned.judge(&key, &value, now, self.learn_seconds) == Verdict::New)
            .then(|| vec![event.clone()])
    }
}
