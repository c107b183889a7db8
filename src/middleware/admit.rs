//! Admission: what is stored, under which key, and only when no write of the resource
//! happened while the handler ran (the race guard, in-process and across servers).

use std::time::SystemTime;

use actix_web::{
    body::{to_bytes, BodySize, EitherBody, MessageBody},
    dev::ServiceResponse,
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        StatusCode,
    },
    web::Bytes,
    Error, HttpResponse,
};

use super::{
    answer::{self, Representation},
    coalesce::Outcome,
    nested::mark_handled,
    status::{Detail, Fwd, CACHE_STATUS},
    trip::{Guard, Guarded, Trip},
    Inner, LOG,
};
use crate::{
    conditional,
    entry::{EntryKind, StoredResponse, StoredTag, VariantMarker},
    etag,
    freshness::{self, NotStored, StorePlan},
    guard, key,
    policy::{Policy, Visibility},
    store::{CollectableStore, Generation, StoreError},
    CacheEntry, CacheKey,
};

/// The end of a miss: stores the handler's response where it may be stored, under the key the
/// lookup used, and answers the client's own preconditions against it (RFC 9110 §13.2.1: only
/// a `2xx`). Bodies that are not buffered (streams, bodies over the limit, errors that are not
/// stored) pass through untouched.
pub(super) async fn admit<St, B>(
    inner: &Inner<St>,
    res: ServiceResponse<B>,
    trip: Trip,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    St: CollectableStore,
    B: MessageBody + 'static,
{
    let status = res.status();
    let now = SystemTime::now();
    let plan = freshness::storability(
        &inner.policy,
        res.request().headers(),
        status,
        res.headers(),
        now,
    )
    .and_then(
        |plan| match trip.identity.changed(res.request(), &plan.vary) {
            true => Err(NotStored::RequestChanged),
            false => Ok(plan),
        },
    );
    let conditions = trip.conditions.as_ref().unwrap_or(res.request().headers());
    let judged = conditional::has_preconditions(conditions);
    if let Some(reason) = unbuffered(inner, &res, &plan, judged) {
        if !judged && trip.conditions.is_none() && trip.forward.fwd == Fwd::UriMiss {
            // The next such request of this key takes the uncacheable pass (`pass.rs`).
            guard::mark_passes(key::seeded_hash(trip.identity.key.as_bytes()));
        }
        return Ok(pass_unbuffered(inner, res, trip, reason));
    }
    let (http_req, res) = res.into_parts();
    let (mut head, body) = res.into_parts();
    let body = buffer(body).await?;
    let computed_etag = status.is_success() && !head.headers().contains_key(header::ETAG);
    if computed_etag {
        head.headers_mut()
            .insert(header::ETAG, etag::strong_etag(&body));
    }
    let (detail, ttl) = match &plan {
        Ok(plan) => {
            let (detail, ttl, raced) = store(inner, &trip, &mut head, &body, plan).await;
            if raced && computed_etag {
                // A write completed while this response was made: the cache cannot vouch that
                // it is still current, so it gives it no validator a client could write with.
                head.headers_mut().remove(header::ETAG);
            }
            (detail, ttl)
        }
        Err(reason) => {
            log::trace!(target: LOG, "not stored {}: {}", http_req.path(), reason.detail());
            mark_private(&inner.policy, head.headers_mut());
            (Detail::Reason(*reason), None)
        }
    };
    let stored = detail == Detail::Stored;
    let conditions = trip.conditions.as_ref().unwrap_or(http_req.headers());
    let rep = Representation::Fresh { head, body };
    let mut response = answer::respond(rep, http_req.method(), Some(conditions));
    let value = inner.statuses.with_ttl(trip.forward.fwd, detail, ttl);
    answer::finish(&http_req, &mut response, value, stored);
    trip.land(match plan {
        Ok(_) if stored => Outcome::Stored,
        Ok(_) => Outcome::Other,
        Err(reason) => Outcome::NotStored(reason, status),
    });
    Ok(ServiceResponse::new(http_req, response).map_into_right_body())
}

/// Why the response passes through unbuffered, if it does: a body that is streamed or over the
/// limit, an error that is not stored, or a response that says `no-store` to a request without
/// preconditions (no cache will keep it, so no validator is worth a hash of its body). Other
/// `2xx` responses are buffered for their ETag and the request's preconditions. `judged`: the
/// client's request has preconditions.
pub(super) fn unbuffered<St, B: MessageBody>(
    inner: &Inner<St>,
    res: &ServiceResponse<B>,
    plan: &Result<StorePlan, NotStored>,
    judged: bool,
) -> Option<NotStored> {
    if let Some(reason) = unhashable(res.response().body().size(), inner.policy.max_body_size) {
        return Some(reason);
    }
    match plan {
        Err(reason) if !res.status().is_success() => Some(*reason),
        Err(NotStored::NoStore) if !judged => Some(NotStored::NoStore),
        _ => None,
    }
}

/// Why a body of `size` is neither buffered nor hashed, if it is not: a stream, or more than
/// `limit` bytes. The validator probe follows the same rule.
pub(super) fn unhashable(size: BodySize, limit: usize) -> Option<NotStored> {
    match size {
        BodySize::Stream => Some(NotStored::Streaming),
        BodySize::Sized(n) if usize::try_from(n).map_or(true, |n| n > limit) => {
            Some(NotStored::TooLarge)
        }
        _ => None,
    }
}

fn pass_unbuffered<St, B>(
    inner: &Inner<St>,
    res: ServiceResponse<B>,
    trip: Trip,
    reason: NotStored,
) -> ServiceResponse<EitherBody<B>> {
    let status = res.status();
    let res = passed(inner, res, trip.forward.fwd, Detail::Reason(reason));
    trip.land(Outcome::NotStored(reason, status));
    res
}

/// A response the cache passes on as it is, with what the cache adds to every response it does
/// not store: the nested-cache marker, `private` under a private policy, `Cache-Status`.
pub(super) fn passed<St, B>(
    inner: &Inner<St>,
    res: ServiceResponse<B>,
    fwd: Fwd,
    detail: Detail,
) -> ServiceResponse<EitherBody<B>> {
    log::trace!(target: LOG, "not stored {}: {:?}", res.request().path(), detail);
    let mut res = res.map_into_left_body();
    let req = res.request().clone();
    mark_handled(&req, res.response_mut(), false);
    mark_private(&inner.policy, res.headers_mut());
    if let Some(v) = inner.statuses.get(fwd, detail) {
        res.headers_mut().insert(CACHE_STATUS, v);
    }
    res
}

/// The whole body of a response that is to be hashed or stored.
async fn buffer<B: MessageBody>(body: B) -> Result<Bytes, Error> {
    match to_bytes(body).await {
        Ok(body) => Ok(body),
        Err(err) => {
            let err = err.into();
            log::warn!(target: LOG, "response body failed while buffering: {err}");
            // The cause goes to the log; the client gets an opaque 500, as it would have got a
            // cut-off response without the cache.
            Err(actix_web::error::ErrorInternalServerError(
                "response body failed",
            ))
        }
    }
}

/// Stores a storable response: the `Cache-Control` and `Vary` the cache promises added, under
/// the lookup's key. Returns the `Cache-Status` detail, when stored its freshness, and whether
/// a write of the resource completed while the miss was in flight.
async fn store<St: CollectableStore>(
    inner: &Inner<St>,
    trip: &Trip,
    head: &mut HttpResponse<()>,
    body: &Bytes,
    plan: &StorePlan,
) -> (Detail, Option<u64>, bool) {
    let now = SystemTime::now();
    prepare_stored_headers(&inner.policy, head.headers_mut(), plan);
    let stored = stored_response(head.status(), head.headers(), body.clone(), plan, now);
    let entry = CacheEntry::new(now, plan.ttl + plan.keep, EntryKind::Response(stored));
    let at = Placement {
        key: &trip.identity.key,
        headers: &trip.identity.headers,
        plan,
        marker: trip.variant_marker(),
        guard: trip.guard,
    };
    match store_fresh_or_why(inner, at, entry).await {
        Admitted::Stored => {
            log::debug!(target: LOG, "stored {:?} for {}s", trip.identity.key, plan.ttl.as_secs());
            (Detail::Stored, Some(plan.ttl.as_secs()), false)
        }
        Admitted::Raced => (Detail::NotStored, None, true),
        Admitted::NotStored => (Detail::NotStored, None, false),
    }
}

/// Under [`Visibility::Private`], tells downstream caches the same: `private, no-cache` where
/// the handler set no `Cache-Control` (RFC 9111 §5.2.2.7).
pub(super) fn mark_private(policy: &Policy, headers: &mut HeaderMap) {
    if policy.visibility == Visibility::Private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
    }
}

/// Adds what the cache promises to a response it stores: `Cache-Control` where the handler set
/// none, and the policy's `cache_vary` names in `Vary`.
pub(super) fn prepare_stored_headers(policy: &Policy, headers: &mut HeaderMap, plan: &StorePlan) {
    // A shared cache passes the response's own directives on unchanged.
    if !policy.shared && !headers.contains_key(header::CACHE_CONTROL) {
        let secs = plan.ttl.as_secs();
        // A response stored per user must not be stored by shared caches downstream.
        let value = if plan.per_user {
            format!("private, max-age={secs}")
        } else if policy.visibility == Visibility::Public {
            format!("public, max-age={secs}")
        } else {
            format!("max-age={secs}")
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
    let declared = crate::freshness::parse_vary(headers).unwrap_or_default();
    let missing: Vec<&HeaderName> = policy
        .vary
        .iter()
        .filter(|name| !declared.contains(name))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::try_from(list) {
            headers.append(header::VARY, value);
        }
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and fields a cache recomputes are not stored.
pub(super) fn is_stored_field(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::CONNECTION
            | header::TRANSFER_ENCODING
            | header::UPGRADE
            | header::TE
            | header::TRAILER
            | header::PROXY_AUTHENTICATE
            | header::AGE
            | header::CONTENT_LENGTH
    ) && name.as_str() != "keep-alive"
        && name.as_str() != "proxy-connection"
        && name.as_str() != "cache-status"
}

/// Whether `name` is listed in the response's `Connection` field, which makes it hop-by-hop
/// (RFC 9110 §7.6.1).
pub(super) fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).any(|line| {
        line.as_bytes().split(|&b| b == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

/// The stored form of a response: its storable fields, body, validators and freshness.
pub(super) fn stored_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    plan: &StorePlan,
    now: SystemTime,
) -> StoredResponse {
    let stored: Box<[(HeaderName, HeaderValue)]> = headers
        .iter()
        .filter(|(name, _)| {
            is_stored_field(name)
                && !named_by_connection(headers, name)
                && !plan.strip.contains(name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    StoredResponse {
        status,
        etag: headers.get(header::ETAG).and_then(StoredTag::parse),
        last_modified: conditional::http_date(headers, &header::LAST_MODIFIED),
        initial_age: crate::freshness::current_age(headers, now),
        headers: stored,
        body,
        shareable_with_credentials: plan.shareable_with_credentials,
        fresh_until: now + plan.ttl,
        must_revalidate: plan.must_revalidate,
        immutable: plan.immutable,
        stale_while_revalidate: plan.stale_while_revalidate,
        stale_if_error: plan.stale_if_error,
    }
}

/// Where and how a fresh response is stored: under the key the lookup used, its variant taken
/// from the request headers as they reached the cache.
pub(super) struct Placement<'a> {
    pub(super) key: &'a CacheKey,
    pub(super) headers: &'a HeaderMap,
    pub(super) plan: &'a StorePlan,
    /// The variant marker the lookup found at the primary key, if any: a new variant of the
    /// same `Vary` names joins its generation, so the variants stored before stay reachable.
    pub(super) marker: Option<&'a CacheEntry>,
    pub(super) guard: Guard,
}

/// Stores a fresh response (and its `Vary` marker), unless a write of the resource happened
/// since the miss began. Returns whether the response is stored.
pub(super) async fn store_fresh<St: CollectableStore>(
    inner: &Inner<St>,
    at: Placement<'_>,
    entry: CacheEntry,
) -> bool {
    store_fresh_or_why(inner, at, entry).await == Admitted::Stored
}

/// What became of a response the cache meant to store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Admitted {
    Stored,
    /// A write of the resource completed while the miss was in flight (on this server or
    /// another): the response may predate it.
    Raced,
    /// The store failed, or a collect of the resource has not reached it yet.
    NotStored,
}

/// [`store_fresh`], saying why a response was not stored.
pub(super) async fn store_fresh_or_why<St: CollectableStore>(
    inner: &Inner<St>,
    at: Placement<'_>,
    entry: CacheEntry,
) -> Admitted {
    let (key, resource) = (at.key, at.key.resource());
    let write_generation = match at.guard.generation {
        Guarded::Generation(generation) => generation,
        Guarded::Unknown => {
            log::trace!(target: LOG, "not stored {key:?}: write generation unknown");
            return Admitted::NotStored;
        }
    };
    if guard::written_since::<St>(resource, at.guard.epoch) {
        log::trace!(target: LOG, "not stored {key:?}: written while in flight");
        return Admitted::Raced;
    }
    if super::backlog::holds::<St>(resource) {
        log::trace!(target: LOG, "not stored {key:?}: a collect of it is outstanding");
        return Admitted::NotStored;
    }
    let target = if at.plan.vary.is_empty() {
        key.clone()
    } else {
        match store_variant_marker(inner, &at, &entry, write_generation).await {
            Ok(target) => target,
            Err(why) => return why,
        }
    };
    let wrote_marker = !at.plan.vary.is_empty();
    let set = guarded_set(inner, &target, entry, write_generation).await;
    if set != Admitted::Stored {
        if wrote_marker {
            let _ = inner.timed("remove", inner.store.remove(key)).await;
        }
        return set;
    }
    // The re-check closes the window between the check above and the sets.
    if guard::written_since::<St>(resource, at.guard.epoch) {
        let _ = inner.timed("remove", inner.store.remove(&target)).await;
        if wrote_marker {
            let _ = inner.timed("remove", inner.store.remove(key)).await;
        }
        log::trace!(target: LOG, "removed {target:?}: written while in flight");
        return Admitted::Raced;
    }
    Admitted::Stored
}

/// Stores the variant marker at the primary key (joining the existing one's generation where
/// it names the same headers) and returns the variant's key, or why it could not.
async fn store_variant_marker<St: CollectableStore>(
    inner: &Inner<St>,
    at: &Placement<'_>,
    entry: &CacheEntry,
    write_generation: Option<Generation>,
) -> Result<CacheKey, Admitted> {
    let joined = at.marker.and_then(|m| match m.kind() {
        EntryKind::Variants(v) if *v.names == *at.plan.vary => Some((v.generation, m.expires_at())),
        _ => None,
    });
    let (generation, expires_at) = match joined {
        Some((generation, expires_at)) => (generation, expires_at.max(entry.expires_at())),
        None => (guard::unique_token(), entry.expires_at()),
    };
    let ttl = expires_at
        .duration_since(entry.stored_at())
        .unwrap_or(at.plan.ttl);
    let marker = CacheEntry::new(
        entry.stored_at(),
        ttl,
        EntryKind::Variants(VariantMarker {
            names: at.plan.vary.clone().into_boxed_slice(),
            generation,
        }),
    );
    match guarded_set(inner, at.key, marker, write_generation).await {
        Admitted::Stored => Ok(at.key.variant(&at.plan.vary, generation, at.headers)),
        why => Err(why),
    }
}

/// The store's conditional set; a store of one process has none and sets.
async fn set_if_generation<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    entry: CacheEntry,
    generation: Generation,
) -> Result<bool, StoreError> {
    match inner.coordinator() {
        Some(c) => c.set_if_generation(key, entry, generation).await,
        None => inner.store.set(key, entry).await.map(|()| true),
    }
}

/// Sets `entry`, under the store's write generation when there is one.
async fn guarded_set<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    entry: CacheEntry,
    generation: Option<Generation>,
) -> Admitted {
    match generation {
        Some(generation) => match inner
            .timed("set", set_if_generation(inner, key, entry, generation))
            .await
        {
            Ok(true) => Admitted::Stored,
            Ok(false) => {
                log::trace!(target: LOG, "not stored {key:?}: written on another server");
                Admitted::Raced
            }
            Err(_) => Admitted::NotStored,
        },
        None => match inner.timed("set", inner.store.set(key, entry)).await {
            Ok(()) => Admitted::Stored,
            Err(_) => Admitted::NotStored,
        },
    }
}
