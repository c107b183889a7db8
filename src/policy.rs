//! The caching policy of one `Cache`: its configuration, with the defaults.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName};

/// Who may be served a stored response. Set with [`Cache::visibility`](crate::Cache::visibility).
///
/// ```
/// use actix_web::{web, App};
/// use actix_response_cache::{Cache, MemoryStore, Visibility};
///
/// let store = MemoryStore::new(1_000);
/// let app = App::new().service(
///     web::scope("/docs").wrap(Cache::new(store).visibility(Visibility::Public)),
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Visibility {
    /// The default: responses are stored and shared unless something says they are personal.
    /// A response is not stored when it is marked `private` or `no-store`, sets a cookie, or
    /// answers a request that carries `Authorization` or `Cookie` (unless the response says
    /// `public` or `s-maxage`, or the key varies on that header). Stored responses are not served
    /// to requests with credentials unless they were stored under those rules.
    #[default]
    Shared,
    /// Every response of this scope is the same for every user: responses to requests with
    /// `Authorization` or `Cookie` are stored and shared too. `private`, `no-store` and
    /// `Set-Cookie` are still never stored. Added `Cache-Control` says `public`.
    Public,
    /// Nothing is stored on the server. ETags and `304` still work, per client, and responses
    /// without `Cache-Control` get `private, no-cache`. A write's preconditions need a stored
    /// validator, so under `Private` they are left to the handler.
    Private,
}

/// The default lifetime of a stored response: 60 seconds.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_EXPIRY};
///
/// assert_eq!(DEFAULT_EXPIRY, std::time::Duration::from_secs(60));
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// The default largest body that is buffered, hashed for an ETag and stored: 1 MiB.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_MAX_BODY_SIZE};
///
/// assert_eq!(DEFAULT_MAX_BODY_SIZE, 1024 * 1024);
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
/// The default limit on one store operation: 250 ms.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_STORE_TIMEOUT};
///
/// assert_eq!(DEFAULT_STORE_TIMEOUT, std::time::Duration::from_millis(250));
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a successful write's answer waits, at most, for its invalidation to reach the
/// store (retrying a store that failed, timed out or froze): 2 seconds. See
/// [`Cache::invalidation_wait`](crate::Cache::invalidation_wait).
///
/// ```
/// use actix_response_cache::DEFAULT_INVALIDATION_WAIT;
///
/// assert_eq!(DEFAULT_INVALIDATION_WAIT, std::time::Duration::from_secs(2));
/// # let _ = actix_web::App::new().wrap(actix_response_cache::Cache::new(actix_response_cache::MemoryStore::new(10)));
/// ```
pub const DEFAULT_INVALIDATION_WAIT: Duration = Duration::from_secs(2);
/// How long a stale entry that has a validator is kept so that it can be revalidated
/// (RFC 9111 §4.3) rather than fetched again: 60 seconds.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_KEEP_STALE};
///
/// assert_eq!(DEFAULT_KEEP_STALE, std::time::Duration::from_secs(60));
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_KEEP_STALE: Duration = Duration::from_secs(60);
/// How long a miss waits for a concurrent request for the same key that is already at the
/// handler, before it goes to the handler itself: 5 seconds.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_COALESCE_WAIT};
///
/// assert_eq!(DEFAULT_COALESCE_WAIT, std::time::Duration::from_secs(5));
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_COALESCE_WAIT: Duration = Duration::from_secs(5);
/// The cache's name in `Cache-Status` (RFC 9211) unless configured otherwise.
///
/// ```
/// use actix_response_cache::{Cache, MemoryStore, DEFAULT_CACHE_STATUS_NAME};
///
/// assert_eq!(DEFAULT_CACHE_STATUS_NAME, "actix-response-cache");
/// let app = actix_web::App::new().wrap(Cache::new(MemoryStore::new(100)));
/// ```
pub const DEFAULT_CACHE_STATUS_NAME: &str = "actix-response-cache";

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) expiry: Duration,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) visibility: Visibility,
    pub(crate) max_body_size: usize,
    pub(crate) store_timeout: Duration,
    pub(crate) collect_query_variants: bool,
    /// Conditional writes go on when their validator cannot be known (unsafe).
    pub(crate) fail_open_writes: bool,
    /// How long a write's answer waits for its invalidation to reach the store.
    pub(crate) invalidation_wait: Duration,
    /// A conditional write that finds nothing stored asks the handler for the current
    /// representation with a `GET` first.
    pub(crate) probe_validators: bool,
    pub(crate) cache_status: Option<String>,
    /// Shared-cache mode: the response's own headers decide freshness (RFC 9111 §4.2).
    pub(crate) shared: bool,
    /// The fraction of the time since `Last-Modified` a response without explicit freshness
    /// stays fresh in shared mode (RFC 9111 §4.2.2); `None`: such responses are not stored.
    pub(crate) heuristic: Option<f32>,
    /// How long a stale entry with a validator is kept for revalidation (RFC 9111 §4.3).
    pub(crate) keep_stale: Duration,
    /// Whether request `Cache-Control` directives are honoured; `None`: the mode's default.
    pub(crate) request_directives: Option<bool>,
    /// How long a coalesced miss waits for the request at the handler; zero: no coalescing.
    pub(crate) coalesce_wait: Duration,
    /// Defaults for responses without the RFC 5861 directives of their own.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            expiry: DEFAULT_EXPIRY,
            vary: Vec::new(),
            visibility: Visibility::Shared,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            collect_query_variants: false,
            fail_open_writes: false,
            invalidation_wait: DEFAULT_INVALIDATION_WAIT,
            probe_validators: true,
            cache_status: Some(DEFAULT_CACHE_STATUS_NAME.to_owned()),
            shared: false,
            heuristic: None,
            keep_stale: DEFAULT_KEEP_STALE,
            request_directives: None,
            coalesce_wait: DEFAULT_COALESCE_WAIT,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }
}

impl Policy {
    /// Whether request `Cache-Control` directives are honoured: set on the builder, else on in
    /// shared mode and off in application mode.
    pub(crate) fn honours_request_directives(&self) -> bool {
        self.request_directives.unwrap_or(self.shared)
    }

    /// Whether the policy's key varies on `name`, which makes stored responses per-user when
    /// `name` is a credential.
    pub(crate) fn key_varies_on(&self, name: &HeaderName) -> bool {
        self.vary.iter().any(|n| n == name)
    }

    /// Whether a request that carries `Authorization` / `Cookie` (as the flags say) has
    /// credentials the key does not separate: RFC 9111 §3.5 for `Authorization`, and the same
    /// reasoning for `Cookie` (the response may be personal).
    pub(crate) fn unkeyed_credentials(&self, authorization: bool, cookie: bool) -> bool {
        (authorization && !self.key_varies_on(&header::AUTHORIZATION))
            || (cookie && !self.key_varies_on(&header::COOKIE))
    }

    /// [`unkeyed_credentials`](Self::unkeyed_credentials) of the request's headers.
    pub(crate) fn has_unkeyed_credentials(&self, req: &HeaderMap) -> bool {
        self.unkeyed_credentials(
            req.contains_key(header::AUTHORIZATION),
            req.contains_key(header::COOKIE),
        )
    }
}
