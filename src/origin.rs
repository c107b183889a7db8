//! The origin of a request as keys name it: scheme, the host actix routes by, and every other
//! host the request names.

use actix_web::{
    http::{header, Version},
    HttpRequest,
};

/// The host the router matches on (`guard::Host`): below HTTP/2 the `Host` header, else the
/// URI's authority, else the application's configured host. Not lowercased.
pub(crate) fn routing_host(req: &HttpRequest) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|_| req.version() < Version::HTTP_2)
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_else(|| req.app_config().host())
}

/// The origin part of every key: everything actix uses to route the request and to build URLs.
///
/// The router matches the `Host` header (the URI's authority from HTTP/2 on), while the scheme
/// and host of `ConnectionInfo`, which URL generation uses, honour `Forwarded` /
/// `X-Forwarded-*`, which the client controls unless a proxy overwrites them. A key that used only
/// one of them would let a request routed to one virtual host store its response under another.
/// So the key holds the scheme and the routing host, and adds every other host the request
/// names (`Host`, the URI's authority, the forwarded host) where it differs.
pub(crate) fn request_origin(req: &HttpRequest) -> String {
    let mut origin = Vec::new();
    write_origin(
        req,
        &mut origin,
        crate::request::RequestFlags::of(req.headers()).forwarded,
    );
    // Built from `&str` parts and ASCII lowercasing: always UTF-8.
    String::from_utf8(origin).unwrap_or_default()
}

/// Appends the origin of `req` (see [`request_origin`]) to `out`. Without forwarding headers it
/// reads the request head directly, as `ConnectionInfo` would, and allocates nothing.
pub(crate) fn write_origin(req: &HttpRequest, out: &mut Vec<u8>, forwarded: bool) {
    let headers = req.headers();
    let host_header = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = req.uri().authority().map(|a| a.as_str());
    let config = req.app_config();
    // The common case: HTTP/1.x in origin form, no forwarding headers. Routing host, `Host` and
    // the connection host are then one value, and the scheme is the server's own.
    if let (Some(host), None, false, true) = (
        host_header,
        authority,
        forwarded,
        req.version() < Version::HTTP_2,
    ) {
        out.extend_from_slice(if config.secure() {
            b"https://"
        } else {
            b"http://"
        });
        push_lowercase(out, host);
        return;
    }
    let routing = routing_host(req);
    let conn = forwarded.then(|| req.connection_info());
    let scheme = match &conn {
        Some(conn) => conn.scheme(),
        None => req
            .uri()
            .scheme_str()
            .unwrap_or(if config.secure() { "https" } else { "http" }),
    };
    let connection_host = match &conn {
        Some(conn) => conn.host(),
        None => host_header.or(authority).unwrap_or_else(|| config.host()),
    };
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"://");
    push_lowercase(out, routing);
    for (label, other) in [
        (" host=", host_header),
        (" authority=", authority),
        (" forwarded=", Some(connection_host)),
    ] {
        if let Some(other) = other.filter(|o| !o.eq_ignore_ascii_case(routing)) {
            out.extend_from_slice(label.as_bytes());
            push_lowercase(out, other);
        }
    }
}

/// Appends `s` lowercased. A header value cannot hold `\n` (the HTTP parser rejects control
/// bytes but tab), so the key layout holds.
fn push_lowercase(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    let pushed = &mut out[start..];
    if pushed.iter().any(u8::is_ascii_uppercase) {
        pushed.make_ascii_lowercase();
    }
}
