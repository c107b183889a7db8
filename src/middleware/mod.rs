//! The `Cache` middleware, as the phases a request goes through, one file each.
//!
//! | order | file | what it does |
//! |---|---|---|
//! | build | [`builder`] | `Cache`, its builder methods, the actix `Transform` |
//! | 1 | [`service`] | `call` sorts the request: hit (answered at once), read, write or pass-through; the named `CacheFuture` |
//! | 2 | [`lookup`] | store lookups, synchronous (`get_now`) and awaited, into a [`lookup::Lookup`] |
//! | 3 | [`read`] | `GET`/`HEAD`: decide (a [`read::Decision`]) → coalesce → forward to the handler → finish |
//! | 3a | [`coalesce`] | concurrent misses of one key call the handler once; one `land` for every way a flight ends |
//! | 3b | [`stale`] | stale-while-revalidate and stale-if-error (RFC 5861); returns a refresh for `read` to start |
//! | 3c | [`revalidate`] | the conditional request to the handler and the RFC 9111 §4.3.4 merge of its `304` |
//! | 3d | [`trip`] | what a forwarded request carries to its finish: why it went, the race guard, its flight |
//! | 4 | [`admit`] | what is stored, under the key the lookup used, guarded against writes in flight |
//! | 5 | [`answer`] | one `respond` builds every answer from a representation: hit, `304`, `412`, stale |
//! | — | [`write`] | unsafe methods: locks → preconditions → handler → invalidation |
//! | — | [`lock`] | a write's locks, this process's and the store's: taken once the body is in, checked before the handler |
//! | — | [`probe`] | a conditional write the store knows nothing of: the current validator from a `GET` of the handler |
//! | — | [`invalidate`] | one plan/apply of what a successful write makes stale (URI, handler-side URI, `Location`) |
//! | — | [`backlog`] | invalidations and lock releases the store did not take, retried in the background |
//! | — | [`nested`] | the markers nested `Cache`s pass each other |
//! | — | [`status`] | `Cache-Status` (RFC 9211) parts as enums, with header values formatted once |
//!
//! Outside this folder: the request's identity ([`crate::key`], [`crate::resource`],
//! [`crate::origin`]), what may be stored and reused ([`crate::freshness`],
//! [`crate::directives`]), preconditions ([`crate::conditional`]) and the race guard
//! ([`crate::guard`]).

mod admit;
mod answer;
mod backlog;
mod builder;
mod coalesce;
mod invalidate;
mod lock;
mod lookup;
mod nested;
mod pass;
mod probe;
mod read;
mod revalidate;
mod service;
mod stale;
mod status;
mod trip;
mod write;

use std::future::Future;

pub use self::builder::Cache;
pub use self::service::{CacheFuture, CacheMiddleware};

use crate::{
    policy::Policy,
    store::{CollectableStore, Coordinate, Coordination, StoreError},
};

pub(crate) const LOG: &str = "actix_response_cache";

/// A `Cache`'s configuration and store, shared by every request of its worker.
pub(crate) struct Inner<St> {
    pub(crate) store: St,
    pub(crate) policy: Policy,
    pub(crate) statuses: status::Statuses,
    /// What the store did not take when a write asked, retried in the background.
    pub(crate) backlog: backlog::Backlog,
}

impl<St: CollectableStore> Inner<St> {
    /// Runs one store operation under the policy's timeout; errors are logged (rate-limited:
    /// see [`log_failure`]), never raised.
    pub(crate) async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let res = self.quiet(op, fut).await;
        if let Err(err) = &res {
            log_failure(op, err);
        }
        res
    }

    /// [`timed`](Self::timed), logging failures at `debug` only (background retries).
    pub(crate) async fn quiet<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let res = match actix_web::rt::time::timeout(self.policy.store_timeout, fut).await {
            Ok(res) => res,
            Err(_) => Err(StoreError::Timeout),
        };
        if let Err(err) = &res {
            log::debug!(target: LOG, "store {op} failed: {err}");
        }
        res
    }

    /// The store's cross-server coordination, when several servers share it.
    pub(crate) fn coordinator(&self) -> Option<&dyn Coordinate> {
        match self.store.coordination() {
            Coordination::Shared(coordinator) => Some(coordinator),
            _ => None,
        }
    }
}

/// How often a store failure is logged at most: once per period (a second, the
/// [`RedisStore`](crate::RedisStore)'s default back-off), with the count of the failures not
/// logged since, so an outage costs one line a second, not two per request.
const LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Logs a store failure, at most once per [`LOG_PERIOD`] in the process.
pub(crate) fn log_failure(op: &'static str, err: &StoreError) {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    };
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    static NEXT_MS: AtomicU64 = AtomicU64::new(0);
    static SKIPPED: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let next = NEXT_MS.load(Ordering::Acquire);
    let period = u64::try_from(LOG_PERIOD.as_millis()).unwrap_or(1000);
    if now < next
        || NEXT_MS
            .compare_exchange(next, now + period, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match SKIPPED.swap(0, Ordering::Relaxed) {
        0 => log::warn!(target: LOG, "store {op} failed, serving uncached: {err}"),
        skipped => log::warn!(
            target: LOG,
            "store {op} failed, serving uncached: {err} ({skipped} more store failures since the last warning)"
        ),
    }
}
