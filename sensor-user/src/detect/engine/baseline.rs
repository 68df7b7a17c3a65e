//! `baseline` rules: sum a value per key and report, and fire when a report is far above the
//! key's own moving average ([`Baselines`]).

use sensor_proto as pb;

use super::{Firing, full_key, matches, secs};
use crate::detect::{
    condition::{Fields, Value},
    learn::{BaselineParams, Baselines},
    rule::CompiledRule,
};

/// Fires when a report of `value` per `key` is far above the key's baseline; the alert's
/// template may name `baseline.value` and `baseline.mean`.
pub fn observe(
    rule: &CompiledRule,
    baselines: &mut Baselines,
    view: &dyn Fields,
    event: &pb::Event,
    (key, value): (&[String], &str),
    params: &BaselineParams,
) -> Option<Firing> {
    if !matches(rule, view) {
        return None;
    }
    let key = full_key(view, key)?;
    let Some(Value::Int(v)) = view.field(value) else {
        return None;
    };
    let hit = baselines.observe(&key, v as f64, secs(event), params)?;
    let extra = vec![
        ("baseline.value", Value::Int(hit.value as i64)),
        ("baseline.mean", Value::Int(hit.baseline.round() as i64)),
    ];
    Some(Firing(vec![event.clone()], extra))
}
