//! Server-side HTTP response caching and correct conditional requests for actix-web 4.
//!
//! # What it does
//!
//! An HTTP cache keeps responses so that a repeated request is answered without running the
//! handler again, and HTTP's *validators* (entity tags and modification dates) let clients ask
//! "has it changed?" and get a tiny `304 Not Modified` instead of the whole body, or make a write
//! conditional on the version they saw, so two clients cannot silently overwrite each other
//! (`412 Precondition Failed`). [`Cache`] does all of it as one actix-web middleware:
//!
//! - serves fresh `GET`/`HEAD` responses from a pluggable [`CacheStore`], or calls the handler
//!   and stores what may be stored (RFC 9111);
//! - gives every `2xx` response to `GET`/`HEAD` with a body of known size (up to
//!   [`Cache::max_body_size`]) a strong `ETag`, the SHA-256 of the body, unless the handler set
//!   one (which is kept as it is) or the response says `no-store` to a request without
//!   preconditions (kept by no cache, it passes through unbuffered and unhashed; a handler that
//!   wants writes conditional on such a page sets its own `ETag`);
//! - answers `If-None-Match` / `If-Modified-Since` with `304`, and `If-Match` /
//!   `If-Unmodified-Since` / `If-None-Match: *` on `PUT`, `PATCH`, `DELETE` and `POST` with `412`
//!   **before** the handler runs, so a stale write never happens (RFC 9110 §13);
//! - after a successful write, drops every stored variant of the resource
//!   ([`CollectableStore::collect`]), and remembers which entity tags the write made stale;
//! - keeps serving when the store fails or is slow: the request goes on uncached and the error is
//!   logged. Nothing in the request path panics.
//!
//! ```
//! use std::time::Duration;
//! use actix_web::{web, App, HttpResponse};
//! use actix_response_cache::{Cache, MemoryStore};
//!
//! async fn get_user(id: web::Path<u32>) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("user {id}"))
//! }
//!
//! let store = MemoryStore::new(10_000); // bounded LRU; `Clone` shares one store
//! let app = App::new()
//!     .wrap(Cache::new(store.clone())) // app-wide: ETags, 304/412, caching
//!     .service(
//!         web::scope("/users")
//!             .wrap(Cache::new(store).cache_expiry(Duration::from_secs(10)))
//!             .route("/{id}", web::get().to(get_user)),
//!     );
//! ```
//!
//! # A request's path through the cache
//!
//! - **Identity.** Built once, from the request as it reaches the cache. The *key* (what may
//!   be served for what) follows actix's router exactly: the method class (`HEAD` shares the
//!   `GET` entry), the origin (scheme, the `Host` the router matches, and a forwarded host
//!   where `Forwarded` / `X-Forwarded-Host` names another, so a client cannot store one virtual
//!   host's page under another), the path as the router matches it (`/users/%31` is
//!   `/users/1`; `%2F` stays apart from `/`), the query string as sent, and the request values
//!   of the headers named by [`Cache::cache_vary`] and the stored response's `Vary`. The
//!   *group* ([`ResourceGroup`], what one write makes stale) is coarser: the host without port,
//!   the path as the `Path` extractor decodes it, the query as `Query` reads it (decoded,
//!   parameters in any order). So two requests the router tells apart never share an entry,
//!   and a write through any alias of a resource collects every alias.
//! - `GET`/`HEAD`: a fresh entry is served with `Age` (or turned into a `304`/`412` when the
//!   request's preconditions say so). On a miss the handler runs (a `HEAD` miss runs as `GET`);
//!   the response gets its `ETag`, is stored if it may be (only under the key the lookup used,
//!   and not when a middleware inside the cache changed the method, path or a keyed header on
//!   the way in), and the preconditions are evaluated against it, so a conditional request
//!   works even on a cold store.
//! - `PUT`/`PATCH`/`DELETE`/`POST` and every other unsafe method (e.g. WebDAV's): the
//!   preconditions are evaluated against the stored validators; a failure is a `412` and the
//!   handler is not called. Conditional writes of one resource run one at a time within the
//!   process, so two clients holding the same `ETag` cannot both pass. After a `2xx` or `3xx`, the
//!   entries of the target's group (every alias, every `Vary` variant, `HEAD` included, and
//!   with [`Cache::collect_query_variants`] every query string) are collected, as are the group
//!   the handler was given (where a middleware inside rewrote the request) and same-origin URIs
//!   in `Location` and `Content-Location` (RFC 9111 §4.4). A `PUT`, `PATCH`, `DELETE` or `POST`
//!   also leaves a marker of the entity tags it made stale, for every alias; an extension
//!   method, which may be read-only (WebDAV's `PROPFIND`), only invalidates.
//! - `OPTIONS`, `TRACE` and `CONNECT` pass through untouched, without boxing.
//!
//! What is stored: `GET` responses with status 200, 203, 204, 300, 301 or 308 (404, 405, 410,
//! 414 and 501 only with explicit freshness), a body of known size up to
//! [`Cache::max_body_size`], and none of `Set-Cookie` (unless `private="set-cookie"` asks for
//! the field alone to be left out), `Cache-Control: no-store`, unqualified `private` or
//! `Vary: *`. Streaming bodies pass through unbuffered.
//!
//! # Two modes, and freshness
//!
//! - **Application cache** (the default): a response stays fresh for the scope's
//!   [`Cache::cache_expiry`], lowered by its own `s-maxage`, `max-age` or `Expires` (RFC 9111
//!   §4.2.1, less its current age, §4.2.3); `Cache-Control: max-age` is added only where the
//!   handler set no `Cache-Control`. A client's `no-cache` and `max-age` are ignored.
//! - **Shared cache**, [`Cache::shared`]: the response's own headers decide, as RFC 9111 says
//!   for a shared cache; a response without explicit freshness is stored only with
//!   [`Cache::heuristic_freshness`]; request directives (`max-age`, `max-stale`, `min-fresh`,
//!   `no-cache`, `only-if-cached`) are honoured. For a caching proxy (see
//!   `examples/caching_proxy.rs`).
//!
//! In both modes a stale entry with a validator is kept for [`Cache::keep_stale`] and
//! revalidated with a conditional request to the handler (§4.3): a `304` refreshes its header
//! fields and the stored body is served. `no-cache` responses are stored and revalidated on
//! every use; `must-revalidate`, `proxy-revalidate` (and `s-maxage` in shared mode) forbid
//! serving stale; RFC 5861's `stale-while-revalidate` and `stale-if-error` serve stale within
//! their windows ([`Cache::stale_while_revalidate`], [`Cache::stale_if_error`] set defaults).
//! Concurrent misses of one key call the handler once ([`Cache::coalesce_wait`]).
//!
//! Every `GET`/`HEAD` response the cache answers or forwards, and every `412` it gives, carries
//! `Cache-Status` (RFC 9211), e.g. `actix-response-cache; hit`,
//! `actix-response-cache; fwd=uri-miss; stored; ttl=60` or
//! `actix-response-cache; fwd=stale; fwd-status=304`, with a `detail` that says why a response
//! was not stored.
//!
//! # How we chose the defaults
//!
//! When in doubt, the safe choice: never share one user's data with another, never serve what a
//! write made stale.
//!
//! - **Credentials**: a response to a request with `Authorization` *or* `Cookie` is not stored,
//!   and such a request is not answered from another user's stored response, unless the response
//!   says `public` or `s-maxage` (RFC 9111 §3.5), or the scope is [`Visibility::Public`], or the
//!   key varies on that header ([`Cache::cache_vary`]`(["cookie"])`; such per-user entries are
//!   sent as `private`). RFC 9111 only names `Authorization`; we treat `Cookie` the same way
//!   because actix apps commonly keep sessions in cookies, and one line of middleware must not
//!   leak a logged-in page to everyone. RFC 9111 also lets `must-revalidate` share a response
//!   to an authorized request; we do not, as it says nothing about who may see it.
//! - **Expiry** 60 s: short enough that data changed outside the app (another service writing
//!   the database) is not stale for long. Writes through the app are collected at once anyway.
//! - **Body limit** 1 MiB: bigger bodies are passed through, neither hashed nor stored.
//! - **Store timeout** 250 ms per store operation: a slow store costs each operation at most
//!   that (a miss makes up to four: two lookups, two stores), then the request goes on uncached.
//! - **Client `Cache-Control: no-cache` / `max-age=0`** are ignored for reading in application
//!   mode: an application cache protects the handler, and one client must not be able to make
//!   every request a miss ([`Cache::request_directives`] turns them on). A request's `no-store`
//!   and `only-if-cached` are honoured in both modes.
//! - **Keep stale** 60 s: long enough that a popular entry is revalidated rather than fetched
//!   again, short enough that the store is not filled with entries nobody asks for.
//! - **Coalescing wait** 5 s: a handler slower than that is not a cache's business to hide; the
//!   waiters then go to it themselves.
//! - **Unknown validators**: when nothing is stored for a resource (a cold store, an evicted
//!   entry, a `GET` response that is never stored), the cache asks the handler for the current
//!   representation with a `GET` of the write's request (the validator probe, see
//!   [`Cache::probe_validators`]) and judges the write's `If-Match` against its `ETag`: the
//!   SHA-256 tags this crate computes cannot be checked by a handler. After a successful write
//!   the cache remembers the entity tags it made stale, so a second client's `If-Match` with the
//!   old tag gets its `412` without a probe. A write that left the body byte-identical makes
//!   that a spurious (safe) `412`: the client re-reads and retries.
//!
//! # Limits
//!
//! - A write's preconditions are judged before routing, so a conditional `DELETE` with a stale
//!   `If-Match` on a resource that only has a `GET` route gets `412` where the application would
//!   have answered `405` (and an unauthenticated one `412` rather than `401`). RFC 9110 §13.2.1
//!   asks a server to ignore preconditions when the answer would not be `2xx`; a middleware
//!   cannot know that before the handler runs. Wrap only the scopes whose writes should be judged
//!   if that matters.
//! - The cache judges writes only from what it has stored: the entry under the write's own key,
//!   else the group's write marker (the tags the last write of any alias made stale). A stored
//!   response of *another* alias is not looked up for the current validator.
//!   Conditional writes of one resource (and plain `PUT`/`PATCH`/`DELETE`) run one at a time
//!   within the process, and across servers with a store that can lock (`RedisStore`). When
//!   the store cannot say what it holds, or a lock cannot be had within 5 s, a conditional write
//!   gets `503` with `Retry-After` (see [`Cache::fail_open_conditional_writes`]). On a cold store
//!   the validator probe asks the handler; with it turned off, the handler judges.
//! - `Range` and `If-Range` are not evaluated: a hit answers with the whole stored response.
//!
//! # Middleware order
//!
//! actix runs the middleware registered *last* first (outermost). Register `Cache` **before**
//! (inside) middleware that changes the representation per request header, such as `Compress`,
//! so that what is stored is the handler's representation and each client still gets its own
//! encoding. Register it **after** (outside) middleware that rewrites the request:
//! `NormalizePath`, a method override, a middleware that sets a header the handler varies on
//! (a tenant from an API key), so that the key is built from the request the handler gets.
//!
//! A `Cache` registered the other way round stays correct, only less useful: it builds the key
//! from the request as it reaches the cache, stores only under that key, and does not store a
//! response when the method, the origin, the path, the query or a header the key varies on
//! changed on the way in (`Cache-Status: ...; detail=request-changed`); a write collects both
//! the group it saw and the group the handler was given, and a read that a middleware inside
//! turned into a write invalidates like a write.
//!
//! ```
//! use actix_web::{middleware::{Compress, Logger}, App};
//! use actix_response_cache::{Cache, MemoryStore};
//!
//! let app = App::new()
//!     .wrap(Cache::new(MemoryStore::new(10_000))) // innermost: sees the handler's bytes
//!     .wrap(Compress::default()) // encodes hits and misses alike per Accept-Encoding
//!     .wrap(Logger::default()); // outermost
//! ```
//!
//! A `304` has no body at all (`body::None`), so `Compress` leaves it alone.
//!
//! # Stores
//!
//! [`MemoryStore`] is a bounded in-process LRU (entry count and bytes), shared by every worker.
//! `RedisStore`, behind the `redis` cargo feature, is one cache for several app servers: a write
//! on any server collects the entries for all of them; `TieredStore` puts process memory in
//! front of it, kept correct through Redis pub/sub.
//! Any type that implements [`CacheStore`] (storage) and [`CollectableStore`] (dropping every
//! entry of a [`ResourceGroup`] after a write, and saying how servers sharing it coordinate) is
//! a store: [`Cache::new`] takes nothing less, so a store that cannot collect does not compile.
//! Stores that several servers share implement [`Coordinate`] (a write generation, a
//! conditional set, a resource lock with a token) and return [`Coordination::Shared`].
//!
//! ```compile_fail
//! use actix_response_cache::{Cache, CacheEntry, CacheKey, CacheStore, StoreError};
//!
//! struct NoCollect;
//! impl CacheStore for NoCollect {
//!     async fn get(&self, _: &CacheKey) -> Result<Option<CacheEntry>, StoreError> { Ok(None) }
//!     async fn set(&self, _: &CacheKey, _: CacheEntry) -> Result<(), StoreError> { Ok(()) }
//!     async fn remove(&self, _: &CacheKey) -> Result<(), StoreError> { Ok(()) }
//! }
//! // error: `NoCollect` is not a `CollectableStore`: a write could not drop what it made stale.
//! let cache = Cache::new(NoCollect);
//! ```
//!
//! # The hit path
//!
//! With a store that answers at once ([`CacheStore::get_now`], as [`MemoryStore`] does), a hit
//! is served inside the middleware's `call`: no future is boxed, the key is built in a per-thread
//! buffer that is reused, and the origin is read from the request head (`ConnectionInfo` is only
//! consulted when forwarding headers are present). The lookup takes one shard lock for a hash
//! probe and a reference-count clone; the response gets the stored body (a reference-count
//! clone of `Bytes`), the stored header list copied into actix's pooled response head, and
//! prebuilt `Age` and `Cache-Status` values. Stored validators are parsed only when the request
//! has a precondition, and request headers are parsed in place, as bytes. Misses, stores and
//! writes may allocate. Figures are in the README's "Performance" section.
//!
//! # Logging
//!
//! Through `log`, target `actix_response_cache`: `debug` for hit, miss, stored, 304, 412 and
//! collected; `trace` for key derivation and the reason a response was not stored; `warn` for
//! store errors and timeouts.

#![deny(missing_docs, unreachable_pub, rust_2018_idioms, unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod conditional;
mod directives;
mod entry;
mod etag;
mod freshness;
mod guard;
mod key;
mod middleware;
mod origin;
mod policy;
mod request;
mod resource;
mod store;

#[cfg(feature = "redis")]
pub use crate::store::{RedisStore, TieredStore, DEFAULT_LOCAL_TTL, DEFAULT_REDIS_TIMEOUT};
pub use crate::{
    entry::CacheEntry,
    key::{CacheKey, ResourceGroup},
    middleware::Cache,
    policy::{
        Visibility, DEFAULT_CACHE_STATUS_NAME, DEFAULT_COALESCE_WAIT, DEFAULT_EXPIRY,
        DEFAULT_INVALIDATION_WAIT, DEFAULT_KEEP_STALE, DEFAULT_MAX_BODY_SIZE,
        DEFAULT_STORE_TIMEOUT,
    },
    store::{
        CacheStore, CollectTarget, CollectableStore, Coordinate, Coordination, Generation,
        LockToken, MemoryStore, StoreError, DEFAULT_MAX_BYTES, DEFAULT_MAX_VARIANTS,
    },
};

/// Types that appear in the middleware's trait bounds. Built by actix; not used directly.
#[doc(hidden)]
pub mod dev {
    pub use crate::middleware::{CacheFuture, CacheMiddleware};
}

/// Internals exposed for the benchmarks in `benches/`. Not part of the API: no semver promise.
#[doc(hidden)]
pub mod __bench {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use actix_web::http::Method;

    /// A remote store's entry bytes (the versioned layout `RedisStore` writes).
    pub fn encode_entry(entry: &crate::CacheEntry) -> Vec<u8> {
        crate::store::codec::encode(entry)
    }

    /// Reads [`encode_entry`]'s bytes back; `None` when they do not decode.
    pub fn decode_entry(bytes: &actix_web::web::Bytes) -> Option<crate::CacheEntry> {
        crate::store::codec::decode(bytes).ok()
    }

    /// The strong ETag of `body`.
    pub fn strong_etag(body: &[u8]) -> HeaderValue {
        crate::etag::strong_etag(body)
    }

    /// Evaluates the request's preconditions against a representation with `etag`; returns
    /// 0 (proceed), 304 or 412.
    pub fn evaluate(method: &Method, headers: &HeaderMap, etag: &[u8]) -> u16 {
        let current = crate::conditional::Current::Representation {
            etag: crate::etag::EntityTag::parse(etag),
            last_modified: None,
        };
        match crate::conditional::evaluate(method, headers, &current) {
            crate::conditional::Preconditions::Proceed => 0,
            crate::conditional::Preconditions::NotModified => 304,
            crate::conditional::Preconditions::Failed => 412,
        }
    }

    /// The primary key bytes of a request, then (when `vary` is not empty) its variant key,
    /// built as the hit path builds them; returns their length.
    pub fn key(
        origin: &str,
        path: &str,
        query: &str,
        vary: &[HeaderName],
        headers: &HeaderMap,
    ) -> usize {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(b"GET\n");
        crate::resource::push_escaped(&mut buf, crate::resource::router_path(path).as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(origin.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(query.as_bytes());
        if !vary.is_empty() {
            crate::key::push_variant(&mut buf, vary, 1, headers);
        }
        buf.len()
    }
}
