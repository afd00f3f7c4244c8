//! One cluster's series cache: raw-label-bytes hash → series id, which also counts the cluster's
//! active series for the `max_active_series` limit.
//!
//! Most series of a request were seen before, so a hit skips parsing, sorting, validating and
//! canonicalising labels and the store's catalog lookup. Keys are 128-bit seeded xxh3 hashes of
//! the encoded labels (collisions are out of reach and the seed is per process), already uniformly
//! distributed, so the maps use them as their own hash. Sixteen `RwLock` shards keep concurrent
//! writers of one cluster apart; a hit takes only a read lock and updates `last_seen` atomically.
//!
//! Active series are the entries of the cache: an entry counts from its first write until a
//! [`SeriesCache::sweep`] finds it idle for the active window. A series sent with two different
//! encodings of the same labels (label order, an empty-valued label) has two entries; senders
//! such as Prometheus and the OpenTelemetry Collector encode a series the same way every time.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use fleetgate_store::SeriesId;
use hashbrown::HashMap;
use parking_lot::RwLock;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    id: SeriesId,
    last_seen_ms: AtomicI64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct SeriesCache {
    shards: Box<[RwLock<HashMap<u128, Entry, KeyHash>>]>,
    active: AtomicUsize,
    /// The store's series-removal generation the entries were last checked against.
    pub(crate) removal_generation: AtomicU64,
    /// [`crate::ClusterContext::fingerprint`] of the context the entries were resolved under.
    pub(crate) fingerprint: u64,
}

impl SeriesCache {
    pub(crate) fn new(fingerprint: u64) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(KeyHash)))
                .collect(),
            active: AtomicUsize::new(0),
            removal_generation: AtomicU64::new(0),
            fingerprint,
        }
    }

    #[inline]
    fn shard(&self, key: u128) -> &RwLock<HashMap<u128, Entry, KeyHash>> {
        &self.shards[((key >> 64) as usize) % SHARDS]
    }

    /// The id cached under `key`, marking it seen at `now_ms`.
    #[inline]
    pub(crate) fn get(&self, key: u128, now_ms: i64) -> Option<SeriesId> {
        let shard = self.shard(key).read();
        let entry = shard.get(&key)?;
        if entry.last_seen_ms.load(Ordering::Relaxed) < now_ms {
            entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
        }
        Some(entry.id)
    }

    /// Reserves a place for a new active series; false when `limit` (0: none) is reached.
    pub(crate) fn try_reserve(&self, limit: usize) -> bool {
        if limit == 0 {
            self.active.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a reservation that was not used.
    pub(crate) fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Inserts a series under a reservation; if another writer inserted it meanwhile, the
    /// reservation is given back.
    pub(crate) fn insert_reserved(&self, key: u128, id: SeriesId, now_ms: i64) {
        let mut shard = self.shard(key).write();
        match shard.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => {
                e.get().last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
                drop(shard);
                self.release();
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(Entry {
                    id,
                    last_seen_ms: AtomicI64::new(now_ms),
                });
            }
        }
    }

    /// Drops entries last seen before `cutoff_ms`; returns how many.
    pub(crate) fn sweep(&self, cutoff_ms: i64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let before = shard.len();
            shard.retain(|_, e| e.last_seen_ms.load(Ordering::Relaxed) >= cutoff_ms);
            removed += before - shard.len();
        }
        self.active.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    /// Drops entries whose id `keep` refuses (series the store removed); returns how many.
    pub(crate) fn purge(&self, keep: impl Fn(SeriesId) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let before = shard.len();
            shard.retain(|_, e| keep(e.id));
            removed += before - shard.len();
        }
        self.active.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    /// Active series: cached entries plus reservations in flight.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// Uses a (pre-hashed) `u128` key's low 64 bits as its hash.
#[derive(Debug, Clone, Copy, Default)]
struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u128` keys; a plain FNV-1a fold keeps it correct for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_insert_get_sweep() {
        let c = SeriesCache::new(0);
        assert_eq!(c.get(1, 10), None);
        assert!(c.try_reserve(2));
        c.insert_reserved(1, 100, 10);
        assert!(c.try_reserve(2));
        c.insert_reserved(2 << 64, 200, 10);
        assert!(!c.try_reserve(2));
        assert_eq!(c.active(), 2);
        // a racing insert of the same key gives its reservation back
        assert!(c.try_reserve(0));
        c.insert_reserved(1, 100, 20);
        assert_eq!(c.active(), 2);
        assert_eq!(c.get(1, 30), Some(100));
        assert_eq!(c.sweep(25), 1);
        assert_eq!(c.active(), 1);
        assert_eq!(c.get(2 << 64, 40), None);
        assert_eq!(c.get(1, 40), Some(100));
        assert!(c.try_reserve(2));
        c.release();
        assert_eq!(c.active(), 1);
    }
}
