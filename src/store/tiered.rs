//! [`TieredStore`]: a [`MemoryStore`] in front of a [`RedisStore`], kept correct across
//! servers through Redis pub/sub.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;

use super::{
    redis::parse_invalidation, CacheStore, CollectTarget, CollectableStore, Coordination,
    MemoryStore, RedisStore, StoreError,
};
use crate::{CacheEntry, CacheKey};

const LOG: &str = "actix_response_cache";

/// How long an entry may live in the local tier by default: 1 second.
///
/// ```
/// use actix_response_cache::DEFAULT_LOCAL_TTL;
///
/// assert_eq!(DEFAULT_LOCAL_TTL, std::time::Duration::from_secs(1));
/// ```
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(1);

/// A [`MemoryStore`] (the local tier, L1) in front of a [`RedisStore`] (L2), for several app
/// servers: hits come from process memory, with no Redis round trip, while writes on any server
/// still reach every server.
///
/// - Reads try the local tier first (synchronously, on the hit path), then Redis; what Redis
///   returns is copied into the local tier, which is emptied every
///   [`local_ttl`](Self::local_ttl). A local copy answers only while it is fresh: a stale one is
///   looked up in Redis again, where another server may have revalidated it.
/// - Cross-server coordination (write generations, conditional sets, write locks) is Redis'
///   own ([`Coordination::Shared`] with the [`RedisStore`]).
/// - Writes, sets and collections go to Redis first. Every collection is published on a Redis
///   channel in the same Lua script that drops the entries, and each server's subscriber drops
///   the same entries from its local tier.
/// - The local tier is used only while the subscription is up. When it drops, the local tier is
///   emptied and every read goes to Redis until it is back: a server that cannot hear about
///   writes must not serve from memory.
/// - A copy fetched from Redis is not put in the local tier when an invalidation arrived while
///   it was in flight.
///
/// What is left is the delivery time of one pub/sub message (well under a millisecond on one
/// network): a server may serve an entry another server's write just collected for that long
/// (and, after a Redis outage, until the writer's retried collect is published: `benches/faults.sh` measured up to 9 stale reads in ~28,000 requests per fault, none without one). The
/// writing server itself never does: its own tier is collected before and after Redis, and
/// while its collect has not reached Redis it serves the resource uncached. `local_ttl` bounds
/// the window in any case. Conditional writes are judged against Redis, never a local copy.
///
/// ```no_run
/// use actix_response_cache::{Cache, MemoryStore, RedisStore, TieredStore};
///
/// let store = TieredStore::new(MemoryStore::new(10_000), RedisStore::new("redis://127.0.0.1:6379"));
/// let app = actix_web::App::new().wrap(Cache::new(store));
/// ```
#[derive(Clone)]
pub struct TieredStore {
    local: MemoryStore,
    remote: RedisStore,
    state: Arc<State>,
}

struct State {
    local_ttl: Duration,
    /// The subscriber task was started.
    started: AtomicBool,
    /// The subscription is up: the local tier may be used.
    listening: AtomicBool,
    /// Invalidations received so far: a copy is put in the local tier only if none arrived
    /// while it was fetched.
    invalidations: AtomicU64,
}

impl TieredStore {
    /// A local tier `local` in front of `remote`. The subscriber that keeps the local tier
    /// correct starts on first use, on a thread of its own.
    ///
    /// ```
    /// use actix_response_cache::{MemoryStore, RedisStore, TieredStore};
    ///
    /// let store = TieredStore::new(MemoryStore::new(1_000), RedisStore::new("redis://127.0.0.1:6379"));
    /// ```
    pub fn new(local: MemoryStore, remote: RedisStore) -> Self {
        Self {
            local,
            remote,
            state: Arc::new(State {
                local_ttl: DEFAULT_LOCAL_TTL,
                started: AtomicBool::new(false),
                listening: AtomicBool::new(false),
                invalidations: AtomicU64::new(0),
            }),
        }
    }

    /// Sets how often the local tier is emptied (default 1 s): the bound on staleness should an
    /// invalidation message be lost, and the rate at which a hot key is fetched from Redis again.
    ///
    /// # Panics
    /// Panics if called after the store was cloned.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{MemoryStore, RedisStore, TieredStore};
    ///
    /// let store = TieredStore::new(MemoryStore::new(1_000), RedisStore::new("redis://127.0.0.1:6379"))
    ///     .local_ttl(Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        match Arc::get_mut(&mut self.state) {
            Some(state) => state.local_ttl = ttl,
            None => panic!("TieredStore: configure the store before cloning it"),
        }
        self
    }

    /// Starts the subscriber once per store, on a thread of its own: a busy or restarted worker
    /// must not hold up invalidation for the others. The thread ends when the last clone of the
    /// store is dropped.
    fn listen(&self) {
        if self.state.started.load(Ordering::Acquire)
            || self.state.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (local, remote) = (self.local.clone(), self.remote.clone());
        let state = Arc::downgrade(&self.state);
        let spawned = std::thread::Builder::new()
            .name("arc-invalidation".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(listen_until_dropped(local, remote, state));
            });
        if let Err(err) = spawned {
            log::warn!(target: LOG, "tiered store: no subscriber thread, local tier off: {err}");
        }
    }

    fn local_usable(&self) -> bool {
        self.listen();
        self.state.listening.load(Ordering::Acquire)
    }

    /// Copies `entry` into the local tier, unless an invalidation arrived since
    /// `invalidations_before` was read (checked again after the insert: the subscriber runs on
    /// another thread).
    fn keep_locally(&self, key: &CacheKey, entry: &CacheEntry, invalidations_before: u64) {
        let invalidations = &self.state.invalidations;
        if invalidations.load(Ordering::Acquire) != invalidations_before {
            return;
        }
        // The memory store cannot fail.
        let _ = futures_util::FutureExt::now_or_never(self.local.set(key, entry.clone()));
        if invalidations.load(Ordering::Acquire) != invalidations_before {
            let _ = futures_util::FutureExt::now_or_never(self.local.remove(key));
        }
    }
}

/// The subscriber thread's loop: subscribe, apply messages, empty the local tier every
/// `local_ttl`, and after a failure empty it and subscribe again, until the store is dropped.
async fn listen_until_dropped(
    local: MemoryStore,
    remote: RedisStore,
    state: std::sync::Weak<State>,
) {
    loop {
        let Some(alive) = state.upgrade() else { return };
        let local_ttl = alive.local_ttl;
        drop(alive);
        subscribe(&local, &remote, &state, local_ttl).await;
        // The subscription dropped: nothing local may be trusted until it is back.
        let Some(alive) = state.upgrade() else { return };
        alive.listening.store(false, Ordering::Release);
        alive.invalidations.fetch_add(1, Ordering::AcqRel);
        local.clear();
        drop(alive);
        actix_web::rt::time::sleep(remote.retry_wait()).await;
    }
}

/// Subscribes to the invalidation channel and applies every message to the local tier, and
/// empties it every `local_ttl`, until the subscription fails or the store is dropped.
async fn subscribe(
    local: &MemoryStore,
    remote: &RedisStore,
    state: &std::sync::Weak<State>,
    local_ttl: Duration,
) {
    let mut pubsub = match remote.client().get_async_pubsub().await {
        Ok(pubsub) => pubsub,
        Err(err) => {
            log::warn!(target: LOG, "tiered store: no invalidation channel, local tier off: {err}");
            return;
        }
    };
    if let Err(err) = pubsub.subscribe(remote.channel()).await {
        log::warn!(target: LOG, "tiered store: subscribe failed, local tier off: {err}");
        return;
    }
    // Whatever the local tier held was not kept up to date while the subscription was down.
    local.clear();
    match state.upgrade() {
        Some(alive) => alive.listening.store(true, Ordering::Release),
        None => return,
    }
    log::debug!(target: LOG, "tiered store: listening on {}", remote.channel());
    let mut messages = pubsub.into_on_message();
    let mut tick = Box::pin(actix_web::rt::time::sleep(local_ttl));
    loop {
        let next = futures_util::future::select(messages.next(), tick.as_mut()).await;
        let Some(alive) = state.upgrade() else { return };
        match next {
            futures_util::future::Either::Left((Some(message), _)) => {
                alive.invalidations.fetch_add(1, Ordering::AcqRel);
                match message
                    .get_payload::<String>()
                    .ok()
                    .and_then(|p| parse_invalidation(&p))
                {
                    Some(target) => {
                        local.collect_now(&target);
                    }
                    // A message this build cannot read: drop everything rather than guess.
                    None => local.clear(),
                }
            }
            futures_util::future::Either::Left((None, _)) => break,
            // The bound on staleness, should a message be lost.
            futures_util::future::Either::Right(((), _)) => {
                alive.invalidations.fetch_add(1, Ordering::AcqRel);
                local.clear();
                tick = Box::pin(actix_web::rt::time::sleep(local_ttl));
            }
        }
    }
    log::warn!(target: LOG, "tiered store: invalidation channel closed, local tier off");
}

impl CacheStore for TieredStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let usable = self.local_usable();
        if usable {
            if let Some(entry) = self.local.get(key).await? {
                if entry.is_fresh(std::time::SystemTime::now()) {
                    return Ok(Some(entry));
                }
            }
        }
        let before = self.state.invalidations.load(Ordering::Acquire);
        let entry = self.remote.get(key).await?;
        if let (true, Some(entry)) = (usable, &entry) {
            self.keep_locally(key, entry, before);
        }
        Ok(entry)
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        let before = self.state.invalidations.load(Ordering::Acquire);
        self.remote.set(key, entry.clone()).await?;
        if self.local_usable() {
            self.keep_locally(key, &entry, before);
        }
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let _ = self.local.remove(key).await;
        self.remote.remove(key).await
    }

    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        // Only a fresh local copy answers at once; anything else goes on to Redis.
        if !self.local_usable() {
            return None;
        }
        match self.local.get_now(key)? {
            Ok(Some(entry)) if entry.is_fresh(std::time::SystemTime::now()) => {
                Some(Ok(Some(entry)))
            }
            _ => None,
        }
    }
}

impl CollectableStore for TieredStore {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        // This server's tier before and after the Redis collection (a copy fetched in between
        // is not kept either); the other servers' on the message it publishes.
        self.state.invalidations.fetch_add(1, Ordering::AcqRel);
        self.local.collect_now(target);
        let collected = self.remote.collect(target).await;
        self.state.invalidations.fetch_add(1, Ordering::AcqRel);
        self.local.collect_now(target);
        collected
    }

    fn coordination(&self) -> Coordination<'_> {
        self.remote.coordination()
    }
}
