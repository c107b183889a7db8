//! The locks of a write: this process's, then the store's (when several servers share it),
//! taken only once the request body is in, checked again right before the handler, and
//! released (from the backlog when the store does not answer).

use std::{
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    dev::{Payload, ServiceRequest},
    error::PayloadError,
    http::Method,
    web::BytesMut,
    HttpMessage,
};
use futures_util::StreamExt;

use super::{backlog::Backlog, nested::WriteLockHeld, Inner, LOG};
use crate::{
    guard,
    store::{CollectableStore, LockToken, StoreError},
    CacheKey, ResourceGroup,
};

/// A request body as a boxed stream (actix's own payload stream type).
type BoxedPayloadStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, PayloadError>>>,
>;

/// How long a conditional write waits, in all, for the locks of its resource (this process's,
/// then the store's) before it gets `503`.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long a store lock lives if its holder never releases it (a server that died mid-write).
pub(super) const STORE_LOCK_TTL: Duration = Duration::from_secs(10);

/// The locks a write holds: this process's, and the store's (by its token).
#[derive(Default)]
pub(super) struct Locks {
    pub(super) local: Option<futures_util::lock::OwnedMutexGuard<()>>,
    pub(super) remote: Option<LockToken>,
}

impl Locks {
    /// Releases the locks: the store's by its token (from the backlog once the store answers,
    /// if it does not now), then this process's.
    pub(super) async fn release<St: CollectableStore>(self, inner: &Rc<Inner<St>>, key: &CacheKey) {
        if let (Some(token), Some(c)) = (self.remote, inner.coordinator()) {
            if inner
                .timed("unlock", c.unlock(key.resource(), token))
                .await
                .is_err()
            {
                Backlog::unlock_later(inner, Arc::clone(key.resource_handle()), token);
            }
        }
        drop(self.local);
    }
}

/// Reads the write's body in, then takes the locks of its resource: this process's, then the
/// store's, within [`LOCK_WAIT`] in all. `None` when a write that fails closed could not have
/// them (it gets `503`); a write that does not fail closed goes on with what it got.
pub(super) async fn take_locks<St: CollectableStore>(
    inner: &Rc<Inner<St>>,
    req: &mut ServiceRequest,
    key: &CacheKey,
    fail_closed: bool,
) -> Option<Locks> {
    // The body first, with no lock held: a client that sends it slowly holds up only itself,
    // not every other write of the resource.
    read_body_in(req, inner.policy.max_body_size).await;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut locks = Locks::default();
    let local = guard::lock_conditional_write(guard::of_store::<St>(key.resource().fingerprint()));
    match actix_web::rt::time::timeout(LOCK_WAIT, local).await {
        Ok(held) => {
            req.extensions_mut().insert(WriteLockHeld);
            locks.local = Some(held);
        }
        Err(_) if fail_closed => {
            log::debug!(target: LOG, "503 {}: the write lock of {:?} was held too long", req.path(), key.resource());
            return None;
        }
        Err(_) => {
            log::debug!(target: LOG, "write of {:?} goes on without the lock", key.resource())
        }
    }
    // Across servers sharing the store, the same: a lock in the store, taken after this
    // process's (so one server's writes queue here, not in the store). A conditional write
    // whose lock command fails gets its 503 at once; a plain one keeps trying until the
    // deadline, so that it does not slip in between a conditional write's check and its
    // handler on another server while the store is slow.
    match lock_in_store(inner, key.resource_handle(), deadline, !fail_closed).await {
        StoreLock::Held(token) => locks.remote = Some(token),
        StoreLock::NotShared => {}
        StoreLock::Unavailable if fail_closed => {
            log::debug!(target: LOG, "503 {}: the store lock of {:?} is out of reach", req.path(), key.resource());
            return None;
        }
        StoreLock::Unavailable => {
            log::debug!(target: LOG, "write of {:?} goes on without the store lock", key.resource())
        }
    }
    Some(locks)
}

/// Reads a conditional write's body in before its locks are taken, up to `limit` bytes. A
/// longer body is handed on as what was read followed by the rest of the stream, and an error
/// mid-body as it came: the handler sees the same bytes and the same failure.
async fn read_body_in(req: &mut ServiceRequest, limit: usize) {
    let mut payload = req.take_payload();
    let mut read = BytesMut::new();
    loop {
        match payload.next().await {
            Some(Ok(chunk)) => {
                read.extend_from_slice(&chunk);
                if read.len() > limit {
                    let head = futures_util::stream::once(std::future::ready(Ok(read.freeze())));
                    let stream: BoxedPayloadStream = Box::pin(head.chain(payload));
                    req.set_payload(Payload::from(stream));
                    return;
                }
            }
            Some(Err(err)) => {
                let items = [Ok(read.freeze()), Err(err)];
                let stream: BoxedPayloadStream = Box::pin(futures_util::stream::iter(items));
                req.set_payload(Payload::from(stream));
                return;
            }
            None if read.is_empty() => {
                req.set_payload(Payload::None);
                return;
            }
            None => {
                req.set_payload(Payload::from(read.freeze()));
                return;
            }
        }
    }
}

/// Whether the write still holds the store's lock it took, right before its handler runs
/// (true when it took none). Under memory pressure (`allkeys-lru`) the store may have evicted
/// it, and another server taken it since: a conditional write must not go on then.
pub(super) async fn still_locked<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    store_lock: Option<(LockToken, Instant)>,
) -> bool {
    let (Some((token, _)), Some(c)) = (store_lock, inner.coordinator()) else {
        return true;
    };
    let held = inner
        .timed("lock", c.holds_lock(key.resource(), token))
        .await;
    held.unwrap_or(false)
}

/// Whether a conditional write holds the store's lock of its resource.
enum StoreLock {
    Held(LockToken),
    /// The store is one process's: this process's lock is all there is.
    NotShared,
    /// The store failed, or another server held the lock until the deadline.
    Unavailable,
}

/// Takes the store's lock of the group, waiting for another server's write of it until
/// `deadline`; with `retry_failures`, an attempt that timed out is retried until then too.
/// The token is minted once and every attempt uses it: an attempt that failed on this side
/// may still have taken the lock in the store, which a retry then finds held by the token,
/// and which the backlog releases with it if no attempt is known to have succeeded.
async fn lock_in_store<St: CollectableStore>(
    inner: &Rc<Inner<St>>,
    group: &Arc<ResourceGroup>,
    deadline: Instant,
    retry_failures: bool,
) -> StoreLock {
    let Some(coordinator) = inner.coordinator() else {
        return StoreLock::NotShared;
    };
    let token = LockToken::new(guard::unique_token());
    let mut pause = Duration::from_millis(2);
    let mut failed = false;
    loop {
        let attempt = inner
            .timed("lock", coordinator.try_lock(group, token, STORE_LOCK_TTL))
            .await;
        let (held_by_another, timed_out) = match attempt {
            Ok(true) => return StoreLock::Held(token),
            Ok(false) => (true, false),
            Err(err) => {
                failed = true;
                (false, matches!(err, StoreError::Timeout))
            }
        };
        // Only a timeout is worth retrying: the store is there but slow, and the attempt may
        // even have taken the lock. A store that refuses connections is out for everyone.
        let retry = held_by_another || (retry_failures && timed_out);
        if !retry || Instant::now() + pause >= deadline {
            if failed {
                Backlog::unlock_later(inner, Arc::clone(group), token);
            }
            if held_by_another {
                log::debug!(target: LOG, "the store lock of {group:?} was held too long");
            }
            return StoreLock::Unavailable;
        }
        actix_web::rt::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `PUT`, `PATCH` and `DELETE`: the writes of one resource (not of a collection) that take its
/// locks even without a precondition.
pub(super) fn takes_the_lock(method: &Method) -> bool {
    matches!(*method, Method::PUT | Method::PATCH | Method::DELETE)
}
