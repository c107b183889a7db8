//! `GET` and `HEAD`: decide (a [`Decision`]) → coalesce → forward to the handler → finish.

use std::{rc::Rc, time::SystemTime};

use actix_service::Service;
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, StatusCode},
    Error, HttpMessage,
};
use futures_util::FutureExt;

use super::{
    admit,
    answer::{self, Hit},
    coalesce::{self, Joined, Outcome},
    invalidate,
    lookup::{self, Identity, Lookup},
    nested::{BackgroundRefresh, Handled, HandledStored, OuterCache, ValidatorProbe},
    revalidate,
    stale::{self, Refresh},
    status::Fwd,
    trip::{Forward, Guard, Trip},
    Inner, LOG,
};
use crate::{
    entry::EntryKind,
    freshness::{self, entry_age, Reuse},
    guard::{self, Flight},
    request::RequestFlags,
    store::CollectableStore,
    CacheEntry,
};

/// What to do with a `GET`/`HEAD` once the store has been asked.
pub(super) enum Decision {
    /// A stored response may answer it as it is.
    Serve(CacheEntry),
    /// RFC 5861 §3: serve the stale response now and revalidate it in the background.
    ServeStale(CacheEntry),
    /// RFC 9111 §5.2.1.7: `only-if-cached`, and nothing that may answer.
    OnlyIfCached,
    /// Go to the handler.
    Forward(Forward),
}

/// `GET` and `HEAD`: serve from the store, or call the handler and store what may be stored.
/// `epoch` is the race guard's epoch, read before the lookup.
pub(super) async fn read<S, B, St>(
    service: Rc<S>,
    inner: Rc<Inner<St>>,
    req: ServiceRequest,
    epoch: u64,
    prefetched: Option<Lookup>,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    if req.extensions().contains::<ValidatorProbe>() {
        return Ok(service.call(req).await?.map_into_left_body());
    }
    let flags = RequestFlags::of(req.headers());
    let identity = Identity::of(&req, flags.forwarded);
    let lookup = match prefetched {
        Some(lookup) => lookup,
        None => lookup::lookup(&inner, &identity.key, req.headers()).await,
    };
    let now = SystemTime::now();
    let decision = decide(&inner, &req, flags, lookup, now);
    if let Decision::Serve(entry) | Decision::ServeStale(entry) = &decision {
        if let Some(hit) = Hit::of(entry) {
            if matches!(decision, Decision::Serve(_)) {
                log::debug!(target: LOG, "hit {}", req.path());
                let res = answer::serve_hit(&inner, req, hit, now, flags.preconditions);
                return Ok(res.map_into_right_body());
            }
            let (res, refresh) = stale::serve_while_revalidating(&inner, req, &identity.key, hit);
            if let Some(refresh) = refresh {
                start_refresh(service, inner, identity, entry.clone(), refresh);
            }
            return Ok(res.map_into_right_body());
        }
    }
    let forward = match decision {
        Decision::OnlyIfCached => {
            return Ok(answer::only_if_cached(&inner, req).map_into_right_body())
        }
        Decision::Forward(forward) => forward,
        // Only stored responses are served (see `decide`).
        Decision::Serve(_) | Decision::ServeStale(_) => Forward {
            fwd: Fwd::UriMiss,
            stale: None,
            fallback: None,
            marker: None,
        },
    };
    let joined = coalesce::join(&inner, req, &identity, forward.fwd, forward.marker.as_ref());
    let (req, flight) = match joined.await {
        Joined::Answered(res) => return Ok(res.map_into_right_body()),
        Joined::Go(req, flight) => (req, flight),
    };
    log::debug!(target: LOG, "miss {} ({:?})", req.path(), forward.fwd);
    let trip = Trip {
        guard: Guard::read(&inner, &identity.key, epoch).await,
        identity,
        forward,
        conditions: None,
        flight,
    };
    to_handler(&service, &inner, req, trip).await
}

/// Decides what a `GET`/`HEAD` needs, from what the lookup found (RFC 9111 §4, §4.2.4, §5.2.1;
/// RFC 5861 §3).
fn decide<St>(
    inner: &Inner<St>,
    req: &ServiceRequest,
    flags: RequestFlags,
    lookup: Lookup,
    now: SystemTime,
) -> Decision {
    let directives = freshness::request_directives(&inner.policy, req.headers());
    let marker = lookup.marker().cloned();
    let mut forward = Forward {
        fwd: Fwd::UriMiss,
        stale: None,
        fallback: None,
        marker,
    };
    match lookup {
        Lookup::Hit { entry, .. } => match entry.kind() {
            EntryKind::Response(stored) if freshness::servable(&inner.policy, flags, stored) => {
                let age = entry_age(&entry, stored, now);
                match freshness::reuse(stored, age, now, &directives) {
                    Reuse::Serve => return Decision::Serve(entry),
                    Reuse::Request => forward.fwd = Fwd::Request,
                    Reuse::Stale => {
                        let background = req.extensions().contains::<BackgroundRefresh>();
                        if !background
                            && !directives.no_cache
                            && directives.max_age.is_none()
                            && directives.min_fresh.is_none()
                            && stored.is_stale_within(now, stored.stale_while_revalidate)
                        {
                            return Decision::ServeStale(entry);
                        }
                        forward.fwd = Fwd::Stale;
                    }
                }
                if stored.is_stale_within(now, stored.stale_if_error) {
                    forward.fallback = Some(entry.clone());
                }
                if stored.has_validator() {
                    forward.stale = Some(entry);
                }
            }
            _ => forward.fwd = Fwd::Bypass,
        },
        Lookup::VaryMiss(_) => forward.fwd = Fwd::VaryMiss,
        Lookup::StoreFailed => forward.fwd = Fwd::StoreError,
        Lookup::UriMiss => {}
    }
    if directives.only_if_cached {
        return Decision::OnlyIfCached;
    }
    Decision::Forward(forward)
}

/// Forwards the request to the handler (a `HEAD` miss as `GET`, a stale entry as a
/// revalidation) and finishes with its response.
async fn to_handler<S, B, St>(
    service: &Rc<S>,
    inner: &Rc<Inner<St>>,
    mut req: ServiceRequest,
    mut trip: Trip,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    // A HEAD miss is answered as a GET (the server drops the body on the wire), so that HEAD
    // answers the same whether or not the entry is stored, and fills the entry HEAD shares.
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    // Revalidation (RFC 9111 §4.3.1): the handler gets the stored validators instead of the
    // client's preconditions, which are judged here afterwards.
    if let Some(EntryKind::Response(stored)) = trip.forward.stale.as_ref().map(CacheEntry::kind) {
        trip.conditions = Some(revalidate::ask_revalidation(&mut req, stored));
    }
    req.extensions_mut().insert(OuterCache);
    let res = service.call(req).await?;
    finish(inner, res, trip).await
}

/// What the handler's response leads to: an inner `Cache`'s answer passed on, a stale response
/// in place of an error, a refreshed entry after a `304`, a write's invalidation when a
/// middleware inside turned the request into one, or admission.
async fn finish<B, St>(
    inner: &Rc<Inner<St>>,
    res: ServiceResponse<B>,
    trip: Trip,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    B: MessageBody + 'static,
    St: CollectableStore,
{
    if res.response().extensions().contains::<Handled>() {
        let stored = res.response().extensions().contains::<HandledStored>();
        trip.land(Outcome::InnerCache { stored });
        return Ok(res.map_into_left_body());
    }
    // RFC 5861 §4: the handler failed, and a stale response may stand in for it.
    if let Some(entry) = &trip.forward.fallback {
        if let (Some(fwd), EntryKind::Response(stored)) =
            (stale::error_forward(res.status()), entry.kind())
        {
            let (http_req, _) = res.into_parts();
            let entry = entry.clone();
            let hit = Hit {
                entry: &entry,
                stored,
            };
            return Ok(stale::serve_stale_on_error(
                inner,
                http_req,
                hit,
                trip.conditions,
                fwd,
            ));
        }
    }
    if res.status() == StatusCode::NOT_MODIFIED {
        if let Some(entry) = trip.forward.stale.clone() {
            return Ok(revalidate::refresh(inner, res, &entry, trip).await);
        }
    }
    // A middleware inside turned the read into a write (a method override): what it changed
    // is invalidated as any write's would be, and nothing is stored.
    if crate::request::is_unsafe(res.request().method()) {
        if let Some(plan) = invalidate::plan(inner, &trip.identity.key, &res) {
            invalidate::apply(inner, plan, invalidate::deadline(inner)).await;
        }
    }
    admit::admit(inner, res, trip).await
}

/// Starts a background refresh (RFC 5861 §3) once the client's stale response is done with
/// the request: it joins the key's flight then (misses that need the handler must not queue
/// behind a client that is slow to read), revalidates the stale entry with the handler, and
/// stores what comes back. When a request for the key is at the handler already, its response
/// is the refresh.
fn start_refresh<S, B, St>(
    service: Rc<S>,
    inner: Rc<Inner<St>>,
    identity: Identity,
    entry: CacheEntry,
    refresh: Refresh,
) where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    actix_web::rt::spawn(async move {
        let Refresh {
            hash,
            request,
            payload,
            signal,
        } = refresh;
        signal.dropped().await;
        let Flight::Leader(flight) = Flight::join(hash) else {
            guard::release_refresh(hash);
            return;
        };
        let epoch = guard::epoch();
        let req = ServiceRequest::from_parts(request, payload);
        req.extensions_mut().insert(BackgroundRefresh);
        let has_validator = matches!(entry.kind(), EntryKind::Response(s) if s.has_validator());
        let lookup = lookup::lookup(&inner, &identity.key, req.headers()).await;
        let trip = Trip {
            guard: Guard::read(&inner, &identity.key, epoch).await,
            forward: Forward {
                fwd: Fwd::Stale,
                stale: has_validator.then_some(entry),
                fallback: None,
                marker: lookup.marker().cloned(),
            },
            identity,
            conditions: None,
            flight: None,
        };
        // A clone of the request kept by some outer middleware would make routing panic; the
        // refresh is then given up, and the next request in the window tries again.
        let refresh = std::panic::AssertUnwindSafe(to_handler(&service, &inner, req, trip));
        match refresh.catch_unwind().await {
            Ok(Ok(res)) => {
                log::debug!(target: LOG, "refreshed in the background: {}", res.status())
            }
            Ok(Err(err)) => log::warn!(target: LOG, "background refresh failed: {err}"),
            Err(_) => log::warn!(target: LOG, "background refresh given up: request still shared"),
        }
        drop(flight);
        guard::release_refresh(hash);
    });
}
