//! The uncacheable pass: a `GET` whose key's last response passed through unbuffered
//! (`no-store`, a stream, a body over the limit, an error status) goes straight to the handler
//! when it asks nothing of the cache and nothing is stored, polled in place: no owned key, no
//! copy of its headers, no coalescing, no boxed future. Its response is judged as the full flow
//! would judge it; one the full flow would buffer or store (the page became cacheable) passes
//! as it is, once, and the key takes the full flow again.
//!
//! What the full flow leaves to this pass, and why it is the same answer:
//! - no coalescing: the full flow does not coalesce a key whose responses are not stored either
//!   ([`guard::is_uncacheable`]);
//! - no race guard and no identity: nothing is stored;
//! - no ETag: the full flow computes none for a response it passes unbuffered.

use std::time::SystemTime;

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    HttpMessage,
};

use super::{
    admit,
    lookup::Lookup,
    nested::{BackgroundRefresh, OuterCache, ValidatorProbe},
    status::{Detail, Fwd},
    Inner,
};
use crate::{freshness, guard, request::RequestFlags};

/// Whether `req` takes the pass: a `GET` without preconditions or `Cache-Control` (so
/// `only-if-cached` and `no-cache` keep their full meaning), for which nothing is stored
/// (`lookup`), whose key (`hash`) recently answered unbuffered, and which no other `Cache`, no
/// background refresh and no validator probe sent.
pub(super) fn takes_pass(
    req: &ServiceRequest,
    flags: RequestFlags,
    lookup: Option<&Lookup>,
    hash: Option<u64>,
    now: SystemTime,
) -> Option<u64> {
    let hash = hash?;
    let plain = req.method() == Method::GET && !flags.preconditions && !flags.cache_control;
    if !plain || !matches!(lookup, Some(Lookup::UriMiss)) || !guard::passes(hash, now) {
        return None;
    }
    let ext = req.extensions();
    let sent_by_cache = ext.contains::<OuterCache>()
        || ext.contains::<BackgroundRefresh>()
        || ext.contains::<ValidatorProbe>();
    (!sent_by_cache).then_some(hash)
}

/// The handler's response to a request that took the pass, for the key with `hash`.
pub(super) fn finish<St, B: MessageBody>(
    inner: &Inner<St>,
    res: ServiceResponse<B>,
    hash: u64,
) -> ServiceResponse<EitherBody<B>> {
    let plan = freshness::storability(
        &inner.policy,
        res.request().headers(),
        res.status(),
        res.headers(),
        SystemTime::now(),
    );
    match admit::unbuffered(inner, &res, &plan, false) {
        Some(reason) => {
            guard::mark_passes(hash);
            admit::passed(inner, res, Fwd::UriMiss, Detail::Reason(reason))
        }
        None => {
            // The full flow would hash or store this one: the next request takes it.
            guard::forget_passes(hash);
            let detail = match plan {
                Err(reason) => Detail::Reason(reason),
                Ok(_) => Detail::NotStored,
            };
            admit::passed(inner, res, Fwd::UriMiss, detail)
        }
    }
}
