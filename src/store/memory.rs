//! The default store: a bounded, in-process LRU.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    num::NonZeroUsize,
    sync::Arc,
    time::SystemTime,
};

use futures_util::future::LocalBoxFuture;
use lru::LruCache;
use parking_lot::Mutex;

use super::{CacheStore, CollectTarget, CollectableStore, StoreError};
use crate::{CacheEntry, CacheKey, ResourceKey};

/// A bounded in-memory LRU store, shared by every worker of the process.
///
/// It is bounded by entry count (given to [`new`](Self::new)) and by bytes
/// ([`max_bytes`](Self::max_bytes), 64 MiB by default). The byte count is body, header names and
/// values, and key bytes, plus a fixed overhead per entry. When either bound is reached the least
/// recently used entries are evicted. Expired entries are dropped when they are next read.
///
/// `Clone` shares one store, so several [`Cache`](crate::Cache)s (and every worker thread) can use
/// the same one. A lookup holds the lock only for the hash-map probe and a reference-count clone.
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
    inner: Arc<Mutex<State>>,
}

struct State {
    entries: LruCache<CacheKey, CacheEntry>,
    /// Every key stored per resource, so that `collect` never scans the whole cache.
    by_resource: HashMap<ResourceKey, HashSet<CacheKey>>,
    bytes: usize,
    max_bytes: usize,
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
        let Some(cap) = NonZeroUsize::new(max_entries) else {
            panic!("MemoryStore::new: max_entries must be at least 1");
        };
        Self {
            inner: Arc::new(Mutex::new(State {
                entries: LruCache::new(cap),
                by_resource: HashMap::new(),
                bytes: 0,
                max_bytes: DEFAULT_MAX_BYTES,
            })),
        }
    }

    /// Sets the byte budget (body, headers and key bytes of every entry, plus a fixed overhead
    /// per entry). An entry larger than the whole budget is not stored.
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
        self.inner.lock().max_bytes = max_bytes;
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
        self.inner.lock().entries.len()
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
        self.inner.lock().bytes
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
        let mut state = self.inner.lock();
        state.entries.clear();
        state.by_resource.clear();
        state.bytes = 0;
    }
}

fn weight(key: &CacheKey, entry: &CacheEntry) -> usize {
    key.as_bytes().len() + entry.size()
}

impl State {
    fn unindex(&mut self, key: &CacheKey, entry: &CacheEntry) {
        self.bytes = self.bytes.saturating_sub(weight(key, entry));
        if let Some(keys) = self.by_resource.get_mut(key.resource()) {
            keys.remove(key);
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
        while self.bytes + size > self.max_bytes {
            match self.entries.pop_lru() {
                Some((old_key, old)) => self.unindex(&old_key, &old),
                None => break,
            }
        }
        if let Some((old_key, old)) = self.entries.push(key.clone(), entry) {
            // `push` returns the evicted least-recently-used entry when the count bound is hit.
            self.unindex(&old_key, &old);
        }
        self.bytes += size;
        self.by_resource
            .entry(key.resource().clone())
            .or_default()
            .insert(key.clone());
    }
}

impl CacheStore for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let mut state = self.inner.lock();
        match state.entries.get(key) {
            Some(entry) if entry.is_expired(SystemTime::now()) => {
                state.remove(key);
                Ok(None)
            }
            Some(entry) => Ok(Some(entry.clone())),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.inner.lock().insert(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.inner.lock().remove(key);
        Ok(())
    }

    fn as_collectable(&self) -> Option<&dyn CollectableStore> {
        Some(self)
    }
}

impl CollectableStore for MemoryStore {
    fn collect<'a>(
        &'a self,
        target: &'a CollectTarget,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
        let mut state = self.inner.lock();
        let doomed: Vec<CacheKey> = state
            .by_resource
            .get(target.resource())
            .map(|keys| keys.iter().filter(|k| target.matches(k)).cloned().collect())
            .unwrap_or_default();
        for key in &doomed {
            state.remove(key);
        }
        let n = doomed.len();
        Box::pin(async move { Ok(n) })
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MemoryStore")
            .field("entries", &state.entries.len())
            .field("max_entries", &state.entries.cap())
            .field("bytes", &state.bytes)
            .field("max_bytes", &state.max_bytes)
            .finish()
    }
}
