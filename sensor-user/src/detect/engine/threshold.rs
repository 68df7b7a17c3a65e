//! `threshold` rules: more than `above` matches (or distinct values, or a sum) per key within
//! a sliding window. Each match costs O(1) amortized however many the window holds (a
//! connection storm's traffic reports, say); the window starts over when the rule fires.

use std::collections::{HashMap, VecDeque};

use sensor_proto as pb;

use super::{field_text, key_of, keys::KeyTable, owner, secs};
use crate::detect::condition::Fields;

/// One key's matches within the window.
#[derive(Default)]
pub struct Window {
    /// (time, amount) of each match counted or summed, oldest first.
    hits: VecDeque<(f64, u64)>,
    /// The amounts in `hits`.
    total: u64,
    /// For a distinct count: each value's latest time.
    seen: HashMap<String, f64>,
}

impl Window {
    /// Adds a match of `amount` at `now` and returns the window's measure.
    fn add(&mut self, now: f64, amount: u64, window: f64) -> u64 {
        self.hits.push_back((now, amount));
        self.total += amount;
        while let Some(&(t, a)) = self.hits.front() {
            if now - t <= window {
                break;
            }
            self.hits.pop_front();
            self.total -= a;
        }
        self.total
    }

    /// Adds `value` seen at `now` and returns how many distinct values the window holds.
    /// Expired values are pruned only when the count could exceed `above`.
    fn add_distinct(&mut self, now: f64, value: String, above: u64, window: f64) -> u64 {
        self.seen.insert(value, now);
        if self.seen.len() as u64 > above {
            self.seen.retain(|_, t| now - *t <= window);
        }
        self.seen.len() as u64
    }
}

/// A threshold rule's parameters.
pub struct Threshold<'a> {
    pub key: &'a [String],
    /// Count distinct values of this field instead of matches.
    pub distinct: Option<&'a str>,
    /// Sum this integer field instead of counting matches.
    pub sum: Option<&'a str>,
    pub above: u64,
    pub window_seconds: f64,
}

impl Threshold<'_> {
    /// Counts a match of `event` in its key's window; fires (and starts the window over)
    /// above the limit.
    pub fn observe(
        &self,
        windows: &mut KeyTable<Window>,
        view: &dyn Fields,
        event: &pb::Event,
    ) -> Option<Vec<pb::Event>> {
        let now = secs(event);
        let key = key_of(view, self.key);
        let w = windows.entry(&key, owner(event), Window::default);
        let window = self.window_seconds;
        let total = match (self.distinct, self.sum) {
            (Some(d), _) => w.add_distinct(now, field_text(view, d), self.above, window),
            (None, Some(s)) => w.add(now, field_text(view, s).parse().unwrap_or(0), window),
            _ => w.add(now, 1, window),
        };
        if total <= self.above {
            return None;
        }
        windows.remove(&key);
        Some(vec![event.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_counts_slide_with_the_window() {
        let mut w = Window::default();
        assert_eq!(w.add(0.0, 5, 10.0), 5);
        assert_eq!(w.add(5.0, 5, 10.0), 10);
        assert_eq!(w.add(12.0, 1, 10.0), 6, "the first expired");
        assert_eq!(w.add(30.0, 1, 10.0), 1);
    }

    #[test]
    fn distinct_values_count_once_and_expire() {
        let mut w = Window::default();
        for t in 0..100 {
            assert_eq!(w.add_distinct(t as f64 * 0.01, "same".into(), 2, 10.0), 1);
        }
        assert_eq!(w.add_distinct(1.0, "b".into(), 2, 10.0), 2);
        assert_eq!(w.add_distinct(1.0, "c".into(), 2, 10.0), 3);
        // 20 s later the old values have left the window.
        assert_eq!(w.add_distinct(21.0, "d".into(), 2, 10.0), 1);
        assert_eq!(w.add_distinct(21.5, "e".into(), 2, 10.0), 2);
    }
}
