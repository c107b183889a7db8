//! [`Cache`]: the builder, which is the actix `Transform`.

use std::{
    future::{ready, Ready},
    rc::Rc,
    str::FromStr,
    time::Duration,
};

use actix_service::{Service, Transform};
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::HeaderName,
    Error,
};

use super::{service::CacheMiddleware, status::Statuses, Inner};
use crate::{
    policy::{self, Policy, Visibility},
    store::CollectableStore,
};

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
    pub(super) inner: Rc<Inner<St>>,
}

impl<St> Clone for Cache<St> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<St: CollectableStore> Cache<St> {
    /// Creates the middleware over `store`, with the default policy.
    ///
    /// The store must be able to collect ([`CollectableStore`]): a write drops every stored
    /// entry of what it changed, and a store that could not would serve them stale.
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
                statuses: Statuses::new(Some(crate::policy::DEFAULT_CACHE_STATUS_NAME)),
                backlog: Default::default(),
            }),
        }
    }
}

impl<St> Cache<St> {
    fn policy_mut(mut self, f: impl FnOnce(&mut Policy)) -> Self {
        match Rc::get_mut(&mut self.inner) {
            Some(inner) => {
                f(&mut inner.policy);
                inner.statuses = Statuses::new(inner.policy.cache_status.as_deref());
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

    /// Sets how long a successful write's answer waits, at most, for its invalidation to reach
    /// the store (default [`DEFAULT_INVALIDATION_WAIT`](crate::DEFAULT_INVALIDATION_WAIT), 2 s).
    ///
    /// A write answers only once the store has taken its collect (and its write marker), so
    /// that when its `2xx` arrives no server serves what it made stale. A store that fails,
    /// times out or freezes is tried again until this wait runs out; the write is then
    /// answered anyway, its invalidation kept in the background, and until it lands this
    /// process serves the resource uncached and answers its conditional writes with `503`.
    /// Other servers sharing the store can serve the old entry in that time: the wait is the
    /// outage a write rides out without that window.
    ///
    /// # Panics
    /// Panics if `wait` is zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).invalidation_wait(Duration::from_secs(5));
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn invalidation_wait(self, wait: Duration) -> Self {
        assert!(
            !wait.is_zero(),
            "Cache::invalidation_wait: the wait must be positive"
        );
        self.policy_mut(|p| p.invalidation_wait = wait)
    }

    /// Lets conditional writes go on when their current validator cannot be known. **Unsafe:**
    /// a lost update becomes possible.
    ///
    /// By default a write with `If-Match`, `If-Unmodified-Since` or `If-None-Match` fails
    /// closed: when the store cannot say what it holds of the resource (it failed, timed out,
    /// or a collect of the resource has not reached it yet), when the lock of the resource
    /// cannot be taken within 5 s (in this process, or in a store several servers share), the
    /// request gets `503 Service Unavailable` with `Retry-After: 1` and the handler does not
    /// run. With this option such a write is handed to the handler unjudged, as if nothing were
    /// cached (the handler must then check the precondition itself).
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).fail_open_conditional_writes();
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn fail_open_conditional_writes(self) -> Self {
        self.policy_mut(|p| p.fail_open_writes = true)
    }

    /// Whether a conditional write that finds nothing of its resource stored asks the wrapped
    /// service for the current representation first. On by default.
    ///
    /// A write with `If-Match`, `If-Unmodified-Since` or `If-None-Match` is judged against the
    /// stored response of its URI, else against what the resource's last write made stale.
    /// When the store holds neither (it restarted empty, evicted them, or the `GET` response
    /// was never storable: `no-store`, `private`, `Set-Cookie`), the cache routes the request
    /// once as a `GET`, without its precondition fields and body, takes the entity tag and
    /// `Last-Modified` of that answer (the handler's `ETag`, else the SHA-256 one this crate
    /// would have given it) and judges the write against them: a `2xx` is the current
    /// representation; a `404`/`410` from a route that matched means there is none
    /// (`If-Match` fails, `If-None-Match: *` passes); anything else (a `404` of no route, a
    /// `2xx` streamed without an `ETag`, `401`, `405`, `5xx`) leaves the write to the handler.
    /// An `Error` a middleware answers the probe with answers the write; a probe that takes
    /// over 5 s gets the write a `503`. Only `If-Match`, `If-None-Match` and a valid
    /// `If-Unmodified-Since` are probed for. The probe runs under the write's locks, so no
    /// other write of the resource can come between it and the handler; it costs one `GET` of
    /// the handler per such write, which a client can cause at will, as it can any `GET`.
    ///
    /// Turn it off when a `GET` of a written URI is too costly or not safe to repeat; a
    /// conditional write the store knows nothing of then goes to the handler unjudged, which
    /// must check the precondition itself (it cannot check the SHA-256 entity tags this crate
    /// computes). Middleware and extractors wrapped by the `Cache` see a probed request twice
    /// (what they put in its extensions stays), the `GET`'s `Set-Cookie` is dropped,
    /// `HttpRequest::match_pattern` may not name the route of the write, and a write whose
    /// `Accept` would select another variant than its client's `GET` is judged against that
    /// variant.
    ///
    /// ```
    /// use actix_response_cache::{Cache, MemoryStore};
    ///
    /// let cache = Cache::new(MemoryStore::new(100)).probe_validators(false);
    /// let app = actix_web::App::new().wrap(cache);
    /// ```
    #[must_use]
    pub fn probe_validators(self, on: bool) -> Self {
        self.policy_mut(|p| p.probe_validators = on)
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
    St: CollectableStore,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CacheMiddleware<S, St>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CacheMiddleware::new(service, Rc::clone(&self.inner))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

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
