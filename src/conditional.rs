//! Conditional requests, RFC 9110 §13: evaluating preconditions and building 304 / 412 answers.

use std::{str::FromStr, time::SystemTime};

use actix_web::{
    body::{BoxBody, None as NoBody},
    http::{
        header::{self, HeaderMap, HttpDate},
        Method, StatusCode,
    },
    web::Bytes,
    HttpResponse,
};

use crate::etag::{match_list, Comparison, EntityTag, ListMatch};

/// What the cache knows of the target resource's current representation.
#[derive(Debug)]
pub(crate) enum Current<'a> {
    /// A representation exists with these validators (from the store, or the handler's fresh
    /// response).
    Representation {
        etag: Option<EntityTag<'a>>,
        last_modified: Option<SystemTime>,
    },
    /// A write succeeded; the strong tags in `superseded` are no longer current, and
    /// `last_modified` is the write response's `Last-Modified`, if it had one. The new entity
    /// tag is not known until the next `GET` stores it.
    Modified {
        superseded: &'a [Box<[u8]>],
        last_modified: Option<SystemTime>,
    },
    /// The handler says there is no current representation (a probe's `404`/`410`).
    Absent,
    /// Nothing is stored: the cache cannot evaluate the preconditions itself.
    Unknown,
}

/// The result of evaluating a request's preconditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preconditions {
    /// Perform the method (or serve the representation).
    Proceed,
    /// `304 Not Modified` (GET/HEAD only).
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// Whether the request carries any precondition header this module evaluates.
pub(crate) fn has_preconditions(headers: &HeaderMap) -> bool {
    crate::request::RequestFlags::of(headers).preconditions
}

/// Evaluates preconditions in the order of RFC 9110 §13.2.2.
///
/// `Current::Unknown` always proceeds: only the handler can judge what the cache has not seen.
pub(crate) fn evaluate(
    method: &Method,
    headers: &HeaderMap,
    current: &Current<'_>,
) -> Preconditions {
    let safe = method == Method::GET || method == Method::HEAD;
    match current {
        Current::Unknown => Preconditions::Proceed,
        Current::Absent => evaluate_absent(headers),
        Current::Representation {
            etag,
            last_modified,
        } => evaluate_representation(safe, headers, *etag, *last_modified),
        Current::Modified {
            superseded,
            last_modified,
        } => evaluate_modified(headers, superseded, *last_modified),
    }
}

fn evaluate_representation(
    safe: bool,
    headers: &HeaderMap,
    etag: Option<EntityTag<'_>>,
    last_modified: Option<SystemTime>,
) -> Preconditions {
    // §13.2.2 step 1: If-Match, strong comparison; `*` is true because a representation exists.
    if headers.contains_key(header::IF_MATCH) {
        let m = match_list(headers.get_all(header::IF_MATCH), etag, Comparison::Strong);
        if m == ListMatch::NotMatched {
            return Preconditions::Failed;
        }
    } else if let (Some(since), Some(modified)) = (
        // Step 2: If-Unmodified-Since, only without If-Match and when a Last-Modified is known.
        http_date(headers, &header::IF_UNMODIFIED_SINCE),
        last_modified,
    ) {
        if modified > since {
            return Preconditions::Failed;
        }
    }

    // Step 3: If-None-Match, weak comparison; a match means 304 for GET/HEAD, 412 otherwise.
    if headers.contains_key(header::IF_NONE_MATCH) {
        let m = match_list(
            headers.get_all(header::IF_NONE_MATCH),
            etag,
            Comparison::Weak,
        );
        if m != ListMatch::NotMatched {
            return if safe {
                Preconditions::NotModified
            } else {
                Preconditions::Failed
            };
        }
        return Preconditions::Proceed;
    }

    // Step 4: If-Modified-Since, GET/HEAD only and only without If-None-Match (§13.1.3).
    if safe {
        if let (Some(since), Some(modified)) = (
            http_date(headers, &header::IF_MODIFIED_SINCE),
            last_modified,
        ) {
            if modified <= since {
                return Preconditions::NotModified;
            }
        }
    }
    Preconditions::Proceed
}

/// Preconditions against a resource with no current representation: `If-Match` is false
/// whatever it lists, `*` included (RFC 9110 §13.1.1); `If-Unmodified-Since` has no date to be
/// judged against, and `If-None-Match` is true (even `*`).
fn evaluate_absent(headers: &HeaderMap) -> Preconditions {
    match headers.contains_key(header::IF_MATCH) {
        true => Preconditions::Failed,
        false => Preconditions::Proceed,
    }
}

/// Preconditions of a write that arrives after another write changed the resource, before any
/// `GET` stored the new representation.
fn evaluate_modified(
    headers: &HeaderMap,
    superseded: &[Box<[u8]>],
    last_modified: Option<SystemTime>,
) -> Preconditions {
    if headers.contains_key(header::IF_MATCH) {
        if match_list(headers.get_all(header::IF_MATCH), None, Comparison::Strong) == ListMatch::Any
        {
            return Preconditions::Proceed;
        }
        // If-Match is true only if some member strongly matches the current tag. Weak members
        // never do; strong members that the last write superseded cannot either. If nothing
        // else is left, the condition is certainly false.
        let mut could_match = false;
        crate::etag::for_each_strong(headers.get_all(header::IF_MATCH), |tag| {
            could_match |= !superseded.iter().any(|s| &**s == tag);
        });
        if !could_match {
            return Preconditions::Failed;
        }
    } else if let (Some(since), Some(modified)) = (
        http_date(headers, &header::IF_UNMODIFIED_SINCE),
        last_modified,
    ) {
        // Judged only against a date the application gave: the write's own clock time would
        // be finer than HTTP dates and fail a client that just read the new Last-Modified.
        if modified > since {
            return Preconditions::Failed;
        }
    }
    Preconditions::Proceed
}

/// Parses a single HTTP-date field (RFC 9110 §5.6.7). A missing field, more than one line, or
/// a value that is not a valid date gives `None`, which the callers must treat as "ignore this
/// precondition" (§13.1.3, §13.1.4).
pub(crate) fn http_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name);
    let value = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    http_date_value(value)
}

/// One field value as an HTTP-date (RFC 9110 §5.6.7); `None` when it is not one.
pub(crate) fn http_date_value(value: &header::HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?;
    HttpDate::from_str(text.trim()).ok().map(SystemTime::from)
}

/// Fields a 304 carries when the 200 would have carried them (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// Builds a `304 Not Modified` from the headers of the `200` it stands for.
///
/// The body is `body::None`, not an empty sized body: `Compress` would otherwise encode it.
pub(crate) fn not_modified<'h>(
    full: impl IntoIterator<Item = (&'h header::HeaderName, &'h header::HeaderValue)>,
) -> HttpResponse<BoxBody> {
    let mut res = HttpResponse::with_body(StatusCode::NOT_MODIFIED, NoBody::new());
    let headers = res.headers_mut();
    for (name, value) in full {
        if NOT_MODIFIED_FIELDS.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    res.map_into_boxed_body()
}

/// Builds a `412 Precondition Failed` with an empty body of known length: it carries
/// `Content-Length: 0`, so a keep-alive client does not wait for the connection to close (only
/// a `304` has no body at all).
pub(crate) fn precondition_failed() -> HttpResponse<BoxBody> {
    HttpResponse::with_body(StatusCode::PRECONDITION_FAILED, Bytes::new()).map_into_boxed_body()
}

/// How long a client is asked to wait before retrying a write the cache could not judge.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// `503 Service Unavailable` with `Retry-After`, `Cache-Control: no-store` and an empty body
/// (`Content-Length: 0`): the answer to a conditional write whose current validator cannot be
/// known, or whose resource lock cannot be taken. The handler did not run.
pub(crate) fn validator_unavailable() -> HttpResponse<BoxBody> {
    let mut res = HttpResponse::with_body(StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
    let headers = res.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_SECS),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res.map_into_boxed_body()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn rep(etag: &'static str) -> Current<'static> {
        Current::Representation {
            etag: EntityTag::parse(etag.as_bytes()),
            last_modified: None,
        }
    }

    #[test]
    fn if_match_failure_beats_if_none_match() {
        let h = headers(&[
            (header::IF_MATCH, "\"b\""),
            (header::IF_NONE_MATCH, "\"a\""),
        ]);
        assert_eq!(
            evaluate(&Method::GET, &h, &rep("\"a\"")),
            Preconditions::Failed
        );
    }

    #[test]
    fn absent_fails_if_match_and_passes_if_none_match() {
        for value in ["*", "\"a\""] {
            let h = headers(&[(header::IF_MATCH, value)]);
            assert_eq!(
                evaluate(&Method::PUT, &h, &Current::Absent),
                Preconditions::Failed
            );
        }
        let h = headers(&[(header::IF_NONE_MATCH, "*")]);
        assert_eq!(
            evaluate(&Method::PUT, &h, &Current::Absent),
            Preconditions::Proceed
        );
    }

    #[test]
    fn if_none_match_on_write_is_412() {
        let h = headers(&[(header::IF_NONE_MATCH, "*")]);
        assert_eq!(
            evaluate(&Method::PUT, &h, &rep("\"a\"")),
            Preconditions::Failed
        );
        assert_eq!(
            evaluate(&Method::GET, &h, &rep("\"a\"")),
            Preconditions::NotModified
        );
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_present() {
        let past = HttpDate::from(SystemTime::now()).to_string();
        let h = headers(&[
            (header::IF_NONE_MATCH, "\"x\""),
            (header::IF_MODIFIED_SINCE, &past),
        ]);
        let current = Current::Representation {
            etag: EntityTag::parse(b"\"a\""),
            last_modified: Some(SystemTime::UNIX_EPOCH),
        };
        assert_eq!(evaluate(&Method::GET, &h, &current), Preconditions::Proceed);
    }

    #[test]
    fn superseded_tag_fails_after_a_write() {
        let superseded: Vec<Box<[u8]>> = vec![b"\"old\"".to_vec().into()];
        let current = Current::Modified {
            superseded: &superseded,
            last_modified: None,
        };
        let stale = headers(&[(header::IF_MATCH, "\"old\"")]);
        let unknown = headers(&[(header::IF_MATCH, "\"old\", \"new\"")]);
        assert_eq!(
            evaluate(&Method::PUT, &stale, &current),
            Preconditions::Failed
        );
        assert_eq!(
            evaluate(&Method::PUT, &unknown, &current),
            Preconditions::Proceed
        );
    }

    #[test]
    fn invalid_or_repeated_dates_are_ignored() {
        let h = headers(&[(header::IF_UNMODIFIED_SINCE, "yesterday")]);
        assert_eq!(http_date(&h, &header::IF_UNMODIFIED_SINCE), None);
        let now = HttpDate::from(SystemTime::now()).to_string();
        let h = headers(&[
            (header::IF_UNMODIFIED_SINCE, &now),
            (header::IF_UNMODIFIED_SINCE, &now),
        ]);
        assert_eq!(http_date(&h, &header::IF_UNMODIFIED_SINCE), None);
    }
}
