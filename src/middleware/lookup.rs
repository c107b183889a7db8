//! Store lookups: what the store holds for a request's key, synchronously where the store can
//! answer at once ([`CacheStore::get_now`]), awaited otherwise.

use std::time::SystemTime;

use actix_web::{
    dev::ServiceRequest,
    http::header::{HeaderMap, HeaderName},
};

use super::{Inner, LOG};
use crate::{
    entry::EntryKind,
    key::{self, push_variant, with_key_buffer},
    policy::Visibility,
    store::{CacheStore, CollectableStore, StoreError},
    CacheEntry, CacheKey,
};

/// The result of looking a request up in the store.
pub(super) enum Lookup {
    /// A stored response (fresh or not), and the variant marker that led to it, if any.
    Hit {
        entry: CacheEntry,
        marker: Option<CacheEntry>,
    },
    UriMiss,
    /// The primary key holds a variant marker, but not for this request's header values.
    VaryMiss(CacheEntry),
    StoreFailed,
}

impl Lookup {
    /// The variant marker a new variant joins, if the resource has one.
    pub(super) fn marker(&self) -> Option<&CacheEntry> {
        match self {
            Self::VaryMiss(marker) => Some(marker),
            Self::Hit { marker, .. } => marker.as_ref(),
            _ => None,
        }
    }
}

/// Looks a `GET`/`HEAD` up without awaiting, for stores that can answer at once. The key bytes
/// are built in a reused per-thread buffer: the hit path builds no owned key. `None`: the store
/// has to be awaited. With it, when nothing is stored, the primary key's seeded hash.
pub(super) fn lookup_now<St: CollectableStore>(
    inner: &Inner<St>,
    req: &ServiceRequest,
    now: SystemTime,
    forwarded: bool,
) -> (Option<Lookup>, Option<u64>) {
    if inner.policy.visibility == Visibility::Private {
        return (Some(Lookup::UriMiss), None);
    }
    if super::backlog::any() {
        // Some collect has not reached the store: the awaited lookup checks this resource.
        return (None, None);
    }
    with_key_buffer(|buf| {
        key::write_primary(req.request(), buf, forwarded);
        let lookup = resolve_now(&inner.store, buf, req.headers(), now);
        // Nothing stored: the primary key's hash, for the uncacheable pass (`pass.rs`).
        let hash = matches!(lookup, Some(Lookup::UriMiss)).then(|| key::seeded_hash(buf));
        (lookup, hash)
    })
}

/// Looks `key` up without awaiting (`None`: the store has to be awaited).
pub(super) fn lookup_key_now<St: CacheStore>(
    store: &St,
    key: &CacheKey,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Lookup> {
    with_key_buffer(|buf| {
        buf.extend_from_slice(key.as_bytes());
        resolve_now(store, buf, headers, now)
    })
}

/// The lookup of the primary key in `buf`, and of the variant a marker there leads to.
fn resolve_now<St: CacheStore>(
    store: &St,
    buf: &mut Vec<u8>,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Lookup> {
    let primary = match store.get_now(buf)?.map_err(log_get_error) {
        Ok(primary) => primary,
        Err(()) => return Some(Lookup::StoreFailed),
    };
    Some(match primary_lookup(primary, now) {
        Ok(lookup) => lookup,
        Err(marker) => {
            if let EntryKind::Variants(v) = marker.kind() {
                push_variant(buf, &v.names, v.generation, headers);
            }
            let answer = store.get_now(buf)?.map_err(log_get_error);
            variant_lookup(answer, marker, now)
        }
    })
}

/// What the store holds at `key` as every server sees it, for judging a write: a store
/// several servers share is asked through [`Coordinate::get_shared`](crate::Coordinate), past
/// any local tier.
pub(super) async fn lookup_shared<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    headers: &HeaderMap,
) -> Lookup {
    let Some(c) = inner.coordinator() else {
        return lookup(inner, key, headers).await;
    };
    if super::backlog::holds::<St>(key.resource()) {
        return Lookup::StoreFailed;
    }
    awaited(inner, Tier::Shared(c), key, headers, SystemTime::now()).await
}

/// Looks `key` (and the variant its marker leads to) up in the store.
pub(super) async fn lookup<St: CollectableStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    headers: &HeaderMap,
) -> Lookup {
    if super::backlog::holds::<St>(key.resource()) {
        log::debug!(target: LOG, "{key:?}: a collect is outstanding, served uncached");
        return Lookup::StoreFailed;
    }
    let now = SystemTime::now();
    if let Some(lookup) = lookup_key_now(&inner.store, key, headers, now) {
        return lookup;
    }
    awaited(inner, Tier::Store, key, headers, now).await
}

/// Which view of the store a lookup asks.
#[derive(Clone, Copy)]
enum Tier<'a> {
    /// The store itself (a local tier first, where it has one).
    Store,
    /// What every server sees ([`Coordinate::get_shared`](crate::Coordinate)).
    Shared(&'a dyn crate::store::Coordinate),
}

/// One awaited get from `tier`, under the policy's timeout.
async fn get_from<St: CollectableStore>(
    inner: &Inner<St>,
    tier: Tier<'_>,
    key: &CacheKey,
) -> Result<Option<CacheEntry>, StoreError> {
    match tier {
        Tier::Store => inner.timed("get", inner.store.get(key)).await,
        Tier::Shared(c) => inner.timed("get", c.get_shared(key)).await,
    }
}

/// The awaited lookup of `key` in `tier`, and of the variant its marker leads to.
async fn awaited<St: CollectableStore>(
    inner: &Inner<St>,
    tier: Tier<'_>,
    key: &CacheKey,
    headers: &HeaderMap,
    now: SystemTime,
) -> Lookup {
    let primary = match get_from(inner, tier, key).await {
        Ok(primary) => primary,
        Err(_) => return Lookup::StoreFailed,
    };
    match primary_lookup(primary, now) {
        Ok(lookup) => lookup,
        Err(marker) => {
            let variant = match marker.kind() {
                EntryKind::Variants(v) => key.variant(&v.names, v.generation, headers),
                _ => key.clone(),
            };
            let answer = get_from(inner, tier, &variant).await.map_err(drop);
            variant_lookup(answer, marker, now)
        }
    }
}

/// The write marker of a group and query ([`CacheKey::write_marker`]): what the last successful
/// write of it made stale. `Err`: the store failed.
pub(super) async fn write_marker<St: CollectableStore>(
    inner: &Inner<St>,
    marker: &CacheKey,
) -> Result<Option<CacheEntry>, StoreError> {
    if super::backlog::holds::<St>(marker.resource()) {
        return Err(StoreError::unavailable(
            "a collect of the resource is outstanding",
        ));
    }
    let now = SystemTime::now();
    let found = match inner.coordinator() {
        Some(c) => get_from(inner, Tier::Shared(c), marker).await,
        None => match inner.store.get_now(marker.as_bytes()) {
            Some(found) => found,
            None => get_from(inner, Tier::Store, marker).await,
        },
    };
    Ok(found?.filter(|e| !e.is_expired(now) && matches!(e.kind(), EntryKind::Modified(_))))
}

fn log_get_error(err: StoreError) {
    super::log_failure("get", &err);
}

/// What the entry at a primary key means; `Err` holds a variant marker, whose variant is to be
/// looked up next.
fn primary_lookup(primary: Option<CacheEntry>, now: SystemTime) -> Result<Lookup, CacheEntry> {
    let primary = match primary {
        Some(entry) if !entry.is_expired(now) => entry,
        _ => return Ok(Lookup::UriMiss),
    };
    match primary.kind() {
        EntryKind::Response(_) => Ok(Lookup::Hit {
            entry: primary,
            marker: None,
        }),
        EntryKind::Variants(_) => Err(primary),
        EntryKind::Modified(_) => Ok(Lookup::UriMiss),
    }
}

/// What the answer for a variant key means.
fn variant_lookup(
    answer: Result<Option<CacheEntry>, ()>,
    marker: CacheEntry,
    now: SystemTime,
) -> Lookup {
    match answer {
        Ok(Some(entry))
            if !entry.is_expired(now) && matches!(entry.kind(), EntryKind::Response(_)) =>
        {
            Lookup::Hit {
                entry,
                marker: Some(marker),
            }
        }
        Ok(_) => Lookup::VaryMiss(marker),
        Err(()) => Lookup::StoreFailed,
    }
}

/// The request as it reached the cache: the key its lookup used, and its headers then. A
/// response is stored only under this key, and only when the handler got the same request.
pub(super) struct Identity {
    pub(super) key: CacheKey,
    /// The request headers as they reached the cache (a clone: reference counts). Variant keys
    /// take their values from here, not from what a middleware inside may have set.
    pub(super) headers: HeaderMap,
}

impl Identity {
    pub(super) fn of(req: &ServiceRequest, forwarded: bool) -> Self {
        Self {
            key: CacheKey::of_request(req.request(), forwarded),
            headers: req.headers().clone(),
        }
    }

    /// Whether the handler got another request than the one the key names: another method
    /// (the cache itself sends a `HEAD` miss on as `GET`), origin, path or query, or other
    /// values of the headers in `vary`. A middleware inside the cache did that (a method
    /// override, `NormalizePath`, a header derived from an API key).
    pub(super) fn changed(&self, handler: &actix_web::HttpRequest, vary: &[HeaderName]) -> bool {
        if handler.method() != actix_web::http::Method::GET {
            return true;
        }
        let forwarded = crate::request::RequestFlags::of(handler.headers()).forwarded;
        !key::same_primary(handler, &self.key, forwarded)
            || vary.iter().any(|name| {
                !self
                    .headers
                    .get_all(name)
                    .eq(handler.headers().get_all(name))
            })
    }
}
