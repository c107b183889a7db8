//! Entity tags (RFC 9110 §8.8.3): computing strong tags and comparing tag lists.
//!
//! Parsing works on the raw header bytes and allocates nothing. A member that does not parse is
//! ignored ("no match"), never an error: a client's malformed `If-None-Match` must not turn a
//! request into a 500.

use actix_web::http::header::HeaderValue;
use sha2::{Digest, Sha256};

/// Computes the strong entity tag of `body`: the lowercase hex SHA-256 of the bytes, quoted.
///
/// The tag depends on the bytes alone, so every server and every restart computes the same one.
pub(crate) fn strong_etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut quoted = [0u8; 66];
    quoted[0] = b'"';
    quoted[65] = b'"';
    // Encoding into a fixed buffer of the exact size cannot fail.
    if hex::encode_to_slice(digest, &mut quoted[1..65]).is_err() {
        return HeaderValue::from_static("\"\"");
    }
    HeaderValue::from_bytes(&quoted).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// An entity tag borrowed from a header: `W/"opaque"` or `"opaque"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub(crate) weak: bool,
    /// The opaque tag *with* its quotes, so that comparison is plain byte equality.
    pub(crate) opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses a single entity tag (e.g. a response's `ETag`), surrounding whitespace allowed.
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        let bytes = trim(bytes);
        let (tag, rest) = parse_member(bytes)?;
        trim(rest).is_empty().then_some(tag)
    }

    /// Strong comparison, RFC 9110 §8.8.3.2: both strong and byte-equal.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison, RFC 9110 §8.8.3.2: equal opaque tags, whatever their weakness.
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// How an `If-Match` / `If-None-Match` field value relates to the current entity tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// The field is `*`.
    Any,
    /// A member matched.
    Matched,
    /// No member matched (malformed members are skipped).
    NotMatched,
}

/// Which comparison function a precondition uses (RFC 9110 §13.1.1 and §13.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Strong,
    Weak,
}

/// Evaluates the field lines of an `If-Match` or `If-None-Match` against `current`.
///
/// The grammar is `"*" / #entity-tag` (RFC 9110 §13.1.1): `*` means "any" only as the whole
/// field value; as one member of a list it is malformed and ignored, like any other junk.
/// Members are comma-separated; commas inside a quoted tag belong to the tag.
pub(crate) fn match_list<'h>(
    lines: impl Iterator<Item = &'h HeaderValue> + Clone,
    current: Option<EntityTag<'_>>,
    comparison: Comparison,
) -> ListMatch {
    // The common case: a field line that is exactly the tag the client was sent. A line equal
    // to a well-formed tag is a well-formed one-member list that matches, and the field is then
    // not `*`, so this is the full rule's answer without scanning member by member.
    if let (Some(current), Some(line)) = (&current, lines.clone().next()) {
        if is_exactly(line.as_bytes(), current, comparison) {
            return ListMatch::Matched;
        }
    }
    if is_star(lines.clone()) {
        return ListMatch::Any;
    }
    let mut matched = false;
    for line in lines {
        let mut rest = line.as_bytes();
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            match parse_member(rest) {
                Some((tag, after)) => {
                    if let Some(current) = &current {
                        matched |= match comparison {
                            Comparison::Strong => tag.strong_eq(current),
                            Comparison::Weak => tag.weak_eq(current),
                        };
                    }
                    rest = after;
                    // Anything but a separator after a tag makes the rest of the member junk.
                    let next = skip_ows(rest);
                    if !next.is_empty() && next[0] != b',' {
                        rest = skip_to_comma(next);
                    }
                }
                None => rest = skip_to_comma(rest),
            }
        }
    }
    if matched {
        ListMatch::Matched
    } else {
        ListMatch::NotMatched
    }
}

/// Whether `field` is byte for byte the tag `current`, in a form the comparison accepts: the
/// strong tag itself for strong comparison; for weak comparison also its `W/` form, or its
/// strong form when `current` is weak.
fn is_exactly(field: &[u8], current: &EntityTag<'_>, comparison: Comparison) -> bool {
    let (weak, opaque) = match field {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    if opaque != current.opaque {
        return false;
    }
    match comparison {
        Comparison::Strong => !weak && !current.weak,
        Comparison::Weak => true,
    }
}

/// Whether the field lines are exactly `*` (surrounding whitespace and empty lines allowed).
fn is_star<'h>(lines: impl Iterator<Item = &'h HeaderValue>) -> bool {
    let mut star = false;
    for line in lines {
        match trim(line.as_bytes()) {
            b"" => {}
            b"*" if !star => star = true,
            _ => return false,
        }
    }
    star
}

/// Calls `f` with every well-formed strong tag in the field lines.
pub(crate) fn for_each_strong<'h>(
    lines: impl Iterator<Item = &'h HeaderValue>,
    mut f: impl FnMut(&'h [u8]),
) {
    for line in lines {
        let mut rest = line.as_bytes();
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            match parse_member(rest) {
                Some((tag, after)) => {
                    if !tag.weak {
                        f(tag.opaque);
                    }
                    rest = skip_to_comma(after);
                }
                None => rest = skip_to_comma(rest),
            }
        }
    }
}

/// Parses `[W/] DQUOTE *etagc DQUOTE` at the start of `bytes`.
fn parse_member(bytes: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, rest) = match bytes {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    let body = rest.strip_prefix(b"\"")?;
    // The closing quote is the first DQUOTE (etagc excludes it); every byte before it must be
    // etagc. Checking the whole run without an early exit lets the compiler vectorise it.
    let close = body.iter().position(|&b| b == b'"')?;
    if !body[..close].iter().fold(true, |ok, &b| ok & is_etagc(b)) {
        return None;
    }
    Some((
        EntityTag {
            weak,
            opaque: &rest[..close + 2],
        },
        &rest[close + 2..],
    ))
}

/// etagc = %x21 / %x23-7E / obs-text; DQUOTE is handled by the caller.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

fn skip_ows(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &bytes[n..]
}

fn skip_separators(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t' || b == b',')
        .count();
    &bytes[n..]
}

fn skip_to_comma(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == b',') {
        Some(i) => &bytes[i..],
        None => &[],
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let bytes = skip_ows(bytes);
    let end = bytes.len()
        - bytes
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(field: &str, current: &str, cmp: Comparison) -> ListMatch {
        let value = HeaderValue::from_str(field).unwrap();
        match_list(
            std::iter::once(&value),
            EntityTag::parse(current.as_bytes()),
            cmp,
        )
    }

    #[test]
    fn strong_etag_is_quoted_hex_sha256() {
        let tag = strong_etag(b"hello");
        assert_eq!(
            tag,
            "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\""
        );
    }

    #[test]
    fn weak_comparison_ignores_weakness() {
        assert_eq!(
            eval("W/\"a\"", "\"a\"", Comparison::Weak),
            ListMatch::Matched
        );
        assert_eq!(
            eval("W/\"a\"", "\"a\"", Comparison::Strong),
            ListMatch::NotMatched
        );
        assert_eq!(
            eval("\"a\"", "W/\"a\"", Comparison::Strong),
            ListMatch::NotMatched
        );
    }

    #[test]
    fn lists_match_any_member_and_skip_junk() {
        assert_eq!(
            eval("\"x\", junk, \"a\"", "\"a\"", Comparison::Strong),
            ListMatch::Matched
        );
        assert_eq!(
            eval("\"a,b\"", "\"a,b\"", Comparison::Strong),
            ListMatch::Matched
        );
        assert_eq!(
            eval("\"a,b\"", "\"a\"", Comparison::Strong),
            ListMatch::NotMatched
        );
        assert_eq!(
            eval("a, \"b", "\"b\"", Comparison::Weak),
            ListMatch::NotMatched
        );
        assert_eq!(eval(" * ", "\"b\"", Comparison::Weak), ListMatch::Any);
        assert_eq!(
            eval("\"a\", *", "\"b\"", Comparison::Weak),
            ListMatch::NotMatched
        );
        assert_eq!(
            eval("*, \"b\"", "\"b\"", Comparison::Weak),
            ListMatch::Matched
        );
        assert_eq!(
            eval("\"a\"x, \"b\"", "\"a\"", Comparison::Weak),
            ListMatch::Matched
        );
        assert_eq!(eval("", "\"a\"", Comparison::Weak), ListMatch::NotMatched);
        assert_eq!(eval("W/", "\"a\"", Comparison::Weak), ListMatch::NotMatched);
        assert_eq!(eval("\"", "\"a\"", Comparison::Weak), ListMatch::NotMatched);
    }

    #[test]
    fn obs_text_is_part_of_a_tag() {
        let value = HeaderValue::from_bytes(b"\"\xff\"").unwrap();
        let current = EntityTag::parse(b"\"\xff\"");
        assert_eq!(
            match_list(std::iter::once(&value), current, Comparison::Strong),
            ListMatch::Matched
        );
    }

    #[test]
    fn an_exact_field_matches_as_the_full_rule_says() {
        // The fast path (the field is the tag itself) agrees with the member-by-member rule.
        for (field, current, cmp, want) in [
            ("\"a\"", "\"a\"", Comparison::Strong, ListMatch::Matched),
            ("\"a\"", "\"a\"", Comparison::Weak, ListMatch::Matched),
            ("W/\"a\"", "\"a\"", Comparison::Weak, ListMatch::Matched),
            (
                "W/\"a\"",
                "\"a\"",
                Comparison::Strong,
                ListMatch::NotMatched,
            ),
            ("\"a\"", "W/\"a\"", Comparison::Weak, ListMatch::Matched),
            (
                "\"a\"",
                "W/\"a\"",
                Comparison::Strong,
                ListMatch::NotMatched,
            ),
            (
                "W/\"a\"",
                "W/\"a\"",
                Comparison::Strong,
                ListMatch::NotMatched,
            ),
            ("\"a\"", "\"ab\"", Comparison::Weak, ListMatch::NotMatched),
        ] {
            assert_eq!(
                eval(field, current, cmp),
                want,
                "{field} vs {current} ({cmp:?})"
            );
        }
    }

    #[test]
    fn members_with_bytes_outside_etagc_do_not_parse() {
        assert!(EntityTag::parse(b"\"a b\"").is_none());
        assert!(EntityTag::parse(b"\"a\x7fb\"").is_none());
        assert!(EntityTag::parse(b"\"abc").is_none());
        assert!(EntityTag::parse(b"\"\"").is_some());
        assert_eq!(
            eval("\"a b\", \"c\"", "\"c\"", Comparison::Weak),
            ListMatch::Matched
        );
    }

    #[test]
    fn single_tag_parse_rejects_trailing_junk() {
        assert!(EntityTag::parse(b"\"a\"").is_some());
        assert!(EntityTag::parse(b" W/\"a\" ").is_some());
        assert!(EntityTag::parse(b"\"a\" x").is_none());
        assert!(EntityTag::parse(b"a").is_none());
    }
}
