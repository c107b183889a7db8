//! Unsafe methods: locks → preconditions (judged before the handler, RFC 9110 §13.2.2) →
//! handler → invalidation, and a marker of what the write made stale.

use std::{
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use actix_service::Service;
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method},
    Error, HttpMessage,
};

use super::{
    backlog::Backlog,
    invalidate,
    lock::{still_locked, take_locks, takes_the_lock, Locks, STORE_LOCK_TTL},
    lookup::{self, Lookup},
    nested::{ValidatorProbed, WriteLockHeld},
    probe::{self, Probed},
    status::{Detail, Fwd, CACHE_STATUS},
    Inner, LOG,
};
use crate::{
    conditional::{self, Current, Preconditions},
    entry::{EntryKind, ModifiedMarker, StoredTag},
    etag,
    freshness::servable,
    policy::Visibility,
    request::RequestFlags,
    store::{CollectableStore, LockToken},
    CacheEntry, CacheKey,
};

/// How many superseded entity tags a write marker remembers.
const MAX_SUPERSEDED: usize = 16;
/// What the store holds of a write's resource: the entry at its key, and the group's write
/// marker.
pub(super) struct Stored {
    pub(super) lookup: Lookup,
    pub(super) marker: Option<CacheEntry>,
    /// The store answered both lookups: what it holds is known.
    pub(super) known: bool,
}

impl Stored {
    /// Nothing of the resource is stored under its key, and no write left a marker.
    pub(super) fn is_nothing(&self) -> bool {
        matches!(self.lookup, Lookup::UriMiss) && self.marker.is_none()
    }
}

/// Unsafe methods: check preconditions before the handler, and after a successful write drop
/// every stored entry of the resource's group and remember which entity tags it made stale.
/// `key` is the request's key as it reached the cache; `prefetched` what a synchronous lookup
/// found.
///
/// A conditional write fails closed ([`Cache::fail_open_conditional_writes`](crate::Cache)
/// turns that off): `503` when its locks cannot be had within [`LOCK_WAIT`](super::lock::LOCK_WAIT) or the store
/// cannot say what it holds of the resource.
pub(super) async fn write<S, B, St>(
    service: Rc<S>,
    inner: Rc<Inner<St>>,
    mut req: ServiceRequest,
    key: CacheKey,
    prefetched: Option<Stored>,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    let flags = RequestFlags::of(req.headers());
    let stores = inner.policy.visibility != Visibility::Private;
    let fail_closed = stores && flags.preconditions && !inner.policy.fail_open_writes;
    // Writes of one resource that a precondition may guard go one at a time: check, handler,
    // marker. A plain PUT, PATCH or DELETE takes the locks too, so that it cannot slip in
    // between a conditional write's check and its handler (a lost update); POST and extension
    // methods, which usually act on a collection, do not wait.
    let guarded = flags.preconditions || takes_the_lock(req.method());
    let locks = if stores && guarded && req.extensions().get::<WriteLockHeld>().is_none() {
        match take_locks(&inner, &mut req, &key, fail_closed).await {
            Some(locks) => locks,
            None => return Ok(unavailable(&inner, req)),
        }
    } else {
        Locks::default()
    };
    // A prefetched lookup predates the lock: look again once it is held.
    let prefetched = prefetched.filter(|_| locks.local.is_none() && locks.remote.is_none());
    let target = Target {
        key: &key,
        flags,
        prefetched,
        fail_closed,
        // Counted from now, not from when the store granted it: half its life, to be sure.
        store_lock: locks
            .remote
            .map(|token| (token, Instant::now() + STORE_LOCK_TTL / 2)),
    };
    let result = judge_and_run(&service, &inner, req, target).await;
    locks.release(&inner, &key).await;
    result
}

/// The `503` of a conditional write that could not be judged.
fn unavailable<St, B>(inner: &Inner<St>, req: ServiceRequest) -> ServiceResponse<EitherBody<B>> {
    let mut res = conditional::validator_unavailable();
    if let Some(v) = inner
        .statuses
        .get(Fwd::Method, Detail::ValidatorUnavailable)
    {
        res.headers_mut().insert(CACHE_STATUS, v);
    }
    req.into_response(res).map_into_right_body()
}

/// What a write targets: its key as it reached the cache, its request flags, and what a
/// synchronous lookup found (`None`: look it up).
struct Target<'a> {
    key: &'a CacheKey,
    flags: RequestFlags,
    prefetched: Option<Stored>,
    /// A write whose preconditions cannot be judged gets `503`.
    fail_closed: bool,
    /// The write's lock in a store several servers share, and until when it surely holds it:
    /// no server can store a response of the resource until then.
    store_lock: Option<(LockToken, Instant)>,
}

/// Judges the preconditions against what is stored, calls the handler if they pass, then
/// invalidates and leaves the write marker.
async fn judge_and_run<S, B, St>(
    service: &Rc<S>,
    inner: &Rc<Inner<St>>,
    req: ServiceRequest,
    target: Target<'_>,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    let Target {
        key,
        flags,
        prefetched,
        fail_closed,
        store_lock,
    } = target;
    let stores = inner.policy.visibility != Visibility::Private;
    let stored = match prefetched {
        Some(stored) => stored,
        None if stores => stored_of(inner, key, &req).await,
        None => Stored {
            lookup: Lookup::UriMiss,
            marker: None,
            known: true,
        },
    };
    if fail_closed && !stored.known {
        log::debug!(target: LOG, "503 {} {}: the store cannot say what it holds", req.method(), req.path());
        return Ok(unavailable(inner, req));
    }
    // What the write will make stale, oldest first: tags an earlier write made stale, the
    // stored tag, and the strong tags the client's If-Match claims are current.
    let mut superseded: Vec<Box<[u8]>> = Vec::new();
    if let Some(EntryKind::Modified(m)) = stored.marker.as_ref().map(CacheEntry::kind) {
        superseded.extend(m.superseded.iter().cloned());
    }
    let (req, verdict) = judge(service, inner, req, flags, &stored, &mut superseded).await?;
    if verdict == Preconditions::Failed {
        log::debug!(target: LOG, "412 {} {}, handler not called", req.method(), req.path());
        let mut res = conditional::precondition_failed();
        if let Some(v) = inner.statuses.get(Fwd::Method, Detail::PreconditionFailed) {
            res.headers_mut().insert(CACHE_STATUS, v);
        }
        return Ok(req.into_response(res).map_into_right_body());
    }
    etag::for_each_strong(req.headers().get_all(header::IF_MATCH), |tag| {
        superseded.push(tag.into());
    });
    if fail_closed && !still_locked(inner, key, store_lock).await {
        log::debug!(target: LOG, "503 {}: the store lost the lock of {:?}", req.path(), key.resource());
        return Ok(unavailable(inner, req));
    }
    let method = req.method().clone();
    let res = service.call(req).await?;
    let Some(plan) = invalidate::plan(inner, key, &res) else {
        return Ok(res.map_into_left_body());
    };
    let deadline = invalidate::deadline(inner);
    let locked_in_store = store_lock.is_some_and(|(_, until)| Instant::now() < until);
    if stores && is_known_write(&method) && !locked_in_store {
        // A response stored while the handler ran (a read on another server, which cannot know
        // of this write yet) was handed to its client with its tag: the marker must name it.
        // Under the store's lock nothing can have been stored, and the re-read (whose reads
        // leave a failing store alone) would only take time from the collect.
        let now = stored_now(inner, key, res.request().headers(), deadline).await;
        superseded.extend(strong_tag_of(&now));
    }
    invalidate::apply(inner, plan, deadline).await;
    // A marker is worth writing when it remembers something. Only the methods known to change
    // the representation leave one; an extension method may be read-only (WebDAV's PROPFIND),
    // so it only invalidates, as RFC 9111 §4.4 asks.
    let remembers = !superseded.is_empty() || !stored.is_nothing() || flags.preconditions;
    if stores && remembers && is_known_write(&method) {
        leave_marker(inner, key, &res, superseded).await;
    }
    Ok(res.map_into_left_body())
}

/// Judges the write's preconditions against the current representation as far as the cache
/// knows it, asking the handler with a [`probe`] when the store holds no representation of
/// the resource and what its last write made stale does not settle it.
/// Adds the tags the write will make stale to `superseded`. `Err` is the answer of a write
/// whose probe left nothing to go on with.
async fn judge<S, B, St>(
    service: &Rc<S>,
    inner: &Rc<Inner<St>>,
    req: ServiceRequest,
    flags: RequestFlags,
    stored: &Stored,
    superseded: &mut Vec<Box<[u8]>>,
) -> Result<(ServiceRequest, Preconditions), Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    if !flags.preconditions {
        return Ok((req, Preconditions::Proceed));
    }
    let current = current_of(inner, flags, stored, superseded);
    let verdict = conditional::evaluate(req.method(), req.headers(), &current);
    // Without a stored representation the cache can only fail a tag the resource's last
    // write made stale; any other verdict is a guess, which the probe replaces.
    let known = matches!(current, Current::Representation { .. });
    let probes = inner.policy.probe_validators
        && inner.policy.visibility != Visibility::Private
        && stored.known
        && probe_can_decide(req.headers())
        && !req.extensions().contains::<ValidatorProbed>();
    if known || !probes || verdict == Preconditions::Failed {
        return Ok((req, verdict));
    }
    let (req, probed) = probe::probe(&**service, inner, req).await?;
    let current = match &probed {
        Probed::Representation {
            etag,
            last_modified,
        } => {
            let etag = etag.as_ref().map(StoredTag::tag);
            if let Some(tag) = etag.filter(|t| !t.weak) {
                superseded.push(tag.opaque.into());
            }
            Current::Representation {
                etag,
                last_modified: *last_modified,
            }
        }
        Probed::Absent => Current::Absent,
        Probed::Unknown => Current::Unknown,
    };
    let verdict = conditional::evaluate(req.method(), req.headers(), &current);
    Ok((req, verdict))
}

/// Whether a write's preconditions are ones a probe's answer can decide: `If-Match`,
/// `If-None-Match`, or an `If-Unmodified-Since` that is a date. A write's `If-Modified-Since`
/// is ignored (RFC 9110 §13.1.3), and so is an `If-Unmodified-Since` that does not parse.
fn probe_can_decide(headers: &header::HeaderMap) -> bool {
    headers.contains_key(header::IF_MATCH)
        || headers.contains_key(header::IF_NONE_MATCH)
        || conditional::http_date(headers, &header::IF_UNMODIFIED_SINCE).is_some()
}

/// What the store holds at `key` once a write's handler is done, asking again after a failure
/// until `deadline` (a slow or frozen store answers again soon).
async fn stored_now<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    headers: &actix_web::http::header::HeaderMap,
    deadline: Instant,
) -> Lookup {
    let found = invalidate::retry_until(deadline, || async {
        match lookup::lookup_shared(inner, key, headers).await {
            Lookup::StoreFailed => Err(Lookup::StoreFailed),
            found => Ok(found),
        }
    })
    .await;
    found.unwrap_or_else(|failed| failed)
}

/// The opaque strong entity tag of the response a lookup found, if it found one with one.
fn strong_tag_of(lookup: &Lookup) -> Option<Box<[u8]>> {
    let Lookup::Hit { entry, .. } = lookup else {
        return None;
    };
    let EntryKind::Response(response) = entry.kind() else {
        return None;
    };
    let tag = response.etag.as_ref().map(StoredTag::tag)?;
    (!tag.weak).then(|| tag.opaque.into())
}

/// What the store holds of `key` and its group's write marker.
async fn stored_of<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    req: &ServiceRequest,
) -> Stored {
    let lookup = lookup::lookup_shared(inner, key, req.headers()).await;
    let marker_key = CacheKey::write_marker(key.resource_handle(), key.query_handle());
    let marker = lookup::write_marker(inner, &marker_key).await;
    let known = marker.is_ok() && !matches!(lookup, Lookup::StoreFailed);
    Stored {
        lookup,
        marker: marker.ok().flatten(),
        known,
    }
}

/// The current representation as far as the cache knows it: a fresh stored response this
/// request may be served (RFC 9111 §3.5: a request with unkeyed credentials is not judged
/// against one it could not be served), else what the group's last write made stale, else
/// unknown (the handler judges). A stored strong tag is added to `superseded`.
fn current_of<'a, St>(
    inner: &Inner<St>,
    flags: RequestFlags,
    stored: &'a Stored,
    superseded: &mut Vec<Box<[u8]>>,
) -> Current<'a> {
    if let Lookup::Hit { entry, .. } = &stored.lookup {
        if let EntryKind::Response(response) = entry.kind() {
            // A stale entry may no longer be current: only the handler can judge.
            if response.status.is_success()
                && servable(&inner.policy, flags, response)
                && response.is_fresh(SystemTime::now())
            {
                let etag = response.etag.as_ref().map(StoredTag::tag);
                if let Some(tag) = etag.filter(|t| !t.weak) {
                    superseded.push(tag.opaque.into());
                }
                return Current::Representation {
                    etag,
                    last_modified: response.last_modified,
                };
            }
        }
    }
    match stored.marker.as_ref().map(CacheEntry::kind) {
        Some(EntryKind::Modified(m)) => Current::Modified {
            superseded: &m.superseded,
            last_modified: m.last_modified,
        },
        _ => Current::Unknown,
    }
}

/// Leaves the group's write marker: the entity tags the write made stale, and when it happened.
async fn leave_marker<St: CollectableStore, B>(
    inner: &Rc<Inner<St>>,
    key: &CacheKey,
    res: &ServiceResponse<B>,
    superseded: Vec<Box<[u8]>>,
) {
    let now = SystemTime::now();
    // Without a Last-Modified from the application, the write time, truncated to HTTP-date
    // precision, bounds If-Unmodified-Since: the resource certainly changed then.
    let last_modified = conditional::http_date(res.headers(), &header::LAST_MODIFIED)
        .unwrap_or_else(|| truncate_to_seconds(now));
    let marker = CacheEntry::new(
        now,
        inner.policy.expiry,
        EntryKind::Modified(ModifiedMarker {
            superseded: newest_distinct(superseded, MAX_SUPERSEDED),
            last_modified: Some(last_modified),
        }),
    );
    let marker_key = CacheKey::write_marker(key.resource_handle(), key.query_handle());
    if inner
        .timed("set", inner.store.set(&marker_key, marker.clone()))
        .await
        .is_err()
    {
        Backlog::mark_later(inner, marker_key, marker);
    }
}

/// `PUT`, `PATCH`, `DELETE` and `POST`: the methods known to change the target resource.
fn is_known_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
    )
}

/// `time` rounded down to a whole second, the precision of HTTP dates.
fn truncate_to_seconds(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The last `max` distinct tags of `tags` (oldest first), in their original order.
fn newest_distinct(tags: Vec<Box<[u8]>>, max: usize) -> Box<[Box<[u8]>]> {
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(max.min(tags.len()));
    for tag in tags.into_iter().rev() {
        if kept.len() == max {
            break;
        }
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    kept.reverse();
    kept.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_tags_keep_the_newest() {
        let tags: Vec<Box<[u8]>> = ["a", "b", "a", "c", "d"]
            .iter()
            .map(|t| t.as_bytes().into())
            .collect();
        let kept = newest_distinct(tags, 3);
        let kept: Vec<&[u8]> = kept.iter().map(|t| &**t).collect();
        assert_eq!(kept, [&b"a"[..], b"c", b"d"]);
    }
}
