//! Cache keys: which stored response may answer which request. This file is the only writer of
//! key bytes.
//!
//! A key is exact: it is the byte-for-byte concatenation of everything that selects a response
//! (method class, origin, the router's path, the query string, and the request values of the
//! varying headers), with separators that cannot occur inside those parts. No hash stands in
//! for identity, so two different requests can never share an entry.
//!
//! Layout: `GET \n key-path \n origin \n query`, then for a `Vary` variant
//! `\n \x01vary <generation> (\n name (\0 value)*)*`. The key path holds no control bytes
//! ([`crate::resource`] escapes them), and header values (the origin's hosts) and the query
//! cannot hold them (the HTTP parser rejects them), so the layout is unambiguous. The key path
//! comes first so that a sharded store finds it without scanning the origin.

use std::{
    fmt,
    hash::BuildHasher,
    sync::{Arc, OnceLock},
};

use actix_web::{
    http::header::{HeaderMap, HeaderName},
    HttpRequest,
};

use crate::{origin, resource};

/// The invalidation group of a resource: what one write makes stale.
///
/// It is the host the router matched (lowercase, without port or trailing dot) and the path as
/// the `Path` extractor decodes it, so every alias of a resource (`/users/%31`, `/files/a%2Fb`,
/// `/files/a/b`, an absolute-form request target) has the same group. Stores index their
/// entries by group so that [`CollectableStore::collect`] drops every stored response of it
/// (every alias, `Vary` value and, when asked, query string) after a write.
///
/// [`CollectableStore::collect`]: crate::CollectableStore::collect
///
/// ```
/// use actix_response_cache::ResourceGroup;
///
/// let group = ResourceGroup::new("http://Example.com:8080", "/files/a%2Fb");
/// assert_eq!(group.host(), "example.com");
/// assert_eq!(group.path(), "/files/a/b");
/// assert_eq!(group, ResourceGroup::new("example.com", "/files/a/b"));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceGroup {
    host: Box<str>,
    path: Box<str>,
}

impl ResourceGroup {
    /// The group of requests for `path` (as a request sends it, percent-encoded) at `origin` (a
    /// host, or `scheme://host[:port]`).
    ///
    /// ```
    /// use actix_response_cache::ResourceGroup;
    ///
    /// assert_eq!(ResourceGroup::new("a.test", "/users/%31"), ResourceGroup::new("a.test", "/users/1"));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn new(origin: &str, path: &str) -> Self {
        Self {
            host: resource::group_host(resource::host_of_origin(origin)).into(),
            path: resource::group_path(path).into(),
        }
    }

    /// A group from parts already in group form (as a store reads them back).
    #[cfg(feature = "redis")]
    pub(crate) fn from_canonical(host: &str, path: &str) -> Self {
        Self {
            host: host.into(),
            path: path.into(),
        }
    }

    /// The host, lowercase, without port or trailing dot.
    ///
    /// ```
    /// # use actix_response_cache::ResourceGroup;
    /// assert_eq!(ResourceGroup::new("https://A.test.:443", "/").host(), "a.test");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path as the `Path` extractor decodes it (control bytes as `%XX`).
    ///
    /// ```
    /// # use actix_response_cache::ResourceGroup;
    /// assert_eq!(ResourceGroup::new("a.test", "/a%20b").path(), "/a b");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A process-local hash of the group, seeded at start-up: the slot of the race guard, the
    /// write lock and the like. A client cannot aim a request at another's slot.
    pub(crate) fn fingerprint(&self) -> u64 {
        seeded().hash_one((&*self.host, &*self.path))
    }

    /// A hash every server computes alike, for stores several servers share (Redis hash tags).
    #[cfg(feature = "redis")]
    pub(crate) fn stable_fingerprint(&self) -> u64 {
        let mut bytes = Vec::with_capacity(2 + self.host.len() + self.path.len());
        bytes.extend_from_slice(self.host.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(self.path.as_bytes());
        word_hash(&bytes)
    }

    /// The seeded hash a sharded in-process store picks a shard by; equal to
    /// [`shard_hash_of_key`] of every key of the group.
    pub(crate) fn shard_hash(&self) -> u64 {
        seeded().hash_one(self.path.as_bytes())
    }
}

impl fmt::Debug for ResourceGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path)
    }
}

/// The process's hash seed, drawn once.
fn seeded() -> &'static foldhash::fast::RandomState {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(foldhash::fast::RandomState::default)
}

/// A seeded (process-local) hash of `bytes`, for the in-process tables keyed by request bytes.
pub(crate) fn seeded_hash(bytes: &[u8]) -> u64 {
    seeded().hash_one(bytes)
}

/// The shard hash of key bytes: [`ResourceGroup::shard_hash`] of the key's group, found from the
/// bytes alone (the hit path has no owned key). It decodes the key path's `%25`, `%2F`, `%2B`
/// only when the path holds a `%`.
pub(crate) fn shard_hash_of_key(key: &[u8]) -> u64 {
    let path = key_path_field(key);
    match resource::group_path_of_key_path(path) {
        Some(group) => seeded().hash_one(&group[..]),
        None => seeded().hash_one(path),
    }
}

/// The key path: the bytes after `GET\n`, up to the next `\n`.
fn key_path_field(key: &[u8]) -> &[u8] {
    let rest = key.get(4..).unwrap_or_default();
    // Paths are short: a plain scan beats a vectorised search's set-up.
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[..end],
        None => rest,
    }
}

/// A fast, non-cryptographic hash every process computes alike, eight bytes at a time (the
/// FxHash step). Only for stores several servers share, which must agree on it.
#[cfg(feature = "redis")]
pub(crate) fn word_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut h = 0;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = step(h, u64::from_le_bytes(word));
    }
    let h = step(h, bytes.len() as u64);
    h ^ (h >> 29)
}

/// The exact key of one stored response, with the group it belongs to.
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
/// // The router sees one path: one key.
/// assert_eq!(a, CacheKey::for_get("example.com", "/users/%31", ""));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone)]
pub struct CacheKey {
    bytes: Arc<[u8]>,
    group: Arc<ResourceGroup>,
    query: Arc<str>,
}

impl CacheKey {
    /// The key of a `GET` (or `HEAD`) of `path` and `query`, as a request sends them, at
    /// `origin`, varying on no header.
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
        let mut bytes = Vec::with_capacity(8 + origin.len() + path.len() + query.len());
        bytes.extend_from_slice(b"GET\n");
        bytes.extend_from_slice(&resource::key_path(path));
        bytes.push(b'\n');
        resource::push_escaped(&mut bytes, origin.as_bytes());
        bytes.push(b'\n');
        resource::push_escaped(&mut bytes, query.as_bytes());
        Self {
            bytes: bytes.into(),
            group: Arc::new(ResourceGroup::new(origin, path)),
            query: resource::group_query(query).into(),
        }
    }

    /// The primary key of a request as it reaches the cache.
    pub(crate) fn of_request(req: &HttpRequest, forwarded: bool) -> Self {
        let mut bytes = Vec::with_capacity(64);
        write_primary(req, &mut bytes, forwarded);
        let key_path = key_path_field(&bytes);
        let group_path = match resource::group_path_of_key_path(key_path) {
            Some(decoded) => String::from_utf8_lossy(&decoded).into_owned(),
            None => String::from_utf8_lossy(key_path).into_owned(),
        };
        let group = ResourceGroup {
            host: resource::group_host(origin::routing_host(req)).into(),
            path: group_path.into(),
        };
        Self {
            bytes: bytes.into(),
            group: Arc::new(group),
            query: resource::group_query(req.query_string()).into(),
        }
    }

    /// Where a successful write leaves what it knows of the group and query it changed (the
    /// entity tags it made stale): one key for every alias. Its key path is the group path with
    /// `%` written as `%25`, so that [`shard_hash_of_key`] finds the group's shard.
    pub(crate) fn write_marker(group: &Arc<ResourceGroup>, query: &Arc<str>) -> Self {
        let mut bytes = Vec::with_capacity(32 + group.host.len() + group.path.len() + query.len());
        bytes.extend_from_slice(b"GET\n");
        for &b in group.path.as_bytes() {
            if b == b'%' {
                bytes.extend_from_slice(b"%25");
            } else {
                bytes.push(b);
            }
        }
        bytes.extend_from_slice(b"\n\x02modified ");
        bytes.extend_from_slice(group.host.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(query.as_bytes());
        Self {
            bytes: bytes.into(),
            group: Arc::clone(group),
            query: Arc::clone(query),
        }
    }

    /// The group this key belongs to.
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// let key = CacheKey::for_get("http://example.com", "/users", "a=1");
    /// assert_eq!(key.resource().host(), "example.com");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn resource(&self) -> &ResourceGroup {
        &self.group
    }

    /// The shared handle of [`resource`](Self::resource), for indexes that keep it.
    pub(crate) fn resource_handle(&self) -> &Arc<ResourceGroup> {
        &self.group
    }

    /// The query string in group form: decoded as a form, parameters sorted (see
    /// [`ResourceGroup`]). Collection by query compares this.
    ///
    /// ```
    /// # use actix_response_cache::CacheKey;
    /// assert_eq!(CacheKey::for_get("h", "/", "b=2&a=%31").query(), "a=1&b=2");
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The shared handle of [`query`](Self::query).
    pub(crate) fn query_handle(&self) -> &Arc<str> {
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
            group: Arc::clone(&self.group),
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

/// Appends the request's primary key bytes to `buf`: method class, the router's path
/// (`match_info`, as the router matched it), origin, and the query string as sent.
pub(crate) fn write_primary(req: &HttpRequest, buf: &mut Vec<u8>, forwarded: bool) {
    buf.extend_from_slice(b"GET\n");
    let url = req.match_info();
    let path = url.as_str().as_bytes();
    // The router's path holds a control byte only where the raw path escaped one.
    if url.get_ref().uri().path().as_bytes().contains(&b'%') {
        resource::push_escaped(buf, path);
    } else {
        buf.extend_from_slice(path);
    }
    buf.push(b'\n');
    origin::write_origin(req, buf, forwarded);
    buf.push(b'\n');
    buf.extend_from_slice(req.query_string().as_bytes());
}

/// Whether `req` has `key` as its primary key (a middleware did not rewrite it since).
pub(crate) fn same_primary(req: &HttpRequest, key: &CacheKey, forwarded: bool) -> bool {
    with_key_buffer(|buf| {
        write_primary(req, buf, forwarded);
        buf[..] == *key.as_bytes()
    })
}

thread_local! {
    /// The buffer hit-path keys are built in, reused by every request of the worker thread.
    static KEY_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with the per-thread key buffer, cleared (a fresh one if it is already in use).
pub(crate) fn with_key_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    KEY_BUFFER.with(|buf| {
        let mut fresh = Vec::new();
        let mut borrowed = buf.try_borrow_mut();
        let buf = match borrowed.as_mut() {
            Ok(buf) => &mut **buf,
            Err(_) => &mut fresh,
        };
        buf.clear();
        f(buf)
    })
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
    // `\n name` and, for each line of that header, `\0 value`. Header names cannot contain
    // `\0` or `\n`, and actix rejects both in values, so an absent header (`name`), an empty one
    // (`name\0`) and two lines (`name\0a\0b`) all differ.
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
        let key = |h: &HeaderMap| CacheKey::for_get("h", "/", "").variant(&names, 1, h);
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
    fn the_shard_of_key_bytes_is_the_shard_of_the_group() {
        for (origin, path, query) in [
            ("http://a", "/x", ""),
            ("https://host:8080", "/a/b/c/d/e", "q=1"),
            ("http://a", "/files/a%2Fb", ""),
            ("http://a", "/p%2525/%2b", "x=1"),
            ("http://a", "/a%0Ab", ""),
        ] {
            let key = CacheKey::for_get(origin, path, query);
            assert_eq!(
                key.resource().shard_hash(),
                shard_hash_of_key(key.as_bytes()),
                "{path}"
            );
            let marker = CacheKey::write_marker(key.resource_handle(), key.query_handle());
            assert_eq!(
                marker.resource().shard_hash(),
                shard_hash_of_key(marker.as_bytes()),
                "marker of {path}"
            );
            let variant = key.variant(&[ACCEPT_LANGUAGE], 7, &with(&["de"]));
            assert_eq!(
                key.resource().shard_hash(),
                shard_hash_of_key(variant.as_bytes())
            );
        }
    }

    #[test]
    fn aliases_share_a_group_and_stay_apart_where_the_router_does() {
        let plain = CacheKey::for_get("http://a", "/files/a/b", "");
        let encoded = CacheKey::for_get("http://a", "/files/a%2Fb", "");
        assert_ne!(plain, encoded);
        assert_eq!(plain.resource(), encoded.resource());
        assert_eq!(
            CacheKey::for_get("http://a", "/u/%31", ""),
            CacheKey::for_get("http://a", "/u/1", "")
        );
    }

    #[test]
    fn the_key_path_is_the_second_field() {
        let key = CacheKey::for_get("http://a", "/x/y", "q=1");
        assert_eq!(key_path_field(key.as_bytes()), b"/x/y");
        assert_eq!(key_path_field(b"GET\n/p"), b"/p");
        assert_eq!(key_path_field(b"GE"), b"");
    }

    #[test]
    fn query_and_path_do_not_run_together() {
        assert_ne!(
            CacheKey::for_get("h", "/a", "b"),
            CacheKey::for_get("h", "/ab", "")
        );
    }
}
