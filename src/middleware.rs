//! The `Cache` middleware: the builder (which is the actix `Transform`), the per-worker service,
//! and the per-request future.

use std::{
    future::{ready, Future, Ready},
    pin::Pin,
    rc::Rc,
    str::FromStr,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use actix_service::{forward_ready, Service, Transform};
use actix_web::{
    body::{to_bytes, BodySize, BoxBody, EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        Method, StatusCode, Uri, Version,
    },
    web::Bytes,
    Error, HttpMessage, HttpRequest, HttpResponse,
};
use futures_util::{future::LocalBoxFuture, FutureExt};
use pin_project_lite::pin_project;

use crate::{
    conditional::{self, Current, Preconditions},
    entry::{EntryKind, ModifiedMarker, StoredResponse, StoredTag, VariantMarker},
    etag::{self, EntityTag},
    guard::{self, Flight},
    key::{push_variant, word_hash, KeyBuilder, RequestFlags},
    policy::{self, Directives, NotStored, Policy, Visibility},
    store::{CacheStore, CollectTarget, StoreError},
    CacheEntry, CacheKey,
};

const LOG: &str = "actix_response_cache";

/// How many superseded entity tags a modified marker remembers.
const MAX_SUPERSEDED: usize = 16;

/// Server-side response caching and conditional requests for an `App`, `Scope` or `Resource`.
///
/// `Cache` is the middleware's builder. Each builder method consumes and returns it; invalid
/// settings panic here, when the application is built, never during a request.
///
/// Defaults (see the crate docs, "How we chose the defaults"):
///
/// | setting | default |
/// |---|---|
/// | [`cache_expiry`](Self::cache_expiry) | 60 s |
/// | [`cache_vary`](Self::cache_vary) | none |
/// | [`visibility`](Self::visibility) | [`Visibility::Shared`] |
/// | [`max_body_size`](Self::max_body_size) | 1 MiB |
/// | [`store_timeout`](Self::store_timeout) | 250 ms |
/// | [`collect_query_variants`](Self::collect_query_variants) | off |
/// | [`cache_status`](Self::cache_status) | on, named `actix-response-cache` |
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, App, HttpResponse};
/// use actix_response_cache::{Cache, MemoryStore};
///
/// let store = MemoryStore::new(10_000);
/// let app = App::new()
///     .wrap(Cache::new(store.clone()))
///     .service(
///         web::scope("/users")
///             .wrap(Cache::new(store).cache_expiry(Duration::from_secs(10)))
///             .route("/{id}", web::get().to(|| async { HttpResponse::Ok().body("user") })),
///     );
/// ```
pub struct Cache<St> {
    inner: Rc<Inner<St>>,
}

struct Inner<St> {
    store: St,
    policy: Policy,
    /// `Cache-Status` values built so far, by (forward reason, detail): a finite set, so each is
    /// formatted once per worker.
    statuses:
        std::cell::RefCell<std::collections::HashMap<(&'static str, &'static str), HeaderValue>>,
}

impl<St> Clone for Cache<St> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<St: CacheStore> Cache<St> {
    /// Creates the middleware over `store`, with the default policy.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(10_000)));
    /// ```
    pub fn new(store: St) -> Self {
        Self {
            inner: Rc::new(Inner {
                store,
                policy: Policy::default(),
                statuses: Default::default(),
            }),
        }
    }
}

impl<St> Cache<St> {
    fn policy_mut(mut self, f: impl FnOnce(&mut Policy)) -> Self {
        match Rc::get_mut(&mut self.inner) {
            Some(inner) => {
                f(&mut inner.policy);
                inner.policy.rebuild();
                self
            }
            // Only reachable when a clone was configured after being shared.
            None => panic!("Cache: configure the builder before cloning it"),
        }
    }

    /// Sets how long a stored response stays fresh. A response's own `s-maxage`, `max-age` or
    /// `Expires` can only lower it.
    ///
    /// # Panics
    /// Panics if `expiry` is zero (use [`Visibility::Private`] to store nothing).
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(300));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn cache_expiry(self, expiry: Duration) -> Self {
        assert!(
            !expiry.is_zero(),
            "Cache::cache_expiry: expiry must be positive"
        );
        self.policy_mut(|p| p.expiry = expiry)
    }

    /// Names request headers that always split the key, whatever the response's `Vary` says,
    /// and adds them to the stored response's `Vary` so that downstream caches split too.
    ///
    /// Naming `authorization` or `cookie` makes the key per user: responses to requests with
    /// those headers (and `private` responses) are then stored, for that user only.
    ///
    /// # Panics
    /// Panics if a name is not a valid header name.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).cache_vary(["accept-language", "accept"]);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn cache_vary<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut parsed: Vec<HeaderName> = names
            .into_iter()
            .map(|n| {
                let n = n.as_ref();
                HeaderName::from_str(n.trim())
                    .unwrap_or_else(|_| panic!("Cache::cache_vary: {n:?} is not a header name"))
            })
            .collect();
        parsed.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        parsed.dedup();
        self.policy_mut(|p| p.vary = parsed)
    }

    /// Sets who may be served stored responses: [`Visibility::Shared`] (default),
    /// [`Visibility::Public`] or [`Visibility::Private`].
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore, Visibility};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).visibility(Visibility::Public);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn visibility(self, visibility: Visibility) -> Self {
        self.policy_mut(|p| p.visibility = visibility)
    }

    /// Sets the largest body that is buffered, given an ETag and stored. Larger bodies, and
    /// bodies of unknown size (streams), pass through untouched and unbuffered.
    ///
    /// # Panics
    /// Panics if `bytes` is zero.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).max_body_size(256 * 1024);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn max_body_size(self, bytes: usize) -> Self {
        assert!(
            bytes > 0,
            "Cache::max_body_size: the limit must be at least 1 byte"
        );
        self.policy_mut(|p| p.max_body_size = bytes)
    }

    /// Sets how long one store operation may take before the request goes on uncached.
    ///
    /// # Panics
    /// Panics if `timeout` is zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).store_timeout(Duration::from_millis(50));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn store_timeout(self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "Cache::store_timeout: the timeout must be positive"
        );
        self.policy_mut(|p| p.store_timeout = timeout)
    }

    /// When on, a successful write to `/items?page=2` also drops the stored responses of
    /// `/items` with every other query string. Off by default: only the written URI is dropped.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).collect_query_variants(true);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn collect_query_variants(self, on: bool) -> Self {
        self.policy_mut(|p| p.collect_query_variants = on)
    }

    /// Turns the `Cache-Status` response header (RFC 9211) on or off. On by default.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).cache_status(false);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn cache_status(self, on: bool) -> Self {
        self.policy_mut(|p| {
            p.cache_status = on.then(|| {
                p.cache_status
                    .take()
                    .unwrap_or_else(|| policy::DEFAULT_CACHE_STATUS_NAME.to_owned())
            })
        })
    }

    /// Makes this a shared cache in the sense of RFC 9111, for use in front of responses the
    /// application does not control (a caching proxy, say): the response's own headers decide
    /// whether and how long it is stored. A response without explicit freshness (`s-maxage`,
    /// `max-age`, `Expires`) is not stored unless a
    /// [`heuristic_freshness`](Self::heuristic_freshness) is set, `cache_expiry` only caps that
    /// heuristic, no `Cache-Control` is added to stored responses, and request directives
    /// (`max-age`, `max-stale`, `min-fresh`, `no-cache`, `only-if-cached`) are honoured.
    ///
    /// The default, application mode, uses `cache_expiry` as the lifetime of every stored
    /// response, which the response's own directives can only lower, and ignores a client's
    /// `no-cache` and `max-age`: one client must not be able to empty the cache for everyone.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(10_000)).shared();
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn shared(self) -> Self {
        self.policy_mut(|p| p.shared = true)
    }

    /// In shared mode, lets a response without explicit freshness but with a `Last-Modified`
    /// stay fresh for `fraction` of the time since it was last modified (RFC 9111 §4.2.2; 0.1
    /// is the usual choice), at most `cache_expiry`. No effect in application mode.
    ///
    /// # Panics
    /// Panics unless `0 < fraction <= 1`.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).shared().heuristic_freshness(0.1);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn heuristic_freshness(self, fraction: f32) -> Self {
        assert!(
            fraction > 0.0 && fraction <= 1.0,
            "Cache::heuristic_freshness: the fraction must be in (0, 1]"
        );
        self.policy_mut(|p| p.heuristic = Some(fraction))
    }

    /// Sets how long a stale entry with a validator (`ETag` or `Last-Modified`) is kept so that
    /// the next request revalidates it with a conditional request to the handler (RFC 9111
    /// §4.3), rather than fetching it whole. Default 60 s; zero drops entries when they go stale.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).keep_stale(Duration::from_secs(600));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn keep_stale(self, keep: Duration) -> Self {
        self.policy_mut(|p| p.keep_stale = keep)
    }

    /// Whether request `Cache-Control` directives (`max-age`, `max-stale`, `min-fresh`,
    /// `no-cache`, and `Pragma: no-cache`) are honoured. Default: on in [`shared`](Self::shared)
    /// mode, off in application mode. `no-store` and `only-if-cached` are always honoured.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).request_directives(true);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn request_directives(self, on: bool) -> Self {
        self.policy_mut(|p| p.request_directives = Some(on))
    }

    /// Sets how long a miss waits when a request for the same key is already at the handler
    /// (request coalescing): N concurrent misses call the handler once, and the others are
    /// answered from what it stored. A request whose wait runs out, or whose leader's response
    /// could not be stored, goes to the handler itself; keys whose responses are not stored
    /// (`private`, `Set-Cookie`, ...) are not coalesced for a minute after. Default 5 s; zero
    /// turns coalescing off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).coalesce_wait(Duration::from_secs(1));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn coalesce_wait(self, wait: Duration) -> Self {
        self.policy_mut(|p| p.coalesce_wait = wait)
    }

    /// Sets the `stale-while-revalidate` window (RFC 5861 §3) of stored responses that do not
    /// carry one: for this long after it goes stale, a response is served at once while a
    /// single request revalidates it in the background. Default zero (off). Never applies to
    /// responses marked `must-revalidate`, `proxy-revalidate` or `no-cache` (or `s-maxage` in
    /// shared mode).
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache =
    ///     Cache::new(MemoryStore::new(100)).stale_while_revalidate(Duration::from_secs(30));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        self.policy_mut(|p| p.stale_while_revalidate = window)
    }

    /// Sets the `stale-if-error` window (RFC 5861 §4) of stored responses that do not carry
    /// one: for this long after it goes stale, a response is served when the handler answers
    /// 500, 502, 503 or 504 instead. Default zero (off); the same directives as for
    /// [`stale_while_revalidate`](Self::stale_while_revalidate) forbid it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).stale_if_error(Duration::from_secs(300));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn stale_if_error(self, window: Duration) -> Self {
        self.policy_mut(|p| p.stale_if_error = window)
    }

    /// Sets the cache's name in `Cache-Status` (and turns the header on).
    ///
    /// # Panics
    /// Panics if `name` is empty or is not a valid token.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).cache_status_name("edge-1");
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn cache_status_name(self, name: &str) -> Self {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        assert!(valid, "Cache::cache_status_name: {name:?} is not a token");
        let name = name.to_owned();
        self.policy_mut(|p| p.cache_status = Some(name))
    }
}

impl<S, B, St> Transform<S, ServiceRequest> for Cache<St>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CacheStore,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CacheMiddleware<S, St>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CacheMiddleware {
            service: Rc::new(service),
            inner: Rc::clone(&self.inner),
        }))
    }
}

/// The per-worker service of [`Cache`]. Built by actix; not used directly.
#[doc(hidden)]
pub struct CacheMiddleware<S, St> {
    service: Rc<S>,
    inner: Rc<Inner<St>>,
}

impl<S, B, St> Service<ServiceRequest> for CacheMiddleware<S, St>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CacheStore,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = CacheFuture<S::Future, B, St>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let method = req.method();
        if method == Method::GET || method == Method::HEAD {
            // Read before the lookup: a write that completes after this point makes the miss
            // skip its store, even when the lookup itself saw the state from before the write.
            let epoch = guard::epoch();
            let now = SystemTime::now();
            let mut flags = RequestFlags::of(req.headers());
            // An outer `Cache` revalidating with its own validators: answer the client's request.
            if flags.preconditions && restore_client_conditions(&mut req) {
                flags = RequestFlags::of(req.headers());
            }
            let lookup = self.inner.lookup_now(&req, now, flags.forwarded, None);
            // The hit path: an in-process store answered, and the entry may be served. No
            // future is boxed and no owned key is built.
            if let Some(Lookup::Hit { entry, .. }) = &lookup {
                if let EntryKind::Response(stored) = entry.kind() {
                    // Request directives, when honoured, and stale entries take the full flow.
                    let directives =
                        flags.cache_control && self.inner.policy.honours_request_directives();
                    if servable(&self.inner.policy, flags, stored)
                        && stored.is_fresh(now)
                        && !directives
                    {
                        log::debug!(target: LOG, "hit {} {}", req.path(), req.query_string());
                        let res =
                            serve_hit(&self.inner, req, entry, stored, now, flags.preconditions);
                        return CacheFuture::Ready {
                            res: Some(res.map_into_right_body()),
                        };
                    }
                }
            }
            let flow = read(
                Rc::clone(&self.service),
                Rc::clone(&self.inner),
                req,
                epoch,
                lookup,
            );
            CacheFuture::Store {
                fut: Box::pin(flow),
            }
        } else if is_unsafe(method) {
            let flags = RequestFlags::of(req.headers());
            let mut fingerprint = 0;
            let lookup = self.inner.lookup_now(
                &req,
                SystemTime::now(),
                flags.forwarded,
                Some(&mut fingerprint),
            );
            // The write pass-through: nothing of the resource is stored and the write asks for
            // no precondition, so there is nothing to judge, collect or remember. The handler's
            // future is polled in place, with no boxing.
            // A store several servers share is collected after every write (it moves the
            // resource's write generation), so its writes take the full flow.
            if matches!(lookup, Some(Lookup::UriMiss))
                && !flags.preconditions
                && !self.inner.policy.collect_query_variants
                && !self.inner.store.shared_by_servers()
            {
                return CacheFuture::WriteThrough {
                    fut: self.service.call(req),
                    inner: Rc::clone(&self.inner),
                    fingerprint,
                };
            }
            let flow = write(
                Rc::clone(&self.service),
                Rc::clone(&self.inner),
                req,
                lookup,
                fingerprint,
                flags,
            );
            CacheFuture::Store {
                fut: Box::pin(flow),
            }
        } else {
            CacheFuture::PassThrough {
                fut: self.service.call(req),
            }
        }
    }
}

/// Every method but the safe ones (RFC 9110 §9.2.1) may change the resource: `PUT`, `PATCH`,
/// `DELETE`, `POST`, and extension methods such as WebDAV's `PROPPATCH` or `MOVE`. RFC 9111 §4.4
/// asks a cache to invalidate after any of them succeeds. `CONNECT` never reaches a handler.
fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::CONNECT
    )
}

pin_project! {
    /// The response future of [`CacheMiddleware`]: the inner service's own future polled in
    /// place (other methods, and writes with nothing to judge or collect), a hit answered at
    /// once, or the boxed cache flow, which awaits the store.
    #[doc(hidden)]
    #[project = CacheFutureProj]
    pub enum CacheFuture<F, B, St> {
        PassThrough { #[pin] fut: F },
        Ready { res: Option<ServiceResponse<EitherBody<B>>> },
        Store { fut: LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, Error>> },
        WriteThrough { #[pin] fut: F, inner: Rc<Inner<St>>, fingerprint: u64 },
        Collecting {
            fut: LocalBoxFuture<'static, ()>,
            res: Option<ServiceResponse<EitherBody<B>>>,
        },
    }
}

impl<F, B, St> Future for CacheFuture<F, B, St>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    St: CacheStore,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let collecting = match self.as_mut().project() {
            CacheFutureProj::PassThrough { fut } => {
                return fut
                    .poll(cx)
                    .map(|res| res.map(ServiceResponse::map_into_left_body))
            }
            CacheFutureProj::Ready { res } => {
                return match res.take() {
                    Some(res) => Poll::Ready(Ok(res)),
                    // Polled again after completion: a contract violation by the caller.
                    None => Poll::Pending,
                };
            }
            CacheFutureProj::Store { fut } => return fut.as_mut().poll(cx),
            CacheFutureProj::WriteThrough {
                fut,
                inner,
                fingerprint,
            } => {
                let res = match fut.poll(cx) {
                    Poll::Ready(Ok(res)) => res,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                };
                match after_write(inner, &res, *fingerprint) {
                    Some(fut) => CacheFuture::Collecting {
                        fut,
                        res: Some(res.map_into_left_body()),
                    },
                    None => return Poll::Ready(Ok(res.map_into_left_body())),
                }
            }
            CacheFutureProj::Collecting { fut, res } => {
                return match fut.as_mut().poll(cx) {
                    Poll::Ready(()) => match res.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending,
                    },
                    Poll::Pending => Poll::Pending,
                }
            }
        };
        self.set(collecting);
        self.poll(cx)
    }
}

/// What every successful write does, RFC 9111 §4.4: records the write of its target for the race
/// guard, and returns the collection of the other same-origin URIs named by `Location` and
/// `Content-Location`, if there are any. `None` for an error response, which invalidates nothing.
fn after_write<St: CacheStore, B>(
    inner: &Rc<Inner<St>>,
    res: &ServiceResponse<B>,
    fingerprint: u64,
) -> Option<LocalBoxFuture<'static, ()>> {
    let status = res.status();
    if !(status.is_success() || status.is_redirection()) {
        return None;
    }
    guard::record_write(fingerprint);
    let mut others = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(other) = same_origin_key(res.request(), res.headers().get(&name)) {
            let is_target = other.resource().fingerprint() == fingerprint
                && other.query() == res.request().query_string();
            if !is_target {
                guard::record_write(other.resource().fingerprint());
                others.push(other);
            }
        }
    }
    if others.is_empty() {
        return None;
    }
    let inner = Rc::clone(inner);
    Some(Box::pin(async move {
        for other in others {
            let target = CollectTarget::new(other.resource().clone(), Some(other.query().into()));
            collect(&inner, &other, target).await;
        }
    }))
}

/// Marks a response this crate already handled, so that an outer `Cache` passes it through:
/// the innermost policy wins and nothing is stored twice.
#[derive(Clone, Copy)]
struct Handled;

/// Put in a request's extensions by a `Cache` before it calls the services it wraps: an inner
/// `Cache` then marks its responses [`Handled`]. Without an outer `Cache` there is nothing to
/// mark, and a hit saves the allocation of the response's extension map.
#[derive(Clone, Copy)]
struct OuterCache;

/// Added to [`Handled`] when the inner `Cache` stored the response.
#[derive(Clone, Copy)]
struct HandledStored;

/// The client's precondition fields, kept aside while a `Cache` revalidates a stale entry with
/// its own: a `Cache` nested inside puts them back, so that it answers the client's request and
/// not the revalidation (which it would answer with a 304 the client never asked for).
struct ClientConditions(HeaderMap);

/// Puts back the client's precondition fields an outer `Cache` set aside, if it did.
fn restore_client_conditions(req: &mut ServiceRequest) -> bool {
    let Some(ClientConditions(client)) = req.extensions_mut().remove::<ClientConditions>() else {
        return false;
    };
    let headers = req.headers_mut();
    for name in PRECONDITION_FIELDS {
        headers.remove(name);
    }
    for (name, value) in client.iter() {
        headers.append(name.clone(), value.clone());
    }
    true
}

/// The request fields of RFC 9110 §13.1.
const PRECONDITION_FIELDS: [HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Marks `res` [`Handled`] when a `Cache` wraps this one.
fn mark_handled<B>(req: &HttpRequest, res: &mut HttpResponse<B>) {
    if req.extensions().contains::<OuterCache>() {
        res.extensions_mut().insert(Handled);
    }
}

/// The result of looking a request up in the store.
enum Lookup {
    /// A fresh stored response, and the variant marker that led to it, if any.
    Hit {
        entry: CacheEntry,
        marker: Option<CacheEntry>,
    },
    /// A write left a marker and no `GET` has stored the new representation yet.
    Modified(CacheEntry),
    UriMiss,
    /// The primary key holds a variant marker, but not for this request's header values.
    VaryMiss(CacheEntry),
    StoreFailed,
}

impl<St: CacheStore> Inner<St> {
    /// Runs one store operation under the policy's timeout; errors are logged, never raised.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let res = match actix_web::rt::time::timeout(self.policy.store_timeout, fut).await {
            Ok(res) => res,
            Err(_) => Err(StoreError::Timeout),
        };
        if let Err(err) = &res {
            log::warn!(target: LOG, "store {op} failed, serving uncached: {err}");
        }
        res
    }

    fn key(&self, req: &HttpRequest) -> CacheKey {
        let key = KeyBuilder::new(&request_origin(req), req.path(), req.query_string()).finish();
        log::trace!(target: LOG, "key {key:?}");
        key
    }

    /// Looks the request up without awaiting, for stores that can answer at once
    /// ([`CacheStore::get_now`]). The key bytes are built in a reused per-thread buffer.
    /// `None`: the store has to be awaited.
    ///
    /// `fingerprint`, when given, receives the resource's fingerprint
    /// ([`ResourceKey::fingerprint`](crate::ResourceKey)), hashed from the same buffer, whether
    /// or not the store could answer.
    fn lookup_now(
        &self,
        req: &ServiceRequest,
        now: SystemTime,
        forwarded: bool,
        fingerprint: Option<&mut u64>,
    ) -> Option<Lookup> {
        if self.policy.visibility == Visibility::Private && fingerprint.is_none() {
            return Some(Lookup::UriMiss);
        }
        with_key_buffer(|buf| {
            let resource_end = push_primary_key(req, buf, forwarded);
            if let Some(fingerprint) = fingerprint {
                *fingerprint = word_hash(&buf[..resource_end]);
            }
            if self.policy.visibility == Visibility::Private {
                return Some(Lookup::UriMiss);
            }
            let primary = match self.store.get_now(buf)?.map_err(log_get_error) {
                Ok(primary) => primary,
                Err(()) => return Some(Lookup::StoreFailed),
            };
            Some(match primary_lookup(primary, now) {
                Ok(lookup) => lookup,
                Err(marker) => {
                    if let EntryKind::Variants(v) = marker.kind() {
                        push_variant(buf, &v.names, v.generation, req.headers());
                    }
                    let answer = self.store.get_now(buf)?.map_err(log_get_error);
                    variant_lookup(answer, marker, now)
                }
            })
        })
    }

    /// [`word_hash`] of the request's primary key bytes, built in the per-thread buffer: equal
    /// to `word_hash(self.key(req).as_bytes())` without allocating the key.
    fn key_hash(&self, req: &ServiceRequest) -> u64 {
        with_key_buffer(|buf| {
            push_primary_key(req, buf, RequestFlags::of(req.headers()).forwarded);
            word_hash(buf)
        })
    }

    async fn lookup(&self, key: &CacheKey, headers: &HeaderMap) -> Lookup {
        let now = SystemTime::now();
        let primary = match self.timed("get", self.store.get(key)).await {
            Ok(primary) => primary,
            Err(_) => return Lookup::StoreFailed,
        };
        match primary_lookup(primary, now) {
            Ok(lookup) => lookup,
            Err(marker) => {
                let variant = match marker.kind() {
                    EntryKind::Variants(v) => key.variant(&v.names, v.generation, headers),
                    _ => key.clone(),
                };
                let answer = self
                    .timed("get", self.store.get(&variant))
                    .await
                    .map_err(drop);
                variant_lookup(answer, marker, now)
            }
        }
    }

    /// The `Cache-Status` value `<name>; <fwd><detail>`, or `None` when the header is off.
    fn status(&self, fwd: &'static str, detail: &'static str) -> Option<HeaderValue> {
        self.policy.cache_status.as_ref()?;
        if let Ok(mut statuses) = self.statuses.try_borrow_mut() {
            return statuses
                .entry((fwd, detail))
                .or_insert_with(|| {
                    self.policy
                        .status_value(&format!("{fwd}{detail}"))
                        .unwrap_or_else(|| HeaderValue::from_static(""))
                })
                .clone()
                .into();
        }
        self.policy.status_value(&format!("{fwd}{detail}"))
    }

    /// [`status`](Self::status) with `; ttl=N` added when a response was stored (a miss:
    /// formatted each time, unlike the prebuilt values).
    fn status_with_ttl(
        &self,
        fwd: &'static str,
        detail: &'static str,
        ttl: Option<u64>,
    ) -> Option<HeaderValue> {
        match ttl {
            Some(ttl) if self.policy.cache_status.is_some() => self
                .policy
                .status_value(&format!("{fwd}{detail}; ttl={ttl}")),
            _ => self.status(fwd, detail),
        }
    }
}

/// Appends the request's primary key bytes (the layout of [`CacheKey`]: method class, origin,
/// path, query) to `buf`, and returns where its resource part (up to the path) ends.
fn push_primary_key(req: &ServiceRequest, buf: &mut Vec<u8>, forwarded: bool) -> usize {
    buf.extend_from_slice(b"GET\n");
    write_origin(req.request(), buf, forwarded);
    buf.push(b'\n');
    buf.extend_from_slice(req.path().as_bytes());
    let resource_end = buf.len();
    buf.push(b'\n');
    buf.extend_from_slice(req.query_string().as_bytes());
    resource_end
}

/// Runs `f` with the per-thread key buffer, cleared (a fresh one if it is already in use).
fn with_key_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
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

fn log_get_error(err: StoreError) {
    log::warn!(target: LOG, "store get failed, serving uncached: {err}");
}

/// What the entry at a primary key means; `Err` holds a variant marker, whose variant is to be
/// looked up next.
fn primary_lookup(primary: Option<CacheEntry>, now: SystemTime) -> Result<Lookup, CacheEntry> {
    let primary = match primary {
        Some(entry) if !entry.is_expired(now) => entry,
        _ => return Ok(Lookup::UriMiss),
    };
    match primary.kind() {
        EntryKind::Response(_) => Ok(Lookup::Hit {
            entry: primary,
            marker: None,
        }),
        EntryKind::Modified(_) => Ok(Lookup::Modified(primary)),
        EntryKind::Variants(_) => Err(primary),
    }
}

/// What the answer for a variant key means.
fn variant_lookup(
    answer: Result<Option<CacheEntry>, ()>,
    marker: CacheEntry,
    now: SystemTime,
) -> Lookup {
    match answer {
        Ok(Some(entry))
            if !entry.is_expired(now) && matches!(entry.kind(), EntryKind::Response(_)) =>
        {
            Lookup::Hit {
                entry,
                marker: Some(marker),
            }
        }
        Ok(_) => Lookup::VaryMiss(marker),
        Err(()) => Lookup::StoreFailed,
    }
}
/// `GET` and `HEAD`: serve from the store, or call the handler and store what may be stored.
async fn read<S, B, St>(
    service: Rc<S>,
    inner: Rc<Inner<St>>,
    req: ServiceRequest,
    epoch: u64,
    prefetched: Option<Lookup>,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CacheStore,
{
    // The owned key is built only when needed: a prefetched lookup used the per-thread buffer,
    // and a response that is not stored (a stream, say) never needs one.
    let mut key = None;
    let lookup = match prefetched {
        Some(lookup) => lookup,
        None => {
            let k = key.insert(inner.key(req.request()));
            inner.lookup(k, req.headers()).await
        }
    };

    // The variant marker a new variant joins, if the resource has one.
    let marker = match &lookup {
        Lookup::VaryMiss(marker) => Some(marker.clone()),
        Lookup::Hit { marker, .. } => marker.clone(),
        _ => None,
    };
    let now = SystemTime::now();
    let directives = request_directives(&inner.policy, req.headers());
    let background = req.extensions().contains::<BackgroundRefresh>();
    // A stored response that may not be reused as it is, but can be revalidated.
    let mut stale = None;
    // A stale response RFC 5861 `stale-if-error` lets answer if the handler fails.
    let mut fallback = None;
    let fwd = match &lookup {
        Lookup::Hit { entry, .. } => match entry.kind() {
            EntryKind::Response(stored)
                if servable(&inner.policy, RequestFlags::of(req.headers()), stored) =>
            {
                match reuse(stored, entry_age(entry, stored, now), now, &directives) {
                    Ok(()) => {
                        log::debug!(target: LOG, "hit {}", req.path());
                        let preconditions = conditional::has_preconditions(req.headers());
                        return Ok(serve_hit(&inner, req, entry, stored, now, preconditions)
                            .map_into_right_body());
                    }
                    Err(fwd) => {
                        // RFC 5861 §3: serve it now and revalidate it once, in the background.
                        if !background
                            && fwd == "fwd=stale"
                            && !directives.no_cache
                            && directives.max_age.is_none()
                            && directives.min_fresh.is_none()
                            && stored.is_stale_within(now, stored.stale_while_revalidate)
                        {
                            return Ok(serve_while_revalidating(
                                &service, &inner, req, entry, stored, now,
                            )
                            .map_into_right_body());
                        }
                        if stored.is_stale_within(now, stored.stale_if_error) {
                            fallback = Some(entry.clone());
                        }
                        if stored.has_validator() {
                            stale = Some(entry.clone());
                        }
                        fwd
                    }
                }
            }
            _ => "fwd=bypass",
        },
        Lookup::VaryMiss(_) => "fwd=vary-miss",
        Lookup::StoreFailed => "fwd=miss; detail=store-error",
        Lookup::UriMiss | Lookup::Modified(_) => "fwd=uri-miss",
    };
    // RFC 9111 §5.2.1.7: only-if-cached and nothing that may be reused: 504, no handler.
    if directives.only_if_cached {
        log::debug!(target: LOG, "only-if-cached {}: 504", req.path());
        let mut res = HttpResponse::with_body(StatusCode::GATEWAY_TIMEOUT, ().boxed());
        if let Some(v) = inner.status("", "detail=only-if-cached") {
            res.headers_mut().insert(cache_status(), v);
        }
        mark_handled(req.request(), &mut res);
        return Ok(req.into_response(res).map_into_right_body());
    }
    let mut req = req;
    // Request coalescing: concurrent misses for one key call the handler once; the others wait
    // for its response, within a bound, and are served from the store if it was stored.
    let mut flight = None;
    // A `Cache` around this one already coalesces: waiting on its flight would wait on itself.
    let nested = req.extensions().contains::<OuterCache>();
    // A background refresh already holds its key's flight.
    if !nested && !background && coalesces(&inner.policy, req.headers()) {
        // Hashed from the per-thread buffer: a response that is never stored (a stream, say)
        // costs no owned key.
        let variants = marker.as_ref().and_then(|m| match m.kind() {
            EntryKind::Variants(v) => Some(v),
            _ => None,
        });
        let hash = match (&key, variants) {
            // A resource with variants: each variant has a flight of its own.
            (_, Some(v)) => {
                let k = key.get_or_insert_with(|| inner.key(req.request()));
                word_hash(k.variant(&v.names, v.generation, req.headers()).as_bytes())
            }
            (Some(k), None) => word_hash(k.as_bytes()),
            (None, None) => inner.key_hash(&req),
        };
        if !guard::is_uncacheable(hash) {
            match Flight::join(hash) {
                Flight::Leader(guard) => flight = Some((hash, guard)),
                Flight::Follower(lock) => {
                    let wait = actix_web::rt::time::timeout(
                        inner.policy.coalesce_wait,
                        Flight::landed(lock),
                    );
                    if wait.await.is_ok() {
                        let k = key.get_or_insert_with(|| inner.key(req.request()));
                        match collapsed_hit(&inner, req, k, fwd).await {
                            Ok(res) => return Ok(res.map_into_right_body()),
                            Err(back) => req = back,
                        }
                    }
                    // Not stored, or the leader is too slow: this request goes itself.
                }
            }
        }
    }
    log::debug!(target: LOG, "miss {} ({fwd})", req.path());

    // A HEAD miss is answered as a GET (the server drops the body on the wire), so that HEAD
    // answers the same whether or not the entry is stored, and fills the entry HEAD shares.
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    // Revalidation (RFC 9111 §4.3.1): the handler gets the stored validators instead of the
    // client's preconditions, which are judged here afterwards.
    let conditions = match stale.as_ref().map(CacheEntry::kind) {
        Some(EntryKind::Response(stored)) => Some(ask_revalidation(&mut req, stored)),
        _ => None,
    };
    // A store shared by several servers: the resource's write generation before the handler
    // runs, so that a write on another server in the meantime stops the store (the race guard
    // across servers). Unknown when the store fails: then nothing is stored.
    let generation =
        if inner.store.shared_by_servers() && inner.policy.visibility != Visibility::Private {
            let k = key.get_or_insert_with(|| inner.key(req.request()));
            match inner
                .timed("generation", inner.store.generation(k.resource()))
                .await
            {
                Ok(generation) => Guarded::Generation(generation),
                Err(_) => Guarded::Unknown,
            }
        } else {
            Guarded::Generation(None)
        };
    let guard = Guard { epoch, generation };
    req.extensions_mut().insert(OuterCache);
    let res = service.call(req).await?;

    if res.response().extensions().contains::<Handled>() {
        // An inner `Cache` answered. When it could not store the response, misses of this key
        // should stop queueing behind each other here too.
        if let Some((hash, _)) = &flight {
            if !res.response().extensions().contains::<HandledStored>() {
                guard::mark_uncacheable(*hash);
            }
        }
        return Ok(res.map_into_left_body());
    }
    // RFC 5861 §4: the handler failed, and a stale response may stand in for it.
    if let Some(entry) = fallback {
        if let (Some(fwd), EntryKind::Response(stored)) =
            (error_forward(res.status()), entry.kind())
        {
            let (http_req, _) = res.into_parts();
            let res = serve_stale_on_error(&inner, http_req, &entry, stored, conditions, fwd);
            return Ok(res);
        }
    }
    if let Some(entry) = stale.filter(|_| res.status() == StatusCode::NOT_MODIFIED) {
        return Ok(refresh(&inner, res, &entry, conditions, fwd, guard, marker).await);
    }

    let status = res.status();
    let now = SystemTime::now();
    let plan = policy::storability(
        &inner.policy,
        res.request().headers(),
        status,
        res.headers(),
        now,
    );
    let within_limit = match res.response().body().size() {
        BodySize::Sized(n) => usize::try_from(n).is_ok_and(|n| n <= inner.policy.max_body_size),
        BodySize::None => true,
        BodySize::Stream => false,
    };
    // Buffer only what is used: a 2xx body gets an ETag and preconditions, a storable one is
    // stored. Everything else passes through untouched and unbuffered.
    if !within_limit || (!status.is_success() && plan.is_err()) {
        let reason = if !within_limit {
            match res.response().body().size() {
                BodySize::Stream => NotStored::Streaming,
                _ => NotStored::TooLarge,
            }
        } else {
            plan.as_ref().err().copied().unwrap_or(NotStored::Status)
        };
        if let Some((hash, _)) = flight
            .as_ref()
            .filter(|_| reason.is_about_the_response(status))
        {
            guard::mark_uncacheable(*hash);
        }
        log::trace!(target: LOG, "not stored {}: {}", res.request().path(), reason.detail());
        let mut res = res.map_into_left_body();
        let (req, response) = (res.request().clone(), res.response_mut());
        mark_handled(&req, response);
        mark_private(&inner.policy, res.headers_mut());
        if let Some(v) = inner.status(fwd, reason.detail_param()) {
            res.headers_mut().insert(cache_status(), v);
        }
        return Ok(res);
    }

    let (http_req, res) = res.into_parts();
    let (mut head, body) = res.into_parts();
    let body = match to_bytes(body).await {
        Ok(body) => body,
        Err(err) => {
            let err = err.into();
            log::warn!(target: LOG, "response body failed while buffering: {err}");
            // The cause goes to the log; the client gets an opaque 500, as it would have got a
            // cut-off response without the cache.
            return Err(actix_web::error::ErrorInternalServerError(
                "response body failed",
            ));
        }
    };

    if status.is_success() && !head.headers().contains_key(header::ETAG) {
        head.headers_mut()
            .insert(header::ETAG, etag::strong_etag(&body));
    }

    let status_detail: &'static str;
    let mut stored_it = false;
    // RFC 9211 §2.7: the freshness left of what was stored.
    let mut ttl = None;
    match plan {
        Ok(plan) => {
            let key = match key {
                Some(key) => key,
                None => inner.key(&http_req),
            };
            prepare_stored_headers(&inner.policy, head.headers_mut(), &plan);
            let stored = stored_response(status, head.headers(), body.clone(), &plan, now);
            let entry = CacheEntry::new(now, plan.ttl + plan.keep, EntryKind::Response(stored));
            let marker = marker
                .as_ref()
                .filter(|m| matches!(m.kind(), EntryKind::Variants(_)));
            if store_fresh(
                &inner,
                &key,
                &plan,
                http_req.headers(),
                entry,
                marker,
                guard,
            )
            .await
            {
                log::debug!(target: LOG, "stored {key:?} for {}s", plan.ttl.as_secs());
                status_detail = "; stored";
                ttl = Some(plan.ttl.as_secs());
                stored_it = true;
                if let Some((hash, _)) = &flight {
                    guard::mark_cacheable(*hash);
                }
            } else {
                status_detail = "; detail=not-stored";
            }
        }
        Err(reason) => {
            log::trace!(target: LOG, "not stored {}: {}", http_req.path(), reason.detail());
            if let Some((hash, _)) = flight
                .as_ref()
                .filter(|_| reason.is_about_the_response(status))
            {
                guard::mark_uncacheable(*hash);
            }
            mark_private(&inner.policy, head.headers_mut());
            status_detail = reason.detail_param();
        }
    }

    // Preconditions on the fresh response (RFC 9110 §13.2.1: only for a 2xx).
    let outcome = if status.is_success() {
        let etag = head.headers().get(header::ETAG).cloned();
        let current = Current::Representation {
            etag: etag.as_ref().and_then(|v| EntityTag::parse(v.as_bytes())),
            last_modified: conditional::http_date(head.headers(), &header::LAST_MODIFIED),
        };
        let conditions = conditions.as_ref().unwrap_or(http_req.headers());
        conditional::evaluate(http_req.method(), conditions, &current)
    } else {
        Preconditions::Proceed
    };
    let mut response = match outcome {
        Preconditions::Proceed => head.set_body(body).map_into_boxed_body(),
        Preconditions::NotModified => {
            log::debug!(target: LOG, "304 {}", http_req.path());
            let mut res = conditional::not_modified(head.headers());
            // The handler ran: a cookie it set (e.g. a rotated session) must still reach the
            // client. Set-Cookie is not representation metadata (RFC 9110 §15.4.5).
            for cookie in head.headers().get_all(header::SET_COOKIE) {
                res.headers_mut().append(header::SET_COOKIE, cookie.clone());
            }
            res
        }
        Preconditions::Failed => {
            log::debug!(target: LOG, "412 {}", http_req.path());
            conditional::precondition_failed()
        }
    };
    if let Some(v) = inner.status_with_ttl(fwd, status_detail, ttl) {
        response.headers_mut().insert(cache_status(), v);
    }
    mark_handled(&http_req, &mut response);
    if stored_it && http_req.extensions().contains::<OuterCache>() {
        response.extensions_mut().insert(HandledStored);
    }
    Ok(ServiceResponse::new(http_req, response).map_into_right_body())
}

/// Whether misses of this request may be coalesced with others: the policy allows it, and the
/// request could be answered from a stored response (no credentials the key does not separate).
fn coalesces(policy: &Policy, headers: &HeaderMap) -> bool {
    !policy.coalesce_wait.is_zero()
        && policy.visibility != Visibility::Private
        && !policy.has_unkeyed_credentials(headers)
}

/// After waiting for a coalesced miss: the response the leader stored, if it may answer this
/// request, with `Cache-Status` `<fwd>; collapsed` (RFC 9211 §2.6). `Err` gives the request
/// back to go to the handler itself.
async fn collapsed_hit<St: CacheStore>(
    inner: &Rc<Inner<St>>,
    req: ServiceRequest,
    key: &CacheKey,
    fwd: &'static str,
) -> Result<ServiceResponse<BoxBody>, ServiceRequest> {
    let now = SystemTime::now();
    let lookup = inner.lookup(key, req.headers()).await;
    let Lookup::Hit { entry, .. } = lookup else {
        return Err(req);
    };
    let EntryKind::Response(stored) = entry.kind() else {
        return Err(req);
    };
    let directives = request_directives(&inner.policy, req.headers());
    if !servable(&inner.policy, RequestFlags::of(req.headers()), stored)
        || reuse(stored, entry_age(&entry, stored, now), now, &directives).is_err()
    {
        return Err(req);
    }
    log::debug!(target: LOG, "collapsed {}", req.path());
    let preconditions = conditional::has_preconditions(req.headers());
    let mut res = serve_hit(inner, req, &entry, stored, now, preconditions);
    if let Some(v) = inner.status(fwd, "; collapsed") {
        res.headers_mut().insert(cache_status(), v);
    }
    Ok(res)
}

/// Put in the extensions of a request that refreshes a stale entry in the background.
#[derive(Clone, Copy)]
struct BackgroundRefresh;

/// The `Cache-Status` forward of a failed handler whose response `stale-if-error` may replace
/// (RFC 5861 §4: 500, 502, 503 and 504).
fn error_forward(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        500 => "fwd=stale; fwd-status=500",
        502 => "fwd=stale; fwd-status=502",
        503 => "fwd=stale; fwd-status=503",
        504 => "fwd=stale; fwd-status=504",
        _ => return None,
    })
}

/// Answers with a stale stored response in place of the handler's error (RFC 5861 §4).
fn serve_stale_on_error<St: CacheStore, B>(
    inner: &Inner<St>,
    http_req: HttpRequest,
    entry: &CacheEntry,
    stored: &StoredResponse,
    conditions: Option<HeaderMap>,
    fwd: &'static str,
) -> ServiceResponse<EitherBody<B>> {
    log::warn!(target: LOG, "handler failed for {}: serving it stale", http_req.path());
    // The client's own preconditions: taken aside for a revalidation, else still on the request.
    let conditions = match &conditions {
        Some(c) => Some(c).filter(|c| !c.is_empty()),
        None => conditional::has_preconditions(http_req.headers()).then(|| http_req.headers()),
    };
    let mut res = answer_from_store(
        stored,
        entry_age(entry, stored, SystemTime::now()),
        http_req.method(),
        conditions,
    );
    if let Some(v) = inner.status(fwd, "; detail=stale-if-error") {
        res.headers_mut().insert(cache_status(), v);
    }
    mark_handled(&http_req, &mut res);
    ServiceResponse::new(http_req, res).map_into_right_body()
}

/// RFC 5861 §3: answers with the stale `stored` response at once, and, unless a request for the
/// key is already at the handler, revalidates it in the background with this request once the
/// client's response is done with it. actix routing needs sole ownership of a request (see
/// DESIGN, "Pitfalls"), so the refresh waits until the response's body has been dropped.
fn serve_while_revalidating<S, B, St>(
    service: &Rc<S>,
    inner: &Rc<Inner<St>>,
    req: ServiceRequest,
    entry: &CacheEntry,
    stored: &StoredResponse,
    now: SystemTime,
) -> ServiceResponse<BoxBody>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CacheStore,
{
    let preconditions = conditional::has_preconditions(req.headers());
    let hash = word_hash(inner.key(req.request()).as_bytes());
    let (http_req, payload) = req.into_parts();
    let mut res = answer_from_store(
        stored,
        entry_age(entry, stored, now),
        http_req.method(),
        preconditions.then(|| http_req.headers()),
    );
    if let Some(v) = inner.status("hit", "; detail=stale-while-revalidate") {
        res.headers_mut().insert(cache_status(), v);
    }
    mark_handled(&http_req, &mut res);
    // One refresh per key at a time.
    if !guard::claim_refresh(hash) {
        return ServiceResponse::new(http_req, res);
    }
    log::debug!(target: LOG, "stale-while-revalidate {}: refreshing", http_req.path());
    let signal = Rc::new(DropSignal::default());
    let res = res.map_body(|_, body| {
        BoxBody::new(SignalOnDrop {
            body,
            signal: Rc::clone(&signal),
        })
    });
    let (service, inner, background) = (Rc::clone(service), Rc::clone(inner), http_req.clone());
    actix_web::rt::spawn(async move {
        signal.dropped().await;
        // Only now join the key's flight: misses that need the handler must not queue behind
        // a client that is slow to read its stale response. When a request for the key is at
        // the handler already, its response is the refresh.
        let Flight::Leader(flight) = Flight::join(hash) else {
            guard::release_refresh(hash);
            return;
        };
        let req = ServiceRequest::from_parts(background, payload);
        req.extensions_mut().insert(BackgroundRefresh);
        let refresh: LocalBoxFuture<'static, _> =
            Box::pin(read(service, inner, req, guard::epoch(), None));
        // A clone of the request kept by some outer middleware would make routing panic; the
        // refresh is then given up, and the next request in the window tries again.
        match std::panic::AssertUnwindSafe(refresh).catch_unwind().await {
            Ok(Ok(res)) => {
                log::debug!(target: LOG, "refreshed in the background: {}", res.status())
            }
            Ok(Err(err)) => log::warn!(target: LOG, "background refresh failed: {err}"),
            Err(_) => log::warn!(target: LOG, "background refresh given up: request still shared"),
        }
        drop(flight);
        guard::release_refresh(hash);
    });
    ServiceResponse::new(http_req, res)
}

/// Set when a response body is dropped: written out, or abandoned with its connection.
#[derive(Default)]
struct DropSignal {
    dropped: std::cell::Cell<bool>,
    waker: std::cell::RefCell<Option<std::task::Waker>>,
}

impl DropSignal {
    fn fire(&self) {
        self.dropped.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn dropped(&self) {
        std::future::poll_fn(|cx| {
            if self.dropped.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

pin_project! {
    /// A body that fires its [`DropSignal`] when dropped.
    struct SignalOnDrop {
        #[pin]
        body: BoxBody,
        signal: Rc<DropSignal>,
    }

    impl PinnedDrop for SignalOnDrop {
        fn drop(this: Pin<&mut Self>) {
            this.signal.fire();
        }
    }
}

impl MessageBody for SignalOnDrop {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}

/// The request directives this cache honours: all of them where the policy says so, else
/// only `only-if-cached` (which cannot make the cache do more work for anyone).
fn request_directives(policy: &Policy, headers: &HeaderMap) -> Directives {
    let directives = Directives::of_request(headers);
    if policy.honours_request_directives() {
        directives
    } else {
        Directives {
            only_if_cached: directives.only_if_cached,
            ..Directives::default()
        }
    }
}

/// Whether a stored response of this `age` may answer the request as it is (RFC 9111 §4.2,
/// §4.2.4, §5.2.1); `Err` holds the `Cache-Status` reason to forward it instead.
fn reuse(
    stored: &StoredResponse,
    age: Duration,
    now: SystemTime,
    directives: &Directives,
) -> Result<(), &'static str> {
    let too_old = directives
        .max_age
        .is_some_and(|max| age > Duration::from_secs(max));
    if stored.is_fresh(now) {
        let remaining = stored.fresh_until.duration_since(now).unwrap_or_default();
        // §5.2.1.4 no-cache and §5.2.1.1 max-age; RFC 8246: not for a fresh immutable response.
        if (directives.no_cache || too_old) && !stored.immutable {
            return Err("fwd=request");
        }
        // §5.2.1.3: min-fresh asks for at least that much freshness left.
        if directives
            .min_fresh
            .is_some_and(|min| remaining < Duration::from_secs(min))
        {
            return Err("fwd=request");
        }
        return Ok(());
    }
    // §4.2.4: stale, served only where the request accepts it (§5.2.1.2 max-stale) and the
    // response allows it (§5.2.2.2 must-revalidate and the like).
    let staleness = now.duration_since(stored.fresh_until).unwrap_or_default();
    let accepted = match directives.max_stale {
        Some(None) => true,
        Some(Some(max)) => staleness <= Duration::from_secs(max),
        None => false,
    };
    if accepted
        && !stored.must_revalidate
        && !directives.no_cache
        && !too_old
        && directives.min_fresh.is_none()
    {
        Ok(())
    } else {
        Err("fwd=stale")
    }
}

/// Turns `req` into a revalidation of `stored` (RFC 9111 §4.3.1): the client's precondition
/// fields are taken out and returned, and the stored `ETag` and `Last-Modified` are sent as
/// `If-None-Match` and `If-Modified-Since`.
fn ask_revalidation(req: &mut ServiceRequest, stored: &StoredResponse) -> HeaderMap {
    let headers = req.headers_mut();
    let mut client = HeaderMap::new();
    for name in PRECONDITION_FIELDS {
        for value in headers.remove(&name) {
            client.append(name.clone(), value);
        }
    }
    if let Some(tag) = &stored.etag {
        headers.insert(header::IF_NONE_MATCH, tag.value().clone());
    }
    if let Some((_, modified)) = stored
        .headers
        .iter()
        .find(|(name, _)| name == header::LAST_MODIFIED)
    {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    req.extensions_mut()
        .insert(ClientConditions(client.clone()));
    client
}

/// A `304` answered a revalidation: the stored response is refreshed with its fields (RFC 9111
/// §4.3.4, §3.2) and stored again, and the client gets the refreshed response, or a 304 / 412
/// for its own preconditions.
async fn refresh<St: CacheStore, B>(
    inner: &Rc<Inner<St>>,
    res: ServiceResponse<B>,
    entry: &CacheEntry,
    conditions: Option<HeaderMap>,
    fwd: &'static str,
    guard: Guard,
    marker: Option<CacheEntry>,
) -> ServiceResponse<EitherBody<B>> {
    let EntryKind::Response(stored) = entry.kind() else {
        return res.map_into_left_body();
    };
    let fwd = if fwd == "fwd=request" {
        "fwd=request; fwd-status=304"
    } else {
        "fwd=stale; fwd-status=304"
    };
    let (http_req, res) = res.into_parts();
    // §4.3.4: a 304's strong entity tag selects the stored response with the same strong tag,
    // a weak one the stored response whose tag matches it weakly. Another tag is about another
    // representation: the stored response is then not updated (but still answers: the handler
    // said that what the client would get has not changed).
    let other = res
        .headers()
        .get(header::ETAG)
        .and_then(|v| EntityTag::parse(v.as_bytes()))
        .zip(stored.etag.as_ref())
        .is_some_and(|(new, old)| {
            if new.weak {
                !new.weak_eq(&old.tag())
            } else {
                !new.strong_eq(&old.tag())
            }
        });
    let now = SystemTime::now();
    let mut detail = "; detail=not-stored";
    let mut ttl = None;
    let mut answer = None;
    if !other {
        // §3.2: the 304's fields replace the stored ones of the same name, except the fields a
        // cache does not store and Content-Length. Its `Age` takes part in the freshness
        // computed here (§4.2.3) but is not stored; its `Set-Cookie` goes to this client alone.
        let mut headers = HeaderMap::new();
        for (name, value) in stored.headers.iter() {
            headers.append(name.clone(), value.clone());
        }
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in res.headers() {
            let merged = (is_stored_field(name) || name == header::AGE)
                && name != header::SET_COOKIE
                && !named_by_connection(res.headers(), name);
            if !merged {
                continue;
            }
            if !replaced.contains(&name) {
                headers.remove(name);
                replaced.push(name);
            }
            headers.append(name.clone(), value.clone());
        }
        match policy::storability(
            &inner.policy,
            http_req.headers(),
            stored.status,
            &headers,
            now,
        ) {
            Ok(plan) => {
                let fresh =
                    stored_response(stored.status, &headers, stored.body.clone(), &plan, now);
                let entry = CacheEntry::new(now, plan.ttl + plan.keep, EntryKind::Response(fresh));
                let key = inner.key(&http_req);
                let marker = marker
                    .as_ref()
                    .filter(|m| matches!(m.kind(), EntryKind::Variants(_)));
                let stored_again = store_fresh(
                    inner,
                    &key,
                    &plan,
                    http_req.headers(),
                    entry.clone(),
                    marker,
                    guard,
                )
                .await;
                if stored_again {
                    log::debug!(target: LOG, "refreshed {key:?} for {}s", plan.ttl.as_secs());
                    detail = "; stored";
                    ttl = Some(plan.ttl.as_secs());
                }
                answer = Some(entry);
            }
            Err(reason) => {
                // Not stored (the 304 now says `no-store` or `private`, say), but this client
                // still gets the representation as the handler now describes it.
                detail = reason.detail_param();
                let plan = policy::StorePlan::transient();
                let once =
                    stored_response(stored.status, &headers, stored.body.clone(), &plan, now);
                answer = Some(CacheEntry::new(
                    now,
                    Duration::ZERO,
                    EntryKind::Response(once),
                ));
            }
        }
    }
    let (entry, stored) = match answer.as_ref().map(|e| (e, e.kind())) {
        Some((e, EntryKind::Response(fresh))) => (e, fresh),
        _ => (entry, stored),
    };
    let conditions = conditions.filter(|c| !c.is_empty());
    let mut response = answer_from_store(
        stored,
        entry_age(entry, stored, now),
        http_req.method(),
        conditions.as_ref(),
    );
    // The handler ran: a cookie it set (a rotated session, say) reaches this client, and only
    // this one. Set-Cookie is never stored.
    for cookie in res.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    if let Some(v) = inner.status_with_ttl(fwd, detail, ttl) {
        response.headers_mut().insert(cache_status(), v);
    }
    mark_handled(&http_req, &mut response);
    ServiceResponse::new(http_req, response).map_into_right_body()
}

/// Under [`Visibility::Private`], tells downstream caches the same: `private, no-cache` where
/// the handler set no `Cache-Control` (RFC 9111 §5.2.2.7).
fn mark_private(policy: &Policy, headers: &mut HeaderMap) {
    if policy.visibility == Visibility::Private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
    }
}

/// Adds what the cache promises to a response it stores: `Cache-Control` where the handler set
/// none, and the policy's `cache_vary` names in `Vary`.
fn prepare_stored_headers(policy: &Policy, headers: &mut HeaderMap, plan: &policy::StorePlan) {
    // A shared cache passes the response's own directives on unchanged.
    if !policy.shared && !headers.contains_key(header::CACHE_CONTROL) {
        let secs = plan.ttl.as_secs();
        // A response stored per user must not be stored by shared caches downstream.
        let value = if plan.per_user {
            format!("private, max-age={secs}")
        } else if policy.visibility == Visibility::Public {
            format!("public, max-age={secs}")
        } else {
            format!("max-age={secs}")
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
    let declared = policy::parse_vary(headers).unwrap_or_default();
    let missing: Vec<&HeaderName> = policy
        .vary
        .iter()
        .filter(|name| !declared.contains(name))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::try_from(list) {
            headers.append(header::VARY, value);
        }
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and fields a cache recomputes are not stored.
fn is_stored_field(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::CONNECTION
            | header::TRANSFER_ENCODING
            | header::UPGRADE
            | header::TE
            | header::TRAILER
            | header::PROXY_AUTHENTICATE
            | header::AGE
            | header::CONTENT_LENGTH
    ) && name.as_str() != "keep-alive"
        && name.as_str() != "proxy-connection"
        && name.as_str() != "cache-status"
}

/// Whether `name` is listed in the response's `Connection` field, which makes it hop-by-hop
/// (RFC 9110 §7.6.1).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).any(|line| {
        line.as_bytes().split(|&b| b == b',').any(|token| {
            token
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_str().as_bytes())
        })
    })
}

fn stored_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    plan: &policy::StorePlan,
    now: SystemTime,
) -> StoredResponse {
    let stored: Box<[(HeaderName, HeaderValue)]> = headers
        .iter()
        .filter(|(name, _)| {
            is_stored_field(name)
                && !named_by_connection(headers, name)
                && !plan.strip.contains(name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    StoredResponse {
        status,
        etag: headers.get(header::ETAG).and_then(StoredTag::parse),
        last_modified: conditional::http_date(headers, &header::LAST_MODIFIED),
        initial_age: policy::current_age(headers, now),
        headers: stored,
        body,
        shareable_with_credentials: plan.shareable_with_credentials,
        fresh_until: now + plan.ttl,
        must_revalidate: plan.must_revalidate,
        immutable: plan.immutable,
        stale_while_revalidate: plan.stale_while_revalidate,
        stale_if_error: plan.stale_if_error,
    }
}

/// Stores a fresh response (and its `Vary` marker), unless a write of the resource happened
/// since the miss began. Returns whether the response is stored.
///
/// `existing` is the variant marker the lookup found at the primary key, if any: a new variant
/// of the same `Vary` names joins its generation, so the variants stored before stay reachable.
async fn store_fresh<St: CacheStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    plan: &policy::StorePlan,
    req_headers: &HeaderMap,
    entry: CacheEntry,
    existing: Option<&CacheEntry>,
    race: Guard,
) -> bool {
    let resource = key.resource();
    let epoch = race.epoch;
    let write_generation = match race.generation {
        Guarded::Generation(generation) => generation,
        Guarded::Unknown => {
            log::trace!(target: LOG, "not stored {key:?}: write generation unknown");
            return false;
        }
    };
    if guard::written_since(resource, epoch) {
        log::trace!(target: LOG, "not stored {key:?}: written while in flight");
        return false;
    }
    let mut wrote_marker = false;
    let target = if plan.vary.is_empty() {
        key.clone()
    } else {
        let joined = existing.and_then(|m| match m.kind() {
            EntryKind::Variants(v) if *v.names == *plan.vary => {
                Some((v.generation, m.expires_at()))
            }
            _ => None,
        });
        let (generation, expires_at) = match joined {
            Some((generation, expires_at)) => (generation, expires_at.max(entry.expires_at())),
            None => (new_generation(), entry.expires_at()),
        };
        let ttl = expires_at
            .duration_since(entry.stored_at())
            .unwrap_or(plan.ttl);
        let marker = CacheEntry::new(
            entry.stored_at(),
            ttl,
            EntryKind::Variants(VariantMarker {
                names: plan.vary.clone().into_boxed_slice(),
                generation,
            }),
        );
        if !guarded_set(inner, key, marker, write_generation).await {
            return false;
        }
        wrote_marker = true;
        key.variant(&plan.vary, generation, req_headers)
    };
    if !guarded_set(inner, &target, entry, write_generation).await {
        if wrote_marker {
            let _ = inner.timed("remove", inner.store.remove(key)).await;
        }
        return false;
    }
    // The re-check closes the window between the check above and the sets. A marker this miss
    // wrote may have replaced a write's modified marker: drop it too, so no old variant is
    // reachable (the write's record of superseded tags is lost; a late If-Match then goes to
    // the handler).
    if guard::written_since(resource, epoch) {
        let _ = inner.timed("remove", inner.store.remove(&target)).await;
        if wrote_marker {
            let _ = inner.timed("remove", inner.store.remove(key)).await;
        }
        log::trace!(target: LOG, "removed {target:?}: written while in flight");
        return false;
    }
    true
}

/// What a miss read before its handler ran, to tell afterwards whether a write happened since.
#[derive(Clone, Copy)]
struct Guard {
    /// This process's write epoch ([`guard::epoch`]).
    epoch: u64,
    /// The store's write generation of the resource, for stores several servers share.
    generation: Guarded,
}

#[derive(Clone, Copy)]
enum Guarded {
    /// The generation read (`None`: the store keeps none).
    Generation(Option<u64>),
    /// The store could not say: storing could revive what another server's write collected.
    Unknown,
}

/// Sets `entry`, under the store's write generation when there is one; whether it stored.
async fn guarded_set<St: CacheStore>(
    inner: &Inner<St>,
    key: &CacheKey,
    entry: CacheEntry,
    generation: Option<u64>,
) -> bool {
    match generation {
        Some(generation) => match inner
            .timed("set", inner.store.set_if_generation(key, entry, generation))
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                log::trace!(target: LOG, "not stored {key:?}: written on another server");
                false
            }
            Err(_) => false,
        },
        None => inner
            .timed("set", inner.store.set(key, entry))
            .await
            .is_ok(),
    }
}

/// A generation for a new variant marker: unique enough across processes and restarts that
/// two servers sharing a store do not pick the same one for the same resource by chance.
fn new_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u64(guard::epoch());
    h.finish()
}

/// Answers a hit: the stored response (a reference-count clone of its body), a 304 or a 412.
fn serve_hit<St>(
    inner: &Inner<St>,
    req: ServiceRequest,
    entry: &CacheEntry,
    stored: &StoredResponse,
    now: SystemTime,
    preconditions: bool,
) -> ServiceResponse<BoxBody> {
    let mut res = answer_from_store(
        stored,
        entry_age(entry, stored, now),
        req.method(),
        preconditions.then(|| req.headers()),
    );
    if let Some(v) = &inner.policy.hit_status {
        res.headers_mut().append(cache_status(), v.clone());
    }
    mark_handled(req.request(), &mut res);
    req.into_response(res)
}

/// RFC 9111 §4.2.3: the age the stored response had when stored plus the time it has been
/// resident here.
fn entry_age(entry: &CacheEntry, stored: &StoredResponse, now: SystemTime) -> Duration {
    stored.initial_age + now.duration_since(entry.stored_at()).unwrap_or_default()
}

/// The answer a stored response gives to a request whose precondition fields are
/// `conditions` (`None`: it has none): the stored response, a 304 or a 412, with `Age`.
fn answer_from_store(
    stored: &StoredResponse,
    age: Duration,
    method: &Method,
    conditions: Option<&HeaderMap>,
) -> HttpResponse<BoxBody> {
    // Judge the stored validators only when the request has a precondition.
    let outcome = match conditions {
        Some(conditions) if stored.status.is_success() => {
            let current = Current::Representation {
                etag: stored.etag.as_ref().map(StoredTag::tag),
                last_modified: stored.last_modified,
            };
            conditional::evaluate(method, conditions, &current)
        }
        _ => Preconditions::Proceed,
    };
    let mut res = match outcome {
        Preconditions::Proceed => {
            let mut res = HttpResponse::with_body(stored.status, stored.body.clone());
            // Appending into the pooled response head reuses its map; the clones are
            // reference counts (or static names), not copies.
            let headers = res.headers_mut();
            for (name, value) in stored.headers.iter() {
                headers.append(name.clone(), value.clone());
            }
            res.map_into_boxed_body()
        }
        Preconditions::NotModified => {
            log::debug!(target: LOG, "304 from store");
            conditional::not_modified(stored.headers.iter().map(|(n, v)| (n, v)))
        }
        Preconditions::Failed => {
            log::debug!(target: LOG, "412 from store");
            conditional::precondition_failed()
        }
    };
    // Stored headers never hold Age or Cache-Status (they are not stored), so appending is
    // enough.
    res.headers_mut()
        .append(header::AGE, age_value(age.as_secs()));
    res
}

/// Whether a stored response may answer this request. RFC 9111 §3.5: a request with
/// credentials the key does not separate is answered only by a response marked shareable.
fn servable(policy: &Policy, flags: RequestFlags, stored: &StoredResponse) -> bool {
    stored.shareable_with_credentials
        || !policy.unkeyed_credentials(flags.authorization, flags.cookie)
}

/// `Age` values, prebuilt for the first hour so that a hit formats nothing.
fn age_value(secs: u64) -> HeaderValue {
    static AGES: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    let ages = AGES.get_or_init(|| (0..3600u64).map(HeaderValue::from).collect());
    usize::try_from(secs)
        .ok()
        .and_then(|i| ages.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(secs))
}

thread_local! {
    /// The buffer hit-path keys are built in, reused by every request of the worker thread.
    static KEY_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn cache_status() -> HeaderName {
    CACHE_STATUS
}

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Marks a request whose conditional write lock an outer `Cache` already holds, so that a
/// nested `Cache` does not wait for itself.
#[derive(Clone, Copy)]
struct WriteLockHeld;

/// Unsafe methods: check preconditions before the handler, and after a successful write drop
/// every stored variant of the resource and remember which entity tags it made stale.
async fn write<S, B, St>(
    service: Rc<S>,
    inner: Rc<Inner<St>>,
    req: ServiceRequest,
    prefetched: Option<Lookup>,
    fingerprint: u64,
    flags: RequestFlags,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
    St: CacheStore,
{
    let stores = inner.policy.visibility != Visibility::Private;
    let conditional = flags.preconditions;

    // Conditional writes of one resource go one at a time: check, handler, marker.
    let _lock = if stores && conditional && req.extensions().get::<WriteLockHeld>().is_none() {
        let lock = guard::lock_conditional_write(fingerprint).await;
        req.extensions_mut().insert(WriteLockHeld);
        Some(lock)
    } else {
        None
    };

    // Across servers sharing the store, the same: a lock in the store, taken after this
    // process's (so one server's writes queue here, not in the store).
    let remote_lock = match (&_lock, inner.store.shared_by_servers()) {
        (Some(_), true) => lock_in_store(&inner, req.request()).await,
        _ => None,
    };

    let result: Result<ServiceResponse<EitherBody<B>>, Error> = async {
        // The owned key is built only when needed: a write through a resource the cache does not
        // hold needs none.
        let mut key = None;
        // A prefetched lookup predates the lock: look again once it is held.
        let lookup = match prefetched {
            Some(lookup) if _lock.is_none() => lookup,
            _ if stores => {
                let k = key.insert(inner.key(req.request()));
                inner.lookup(k, req.headers()).await
            }
            _ => Lookup::UriMiss,
        };
        // Nothing reachable is stored under the primary key: without query variants to drop, there
        // is nothing to collect. (A miss that stores during the write is undone by the race guard.)
        // A store several servers share is collected after every write all the same: the collect
        // moves the resource's write generation on, which stops a miss in flight on another server.
        let nothing_stored = matches!(lookup, Lookup::UriMiss) && !inner.store.shared_by_servers();

        // What the write will make stale, oldest first: tags an earlier write made stale, the
        // stored tag, and the strong tags the client's If-Match claims are current.
        let mut superseded: Vec<Box<[u8]>> = Vec::new();
        // A request with credentials the key does not separate was never served a stored entry
        // that is not shareable with it (RFC 9111 §3.5), so it is not judged against one either.
        let current = match &lookup {
            Lookup::Hit { entry, .. } => match entry.kind() {
                // A stale entry may no longer be current: only the handler can judge.
                EntryKind::Response(stored)
                    if stored.status.is_success()
                        && servable(&inner.policy, flags, stored)
                        && stored.is_fresh(SystemTime::now()) =>
                {
                    let etag = stored.etag.as_ref().map(StoredTag::tag);
                    if let Some(tag) = etag.filter(|t| !t.weak) {
                        superseded.push(tag.opaque.into());
                    }
                    Current::Representation {
                        etag,
                        last_modified: stored.last_modified,
                    }
                }
                _ => Current::Unknown,
            },
            Lookup::Modified(entry) => match entry.kind() {
                EntryKind::Modified(m) => {
                    superseded.extend(m.superseded.iter().cloned());
                    Current::Modified {
                        superseded: &m.superseded,
                        last_modified: m.last_modified,
                    }
                }
                _ => Current::Unknown,
            },
            _ => Current::Unknown,
        };
        if conditional
            && conditional::evaluate(req.method(), req.headers(), &current) == Preconditions::Failed
        {
            log::debug!(target: LOG, "412 {} {}, handler not called", req.method(), req.path());
            let mut res = conditional::precondition_failed();
            if let Some(v) = inner.status("fwd=method", "; detail=precondition-failed") {
                res.headers_mut().insert(cache_status(), v);
            }
            return Ok(req.into_response(res).map_into_right_body());
        }
        etag::for_each_strong(req.headers().get_all(header::IF_MATCH), |tag| {
            superseded.push(tag.into());
        });

        let res = service.call(req).await?;
        let status = res.status();
        if !(status.is_success() || status.is_redirection()) {
            return Ok(res.map_into_left_body());
        }

        // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI, and
        // may invalidate the same-origin URIs in Location and Content-Location.
        let others = after_write(&inner, &res, fingerprint);
        // A marker is worth writing when it hides something or remembers something. Only the
        // methods known to change the representation leave one; an extension method may be
        // read-only (WebDAV's PROPFIND), so it only invalidates, as RFC 9111 §4.4 asks.
        let remembers = !superseded.is_empty() || !nothing_stored || conditional;
        let marks = stores && remembers && is_known_write(res.request().method());
        let key = if marks || !nothing_stored || inner.policy.collect_query_variants {
            Some(key.unwrap_or_else(|| inner.key(res.request())))
        } else {
            None
        };
        if let Some(key) = key
            .as_ref()
            .filter(|_| !nothing_stored || inner.policy.collect_query_variants)
        {
            let query = (!inner.policy.collect_query_variants).then(|| key.query().into());
            collect(
                &inner,
                key,
                CollectTarget::new(key.resource().clone(), query),
            )
            .await;
        }
        if let Some(others) = others {
            others.await;
        }

        if let Some(key) = key.filter(|_| marks) {
            let now = SystemTime::now();
            // Without a Last-Modified from the application, the write time, truncated to HTTP-date
            // precision, bounds If-Unmodified-Since: the resource certainly changed then.
            let last_modified = conditional::http_date(res.headers(), &header::LAST_MODIFIED)
                .unwrap_or_else(|| truncate_to_seconds(now));
            let marker = CacheEntry::new(
                now,
                inner.policy.expiry,
                EntryKind::Modified(ModifiedMarker {
                    superseded: newest_distinct(superseded, MAX_SUPERSEDED),
                    last_modified: Some(last_modified),
                }),
            );
            let _ = inner.timed("set", inner.store.set(&key, marker)).await;
        }
        Ok(res.map_into_left_body())
    }
    .await;
    if let Some((resource, token)) = remote_lock {
        let _ = inner
            .timed("unlock", inner.store.unlock_resource(&resource, token))
            .await;
    }
    result
}

/// How long a conditional write waits for another server's write of the same resource.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long a store lock lives if its holder never releases it (a server that died mid-write).
const STORE_LOCK_TTL: Duration = Duration::from_secs(10);

/// Takes the store's lock of the request's resource, waiting for another server's write of it
/// at most [`STORE_LOCK_WAIT`]. `None`: the store keeps no locks, failed, or the wait ran out;
/// the write then goes on without it (logged), as it would without the store.
async fn lock_in_store<St: CacheStore>(
    inner: &Inner<St>,
    req: &HttpRequest,
) -> Option<(crate::ResourceKey, u64)> {
    let resource = inner.key(req).resource().clone();
    let token = new_generation();
    let deadline = std::time::Instant::now() + STORE_LOCK_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        match inner
            .timed(
                "lock",
                inner
                    .store
                    .try_lock_resource(&resource, token, STORE_LOCK_TTL),
            )
            .await
        {
            Ok(true) => return Some((resource, token)),
            Ok(false) if std::time::Instant::now() < deadline => {
                actix_web::rt::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Ok(false) => {
                log::warn!(target: LOG, "write of {resource:?} goes on without the store lock: held too long");
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// `PUT`, `PATCH`, `DELETE` and `POST`: the methods known to change the target resource.
fn is_known_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
    )
}

/// `time` rounded down to a whole second, the precision of HTTP dates.
fn truncate_to_seconds(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The last `max` distinct tags of `tags` (oldest first), in their original order.
fn newest_distinct(tags: Vec<Box<[u8]>>, max: usize) -> Box<[Box<[u8]>]> {
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(max.min(tags.len()));
    for tag in tags.into_iter().rev() {
        if kept.len() == max {
            break;
        }
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    kept.reverse();
    kept.into_boxed_slice()
}

/// Drops the entries of `target`: with the store's `collect` when it has one, otherwise by
/// removing the one primary key the middleware can name.
async fn collect<St: CacheStore>(inner: &Inner<St>, key: &CacheKey, target: CollectTarget) {
    match inner.store.as_collectable() {
        Some(store) => {
            if let Ok(n) = inner.timed("collect", store.collect(&target)).await {
                log::debug!(target: LOG, "collected {n} entries of {target:?}");
            }
        }
        None => {
            if inner.timed("remove", inner.store.remove(key)).await.is_ok() {
                log::debug!(target: LOG, "removed {key:?} (store cannot collect)");
            }
        }
    }
}

/// The primary key of a same-origin URI in `Location` or `Content-Location`, if it is one.
fn same_origin_key(req: &HttpRequest, value: Option<&HeaderValue>) -> Option<CacheKey> {
    let uri = Uri::from_str(value?.to_str().ok()?).ok()?;
    if let Some(authority) = uri.authority() {
        let host = routing_host(req);
        if !authority.as_str().eq_ignore_ascii_case(&host) {
            return None;
        }
        if uri
            .scheme_str()
            .is_some_and(|s| !s.eq_ignore_ascii_case(req.connection_info().scheme()))
        {
            return None;
        }
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return None;
    }
    Some(KeyBuilder::new(&request_origin(req), path, uri.query().unwrap_or("")).finish())
}

/// The host the router matches on (`guard::Host`): below HTTP/2 the `Host` header, else the
/// URI's authority, else the application's configured host.
fn routing_host(req: &HttpRequest) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|_| req.version() < Version::HTTP_2)
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_else(|| req.app_config().host());
    host.to_ascii_lowercase()
}

/// The origin part of every key: everything actix uses to route the request and to build URLs.
///
/// The router matches the `Host` header (the URI's authority from HTTP/2 on), while the scheme
/// and host of `ConnectionInfo`, which URL generation uses, honour `Forwarded` /
/// `X-Forwarded-*`, which the client controls unless a proxy overwrites them. A key that used only
/// one of them would let a request routed to one virtual host store its response under another.
/// So the key holds the scheme and the routing host, and adds every other host the request
/// names (`Host`, the URI's authority, the forwarded host) where it differs.
fn request_origin(req: &HttpRequest) -> String {
    let mut origin = Vec::new();
    write_origin(req, &mut origin, RequestFlags::of(req.headers()).forwarded);
    // Built from `&str` parts and ASCII lowercasing: always UTF-8.
    String::from_utf8(origin).unwrap_or_default()
}

/// Appends the origin of `req` (see [`request_origin`]) to `out`. Without forwarding headers it
/// reads the request head directly, as `ConnectionInfo` would, and allocates nothing.
fn write_origin(req: &HttpRequest, out: &mut Vec<u8>, forwarded: bool) {
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
    let routing = host_header
        .filter(|_| req.version() < Version::HTTP_2)
        .or(authority)
        .unwrap_or_else(|| config.host());
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

fn push_lowercase(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    out[start..].make_ascii_lowercase();
}

#[cfg(test)]
mod tests {
    use actix_service::IntoService;
    use actix_web::{http::StatusCode, test as actix_test};

    use super::*;
    use crate::MemoryStore;

    #[actix_web::test]
    async fn other_methods_pass_through_untouched() {
        let mw = Cache::new(MemoryStore::new(10))
            .new_transform(actix_test::ok_service())
            .await
            .unwrap();
        let req = actix_test::TestRequest::default()
            .method(Method::OPTIONS)
            .to_srv_request();
        let res = mw.call(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::ETAG).is_none());
        assert!(res.headers().get("cache-status").is_none());
    }

    #[actix_web::test]
    async fn a_get_through_the_transform_is_stored_then_hit() {
        let store = MemoryStore::new(10);
        let srv = |req: ServiceRequest| async move {
            Ok::<_, Error>(req.into_response(HttpResponse::Ok().body("x")))
        };
        let mw = Cache::new(store.clone())
            .new_transform(srv.into_service())
            .await
            .unwrap();
        let first = mw
            .call(actix_test::TestRequest::get().to_srv_request())
            .await
            .unwrap();
        assert!(first.headers().contains_key(header::ETAG));
        assert_eq!(store.len(), 1);
        let second = mw
            .call(actix_test::TestRequest::get().to_srv_request())
            .await
            .unwrap();
        assert!(second.headers().contains_key(header::AGE));
    }

    #[test]
    fn safe_methods_are_the_only_ones_that_do_not_invalidate() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"] {
            assert!(
                !is_unsafe(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in [
            "PUT",
            "PATCH",
            "DELETE",
            "POST",
            "PROPPATCH",
            "MOVE",
            "PURGE",
        ] {
            assert!(is_unsafe(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
    }

    #[test]
    fn the_coalescing_hash_is_the_hash_of_the_owned_key() {
        let cache = Cache::new(crate::MemoryStore::new(10));
        for req in [
            actix_web::test::TestRequest::get()
                .uri("/a/b?q=1")
                .insert_header((header::HOST, "Example.COM:8080"))
                .to_srv_request(),
            actix_web::test::TestRequest::get()
                .uri("/x")
                .insert_header(("x-forwarded-host", "other.example"))
                .to_srv_request(),
        ] {
            let owned = cache.inner.key(req.request());
            assert_eq!(cache.inner.key_hash(&req), word_hash(owned.as_bytes()));
        }
    }

    #[test]
    fn superseded_tags_keep_the_newest() {
        let tags: Vec<Box<[u8]>> = ["a", "b", "a", "c", "d"]
            .iter()
            .map(|t| t.as_bytes().into())
            .collect();
        let kept = newest_distinct(tags, 3);
        let kept: Vec<&[u8]> = kept.iter().map(|t| &**t).collect();
        assert_eq!(kept, [&b"a"[..], b"c", b"d"]);
    }

    #[test]
    #[should_panic(expected = "expiry must be positive")]
    fn zero_expiry_is_rejected_at_build_time() {
        let _ = Cache::new(MemoryStore::new(10)).cache_expiry(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "is not a token")]
    fn invalid_cache_status_name_is_rejected_at_build_time() {
        let _ = Cache::new(MemoryStore::new(10)).cache_status_name("two words");
    }
}
