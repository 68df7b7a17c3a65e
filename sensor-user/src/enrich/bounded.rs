//! Bounds on the enrichment tables. Each table keeps at most a fixed number of entries; when a
//! new one would exceed it, a sixteenth of the table goes at once (so the cost is paid once per
//! many inserts), in the order the table chooses, and is counted. Entries also leave when the
//! kernel's own view no longer has them ([`super::kernel_view`]): pruned, and counted apart.

use std::{collections::HashMap, hash::Hash};

use sensor_proto as pb;

/// What left one table other than by the kernel's report (an exit, an rmdir).
#[derive(Clone, Copy, Debug, Default)]
pub struct Departures {
    /// Evicted to stay within the table's bound.
    pub evicted: u64,
    /// Gone from the kernel's view: their exit or removal record was lost.
    pub pruned: u64,
}

impl Departures {
    /// [`make_room`] in `map`, counting what it evicted.
    pub fn make_room<K, V, R>(
        &mut self,
        map: &mut HashMap<K, V>,
        max: usize,
        rank: impl Fn(&K, &V) -> R,
    ) -> Vec<K>
    where
        K: Clone + Eq + Hash,
        R: Ord,
    {
        let evicted = make_room(map, max, rank);
        self.evicted += evicted.len() as u64;
        evicted
    }

    /// The table's line in `health` (`Health.tables`).
    pub fn health(self, table: &str, entries: usize, capacity: usize) -> pb::TableHealth {
        pb::TableHealth {
            table: table.into(),
            entries: entries as u64,
            capacity: capacity as u64,
            evicted: self.evicted,
            pruned: self.pruned,
        }
    }
}

/// Makes room for one more entry when `map` holds `max` or more: removes the `max / 16` (at
/// least one) entries that `rank` orders first, and returns their keys.
pub fn make_room<K, V, R>(map: &mut HashMap<K, V>, max: usize, rank: impl Fn(&K, &V) -> R) -> Vec<K>
where
    K: Clone + Eq + Hash,
    R: Ord,
{
    if map.len() < max {
        return Vec::new();
    }
    let n = (max / 16).clamp(1, map.len());
    let mut ranked: Vec<(R, K)> = map.iter().map(|(k, v)| (rank(k, v), k.clone())).collect();
    ranked.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
    ranked.truncate(n);
    ranked
        .into_iter()
        .map(|(_, k)| {
            map.remove(&k);
            k
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_loses_a_sixteenth_ranked_first() {
        let mut map: HashMap<u32, u32> = (0..64).map(|k| (k, 100 - k)).collect();
        assert!(make_room(&mut map, 65, |_, v| *v).is_empty());
        let mut gone = make_room(&mut map, 64, |_, v| *v);
        gone.sort_unstable();
        // The four lowest values are those of the four highest keys.
        assert_eq!(gone, [60, 61, 62, 63]);
        assert_eq!(map.len(), 60);
        // A tiny bound still makes room for one.
        let mut small: HashMap<u32, u32> = [(1, 1), (2, 2)].into();
        assert_eq!(make_room(&mut small, 2, |_, v| std::cmp::Reverse(*v)), [2]);
    }
}
