//! What may be stored, for how long, and whether a stored response may answer a request
//! (RFC 9111 §3, §4.2, §4.2.4).

use std::time::{Duration, SystemTime};

use actix_web::http::{
    header::{self, HeaderMap, HeaderName},
    StatusCode,
};

use crate::{
    conditional::http_date,
    directives::Directives,
    entry::StoredResponse,
    policy::{Policy, Visibility},
    request::RequestFlags,
};

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
    /// A middleware inside the cache changed the method, the path or a header the key varies
    /// on: what the handler answered is not what the key names.
    RequestChanged,
}

impl NotStored {
    /// Every reason, in the order of [`index`](Self::index).
    pub(crate) const ALL: [Self; 16] = [
        Self::PolicyPrivate,
        Self::Status,
        Self::Streaming,
        Self::TooLarge,
        Self::SetCookie,
        Self::NoStore,
        Self::RequestNoStore,
        Self::Private,
        Self::NoCache,
        Self::VaryAny,
        Self::VaryInvalid,
        Self::Credentials,
        Self::InvalidFreshness,
        Self::Expired,
        Self::NoFreshness,
        Self::RequestChanged,
    ];

    /// The reason's place in [`ALL`](Self::ALL).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

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
            Self::RequestChanged => "; detail=request-changed",
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
    let who = Admitted {
        directives,
        strip,
        vary,
        marked_shareable,
        per_user_key,
    };
    plan_lifetime(policy, status, res, now, who)
}

/// What [`storability`] found about who may be served a storable response.
struct Admitted {
    directives: Directives,
    strip: Vec<HeaderName>,
    vary: Vec<HeaderName>,
    marked_shareable: bool,
    per_user_key: bool,
}

/// How long a storable response is fresh, and how long it is kept stale (RFC 9111 §4.2,
/// §4.2.4, §4.3; RFC 5861).
fn plan_lifetime(
    policy: &Policy,
    status: StatusCode,
    res: &HeaderMap,
    now: SystemTime,
    who: Admitted,
) -> Result<StorePlan, NotStored> {
    let directives = &who.directives;
    // A 2xx gets the cache's own ETag when it has none, so it always has a validator.
    let validator = status.is_success()
        || res.contains_key(header::ETAG)
        || res.contains_key(header::LAST_MODIFIED);
    // §5.2.2.4: no-cache responses may be stored, but are revalidated before every reuse.
    // §4.2.1: an invalid freshness directive makes the response stale.
    let ttl = if directives.no_cache || directives.invalid {
        Duration::ZERO
    } else {
        freshness(policy, directives, status, res, now).ok_or(NotStored::NoFreshness)?
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
        strip: who.strip,
        stale_while_revalidate,
        stale_if_error,
        vary: who.vary,
        shareable_with_credentials: who.marked_shareable,
        per_user: who.per_user_key,
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

/// Whether a stored response of this `age` may answer a request as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Fresh, or stale where both the request and the response accept it.
    Serve,
    /// Stale: revalidate (or fetch) it.
    Stale,
    /// Fresh, but the request's directives ask for a newer one.
    Request,
}

/// The one reuse decision, RFC 9111 §4.2, §4.2.4 and §5.2.1.
pub(crate) fn reuse(
    stored: &StoredResponse,
    age: Duration,
    now: SystemTime,
    directives: &Directives,
) -> Reuse {
    let too_old = directives
        .max_age
        .is_some_and(|max| age > Duration::from_secs(max));
    if stored.is_fresh(now) {
        let remaining = stored.fresh_until.duration_since(now).unwrap_or_default();
        // §5.2.1.4 no-cache and §5.2.1.1 max-age; RFC 8246: not for a fresh immutable response.
        if (directives.no_cache || too_old) && !stored.immutable {
            return Reuse::Request;
        }
        // §5.2.1.3: min-fresh asks for at least that much freshness left.
        if directives
            .min_fresh
            .is_some_and(|min| remaining < Duration::from_secs(min))
        {
            return Reuse::Request;
        }
        return Reuse::Serve;
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
        Reuse::Serve
    } else {
        Reuse::Stale
    }
}

/// The request directives this cache honours: all of them where the policy says so, else
/// only `only-if-cached` (which cannot make the cache do more work for anyone).
pub(crate) fn request_directives(policy: &Policy, headers: &HeaderMap) -> Directives {
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

/// Whether a stored response may answer this request. RFC 9111 §3.5: a request with
/// credentials the key does not separate is answered only by a response marked shareable.
pub(crate) fn servable(policy: &Policy, flags: RequestFlags, stored: &StoredResponse) -> bool {
    stored.shareable_with_credentials
        || !policy.unkeyed_credentials(flags.authorization, flags.cookie)
}

/// RFC 9111 §4.2.3: the age the stored response had when stored plus the time it has been
/// resident here.
pub(crate) fn entry_age(
    entry: &crate::CacheEntry,
    stored: &StoredResponse,
    now: SystemTime,
) -> Duration {
    stored.initial_age + now.duration_since(entry.stored_at()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directives::cc;
    use actix_web::http::header::HeaderValue;

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
        for (i, r) in NotStored::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
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
