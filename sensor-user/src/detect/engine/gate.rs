//! What stands between a rule that fired and its alert:
//! - the rule's **throttle** (`throttle:` in its file): one alert per throttle key *and
//!   evidence* per period. The evidence is the process the alert is about (executable and
//!   arguments), so a decoy (a harmless `nc` to a benign peer) cannot burn the throttle for
//!   the real attack that follows it with other arguments;
//! - the **cap**: at most `limit` alerts per rule and container per `seconds`, whatever keys
//!   the attacker picks (peers, ports, arguments). The alerts beyond it are held back and
//!   counted, and when the period ends one alert stands for them ("N more like this"), with
//!   the latest of them as its evidence and the count in `suppressed`.

use sensor_proto as pb;

use super::{key_of, keys::KeyTable};
use crate::detect::{condition::Fields, rule::CompiledRule};

/// Alerts per rule and container per period, beyond which they are aggregated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertCap {
    /// 0: no cap.
    pub limit: u32,
    pub seconds: f64,
}

impl Default for AlertCap {
    fn default() -> Self {
        Self {
            limit: 20,
            seconds: 60.0,
        }
    }
}

/// One container's alerts of one rule in the current period.
struct Period {
    since: f64,
    sent: u32,
    /// Held back since `since`, and the latest of them.
    held: u64,
    latest: Option<pb::Alert>,
}

impl Period {
    fn starting(since: f64) -> Self {
        Self {
            since,
            sent: 0,
            held: 0,
            latest: None,
        }
    }
}

/// A rule's throttle and cap state.
#[derive(Default)]
pub struct Gate {
    last_alert: KeyTable<f64>,
    periods: KeyTable<Period>,
    /// Alerts the rule's throttle dropped.
    pub throttled: u64,
    /// Alerts the cap held back (each counted in a later "N more" alert).
    pub suppressed: u64,
}

impl Gate {
    /// The alerts to raise for `alert` at `now`: none (throttled or held back), the alert, or
    /// first the "N more" alert of the container's previous period, then the alert.
    pub fn admit(
        &mut self,
        rule: &CompiledRule,
        view: &dyn Fields,
        alert: pb::Alert,
        cap: AlertCap,
        now: f64,
    ) -> Vec<pb::Alert> {
        if self.throttled(rule, view, &alert, now) {
            self.throttled += 1;
            return Vec::new();
        }
        if cap.limit == 0 {
            return vec![alert];
        }
        let container = alert.container.as_ref().map_or("", |c| c.id.as_str());
        let mut out = Vec::new();
        let period = self
            .periods
            .entry(container, container, || Period::starting(now));
        if now - period.since >= cap.seconds {
            out.extend(more_like_this(period, cap));
            *period = Period::starting(now);
        }
        if period.sent < cap.limit {
            period.sent += 1;
            out.push(alert);
        } else {
            period.held += 1;
            period.latest = Some(alert);
            self.suppressed += 1;
        }
        out
    }

    /// The "N more" alerts of periods that ended by `now`.
    pub fn flush(&mut self, cap: AlertCap, now: f64) -> Vec<pb::Alert> {
        let mut out = Vec::new();
        for (_, period) in self.periods.iter_mut() {
            if now - period.since >= cap.seconds {
                out.extend(more_like_this(period, cap));
            }
        }
        self.periods.retain(|p| now - p.since < cap.seconds);
        out
    }

    /// Whether the rule alerted for this throttle key and evidence within its period (records
    /// it if not).
    fn throttled(
        &mut self,
        rule: &CompiledRule,
        view: &dyn Fields,
        alert: &pb::Alert,
        now: f64,
    ) -> bool {
        let Some(t) = &rule.doc.throttle else {
            return false;
        };
        let evidence = alert
            .process
            .as_ref()
            .map(|p| format!("{}\0{}", p.exe, p.args.join("\0")))
            .unwrap_or_default();
        let key = format!("{}\0{evidence}", key_of(view, &t.key));
        let period = t.seconds as f64;
        let owner = alert.container.as_ref().map_or("", |c| c.id.as_str());
        let last = self.last_alert.entry(&key, owner, || f64::NEG_INFINITY);
        if now - *last < period {
            return true;
        }
        *last = now;
        false
    }
}

/// The alert standing for those `period` held back, if any (taking them).
fn more_like_this(period: &mut Period, cap: AlertCap) -> Option<pb::Alert> {
    let mut alert = period.latest.take()?;
    let held = std::mem::take(&mut period.held);
    alert.summary = format!(
        "{held} more like this in {}s (at most {} alerts per rule and container in that time; \
         this is the latest): {}",
        cap.seconds, cap.limit, alert.summary
    );
    alert.suppressed = held;
    Some(alert)
}
