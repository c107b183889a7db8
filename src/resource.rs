//! The identity of a request's resource, in two levels.
//!
//! - The **key path** follows actix's router exactly: the router matches the path of
//!   [`actix_web::dev::Url`], which decodes every percent-encoded byte except `%25`, `%2F` and
//!   `%2B` (kept as sent, hex case included) and replaces invalid UTF-8 with U+FFFD. Two
//!   requests the router tells apart therefore never share an entry, and two it cannot tell
//!   apart (`/users/%31` and `/users/1`, `%3a` and `%3A`) share one.
//! - The **group** (what one write must make stale) is coarser: everything an extractor could
//!   hand the handler as the same value. The `Path` extractor decodes `%25`, `%2F` and `%2B`
//!   too, and `Query` decodes the query string as a form (`+` is a space, parameters in any
//!   order). The group's host is the routing host without port or trailing dot. So a write
//!   through any alias collects every alias: over-collection is possible, a stale alias is not.
//!
//! Every string here is free of control bytes (they are written as `%XX`), so the `\n`-separated
//! key layout of [`crate::key`] stays unambiguous.

use std::borrow::Cow;

/// The path actix's router matches for a raw request path: percent-decoded except for `%25`,
/// `%2F` and `%2B`, invalid UTF-8 replaced with U+FFFD (`actix_router::Url`).
pub(crate) fn router_path(raw: &str) -> Cow<'_, str> {
    if !raw.as_bytes().contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let decoded = percent_decode(raw.as_bytes(), |b| matches!(b, b'%' | b'/' | b'+'));
    match decoded {
        Some(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        None => Cow::Borrowed(raw),
    }
}

/// Percent-decodes `bytes` in one pass, leaving the escapes of bytes for which `keep` holds (and
/// invalid escapes) as they are. `None` when nothing was decoded.
fn percent_decode(bytes: &[u8], keep: impl Fn(u8) -> bool) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = hex_pair(bytes.get(i + 1..i + 3)).filter(|&b| !keep(b)) {
                let out = out.get_or_insert_with(|| {
                    let mut v = Vec::with_capacity(bytes.len());
                    v.extend_from_slice(&bytes[..i]);
                    v
                });
                out.push(b);
                i += 3;
                continue;
            }
        }
        if let Some(out) = out.as_mut() {
            out.push(bytes[i]);
        }
        i += 1;
    }
    out
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let [hi, lo] = pair? else { return None };
    let digit = |d: u8| char::from(d).to_digit(16);
    Some(u8::try_from(digit(*hi)? << 4 | digit(*lo)?).unwrap_or(0))
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Whether `s` holds a control byte or DEL.
pub(crate) fn has_control(s: &[u8]) -> bool {
    // No early exit: the compiler turns this into a few wide compares.
    s.iter().fold(false, |any, &b| any | is_control(b))
}

/// Appends `s` with control bytes (and DEL) written as `%XX`. A router path can hold them
/// (`%0A` decodes to a newline), but never the literal text of such an escape (the router
/// decodes it), so the result is still exact.
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    if !has_control(s) {
        out.extend_from_slice(s);
        return;
    }
    for &b in s {
        if is_control(b) {
            push_hex(out, b);
        } else {
            out.push(b);
        }
    }
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// The key form of a path: the router's path, control bytes escaped.
pub(crate) fn key_path(raw: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    push_escaped(&mut out, router_path(raw).as_bytes());
    out
}

/// The group path of a key path: `%25`, `%2F` and `%2B` (either hex case) decoded in one pass,
/// as the `Path` extractor decodes the router's path. `None` when the key path is its own group
/// path (it has no such escape).
pub(crate) fn group_path_of_key_path(key_path: &[u8]) -> Option<Vec<u8>> {
    if !key_path.contains(&b'%') {
        return None;
    }
    percent_decode(key_path, |b| !matches!(b, b'%' | b'/' | b'+'))
}

/// The group path of a raw request path (see the module docs).
pub(crate) fn group_path(raw: &str) -> String {
    let key = key_path(raw);
    let group = group_path_of_key_path(&key).unwrap_or(key);
    // Built from a `str` with ASCII-only replacements: UTF-8.
    String::from_utf8_lossy(&group).into_owned()
}

/// The group form of a query string, as the `Query` extractor reads it: `&`-separated
/// parameters, each percent-decoded with `+` as a space and invalid UTF-8 replaced, control
/// bytes escaped, empty ones dropped, sorted.
pub(crate) fn group_query(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<String> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let plus: Cow<'_, [u8]> = if p.contains('+') {
                Cow::Owned(
                    p.bytes()
                        .map(|b| if b == b'+' { b' ' } else { b })
                        .collect(),
                )
            } else {
                Cow::Borrowed(p.as_bytes())
            };
            let decoded = percent_decode(&plus, |_| false);
            let text = String::from_utf8_lossy(decoded.as_deref().unwrap_or(&plus)).into_owned();
            let mut out = Vec::with_capacity(text.len());
            push_escaped(&mut out, text.as_bytes());
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// The group form of a host: lowercase, without port or trailing dot (the `Host` guard compares
/// the host alone), control bytes escaped.
pub(crate) fn group_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        // An IPv6 literal: the port follows the closing bracket.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
            _ => host,
        }
    };
    let bare = without_port.strip_suffix('.').unwrap_or(without_port);
    let mut out = Vec::with_capacity(bare.len());
    push_escaped(&mut out, bare.as_bytes());
    out.make_ascii_lowercase();
    // `bare` is a `str` and the escapes are ASCII: UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The host part of an origin as keys spell it (`scheme://host[:port][ extra...]`), or of a bare
/// host.
pub(crate) fn host_of_origin(origin: &str) -> &str {
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    rest.split(' ').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{dev::Url, http::Uri};

    fn actix_router_path(raw: &str) -> String {
        Url::new(Uri::try_from(raw).unwrap()).path().to_owned()
    }

    #[test]
    fn router_path_agrees_with_actix_router() {
        let samples = [
            "/",
            "/users/1",
            "/users/%31",
            "/a%3Ab",
            "/a%3ab",
            "/a:b",
            "/%c3%a9",
            "/%C3%A9",
            "/a%2Fb",
            "/a%2fb",
            "/a%2Bb",
            "/a+b",
            "/a%25b",
            "/%FF",
            "/%FE",
            "/%EF%BF%BD",
            "/%zz",
            "/%",
            "/%4",
            "/a%0Ab",
            "/%2525",
            "/%C3%2F",
            "/%E2%82%AC",
            "/x/%7e/%7E",
        ];
        for raw in samples {
            assert_eq!(router_path(raw), actix_router_path(raw), "{raw}");
        }
        // Every byte, escaped in either case, in the middle of a path.
        for b in 0..=255u8 {
            for raw in [format!("/p%{b:02X}q"), format!("/p%{b:02x}q")] {
                assert_eq!(router_path(&raw), actix_router_path(&raw), "{raw}");
            }
        }
    }

    #[test]
    fn key_paths_hold_no_control_bytes_and_stay_apart() {
        assert_eq!(key_path("/a%0Ab"), b"/a%0Ab");
        assert_eq!(key_path("/a%0ab"), b"/a%0Ab");
        assert_eq!(key_path("/users/%31"), b"/users/1");
        assert_ne!(key_path("/a%2Fb"), key_path("/a/b"));
        assert_ne!(key_path("/a%2fb"), key_path("/a%2Fb"));
        assert_eq!(key_path("/%FF"), key_path("/%EF%BF%BD"));
    }

    #[test]
    fn group_paths_merge_what_extractors_merge() {
        let same = [
            ["/files/a/b", "/files/a%2Fb"],
            ["/files/a/b", "/files/a%2fb"],
            ["/a+b", "/a%2Bb"],
            ["/a+b", "/a%2bb"],
            ["/%FF", "/%FE"],
            ["/%FF", "/%EF%BF%BD"],
            ["/a:b", "/a%3Ab"],
            ["/%c3%a9", "/%C3%A9"],
            ["/a%b", "/a%25b"],
        ];
        for [a, b] in same {
            assert_eq!(group_path(a), group_path(b), "{a} {b}");
        }
        assert_ne!(group_path("/a/b"), group_path("/a/c"));
        assert_ne!(group_path("/a/b"), group_path("/a/b/"));
        // One pass, as the extractor: %2525 is the text "%25".
        assert_eq!(group_path("/%2525"), "/%25");
    }

    #[test]
    fn group_query_reads_the_query_as_a_form() {
        assert_eq!(group_query("b=2&a=1"), group_query("a=1&b=2"));
        assert_eq!(group_query("q=a+b"), group_query("q=a%20b"));
        assert_eq!(group_query("page=%32"), group_query("page=2"));
        assert_eq!(group_query("a=1&&b=2"), group_query("a=1&b=2"));
        assert_eq!(group_query("x=%0A"), "x=%0A");
        assert_ne!(group_query("page=2"), group_query("page=3"));
        assert_eq!(group_query(""), "");
    }

    #[test]
    fn group_host_drops_port_case_and_trailing_dot() {
        for host in [
            "Example.COM",
            "example.com:80",
            "example.com.",
            "example.com.:8080",
        ] {
            assert_eq!(group_host(host), "example.com", "{host}");
        }
        assert_eq!(group_host("[::1]:8080"), "[::1]");
        assert_eq!(host_of_origin("http://a.test:8080 host=b"), "a.test:8080");
        assert_eq!(host_of_origin("a.test"), "a.test");
    }
}
