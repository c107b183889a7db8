//! [`RedisStore`]: one cache shared by several app servers, on Redis (or Valkey).

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    thread::ThreadId,
    time::{Duration, Instant, SystemTime},
};

use actix_web::web::Bytes;
use parking_lot::Mutex;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    RedisError, Script,
};

use super::{
    codec,
    redis_scripts::{set_script, COLLECT, GENERATION, LOCK, REMOVE, UNLOCK},
    CacheStore, CollectTarget, CollectableStore, Coordination, Generation, StoreError,
    DEFAULT_MAX_VARIANTS,
};
use crate::{CacheEntry, CacheKey, ResourceGroup};

#[path = "redis_coordinate.rs"]
mod coordinate;

/// What a collection publishes: `<host>\n<path>\n*` for every query string, or
/// `<host>\n<path>\n=<query>` for one (all in group form, which holds no `\n`).
pub(crate) fn invalidation_message(target: &CollectTarget) -> String {
    let resource = target.resource();
    match target.query() {
        Some(query) => format!("{}\n{}\n={query}", resource.host(), resource.path()),
        None => format!("{}\n{}\n*", resource.host(), resource.path()),
    }
}

/// Reads [`invalidation_message`] back.
pub(crate) fn parse_invalidation(message: &str) -> Option<CollectTarget> {
    let mut parts = message.splitn(3, '\n');
    let (host, path, query) = (parts.next()?, parts.next()?, parts.next()?);
    let query = match query {
        "*" => None,
        q => Some(q.strip_prefix('=')?.into()),
    };
    Some(CollectTarget::of_group(
        std::sync::Arc::new(ResourceGroup::from_canonical(host, path)),
        query,
    ))
}

/// `<host>\n<path>`: the group, as the names of its lock and generation keys end.
fn resource_bytes(resource: &ResourceGroup) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + resource.host().len() + resource.path().len());
    out.extend_from_slice(resource.host().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(resource.path().as_bytes());
    out
}

/// The length of the generations at the start of a stored value: two times 16 hex digits.
const GENERATIONS_LEN: usize = 32;

/// How long a generation made for a miss lives at least: the longest a handler may take
/// between the miss reading it and storing under it (a later store is refused, never wrong).
const FLIGHT_TTL: Duration = Duration::from_secs(60);

/// A new random generation, as 16 hex digits.
fn fresh_generation() -> String {
    format!("{:016x}", crate::guard::unique_token())
}

/// Reads 32 hex digits back into a [`Generation`].
fn parse_generation(hex: &[u8]) -> Option<Generation> {
    let text = std::str::from_utf8(hex).ok()?;
    (text.len() == GENERATIONS_LEN)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
        .map(Generation::new)
}

const LOG: &str = "actix_response_cache";

/// Whether an operation skips Redis while the store backs off after a failure.
#[derive(Clone, Copy)]
enum Backoff {
    /// A read: served uncached at once rather than waiting for a Redis that just failed.
    Respect,
    /// A write of the cache's own state: always tried.
    Ignore,
}

/// The default limit on one Redis command, connection included: 50 ms. Past it, the request is
/// served uncached.
///
/// ```
/// use actix_response_cache::DEFAULT_REDIS_TIMEOUT;
///
/// assert_eq!(DEFAULT_REDIS_TIMEOUT, std::time::Duration::from_millis(50));
/// ```
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// How long the store stops trying to connect after a failed connection: requests meanwhile
/// are served uncached at once, instead of each waiting for a connection that will not come.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A [`CacheStore`] and [`CollectableStore`] on Redis, for several app servers that share one
/// cache: a write on any server collects the entries for all of them, and every server serves
/// the same entries (and so the same `ETag`s).
///
/// - Entries expire with Redis' own TTL (`PX`): nothing stale is read, nothing needs sweeping.
/// - Every entry carries the write generations of its resource and query string, and a read
///   fetches the entry and both generations in one `MGET`: a collect deletes one generation key,
///   an O(1) step whatever the number of variants, and every entry stored before it stops being
///   served on every server at once. Generations are random, so one lost to a restart or an
///   eviction is never replaced by a value an old entry or a miss in flight still carries; they
///   live as long as the longest entry stored under them. All keys of a resource share a hash
///   tag (the resource's fingerprint); the store connects to one Redis server (or a primary
///   behind a proxy), not to Redis Cluster.
/// - A per-resource index (a sorted set by expiry) bounds the entries of one resource
///   ([`max_variants`](Self::max_variants)), dropping the one closest to expiry first.
/// - Entries use a compact, versioned byte layout; one written by another version, or corrupt,
///   is a miss and a log line.
/// - When Redis is down, slow (past [`timeout`](Self::timeout), 50 ms by default) or answers
///   errors, the operation fails and the middleware serves the request uncached (and, for a
///   write, keeps its collect and retries it: see
///   [`Cache::invalidation_wait`](crate::Cache::invalidation_wait)). After a failed connection
///   or a timeout, reads leave Redis alone for [`retry_after`](Self::retry_after) (1 s) so
///   requests are not each held up by it; collects, sets, locks and unlocks always try.
///
/// Each worker thread has its own multiplexed connection, made on first use.
///
/// ```no_run
/// use actix_web::{web, App, HttpResponse, HttpServer};
/// use actix_response_cache::{Cache, RedisStore};
///
/// # async fn run() -> std::io::Result<()> {
/// let store = RedisStore::new("redis://127.0.0.1:6379").prefix("shop:");
/// HttpServer::new(move || {
///     App::new()
///         .wrap(Cache::new(store.clone()))
///         .route("/", web::get().to(|| async { HttpResponse::Ok().body("hello") }))
/// })
/// .bind("127.0.0.1:8080")?
/// .run()
/// .await
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    retry_after: Duration,
    /// Each worker thread's connection, with a token that lives as long as the runtime the
    /// connection's driver runs on: a connection made by a runtime that has ended is not reused.
    connections: Mutex<HashMap<ThreadId, (ConnectionManager, std::sync::Weak<()>)>>,
    /// No connection attempt before this instant, after a failed one.
    down_until: Mutex<Option<Instant>>,
    max_variants: usize,
    set: Script,
    generation: Script,
    collect: Script,
    remove: Script,
    lock: Script,
    unlock: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://host:port/db`, `rediss://` for TLS where
    /// the `redis` crate is built with it, `redis+unix:///path`). Nothing is connected yet: each
    /// worker connects on first use.
    ///
    /// # Panics
    /// Panics if `url` is not a Redis URL (use [`try_new`](Self::try_new) to handle it).
    ///
    /// ```
    /// use actix_response_cache::RedisStore;
    ///
    /// let store = RedisStore::new("redis://127.0.0.1:6379");
    /// ```
    pub fn new(url: &str) -> Self {
        match Self::try_new(url) {
            Ok(store) => store,
            Err(err) => panic!("RedisStore::new: {err}"),
        }
    }

    /// [`new`](Self::new), with an invalid URL as an error.
    ///
    /// ```
    /// use actix_response_cache::RedisStore;
    ///
    /// assert!(RedisStore::try_new("not a url").is_err());
    /// ```
    pub fn try_new(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::other)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                prefix: "arc:".to_owned(),
                timeout: DEFAULT_REDIS_TIMEOUT,
                retry_after: DEFAULT_RETRY_AFTER,
                connections: Mutex::new(HashMap::new()),
                down_until: Mutex::new(None),
                max_variants: DEFAULT_MAX_VARIANTS,
                set: Script::new(&set_script()),
                generation: Script::new(GENERATION),
                collect: Script::new(COLLECT),
                remove: Script::new(REMOVE),
                lock: Script::new(LOCK),
                unlock: Script::new(UNLOCK),
            }),
        })
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                f(inner);
                self
            }
            None => panic!("RedisStore: configure the store before cloning it"),
        }
    }

    /// Sets the prefix of every key this store writes (default `arc:`), so that several apps
    /// can share one Redis.
    ///
    /// # Panics
    /// Panics if `prefix` contains `{` or `}` (they would change the keys' hash tags).
    ///
    /// ```
    /// use actix_response_cache::RedisStore;
    ///
    /// let store = RedisStore::new("redis://127.0.0.1:6379").prefix("shop:");
    /// ```
    #[must_use]
    pub fn prefix(self, prefix: &str) -> Self {
        assert!(
            !prefix.contains(['{', '}']),
            "RedisStore::prefix: {prefix:?} must not contain braces"
        );
        let prefix = prefix.to_owned();
        self.configure(|inner| inner.prefix = prefix)
    }

    /// Sets the limit on one Redis command, and on connecting (default 50 ms).
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::RedisStore;
    ///
    /// let store = RedisStore::new("redis://127.0.0.1:6379").timeout(Duration::from_millis(20));
    /// ```
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "RedisStore::timeout: must be positive");
        self.configure(|inner| inner.timeout = timeout)
    }

    /// Sets how long the store waits after a failed connection before it tries again
    /// (default 1 s). Meanwhile requests are served uncached at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::RedisStore;
    ///
    /// let store = RedisStore::new("redis://127.0.0.1:6379").retry_after(Duration::from_millis(200));
    /// ```
    #[must_use]
    pub fn retry_after(self, wait: Duration) -> Self {
        self.configure(|inner| inner.retry_after = wait)
    }

    /// Sets how many entries one resource group may hold (every query string and `Vary`
    /// variant; default [`DEFAULT_MAX_VARIANTS`]): past it, storing one drops the one closest
    /// to expiry, so a flood of distinct query strings cannot grow a resource without bound.
    ///
    /// # Panics
    /// Panics if `max` is zero.
    ///
    /// ```
    /// use actix_response_cache::RedisStore;
    ///
    /// let store = RedisStore::new("redis://127.0.0.1:6379").max_variants(100);
    /// ```
    #[must_use]
    pub fn max_variants(self, max: usize) -> Self {
        assert!(max > 0, "RedisStore::max_variants: must be at least 1");
        self.configure(|inner| inner.max_variants = max)
    }

    fn entry_key(&self, key: &CacheKey) -> Vec<u8> {
        self.tagged(key.resource().stable_fingerprint(), b'e', key.as_bytes())
    }

    fn index_key(&self, resource: &ResourceGroup) -> Vec<u8> {
        self.tagged(
            resource.stable_fingerprint(),
            b'r',
            &resource_bytes(resource),
        )
    }

    /// The channel collections are published on: `<prefix>invalidate`.
    pub(crate) fn channel(&self) -> String {
        format!("{}invalidate", self.inner.prefix)
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    pub(crate) fn retry_wait(&self) -> Duration {
        self.inner.retry_after
    }

    fn lock_key(&self, resource: &ResourceGroup) -> Vec<u8> {
        self.tagged(
            resource.stable_fingerprint(),
            b'l',
            &resource_bytes(resource),
        )
    }

    /// The write generation of every query string of the group.
    fn group_generation_key(&self, resource: &ResourceGroup) -> Vec<u8> {
        self.tagged(
            resource.stable_fingerprint(),
            b'g',
            &resource_bytes(resource),
        )
    }

    /// The write generation of one query string (in group form) of the group.
    fn query_generation_key(&self, resource: &ResourceGroup, query: &str) -> Vec<u8> {
        let mut rest = resource_bytes(resource);
        rest.push(b'\n');
        rest.extend_from_slice(query.as_bytes());
        self.tagged(resource.stable_fingerprint(), b'q', &rest)
    }

    /// `<prefix>{<fingerprint>}<kind><rest>`: the braces make the fingerprint the hash tag.
    fn tagged(&self, fingerprint: u64, kind: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.inner.prefix.len() + 19 + rest.len());
        out.extend_from_slice(self.inner.prefix.as_bytes());
        out.push(b'{');
        out.extend_from_slice(format!("{fingerprint:016x}").as_bytes());
        out.push(b'}');
        out.push(kind);
        out.extend_from_slice(rest);
        out
    }

    /// This worker thread's connection, made on first use. Reads (`get`, `generation`) skip
    /// Redis while it is backing off; writes of the cache's own state (collect, set, remove,
    /// lock, unlock) always try: a skipped collect would leave another server serving what
    /// the write made stale.
    async fn connection(&self, backoff: Backoff) -> Result<ConnectionManager, StoreError> {
        if let (Backoff::Respect, Some(until)) = (backoff, *self.inner.down_until.lock()) {
            if Instant::now() < until {
                return Err(StoreError::unavailable(
                    "redis is down or slow, retrying later",
                ));
            }
        }
        let thread = std::thread::current().id();
        if let Some((con, runtime)) = self.inner.connections.lock().get(&thread) {
            if runtime.strong_count() > 0 {
                return Ok(con.clone());
            }
        }
        if let (Backoff::Respect, Some(until)) = (backoff, *self.inner.down_until.lock()) {
            if Instant::now() < until {
                return Err(StoreError::unavailable(
                    "redis is down or slow, retrying later",
                ));
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(0);
        let connect = self.inner.client.get_connection_manager_with_config(config);
        let result = match actix_web::rt::time::timeout(self.inner.timeout * 2, connect).await {
            Ok(Ok(con)) => Ok(con),
            // A server that accepts the connection but does not answer (frozen, overloaded)
            // is slow, not gone.
            Ok(Err(err)) if err.is_timeout() => Err(StoreError::Timeout),
            Ok(Err(err)) => Err(StoreError::unavailable(err)),
            Err(_) => Err(StoreError::Timeout),
        };
        match result {
            Ok(con) => {
                *self.inner.down_until.lock() = None;
                // A task that holds the token until this runtime ends.
                let token = Arc::new(());
                let runtime = Arc::downgrade(&token);
                actix_web::rt::spawn(async move {
                    let _token = token;
                    std::future::pending::<()>().await;
                });
                self.inner
                    .connections
                    .lock()
                    .insert(thread, (con.clone(), runtime));
                Ok(con)
            }
            Err(err) => {
                *self.inner.down_until.lock() = Some(Instant::now() + self.inner.retry_after);
                Err(err)
            }
        }
    }

    /// Awaits one command under the timeout.
    async fn timed<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match actix_web::rt::time::timeout(self.inner.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.failed(err)),
            Err(_) => {
                self.back_off();
                Err(StoreError::Timeout)
            }
        }
    }

    /// Sets an entry under its group's and query's current generations, or, with
    /// `generation`, only if they are still those; `Ok(false)` when it did not store.
    async fn store(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
        generation: Option<Generation>,
    ) -> Result<bool, StoreError> {
        let ttl = entry
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Ok(false);
        }
        let resource = key.resource();
        let value = codec::encode(&entry);
        let expected = generation.map_or_else(String::new, |g| format!("{:032x}", g.value()));
        let mut con = self.connection(Backoff::Ignore).await?;
        let mut set = self.inner.set.key(self.entry_key(key));
        set.key(self.index_key(resource))
            .key(self.group_generation_key(resource))
            .key(self.query_generation_key(resource, key.query()))
            .key(self.lock_key(resource))
            .arg(value)
            .arg(ttl_ms)
            .arg(expected)
            .arg(fresh_generation())
            .arg(fresh_generation())
            .arg(self.inner.max_variants);
        let stored: i64 = self.timed(set.invoke_async(&mut con)).await?;
        Ok(stored == 1)
    }

    /// Stops using Redis for [`retry_after`](Self::retry_after).
    fn back_off(&self) {
        *self.inner.down_until.lock() = Some(Instant::now() + self.inner.retry_after);
    }

    /// Maps a Redis error; a dropped connection is forgotten, so that the next operation
    /// connects again.
    fn failed(&self, err: RedisError) -> StoreError {
        // A connection whose reply did not come in time is replaced too (one that is kept
        // stays behind what it waits for), but the failure stays a timeout: what was sent may
        // still run, and a lock attempt is worth retrying with its token.
        let timed_out = err.is_timeout();
        if timed_out
            || err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
        {
            self.inner
                .connections
                .lock()
                .remove(&std::thread::current().id());
            self.back_off();
            return match timed_out {
                true => StoreError::Timeout,
                false => StoreError::unavailable(err),
            };
        }
        StoreError::other(err)
    }
}

impl CacheStore for RedisStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let resource = key.resource();
        let mut con = self.connection(Backoff::Respect).await?;
        // The entry and the generations it must carry, in one round trip: a collected entry
        // is never served, whatever happened to its deletion.
        let mut get = redis::cmd("MGET");
        get.arg(self.entry_key(key))
            .arg(self.group_generation_key(resource))
            .arg(self.query_generation_key(resource, key.query()));
        let mut found: Vec<Option<Vec<u8>>> = self.timed(get.query_async(&mut con)).await?;
        let (Some(Some(query_generation)), Some(Some(group_generation)), Some(Some(raw))) =
            (found.pop(), found.pop(), found.pop())
        else {
            return Ok(None);
        };
        let current = raw.get(..GENERATIONS_LEN).is_some_and(|stored| {
            stored[..16] == group_generation[..] && stored[16..] == query_generation[..]
        });
        if !current {
            return Ok(None);
        }
        match codec::decode(&Bytes::from(raw).slice(GENERATIONS_LEN..)) {
            Ok(entry) if !entry.is_expired(SystemTime::now()) => Ok(Some(entry)),
            Ok(_) => Ok(None),
            Err(err) => {
                log::warn!(target: LOG, "redis entry {key:?} not read, a miss: {err}");
                Ok(None)
            }
        }
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.store(key, entry, None).await.map(drop)
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let mut con = self.connection(Backoff::Ignore).await?;
        let mut remove = self.inner.remove.key(self.entry_key(key));
        remove.key(self.index_key(key.resource()));
        self.timed(remove.invoke_async::<i64>(&mut con))
            .await
            .map(drop)
    }
}

impl CollectableStore for RedisStore {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        let resource = target.resource();
        let generation_key = match target.query() {
            Some(query) => self.query_generation_key(resource, query),
            None => self.group_generation_key(resource),
        };
        let mut con = self.connection(Backoff::Ignore).await?;
        let mut collect = self.inner.collect.key(generation_key);
        collect
            .arg(self.channel())
            .arg(invalidation_message(target));
        let n: i64 = self.timed(collect.invoke_async(&mut con)).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn coordination(&self) -> Coordination<'_> {
        Coordination::Shared(self)
    }
}
