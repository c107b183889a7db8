//! The storage traits and the stores this crate ships.
//!
//! A store keeps [`CacheEntry`] values under exact [`CacheKey`]s. [`CacheStore`] is all a store
//! needs; [`CollectableStore`] adds [`collect`](CollectableStore::collect), which drops every entry
//! of a resource after a successful write. A store that only implements [`CacheStore`] still
//! works: the middleware then removes the entries it can name itself, and leaves a marker at the
//! resource's primary key that hides every `Vary` variant; the rest ages out by expiry.

pub(crate) mod codec;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod tiered;

use std::{error::Error as StdError, fmt, future::Future};

use futures_util::future::LocalBoxFuture;

pub use self::memory::{MemoryStore, DEFAULT_MAX_BYTES};
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, DEFAULT_REDIS_TIMEOUT};
#[cfg(feature = "redis")]
pub use self::tiered::{TieredStore, DEFAULT_LOCAL_TTL};
use crate::{CacheEntry, CacheKey, ResourceKey};

/// Why a store operation failed.
///
/// The middleware never shows this to a client: it logs it (target `actix_response_cache`) and
/// serves the request as if uncached.
///
/// ```
/// use actix_response_cache::StoreError;
///
/// let err = StoreError::unavailable("connection refused");
/// assert!(err.to_string().contains("unavailable"));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The operation did not finish within the policy's store timeout.
    Timeout,
    /// A stored value could not be read back (corrupt or written in another format).
    Corrupt(Box<dyn StdError + Send + Sync>),
    /// Any other failure.
    Other(Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// A [`StoreError::Unavailable`] from any error or message.
    ///
    /// ```
    /// # use actix_response_cache::StoreError;
    /// let err = StoreError::unavailable(std::io::Error::other("down"));
    /// assert!(matches!(err, StoreError::Unavailable(_)));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn unavailable(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Unavailable(err.into())
    }

    /// A [`StoreError::Other`] from any error or message.
    ///
    /// ```
    /// # use actix_response_cache::StoreError;
    /// let err = StoreError::other("disk full");
    /// assert_eq!(err.to_string(), "cache store error: disk full");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn other(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Other(err.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "cache store unavailable: {e}"),
            Self::Timeout => f.write_str("cache store timed out"),
            Self::Corrupt(e) => write!(f, "cache store entry corrupt: {e}"),
            Self::Other(e) => write!(f, "cache store error: {e}"),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Unavailable(e) | Self::Corrupt(e) | Self::Other(e) => Some(&**e),
            Self::Timeout => None,
        }
    }
}

/// Storage for cached responses.
///
/// Methods are `async` and run on the actix worker that handles the request, so their futures
/// need not be `Send`. Implementations must be cheap to call concurrently: the middleware calls
/// [`get`](Self::get) on every `GET`/`HEAD`. A store must never return an entry under another
/// key than the one it was set under.
///
/// Implement [`CollectableStore`] as well, and return `Some(self)` from
/// [`as_collectable`](Self::as_collectable), so that writes drop every stored variant of a
/// resource at once.
///
/// ```
/// use std::{cell::RefCell, collections::HashMap, rc::Rc};
/// use actix_response_cache::{Cache, CacheEntry, CacheKey, CacheStore, StoreError};
///
/// /// A per-worker store: each worker thread keeps its own map.
/// #[derive(Clone, Default)]
/// struct LocalStore(Rc<RefCell<HashMap<CacheKey, CacheEntry>>>);
///
/// impl CacheStore for LocalStore {
///     async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
///         Ok(self.0.borrow().get(key).cloned())
///     }
///     async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
///         self.0.borrow_mut().insert(key.clone(), entry);
///         Ok(())
///     }
///     async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
///         self.0.borrow_mut().remove(key);
///         Ok(())
///     }
/// }
///
/// let app = actix_web::App::new().wrap(Cache::new(LocalStore::default()));
/// ```
pub trait CacheStore: 'static {
    /// Returns the entry stored under `key`, or `None`. Expired entries should not be returned.
    fn get(&self, key: &CacheKey) -> impl Future<Output = Result<Option<CacheEntry>, StoreError>>
    where
        Self: Sized;

    /// Stores `entry` under `key`, replacing what was there, until
    /// [`entry.expires_at()`](CacheEntry::expires_at).
    fn set(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
    ) -> impl Future<Output = Result<(), StoreError>>
    where
        Self: Sized;

    /// Removes the entry stored under `key`, if any.
    fn remove(&self, key: &CacheKey) -> impl Future<Output = Result<(), StoreError>>
    where
        Self: Sized;

    /// Answers a lookup at once, without a future, when the store can.
    ///
    /// `key` is the exact key, as [`CacheKey::as_bytes`] gives it. The default, `None`, means
    /// "ask [`get`](Self::get)". Unlike `get`, this may return an expired entry: the middleware
    /// checks expiry itself, with the time it already read. An in-process store answers here, which lets the middleware serve
    /// a hit without boxing a future or building an owned key; a networked store keeps the
    /// default.
    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        let _ = key;
        None
    }

    /// Returns this store as a [`CollectableStore`], if it is one.
    ///
    /// The default is `None`. A store that implements [`CollectableStore`] overrides this with
    /// `Some(self)`; without that line the middleware cannot see the implementation (Rust has no
    /// specialization) and falls back to removing single keys.
    fn as_collectable(&self) -> Option<&dyn CollectableStore> {
        None
    }

    /// Whether several processes (app servers) share this store. The middleware's race guard
    /// is per process; for a shared store it also reads the resource's write
    /// [`generation`](Self::generation) before a miss calls the handler, stores with
    /// [`set_if_generation`](Self::set_if_generation), and collects after every successful
    /// write, so that a `GET` in flight on one server during a write on another never stores
    /// the old representation. Default `false`.
    ///
    /// ```
    /// use actix_response_cache::{CacheStore, MemoryStore};
    ///
    /// assert!(!MemoryStore::new(10).shared_by_servers());
    /// ```
    fn shared_by_servers(&self) -> bool {
        false
    }

    /// The write generation of `resource`: a number that every
    /// [`collect`](CollectableStore::collect) of the resource changes. `None` (the default):
    /// the store keeps none.
    ///
    /// ```
    /// # actix_web::rt::System::new().block_on(async {
    /// use actix_response_cache::{CacheKey, CacheStore, MemoryStore};
    ///
    /// let key = CacheKey::for_get("http://example.com", "/a", "");
    /// assert_eq!(MemoryStore::new(10).generation(key.resource()).await.unwrap(), None);
    /// # });
    /// ```
    fn generation(
        &self,
        resource: &ResourceKey,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>>
    where
        Self: Sized,
    {
        let _ = resource;
        std::future::ready(Ok(None))
    }

    /// Takes the lock of `resource` with `token`, for at most `ttl`: `Ok(false)` when another
    /// holder has it. For stores several servers share, so that conditional writes of one
    /// resource run one at a time across servers. The default (a store of one process) always
    /// succeeds: the middleware's own lock already serialises them.
    ///
    /// ```
    /// # actix_web::rt::System::new().block_on(async {
    /// use std::time::Duration;
    /// use actix_response_cache::{CacheKey, CacheStore, MemoryStore};
    ///
    /// let key = CacheKey::for_get("http://example.com", "/a", "");
    /// let store = MemoryStore::new(10);
    /// assert!(store.try_lock_resource(key.resource(), 1, Duration::from_secs(1)).await.unwrap());
    /// # });
    /// ```
    fn try_lock_resource(
        &self,
        resource: &ResourceKey,
        token: u64,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<bool, StoreError>>
    where
        Self: Sized,
    {
        let _ = (resource, token, ttl);
        std::future::ready(Ok(true))
    }

    /// Releases [`try_lock_resource`](Self::try_lock_resource)'s lock if `token` still holds it.
    ///
    /// ```
    /// # actix_web::rt::System::new().block_on(async {
    /// use actix_response_cache::{CacheKey, CacheStore, MemoryStore};
    ///
    /// let key = CacheKey::for_get("http://example.com", "/a", "");
    /// MemoryStore::new(10).unlock_resource(key.resource(), 1).await.unwrap();
    /// # });
    /// ```
    fn unlock_resource(
        &self,
        resource: &ResourceKey,
        token: u64,
    ) -> impl Future<Output = Result<(), StoreError>>
    where
        Self: Sized,
    {
        let _ = (resource, token);
        std::future::ready(Ok(()))
    }

    /// Stores `entry` unless the generation of its resource is no longer `generation`;
    /// returns whether it stored. The default ignores the generation and stores.
    ///
    /// ```
    /// # actix_web::rt::System::new().block_on(async {
    /// use std::time::Duration;
    /// use actix_response_cache::{CacheEntry, CacheKey, CacheStore, MemoryStore};
    ///
    /// let store = MemoryStore::new(10);
    /// let key = CacheKey::for_get("http://example.com", "/a", "");
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(60));
    /// assert!(store.set_if_generation(&key, entry, 0).await.unwrap());
    /// # });
    /// ```
    fn set_if_generation(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
        generation: u64,
    ) -> impl Future<Output = Result<bool, StoreError>>
    where
        Self: Sized,
    {
        let _ = generation;
        let set = self.set(key, entry);
        async move { set.await.map(|()| true) }
    }
}

/// Which entries a [`CollectableStore::collect`] call drops.
///
/// ```
/// use actix_response_cache::{CacheKey, CollectTarget, ResourceKey};
///
/// let exact = CollectTarget::new(ResourceKey::new("h", "/users"), Some("page=1".into()));
/// assert!(exact.matches(&CacheKey::for_get("h", "/users", "page=1")));
/// assert!(!exact.matches(&CacheKey::for_get("h", "/users", "page=2")));
///
/// let every_query = CollectTarget::new(ResourceKey::new("h", "/users"), None);
/// assert!(every_query.matches(&CacheKey::for_get("h", "/users", "page=2")));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectTarget {
    resource: ResourceKey,
    query: Option<Box<str>>,
}

impl CollectTarget {
    /// Targets the entries of `resource` with exactly `query` (`Some("")` for no query), or with
    /// any query string (`None`). Every `Vary` variant and `HEAD` (which shares the `GET` entry)
    /// is included either way.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceKey};
    /// let target = CollectTarget::new(ResourceKey::new("h", "/"), None);
    /// assert_eq!(target.query(), None);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(resource: ResourceKey, query: Option<Box<str>>) -> Self {
        Self { resource, query }
    }

    /// The resource whose entries are dropped.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceKey};
    /// let target = CollectTarget::new(ResourceKey::new("h", "/a"), None);
    /// assert_eq!(target.resource().path(), "/a");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn resource(&self) -> &ResourceKey {
        &self.resource
    }

    /// The query string whose entries are dropped; `None` means every query string.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceKey};
    /// let target = CollectTarget::new(ResourceKey::new("h", "/a"), Some("x=1".into()));
    /// assert_eq!(target.query(), Some("x=1"));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Whether the entry stored under `key` is one this target drops.
    ///
    /// ```
    /// # use actix_response_cache::{CacheKey, CollectTarget, ResourceKey};
    /// let target = CollectTarget::new(ResourceKey::new("h", "/a"), Some("".into()));
    /// assert!(target.matches(&CacheKey::for_get("h", "/a", "")));
    /// assert!(!target.matches(&CacheKey::for_get("h", "/b", "")));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn matches(&self, key: &CacheKey) -> bool {
        key.resource() == &self.resource && self.query.as_deref().is_none_or(|q| q == key.query())
    }
}

/// A store that can drop every entry of a resource at once.
///
/// The middleware calls [`collect`](Self::collect) after a successful (2xx or 3xx) `PUT`, `PATCH`,
/// `DELETE` or `POST`, so that no stale variant of the resource survives the write. Stores index
/// entries by [`CacheKey::resource`] to find them without scanning.
///
/// `collect` returns a boxed future because it runs only after writes, never on the hit path,
/// and boxing keeps the trait usable as `dyn CollectableStore`.
///
/// ```
/// use std::{cell::RefCell, collections::HashMap, rc::Rc};
/// use futures_util::future::LocalBoxFuture;
/// use actix_response_cache::{
///     Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, StoreError,
/// };
///
/// #[derive(Clone, Default)]
/// struct LocalStore(Rc<RefCell<HashMap<CacheKey, CacheEntry>>>);
///
/// impl CacheStore for LocalStore {
///     async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
///         Ok(self.0.borrow().get(key).cloned())
///     }
///     async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
///         self.0.borrow_mut().insert(key.clone(), entry);
///         Ok(())
///     }
///     async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
///         self.0.borrow_mut().remove(key);
///         Ok(())
///     }
///     fn as_collectable(&self) -> Option<&dyn CollectableStore> {
///         Some(self)
///     }
/// }
///
/// impl CollectableStore for LocalStore {
///     fn collect<'a>(&'a self, target: &'a CollectTarget) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
///         Box::pin(async move {
///             let mut map = self.0.borrow_mut();
///             let before = map.len();
///             map.retain(|key, _| !target.matches(key));
///             Ok(before - map.len())
///         })
///     }
/// }
///
/// let app = actix_web::App::new().wrap(Cache::new(LocalStore::default()));
/// ```
pub trait CollectableStore: CacheStore {
    /// Drops every entry that `target` [matches](CollectTarget::matches) and returns how many
    /// were dropped.
    fn collect<'a>(
        &'a self,
        target: &'a CollectTarget,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>>;
}
