//! What the cache needs to know of a request's headers, found in one pass over them.

use actix_web::http::{
    header::{self, HeaderMap},
    Method,
};

/// Which of the headers the cache acts on a request carries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestFlags {
    pub(crate) preconditions: bool,
    pub(crate) authorization: bool,
    pub(crate) cookie: bool,
    pub(crate) forwarded: bool,
    /// `Cache-Control` or `Pragma`: request directives to judge.
    pub(crate) cache_control: bool,
}

impl RequestFlags {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut flags = Self::default();
        for name in headers.keys() {
            match *name {
                header::IF_MATCH
                | header::IF_NONE_MATCH
                | header::IF_MODIFIED_SINCE
                | header::IF_UNMODIFIED_SINCE => flags.preconditions = true,
                header::AUTHORIZATION => flags.authorization = true,
                header::COOKIE => flags.cookie = true,
                header::FORWARDED => flags.forwarded = true,
                header::CACHE_CONTROL | header::PRAGMA => flags.cache_control = true,
                _ => {
                    let n = name.as_str();
                    if n == "x-forwarded-host" || n == "x-forwarded-proto" {
                        flags.forwarded = true;
                    }
                }
            }
        }
        flags
    }
}

/// Every method but the safe ones (RFC 9110 §9.2.1) may change the resource: `PUT`, `PATCH`,
/// `DELETE`, `POST`, and extension methods such as WebDAV's `PROPPATCH` or `MOVE`. RFC 9111 §4.4
/// asks a cache to invalidate after any of them succeeds. `CONNECT` never reaches a handler.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::CONNECT
    )
}
