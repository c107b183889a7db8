//! `Cache-Status` (RFC 9211): one test per value the cache sends.
//!
//! Every test uses paths of its own: flights and the race guard are process-wide.

mod common;

use std::time::Duration;

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, TestRequest},
    web, HttpRequest, HttpResponse, Route,
};
use common::{cached_route, cached_service, get, header, req_header};

/// A GET route that answers `body` with `cache_control` (when not empty) and `Vary: Accept`.
fn route(cache_control: &'static str) -> Route {
    web::get().to(move |req: HttpRequest| async move {
        let mut res = HttpResponse::Ok();
        if !cache_control.is_empty() {
            res.insert_header((header::CACHE_CONTROL, cache_control));
        }
        res.insert_header((header::VARY, "accept"))
            .body(req_header(&req, header::ACCEPT))
    })
}

macro_rules! status_of {
    ($app:expr, $req:expr) => {{
        let res = call_service(&$app, $req.to_request()).await;
        (res.status(), header(&res, "cache-status"))
    }};
}

// RFC 9211 §2.2 `fwd=uri-miss`, §2.5 `stored`, §2.7 `ttl`; §2.1 `hit`.
#[actix_web::test]
async fn a_miss_says_stored_with_its_ttl_and_the_repeat_says_hit() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(90)),
        "/cs/basic",
        route("")
    );
    let get = || TestRequest::get().uri("/cs/basic");
    assert_eq!(
        status_of!(app, get()).1,
        "actix-response-cache; fwd=uri-miss; stored; ttl=90"
    );
    assert_eq!(status_of!(app, get()).1, "actix-response-cache; hit");
}

// RFC 9211 §2.2 `fwd=vary-miss`: the URI is stored, but not for this request's Accept.
#[actix_web::test]
async fn another_variant_is_a_vary_miss() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/cs/vary",
        route("max-age=60")
    );
    let get = |accept: &'static str| {
        TestRequest::get()
            .uri("/cs/vary")
            .insert_header((header::ACCEPT, accept))
    };
    status_of!(app, get("text/html"));
    let (_, status) = status_of!(app, get("application/json"));
    assert!(
        status.starts_with("actix-response-cache; fwd=vary-miss; stored"),
        "{status}"
    );
    assert_eq!(
        status_of!(app, get("text/html")).1,
        "actix-response-cache; hit"
    );
}

// RFC 9211 §2.2 `fwd=request`: the request's own directives sent it to the handler (shared mode).
#[actix_web::test]
async fn a_request_no_cache_is_fwd_request() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/cs/request",
        route("max-age=60")
    );
    status_of!(app, get("/cs/request"));
    let (_, status) = status_of!(
        app,
        get("/cs/request").insert_header((header::CACHE_CONTROL, "no-cache"))
    );
    assert!(
        status.starts_with("actix-response-cache; fwd=request"),
        "{status}"
    );
}

// RFC 9211 §2.2 `fwd=stale`: a stale entry without a usable window went to the handler.
#[actix_web::test]
async fn a_stale_entry_is_fwd_stale() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/cs/stale",
        route("max-age=0")
    );
    status_of!(app, get("/cs/stale"));
    let (_, status) = status_of!(app, get("/cs/stale"));
    assert!(
        status.starts_with("actix-response-cache; fwd=stale"),
        "{status}"
    );
}

// RFC 9211 §2.8 `detail`: why a response was not stored.
#[actix_web::test]
async fn a_response_that_is_not_stored_says_why() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/cs/no-store",
        route("no-store")
    );
    let (_, status) = status_of!(app, get("/cs/no-store"));
    assert_eq!(
        status,
        "actix-response-cache; fwd=uri-miss; detail=no-store"
    );
}

// RFC 9111 §5.2.1.7 with RFC 9211 §2.8: only-if-cached and nothing stored is a 504 that says so.
#[actix_web::test]
async fn only_if_cached_without_an_entry_says_so() {
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/cs/only",
        route("max-age=60")
    );
    let (status, cache_status) = status_of!(
        app,
        get("/cs/only").insert_header((header::CACHE_CONTROL, "only-if-cached"))
    );
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(cache_status, "actix-response-cache; detail=only-if-cached");
}

// RFC 9211 §2.2 `fwd=method`: a write the cache answered itself (412), with the reason.
#[actix_web::test]
async fn a_412_from_the_cache_says_fwd_method() {
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/cs/write")
            .route(route("max-age=60"))
            .route(web::put().to(HttpResponse::NoContent))
    );
    status_of!(app, get("/cs/write"));
    let (status, cache_status) = status_of!(
        app,
        TestRequest::put()
            .uri("/cs/write")
            .insert_header((header::IF_MATCH, "\"not-it\""))
    );
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        cache_status,
        "actix-response-cache; fwd=method; detail=precondition-failed"
    );
}
