//! Nested `Cache`s (an app-wide one and one on a scope) with the RFC 9111 features that change
//! a request on its way in: revalidation, coalescing and background refreshes. The innermost
//! policy answers, and the outer one must neither confuse its own revalidation with the
//! client's preconditions nor hold a key the inner one needs.
//!
//! Every test uses paths of its own: flights and the race guard are process-wide.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, read_body},
    web, HttpResponse,
};
use common::{cached_service, counted, get, header, settle, slow_get, Calls, Load};

// RFC 9110 §13.1.2 / RFC 9111 §4.3.2: an outer `Cache` revalidating a stale entry (the two
// share a store) sends its own If-None-Match; the inner one must answer the client's request,
// which had no precondition, with a 200, never a 304.
#[actix_web::test]
async fn a_client_without_preconditions_never_gets_a_304_through_nested_caches() {
    let store = MemoryStore::new(100);
    let calls = Calls::default();
    let app = cached_service!(
        Cache::new(store.clone()),
        web::scope("/nested-reval")
            .wrap(Cache::new(store.clone()))
            .route(
                "/x",
                counted(web::get(), &calls, |_| {
                    HttpResponse::Ok()
                        .insert_header((header::CACHE_CONTROL, "max-age=0"))
                        .body("same")
                }),
            )
    );
    let request = || get("/nested-reval/x").to_request();
    read_body(call_service(&app, request()).await).await;
    let res = call_service(&app, request()).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a 304 the client never asked for"
    );
    assert_eq!(read_body(res).await, "same");
    assert_eq!(calls.get(), 2);
}

// With separate stores the inner `Cache` refreshes its stale entry in the background
// (RFC 5861 §3) although the outer one coalesces the same key.
#[actix_web::test]
async fn the_inner_cache_refreshes_in_the_background() {
    let calls = Calls::default();
    let c = calls.clone();
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::scope("/nested-swr")
            .wrap(Cache::new(MemoryStore::new(100)))
            .route(
                "/x",
                web::get().to(move || {
                    let n = c.hit();
                    async move {
                        HttpResponse::Ok()
                            .insert_header((
                                header::CACHE_CONTROL,
                                "max-age=0, stale-while-revalidate=60",
                            ))
                            .body(format!("v{n}"))
                    }
                }),
            )
    );
    let request = || get("/nested-swr/x").to_request();
    read_body(call_service(&app, request()).await).await;
    let res = call_service(&app, request()).await;
    assert!(header(&res, "cache-status").contains("stale-while-revalidate"));
    assert_eq!(read_body(res).await, "v1");
    settle().await;
    assert_eq!(calls.get(), 2, "the background refresh never ran");
}

// A page the inner `Cache` never stores (it sets a cookie) is not coalesced by the outer one
// either: concurrent requests run side by side.
#[actix_web::test]
async fn pages_the_inner_cache_never_stores_are_not_coalesced_outside() {
    let load = Load::default();
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::scope("/nested-cookie")
            .wrap(Cache::new(MemoryStore::new(100)))
            .route(
                "/x",
                slow_get(
                    &load,
                    Duration::from_millis(30),
                    &[("set-cookie", "s=1")],
                    "x",
                ),
            )
    );
    let request = || get("/nested-cookie/x").to_request();
    read_body(call_service(&app, request()).await).await;
    load.peak.store(0, Ordering::SeqCst);
    futures_util::future::join_all((0..4).map(|_| call_service(&app, request()))).await;
    assert_eq!(load.peak(), 4, "the requests queued behind each other");
}

// The uncacheable pass with nested `Cache`s: once a `no-store` page passed through both, its
// next requests (which the outer one may send straight on) get what the first one got.
#[actix_web::test]
async fn a_no_store_page_answers_the_same_through_nested_caches() {
    let calls = Calls::default();
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::scope("/nested-pass")
            .wrap(Cache::new(MemoryStore::new(100)))
            .route(
                "/x",
                counted(web::get(), &calls, |_| {
                    HttpResponse::Ok()
                        .insert_header((header::CACHE_CONTROL, "no-store"))
                        .body("fresh")
                }),
            )
    );
    let first = call_service(&app, get("/nested-pass/x").to_request()).await;
    let status = header(&first, "cache-status");
    assert!(status.contains("detail=no-store"), "{status}");
    assert!(first.headers().get(header::ETAG).is_none());
    for _ in 0..3 {
        let res = call_service(&app, get("/nested-pass/x").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-status"), status);
        assert!(res.headers().get(header::ETAG).is_none());
        assert_eq!(read_body(res).await, "fresh");
    }
    assert_eq!(calls.get(), 4);
}
