//! The storage traits and the stores this crate ships.
//!
//! A store keeps [`CacheEntry`] values under exact [`CacheKey`]s. Three traits, each about one
//! thing:
//!
//! - [`CacheStore`]: storage (get, set, remove, and a synchronous `get_now` for in-process
//!   stores).
//! - [`CollectableStore`]: what [`Cache::new`](crate::Cache::new) requires on top of storage:
//!   [`collect`](CollectableStore::collect), which drops every entry of a resource's group after
//!   a successful write, and [`coordination`](CollectableStore::coordination), which says how
//!   the servers sharing the store keep each other correct. A store that cannot collect does
//!   not compile with `Cache::new`.
//! - [`Coordinate`]: cross-server coordination (a write generation, a conditional set, a
//!   resource lock with a token), provided whole by stores that several servers share.

pub(crate) mod codec;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_scripts;
#[cfg(feature = "redis")]
mod tiered;

use std::{error::Error as StdError, fmt, future::Future, sync::Arc, time::Duration};

use futures_util::future::LocalBoxFuture;

pub use self::memory::{MemoryStore, DEFAULT_MAX_BYTES};

/// How many entries one resource group may hold in a store by default (every query string and
/// `Vary` variant of one path): 1024. Past it, storing one more drops the oldest.
///
/// ```
/// use actix_response_cache::DEFAULT_MAX_VARIANTS;
///
/// assert_eq!(DEFAULT_MAX_VARIANTS, 1024);
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
pub const DEFAULT_MAX_VARIANTS: usize = 1024;
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, DEFAULT_REDIS_TIMEOUT};
#[cfg(feature = "redis")]
pub use self::tiered::{TieredStore, DEFAULT_LOCAL_TTL};
use crate::{CacheEntry, CacheKey, ResourceGroup};

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
/// A store is used by [`Cache`](crate::Cache) once it also implements [`CollectableStore`]; see
/// there for a whole example.
///
/// ```
/// use std::{cell::RefCell, collections::HashMap, rc::Rc};
/// use actix_response_cache::{CacheEntry, CacheKey, CacheStore, StoreError};
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
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
pub trait CacheStore: 'static {
    /// Returns the entry stored under `key`, or `None`. Expired entries should not be returned.
    fn get(&self, key: &CacheKey) -> impl Future<Output = Result<Option<CacheEntry>, StoreError>>;

    /// Stores `entry` under `key`, replacing what was there, until
    /// [`entry.expires_at()`](CacheEntry::expires_at).
    fn set(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Removes the entry stored under `key`, if any.
    fn remove(&self, key: &CacheKey) -> impl Future<Output = Result<(), StoreError>>;

    /// Answers a lookup at once, without a future, when the store can.
    ///
    /// `key` is the exact key, as [`CacheKey::as_bytes`] gives it. The default, `None`, means
    /// "ask [`get`](Self::get)". Unlike `get`, this may return an expired entry: the middleware
    /// checks expiry itself, with the time it already read. An in-process store answers here,
    /// which lets the middleware serve a hit without boxing a future or building an owned key; a
    /// networked store keeps the default.
    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        let _ = key;
        None
    }
}

/// Which entries a [`CollectableStore::collect`] call drops: the entries of one
/// [`ResourceGroup`], with one query string (in group form, see [`CacheKey::query`]) or any.
///
/// ```
/// use actix_response_cache::{CacheKey, CollectTarget, ResourceGroup};
///
/// let exact = CollectTarget::new(ResourceGroup::new("h", "/users"), Some("page=1".into()));
/// assert!(exact.matches(&CacheKey::for_get("h", "/users", "page=1")));
/// assert!(exact.matches(&CacheKey::for_get("h", "/users", "page=%31")));
/// assert!(!exact.matches(&CacheKey::for_get("h", "/users", "page=2")));
///
/// let every_query = CollectTarget::new(ResourceGroup::new("h", "/users"), None);
/// assert!(every_query.matches(&CacheKey::for_get("h", "/users", "page=2")));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectTarget {
    resource: Arc<ResourceGroup>,
    query: Option<Arc<str>>,
}

impl CollectTarget {
    /// Targets the entries of `resource` with `query` (as a request sends it; `Some("")` for no
    /// query), or with any query string (`None`). Every alias of the resource, every `Vary`
    /// variant and `HEAD` (which shares the `GET` entry) are included either way.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceGroup};
    /// let target = CollectTarget::new(ResourceGroup::new("h", "/"), None);
    /// assert_eq!(target.query(), None);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(resource: ResourceGroup, query: Option<Box<str>>) -> Self {
        let query = query.map(|q| crate::resource::group_query(&q).into());
        Self {
            resource: Arc::new(resource),
            query,
        }
    }

    /// A target whose query is already in group form.
    pub(crate) fn of_group(resource: Arc<ResourceGroup>, query: Option<Arc<str>>) -> Self {
        Self { resource, query }
    }

    /// The group whose entries are dropped.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceGroup};
    /// let target = CollectTarget::new(ResourceGroup::new("h", "/a"), None);
    /// assert_eq!(target.resource().path(), "/a");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn resource(&self) -> &ResourceGroup {
        &self.resource
    }

    /// The query string (in group form) whose entries are dropped; `None` means every query.
    ///
    /// ```
    /// # use actix_response_cache::{CollectTarget, ResourceGroup};
    /// let target = CollectTarget::new(ResourceGroup::new("h", "/a"), Some("y=2&x=1".into()));
    /// assert_eq!(target.query(), Some("x=1&y=2"));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Whether the entry stored under `key` is one this target drops.
    ///
    /// ```
    /// # use actix_response_cache::{CacheKey, CollectTarget, ResourceGroup};
    /// let target = CollectTarget::new(ResourceGroup::new("h", "/a"), Some("".into()));
    /// assert!(target.matches(&CacheKey::for_get("h", "/a", "")));
    /// assert!(target.matches(&CacheKey::for_get("http://h:8080", "/%61", "")));
    /// assert!(!target.matches(&CacheKey::for_get("h", "/b", "")));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn matches(&self, key: &CacheKey) -> bool {
        (Arc::ptr_eq(key.resource_handle(), &self.resource) || *key.resource() == *self.resource)
            && self.query.as_deref().is_none_or(|q| q == key.query())
    }
}

/// What [`Cache`](crate::Cache) needs of a store beyond storage: dropping every entry of a
/// resource after a write, and saying how servers that share the store coordinate.
///
/// The middleware calls [`collect`](Self::collect) after a successful (2xx or 3xx) unsafe
/// request, so that no stale entry of the resource survives the write, whichever alias of the
/// resource the write or the reads named. A simple store collects by scanning its keys with
/// [`CollectTarget::matches`]; a big one indexes its entries by [`CacheKey::resource`].
///
/// ```
/// use std::{cell::RefCell, collections::HashMap, rc::Rc};
/// use actix_response_cache::{
///     Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, Coordination,
///     StoreError,
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
/// }
///
/// impl CollectableStore for LocalStore {
///     async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
///         let mut map = self.0.borrow_mut();
///         let before = map.len();
///         map.retain(|key, _| !target.matches(key));
///         Ok(before - map.len())
///     }
///     fn coordination(&self) -> Coordination<'_> {
///         Coordination::InProcess // one process: the middleware's own guard is enough
///     }
/// }
///
/// let app = actix_web::App::new().wrap(Cache::new(LocalStore::default()));
/// ```
pub trait CollectableStore: CacheStore {
    /// Drops every entry that `target` [matches](CollectTarget::matches) and returns how many
    /// were dropped.
    fn collect(&self, target: &CollectTarget) -> impl Future<Output = Result<usize, StoreError>>;

    /// How the servers that share this store keep each other correct. No default: a store says
    /// whether it is one process's ([`Coordination::InProcess`]) or shared by several
    /// ([`Coordination::Shared`] with its [`Coordinate`] implementation).
    fn coordination(&self) -> Coordination<'_>;
}

/// How the servers that share a store keep each other correct
/// ([`CollectableStore::coordination`]).
///
/// ```
/// use actix_response_cache::{CollectableStore, Coordination, MemoryStore};
///
/// assert!(matches!(MemoryStore::new(10).coordination(), Coordination::InProcess));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(MemoryStore::new(10)));
/// ```
#[non_exhaustive]
pub enum Coordination<'a> {
    /// The store belongs to one process. The middleware's own race guard and write lock, which
    /// every worker of the process shares, are all the coordination there is.
    InProcess,
    /// Several servers share the store: the middleware also reads the resource's write
    /// generation before a miss calls its handler and stores only if it is unchanged, and takes
    /// the store's lock of the resource for a conditional write.
    Shared(&'a dyn Coordinate),
}

/// A lock of a resource taken with [`Coordinate::try_lock`]; only this token releases it.
///
/// ```
/// use actix_response_cache::LockToken;
///
/// assert_eq!(LockToken::new(7).value(), 7);
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockToken(u64);

impl LockToken {
    /// A token with this value (the middleware mints them, random: unique enough that two
    /// servers never hold the same one).
    ///
    /// ```
    /// # use actix_response_cache::LockToken;
    /// assert_ne!(LockToken::new(1), LockToken::new(2));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(value: u64) -> Self {
        Self(value)
    }

    /// The token's value.
    ///
    /// ```
    /// # use actix_response_cache::LockToken;
    /// assert_eq!(LockToken::new(3).value(), 3);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn value(self) -> u64 {
        self.0
    }
}

/// A resource's write generation in a store that several servers share
/// ([`Coordinate::generation`]): an opaque value that every collect of the resource replaces
/// and that never comes back, not even after the store lost it (a restart, an eviction).
///
/// ```
/// use actix_response_cache::Generation;
///
/// assert_ne!(Generation::new(1), Generation::new(2));
/// assert_eq!(Generation::new(7).value(), 7);
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Generation(u128);

impl Generation {
    /// A generation with this value (a store mints them: random, so that a lost generation
    /// key is never replaced by one an old entry or a miss in flight still carries).
    ///
    /// ```
    /// # use actix_response_cache::Generation;
    /// let g = Generation::new(u128::MAX);
    /// assert_eq!(g.value(), u128::MAX);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(value: u128) -> Self {
        Self(value)
    }

    /// The generation's value.
    ///
    /// ```
    /// # use actix_response_cache::Generation;
    /// assert_eq!(Generation::new(3).value(), 3);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn value(self) -> u128 {
        self.0
    }
}

/// Cross-server coordination for a store that several app servers share, provided whole: a
/// store that returns [`Coordination::Shared`] implements every method for real.
///
/// - [`generation`](Self::generation): the write generation of a key's resource and query
///   string, which every [`collect`](CollectableStore::collect) that targets them replaces. A
///   miss reads it before its handler runs and stores with
///   [`set_if_generation`](Self::set_if_generation), so a `GET` in flight on one server during
///   a write on another never stores the old representation. A store also checks it on every
///   [`get`](CacheStore::get) (in the same round trip), so that a collect is one O(1) step
///   however many variants the resource has: entries of an older generation are never served.
/// - [`try_lock`](Self::try_lock) / [`unlock`](Self::unlock): conditional writes of one
///   resource run one at a time across servers.
///
/// The futures are boxed so that the trait can be used as `dyn Coordinate`; they run on misses
/// and writes only, next to a network round trip.
///
/// ```no_run
/// # #[cfg(feature = "redis")] {
/// use actix_response_cache::{CollectableStore, Coordination, RedisStore};
///
/// let store = RedisStore::new("redis://127.0.0.1:6379");
/// assert!(matches!(store.coordination(), Coordination::Shared(_)));
/// # }
/// ```
pub trait Coordinate {
    /// The write generation of `key`'s resource group and query string. A generation the store
    /// no longer holds is replaced by a new one, never by an earlier value.
    fn generation<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> LocalBoxFuture<'a, Result<Generation, StoreError>>;

    /// The entry stored under `key` as every server sees it: for a store with a local tier,
    /// what the shared tier holds (a conditional write is judged against it, never against a
    /// local copy that another server's write may not have reached yet).
    fn get_shared<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> LocalBoxFuture<'a, Result<Option<CacheEntry>, StoreError>>;

    /// Stores `entry` unless the generation of its resource and query is no longer
    /// `generation`; returns whether it stored.
    fn set_if_generation<'a>(
        &'a self,
        key: &'a CacheKey,
        entry: CacheEntry,
        generation: Generation,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    /// Takes the lock of `group` for at most `ttl` with `token`; `false` when another holder
    /// has it. The caller mints the token, so that a lock whose command timed out (and may
    /// still have been taken) can be released with it once the store answers again. Taking it
    /// again with the token that holds it succeeds (and renews `ttl`): a caller retries an
    /// attempt whose answer was lost with the same token.
    fn try_lock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
        ttl: Duration,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    /// Whether `token` still holds the lock of `group`. A lock the store lost (evicted under
    /// memory pressure, expired, gone with a restart) is not held, even if nobody took it
    /// since: someone may have taken and released it meanwhile. The middleware asks right
    /// before a locked write's handler runs.
    fn holds_lock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
    ) -> LocalBoxFuture<'a, Result<bool, StoreError>>;

    /// Releases the lock of `group` if `token` still holds it.
    fn unlock<'a>(
        &'a self,
        group: &'a ResourceGroup,
        token: LockToken,
    ) -> LocalBoxFuture<'a, Result<(), StoreError>>;
}
