//! The maps clients can fill (SPEC §9): [`BoundedTable`], bounded in bytes,
//! and [`KeyedHasher`], the hasher of every map keyed by key hashes or
//! client addresses. Anyone can mint well-formed keys that do not exist
//! and, behind a trusted proxy, any number of client addresses, so the
//! tables that remember them (unknown keys, failed attempts per address)
//! must not grow with the flood, and no map may let them choose collisions.
//!
//! The table is sharded, each shard a `Mutex` over a hash map (with the
//! keyed hasher, so entries cannot be chosen to collide) and a queue of the
//! order in which entries were last written. A full shard forgets its
//! oldest entry first. Shards are allocated at their full size up front, so
//! the bound is a fact about the allocation, not an estimate; the pages are
//! only touched, and so only resident, as entries arrive.
//!
//! Only the refusal paths use these tables (an unknown key, a failed
//! attempt); a valid cached key never touches them.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, DefaultHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use cloro_auth_core::KeyHash;

/// The hasher of every map keyed by key hashes or client addresses:
/// SipHash-1-3 (std's `RandomState`) with a random key drawn per map.
///
/// Key hashes and address subjects are SHA-256 digests, but the tokens and
/// addresses behind them are chosen by clients, and a client that can grind
/// tokens can pick digests whose raw bytes land in one bucket of an unkeyed
/// table, turning its lookups linear (SPEC §9). A keyed hash makes the
/// bucket unknowable.
#[derive(Clone, Debug, Default)]
pub struct KeyedHasher(RandomState);

impl BuildHasher for KeyedHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.0.build_hasher()
    }
}

/// Shards per table: enough that two threads rarely wait on one lock.
const SHARDS: usize = 16;

/// Bytes of bookkeeping per slot of the hash map beyond the entry itself
/// (hashbrown's control byte).
const CONTROL_BYTES: usize = 1;
/// Control bytes hashbrown allocates beyond one per slot (a group's width,
/// so that a probe near the end can read a whole group).
const GROUP_BYTES: usize = 16;

/// A bounded table from key hashes (or address subjects) to `V`.
#[derive(Debug)]
pub struct BoundedTable<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Entries per shard at most.
    per_shard: usize,
}

#[derive(Debug)]
struct Shard<V> {
    /// Each entry with the sequence number of its last write.
    map: HashMap<KeyHash, (V, u64), KeyedHasher>,
    /// Write order, oldest first. An entry written again leaves its older
    /// record behind; such stale records are skipped and compacted away.
    order: VecDeque<(KeyHash, u64)>,
    next: u64,
}

impl<V> Shard<V> {
    /// A shard for `entries`, its map made for twice as many: a hash map
    /// whose free slots have run out (and erased slots leave tombstones that
    /// still count as used, so a full map that forgets one entry for each
    /// it adds runs out soon) rehashes in place only while it is at most
    /// half full; fuller, it grows to twice its slots. At half its capacity
    /// it never grows, so its allocation is the one made here.
    fn with_capacity(entries: usize) -> Self {
        Shard {
            map: HashMap::with_capacity_and_hasher(2 * entries, KeyedHasher::default()),
            order: VecDeque::with_capacity(2 * entries),
            next: 0,
        }
    }

    fn is_live(&self, record: &(KeyHash, u64)) -> bool {
        self.map
            .get(&record.0)
            .is_some_and(|(_, seq)| *seq == record.1)
    }

    /// Keeps only the records of entries as they are now.
    fn compact(&mut self) {
        let mut order = std::mem::take(&mut self.order);
        order.retain(|record| self.is_live(record));
        self.order = order;
    }

    /// Drops the oldest entries until one more fits in `capacity`.
    fn make_room(&mut self, capacity: usize) {
        while self.map.len() >= capacity {
            let Some(record) = self.order.pop_front() else {
                // Unreachable while every entry has a record; never loop.
                self.map.clear();
                return;
            };
            if self.is_live(&record) {
                self.map.remove(&record.0);
            }
        }
    }

    /// Records a write of `key` as the newest.
    fn touch(&mut self, key: KeyHash) -> u64 {
        if self.order.len() >= self.order.capacity() {
            self.compact();
        }
        let seq = self.next;
        self.next += 1;
        self.order.push_back((key, seq));
        seq
    }
}

impl<V> BoundedTable<V> {
    /// A table whose allocation stays within `budget` bytes (at least one
    /// entry per shard, whatever the budget).
    pub fn with_budget(budget: usize) -> Self {
        let per_shard = Self::entries_for(budget / SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard::with_capacity(per_shard)))
            .collect();
        BoundedTable { shards, per_shard }
    }

    /// The most entries one shard of `bytes` holds: hashbrown allocates a
    /// power of two of slots for up to 7/8 of them, a shard fills its map
    /// only to half that ([`Shard::with_capacity`] says why), and the order
    /// queue takes two records per entry.
    fn entries_for(bytes: usize) -> usize {
        let slot = size_of::<(KeyHash, (V, u64))>() + CONTROL_BYTES;
        let record = size_of::<(KeyHash, u64)>();
        // Per slot: the slot itself plus the order records of the 7/16 of
        // an entry it holds.
        let per_slot = slot + 2 * record * 7 / 16;
        let slots = bytes.saturating_sub(GROUP_BYTES) / per_slot.max(1);
        if slots < 16 {
            return 1;
        }
        // The largest power of two that fits.
        let slots = 1usize << (usize::BITS - 1 - slots.leading_zeros());
        slots / 16 * 7
    }

    /// The most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    fn shard(&self, key: &KeyHash) -> MutexGuard<'_, Shard<V>> {
        // The digest's last byte picks the shard; the map's keyed hasher
        // reads the first sixteen, so the two choices are independent.
        let index = usize::from(key.as_bytes()[31]) % SHARDS;
        match self.shards[index].lock() {
            Ok(guard) => guard,
            // A panic while holding the lock left a consistent map (no
            // method here panics halfway through a change); keep serving.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Reads (or changes in place) `key`'s value without making it newer.
    pub fn get_mut<R>(&self, key: &KeyHash, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut shard = self.shard(key);
        shard.map.get_mut(key).map(|(value, _)| f(value))
    }

    /// Changes `key`'s value (made by `make` if absent) and makes it the
    /// newest entry, forgetting the oldest one if the shard is full.
    pub fn upsert<R>(
        &self,
        key: &KeyHash,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut shard = self.shard(key);
        if !shard.map.contains_key(key) {
            shard.make_room(self.per_shard);
        }
        let seq = shard.touch(*key);
        let (value, stamp) = shard.map.entry(*key).or_insert_with(|| (make(), seq));
        *stamp = seq;
        f(value)
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &KeyHash) {
        self.shard(key).map.remove(key);
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&KeyHash, &mut V) -> bool) {
        for index in 0..SHARDS {
            let mut shard = match self.shards[index].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            shard.map.retain(|key, (value, _)| keep(key, value));
            if shard.map.is_empty() {
                shard.order.clear();
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| match shard.lock() {
                Ok(guard) => guard.map.len(),
                Err(poisoned) => poisoned.into_inner().map.len(),
            })
            .sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> KeyHash {
        KeyHash::of(&n.to_le_bytes())
    }

    #[test]
    fn the_budget_bounds_the_entries() {
        let table: BoundedTable<i64> = BoundedTable::with_budget(64 * 1024);
        let capacity = table.capacity();
        assert!(capacity >= 16, "{capacity}");
        // What each shard allocated: hashbrown fills 7/8 of its slots.
        let allocated: usize = table
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap();
                let slots = (shard.map.capacity() * 8).div_ceil(7).next_power_of_two();
                slots * (size_of::<(KeyHash, (i64, u64))>() + CONTROL_BYTES)
                    + GROUP_BYTES
                    + shard.order.capacity() * size_of::<(KeyHash, u64)>()
            })
            .sum();
        assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
        assert!(
            allocated >= 32 * 1024,
            "only {allocated} bytes of the budget used"
        );
        for n in 0..100_000 {
            table.upsert(&key(n), || 0, |v| *v += 1);
        }
        assert!(table.len() <= capacity);
        assert!(table.len() >= capacity / 2, "{} of {capacity}", table.len());
    }

    #[test]
    fn the_oldest_write_is_forgotten_first() {
        let table: BoundedTable<u32> = BoundedTable::with_budget(64 * 1024);
        let per_shard = table.capacity() / SHARDS;
        assert!(per_shard > 2, "{per_shard}");
        // Keys of one shard, in order.
        let same_shard: Vec<KeyHash> = (0..)
            .map(key)
            .filter(|k| usize::from(k.as_bytes()[31]) % SHARDS == 0)
            .take(per_shard + 1)
            .collect();
        for (n, k) in same_shard[..per_shard].iter().enumerate() {
            table.upsert(k, || n as u32, |_| ());
        }
        // Written again, the first is now the newest; the second is oldest.
        table.upsert(&same_shard[0], || 0, |_| ());
        table.upsert(&same_shard[per_shard], || 99, |_| ());
        assert!(table.get_mut(&same_shard[0], |v| *v).is_some());
        assert!(table.get_mut(&same_shard[1], |v| *v).is_none());
        assert!(table.get_mut(&same_shard[2], |v| *v).is_some());
        assert_eq!(table.get_mut(&same_shard[per_shard], |v| *v), Some(99));
    }

    #[test]
    fn churn_never_reallocates_a_shard() {
        let table: BoundedTable<i64> = BoundedTable::with_budget(256 * 1024);
        let before: Vec<(usize, usize)> = table
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap();
                (shard.map.capacity(), shard.order.capacity())
            })
            .collect();
        // New keys only, the oldest forgotten each time: erased slots
        // leave tombstones, which is what makes a full hash map grow.
        for n in 0..20 * table.capacity() as u32 {
            table.upsert(&key(n), || 0, |_| ());
        }
        for (shard, (map, order)) in table.shards.iter().zip(before) {
            let shard = shard.lock().unwrap();
            // `capacity` is what fits without growing: more means it grew.
            assert!(
                shard.map.capacity() <= map,
                "{} > {map}",
                shard.map.capacity()
            );
            assert_eq!(shard.order.capacity(), order);
        }
    }

    #[test]
    fn a_tiny_budget_still_holds_one_entry_per_shard() {
        let table: BoundedTable<u32> = BoundedTable::with_budget(0);
        assert_eq!(table.capacity(), SHARDS);
        table.upsert(&key(1), || 1, |_| ());
        assert_eq!(table.get_mut(&key(1), |v| *v), Some(1));
    }

    #[test]
    fn rewrites_do_not_grow_the_order_queue() {
        let table: BoundedTable<u32> = BoundedTable::with_budget(4096);
        for _ in 0..10_000 {
            table.upsert(&key(1), || 0, |v| *v += 1);
        }
        assert_eq!(table.get_mut(&key(1), |v| *v), Some(10_000));
        let shard = table.shard(&key(1));
        assert!(shard.order.len() <= shard.order.capacity());
    }

    #[test]
    fn retain_and_remove() {
        let table: BoundedTable<u32> = BoundedTable::with_budget(64 * 1024);
        for n in 0..10 {
            table.upsert(&key(n), || n, |_| ());
        }
        table.retain(|_, v| *v % 2 == 0);
        assert_eq!(table.len(), 5);
        table.remove(&key(0));
        assert_eq!(table.len(), 4);
        table.clear();
        assert!(table.is_empty());
    }

    #[test]
    fn keyed_hashers_differ_per_map() {
        let hash = KeyHash::from_bytes([7; 32]);
        let (a, b) = (KeyedHasher::default(), KeyedHasher::default());
        assert_eq!(a.hash_one(hash), a.clone().hash_one(hash));
        assert_ne!(a.hash_one(hash), b.hash_one(hash));
    }
}
