//! The byte layout of a [`CacheEntry`] in a remote store (Redis): compact, versioned, and read
//! defensively. An entry in another version, or one that does not decode, is a miss, never a
//! panic.
//!
//! Layout, version 1 (integers big-endian; times in nanoseconds since the Unix epoch, so that an
//! entry reads back exactly as it was written; windows in milliseconds):
//!
//! ```text
//! u8  version (1)
//! u8  kind: 1 response, 2 variant marker, 3 modified marker
//! u64 stored_at, u64 expires_at
//! response:  u16 status, u64 fresh_until, u64 initial_age (ns), u8 flags
//!            (1 shareable with credentials, 2 must-revalidate, 4 immutable),
//!            u32 stale-while-revalidate (ms), u32 stale-if-error (ms),
//!            u16 header count, then per header: u16 name length, name, u32 value length, value
//!            (repeated headers stay separate lines, in order), u32 body length, body
//! variants:  u64 generation, u16 name count, then per name: u16 length, name
//! modified:  u8 has Last-Modified, u64 Last-Modified, u16 tag count, then per tag: u16 length,
//!            tag
//! ```
//!
//! The validators (`ETag`, `Last-Modified`) are not repeated: they are read back from the stored
//! headers. A hand-written layout rather than a serialization crate: it is a few dozen lines,
//! copies the body once, and needs no new dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{
    http::{
        header::{self, HeaderName, HeaderValue},
        StatusCode,
    },
    web::Bytes,
};

use crate::{
    conditional::http_date_value,
    entry::{EntryKind, ModifiedMarker, StoredResponse, StoredTag, VariantMarker},
    CacheEntry,
};

/// The layout version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

const RESPONSE: u8 = 1;
const VARIANTS: u8 = 2;
const MODIFIED: u8 = 3;

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Encodes `entry` in the current layout.
pub(crate) fn encode(entry: &CacheEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.size().min(1 << 20));
    out.push(VERSION);
    let inner = entry.inner();
    let kind = match &inner.kind {
        EntryKind::Response(_) => RESPONSE,
        EntryKind::Variants(_) => VARIANTS,
        EntryKind::Modified(_) => MODIFIED,
    };
    out.push(kind);
    out.extend_from_slice(&nanos(inner.stored_at).to_be_bytes());
    out.extend_from_slice(&nanos(inner.expires_at).to_be_bytes());
    match &inner.kind {
        EntryKind::Response(r) => {
            out.extend_from_slice(&r.status.as_u16().to_be_bytes());
            out.extend_from_slice(&nanos(r.fresh_until).to_be_bytes());
            out.extend_from_slice(
                &u64::try_from(r.initial_age.as_nanos())
                    .unwrap_or(u64::MAX)
                    .to_be_bytes(),
            );
            let flags = u8::from(r.shareable_with_credentials)
                | (u8::from(r.must_revalidate) << 1)
                | (u8::from(r.immutable) << 2);
            out.push(flags);
            out.extend_from_slice(&duration_ms(r.stale_while_revalidate).to_be_bytes());
            out.extend_from_slice(&duration_ms(r.stale_if_error).to_be_bytes());
            let count = u16::try_from(r.headers.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for (name, value) in r.headers.iter().take(usize::from(count)) {
                push_short(&mut out, name.as_str().as_bytes());
                push_long(&mut out, value.as_bytes());
            }
            push_long(&mut out, &r.body);
        }
        EntryKind::Variants(v) => {
            out.extend_from_slice(&v.generation.to_be_bytes());
            let count = u16::try_from(v.names.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for name in v.names.iter().take(usize::from(count)) {
                push_short(&mut out, name.as_str().as_bytes());
            }
        }
        EntryKind::Modified(m) => {
            out.push(u8::from(m.last_modified.is_some()));
            out.extend_from_slice(&m.last_modified.map_or(0, nanos).to_be_bytes());
            let count = u16::try_from(m.superseded.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for tag in m.superseded.iter().take(usize::from(count)) {
                push_short(&mut out, tag);
            }
        }
    }
    out
}

/// Names, tags: at most 64 KiB (longer ones are cut, which only makes them not match).
fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

fn push_long(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(u32::MAX as usize);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// Why an entry could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Written by another version of the layout.
    Version(u8),
    /// Cut short, or a field that is not what it claims.
    Corrupt(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "entry layout version {v}, this build reads {VERSION}"),
            Self::Corrupt(what) => write!(f, "corrupt entry: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over the encoded bytes; every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
    whole: &'a Bytes,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Corrupt(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn short(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn long(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)?;
        self.take(n as usize, what)
    }

    /// A slice of the whole buffer as `Bytes`, without copying.
    fn long_bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let slice = self.long(what)?;
        Ok(self.whole.slice_ref(slice))
    }
}

/// Decodes an entry written by [`encode`].
pub(crate) fn decode(bytes: &Bytes) -> Result<CacheEntry, DecodeError> {
    let mut r = Reader {
        bytes: &bytes[..],
        whole: bytes,
    };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8("kind")?;
    let stored_at = time(r.u64("stored_at")?);
    let expires_at = time(r.u64("expires_at")?);
    let kind = match kind {
        RESPONSE => EntryKind::Response(decode_response(&mut r)?),
        VARIANTS => decode_variants(&mut r)?,
        MODIFIED => decode_modified(&mut r)?,
        _ => return Err(DecodeError::Corrupt("kind")),
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError::Corrupt("trailing bytes"));
    }
    Ok(CacheEntry::from_parts(stored_at, expires_at, kind))
}

/// A stored response's fields, after the kind byte.
fn decode_response(r: &mut Reader<'_>) -> Result<StoredResponse, DecodeError> {
    let status =
        StatusCode::from_u16(r.u16("status")?).map_err(|_| DecodeError::Corrupt("status"))?;
    let fresh_until = time(r.u64("fresh_until")?);
    let initial_age = Duration::from_nanos(r.u64("initial_age")?);
    let flags = r.u8("flags")?;
    let swr = Duration::from_millis(u64::from(r.u32("stale-while-revalidate")?));
    let sie = Duration::from_millis(u64::from(r.u32("stale-if-error")?));
    let count = r.u16("header count")?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let name = HeaderName::from_bytes(r.short("header name")?)
            .map_err(|_| DecodeError::Corrupt("header name"))?;
        let value = HeaderValue::from_bytes(r.long("header value")?)
            .map_err(|_| DecodeError::Corrupt("header value"))?;
        headers.push((name, value));
    }
    let body = r.long_bytes("body")?;
    let etag = headers
        .iter()
        .find(|(n, _)| n == header::ETAG)
        .and_then(|(_, v)| StoredTag::parse(v));
    let last_modified = headers
        .iter()
        .find(|(n, _)| n == header::LAST_MODIFIED)
        .and_then(|(_, v)| http_date_value(v));
    Ok(StoredResponse {
        status,
        headers: headers.into_boxed_slice(),
        body,
        etag,
        last_modified,
        initial_age,
        shareable_with_credentials: flags & 1 != 0,
        fresh_until,
        must_revalidate: flags & 2 != 0,
        immutable: flags & 4 != 0,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })
}

/// A variant marker's fields.
fn decode_variants(r: &mut Reader<'_>) -> Result<EntryKind, DecodeError> {
    let generation = r.u64("generation")?;
    let count = r.u16("name count")?;
    let mut names = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        names.push(
            HeaderName::from_bytes(r.short("vary name")?)
                .map_err(|_| DecodeError::Corrupt("vary name"))?,
        );
    }
    Ok(EntryKind::Variants(VariantMarker {
        names: names.into_boxed_slice(),
        generation,
    }))
}

/// A write marker's fields.
fn decode_modified(r: &mut Reader<'_>) -> Result<EntryKind, DecodeError> {
    let has_last_modified = r.u8("has last-modified")? != 0;
    let last_modified = r.u64("last-modified")?;
    let count = r.u16("tag count")?;
    let mut superseded = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        superseded.push(Box::<[u8]>::from(r.short("tag")?));
    }
    Ok(EntryKind::Modified(ModifiedMarker {
        superseded: superseded.into_boxed_slice(),
        last_modified: has_last_modified.then(|| time(last_modified)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> CacheEntry {
        let now = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let headers: Vec<(HeaderName, HeaderValue)> = vec![
            (header::ETAG, HeaderValue::from_static("\"abc\"")),
            (
                header::LAST_MODIFIED,
                HeaderValue::from_static("Tue, 14 Nov 2023 22:13:20 GMT"),
            ),
            (header::SET_COOKIE, HeaderValue::from_static("a=1")),
            (header::SET_COOKIE, HeaderValue::from_static("b=2")),
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
        ];
        let etag = StoredTag::parse(&headers[0].1);
        CacheEntry::from_parts(
            now,
            now + Duration::from_secs(90),
            EntryKind::Response(StoredResponse {
                status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
                headers: headers.into_boxed_slice(),
                body: Bytes::from_static(b"the body \x00\xff"),
                etag,
                last_modified: http_date_value(&HeaderValue::from_static(
                    "Tue, 14 Nov 2023 22:13:20 GMT",
                )),
                initial_age: Duration::from_nanos(1500),
                shareable_with_credentials: true,
                fresh_until: now + Duration::from_secs(30),
                must_revalidate: false,
                immutable: true,
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::ZERO,
            }),
        )
    }

    #[test]
    fn a_response_survives_the_round_trip() {
        let entry = response();
        let bytes = Bytes::from(encode(&entry));
        assert_eq!(bytes[0], VERSION);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.stored_at(), entry.stored_at());
        assert_eq!(back.expires_at(), entry.expires_at());
        let (EntryKind::Response(a), EntryKind::Response(b)) = (entry.kind(), back.kind()) else {
            panic!("not a response");
        };
        assert_eq!(a.status, b.status);
        assert_eq!(a.headers, b.headers, "every header, repeated ones in order");
        assert_eq!(a.body, b.body);
        assert_eq!(
            a.etag.as_ref().map(StoredTag::tag),
            b.etag.as_ref().map(StoredTag::tag)
        );
        assert_eq!(a.last_modified, b.last_modified);
        assert_eq!(a.initial_age, b.initial_age);
        assert_eq!(a.fresh_until, b.fresh_until);
        assert_eq!(
            (a.shareable_with_credentials, a.must_revalidate, a.immutable),
            (b.shareable_with_credentials, b.must_revalidate, b.immutable)
        );
        assert_eq!(a.stale_while_revalidate, b.stale_while_revalidate);
    }

    #[test]
    fn markers_survive_the_round_trip() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let variants = CacheEntry::from_parts(
            now,
            now + Duration::from_secs(5),
            EntryKind::Variants(VariantMarker {
                names: vec![header::ACCEPT, header::ACCEPT_LANGUAGE].into_boxed_slice(),
                generation: 0xdead_beef,
            }),
        );
        let back = decode(&Bytes::from(encode(&variants))).unwrap();
        let EntryKind::Variants(v) = back.kind() else {
            panic!()
        };
        assert_eq!(
            (&*v.names, v.generation),
            (&[header::ACCEPT, header::ACCEPT_LANGUAGE][..], 0xdead_beef)
        );

        let modified = CacheEntry::from_parts(
            now,
            now + Duration::from_secs(5),
            EntryKind::Modified(ModifiedMarker {
                superseded: vec![Box::from(&b"\"a\""[..]), Box::from(&b"\"b\""[..])]
                    .into_boxed_slice(),
                last_modified: Some(now),
            }),
        );
        let back = decode(&Bytes::from(encode(&modified))).unwrap();
        let EntryKind::Modified(m) = back.kind() else {
            panic!()
        };
        assert_eq!(m.superseded.len(), 2);
        assert_eq!(m.last_modified, Some(now));
    }

    #[test]
    fn another_version_is_refused() {
        let mut bytes = encode(&response());
        bytes[0] = 2;
        assert_eq!(
            decode(&Bytes::from(bytes)).err(),
            Some(DecodeError::Version(2))
        );
    }

    #[test]
    fn every_truncation_and_junk_is_an_error_not_a_panic() {
        let bytes = encode(&response());
        for len in 0..bytes.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&bytes[..len])).is_err(),
                "{len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&Bytes::from(trailing)).is_err());
        // Every single-byte corruption either decodes or is an error; none panics.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xff;
            let _ = decode(&Bytes::from(bad));
        }
        assert!(decode(&Bytes::from_static(b"\x01\x09")).is_err());
    }
}
