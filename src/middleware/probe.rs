//! The validator probe: when a conditional write finds nothing of its resource in the store (a
//! cold store, an evicted entry, a `GET` that was never storable), the cache asks the wrapped
//! service for the current representation with a `GET` of the same request before it judges
//! the write's preconditions. The entity tags this crate hands out are SHA-256 digests of the
//! body: a handler cannot check them itself, so without the probe a stale `If-Match` on a
//! resource the store forgot would be a lost update.
//!
//! The probe routes the write's own request a first time, as a `GET` without its precondition
//! fields or body, then puts the request back as it came (method, fields, body, matched path)
//! for the write itself. Middleware and extractors wrapped by the `Cache` see the request twice.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, SystemTime},
};

use actix_service::Service;
use actix_web::{
    body::{to_bytes_limited, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method, StatusCode},
    Error, HttpMessage,
};

use super::{
    admit,
    nested::{put_back, take_fields, ValidatorProbe, ValidatorProbed, PRECONDITION_FIELDS},
    Inner, LOG,
};
use crate::{conditional, entry::StoredTag, etag};

/// How long a probe may take: as long as a write waits for its locks.
const PROBE_WAIT: Duration = super::lock::LOCK_WAIT;

/// What the probe learnt of the resource's current representation.
pub(super) enum Probed {
    /// The `GET` answered `2xx`: a representation exists, with these validators (the handler's
    /// `ETag`, else the one this crate computes for a body it may hash).
    Representation {
        etag: Option<StoredTag>,
        last_modified: Option<SystemTime>,
    },
    /// A resource matched the `GET` and answered `404` or `410`: no current representation.
    Absent,
    /// Any other answer (`405`, `401`, an error, a redirect, a `404` of no route, a `2xx`
    /// without an `ETag` whose body this crate would not hash): the handler judges the write.
    Unknown,
}

/// Asks `service` for the current representation of `req`'s target with a `GET`, and hands
/// back the request as it was. `Err` is the write's answer when it cannot go on: the `Error`
/// the wrapped service answered the probe with (which takes the request with it), or the
/// `503` of a write that could not be judged, when the probe took longer than [`PROBE_WAIT`]
/// or something it called kept a clone of the request (routing it again would panic).
pub(super) async fn probe<S, B, St>(
    service: &S,
    inner: &Inner<St>,
    mut req: ServiceRequest,
) -> Result<(ServiceRequest, Probed), Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    let method = req.method().clone();
    let matched = req.match_info().clone();
    let payload = req.take_payload();
    let kept = take_fields(
        req.headers_mut(),
        PRECONDITION_FIELDS.iter().chain([&header::RANGE]),
    );
    req.head_mut().method = Method::GET;
    req.extensions_mut().insert(ValidatorProbe);
    log::debug!(target: LOG, "probing {} for the current validator", req.path());
    let probe = actix_web::rt::time::timeout(PROBE_WAIT, service.call(req));
    let (http_req, probed) = match probe.await {
        Ok(Ok(res)) => {
            let (http_req, res) = res.into_parts();
            // A 404 from a resource that matched is the application's "no such thing"; one
            // from a default service may only mean that no route takes a `GET` there. A
            // resource that matched (guards included) consumed the whole path.
            let routed = http_req.match_info().unprocessed().is_empty();
            (http_req, judge(inner, res, routed).await)
        }
        // A middleware's `Error` (an authentication wall, say) would stop the write as well:
        // it answers the write.
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            log::debug!(target: LOG, "validator probe took longer than {PROBE_WAIT:?}");
            return Err(refused());
        }
    };
    let mut req = ServiceRequest::from_parts(http_req, payload);
    // Putting the request back needs it unshared (actix's own routing does too): a clone kept
    // by something the probe called makes these panic, and the write is then refused.
    req.extensions_mut().remove::<ValidatorProbe>();
    req.extensions_mut().insert(ValidatorProbed);
    let restored = catch_unwind(AssertUnwindSafe(|| {
        req.head_mut().method = method;
        put_back(req.headers_mut(), kept);
        *req.match_info_mut() = matched;
    }));
    match restored {
        Ok(()) => Ok((req, probed)),
        Err(_) => {
            log::warn!(target: LOG, "validator probe: the request was kept by a service; write refused");
            Err(refused())
        }
    }
}

/// The `503` of a write whose probe left no request to answer with, as an `Error` actix turns
/// into that response.
fn refused() -> Error {
    let res = conditional::validator_unavailable();
    actix_web::error::InternalError::from_response("validator probe failed", res).into()
}

/// What a probe's response says of the current representation; `routed`: a resource matched
/// the probe.
async fn judge<St, B: MessageBody>(
    inner: &Inner<St>,
    res: actix_web::HttpResponse<B>,
    routed: bool,
) -> Probed {
    let status = res.status();
    if routed && (status == StatusCode::NOT_FOUND || status == StatusCode::GONE) {
        return Probed::Absent;
    }
    if !status.is_success() {
        return Probed::Unknown;
    }
    let last_modified = conditional::http_date(res.headers(), &header::LAST_MODIFIED);
    if let Some(value) = res.headers().get(header::ETAG) {
        return Probed::Representation {
            etag: StoredTag::parse(value),
            last_modified,
        };
    }
    // No ETag of the handler's: the one this crate computes, for a body it would hash. A
    // stream or a larger body never gets one: the handler judges (it may have given the
    // client a validator of its own some other way).
    let limit = inner.policy.max_body_size;
    if admit::unhashable(res.body().size(), limit).is_some() {
        return Probed::Unknown;
    }
    match to_bytes_limited(res.into_body(), limit).await {
        Ok(Ok(body)) => Probed::Representation {
            etag: StoredTag::parse(&etag::strong_etag(&body)),
            last_modified,
        },
        // A body that failed or outgrew its size: nothing can be said.
        _ => Probed::Unknown,
    }
}
