//! Cache keys: which stored response may answer which request.
//!
//! A key is exact: it is the byte-for-byte concatenation of everything that selects a response
//! (method class, host, path, query, and the request values of the varying headers), with
//! separators that cannot occur inside those parts. No hash stands in for identity, so two
//! different requests can never share an entry.

use std::{fmt, sync::Arc};

use actix_web::http::header::{self, HeaderMap, HeaderName};

/// The resource a response belongs to: origin and path, without the query string.
///
/// The origin is what the middleware derives from the request: scheme, the `Host` the router
/// matched, and the forwarded host where a proxy header names another one
/// (e.g. `https://example.com`). Tools may put any string there; only equality matters.
///
/// Stores index their entries by resource so that [`CollectableStore::collect`] can drop every
/// variant of it (other `Vary` values, other query strings) after a write.
///
/// [`CollectableStore::collect`]: crate::CollectableStore::collect
///
/// ```
/// use actix_response_cache::ResourceKey;
///
/// let resource = ResourceKey::new("example.com", "/users/1");
/// assert_eq!(resource.origin(), "example.com");
/// assert_eq!(resource.path(), "/users/1");
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    origin: Box<str>,
    path: Box<str>,
}

impl ResourceKey {
    /// Creates the key of the resource at `path` of `origin`.
    ///
    /// ```
    /// # use actix_response_cache::ResourceKey;
    /// let resource = ResourceKey::new("localhost:8080", "/");
    /// assert_eq!(resource.path(), "/");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(origin: impl Into<Box<str>>, path: impl Into<Box<str>>) -> Self {
        Self {
            origin: origin.into(),
            path: path.into(),
        }
    }

    /// The origin (scheme and host) of the resource.
    ///
    /// ```
    /// # use actix_response_cache::ResourceKey;
    /// assert_eq!(ResourceKey::new("https://a.test", "/x").origin(), "https://a.test");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The path, exactly as the request sent it (still percent-encoded).
    ///
    /// ```
    /// # use actix_response_cache::ResourceKey;
    /// assert_eq!(ResourceKey::new("a.test", "/a%20b").path(), "/a%20b");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A hash of the resource, equal to [`fingerprint_of_key`] of any of its keys.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::with_capacity(5 + self.origin.len() + self.path.len());
        bytes.extend_from_slice(b"GET\n");
        bytes.extend_from_slice(self.origin.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(self.path.as_bytes());
        word_hash(&bytes)
    }
}

/// A fast, non-cryptographic hash, eight bytes at a time (the FxHash step). It only picks
/// shards and race-guard slots; a collision costs a skipped store, never a wrong answer.
pub(crate) fn word_hash(bytes: &[u8]) -> u64 {
    let mut h = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h = hash_step(h, word(chunk));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = hash_step(h, word(rest));
    }
    hash_finish(h, bytes.len())
}

const HASH_K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

fn hash_step(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(HASH_K)
}

fn hash_finish(h: u64, len: usize) -> u64 {
    let h = hash_step(h, len as u64);
    // Mix the high bits down: shards are picked by the low bits.
    h ^ (h >> 29)
}

/// Up to eight bytes as a little-endian word, zero-padded.
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// The high bit of every byte of `word` that is `\n`, and no other bit (exact, unlike the
/// shorter "has zero byte" trick, whose borrows can mark the bytes after a match).
fn newline_mask(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// The resource fingerprint of key bytes: [`word_hash`] of the part up to the third `\n`
/// (method class, origin and path), so every variant and query string of a resource shares it.
///
/// It finds the end and hashes in one pass, eight bytes at a time: this runs on every lookup of
/// a sharded [`MemoryStore`](crate::MemoryStore).
pub(crate) fn fingerprint_of_key(key: &[u8]) -> u64 {
    let mut h = 0;
    let mut newlines = 0;
    for (i, chunk) in key.chunks(8).enumerate() {
        let word = word(chunk);
        let mask = newline_mask(word);
        let here = mask.count_ones();
        if newlines + here >= 3 {
            // Clear the newlines before the third one; its byte index ends the resource.
            let mut m = mask;
            for _ in 0..(2 - newlines) {
                m &= m - 1;
            }
            let at = (m.trailing_zeros() / 8) as usize;
            if at > 0 {
                h = hash_step(h, word & (u64::MAX >> (64 - 8 * at)));
            }
            return hash_finish(h, i * 8 + at);
        }
        newlines += here;
        h = hash_step(h, word);
    }
    hash_finish(h, key.len())
}

impl fmt::Debug for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

/// The exact key of one stored response.
///
/// Cloning is a reference-count increment. Equality and hashing use the full key bytes.
///
/// ```
/// use actix_response_cache::CacheKey;
///
/// let a = CacheKey::for_get("example.com", "/users/1", "");
/// let b = CacheKey::for_get("example.com", "/users/1", "page=2");
/// assert_ne!(a, b);
/// assert_eq!(b.query(), "page=2");
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone)]
pub struct CacheKey {
    bytes: Arc<[u8]>,
    resource: Arc<ResourceKey>,
    query: Arc<str>,
}

impl CacheKey {
    /// The key of a `GET` (or `HEAD`) of `path` and `query` at `origin`, varying on no header.
    ///
    /// The middleware derives keys itself; this constructor is for store tests and tools.
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// let key = CacheKey::for_get("example.com", "/", "");
    /// assert_eq!(key.resource().path(), "/");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn for_get(origin: &str, path: &str, query: &str) -> Self {
        KeyBuilder::new(origin, path, query).finish()
    }

    /// The resource (host and path) this key belongs to.
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// let key = CacheKey::for_get("example.com", "/users", "a=1");
    /// assert_eq!(key.resource().origin(), "example.com");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn resource(&self) -> &ResourceKey {
        &self.resource
    }

    /// The shared handle of [`resource`](Self::resource), for indexes that keep it.
    pub(crate) fn resource_handle(&self) -> &Arc<ResourceKey> {
        &self.resource
    }

    /// The query string of the request, without the `?`.
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// assert_eq!(CacheKey::for_get("h", "/", "q=1").query(), "q=1");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The exact key bytes, for stores that keep keys as bytes (e.g. Redis).
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// let key = CacheKey::for_get("h", "/", "");
    /// assert!(key.as_bytes().starts_with(b"GET\n"));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Derives the key of one variant: this key, the variant marker's generation, and the
    /// request values of `names` (the header names of the stored response's `Vary`).
    pub(crate) fn variant(
        &self,
        names: &[HeaderName],
        generation: u64,
        headers: &HeaderMap,
    ) -> CacheKey {
        let mut bytes = Vec::with_capacity(self.bytes.len() + 64);
        bytes.extend_from_slice(&self.bytes);
        push_variant(&mut bytes, names, generation, headers);
        CacheKey {
            bytes: bytes.into(),
            resource: Arc::clone(&self.resource),
            query: Arc::clone(&self.query),
        }
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

impl std::borrow::Borrow<[u8]> for CacheKey {
    fn borrow(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.bytes))
    }
}

/// Builds the primary key of a request.
pub(crate) struct KeyBuilder {
    bytes: Vec<u8>,
    resource: ResourceKey,
    query: Arc<str>,
}

impl KeyBuilder {
    /// Starts a key for the method class `GET` (which `HEAD` shares).
    ///
    /// Layout: `GET \n origin \n path \n query`. Origin, path and query cannot contain `\n`
    /// (the HTTP parser rejects control bytes there), so the layout is unambiguous. Request
    /// headers that select a response (`Vary`, `cache_vary`) are not part of this primary key:
    /// they select a variant under the marker stored here ([`CacheKey::variant`]).
    pub(crate) fn new(origin: &str, path: &str, query: &str) -> Self {
        let mut bytes = Vec::with_capacity(8 + origin.len() + path.len() + query.len());
        bytes.extend_from_slice(b"GET\n");
        bytes.extend_from_slice(origin.as_bytes());
        push_path_and_query(&mut bytes, path, query);
        Self {
            bytes,
            resource: ResourceKey::new(origin, path),
            query: query.into(),
        }
    }

    pub(crate) fn finish(self) -> CacheKey {
        CacheKey {
            bytes: self.bytes.into(),
            resource: Arc::new(self.resource),
            query: self.query,
        }
    }
}

/// What the hit path needs to know of a request's headers, found in one pass over them.
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

/// Appends `\n path \n query` to a key that holds its method class and origin.
pub(crate) fn push_path_and_query(bytes: &mut Vec<u8>, path: &str, query: &str) {
    bytes.push(b'\n');
    bytes.extend_from_slice(path.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(query.as_bytes());
}

/// Appends the variant part to a primary key: the marker's generation and the request values
/// of the varying headers.
pub(crate) fn push_variant(
    bytes: &mut Vec<u8>,
    names: &[HeaderName],
    generation: u64,
    headers: &HeaderMap,
) {
    bytes.extend_from_slice(b"\n\x01vary ");
    bytes.extend_from_slice(&generation.to_be_bytes());
    push_header_values(bytes, names, headers);
}

/// Appends `\n name` and, for each line of that header, `\0 value`.
///
/// Header names cannot contain `\0` or `\n`, and actix rejects both in values, so an absent
/// header (`name`), an empty one (`name\0`) and two lines (`name\0a\0b`) all differ.
fn push_header_values(bytes: &mut Vec<u8>, names: &[HeaderName], headers: &HeaderMap) {
    for name in names {
        bytes.push(b'\n');
        bytes.extend_from_slice(name.as_str().as_bytes());
        for value in headers.get_all(name) {
            bytes.push(0);
            bytes.extend_from_slice(value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderValue, ACCEPT_LANGUAGE};

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(ACCEPT_LANGUAGE, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn absent_empty_and_multiple_values_give_different_keys() {
        let names = [ACCEPT_LANGUAGE];
        let key = |h: &HeaderMap| KeyBuilder::new("h", "/", "").finish().variant(&names, 1, h);
        let keys = [
            key(&with(&[])),
            key(&with(&[""])),
            key(&with(&["a", "b"])),
            key(&with(&["a,b"])),
            key(&with(&["a"])),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn resource_fingerprint_matches_the_keys_fingerprint() {
        for (origin, path, query) in [
            ("http://a", "/x", ""),
            ("https://host:8080", "/a/b/c/d/e", "q=1"),
        ] {
            let key = CacheKey::for_get(origin, path, query);
            assert_eq!(
                key.resource().fingerprint(),
                fingerprint_of_key(key.as_bytes())
            );
        }
    }

    #[test]
    fn key_fingerprint_hashes_up_to_the_third_newline() {
        // Every split of the newlines across the eight-byte words, against the plain rule.
        let plain = |key: &[u8]| {
            let mut seen = 0;
            let end = key
                .iter()
                .position(|&b| {
                    seen += usize::from(b == b'\n');
                    seen == 3
                })
                .unwrap_or(key.len());
            word_hash(&key[..end])
        };
        for origin_len in 0..20 {
            for path_len in 0..20 {
                let origin = "o".repeat(origin_len);
                let path = "/".to_owned() + &"p".repeat(path_len);
                for key in [
                    format!("GET\n{origin}\n{path}\nq=1"),
                    format!("GET\n{origin}\n{path}\n"),
                    format!("GET\n{origin}\n{path}"),
                ] {
                    assert_eq!(
                        fingerprint_of_key(key.as_bytes()),
                        plain(key.as_bytes()),
                        "{key:?}"
                    );
                }
            }
        }
        assert_eq!(fingerprint_of_key(b""), word_hash(b""));
        assert_eq!(
            fingerprint_of_key(b"\xff\n\x8a\n\n\n"),
            word_hash(b"\xff\n\x8a\n")
        );
    }

    #[test]
    fn query_and_path_do_not_run_together() {
        assert_ne!(
            CacheKey::for_get("h", "/a", "b"),
            CacheKey::for_get("h", "/ab", "")
        );
    }
}
