//! The default store: a bounded, in-process LRU.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

use lru::LruCache;
use parking_lot::Mutex;

use super::{
    CacheStore, CollectTarget, CollectableStore, Coordination, StoreError, DEFAULT_MAX_VARIANTS,
};
use crate::{key::shard_hash_of_key, CacheEntry, CacheKey, ResourceGroup};

/// A bounded in-memory LRU store, shared by every worker of the process.
///
/// It is bounded by entry count (given to [`new`](Self::new)) and by bytes
/// ([`max_bytes`](Self::max_bytes), 64 MiB by default). The byte count is body, header names and
/// values, and key bytes, plus a fixed overhead per entry (640 bytes, and 64 per header line)
/// that covers the entry's own structures; measured with `cargo bench --bench memory`, a flood
/// of 100,000 distinct URLs keeps the live heap within the budget plus about 70 bytes per held
/// entry. When either bound is reached the least recently used entries are evicted. Expired
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
/// seeded at start-up. A lookup holds its shard's lock only for the hash probe and a
/// reference-count clone, and is answered without a future ([`CacheStore::get_now`]).
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
    shards: Box<[Mutex<State>]>,
}

struct State {
    /// Unbounded in the LRU's own terms: `max_entries` is enforced here, so that no table of
    /// the full capacity is allocated up front.
    entries: LruCache<CacheKey, Slot>,
    /// Per resource group: its write generations, live counts and insertion order, so that
    /// collect, removal, eviction and the variant cap each cost O(1) (amortised), whatever the
    /// number of keys of the group.
    groups: HashMap<Arc<ResourceGroup>, Group, foldhash::fast::RandomState>,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
    max_variants: usize,
    /// The stamp of the next stored entry (order within the shard).
    next_stamp: u64,
}

/// A stored entry, with the write generations it was stored under: when either cell has moved
/// on (a collect), the entry is unusable and is dropped when next met.
struct Slot {
    entry: CacheEntry,
    group_cell: Arc<AtomicU64>,
    group_generation: u64,
    query_cell: Arc<AtomicU64>,
    query_generation: u64,
    stamp: u64,
}

impl Slot {
    /// Whether no collect has made the entry unusable since it was stored.
    fn current(&self) -> bool {
        self.group_cell.load(Ordering::Acquire) == self.group_generation
            && self.query_cell.load(Ordering::Acquire) == self.query_generation
    }
}

/// What a shard keeps of one resource group.
#[derive(Default)]
struct Group {
    /// Moved on by a collect of every query string.
    cell: Arc<AtomicU64>,
    /// Per query string (in group form): its generation cell and live entries.
    queries: HashMap<Arc<str>, Query, foldhash::fast::RandomState>,
    /// Entries held (usable or not yet reclaimed).
    live: usize,
    /// Keys in the order they were stored, with their stamps; an item whose key holds another
    /// stamp (or nothing) is a tombstone, skipped when met. Kept within twice the live count.
    order: VecDeque<(CacheKey, u64)>,
}

#[derive(Default)]
struct Query {
    cell: Arc<AtomicU64>,
    live: usize,
}

/// A collect of a group of at most this many entries removes them at once (at most twice as
/// many steps); a bigger group only moves its generation, O(1), and its entries are reclaimed
/// as they are met.
const EAGER_COLLECT: usize = 64;

/// Stores smaller than this many entries per shard are not split: their LRU order and bounds
/// stay exact.
const ENTRIES_PER_SHARD: usize = 1024;
const MAX_SHARDS: usize = 16;

impl Shards {
    fn for_key(&self, key: &[u8]) -> &Mutex<State> {
        match &*self.shards {
            [only] => only,
            _ => self.pick(shard_hash_of_key(key)),
        }
    }

    fn for_resource(&self, resource: &ResourceGroup) -> &Mutex<State> {
        match &*self.shards {
            [only] => only,
            _ => self.pick(resource.shard_hash()),
        }
    }

    fn pick(&self, hash: u64) -> &Mutex<State> {
        // The shard count is at most 16: the cast and the modulo are exact.
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }
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
                Mutex::new(State {
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
            inner: Arc::new(Shards { shards }),
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
            shard.lock().max_bytes = max_bytes.div_ceil(n);
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
            shard.lock().max_variants = max;
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
            .map(|s| s.lock().entries.len())
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
        self.inner.shards.iter().map(|s| s.lock().bytes).sum()
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
            let mut state = shard.lock();
            state.entries.clear();
            state.groups.clear();
            state.bytes = 0;
        }
    }
}

fn weight(key: &CacheKey, entry: &CacheEntry) -> usize {
    key.as_bytes().len() + entry.size()
}

impl State {
    /// Forgets a removed entry in its group's counts: O(1), no scan of the group's keys.
    fn unindex(&mut self, key: &CacheKey, slot: &Slot) {
        self.bytes = self.bytes.saturating_sub(weight(key, &slot.entry));
        let Some(group) = self.groups.get_mut(key.resource()) else {
            return;
        };
        group.live = group.live.saturating_sub(1);
        if let Some(query) = group.queries.get_mut(key.query()) {
            query.live = query.live.saturating_sub(1);
            if query.live == 0 {
                group.queries.remove(key.query());
            }
        }
        if group.live == 0 {
            self.groups.remove(key.resource());
        }
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.pop(key) {
            self.unindex(key, &slot);
        }
    }

    fn insert(&mut self, key: &CacheKey, entry: CacheEntry) {
        self.remove(key);
        let size = weight(key, &entry);
        if size > self.max_bytes {
            log::trace!(target: "actix_response_cache", "entry of {size} bytes exceeds the store budget");
            return;
        }
        while self.bytes + size > self.max_bytes || self.entries.len() >= self.max_entries {
            match self.entries.pop_lru() {
                Some((old_key, old)) => self.unindex(&old_key, &old),
                None => break,
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let group = self
            .groups
            .entry(Arc::clone(key.resource_handle()))
            .or_default();
        let query = group
            .queries
            .entry(Arc::clone(key.query_handle()))
            .or_default();
        query.live += 1;
        let slot = Slot {
            entry,
            group_generation: group.cell.load(Ordering::Acquire),
            group_cell: Arc::clone(&group.cell),
            query_generation: query.cell.load(Ordering::Acquire),
            query_cell: Arc::clone(&query.cell),
            stamp,
        };
        group.live += 1;
        group.order.push_back((key.clone(), stamp));
        self.entries.push(key.clone(), slot);
        self.bytes += size;
        self.bound_group(key.resource());
    }

    /// Keeps a group within the variant cap (its oldest entries go first) and its order queue
    /// within twice its live entries; amortised O(1) per insert.
    fn bound_group(&mut self, resource: &ResourceGroup) {
        loop {
            let Some(group) = self.groups.get_mut(resource) else {
                return;
            };
            let over_cap = group.live > self.max_variants;
            let too_long = group.order.len() > 2 * group.live + 8;
            if !over_cap && !too_long {
                return;
            }
            let Some((key, stamp)) = group.order.pop_front() else {
                return;
            };
            let held = self.entries.peek(&key).is_some_and(|s| s.stamp == stamp);
            match (held, over_cap) {
                (true, true) => self.remove(&key),
                // Not over the cap: a live item only moves to the back, a tombstone goes.
                (true, false) => {
                    if let Some(group) = self.groups.get_mut(resource) {
                        group.order.push_back((key, stamp));
                    }
                    return;
                }
                (false, _) => {}
            }
        }
    }

    /// The entry at `key` if it is usable: not expired, not collected. An unusable one is
    /// dropped.
    fn lookup(&mut self, key: &[u8]) -> Option<CacheEntry> {
        match self.entries.get(key) {
            Some(slot) if slot.current() && !slot.entry.is_expired(SystemTime::now()) => {
                return Some(slot.entry.clone())
            }
            Some(_) => {}
            None => return None,
        }
        if let Some((key, slot)) = self.entries.pop_entry(key) {
            self.unindex(&key, &slot);
        }
        None
    }

    /// Makes every entry `target` matches unusable: one generation moves on. Returns how many
    /// entries that concerned (usable or not yet reclaimed).
    fn collect(&mut self, target: &CollectTarget) -> usize {
        let Some(group) = self.groups.get_mut(target.resource()) else {
            return 0;
        };
        if group.live <= EAGER_COLLECT {
            // A small group (nearly every resource) is dropped at once, in bounded steps, so
            // its memory is back now; the generation moves on as well.
            let doomed: Vec<(CacheKey, u64)> = group
                .order
                .iter()
                .filter(|(key, _)| target.query().is_none_or(|q| q == key.query()))
                .cloned()
                .collect();
            let mut dropped = 0;
            for (key, stamp) in doomed {
                if self.entries.peek(&key).is_some_and(|s| s.stamp == stamp) {
                    self.remove(&key);
                    dropped += 1;
                }
            }
            if let Some(group) = self.groups.get_mut(target.resource()) {
                match target.query() {
                    None => group.cell.fetch_add(1, Ordering::AcqRel),
                    Some(q) => group
                        .queries
                        .get(q)
                        .map_or(0, |q| q.cell.fetch_add(1, Ordering::AcqRel)),
                };
            }
            return dropped;
        }
        match target.query() {
            None => {
                group.cell.fetch_add(1, Ordering::AcqRel);
                group.live
            }
            Some(query) => match group.queries.get(query) {
                Some(q) => {
                    q.cell.fetch_add(1, Ordering::AcqRel);
                    q.live
                }
                None => 0,
            },
        }
    }
}

impl CacheStore for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        Ok(self
            .inner
            .for_resource(key.resource())
            .lock()
            .lookup(key.as_bytes()))
    }

    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        // The hit path: no clock read here (the middleware checks expiry with the time it
        // already has); an expired entry is replaced when the miss stores its successor.
        let mut shard = self.inner.for_key(key).lock();
        let found = shard.entries.get(key).filter(|slot| slot.current());
        Some(Ok(found.map(|slot| slot.entry.clone())))
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.inner
            .for_resource(key.resource())
            .lock()
            .insert(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.inner.for_resource(key.resource()).lock().remove(key);
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
            .lock()
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
        shard.lock().insert(key, entry());
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
        let state = store.inner.for_resource(a.resource()).lock();
        assert_eq!(state.groups.get(a.resource()).map(|g| g.live), Some(1));
        assert!(state.groups.get(a.resource()).unwrap().order.len() <= 10);
        drop(state);
        futures_util::FutureExt::now_or_never(store.remove(&b))
            .unwrap()
            .unwrap();
        let state = store.inner.for_resource(a.resource()).lock();
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
        let state = store.inner.for_resource(hot.resource()).lock();
        assert!(state.groups.get(hot.resource()).unwrap().order.len() <= 12);
    }
}
