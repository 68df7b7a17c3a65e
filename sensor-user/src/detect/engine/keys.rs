//! A rule's keyed state (threshold windows, sequence first steps, container activity,
//! throttles), bounded so that no container can fill it and silence the rule for the others.
//!
//! Every entry belongs to the container whose event created it (its owner; `""` for the host
//! and node-wide keys). An owner holds at most [`KeyTable::per_owner`] entries: beyond that its
//! own oldest entry makes room. When the whole table is full, the owner with the most entries
//! gives up its oldest one. A container with few keys therefore never loses state to a
//! container flooding the rule with distinct keys (peers, ports). Each eviction is counted.

use std::collections::{HashMap, VecDeque};

/// Entries a rule keeps at most, per kind of state.
pub const MAX_KEYS: usize = 10_000;
/// Entries one owner keeps at most, per kind of state.
pub const MAX_KEYS_PER_OWNER: usize = 1_000;

struct Entry<V> {
    owner: String,
    value: V,
}

/// An owner's keys, oldest first, and how many of them are live. The queue may still hold
/// keys removed since (skipped when evicting, compacted when they dominate it).
#[derive(Default)]
struct Owned {
    queue: VecDeque<String>,
    live: usize,
}

/// Keyed state with per-owner quotas and counted evictions.
pub struct KeyTable<V> {
    entries: HashMap<String, Entry<V>>,
    owners: HashMap<String, Owned>,
    max: usize,
    per_owner: usize,
    /// Entries evicted to make room, since the table was made.
    pub evicted: u64,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        Self::new(MAX_KEYS, MAX_KEYS_PER_OWNER)
    }
}

impl<V> KeyTable<V> {
    pub fn new(max: usize, per_owner: usize) -> Self {
        Self {
            entries: HashMap::new(),
            owners: HashMap::new(),
            max,
            per_owner,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|e| &e.value)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.released(&entry.owner);
        Some(entry.value)
    }

    /// The entry of `key`, made by `make` for `owner` when missing (evicting to make room).
    pub fn entry(&mut self, key: &str, owner: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.entries.contains_key(key) {
            if self
                .owners
                .get(owner)
                .is_some_and(|o| o.live >= self.per_owner)
            {
                self.evict_oldest_of(owner);
            }
            while self.entries.len() >= self.max {
                let Some(biggest) = self.biggest_owner() else {
                    break;
                };
                self.evict_oldest_of(&biggest);
            }
            let owned = self.owners.entry(owner.to_string()).or_default();
            owned.queue.push_back(key.to_string());
            owned.live += 1;
            if owned.queue.len() > 2 * owned.live + 16 {
                let entries = &self.entries;
                owned
                    .queue
                    .retain(|k| entries.get(k).is_some_and(|e| e.owner == owner));
                owned.queue.push_back(key.to_string());
            }
            self.entries.insert(
                key.to_string(),
                Entry {
                    owner: owner.to_string(),
                    value: make(),
                },
            );
        }
        &mut self.entries.get_mut(key).expect("present").value
    }

    /// Keeps the entries `keep` holds for.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let mut released = Vec::new();
        self.entries.retain(|_, e| {
            let kept = keep(&e.value);
            if !kept {
                released.push(e.owner.clone());
            }
            kept
        });
        for owner in released {
            self.released(&owner);
        }
    }

    /// The entries, with their keys.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.entries.iter_mut().map(|(k, e)| (k, &mut e.value))
    }

    /// One of `owner`'s entries is gone.
    fn released(&mut self, owner: &str) {
        if let Some(owned) = self.owners.get_mut(owner) {
            owned.live = owned.live.saturating_sub(1);
            if owned.live == 0 {
                self.owners.remove(owner);
            }
        }
    }

    fn biggest_owner(&self) -> Option<String> {
        self.owners
            .iter()
            .max_by_key(|(_, o)| o.live)
            .map(|(owner, _)| owner.clone())
    }

    fn evict_oldest_of(&mut self, owner: &str) {
        let Some(owned) = self.owners.get_mut(owner) else {
            return;
        };
        while let Some(key) = owned.queue.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.owner == owner) {
                self.entries.remove(&key);
                self.evicted += 1;
                self.released(owner);
                return;
            }
        }
        // Nothing live was queued: the count was stale.
        self.owners.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_owner_evicts_its_own_keys_not_anothers() {
        let mut t: KeyTable<u32> = KeyTable::new(100, 10);
        t.entry("victim", "v", || 1);
        for i in 0..1000 {
            t.entry(&format!("peer-{i}"), "flood", || i);
        }
        assert_eq!(
            t.get("victim"),
            Some(&1),
            "the quiet container keeps its state"
        );
        assert_eq!(t.len(), 11, "the flood holds its quota only");
        assert_eq!(t.evicted, 990);
        assert!(t.get("peer-999").is_some() && t.get("peer-0").is_none());
    }

    #[test]
    fn a_full_table_takes_from_the_owner_with_the_most() {
        let mut t: KeyTable<u32> = KeyTable::new(20, 15);
        for i in 0..15 {
            t.entry(&format!("a{i}"), "a", || i);
        }
        for i in 0..5 {
            t.entry(&format!("b{i}"), "b", || i);
        }
        t.entry("c0", "c", || 0);
        assert_eq!(t.len(), 20);
        assert!(t.get("a0").is_none(), "a, the biggest, gave up its oldest");
        assert!(t.get("b0").is_some() && t.get("c0").is_some());
        assert_eq!(t.evicted, 1);
    }

    #[test]
    fn removed_keys_free_their_owners_quota() {
        let mut t: KeyTable<u32> = KeyTable::new(100, 3);
        for round in 0..50 {
            for i in 0..3 {
                t.entry(&format!("k{i}"), "a", || round);
            }
            for i in 0..3 {
                assert!(t.remove(&format!("k{i}")).is_some());
            }
        }
        assert_eq!(t.evicted, 0);
        assert_eq!(t.len(), 0);
        t.entry("x", "a", || 0);
        t.retain(|_| false);
        assert_eq!(t.len(), 0);
    }
}
