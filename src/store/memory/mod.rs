//! The default store: a bounded, in-process LRU.

use std::{
    collections::HashMap,
    fmt,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

use lru::LruCache;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use self::shard::State;
use super::{
    CacheStore, CollectTarget, CollectableStore, Coordination, StoreError, DEFAULT_MAX_VARIANTS,
};
use crate::{key::shard_hash_of_key, CacheEntry, CacheKey, ResourceGroup};

mod front;
mod shard;

/// A bounded in-memory LRU store, shared by every worker of the process.
///
/// It is bounded by entry count (given to [`new`](Self::new)) and by bytes
/// ([`max_bytes`](Self::max_bytes), 64 MiB by default). The byte count is body, header names and
/// values, and key bytes, plus a fixed overhead per entry (720 bytes, and 64 per header line)
/// that covers the entry's own structures; measured with `cargo bench --bench memory`, a flood
/// of 100,000 distinct URLs keeps the live heap within the budget plus about 70 bytes per held
/// entry. When either bound is reached the least recently used entries are evicted, in the
/// second-chance (CLOCK) approximation of LRU: a hit marks its entry, and eviction passes over a
/// marked entry once, clearing the mark and moving it to the recent end. Expired
/// entries are dropped when they are next read. Nothing of the full capacity is allocated up
/// front.
///
/// A collect is bounded, whatever the number of entries of the resource: a resource of up to
/// 64 entries has them removed at once; a bigger one has its write generation (or one query
/// string's) moved, O(1), and every entry stored before no longer answers; such entries still
/// count against the bounds ([`len`](Self::len) included) until a lookup meets them, the LRU
/// evicts them or the cap drops them. Removal and eviction are O(1) too (no scan of a
/// resource's keys). One resource group holds at most [`max_variants`](Self::max_variants)
/// entries (default 1024, every query string and `Vary` variant), its oldest dropped first, so
/// a flood of distinct query strings or header values on one URL cannot crowd out the rest.
///
/// `Clone` shares one store, so several [`Cache`](crate::Cache)s (and every worker thread) can use
/// the same one. A store of more than 1024 entries is split into up to 16 shards, each with its
/// own lock and an equal part of both bounds (so LRU order is kept per shard); every entry of a
/// resource's group (every alias, variant and query string) lives in one shard, picked by a hash
/// seeded at start-up. A hit holds its shard's lock *shared*, only for the hash probe, the mark
/// and a reference-count clone, so hits from several workers do not wait for each other; it is
/// answered without a future ([`CacheStore::get_now`]). Stores, removals, collects and the
/// dropping of an unusable entry take the shard's lock exclusively.
///
/// Each thread keeps its own copies of up to 32 entries it hits most (8 hits or more within
/// about 2,048 lookups; bodies up to 16 KiB, so at most 512 KiB per thread, outside the byte
/// budget), so that hits on one hot entry from several workers share no lock and no reference
/// count. A copy is used only while its shard has not been written since the copy was checked:
/// any store, removal, collect or eviction in the shard sends the next hit back to the shared
/// entry, so a write's invalidation holds for every worker.
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, App, HttpResponse};
/// use actix_response_cache::{Cache, MemoryStore};
///
/// let store = MemoryStore::new(10_000).max_bytes(32 * 1024 * 1024);
/// let app = App::new()
///     .wrap(Cache::new(store.clone()))
///     .service(
///         web::scope("/users")
///             .wrap(Cache::new(store).cache_expiry(Duration::from_secs(10)))
///             .route("/{id}", web::get().to(|| async { HttpResponse::Ok().body("user") })),
///     );
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Shards>,
}

/// The store is split into shards, each with its own lock, so that workers on different cores
/// rarely wait for each other. Every entry of one resource (all its variants and query strings)
/// lives in the same shard, so that `collect` takes one lock.
struct Shards {
    shards: Box<[Shard]>,
    /// Tells this store's copies apart from other stores' in a thread's front (`front.rs`).
    id: u64,
}

/// One shard: its state under its lock, and the epoch every exclusive acquisition moves on.
struct Shard {
    state: RwLock<State>,
    /// On a cache line of its own: hits read it on every lookup, while the lock's word next
    /// to it is written by every reader.
    epoch: Padded<AtomicU64>,
}

#[repr(align(128))]
struct Padded<T>(T);

impl Shard {
    fn new(state: State) -> Self {
        Self {
            state: RwLock::new(state),
            epoch: Padded(AtomicU64::new(0)),
        }
    }

    /// The state, shared: for lookups.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// The state, exclusively; moves the epoch on (under the lock, before any change), so
    /// that no thread's copy of an entry of this shard is used again unchecked.
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        let state = self.state.write();
        self.epoch.0.fetch_add(1, Ordering::Release);
        state
    }

    fn epoch(&self) -> u64 {
        self.epoch.0.load(Ordering::Acquire)
    }
}

/// The source of `Shards::id`.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);
/// Stores smaller than this many entries per shard are not split: their LRU order and bounds
/// stay exact.
const ENTRIES_PER_SHARD: usize = 1024;
const MAX_SHARDS: usize = 16;

impl Shards {
    fn for_key(&self, key: &[u8]) -> &Shard {
        match &*self.shards {
            [only] => only,
            _ => self.pick(shard_hash_of_key(key)),
        }
    }

    fn for_resource(&self, resource: &ResourceGroup) -> &Shard {
        match &*self.shards {
            [only] => only,
            _ => self.pick(resource.shard_hash()),
        }
    }

    fn pick(&self, hash: u64) -> &Shard {
        // The shard count is at most 16: the cast and the modulo are exact.
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }
}

/// Which of a thread's front slots a key goes to.
fn front_hash(key: &[u8]) -> u64 {
    foldhash::fast::FixedState::default().hash_one(key)
}

/// The default byte budget of a [`MemoryStore`]: 64 MiB.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_MAX_BYTES};
///
/// assert_eq!(DEFAULT_MAX_BYTES, 64 * 1024 * 1024);
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

impl MemoryStore {
    /// Creates a store that holds at most `max_entries` entries (and 64 MiB).
    ///
    /// # Panics
    /// Panics if `max_entries` is zero: a store that can hold nothing is a configuration error,
    /// reported when the application is built rather than on every request.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(1_000)));
    /// ```
    pub fn new(max_entries: usize) -> Self {
        assert!(
            max_entries > 0,
            "MemoryStore::new: max_entries must be at least 1"
        );
        let n = (max_entries / ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = max_entries.div_ceil(n);
        let shards = (0..n)
            .map(|_| {
                Shard::new(State {
                    entries: LruCache::unbounded(),
                    groups: HashMap::default(),
                    bytes: 0,
                    max_bytes: DEFAULT_MAX_BYTES.div_ceil(n),
                    max_entries: per_shard,
                    max_variants: DEFAULT_MAX_VARIANTS,
                    next_stamp: 0,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Shards {
                shards,
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            }),
        }
    }

    /// Sets the byte budget (body, headers and key bytes of every entry, plus a fixed overhead
    /// per entry). A store of more than 1024 entries is split into up to 16 shards, each with
    /// an equal part of both bounds; an entry larger than its shard's part is not stored.
    ///
    /// # Panics
    /// Panics if `max_bytes` is zero.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let store = MemoryStore::new(100_000).max_bytes(256 * 1024 * 1024);
    /// let app = actix_web::App::new().wrap(Cache::new(store));
    /// ```
    #[must_use]
    pub fn max_bytes(self, max_bytes: usize) -> Self {
        assert!(
            max_bytes > 0,
            "MemoryStore::max_bytes: the budget must be at least 1 byte"
        );
        let n = self.inner.shards.len();
        for shard in self.inner.shards.iter() {
            shard.write().max_bytes = max_bytes.div_ceil(n);
        }
        self
    }

    /// Sets how many entries one resource group may hold (every query string and `Vary`
    /// variant of one path, aliases included; default
    /// [`DEFAULT_MAX_VARIANTS`](crate::DEFAULT_MAX_VARIANTS)). Storing one more drops the
    /// group's oldest, so a flood of distinct query strings or header values on one URL cannot
    /// crowd out the rest of the cache.
    ///
    /// # Panics
    /// Panics if `max` is zero.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let store = MemoryStore::new(100_000).max_variants(64);
    /// let app = actix_web::App::new().wrap(Cache::new(store));
    /// ```
    #[must_use]
    pub fn max_variants(self, max: usize) -> Self {
        assert!(max > 0, "MemoryStore::max_variants: must be at least 1");
        for shard in self.inner.shards.iter() {
            shard.write().max_variants = max;
        }
        self
    }

    /// The number of entries held now (expired or collected ones not yet reclaimed included).
    ///
    /// ```
    /// # use actix_response_cache::MemoryStore;
    /// assert_eq!(MemoryStore::new(10).len(), 0);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(MemoryStore::new(10)));
    /// ```
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.read().entries.len())
            .sum()
    }

    /// Whether the store holds no entry.
    ///
    /// ```
    /// # use actix_response_cache::MemoryStore;
    /// assert!(MemoryStore::new(10).is_empty());
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(MemoryStore::new(10)));
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes counted against the budget now.
    ///
    /// ```
    /// # use actix_response_cache::MemoryStore;
    /// assert_eq!(MemoryStore::new(10).bytes(), 0);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(MemoryStore::new(10)));
    /// ```
    pub fn bytes(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().bytes).sum()
    }

    /// Drops every entry.
    ///
    /// ```
    /// # use actix_response_cache::MemoryStore;
    /// let store = MemoryStore::new(10);
    /// store.clear();
    /// assert!(store.is_empty());
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(MemoryStore::new(10)));
    /// ```
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            let mut state = shard.write();
            state.entries.clear();
            state.groups.clear();
            state.bytes = 0;
        }
    }
}

impl CacheStore for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        // Hits share the shard's lock; only an unusable entry takes it exclusively, to go.
        let shard = self.inner.for_resource(key.resource());
        let now = SystemTime::now();
        let found = shard.read().peek_usable(key.as_bytes(), now);
        match found {
            Ok(found) => Ok(found),
            Err(()) => Ok(shard.write().drop_unusable(key.as_bytes(), now)),
        }
    }

    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        // The hit path: no clock read here (the middleware checks expiry with the time it
        // already has); an expired entry is replaced when the miss stores its successor.
        // Under the shard's read lock, so that hits from several workers do not wait for
        // each other; the hit marks the entry for eviction's second chance.
        // A hit on an entry this thread has copied reads one epoch and no lock.
        let shard = self.inner.for_key(key);
        let hash = front_hash(key);
        if let Some(copy) = front::get(self.inner.id, key, hash, shard.epoch()) {
            return Some(Ok(Some(copy)));
        }
        let (found, epoch) = {
            let state = shard.read();
            (state.peek_current(key), shard.epoch())
        };
        let found = found.map(|entry| front::offer(self.inner.id, key, hash, epoch, entry));
        Some(Ok(found))
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.inner
            .for_resource(key.resource())
            .write()
            .insert(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.inner.for_resource(key.resource()).write().remove(key);
        Ok(())
    }
}

impl CollectableStore for MemoryStore {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        Ok(self.collect_now(target))
    }

    fn coordination(&self) -> Coordination<'_> {
        Coordination::InProcess
    }
}

impl MemoryStore {
    /// [`collect`](CollectableStore::collect), synchronously: O(1), whatever the number of
    /// entries of the resource.
    pub(crate) fn collect_now(&self, target: &CollectTarget) -> usize {
        self.inner
            .for_resource(target.resource())
            .write()
            .collect(target)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("entries", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry() -> CacheEntry {
        CacheEntry::test_response(b"body", Duration::from_secs(60))
    }

    fn key(path: &str, query: &str) -> CacheKey {
        CacheKey::for_get("h", path, query)
    }

    fn set(store: &MemoryStore, key: &CacheKey) {
        let shard = store.inner.for_resource(key.resource());
        shard.write().insert(key, entry());
    }

    fn has(store: &MemoryStore, key: &CacheKey) -> bool {
        matches!(store.get_now(key.as_bytes()), Some(Ok(Some(_))))
    }

    fn target(path: &str, query: Option<&str>) -> CollectTarget {
        CollectTarget::new(ResourceGroup::new("h", path), query.map(Into::into))
    }

    #[test]
    fn a_collect_by_query_makes_only_that_query_unusable() {
        let store = MemoryStore::new(100);
        let (a, b) = (key("/r", "a=1"), key("/r", "b=1"));
        set(&store, &a);
        set(&store, &b);
        assert_eq!(store.collect_now(&target("/r", Some("a=1"))), 1);
        assert!(!has(&store, &a));
        assert!(has(&store, &b));
        // A set after the collect is served.
        set(&store, &a);
        assert!(has(&store, &a));
    }

    #[test]
    fn a_collect_of_every_query_makes_the_group_unusable() {
        let store = MemoryStore::new(100);
        let keys = [key("/r", ""), key("/r", "x=1"), key("/other", "")];
        for k in &keys {
            set(&store, k);
        }
        assert_eq!(store.collect_now(&target("/r", None)), 2);
        assert!(!has(&store, &keys[0]) && !has(&store, &keys[1]));
        assert!(has(&store, &keys[2]));
    }

    #[test]
    fn a_big_group_is_collected_by_its_generation_in_one_step() {
        let store = MemoryStore::new(1_000);
        let keys: Vec<CacheKey> = (0..200).map(|i| key("/big", &format!("q={i}"))).collect();
        for k in &keys {
            set(&store, k);
        }
        let other = key("/small", "");
        set(&store, &other);
        assert_eq!(store.collect_now(&target("/big", None)), 200);
        assert!(
            keys.iter().all(|k| !has(&store, k)),
            "a collected entry answered"
        );
        assert!(has(&store, &other));
        // Not reclaimed yet: they count until met.
        assert_eq!(store.len(), 201);
        set(&store, &keys[0]);
        assert!(
            has(&store, &keys[0]),
            "a set after the collect is not served"
        );
    }

    #[test]
    fn the_variant_cap_drops_the_oldest_first() {
        let store = MemoryStore::new(100).max_variants(3);
        let keys: Vec<CacheKey> = (0..5).map(|i| key("/r", &format!("q={i}"))).collect();
        for k in &keys {
            set(&store, k);
        }
        let held: Vec<bool> = keys.iter().map(|k| has(&store, k)).collect();
        assert_eq!(held, [false, false, true, true, true]);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn counts_follow_removal_eviction_and_replacement() {
        let store = MemoryStore::new(2);
        let (a, b, c) = (key("/r", "a"), key("/r", "b"), key("/s", ""));
        set(&store, &a);
        set(&store, &a);
        set(&store, &b);
        set(&store, &c); // evicts a
        let state = store.inner.for_resource(a.resource()).write();
        assert_eq!(state.groups.get(a.resource()).map(|g| g.live), Some(1));
        assert!(state.groups.get(a.resource()).unwrap().order.len() <= 10);
        drop(state);
        futures_util::FutureExt::now_or_never(store.remove(&b))
            .unwrap()
            .unwrap();
        let state = store.inner.for_resource(a.resource()).write();
        assert!(
            !state.groups.contains_key(a.resource()),
            "an empty group is dropped"
        );
    }

    #[test]
    fn replacing_one_key_keeps_its_order_queue_bounded() {
        let store = MemoryStore::new(100).max_variants(4);
        let (hot, cold) = (key("/r", "hot"), key("/r", "cold"));
        set(&store, &cold);
        for _ in 0..1000 {
            set(&store, &hot);
        }
        assert!(has(&store, &cold), "a live entry was dropped under the cap");
        let state = store.inner.for_resource(hot.resource()).write();
        assert!(state.groups.get(hot.resource()).unwrap().order.len() <= 12);
    }
}
