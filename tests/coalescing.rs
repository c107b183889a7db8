//! Request coalescing (collapsed forwarding): concurrent misses for one key call the handler
//! once, and the others are answered from what it stored (RFC 9211 §2.6, `collapsed`).
//!
//! Every test uses paths of its own: the flights and the "not storable" marks are process-wide.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, read_body},
    Route,
};
use common::{cached_route, get, header, slow_get, Load};
use futures_util::future::join_all;

/// A GET route that takes `delay`, counts itself, and answers with `headers`.
fn slow(load: &Load, delay: Duration, headers: &'static [(&'static str, &'static str)]) -> Route {
    slow_get(load, delay, headers, "representation")
}

/// Sends `n` GETs of `path` at once (with `extra` headers) and returns their statuses,
/// `Cache-Status` values and bodies.
macro_rules! burst {
    ($app:expr, $path:expr, $n:expr, $extra:expr) => {{
        let requests = (0..$n).map(|_| {
            let mut req = get($path);
            for &(name, value) in $extra {
                req = req.insert_header((name, value));
            }
            call_service(&$app, req.to_request())
        });
        let mut out = Vec::new();
        for res in join_all(requests).await {
            let status = res.status();
            let cache_status = header(&res, "cache-status");
            let body = read_body(res).await;
            out.push((status, cache_status, body));
        }
        out
    }};
}

const NONE: &[(&str, &str)] = &[];

// RFC 9211 §2.6 (collapsed): 64 concurrent cold requests call the handler exactly once; the
// other 63 are answered from the stored response.
#[actix_web::test]
async fn concurrent_cold_misses_call_the_handler_once() {
    common::init_log();
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/cold",
        slow(&load, Duration::from_millis(50), NONE)
    );
    let answers = burst!(app, "/coalesce/cold", 64, NONE);
    assert_eq!(load.calls.get(), 1, "the handler ran more than once");
    assert!(answers
        .iter()
        .all(|(s, _, b)| *s == StatusCode::OK && b == "representation"));
    let collapsed = answers
        .iter()
        .filter(|(_, cs, _)| cs == "actix-response-cache; fwd=uri-miss; collapsed")
        .count();
    let stored = answers
        .iter()
        .filter(|(_, cs, _)| cs == "actix-response-cache; fwd=uri-miss; stored; ttl=60")
        .count();
    assert_eq!((stored, collapsed), (1, 63), "{answers:?}");
}

// When the leader's response cannot be stored (here: it sets a cookie), the waiters go to the
// handler themselves, and the key is not coalesced for a while after: a second burst runs
// side by side instead of queueing.
#[actix_web::test]
async fn responses_that_are_not_stored_are_not_coalesced() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/cookie",
        slow(
            &load,
            Duration::from_millis(30),
            &[("set-cookie", "session=abc")],
        )
    );
    let first = burst!(app, "/coalesce/cookie", 8, NONE);
    assert_eq!(
        load.calls.get(),
        8,
        "every request must get its own response"
    );
    assert!(first.iter().all(|(s, cs, _)| *s == StatusCode::OK
        && cs.contains("detail=set-cookie")
        && !cs.contains("collapsed")));

    load.peak.store(0, Ordering::SeqCst);
    burst!(app, "/coalesce/cookie", 8, NONE);
    assert_eq!(load.calls.get(), 16);
    assert_eq!(
        load.peak(),
        8,
        "requests for a key whose responses are not stored must not queue behind each other"
    );
}

// `private` responses are not stored, so they are not shared by coalescing either.
#[actix_web::test]
async fn private_responses_are_not_shared_by_coalescing() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/private",
        slow(
            &load,
            Duration::from_millis(30),
            &[("cache-control", "private, max-age=60")],
        )
    );
    let answers = burst!(app, "/coalesce/private", 8, NONE);
    assert_eq!(load.calls.get(), 8);
    assert!(answers.iter().all(|(_, cs, _)| !cs.contains("collapsed")));
}

// The wait is bounded: when the leader takes longer than `coalesce_wait`, the others go to
// the handler themselves.
#[actix_web::test]
async fn a_slow_leader_does_not_hold_the_others_past_the_bound() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).coalesce_wait(Duration::from_millis(20)),
        "/coalesce/slow-leader",
        slow(&load, Duration::from_millis(400), NONE)
    );
    let answers = burst!(app, "/coalesce/slow-leader", 4, NONE);
    assert_eq!(
        load.calls.get(),
        4,
        "the waiters must not wait past the bound"
    );
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::OK));
}

// Requests with credentials the key does not separate are never answered from shared entries,
// so they do not wait for another request's response.
#[actix_web::test]
async fn requests_with_credentials_are_not_coalesced() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/auth",
        slow(&load, Duration::from_millis(30), NONE)
    );
    burst!(
        app,
        "/coalesce/auth",
        6,
        &[(header::AUTHORIZATION.as_str(), "Bearer a")]
    );
    assert_eq!(load.calls.get(), 6);
    assert_eq!(
        load.peak(),
        6,
        "requests with credentials waited for each other"
    );
}

// `coalesce_wait(Duration::ZERO)` turns coalescing off.
#[actix_web::test]
async fn coalescing_can_be_turned_off() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).coalesce_wait(Duration::ZERO),
        "/coalesce/off",
        slow(&load, Duration::from_millis(30), NONE)
    );
    burst!(app, "/coalesce/off", 5, NONE);
    assert_eq!(load.calls.get(), 5);
    assert_eq!(load.peak(), 5);
}

// Different keys never wait for each other.
#[actix_web::test]
async fn different_keys_are_not_coalesced() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/keys/{id}",
        slow(&load, Duration::from_millis(30), NONE)
    );
    let requests =
        (0..5).map(|i| call_service(&app, get(&format!("/coalesce/keys/{i}")).to_request()));
    join_all(requests).await;
    assert_eq!(load.calls.get(), 5);
    assert_eq!(load.peak(), 5);
}

// Only reasons in the response turn coalescing off for a key: a request's own `no-store`
// (RFC 9111 §5.2.1.5) does not, so the burst after it is still coalesced.
#[actix_web::test]
async fn a_request_no_store_does_not_turn_coalescing_off() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/coalesce/request-no-store",
        slow(&load, Duration::from_millis(30), NONE)
    );
    burst!(
        app,
        "/coalesce/request-no-store",
        1,
        &[(header::CACHE_CONTROL.as_str(), "no-store")]
    );
    burst!(app, "/coalesce/request-no-store", 8, NONE);
    assert_eq!(
        load.calls.get(),
        2,
        "the burst after a no-store request was not coalesced"
    );
}

// Shared mode coalesces the same way (RFC 9111 freshness from the response's own headers).
#[actix_web::test]
async fn shared_mode_coalesces_concurrent_misses() {
    let load = Load::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/coalesce/shared",
        slow(
            &load,
            Duration::from_millis(30),
            &[("cache-control", "max-age=60")],
        )
    );
    let answers = burst!(app, "/coalesce/shared", 16, NONE);
    assert_eq!(load.calls.get(), 1);
    assert_eq!(
        answers
            .iter()
            .filter(|(_, cs, _)| cs.ends_with("collapsed"))
            .count(),
        15
    );
}
