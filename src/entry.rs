//! What a store keeps: a stored response, a `Vary` marker, or a "modified" tombstone.

use std::{
    fmt,
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};

use actix_web::{
    http::{
        header::{HeaderName, HeaderValue},
        StatusCode,
    },
    web::Bytes,
};

use crate::etag::EntityTag;

/// One value held by a [`CacheStore`](crate::CacheStore).
///
/// Stores treat entries as opaque: they keep them, hand them back, and use
/// [`expires_at`](Self::expires_at) and [`size`](Self::size) for expiry and byte budgets.
/// Cloning is a reference-count increment: a cache hit copies no body and no header.
///
/// An entry is one of three things, all of which the middleware creates:
/// - a stored response (status, headers, body and validators);
/// - a *variant marker*, kept at a resource's primary key when the response carries `Vary`,
///   which names the request headers that select the stored variant;
/// - a *modified marker*, left after a successful write, which remembers the validators that write
///   made stale so that a late `If-Match` with one of them still gets its 412.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use actix_response_cache::CacheEntry;
///
/// let entry = CacheEntry::test_response(b"hello", Duration::from_secs(60));
/// assert!(entry.expires_at() > SystemTime::now());
/// assert!(entry.size() >= 5);
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
#[derive(Clone)]
pub struct CacheEntry {
    inner: Arc<EntryInner>,
}

pub(crate) struct EntryInner {
    pub(crate) stored_at: SystemTime,
    pub(crate) expires_at: SystemTime,
    pub(crate) kind: EntryKind,
}

pub(crate) enum EntryKind {
    Response(StoredResponse),
    Variants(VariantMarker),
    Modified(ModifiedMarker),
}

/// A response as it was stored: everything needed to answer a hit without the handler.
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    /// Prebuilt headers, hop-by-hop fields already removed. A flat list: it is only ever
    /// copied out whole, and takes a fraction of a `HeaderMap`'s memory.
    pub(crate) headers: Box<[(HeaderName, HeaderValue)]>,
    pub(crate) body: Bytes,
    /// The response's `ETag`, parsed once when stored; `None` also when it was malformed.
    pub(crate) etag: Option<StoredTag>,
    pub(crate) last_modified: Option<SystemTime>,
    /// The response's age when it was stored (RFC 9111 §4.2.3): hits add the time since.
    pub(crate) initial_age: Duration,
    /// Whether the response may answer requests that carry credentials
    /// (`Authorization`, `Cookie`): RFC 9111 §3.5.
    pub(crate) shareable_with_credentials: bool,
    /// Until when it is fresh. After that the entry is kept, stale, until it expires from the
    /// store, so that it can be revalidated (RFC 9111 §4.3).
    pub(crate) fresh_until: SystemTime,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, shared-mode `s-maxage`).
    pub(crate) must_revalidate: bool,
    /// `immutable` (RFC 8246).
    pub(crate) immutable: bool,
    /// RFC 5861 windows after `fresh_until`.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

impl StoredResponse {
    /// Whether it is still fresh at `now`.
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.fresh_until
    }

    /// Whether it is stale, but within `window` of the end of its freshness.
    pub(crate) fn is_stale_within(&self, now: SystemTime, window: Duration) -> bool {
        !self.is_fresh(now) && now < self.fresh_until + window
    }

    /// Whether it can be revalidated: it has an entity tag or a `Last-Modified`.
    pub(crate) fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// A stored response's entity tag, parsed when it was stored so that hits judging a
/// precondition do not parse it again.
pub(crate) struct StoredTag {
    value: HeaderValue,
    weak: bool,
    /// Where the quoted opaque tag lies in `value` (surrounding whitespace and `W/` excluded).
    opaque: std::ops::Range<usize>,
}

impl StoredTag {
    /// Parses an `ETag` field value; `None` when it is not one well-formed entity tag.
    pub(crate) fn parse(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let tag = EntityTag::parse(bytes)?;
        // `opaque` borrows from `bytes`: its offset is the distance between the two pointers.
        let start = tag.opaque.as_ptr() as usize - bytes.as_ptr() as usize;
        Some(Self {
            value: value.clone(),
            weak: tag.weak,
            opaque: start..start + tag.opaque.len(),
        })
    }

    /// The tag, borrowed.
    pub(crate) fn tag(&self) -> EntityTag<'_> {
        EntityTag {
            weak: self.weak,
            opaque: &self.value.as_bytes()[self.opaque.clone()],
        }
    }

    /// The field value as it was stored.
    pub(crate) fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// The field value's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.value.len()
    }
}

/// Kept at a resource's primary key when its response carries `Vary`.
pub(crate) struct VariantMarker {
    /// The `Vary` header names, lowercase, sorted and deduplicated.
    pub(crate) names: Box<[HeaderName]>,
    /// Part of every variant key. A marker written over a write's modified marker gets a new
    /// generation, so variants stored before the write are unreachable even where the store
    /// could not collect them.
    pub(crate) generation: u64,
}

/// What is known of a resource right after a successful write.
pub(crate) struct ModifiedMarker {
    /// Strong entity tags that were current before the write (the newest last).
    pub(crate) superseded: Box<[Box<[u8]>]>,
    /// The `Last-Modified` the write's response carried, if any.
    pub(crate) last_modified: Option<SystemTime>,
}

/// Fixed per-entry memory counted against byte budgets: the entry and its `Arc`, the key's
/// parts, the store's LRU node and index slot, and its resource group's index (about 100 bytes
/// for a group of one entry). Measured with `cargo bench --bench memory`.
const ENTRY_OVERHEAD: usize = 720;
/// Fixed memory per stored header line (the name and value handles).
const HEADER_OVERHEAD: usize = 64;

impl CacheEntry {
    pub(crate) fn new(stored_at: SystemTime, ttl: Duration, kind: EntryKind) -> Self {
        Self {
            inner: Arc::new(EntryInner {
                stored_at,
                expires_at: stored_at + ttl,
                kind,
            }),
        }
    }

    /// An entry with an explicit expiry, as a remote store reads it back.
    pub(crate) fn from_parts(
        stored_at: SystemTime,
        expires_at: SystemTime,
        kind: EntryKind,
    ) -> Self {
        Self {
            inner: Arc::new(EntryInner {
                stored_at,
                expires_at,
                kind,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &EntryInner {
        &self.inner
    }

    pub(crate) fn kind(&self) -> &EntryKind {
        &self.inner.kind
    }

    /// A stored `200 OK` with `body` and no headers, for store tests.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_response_cache::CacheEntry;
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(1));
    /// assert!(entry.size() > 0);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn test_response(body: &[u8], ttl: Duration) -> Self {
        Self::new(
            SystemTime::now(),
            ttl,
            EntryKind::Response(StoredResponse {
                status: StatusCode::OK,
                headers: Box::new([]),
                body: Bytes::copy_from_slice(body),
                etag: None,
                last_modified: None,
                initial_age: Duration::ZERO,
                shareable_with_credentials: false,
                fresh_until: SystemTime::now() + ttl,
                must_revalidate: false,
                immutable: false,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
            }),
        )
    }

    /// When the entry was stored.
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use actix_response_cache::CacheEntry;
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(1));
    /// assert!(entry.stored_at() <= SystemTime::now());
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn stored_at(&self) -> SystemTime {
        self.inner.stored_at
    }

    /// When the entry stops being fresh. Stores must not return an entry after this time
    /// (the middleware also checks, so a store that returns one anyway is still correct).
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use actix_response_cache::CacheEntry;
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(30));
    /// assert_eq!(entry.expires_at(), entry.stored_at() + Duration::from_secs(30));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn expires_at(&self) -> SystemTime {
        self.inner.expires_at
    }

    /// The time left before expiry, zero when already expired.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_response_cache::CacheEntry;
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(30));
    /// assert!(entry.time_to_live() <= Duration::from_secs(30));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn time_to_live(&self) -> Duration {
        self.inner
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    /// Whether the entry has expired at `now`.
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use actix_response_cache::CacheEntry;
    /// let entry = CacheEntry::test_response(b"x", Duration::from_secs(30));
    /// assert!(!entry.is_expired(SystemTime::now()));
    /// assert!(entry.is_expired(SystemTime::now() + Duration::from_secs(31)));
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.inner.expires_at
    }

    /// Whether the entry may be reused as it is at `now`: a stored response while fresh, a
    /// marker until it expires.
    #[cfg(feature = "redis")]
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        match &self.inner.kind {
            EntryKind::Response(r) => r.is_fresh(now) && !self.is_expired(now),
            _ => !self.is_expired(now),
        }
    }

    /// The bytes this entry holds: body, header names and values, plus a fixed overhead.
    /// Byte budgets count this (and the key).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_response_cache::CacheEntry;
    /// let small = CacheEntry::test_response(b"x", Duration::from_secs(1));
    /// let big = CacheEntry::test_response(&[0; 4096], Duration::from_secs(1));
    /// assert!(big.size() >= small.size() + 4095);
    /// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
    /// ```
    pub fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + match &self.inner.kind {
                EntryKind::Response(r) => {
                    r.body.len()
                        + r.headers
                            .iter()
                            .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
                            .sum::<usize>()
                        + r.etag.as_ref().map_or(0, |e| e.len())
                }
                EntryKind::Variants(v) => v.names.iter().map(|n| n.as_str().len() + 16).sum(),
                EntryKind::Modified(m) => m.superseded.iter().map(|t| t.len() + 16).sum(),
            }
    }
}

impl fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.kind {
            EntryKind::Response(r) => format!("response {} ({} bytes)", r.status, r.body.len()),
            EntryKind::Variants(v) => format!("variants by {:?}", v.names),
            EntryKind::Modified(_) => "modified".to_owned(),
        };
        f.debug_struct("CacheEntry")
            .field("kind", &kind)
            .field("expires_at", &self.inner.expires_at)
            .finish()
    }
}

/// A handle that recognises one entry without keeping its contents alive (only the allocation
/// of its shared part, so the address cannot be reused by another entry while it is held).
pub(crate) struct EntryIdentity(Weak<EntryInner>);

impl EntryIdentity {
    /// Whether `entry` is the entry this identifies (no reference count is touched).
    pub(crate) fn is(&self, entry: &CacheEntry) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&entry.inner))
    }
}

impl CacheEntry {
    /// The identity of this entry, to recognise it later.
    pub(crate) fn identity(&self) -> EntryIdentity {
        EntryIdentity(Arc::downgrade(&self.inner))
    }

    /// The body length of a stored response; `None` for markers.
    pub(crate) fn response_body_len(&self) -> Option<usize> {
        match &self.inner.kind {
            EntryKind::Response(r) => Some(r.body.len()),
            _ => None,
        }
    }

    /// A copy of a stored response that shares no reference count with this one (body,
    /// header values and names are copied), so that hits on the copy from one thread do not
    /// contend with hits on the original from others; `None` for markers.
    pub(crate) fn unshared_copy(&self) -> Option<CacheEntry> {
        let EntryKind::Response(r) = &self.inner.kind else {
            return None;
        };
        let response = StoredResponse {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(name, value)| (unshared_name(name), unshared_value(value)))
                .collect(),
            body: Bytes::copy_from_slice(&r.body),
            etag: r.etag.as_ref().map(|t| StoredTag {
                value: unshared_value(&t.value),
                weak: t.weak,
                opaque: t.opaque.clone(),
            }),
            last_modified: r.last_modified,
            initial_age: r.initial_age,
            shareable_with_credentials: r.shareable_with_credentials,
            fresh_until: r.fresh_until,
            must_revalidate: r.must_revalidate,
            immutable: r.immutable,
            stale_while_revalidate: r.stale_while_revalidate,
            stale_if_error: r.stale_if_error,
        };
        Some(CacheEntry {
            inner: Arc::new(EntryInner {
                stored_at: self.inner.stored_at,
                expires_at: self.inner.expires_at,
                kind: EntryKind::Response(response),
            }),
        })
    }
}

/// A copy of `value` in a buffer of its own (the shared one if it cannot be rebuilt, which a
/// valid value always can).
fn unshared_value(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        Err(_) => value.clone(),
    }
}

/// A copy of `name`: standard names share nothing already; others get a buffer of their own.
fn unshared_name(name: &HeaderName) -> HeaderName {
    HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone())
}
