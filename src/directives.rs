//! The `Cache-Control` parser (RFC 9111 §5.2): request and response directives, over bytes.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The response or request directives of `Cache-Control` this cache acts on (RFC 9111 §5.2).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    /// Unqualified `no-cache`.
    pub(crate) no_cache: bool,
    /// `no-cache="field, ..."` (§5.2.2.4): these fields are not reused without revalidation.
    pub(crate) no_cache_fields: Vec<HeaderName>,
    /// Unqualified `private`.
    pub(crate) private: bool,
    /// `private="field, ..."` (§5.2.2.7): a shared cache stores the rest of the response.
    pub(crate) private_fields: Vec<HeaderName>,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) immutable: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    /// Request `max-stale`: `Some(None)` without a value (any staleness).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) only_if_cached: bool,
    /// RFC 5861 §3: served stale for this long while it is revalidated in the background.
    pub(crate) stale_while_revalidate: Option<u64>,
    /// RFC 5861 §4: served stale for this long when the handler fails.
    pub(crate) stale_if_error: Option<u64>,
    /// A freshness directive had an invalid value: the response is treated as stale (§4.2.1).
    pub(crate) invalid: bool,
}

/// §1.2.2: delta-seconds too large to represent are taken as 2^31.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

impl Directives {
    /// Parses every `Cache-Control` line. Names are case-insensitive; arguments may be tokens
    /// or quoted strings; unknown directives are ignored. A repeated freshness directive keeps
    /// its most restrictive (smallest) value, per the advice in §4.2.1.
    pub(crate) fn parse<'h>(lines: impl Iterator<Item = &'h HeaderValue>) -> Self {
        let mut d = Self::default();
        for line in lines {
            let mut rest = line.as_bytes();
            while !rest.is_empty() {
                let (name, value, after) = next_directive(rest);
                rest = after;
                let name = name.trim_ascii();
                let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
                if eq("no-store") {
                    d.no_store = true;
                } else if eq("no-cache") {
                    match value {
                        Some(fields) => d.no_cache_fields.extend(field_names(fields)),
                        None => d.no_cache = true,
                    }
                } else if eq("private") {
                    match value {
                        Some(fields) => d.private_fields.extend(field_names(fields)),
                        None => d.private = true,
                    }
                } else if eq("public") {
                    d.public = true;
                } else if eq("must-revalidate") {
                    d.must_revalidate = true;
                } else if eq("proxy-revalidate") {
                    d.proxy_revalidate = true;
                } else if eq("immutable") {
                    d.immutable = true;
                } else if eq("max-age") {
                    merge_seconds(&mut d.max_age, &mut d.invalid, value);
                } else if eq("s-maxage") {
                    merge_seconds(&mut d.s_maxage, &mut d.invalid, value);
                } else if eq("max-stale") {
                    // §5.2.1.2: without a value, any staleness; an invalid value, none.
                    d.max_stale = Some(value.map(|v| parse_delta_seconds(v).unwrap_or(0)));
                } else if eq("min-fresh") {
                    // An invalid min-fresh asks for more freshness than any response has.
                    let secs = value
                        .and_then(parse_delta_seconds)
                        .unwrap_or(DELTA_SECONDS_MAX);
                    d.min_fresh = Some(d.min_fresh.map_or(secs, |old| old.max(secs)));
                } else if eq("only-if-cached") {
                    d.only_if_cached = true;
                } else if eq("stale-while-revalidate") {
                    // An invalid value grants nothing (RFC 5861 says nothing more).
                    let secs = value.and_then(parse_delta_seconds).unwrap_or(0);
                    d.stale_while_revalidate =
                        Some(d.stale_while_revalidate.map_or(secs, |o| o.min(secs)));
                } else if eq("stale-if-error") {
                    let secs = value.and_then(parse_delta_seconds).unwrap_or(0);
                    d.stale_if_error = Some(d.stale_if_error.map_or(secs, |o| o.min(secs)));
                }
            }
        }
        d
    }

    /// The request directives of `req`: `Cache-Control`, or `Pragma: no-cache` when there is
    /// no `Cache-Control` (RFC 9111 §5.4).
    pub(crate) fn of_request(req: &HeaderMap) -> Self {
        if req.contains_key(header::CACHE_CONTROL) {
            return Self::parse(req.get_all(header::CACHE_CONTROL));
        }
        let no_cache = req.get_all(header::PRAGMA).any(|line| {
            line.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
        });
        Self {
            no_cache,
            ..Self::default()
        }
    }
}

/// The header names in a directive's quoted list argument; what is not a name is skipped.
fn field_names(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    value
        .split(|&b| b == b',')
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
}

fn merge_seconds(slot: &mut Option<u64>, invalid: &mut bool, value: Option<&[u8]>) {
    match value.and_then(parse_delta_seconds) {
        Some(s) => *slot = Some(slot.map_or(s, |old| old.min(s))),
        None => {
            *invalid = true;
            *slot = Some(0);
        }
    }
}

fn parse_delta_seconds(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(n.min(DELTA_SECONDS_MAX))
}

/// Splits off one `name[=value]` directive, honouring quoted strings (which may hold commas).
fn next_directive(bytes: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    let mut i = 0;
    let mut eq = None;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            b'=' if !quoted && eq.is_none() => eq = Some(i),
            b',' if !quoted => break,
            _ => {}
        }
        i += 1;
    }
    let end = i.min(bytes.len());
    let item = &bytes[..end];
    let rest = if end < bytes.len() {
        &bytes[end + 1..]
    } else {
        &[][..]
    };
    match eq {
        Some(e) => (&item[..e], Some(&item[e + 1..]), rest),
        None => (item, None, rest),
    }
}

/// The directives of one `Cache-Control` line, for tests.
#[cfg(test)]
pub(crate) fn cc(s: &str) -> Directives {
    let v = HeaderValue::from_str(s).unwrap();
    Directives::parse(std::iter::once(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_case_insensitive_and_quoted_values_hold_commas() {
        let d = cc("Public, MAX-AGE=5, private=\"set-cookie, x\", s-maxage=\"7\"");
        assert!(d.public && !d.private);
        assert_eq!(
            d.private_fields,
            vec![header::SET_COOKIE, HeaderName::from_static("x")]
        );
        assert_eq!(d.max_age, Some(5));
        assert_eq!(d.s_maxage, Some(7));
        assert!(!d.invalid);
    }

    #[test]
    fn invalid_and_duplicate_freshness() {
        assert!(cc("max-age=abc").invalid);
        assert!(cc("max-age").invalid);
        assert_eq!(cc("max-age=10, max-age=3").max_age, Some(3));
        assert_eq!(cc("max-age=99999999999999999999999").max_age, Some(1 << 31));
    }
}
