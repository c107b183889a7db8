//! Invalidation, RFC 9111 §4.4: one plan and one apply for what a successful unsafe request
//! makes stale, whichever way it reached the cache.

use std::{
    rc::Rc,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    dev::ServiceResponse,
    http::{
        header::{self, HeaderValue},
        Uri,
    },
    HttpRequest,
};

use super::{backlog::Backlog, Inner, LOG};
use crate::{
    guard, key, origin, request::RequestFlags, resource, store::CollectTarget,
    store::CollectableStore, CacheKey,
};

/// The groups a write makes stale, each already recorded in the race guard.
pub(super) struct Invalidation {
    targets: Vec<CollectTarget>,
}

/// Plans the invalidation after a response to an unsafe request, `key` being the request's key
/// as it reached the cache; `None` for an error response, which invalidates nothing.
///
/// The targets: the request's group (with its query, or every query with
/// `collect_query_variants`); the group the handler was given, where a middleware inside the
/// cache rewrote the request (`NormalizePath`, say); and the same-origin URIs in `Location` and
/// `Content-Location`. Each group's write is recorded in the race guard here, before anything
/// is collected, so a miss in flight cannot store its old response afterwards.
pub(super) fn plan<St: 'static, B>(
    inner: &Inner<St>,
    key: &CacheKey,
    res: &ServiceResponse<B>,
) -> Option<Invalidation> {
    let status = res.status();
    if !(status.is_success() || status.is_redirection()) {
        return None;
    }
    let every_query = inner.policy.collect_query_variants;
    let of_key = |k: &CacheKey, every_query: bool| {
        let query = (!every_query).then(|| Arc::clone(k.query_handle()));
        CollectTarget::of_group(Arc::clone(k.resource_handle()), query)
    };
    let mut targets = vec![of_key(key, every_query)];
    let req = res.request();
    let forwarded = RequestFlags::of(req.headers()).forwarded;
    if !key::same_primary(req, key, forwarded) {
        // A middleware inside rewrote the request: what the handler changed is its resource.
        targets.push(of_key(&CacheKey::of_request(req, forwarded), every_query));
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(other) = same_origin_key(req, res.headers().get(&name)) {
            targets.push(of_key(&other, false));
        }
    }
    let mut unique: Vec<CollectTarget> = Vec::with_capacity(targets.len());
    for target in targets {
        if !unique.contains(&target) {
            guard::record_write(guard::of_store::<St>(target.resource().fingerprint()));
            unique.push(target);
        }
    }
    Some(Invalidation { targets: unique })
}

/// When a write's invalidation must have reached the store: its
/// [`invalidation_wait`](crate::Cache::invalidation_wait) from now.
pub(super) fn deadline<St>(inner: &Inner<St>) -> Instant {
    Instant::now() + inner.policy.invalidation_wait
}

/// Collects every target of the plan, retrying each until `deadline` (the write's
/// [`invalidation_wait`](crate::Cache::invalidation_wait)): once the write's response is sent,
/// no server may serve what it made stale. A target the store still does not take goes into
/// the worker's [backlog](super::backlog), which keeps its group away from the store until a
/// retry gets it there.
pub(super) async fn apply<St: CollectableStore>(
    inner: &Rc<Inner<St>>,
    plan: Invalidation,
    deadline: Instant,
) {
    for target in plan.targets {
        if !collect_until(inner, &target, deadline).await {
            Backlog::collect_later(inner, target);
        }
    }
}

/// Collects `target`, trying again after a failure until `deadline`; whether the store took it.
async fn collect_until<St: CollectableStore>(
    inner: &Inner<St>,
    target: &CollectTarget,
    deadline: Instant,
) -> bool {
    let collected = retry_until(deadline, || async {
        match inner.timed("collect", inner.store.collect(target)).await {
            Ok(n) => Ok(n),
            Err(_) => Err(()),
        }
    })
    .await;
    if let Ok(n) = collected {
        log::debug!(target: LOG, "collected {n} entries of {target:?}");
    }
    collected.is_ok()
}

/// Runs `attempt` until it succeeds or `deadline` comes, pausing 10 ms, then twice as long
/// each time up to 100 ms (a store that failed or froze answers again soon); the last failure
/// when the deadline came first.
pub(super) async fn retry_until<T, E, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(10);
    loop {
        let result = attempt().await;
        if result.is_ok() || Instant::now() + pause >= deadline {
            return result;
        }
        actix_web::rt::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The primary key of a same-origin URI in `Location` or `Content-Location`, if it is one.
fn same_origin_key(req: &HttpRequest, value: Option<&HeaderValue>) -> Option<CacheKey> {
    let uri = Uri::from_str(value?.to_str().ok()?).ok()?;
    if let Some(authority) = uri.authority() {
        let routing = resource::group_host(origin::routing_host(req));
        if resource::group_host(authority.as_str()) != routing {
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
    let origin = origin::request_origin(req);
    Some(CacheKey::for_get(&origin, path, uri.query().unwrap_or("")))
}
