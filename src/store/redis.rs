//! [`RedisStore`]: one cache shared by several app servers, on Redis (or Valkey).

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    thread::ThreadId,
    time::{Duration, Instant, SystemTime},
};

use actix_web::web::Bytes;
use futures_util::future::LocalBoxFuture;
use parking_lot::Mutex;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    RedisError, Script,
};

use super::{codec, CacheStore, CollectTarget, CollectableStore, StoreError};
use crate::{key::fingerprint_of_key, CacheEntry, CacheKey, ResourceKey};

/// What a collection publishes: `<origin>\n<path>\n*` for every query string, or
/// `<origin>\n<path>\n=<query>` for one.
pub(crate) fn invalidation_message(target: &CollectTarget) -> String {
    let resource = target.resource();
    match target.query() {
        Some(query) => format!("{}\n{}\n={query}", resource.origin(), resource.path()),
        None => format!("{}\n{}\n*", resource.origin(), resource.path()),
    }
}

/// Reads [`invalidation_message`] back.
pub(crate) fn parse_invalidation(message: &str) -> Option<CollectTarget> {
    let mut parts = message.splitn(3, '\n');
    let (origin, path, query) = (parts.next()?, parts.next()?, parts.next()?);
    let query = match query {
        "*" => None,
        q => Some(q.strip_prefix('=')?.into()),
    };
    Some(CollectTarget::new(ResourceKey::new(origin, path), query))
}

/// `GET\n<origin>\n<path>`: the start of every key of the resource.
fn resource_bytes(resource: &ResourceKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + resource.origin().len() + resource.path().len());
    out.extend_from_slice(b"GET\n");
    out.extend_from_slice(resource.origin().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(resource.path().as_bytes());
    out
}

const LOG: &str = "actix_response_cache";

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

/// Redis' own clock in milliseconds, as the scripts read it (one clock for every server).
const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

/// Adds the entry (KEYS[1]) to the resource's index (KEYS[2], a sorted set scored by expiry),
/// drops the members that have expired, and keeps the index alive as long as its
/// longest-lived member.
const INDEX: &str = r"
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// Sets the entry (value ARGV[1], expiry ARGV[2] ms) and indexes it; unless ARGV[3] is a
/// generation and the resource's write generation (KEYS[3]) is no longer it: a write on some
/// server collected the resource since the miss began. An empty ARGV[3] sets unconditionally.
fn set_script() -> String {
    format!(
        "{NOW}if ARGV[3] ~= '' and \
         tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then\n  \
         return 0\nend\nredis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n{INDEX}"
    )
}

/// Moves the resource's write generation (KEYS[2]) on, and drops, in the same atomic step,
/// every indexed entry of the resource whose key starts with ARGV[1]; with ARGV[2] = '1', only
/// those whose query is exactly what ARGV[1] ends with (the key ends there, or goes on with a
/// variant's `\n`). Members that have expired are dropped from the index too. Then publishes
/// the collection on the invalidation channel (ARGV[3], message ARGV[4]), for local tiers
/// ([`TieredStore`](super::TieredStore)). Returns how many entries existed.
const COLLECT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local p = ARGV[1]
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, #p) == p and
     (ARGV[2] == '0' or #m == #p or string.sub(m, #p + 1, #p + 1) == '\n') then
    n = n + redis.call('DEL', m)
    redis.call('ZREM', KEYS[1], m)
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
";

/// Releases a resource's write lock (KEYS[1]) if the token ARGV[1] still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes one entry and its index membership.
const REMOVE: &str = r"
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
";

/// A [`CacheStore`] and [`CollectableStore`] on Redis, for several app servers that share one
/// cache: a write on any server collects the entries for all of them, and every server serves
/// the same entries (and so the same `ETag`s).
///
/// - Entries expire with Redis' own TTL (`PX`): nothing stale is read, nothing needs sweeping.
/// - Every entry's key is listed in a per-resource index (a sorted set scored by expiry, pruned
///   as it goes), so `collect` drops every variant of a resource in one Lua script, without
///   `SCAN` or `KEYS`. An entry and its index share a hash tag (the resource's fingerprint); the
///   store connects to one Redis server (or a primary behind a proxy), not to Redis Cluster.
/// - Entries use a compact, versioned byte layout; one written by another version, or corrupt,
///   is a miss and a log line.
/// - Fail-open: when Redis is down, slow (past [`timeout`](Self::timeout), 50 ms by default) or
///   answers errors, the operation fails, the middleware logs it and serves the request
///   uncached. After a failed connection or a timeout the store waits a second
///   ([`retry_after`](Self::retry_after)) before trying Redis again, so requests are not each
///   held up by it; it recovers by itself when Redis is back.
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
    set: Script,
    collect: Script,
    remove: Script,
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
                set: Script::new(&set_script()),
                collect: Script::new(COLLECT),
                remove: Script::new(REMOVE),
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

    fn entry_key(&self, key: &[u8]) -> Vec<u8> {
        self.tagged(fingerprint_of_key(key), b'e', key)
    }

    fn index_key(&self, fingerprint: u64) -> Vec<u8> {
        self.tagged(fingerprint, b'r', b"")
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

    fn lock_key(&self, resource: &ResourceKey) -> Vec<u8> {
        self.tagged(resource.fingerprint(), b'l', &resource_bytes(resource))
    }

    fn generation_key(&self, resource: &ResourceKey) -> Vec<u8> {
        self.tagged(resource.fingerprint(), b'g', &resource_bytes(resource))
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

    /// This worker thread's connection, made on first use.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(until) = *self.inner.down_until.lock() {
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
        if let Some(until) = *self.inner.down_until.lock() {
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

    /// Sets an entry (unless its resource's generation moved past `generation`); `Ok(false)`
    /// when it did not store.
    async fn store(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
        generation: Option<u64>,
    ) -> Result<bool, StoreError> {
        let ttl = entry
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Ok(false);
        }
        let entry_key = self.entry_key(key.as_bytes());
        let index_key = self.index_key(key.resource().fingerprint());
        let generation_key = self.generation_key(key.resource());
        let value = codec::encode(&entry);
        let generation = generation.map_or_else(String::new, |g| g.to_string());
        let mut con = self.connection().await?;
        let mut set = self.inner.set.key(&entry_key);
        set.key(&index_key)
            .key(&generation_key)
            .arg(value)
            .arg(ttl_ms)
            .arg(generation);
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
        if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            self.inner
                .connections
                .lock()
                .remove(&std::thread::current().id());
            self.back_off();
            return StoreError::unavailable(err);
        }
        if err.is_timeout() {
            self.back_off();
            return StoreError::Timeout;
        }
        StoreError::other(err)
    }
}

impl CacheStore for RedisStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let entry_key = self.entry_key(key.as_bytes());
        let mut con = self.connection().await?;
        let mut get = redis::cmd("GET");
        get.arg(&entry_key);
        let raw: Option<Vec<u8>> = self.timed(get.query_async(&mut con)).await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        match codec::decode(&Bytes::from(raw)) {
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

    fn shared_by_servers(&self) -> bool {
        true
    }

    async fn generation(&self, resource: &ResourceKey) -> Result<Option<u64>, StoreError> {
        let generation_key = self.generation_key(resource);
        let mut con = self.connection().await?;
        let mut get = redis::cmd("GET");
        get.arg(&generation_key);
        let value: Option<u64> = self.timed(get.query_async(&mut con)).await?;
        Ok(Some(value.unwrap_or(0)))
    }

    async fn set_if_generation(
        &self,
        key: &CacheKey,
        entry: CacheEntry,
        generation: u64,
    ) -> Result<bool, StoreError> {
        self.store(key, entry, Some(generation)).await
    }

    async fn try_lock_resource(
        &self,
        resource: &ResourceKey,
        token: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let lock_key = self.lock_key(resource);
        let mut con = self.connection().await?;
        let mut set = redis::cmd("SET");
        set.arg(&lock_key)
            .arg(token.to_string())
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let answer: Option<String> = self.timed(set.query_async(&mut con)).await?;
        Ok(answer.is_some())
    }

    async fn unlock_resource(&self, resource: &ResourceKey, token: u64) -> Result<(), StoreError> {
        let lock_key = self.lock_key(resource);
        let mut con = self.connection().await?;
        let mut unlock = self.inner.unlock.key(&lock_key);
        unlock.arg(token.to_string());
        self.timed(unlock.invoke_async::<i64>(&mut con))
            .await
            .map(drop)
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let entry_key = self.entry_key(key.as_bytes());
        let index_key = self.index_key(key.resource().fingerprint());
        let mut con = self.connection().await?;
        let mut remove = self.inner.remove.key(&entry_key);
        remove.key(&index_key);
        self.timed(remove.invoke_async::<i64>(&mut con))
            .await
            .map(drop)
    }

    fn as_collectable(&self) -> Option<&dyn CollectableStore> {
        Some(self)
    }
}

impl CollectableStore for RedisStore {
    fn collect<'a>(
        &'a self,
        target: &'a CollectTarget,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let resource = target.resource();
            let fingerprint = resource.fingerprint();
            // Every key of the resource starts with `GET\n<origin>\n<path>\n`; an exact query
            // adds itself to that prefix.
            let mut resource_bytes = resource_bytes(resource);
            resource_bytes.push(b'\n');
            let exact = match target.query() {
                Some(query) => {
                    resource_bytes.extend_from_slice(query.as_bytes());
                    "1"
                }
                None => "0",
            };
            let member_prefix = self.tagged(fingerprint, b'e', &resource_bytes);
            let index_key = self.index_key(fingerprint);
            let generation_key = self.generation_key(resource);
            let mut con = self.connection().await?;
            let mut collect = self.inner.collect.key(&index_key);
            collect
                .key(&generation_key)
                .arg(member_prefix)
                .arg(exact)
                .arg(self.channel())
                .arg(invalidation_message(target));
            let n: i64 = self.timed(collect.invoke_async(&mut con)).await?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }
}
