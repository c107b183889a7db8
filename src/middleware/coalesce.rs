//! Request coalescing: concurrent misses for one key call the handler once; the others wait
//! for its response, within a bound, and are served from the store if it was stored
//! (`Cache-Status: ...; collapsed`, RFC 9211 §2.6).

use std::time::SystemTime;

use actix_web::{
    body::BoxBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{header::HeaderMap, StatusCode},
    HttpMessage,
};

use super::{
    answer::{serve_hit, Hit},
    lookup::{self, Identity, Lookup},
    nested::{BackgroundRefresh, OuterCache},
    status::{Detail, Fwd, CACHE_STATUS},
    Inner, LOG,
};
use crate::{
    conditional,
    entry::EntryKind,
    freshness::{self, NotStored, Reuse},
    guard::{self, Flight},
    key::seeded_hash,
    policy::{Policy, Visibility},
    request::RequestFlags,
    store::CollectableStore,
    CacheEntry,
};

/// What joining a key's flight gave.
pub(super) enum Joined {
    /// Go to the handler, leading the key's flight when there is one to lead.
    Go(ServiceRequest, Option<Landing>),
    /// The leader's stored response answered this request.
    Answered(ServiceResponse<BoxBody>),
}

/// The lead of a key's flight: the other misses of the key wait until it lands.
pub(super) struct Landing {
    hash: u64,
    _flight: Flight,
}

/// How a flight ended, which decides whether the key's next misses queue again.
pub(super) enum Outcome {
    Stored,
    /// Not stored for this reason, answering with this status.
    NotStored(NotStored, StatusCode),
    /// A `Cache` inside answered; it stored the response or not.
    InnerCache {
        stored: bool,
    },
    /// Nothing that tells about the next request (a store that stopped it, a stale answer).
    Other,
}

impl Landing {
    /// Ends the flight. Keys whose responses are not stored for a reason in the response are
    /// not coalesced for a while, so that pages that are never stored (`private`,
    /// `Set-Cookie`) do not queue behind each other.
    pub(super) fn land(self, outcome: Outcome) {
        match outcome {
            Outcome::Stored => guard::mark_cacheable(self.hash),
            Outcome::NotStored(reason, status) if reason.is_about_the_response(status) => {
                guard::mark_uncacheable(self.hash)
            }
            Outcome::InnerCache { stored: false } => guard::mark_uncacheable(self.hash),
            _ => {}
        }
    }
}

/// Joins the key's flight, or waits for it and answers from what its leader stored.
pub(super) async fn join<St: CollectableStore>(
    inner: &Inner<St>,
    req: ServiceRequest,
    identity: &Identity,
    fwd: Fwd,
    marker: Option<&CacheEntry>,
) -> Joined {
    // A `Cache` around this one already coalesces (waiting on its flight would wait on
    // itself), and a background refresh already holds its key's flight.
    let exempt = {
        let ext = req.extensions();
        ext.contains::<OuterCache>() || ext.contains::<BackgroundRefresh>()
    };
    if exempt || !coalesces(&inner.policy, req.headers()) {
        return Joined::Go(req, None);
    }
    let hash = flight_hash(identity, marker, req.headers());
    if guard::is_uncacheable(hash) {
        return Joined::Go(req, None);
    }
    let lock = match Flight::join(hash) {
        Flight::Leader(flight) => {
            let landing = Landing {
                hash,
                _flight: Flight::Leader(flight),
            };
            return Joined::Go(req, Some(landing));
        }
        Flight::Follower(lock) => lock,
    };
    let wait = actix_web::rt::time::timeout(inner.policy.coalesce_wait, Flight::landed(lock));
    if wait.await.is_err() {
        // The leader is too slow: this request goes itself.
        return Joined::Go(req, None);
    }
    match collapsed_hit(inner, req, identity, fwd).await {
        Ok(res) => Joined::Answered(res),
        Err(req) => Joined::Go(req, None),
    }
}

/// The flight of a key: each `Vary` variant has one of its own. Seeded, so a client cannot aim
/// its requests at another key's flight.
fn flight_hash(identity: &Identity, marker: Option<&CacheEntry>, headers: &HeaderMap) -> u64 {
    match marker.map(CacheEntry::kind) {
        Some(EntryKind::Variants(v)) => seeded_hash(
            identity
                .key
                .variant(&v.names, v.generation, headers)
                .as_bytes(),
        ),
        _ => seeded_hash(identity.key.as_bytes()),
    }
}

/// Whether misses of this request may be coalesced with others: the policy allows it, and the
/// request could be answered from a stored response (no credentials the key does not separate).
fn coalesces(policy: &Policy, headers: &HeaderMap) -> bool {
    !policy.coalesce_wait.is_zero()
        && policy.visibility != Visibility::Private
        && !policy.has_unkeyed_credentials(headers)
}

/// After waiting for a coalesced miss: the response the leader stored, if it may answer this
/// request. `Err` gives the request back to go to the handler itself.
async fn collapsed_hit<St: CollectableStore>(
    inner: &Inner<St>,
    req: ServiceRequest,
    identity: &Identity,
    fwd: Fwd,
) -> Result<ServiceResponse<BoxBody>, ServiceRequest> {
    let now = SystemTime::now();
    let Lookup::Hit { entry, .. } = lookup::lookup(inner, &identity.key, req.headers()).await
    else {
        return Err(req);
    };
    let EntryKind::Response(stored) = entry.kind() else {
        return Err(req);
    };
    let directives = freshness::request_directives(&inner.policy, req.headers());
    let age = freshness::entry_age(&entry, stored, now);
    if !freshness::servable(&inner.policy, RequestFlags::of(req.headers()), stored)
        || freshness::reuse(stored, age, now, &directives) != Reuse::Serve
    {
        return Err(req);
    }
    log::debug!(target: LOG, "collapsed {}", req.path());
    let preconditions = conditional::has_preconditions(req.headers());
    let mut res = serve_hit(
        inner,
        req,
        Hit {
            entry: &entry,
            stored,
        },
        now,
        preconditions,
    );
    if let Some(v) = inner.statuses.get(fwd, Detail::Collapsed) {
        res.headers_mut().insert(CACHE_STATUS, v);
    }
    Ok(res)
}
