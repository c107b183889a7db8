//! Failure handling: a broken or slow store, handler errors, hostile input and misconfiguration.
//! DESIGN "Failure": a store error is logged and the request is served as if uncached; nothing
//! in the request path panics; invalid configuration fails at build time.

mod common;

use std::{
    future::pending,
    time::{Duration, Instant},
};

use actix_response_cache::{
    Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, Coordination,
    MemoryStore, StoreError,
};
use actix_web::{
    http::{
        header::{self, HeaderValue},
        Method, StatusCode,
    },
    test::{call_service, TestRequest},
    web, HttpResponse,
};
use common::{body, cached_route, cached_service, counted, get, head, header, Calls};

/// Every operation fails.
#[derive(Clone)]
struct FailingStore;

impl CacheStore for FailingStore {
    async fn get(&self, _: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn set(&self, _: &CacheKey, _: CacheEntry) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    async fn remove(&self, _: &CacheKey) -> Result<(), StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
}

impl CollectableStore for FailingStore {
    async fn collect(&self, _: &CollectTarget) -> Result<usize, StoreError> {
        Err(StoreError::unavailable("connection refused"))
    }
    fn coordination(&self) -> Coordination<'_> {
        Coordination::InProcess
    }
}

/// Every operation hangs forever.
#[derive(Clone)]
struct HangingStore;

impl CacheStore for HangingStore {
    async fn get(&self, _: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        pending().await
    }
    async fn set(&self, _: &CacheKey, _: CacheEntry) -> Result<(), StoreError> {
        pending().await
    }
    async fn remove(&self, _: &CacheKey) -> Result<(), StoreError> {
        pending().await
    }
}

impl CollectableStore for HangingStore {
    async fn collect(&self, _: &CollectTarget) -> Result<usize, StoreError> {
        pending().await
    }
    fn coordination(&self) -> Coordination<'_> {
        Coordination::InProcess
    }
}

/// Reads work (and always miss), writes fail.
#[derive(Clone)]
struct FailingSetStore;

impl CacheStore for FailingSetStore {
    async fn get(&self, _: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        Ok(None)
    }
    async fn set(&self, _: &CacheKey, _: CacheEntry) -> Result<(), StoreError> {
        Err(StoreError::other("disk full"))
    }
    async fn remove(&self, _: &CacheKey) -> Result<(), StoreError> {
        Ok(())
    }
}

impl CollectableStore for FailingSetStore {
    async fn collect(&self, _: &CollectTarget) -> Result<usize, StoreError> {
        Ok(0)
    }
    fn coordination(&self) -> Coordination<'_> {
        Coordination::InProcess
    }
}

/// `init_service` over `$cache`, with `GET`/`PUT` `/item` counting `$calls`.
macro_rules! app {
    ($cache:expr, $calls:expr) => {
        app!($cache, $calls, "/item")
    };
    ($cache:expr, $calls:expr, $path:expr) => {
        cached_service!(
            $cache,
            web::resource($path)
                .route(counted(web::get(), &$calls, |_| {
                    HttpResponse::Ok().body("item")
                }))
                .route(counted(web::put(), &$calls, |_| {
                    HttpResponse::Ok().body("put")
                }))
        )
    };
}

// DESIGN "Failure": a store error is logged and the request is served uncached, never a 5xx.
#[actix_web::test]
async fn failing_store_serves_every_request_uncached() {
    common::init_log();
    let calls = Calls::default();
    // A path of its own: a write of `/item` in a parallel test races this test's misses, and
    // a response raced by a write carries no computed ETag.
    let app = app!(Cache::new(FailingStore), calls, "/item-uncached");
    for round in 1..=3 {
        let res = call_service(&app, get("/item-uncached").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {round}");
        assert!(
            !header(&res, header::ETAG).is_empty(),
            "the ETag needs no store"
        );
        assert_eq!(body(res).await, "item");
        assert_eq!(calls.get(), round, "a GET was answered without the handler");
    }
    let res = call_service(&app, head("/item-uncached").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK, "HEAD");
    assert_eq!(calls.get(), 4);
}

// DESIGN "Failure": conditional GETs still work without a store (304 from the fresh response).
#[actix_web::test]
async fn failing_store_still_answers_conditional_get() {
    let calls = Calls::default();
    let app = app!(Cache::new(FailingStore), calls);
    let res = call_service(&app, get("/item").to_request()).await;
    let etag = header(&res, header::ETAG);
    let req = get("/item")
        .insert_header((header::IF_NONE_MATCH, etag.as_str()))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 2);
}

// DESIGN "Failure": writes with a failing store still reach the handler; a conditional one
// fails closed (its current validator cannot be known): 503 with Retry-After, handler not run.
#[actix_web::test]
async fn failing_store_lets_writes_reach_the_handler() {
    let calls = Calls::default();
    let app = app!(Cache::new(FailingStore), calls);
    let plain = TestRequest::put()
        .uri("/item")
        .set_payload("x")
        .to_request();
    let res = call_service(&app, plain).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "put");
    let conditional = TestRequest::put()
        .uri("/item")
        .insert_header((header::IF_MATCH, "\"whatever\""))
        .to_request();
    let res = call_service(&app, conditional).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, header::RETRY_AFTER), "1");
    assert_eq!(
        actix_web::body::MessageBody::size(res.response().body()),
        actix_web::body::BodySize::Sized(0)
    );
    assert_eq!(calls.get(), 1, "a conditional write ran unjudged");
}

// `fail_open_conditional_writes`: the documented unsafe choice hands the write to the handler.
#[actix_web::test]
async fn failing_store_with_fail_open_lets_conditional_writes_through() {
    let calls = Calls::default();
    let app = app!(
        Cache::new(FailingStore).fail_open_conditional_writes(),
        calls
    );
    let conditional = TestRequest::put()
        .uri("/item")
        .insert_header((header::IF_MATCH, "\"whatever\""))
        .to_request();
    let res = call_service(&app, conditional).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        calls.get(),
        1,
        "the fail-open write did not reach the handler"
    );
}

// DESIGN "Failure" + `store_timeout`: a store that never answers costs at most the timeout per
// operation; requests are still answered.
#[actix_web::test]
async fn hanging_store_is_cut_off_by_the_store_timeout() {
    let calls = Calls::default();
    let app = app!(
        Cache::new(HangingStore)
            .store_timeout(Duration::from_millis(50))
            .invalidation_wait(Duration::from_millis(200)),
        calls
    );
    let limit = Duration::from_secs(5);

    let started = Instant::now();
    let get = call_service(&app, TestRequest::get().uri("/item").to_request());
    let res = actix_web::rt::time::timeout(limit, get)
        .await
        .expect("a GET over a hanging store was never answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "item");
    // get + set, 50 ms each, with generous slack for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "GET took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let put = call_service(&app, TestRequest::put().uri("/item").to_request());
    let res = actix_web::rt::time::timeout(limit, put)
        .await
        .expect("a PUT over a hanging store was never answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, "put");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "PUT took {:?}",
        started.elapsed()
    );
    assert_eq!(calls.get(), 2);
}

// DESIGN "Failure": a store that fails only on `set` still serves; nothing is stored.
#[actix_web::test]
async fn store_failing_on_set_still_serves() {
    let calls = Calls::default();
    let app = app!(Cache::new(FailingSetStore), calls);
    for round in 1..=2 {
        let res = call_service(&app, get("/item").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            !header(&res, "cache-status").contains("; stored"),
            "Cache-Status claims a failed set stored: {}",
            header(&res, "cache-status")
        );
        assert_eq!(body(res).await, "item");
        assert_eq!(calls.get(), round);
    }
    let res = call_service(&app, TestRequest::put().uri("/item").to_request()).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the write's marker set failed the write"
    );
}

// Routing is untouched: an unknown route stays 404 behind a Cache, for reads and writes.
#[actix_web::test]
async fn unknown_routes_stay_404() {
    let calls = Calls::default();
    let app = app!(Cache::new(MemoryStore::new(100)), calls);
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ] {
        let req = TestRequest::default()
            .method(method.clone())
            .uri("/nowhere")
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} /nowhere");
    }
    // A method the resource has no route for keeps actix's answer too.
    let res = call_service(&app, TestRequest::delete().uri("/item").to_request()).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(calls.get(), 0);
}

// A handler's error keeps its status and body, on reads and writes, and is not stored.
#[actix_web::test]
async fn handler_error_keeps_its_status() {
    let store = MemoryStore::new(100);
    let calls = Calls::default();
    let app = cached_service!(
        Cache::new(store.clone()),
        web::resource("/broken")
            .route(counted(web::get(), &calls, |_| {
                Err::<HttpResponse, _>(actix_web::error::ErrorBadRequest("nope"))
            }))
            .route(counted(web::put(), &calls, |_| {
                Err::<HttpResponse, _>(actix_web::error::ErrorConflict("taken"))
            }))
    );
    for round in 1..=2 {
        let res = call_service(&app, get("/broken").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(res).await, "nope");
        assert_eq!(calls.get(), round, "an error response was stored");
    }
    let res = call_service(&app, TestRequest::put().uri("/broken").to_request()).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(body(res).await, "taken");
    assert_eq!(
        store.len(),
        0,
        "an error response left something in the store"
    );
}

fn obs_text(bytes: &'static [u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("obs-text is a valid header value")
}

// DESIGN "Pitfalls": validators that are not UTF-8 (obs-text) or do not parse are "no match",
// never a 500 or a panic (RFC 9110 §13.1: malformed members are ignored).
#[actix_web::test]
async fn non_utf8_validators_never_cause_a_500() {
    let calls = Calls::default();
    let app = app!(Cache::new(MemoryStore::new(100)), calls);
    let junk: [&'static [u8]; 4] = [
        b"\"\xff\xfe\"",
        b"\xc3\x28",
        b"W/\"\x80",
        b"\"a\"\xff, \xfe",
    ];

    // Twice each: once on a miss (preconditions on the fresh response), once on a hit.
    for _ in 0..2 {
        for value in junk {
            for (name, want) in [
                (header::IF_NONE_MATCH, StatusCode::OK),
                (header::IF_MODIFIED_SINCE, StatusCode::OK),
                (header::IF_UNMODIFIED_SINCE, StatusCode::OK),
                // If-Match with no member that matches is false: 412 (RFC 9110 §13.1.1).
                (header::IF_MATCH, StatusCode::PRECONDITION_FAILED),
            ] {
                let req = get("/item")
                    .insert_header((name.clone(), obs_text(value)))
                    .to_request();
                let res = call_service(&app, req).await;
                assert_eq!(res.status(), want, "GET with {name}: {value:?}");
            }
        }
    }
    // On a write the stored validator is known: a junk If-Match is false, the handler not run.
    let before = calls.get();
    for value in junk {
        let req = TestRequest::put()
            .uri("/item")
            .insert_header((header::IF_MATCH, obs_text(value)))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(
            res.status(),
            StatusCode::PRECONDITION_FAILED,
            "PUT If-Match {value:?}"
        );
    }
    assert_eq!(
        calls.get(),
        before,
        "a PUT with a false If-Match reached the handler"
    );
}

// DESIGN "Key": the request values of `cache_vary` headers are keyed as bytes, whatever they hold.
#[actix_web::test]
async fn non_utf8_cache_vary_header_never_causes_a_500() {
    let calls = Calls::default();
    let app = app!(
        Cache::new(MemoryStore::new(100)).cache_vary(["x-tenant"]),
        calls
    );
    for (value, round) in [(&b"\xff\xfe"[..], 1), (b"\xff\xfe", 1), (b"\xff\xfd", 2)] {
        let req = get("/item")
            .insert_header((
                "x-tenant",
                HeaderValue::from_bytes(value).expect("obs-text"),
            ))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, "item");
        assert_eq!(calls.get(), round, "x-tenant {value:?}: wrong hit or miss");
    }
}

// RFC 9110 §13.1.2: a long If-None-Match list is evaluated member by member.
#[actix_web::test]
async fn a_2000_member_if_none_match_list_is_answered() {
    let calls = Calls::default();
    let app = app!(Cache::new(MemoryStore::new(100)), calls);
    let res = call_service(&app, get("/item").to_request()).await;
    let etag = header(&res, header::ETAG);

    let others: Vec<String> = (0..2000).map(|i| format!("W/\"tag-{i}\"")).collect();
    let miss = others.join(", ");
    let req = get("/item")
        .insert_header((header::IF_NONE_MATCH, miss.as_str()))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK, "2000 non-matching members");
    assert_eq!(body(res).await, "item");

    let hit = format!("{miss}, {etag}");
    let req = get("/item")
        .insert_header((header::IF_NONE_MATCH, hit.as_str()))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_MODIFIED,
        "the last of 2001 members matches"
    );
    assert_eq!(calls.get(), 1);
}

// The key holds the whole query, however long: a long query is served, stored and keyed exactly.
#[actix_web::test]
async fn a_very_long_query_string_is_served() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/search",
        counted(web::get(), &calls, |req| {
            let len = req.query_string().len();
            HttpResponse::Ok().body(format!("{len}"))
        })
    );
    let long = "q=".to_owned() + &"a".repeat(16 * 1024);
    let longer = format!("{long}b");
    for (query, round) in [(&long, 1), (&long, 1), (&longer, 2)] {
        let req = get(&format!("/search?{query}")).to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, query.len().to_string());
        assert_eq!(
            calls.get(),
            round,
            "queries differing in the last byte shared an entry"
        );
    }
}

// Misconfiguration fails at build time: a store that can hold nothing.
#[test]
#[should_panic(expected = "max_entries")]
fn memory_store_of_zero_entries_panics() {
    let _ = MemoryStore::new(0);
}

// Misconfiguration fails at build time: a zero expiry.
#[test]
#[should_panic(expected = "expiry")]
fn zero_cache_expiry_panics() {
    let _ = Cache::new(MemoryStore::new(1)).cache_expiry(Duration::ZERO);
}

// Misconfiguration fails at build time: a `cache_vary` name that is not a header name.
#[test]
#[should_panic(expected = "not a header name")]
fn invalid_cache_vary_name_panics() {
    let _ = Cache::new(MemoryStore::new(1)).cache_vary(["bad header"]);
}

// Misconfiguration fails at build time: a zero store timeout.
#[test]
#[should_panic(expected = "store_timeout")]
fn zero_store_timeout_panics() {
    let _ = Cache::new(MemoryStore::new(1)).store_timeout(Duration::ZERO);
}

// Misconfiguration fails at build time: a zero body limit.
#[test]
#[should_panic(expected = "max_body_size")]
fn zero_max_body_size_panics() {
    let _ = Cache::new(MemoryStore::new(1)).max_body_size(0);
}

// Misconfiguration fails at build time: a zero byte budget.
#[test]
#[should_panic(expected = "max_bytes")]
fn zero_memory_store_budget_panics() {
    let _ = MemoryStore::new(1).max_bytes(0);
}
