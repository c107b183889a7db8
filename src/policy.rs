//! The caching policy of one `Cache`: configuration, what may be stored, and for how long.

use std::time::{Duration, SystemTime};

use actix_web::http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    StatusCode,
};

use crate::conditional::http_date;

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
    pub(crate) cache_status: Option<String>,
    /// `Cache-Status` of a hit, prebuilt so that a hit formats nothing.
    pub(crate) hit_status: Option<HeaderValue>,
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
        let mut policy = Self {
            expiry: DEFAULT_EXPIRY,
            vary: Vec::new(),
            visibility: Visibility::Shared,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            collect_query_variants: false,
            cache_status: Some(DEFAULT_CACHE_STATUS_NAME.to_owned()),
            hit_status: None,
            shared: false,
            heuristic: None,
            keep_stale: DEFAULT_KEEP_STALE,
            request_directives: None,
            coalesce_wait: DEFAULT_COALESCE_WAIT,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        };
        policy.rebuild();
        policy
    }
}

impl Policy {
    /// Recomputes prebuilt values after a builder change.
    pub(crate) fn rebuild(&mut self) {
        self.hit_status = self.status_value("hit");
    }

    /// A `Cache-Status` value `<name>; <params>`, when the header is on.
    pub(crate) fn status_value(&self, params: &str) -> Option<HeaderValue> {
        let name = self.cache_status.as_deref()?;
        HeaderValue::try_from(format!("{name}; {params}")).ok()
    }

    /// Whether request `Cache-Control` directives are honoured: set on the builder, else on in
    /// shared mode and off in application mode.
    pub(crate) fn honours_request_directives(&self) -> bool {
        self.request_directives.unwrap_or(self.shared)
    }

    /// Whether the policy's key varies on `name`, which makes stored responses per-user when
    /// `name` is a credential.
    fn key_varies_on(&self, name: &HeaderName) -> bool {
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

/// Why a response was not stored. Logged at trace level and sent as `Cache-Status` `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotStored {
    PolicyPrivate,
    Status,
    Streaming,
    TooLarge,
    SetCookie,
    NoStore,
    RequestNoStore,
    Private,
    NoCache,
    VaryAny,
    VaryInvalid,
    Credentials,
    InvalidFreshness,
    Expired,
    NoFreshness,
}

impl NotStored {
    /// Whether the reason lies in the response (and will likely hold for the next request of
    /// the same key), rather than in this request (`no-store`, credentials, or a status that
    /// answers the request's own preconditions).
    pub(crate) fn is_about_the_response(self, status: StatusCode) -> bool {
        let about_the_request = matches!(self, Self::RequestNoStore | Self::Credentials)
            || (self == Self::Status && matches!(status.as_u16(), 304 | 412));
        !about_the_request
    }

    /// The `Cache-Status` parameter: `; detail=<reason>`.
    pub(crate) fn detail_param(self) -> &'static str {
        match self {
            Self::PolicyPrivate => "; detail=policy-private",
            Self::Status => "; detail=status",
            Self::Streaming => "; detail=streaming",
            Self::TooLarge => "; detail=too-large",
            Self::SetCookie => "; detail=set-cookie",
            Self::NoStore => "; detail=no-store",
            Self::RequestNoStore => "; detail=request-no-store",
            Self::Private => "; detail=private",
            Self::NoCache => "; detail=no-cache",
            Self::VaryAny => "; detail=vary-star",
            Self::VaryInvalid => "; detail=vary-invalid",
            Self::Credentials => "; detail=credentials",
            Self::InvalidFreshness => "; detail=invalid-freshness",
            Self::Expired => "; detail=expired",
            Self::NoFreshness => "; detail=no-freshness",
        }
    }

    /// The reason alone, for the log: [`detail_param`](Self::detail_param) without its prefix.
    pub(crate) fn detail(self) -> &'static str {
        let param = self.detail_param();
        param.strip_prefix("; detail=").unwrap_or(param)
    }
}

/// How a storable response is stored.
#[derive(Debug)]
pub(crate) struct StorePlan {
    /// How long the stored response is fresh (zero: revalidate before every reuse).
    pub(crate) ttl: Duration,
    /// How long it is kept after that, stale, for revalidation (RFC 9111 §4.3).
    pub(crate) keep: Duration,
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` in shared mode (§5.2.2.2, §5.2.2.8,
    /// §5.2.2.10): never served stale.
    pub(crate) must_revalidate: bool,
    /// `immutable` (RFC 8246): a request's `no-cache` does not revalidate it while fresh.
    pub(crate) immutable: bool,
    /// Fields named by a qualified `private` or `no-cache` (§5.2.2.7, §5.2.2.4): not stored.
    pub(crate) strip: Vec<HeaderName>,
    /// RFC 5861 windows after freshness ends; zero where a directive forbids serving stale.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    /// The header names that select this variant: the response's `Vary` and the policy's
    /// `cache_vary`, lowercased, sorted and deduplicated.
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) shareable_with_credentials: bool,
    /// Stored under a key that varies on a credential the request carried: the response is for
    /// that user alone, and downstream caches are told so (`private`).
    pub(crate) per_user: bool,
}

impl StorePlan {
    /// A plan for a response answered once and never stored: no freshness, no stale windows.
    pub(crate) fn transient() -> Self {
        Self {
            ttl: Duration::ZERO,
            keep: Duration::ZERO,
            must_revalidate: true,
            immutable: false,
            strip: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            vary: Vec::new(),
            shareable_with_credentials: false,
            per_user: false,
        }
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1), less the negative
/// ones, which [`is_negative`] lists.
fn is_positive_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// Heuristically cacheable error statuses: stored only with explicit freshness.
fn is_negative(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 405 | 410 | 414 | 501)
}

/// Decides whether a `GET` response may be stored, and for how long (RFC 9111 §3, §4.2).
pub(crate) fn storability(
    policy: &Policy,
    req: &HeaderMap,
    status: StatusCode,
    res: &HeaderMap,
    now: SystemTime,
) -> Result<StorePlan, NotStored> {
    if policy.visibility == Visibility::Private {
        return Err(NotStored::PolicyPrivate);
    }
    let directives = Directives::parse(res.get_all(header::CACHE_CONTROL));
    let explicit = directives.s_maxage.is_some()
        || directives.max_age.is_some()
        || res.contains_key(header::EXPIRES);
    if !(is_positive_cacheable(status) || (is_negative(status) && explicit)) {
        return Err(NotStored::Status);
    }
    // RFC 9111 §5.2.1.5: a request's no-store forbids storing its response.
    if Directives::parse(req.get_all(header::CACHE_CONTROL)).no_store {
        return Err(NotStored::RequestNoStore);
    }
    if directives.no_store {
        return Err(NotStored::NoStore);
    }
    // A shared cache must never replay one user's cookie to another, unless the response asks
    // for the field alone to be kept out (`private="set-cookie"`, `no-cache="set-cookie"`).
    let strip: Vec<HeaderName> = directives
        .private_fields
        .iter()
        .chain(&directives.no_cache_fields)
        .cloned()
        .collect();
    if res.contains_key(header::SET_COOKIE) && !strip.contains(&header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let per_user_key = (req.contains_key(header::AUTHORIZATION)
        && policy.key_varies_on(&header::AUTHORIZATION))
        || (req.contains_key(header::COOKIE) && policy.key_varies_on(&header::COOKIE));
    // §5.2.2.7: private responses are for one user; storable only where the key is per user.
    if directives.private && !per_user_key {
        return Err(NotStored::Private);
    }
    let mut vary = parse_vary(res)?;
    vary.extend(policy.vary.iter().cloned());
    sort_names(&mut vary);
    // §3.5: responses to requests with credentials are shared only when marked for it. The RFC
    // also accepts `must-revalidate` for Authorization; we do not, for Authorization or Cookie:
    // it says nothing about who may see the response.
    let marked_shareable = directives.public
        || directives.s_maxage.is_some()
        || policy.visibility == Visibility::Public;
    if policy.has_unkeyed_credentials(req) && !marked_shareable {
        return Err(NotStored::Credentials);
    }
    // A 2xx gets the cache's own ETag when it has none, so it always has a validator.
    let validator = status.is_success()
        || res.contains_key(header::ETAG)
        || res.contains_key(header::LAST_MODIFIED);
    // §5.2.2.4: no-cache responses may be stored, but are revalidated before every reuse.
    // §4.2.1: an invalid freshness directive makes the response stale.
    let ttl = if directives.no_cache || directives.invalid {
        Duration::ZERO
    } else {
        freshness(policy, &directives, status, res, now).ok_or(NotStored::NoFreshness)?
    };
    // Never served stale: §5.2.2.2, §5.2.2.8, §5.2.2.10, and §5.2.2.4 (no-cache: never
    // reused without revalidation, max-stale or not).
    let must_revalidate = directives.must_revalidate
        || directives.proxy_revalidate
        || directives.no_cache
        || (policy.shared && directives.s_maxage.is_some());
    // RFC 9111 §4.2.4: no stale response where a directive forbids it; RFC 5861 windows from
    // the response, else the builder's defaults.
    let window = |own: Option<u64>, default: Duration| {
        if must_revalidate {
            Duration::ZERO
        } else {
            own.map_or(default, Duration::from_secs)
        }
    };
    let stale_while_revalidate = window(
        directives.stale_while_revalidate,
        policy.stale_while_revalidate,
    );
    let stale_if_error = window(directives.stale_if_error, policy.stale_if_error);
    let keep = if validator {
        policy.keep_stale
    } else {
        Duration::ZERO
    }
    .max(stale_while_revalidate)
    .max(stale_if_error);
    if ttl.is_zero() && keep.is_zero() {
        return Err(if directives.no_cache {
            NotStored::NoCache
        } else if directives.invalid {
            NotStored::InvalidFreshness
        } else {
            NotStored::Expired
        });
    }
    Ok(StorePlan {
        ttl,
        keep,
        must_revalidate,
        immutable: directives.immutable,
        strip,
        stale_while_revalidate,
        stale_if_error,
        vary,
        shareable_with_credentials: marked_shareable,
        per_user: per_user_key,
    })
}

/// How long a response stays fresh from `now`: its freshness lifetime less its current age
/// (RFC 9111 §4.2). `None`: it has no freshness (shared mode, no explicit freshness and no
/// heuristic that applies), so it is not stored.
///
/// - Application mode: the scope's `cache_expiry`, lowered by the response's own lifetime.
/// - Shared mode: the response's own lifetime; without one, the configured heuristic (§4.2.2),
///   a fraction of the time since `Last-Modified`, at most `cache_expiry`.
fn freshness(
    policy: &Policy,
    directives: &Directives,
    status: StatusCode,
    res: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if !policy.shared {
        return Some(lifetime(policy.expiry, directives, res, now));
    }
    if let Some(own) = own_lifetime(directives, res, now) {
        return Some(own.saturating_sub(current_age(res, now)));
    }
    // §4.2.2: a heuristic only for statuses that are heuristically cacheable.
    let fraction = policy.heuristic.filter(|_| is_positive_cacheable(status))?;
    let last_modified = http_date(res, &header::LAST_MODIFIED)?;
    let since = http_date(res, &header::DATE)
        .unwrap_or(now)
        .duration_since(last_modified)
        .unwrap_or_default();
    let heuristic = since.mul_f32(fraction).min(policy.expiry);
    Some(heuristic.saturating_sub(current_age(res, now)))
}

/// The response's own freshness lifetime, RFC 9111 §4.2.1: `s-maxage`, then `max-age`, then
/// `Expires` minus `Date`; `None` when it has none.
fn own_lifetime(directives: &Directives, res: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(s) = directives.s_maxage.or(directives.max_age) {
        return Some(Duration::from_secs(s));
    }
    if !res.contains_key(header::EXPIRES) {
        return None;
    }
    // §5.3: an invalid Expires (e.g. "0") means already expired.
    let expires = http_date(res, &header::EXPIRES).unwrap_or(SystemTime::UNIX_EPOCH);
    let date = http_date(res, &header::DATE).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or_default())
}

/// The scope's expiry lowered by what is left of the response's own freshness: its lifetime
/// (RFC 9111 §4.2.1: `s-maxage`, then `max-age`, then `Expires` minus `Date`) minus its current
/// age (§4.2.3: the larger of the `Age` it carries and the time since its `Date`).
fn lifetime(
    expiry: Duration,
    directives: &Directives,
    res: &HeaderMap,
    now: SystemTime,
) -> Duration {
    match own_lifetime(directives, res, now) {
        Some(own) => own.saturating_sub(current_age(res, now)).min(expiry),
        None => expiry,
    }
}

/// The age of a response received at `now` (RFC 9111 §4.2.3): the larger of the `Age` it
/// carries and the time since its `Date`. Zero for a response the handler just made.
pub(crate) fn current_age(res: &HeaderMap, now: SystemTime) -> Duration {
    let age_value = res
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let apparent_age = http_date(res, &header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .unwrap_or_default();
    age_value.max(apparent_age)
}

/// Parses `Vary` into sorted, deduplicated, lowercase names. `Vary: *` and members that are
/// not header names make the response unstorable: a key that ignored them could serve the
/// response to a request it does not fit.
pub(crate) fn parse_vary(res: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
    let mut names = Vec::new();
    for line in res.get_all(header::VARY) {
        for part in line.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue; // empty list elements are allowed (RFC 9110 §5.6.1)
            }
            if part == b"*" {
                return Err(NotStored::VaryAny);
            }
            names.push(HeaderName::from_bytes(part).map_err(|_| NotStored::VaryInvalid)?);
        }
    }
    sort_names(&mut names);
    Ok(names)
}

fn sort_names(names: &mut Vec<HeaderName>) {
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Directives {
        let v = HeaderValue::from_str(s).unwrap();
        Directives::parse(std::iter::once(&v))
    }

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

    #[test]
    fn lifetime_takes_the_smallest_and_subtracts_age() {
        let mut res = HeaderMap::new();
        res.insert(header::AGE, HeaderValue::from_static("4"));
        let d = cc("max-age=10");
        let ttl = lifetime(Duration::from_secs(60), &d, &res, SystemTime::now());
        assert_eq!(ttl, Duration::from_secs(6));
        let ttl = lifetime(
            Duration::from_secs(5),
            &d,
            &HeaderMap::new(),
            SystemTime::now(),
        );
        assert_eq!(ttl, Duration::from_secs(5));
        // No freshness of its own: the scope's expiry, whatever the Date.
        let ttl = lifetime(Duration::from_secs(5), &cc(""), &res, SystemTime::now());
        assert_eq!(ttl, Duration::from_secs(5));
    }

    #[test]
    fn detail_params_name_the_same_reasons() {
        use NotStored::*;
        for r in [
            PolicyPrivate,
            Status,
            Streaming,
            TooLarge,
            SetCookie,
            NoStore,
            RequestNoStore,
            Private,
            NoCache,
            VaryAny,
            VaryInvalid,
            Credentials,
            InvalidFreshness,
            Expired,
            NoFreshness,
        ] {
            assert_eq!(r.detail_param(), format!("; detail={}", r.detail()));
        }
    }

    #[test]
    fn vary_star_and_normalisation() {
        let mut res = HeaderMap::new();
        res.append(
            header::VARY,
            HeaderValue::from_static("Accept-Language, accept"),
        );
        res.append(header::VARY, HeaderValue::from_static("accept-language"));
        let names = parse_vary(&res).unwrap();
        assert_eq!(names, vec![header::ACCEPT, header::ACCEPT_LANGUAGE]);
        res.append(header::VARY, HeaderValue::from_static("*"));
        assert_eq!(parse_vary(&res), Err(NotStored::VaryAny));
        let mut bad = HeaderMap::new();
        bad.append(header::VARY, HeaderValue::from_static("accept, a b"));
        assert_eq!(parse_vary(&bad), Err(NotStored::VaryInvalid));
    }
}
