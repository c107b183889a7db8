//! Answering: one [`respond`] builds every answer from a representation (a hit, a `304`, a
//! `412`, a stale response, a fresh handler response), and [`finish`] adds what every answer of
//! the cache carries.

use std::time::{Duration, SystemTime};

use actix_web::{
    body::BoxBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderValue},
        Method, StatusCode,
    },
    web::Bytes,
    HttpRequest, HttpResponse,
};

use super::{
    nested::mark_handled,
    status::{Detail, Fwd, CACHE_STATUS},
    Inner, LOG,
};
use crate::{
    conditional::{self, Current, Preconditions},
    entry::{StoredResponse, StoredTag},
    etag::EntityTag,
    freshness::entry_age,
    CacheEntry,
};

/// What an answer is built from.
pub(super) enum Representation<'a> {
    /// A stored response, `age` old (RFC 9111 §4.2.3).
    Stored {
        stored: &'a StoredResponse,
        age: Duration,
    },
    /// The handler's response, its body buffered.
    Fresh { head: HttpResponse<()>, body: Bytes },
}

/// The answer a representation gives to a request whose precondition fields are `conditions`
/// (`None`: it has none): the representation itself, a `304` or a `412` (RFC 9110 §13.2.2;
/// judged only for a `2xx`, §13.2.1). A stored one carries `Age`.
pub(super) fn respond(
    rep: Representation<'_>,
    method: &Method,
    conditions: Option<&HeaderMap>,
) -> HttpResponse<BoxBody> {
    match rep {
        Representation::Stored { stored, age } => {
            let mut res = respond_stored(stored, method, conditions);
            // Stored headers never hold Age or Cache-Status (they are not stored), so
            // appending is enough.
            res.headers_mut()
                .append(header::AGE, age_value(age.as_secs()));
            res
        }
        Representation::Fresh { head, body } => respond_fresh(head, body, method, conditions),
    }
}

fn respond_stored(
    stored: &StoredResponse,
    method: &Method,
    conditions: Option<&HeaderMap>,
) -> HttpResponse<BoxBody> {
    // Judge the stored validators only when the request has a precondition.
    let outcome = match conditions {
        Some(conditions) if stored.status.is_success() => {
            let current = Current::Representation {
                etag: stored.etag.as_ref().map(StoredTag::tag),
                last_modified: stored.last_modified,
            };
            conditional::evaluate(method, conditions, &current)
        }
        _ => Preconditions::Proceed,
    };
    match outcome {
        Preconditions::Proceed => {
            let mut res = HttpResponse::with_body(stored.status, stored.body.clone());
            // Appending into the pooled response head reuses its map; the clones are
            // reference counts (or static names), not copies.
            let headers = res.headers_mut();
            for (name, value) in stored.headers.iter() {
                headers.append(name.clone(), value.clone());
            }
            res.map_into_boxed_body()
        }
        Preconditions::NotModified => {
            log::debug!(target: LOG, "304 from store");
            conditional::not_modified(stored.headers.iter().map(|(n, v)| (n, v)))
        }
        Preconditions::Failed => {
            log::debug!(target: LOG, "412 from store");
            conditional::precondition_failed()
        }
    }
}

fn respond_fresh(
    head: HttpResponse<()>,
    body: Bytes,
    method: &Method,
    conditions: Option<&HeaderMap>,
) -> HttpResponse<BoxBody> {
    let outcome = match conditions {
        Some(conditions) if head.status().is_success() => {
            let etag = head.headers().get(header::ETAG).cloned();
            let current = Current::Representation {
                etag: etag.as_ref().and_then(|v| EntityTag::parse(v.as_bytes())),
                last_modified: conditional::http_date(head.headers(), &header::LAST_MODIFIED),
            };
            conditional::evaluate(method, conditions, &current)
        }
        _ => Preconditions::Proceed,
    };
    match outcome {
        Preconditions::Proceed => head.set_body(body).map_into_boxed_body(),
        Preconditions::NotModified => {
            log::debug!(target: LOG, "304 on the handler's response");
            let mut res = conditional::not_modified(head.headers());
            // The handler ran: a cookie it set (e.g. a rotated session) must still reach the
            // client. Set-Cookie is not representation metadata (RFC 9110 §15.4.5).
            for cookie in head.headers().get_all(header::SET_COOKIE) {
                res.headers_mut().append(header::SET_COOKIE, cookie.clone());
            }
            res
        }
        Preconditions::Failed => {
            log::debug!(target: LOG, "412 on the handler's response");
            conditional::precondition_failed()
        }
    }
}

/// Adds `Cache-Status` (when on) and the nested-cache marks to an answer of the cache.
pub(super) fn finish(
    req: &HttpRequest,
    res: &mut HttpResponse<BoxBody>,
    status: Option<HeaderValue>,
    stored: bool,
) {
    if let Some(v) = status {
        res.headers_mut().insert(CACHE_STATUS, v);
    }
    mark_handled(req, res, stored);
}

/// A stored entry and the response it holds.
#[derive(Clone, Copy)]
pub(super) struct Hit<'a> {
    pub(super) entry: &'a CacheEntry,
    pub(super) stored: &'a StoredResponse,
}

impl<'a> Hit<'a> {
    /// The hit of `entry`, when it holds a response.
    pub(super) fn of(entry: &'a CacheEntry) -> Option<Self> {
        match entry.kind() {
            crate::entry::EntryKind::Response(stored) => Some(Self { entry, stored }),
            _ => None,
        }
    }

    /// The stored response as a representation, `now`.
    pub(super) fn representation(self, now: SystemTime) -> Representation<'a> {
        Representation::Stored {
            stored: self.stored,
            age: entry_age(self.entry, self.stored, now),
        }
    }
}

/// Answers a hit: the stored response (a reference-count clone of its body), a 304 or a 412.
pub(super) fn serve_hit<St>(
    inner: &Inner<St>,
    req: ServiceRequest,
    hit: Hit<'_>,
    now: SystemTime,
    preconditions: bool,
) -> ServiceResponse<BoxBody> {
    let rep = hit.representation(now);
    let mut res = respond(rep, req.method(), preconditions.then(|| req.headers()));
    if let Some(v) = inner.statuses.hit() {
        res.headers_mut().append(CACHE_STATUS, v.clone());
    }
    mark_handled(req.request(), &mut res, false);
    req.into_response(res)
}

/// RFC 9111 §5.2.1.7: `only-if-cached` and nothing that may be reused: `504`, no handler.
pub(super) fn only_if_cached<St>(
    inner: &Inner<St>,
    req: ServiceRequest,
) -> ServiceResponse<BoxBody> {
    log::debug!(target: LOG, "only-if-cached {}: 504", req.path());
    let mut res =
        HttpResponse::with_body(StatusCode::GATEWAY_TIMEOUT, Bytes::new()).map_into_boxed_body();
    let status = inner.statuses.get(Fwd::Nothing, Detail::OnlyIfCached);
    finish(req.request(), &mut res, status, false);
    req.into_response(res)
}

/// `Age` values, prebuilt for the first hour so that a hit formats nothing.
fn age_value(secs: u64) -> HeaderValue {
    static AGES: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    let ages = AGES.get_or_init(|| (0..3600u64).map(HeaderValue::from).collect());
    usize::try_from(secs)
        .ok()
        .and_then(|i| ages.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(secs))
}
