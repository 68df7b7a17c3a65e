//! What rules learn from the node itself, bounded in memory:
//! - [`LearnedSets`] (`new_value` logic): the values each key shows during its learning period,
//!   such as the ports containers of one image listen on; afterwards a value outside the set is
//!   news. The sets are saved in the agent's state directory and restored at start.
//! - [`Baselines`] (`baseline` logic): a moving average (EWMA) of a measure per key and report
//!   interval, such as the bytes a container sends one peer per traffic report; a report far
//!   above its own key's baseline is news.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Keys a rule learns at most: beyond, new keys are neither learned nor judged (an attacker
/// cannot evict what was learned by flooding new keys).
const MAX_KEYS: usize = 10_000;
/// Values learned per key at most.
const MAX_VALUES: usize = 1024;
/// A baseline not fed for this long may be dropped when the table is full.
const BASELINE_IDLE_SECS: f64 = 3600.0;

/// One key's learned values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedSet {
    /// When the key was first seen (event time, Unix seconds): its learning period starts here.
    pub first_seen: f64,
    pub values: BTreeSet<String>,
}

/// Learned sets of every `new_value` rule, by rule id: what the agent saves.
pub type SavedLearning = BTreeMap<String, BTreeMap<String, LearnedSet>>;

/// The file, in the agent's state directory, that learned sets are saved in.
pub const LEARNED_FILE: &str = "learned.json";

/// Reads saved learning; a missing file is nothing learned yet.
pub fn load(path: &Path) -> Result<SavedLearning> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not saved learning (remove it to start over)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedLearning::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves learning atomically (a temporary file renamed over the old one).
pub fn save(path: &Path, saved: &SavedLearning) -> Result<()> {
    if let Some(dir) = path.parent() {
        crate::trust::create_private_dir(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(saved)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// A value, judged against its key's set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// In the learning period: added to the set.
    Learning,
    /// Learned already.
    Known,
    /// After the learning period, and not in the set.
    New,
    /// The table is full and the key is not in it.
    Untracked,
}

/// Learned sets of one rule, by key.
#[derive(Default)]
pub struct LearnedSets {
    keys: HashMap<String, LearnedSet>,
    /// Changed since the last [`LearnedSets::take_dirty`].
    dirty: bool,
}

impl LearnedSets {
    /// Starts `key`'s learning period at `now` unless it has one.
    pub fn saw(&mut self, key: &str, now: f64) {
        if !self.keys.contains_key(key) && self.keys.len() < MAX_KEYS {
            self.keys.insert(
                key.to_string(),
                LearnedSet {
                    first_seen: now,
                    values: BTreeSet::new(),
                },
            );
            self.dirty = true;
        }
    }

    /// Judges `value` for `key` at `now`, learning it while the key's first `learn` seconds last.
    pub fn judge(&mut self, key: &str, value: &str, now: f64, learn: f64) -> Verdict {
        self.saw(key, now);
        let Some(set) = self.keys.get_mut(key) else {
            return Verdict::Untracked;
        };
        if set.values.contains(value) {
            Verdict::Known
        } else if now - set.first_seen < learn {
            if set.values.len() < MAX_VALUES {
                set.values.insert(value.to_string());
                self.dirty = true;
            }
            Verdict::Learning
        } else {
            Verdict::New
        }
    }

    /// Whether anything changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The sets, for saving.
    pub fn export(&self) -> BTreeMap<String, LearnedSet> {
        self.keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets saved earlier (bounded as learning is).
    pub fn import(&mut self, saved: BTreeMap<String, LearnedSet>) {
        for (key, mut set) in saved.into_iter().take(MAX_KEYS) {
            while set.values.len() > MAX_VALUES {
                set.values.pop_last();
            }
            self.keys.insert(key, set);
        }
    }
}

/// How far above its baseline a report must be.
#[derive(Clone, Copy, Debug)]
pub struct BaselineParams {
    /// A report above `factor` times the baseline...
    pub factor: f64,
    /// ...and above `floor`...
    pub floor: f64,
    /// ...once the baseline has at least this many reports behind it.
    pub min_samples: u32,
    /// EWMA weight of the newest report.
    pub alpha: f64,
}

/// One key's baseline and its report in progress.
#[derive(Clone, Debug, Default)]
struct Ewma {
    mean: f64,
    samples: u32,
    /// The report being summed (several events of one report share its time).
    current_time: f64,
    current: f64,
    /// Whether the current report already alerted.
    fired: bool,
}

impl Ewma {
    /// Folds the finished report into the mean. A report far above the mean counts as at most
    /// `factor` times it, so one burst does not teach the baseline to ignore the next.
    fn close(&mut self, p: &BaselineParams) {
        if self.current_time == 0.0 {
            return;
        }
        let v = if self.samples == 0 {
            self.current
        } else {
            self.current.min(self.mean * p.factor)
        };
        self.mean = if self.samples == 0 {
            v
        } else {
            self.mean + p.alpha * (v - self.mean)
        };
        self.samples += 1;
    }
}

/// Baselines of one rule, by key.
#[derive(Default)]
pub struct Baselines {
    keys: HashMap<String, Ewma>,
}

/// A report that is far above its baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    pub value: f64,
    pub baseline: f64,
}

impl Baselines {
    /// Adds `value` to `key`'s report at `now` (events with the same time are one report);
    /// returns the anomaly the first time the report exceeds its baseline as `p` says.
    pub fn observe(
        &mut self,
        key: &str,
        value: f64,
        now: f64,
        p: &BaselineParams,
    ) -> Option<Anomaly> {
        if !self.keys.contains_key(key) {
            if self.keys.len() >= MAX_KEYS {
                self.keys
                    .retain(|_, e| now - e.current_time < BASELINE_IDLE_SECS);
            }
            if self.keys.len() >= MAX_KEYS {
                return None;
            }
        }
        let e = self.keys.entry(key.to_string()).or_default();
        if (now - e.current_time).abs() > 1e-3 {
            e.close(p);
            e.current_time = now;
            e.current = 0.0;
            e.fired = false;
        }
        e.current += value;
        let anomalous =
            e.samples >= p.min_samples && e.current > p.floor && e.current > p.factor * e.mean;
        if anomalous && !e.fired {
            e.fired = true;
            return Some(Anomaly {
                value: e.current,
                baseline: e.mean,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_news_only_after_the_learning_period() {
        let mut s = LearnedSets::default();
        s.saw("img", 0.0); // the first container starts the clock
        assert_eq!(s.judge("img", "8080", 5.0, 60.0), Verdict::Learning);
        assert_eq!(s.judge("img", "8080", 100.0, 60.0), Verdict::Known);
        assert_eq!(s.judge("img", "9999", 100.0, 60.0), Verdict::New);
        assert_eq!(
            s.judge("img", "9999", 101.0, 60.0),
            Verdict::New,
            "not learned late"
        );
        // Another key learns on its own clock.
        assert_eq!(s.judge("other", "9999", 100.0, 60.0), Verdict::Learning);
        assert!(s.take_dirty());
        assert!(!s.take_dirty());
    }

    #[test]
    fn saved_learning_round_trips_through_its_file() {
        let dir = std::env::temp_dir().join(format!("sensor-learn-{}", std::process::id()));
        let path = dir.join(LEARNED_FILE);
        assert!(load(&path).unwrap().is_empty(), "no file: nothing learned");
        let mut s = LearnedSets::default();
        s.judge("img", "8080", 7.0, 60.0);
        let saved = SavedLearning::from([("R-1".to_string(), s.export())]);
        save(&path, &saved).unwrap();
        assert_eq!(load(&path).unwrap(), saved);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("remove it"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn learned_sets_survive_export_and_import_and_stay_bounded() {
        let mut s = LearnedSets::default();
        s.judge("img", "8080", 0.0, 60.0);
        let saved = s.export();
        let mut back = LearnedSets::default();
        back.import(saved.clone());
        assert_eq!(back.export(), saved);
        assert_eq!(back.judge("img", "8080", 1000.0, 60.0), Verdict::Known);
        for i in 0..MAX_KEYS + 5 {
            s.saw(&format!("k{i}"), 0.0);
        }
        assert_eq!(s.judge("late", "1", 0.0, 60.0), Verdict::Untracked);
        for v in 0..MAX_VALUES + 5 {
            s.judge("img", &v.to_string(), 1.0, 60.0);
        }
        assert_eq!(s.export()["img"].values.len(), MAX_VALUES);
    }

    const P: BaselineParams = BaselineParams {
        factor: 10.0,
        floor: 1000.0,
        min_samples: 3,
        alpha: 0.3,
    };

    #[test]
    fn a_report_far_above_its_own_baseline_is_an_anomaly_once() {
        let mut b = Baselines::default();
        // Steady: 100 per report, split over two events of the same report.
        for t in 1..=5 {
            assert_eq!(b.observe("a", 60.0, t as f64, &P), None);
            assert_eq!(b.observe("a", 40.0, t as f64, &P), None);
        }
        // 2000: above the floor and 20x the baseline; reported once for the report.
        let hit = b.observe("a", 2000.0, 6.0, &P).unwrap();
        assert_eq!(hit.baseline, 100.0);
        assert_eq!(b.observe("a", 500.0, 6.0, &P), None);
        // The burst counted as at most 10x: the baseline moved to 370, not to 835.
        assert_eq!(b.observe("a", 100.0, 7.0, &P), None);
        let e = &b.keys["a"];
        assert!((e.mean - 370.0).abs() < 1e-6, "{}", e.mean);
    }

    #[test]
    fn no_anomaly_below_the_floor_or_before_enough_reports() {
        let mut b = Baselines::default();
        b.observe("a", 10.0, 1.0, &P);
        b.observe("a", 10.0, 2.0, &P);
        // Two reports behind it: too early, however large.
        assert_eq!(b.observe("a", 1e9, 3.0, &P), None);
        let mut b = Baselines::default();
        for t in 1..=5 {
            b.observe("a", 10.0, t as f64, &P);
        }
        // 50x the baseline but under the floor.
        assert_eq!(b.observe("a", 500.0, 6.0, &P), None);
    }
}
