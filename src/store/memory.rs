//! The default store: a bounded, in-process LRU.

use std::{collections::HashMap, fmt, sync::Arc, time::SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use super::{CacheStore, CollectTarget, CollectableStore, Coordination, StoreError};
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
    entries: LruCache<CacheKey, CacheEntry>,
    /// Every key stored per resource, so that `collect` never scans the whole cache. Most
    /// resources have one or two keys: a small vector beats a set.
    by_resource: HashMap<Arc<ResourceGroup>, Vec<CacheKey>, foldhash::fast::RandomState>,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
}

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
                    by_resource: HashMap::default(),
                    bytes: 0,
                    max_bytes: DEFAULT_MAX_BYTES.div_ceil(n),
                    max_entries: per_shard,
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

    /// The number of entries held now (expired ones not yet read included).
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
            state.by_resource.clear();
            state.bytes = 0;
        }
    }
}

fn weight(key: &CacheKey, entry: &CacheEntry) -> usize {
    key.as_bytes().len() + entry.size()
}

impl State {
    fn unindex(&mut self, key: &CacheKey, entry: &CacheEntry) {
        self.bytes = self.bytes.saturating_sub(weight(key, entry));
        if let Some(keys) = self.by_resource.get_mut(key.resource()) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_resource.remove(key.resource());
            }
        }
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(entry) = self.entries.pop(key) {
            self.unindex(key, &entry);
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
        self.entries.push(key.clone(), entry);
        self.bytes += size;
        self.by_resource
            .entry(Arc::clone(key.resource_handle()))
            .or_default()
            .push(key.clone());
    }
}

impl State {
    fn lookup(&mut self, key: &[u8]) -> Option<CacheEntry> {
        let fresh = match self.entries.get(key) {
            Some(entry) if entry.is_expired(SystemTime::now()) => None,
            Some(entry) => return Some(entry.clone()),
            None => return None,
        };
        if let Some((key, entry)) = self.entries.pop_entry(key) {
            self.unindex(&key, &entry);
        }
        fresh
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
        Some(Ok(self.inner.for_key(key).lock().entries.get(key).cloned()))
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
    /// [`collect`](CollectableStore::collect), synchronously.
    pub(crate) fn collect_now(&self, target: &CollectTarget) -> usize {
        let mut state = self.inner.for_resource(target.resource()).lock();
        let doomed: Vec<CacheKey> = state
            .by_resource
            .get(target.resource())
            .map(|keys| keys.iter().filter(|k| target.matches(k)).cloned().collect())
            .unwrap_or_default();
        for key in &doomed {
            state.remove(key);
        }
        doomed.len()
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
