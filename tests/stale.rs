//! Serving stale responses: RFC 5861 `stale-while-revalidate` and `stale-if-error`, and the
//! directives of RFC 9111 §4.2.4 that forbid them.
//!
//! Every test uses paths of its own: flights and the race guard are process-wide.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, read_body},
    web, HttpResponse, Route,
};
use common::{cached_route, get, header, settle, Calls};

/// A resource whose representation is `v<N>` (N counts the calls) and that fails with `503`
/// while `failing` is set.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    failing: Arc<AtomicBool>,
    version: Arc<AtomicUsize>,
}

impl Origin {
    fn route(&self, cache_control: &'static str) -> Route {
        let origin = self.clone();
        web::get().to(move || {
            let origin = origin.clone();
            async move {
                origin.calls.hit();
                if origin.failing.load(Ordering::SeqCst) {
                    return HttpResponse::ServiceUnavailable().body("down");
                }
                let v = origin.version.fetch_add(1, Ordering::SeqCst) + 1;
                HttpResponse::Ok()
                    .insert_header((header::CACHE_CONTROL, cache_control))
                    .body(format!("v{v}"))
            }
        })
    }
}

macro_rules! get {
    ($app:expr, $path:expr) => {{
        let res = call_service(&$app, get($path).to_request()).await;
        let status = res.status();
        let cache_status = header(&res, "cache-status");
        let body = read_body(res).await;
        (
            status,
            cache_status,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }};
}

// RFC 5861 §3: within the window a stale response is served at once, and the handler is called
// once, in the background, to refresh it.
#[actix_web::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    common::init_log();
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/swr/basic",
        origin.route("max-age=0, stale-while-revalidate=60")
    );
    assert_eq!(get!(app, "/swr/basic").2, "v1");

    let (status, cache_status, body) = get!(app, "/swr/basic");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "v1"),
        "stale, at once"
    );
    assert_eq!(
        cache_status,
        "actix-response-cache; hit; detail=stale-while-revalidate"
    );
    settle().await;
    assert_eq!(origin.calls.get(), 2, "the background refresh did not run");

    // The refreshed representation is what the next request gets.
    assert_eq!(get!(app, "/swr/basic").2, "v2");
}

// RFC 5861 §3 ("revalidate it once"): concurrent requests in the window start one refresh.
#[actix_web::test]
async fn stale_while_revalidate_refreshes_once_for_many_requests() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/swr/once",
        origin.route("max-age=0, stale-while-revalidate=60")
    );
    get!(app, "/swr/once");
    // Responses held at once: the refresh waits until the first one's body is done.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(call_service(&app, get("/swr/once").to_request()).await);
    }
    assert_eq!(origin.calls.get(), 1, "no request may wait for the handler");
    for res in held {
        assert_eq!(read_body(res).await, "v1");
    }
    settle().await;
    assert_eq!(origin.calls.get(), 2, "exactly one background refresh");
}

// The builder's default window applies to responses without the directive.
#[actix_web::test]
async fn stale_while_revalidate_default_from_the_builder() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).stale_while_revalidate(Duration::from_secs(60)),
        "/swr/default",
        origin.route("max-age=0")
    );
    get!(app, "/swr/default");
    let (_, cache_status, body) = get!(app, "/swr/default");
    assert_eq!(body, "v1");
    assert!(
        cache_status.contains("stale-while-revalidate"),
        "{cache_status}"
    );
}

// RFC 9111 §4.2.4: must-revalidate forbids serving stale, stale-while-revalidate included.
#[actix_web::test]
async fn must_revalidate_forbids_stale_while_revalidate() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/swr/must",
        origin.route("max-age=0, must-revalidate, stale-while-revalidate=60")
    );
    get!(app, "/swr/must");
    let (_, cache_status, body) = get!(app, "/swr/must");
    assert_eq!(
        body, "v2",
        "a stale response was served despite must-revalidate"
    );
    assert!(cache_status.contains("fwd=stale"), "{cache_status}");
    assert_eq!(origin.calls.get(), 2);
}

// A request's no-cache wants a validated response: no stale-while-revalidate for it (shared
// mode, where request directives are honoured).
#[actix_web::test]
async fn request_no_cache_is_not_answered_stale() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/swr/no-cache",
        origin.route("max-age=0, stale-while-revalidate=60")
    );
    get!(app, "/swr/no-cache");
    let res = call_service(
        &app,
        get("/swr/no-cache")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .to_request(),
    )
    .await;
    assert_eq!(read_body(res).await, "v2");
    assert_eq!(origin.calls.get(), 2);
}

// RFC 5861 §4: when the handler answers 503, a stale response within the window is served.
#[actix_web::test]
async fn stale_if_error_serves_stale_when_the_handler_fails() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/sie/basic",
        origin.route("max-age=0, stale-if-error=60")
    );
    get!(app, "/sie/basic");
    origin.failing.store(true, Ordering::SeqCst);
    let (status, cache_status, body) = get!(app, "/sie/basic");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert_eq!(
        cache_status,
        "actix-response-cache; fwd=stale; fwd-status=503; detail=stale-if-error"
    );
    assert_eq!(origin.calls.get(), 2, "the handler is asked first");

    // Once the handler answers again, its response replaces the stale one.
    origin.failing.store(false, Ordering::SeqCst);
    assert_eq!(get!(app, "/sie/basic").2, "v2");
}

// RFC 5861 §4 with the client's precondition: the stale response answers it as it would
// have while fresh (304 for a matching If-None-Match).
#[actix_web::test]
async fn stale_if_error_honours_the_clients_preconditions() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/sie/conditional",
        origin.route("max-age=0, stale-if-error=60")
    );
    let res = call_service(&app, get("/sie/conditional").to_request()).await;
    let etag = header(&res, header::ETAG);
    origin.failing.store(true, Ordering::SeqCst);
    let res = call_service(
        &app,
        get("/sie/conditional")
            .insert_header((header::IF_NONE_MATCH, etag))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

// Outside the window (here: none), the handler's error passes through.
#[actix_web::test]
async fn errors_pass_through_without_stale_if_error() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/sie/none",
        origin.route("max-age=0")
    );
    get!(app, "/sie/none");
    origin.failing.store(true, Ordering::SeqCst);
    let (status, _, body) = get!(app, "/sie/none");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    );
}

// RFC 9111 §4.2.4: must-revalidate forbids stale-if-error too.
#[actix_web::test]
async fn must_revalidate_forbids_stale_if_error() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/sie/must",
        origin.route("max-age=0, must-revalidate, stale-if-error=60")
    );
    get!(app, "/sie/must");
    origin.failing.store(true, Ordering::SeqCst);
    assert_eq!(get!(app, "/sie/must").0, StatusCode::SERVICE_UNAVAILABLE);
}

// The builder's default window applies to responses without the directive.
#[actix_web::test]
async fn stale_if_error_default_from_the_builder() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).stale_if_error(Duration::from_secs(60)),
        "/sie/default",
        origin.route("max-age=0")
    );
    get!(app, "/sie/default");
    origin.failing.store(true, Ordering::SeqCst);
    let (status, _, body) = get!(app, "/sie/default");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
}

// A client slow to read its stale-while-revalidate response must not hold up requests that
// need the handler (here a `no-cache` request, shared mode): the refresh joins the key's
// coalescing only once that response is done. (A liveness check: without it, the request
// waits out the 30 s coalescing bound.)
#[actix_web::test]
async fn a_held_stale_response_does_not_hold_up_other_requests() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100))
            .shared()
            .coalesce_wait(Duration::from_secs(30)),
        "/swr/held",
        origin.route("max-age=0, stale-while-revalidate=60")
    );
    get!(app, "/swr/held");
    let held = call_service(&app, get("/swr/held").to_request()).await;
    let other = call_service(
        &app,
        get("/swr/held")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .to_request(),
    );
    let res = actix_web::rt::time::timeout(Duration::from_secs(5), other)
        .await
        .expect("a no-cache request waited for a held stale response");
    assert_eq!(read_body(res).await, "v2");
    drop(held);
}

// Shared mode: the response's own stale-if-error and stale-while-revalidate apply the same way.
#[actix_web::test]
async fn shared_mode_serves_stale_within_the_rfc_5861_windows() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/stale/shared",
        origin.route("max-age=0, stale-if-error=60, stale-while-revalidate=60")
    );
    get!(app, "/stale/shared");
    let (_, cache_status, body) = get!(app, "/stale/shared");
    assert_eq!(body, "v1");
    assert!(
        cache_status.contains("stale-while-revalidate"),
        "{cache_status}"
    );
    settle().await;
    assert_eq!(origin.calls.get(), 2);
}
