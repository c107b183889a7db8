//! What the `Cache` middleware stores, for how long, and what it adds to responses:
//! RFC 9111 §3 (storing), §4.2 (freshness), §5.2 (Cache-Control), RFC 9110 §8.8.3 (ETag),
//! RFC 9211 (Cache-Status).

mod common;

use std::time::{Duration, SystemTime};

use actix_response_cache::{Cache, MemoryStore, Visibility};
use actix_web::{
    body::BodySize,
    http::{header, StatusCode},
    rt::time::sleep,
    test::{call_service, init_service, read_body, TestRequest},
    web::{self, Bytes},
    App, HttpResponse, Route,
};
use common::{
    body_size, cached_route, counted_get, etag_of, get, head, header, http_date, with_headers,
    Calls,
};

const BODY: &str = "stored body";

/// A `GET` route that counts its calls and answers `200 BODY` with the given extra headers.
fn counted(calls: &Calls, headers: &'static [(&'static str, &'static str)]) -> Route {
    counted_get(calls, headers, BODY)
}

/// A `GET` route that counts its calls and answers with the request's credentials echoed.
fn echo_user(calls: &Calls, headers: &'static [(&'static str, &'static str)]) -> Route {
    common::counted(web::get(), calls, move |req| {
        let user = [header::AUTHORIZATION, header::COOKIE]
            .iter()
            .filter_map(|n| req.headers().get(n))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("+");
        with_headers(HttpResponse::Ok(), headers).body(format!("hello {user}"))
    })
}

/// Sends `n` plain GETs of `path` and returns the last response.
macro_rules! get_n {
    ($app:expr, $path:expr, $n:expr) => {{
        let mut last = None;
        for _ in 0..$n {
            last = Some(call_service(&$app, get($path).to_request()).await);
        }
        last.expect("at least one request")
    }};
}

// RFC 9111 §3, §5.1 (Age), RFC 9211 (Cache-Status): a second GET is served from the store.
#[actix_web::test]
async fn second_get_is_a_hit_with_age_and_cache_status() {
    common::init_log();
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/hit",
        counted(&calls, &[("content-type", "text/plain")])
    );

    let first = call_service(&app, get("/hit").to_request()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(
        !first.headers().contains_key(header::AGE),
        "a miss has no Age"
    );
    let status = header(&first, "cache-status");
    assert!(status.starts_with("actix-response-cache;"), "{status}");
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{status}"
    );
    let tag = header(&first, "etag");
    assert_eq!(read_body(first).await, BODY.as_bytes());
    assert_eq!(store.len(), 1);

    let second = call_service(&app, get("/hit").to_request()).await;
    assert_eq!(second.status(), StatusCode::OK);
    let age = header(&second, "age");
    assert!(age.parse::<u64>().is_ok(), "Age: {age:?}");
    assert!(header(&second, "cache-status").contains("hit"));
    assert_eq!(header(&second, "etag"), tag);
    assert_eq!(header(&second, "content-type"), "text/plain");
    assert_eq!(read_body(second).await, BODY.as_bytes());
    assert_eq!(calls.get(), 1, "the second GET did not reach the handler");
}

// RFC 9211 §2: the cache's name in Cache-Status is configurable, and the header can be off.
#[actix_web::test]
async fn cache_status_can_be_renamed_or_turned_off() {
    let calls = Calls::default();
    let app = init_service(
        App::new()
            .service(
                web::scope("/named")
                    .wrap(Cache::new(MemoryStore::new(10)).cache_status_name("edge-1"))
                    .route("", counted(&calls, &[])),
            )
            .service(
                web::scope("/silent")
                    .wrap(Cache::new(MemoryStore::new(10)).cache_status(false))
                    .route("", counted(&calls, &[])),
            ),
    )
    .await;
    let res = get_n!(app, "/named", 1);
    assert!(header(&res, "cache-status").starts_with("edge-1; fwd=uri-miss"));
    let res = get_n!(app, "/named", 1);
    assert_eq!(header(&res, "cache-status"), "edge-1; hit");

    let res = get_n!(app, "/silent", 2);
    assert!(!res.headers().contains_key("cache-status"));
    assert!(res.headers().contains_key(header::AGE), "still a hit");
    assert_eq!(calls.get(), 2);
}

/// Asserts that a route answering with `headers` is not stored: the handler runs every time.
async fn assert_not_stored(path: &str, headers: &'static [(&'static str, &'static str)]) {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), path, counted(&calls, headers));
    let res = get_n!(app, path, 2);
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !header(&res, "cache-status").contains("stored"),
        "{headers:?}"
    );
    // The handler's own directives are passed on unchanged.
    for &(name, value) in headers {
        assert_eq!(header(&res, name), value);
    }
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(
        calls.get(),
        2,
        "{headers:?}: the second GET must reach the handler"
    );
    assert_eq!(store.len(), 0);
}

// RFC 9111 §3 / RFC 6265 §8: a shared cache does not store a response that sets a cookie.
#[actix_web::test]
async fn response_with_set_cookie_is_not_stored() {
    assert_not_stored("/set-cookie", &[("set-cookie", "session=abc")]).await;
}

// RFC 9111 §5.2.2.5: `no-store` responses are not stored.
#[actix_web::test]
async fn response_no_store_is_not_stored() {
    assert_not_stored("/no-store", &[("cache-control", "no-store")]).await;
}

// RFC 9111 §5.2.2.7: a shared cache does not store `private` responses.
#[actix_web::test]
async fn response_private_is_not_stored() {
    assert_not_stored("/private", &[("cache-control", "private, max-age=60")]).await;
}

/// Asserts that a route answering with `headers` is stored stale at once: kept for
/// revalidation, but every GET reaches the handler (RFC 9111 §4.2.4, §4.3).
async fn assert_stale_at_once(path: &str, headers: &'static [(&'static str, &'static str)]) {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), path, counted(&calls, headers));
    for n in 1..=2 {
        let res = get_n!(app, path, 1);
        assert_eq!(res.status(), StatusCode::OK);
        if n == 2 {
            assert!(
                header(&res, "cache-status").contains("fwd=stale"),
                "{headers:?}: {}",
                header(&res, "cache-status")
            );
        }
        for &(name, value) in headers {
            assert_eq!(header(&res, name), value);
        }
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(
        calls.get(),
        2,
        "{headers:?}: the second GET must reach the handler"
    );
}

// RFC 9111 §5.2.2.4: `no-cache` responses may be stored, but are revalidated on every use.
#[actix_web::test]
async fn response_no_cache_is_revalidated_on_every_use() {
    assert_stale_at_once("/no-cache", &[("cache-control", "no-cache")]).await;
}

// RFC 9110 §12.5.5: `Vary: *` can never be matched by a later request.
#[actix_web::test]
async fn response_vary_star_is_not_stored() {
    assert_not_stored("/vary-star", &[("vary", "accept, *")]).await;
}

// RFC 9111 §5.3: an `Expires` in the past means the response is already stale: kept only
// for revalidation, never served as it is.
#[actix_web::test]
async fn expires_in_the_past_is_never_served_as_it_is() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let past = http_date(SystemTime::now() - Duration::from_secs(3600));
    let route = common::counted(web::get(), &calls, move |_| {
        HttpResponse::Ok()
            .insert_header((header::EXPIRES, past.clone()))
            .body(BODY)
    });
    let app = cached_route!(Cache::new(store.clone()), "/expired", route);
    let res = get_n!(app, "/expired", 2);
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §4.2.3: the age of a response includes its apparent age (now − Date), so an
// `Expires` one hour after a `Date` two hours ago is already stale.
#[actix_web::test]
async fn expires_in_the_past_with_an_older_date_is_never_served_as_it_is() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let now = SystemTime::now();
    let (date, expires) = (
        http_date(now - Duration::from_secs(7200)),
        http_date(now - Duration::from_secs(3600)),
    );
    let route = common::counted(web::get(), &calls, move |_| {
        HttpResponse::Ok()
            .insert_header((header::DATE, date.clone()))
            .insert_header((header::EXPIRES, expires.clone()))
            .body(BODY)
    });
    let app = cached_route!(Cache::new(store.clone()), "/expired-dated", route);
    let res = get_n!(app, "/expired-dated", 2);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        calls.get(),
        2,
        "an already-expired response must not be served from the store"
    );
    assert!(header(&res, "cache-status").contains("fwd=stale"));
}

// RFC 9111 §5.3: an invalid `Expires` (e.g. "0") means already expired.
#[actix_web::test]
async fn invalid_expires_is_stale_at_once() {
    assert_stale_at_once("/expires-zero", &[("expires", "0")]).await;
}

// RFC 9111 §5.2.1.5: a request's `no-store` forbids storing its response.
#[actix_web::test]
async fn request_no_store_is_not_stored() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/req-no-store",
        counted(&calls, &[])
    );
    let res = call_service(
        &app,
        get("/req-no-store")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("request-no-store"));
    assert_eq!(store.len(), 0);

    // Not stored: the next plain GET is a miss (and is stored), the one after it a hit.
    get_n!(app, "/req-no-store", 1);
    assert_eq!(calls.get(), 2);
    let res = get_n!(app, "/req-no-store", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §3.5: a shared cache does not store responses to requests with Authorization.
#[actix_web::test]
async fn request_with_authorization_is_not_stored_by_default() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/auth", echo_user(&calls, &[]));
    for user in ["Bearer alice", "Bearer bob"] {
        let res = call_service(
            &app,
            get("/auth")
                .insert_header((header::AUTHORIZATION, user))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(read_body(res).await, format!("hello {user}").as_bytes());
    }
    assert_eq!(calls.get(), 2);
    assert_eq!(store.len(), 0);
}

// RFC 9111 §3.5 (applied to Cookie by this crate's documented policy): not stored by default.
#[actix_web::test]
async fn request_with_cookie_is_not_stored_by_default() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/cookie", echo_user(&calls, &[]));
    for user in ["id=alice", "id=bob"] {
        let res = call_service(
            &app,
            get("/cookie")
                .insert_header((header::COOKIE, user))
                .to_request(),
        )
        .await;
        assert_eq!(read_body(res).await, format!("hello {user}").as_bytes());
    }
    assert_eq!(calls.get(), 2);
    assert_eq!(store.len(), 0);
}

// RFC 9111 §3.5: a stored response is not used for a request with credentials unless marked.
#[actix_web::test]
async fn request_with_credentials_does_not_get_the_shared_entry() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/shared",
        echo_user(&calls, &[])
    );
    let res = get_n!(app, "/shared", 2);
    assert_eq!(read_body(res).await, "hello ".as_bytes());
    assert_eq!(calls.get(), 1);

    for (name, value) in [
        (header::AUTHORIZATION, "Bearer carol"),
        (header::COOKIE, "id=carol"),
    ] {
        let res = call_service(
            &app,
            get("/shared").insert_header((name, value)).to_request(),
        )
        .await;
        assert!(header(&res, "cache-status").contains("fwd=bypass"));
        assert_eq!(read_body(res).await, format!("hello {value}").as_bytes());
    }
    assert_eq!(calls.get(), 3);

    // The shared entry is still there, untouched by the personal responses.
    let res = get_n!(app, "/shared", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(read_body(res).await, "hello ".as_bytes());
    assert_eq!(calls.get(), 3);
}

// RFC 9111 §3.5: with Visibility::Public every response is shareable, credentials or not.
#[actix_web::test]
async fn visibility_public_stores_and_shares_requests_with_credentials() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).visibility(Visibility::Public),
        "/public-policy",
        counted(&calls, &[])
    );
    for (name, value) in [
        (header::AUTHORIZATION, "Bearer alice"),
        (header::AUTHORIZATION, "Bearer bob"),
        (header::COOKIE, "id=carol"),
    ] {
        let res = call_service(
            &app,
            get("/public-policy")
                .insert_header((name, value))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-control"), "public, max-age=60");
    }
    let res = get_n!(app, "/public-policy", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §3.5: a response marked `public` may be stored for a request with Authorization.
#[actix_web::test]
async fn response_public_is_stored_for_requests_with_credentials() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/public-response",
        counted(&calls, &[("cache-control", "public, max-age=60")])
    );
    for user in ["Bearer alice", "Bearer bob"] {
        let res = call_service(
            &app,
            get("/public-response")
                .insert_header((header::AUTHORIZATION, user))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-control"), "public, max-age=60");
    }
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §5.2.2.7: `private` responses are for one user: stored per user when the key is.
#[actix_web::test]
async fn private_response_is_stored_per_user_with_cache_vary_authorization() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).cache_vary(["authorization"]),
        "/per-user",
        echo_user(&calls, &[("cache-control", "private, max-age=60")])
    );
    let request = |user: &str| {
        get("/per-user")
            .insert_header((header::AUTHORIZATION, user))
            .to_request()
    };
    for (user, expected_calls) in [
        ("Bearer alice", 1),
        ("Bearer alice", 1),
        ("Bearer bob", 2),
        ("Bearer bob", 2),
        ("Bearer alice", 2),
    ] {
        let res = call_service(&app, request(user)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-control"), "private, max-age=60");
        assert_eq!(read_body(res).await, format!("hello {user}").as_bytes());
        assert_eq!(calls.get(), expected_calls, "after {user}");
    }
    // One variant per user, plus the marker at the primary key that names the varying header.
    assert_eq!(store.len(), 3);

    // Without credentials the key is not per user: the private response is not stored.
    get_n!(app, "/per-user", 2);
    assert_eq!(calls.get(), 4);
}

// RFC 9111 §5.2.2.7 / RFC 9110 §13: Visibility::Private stores nothing, yet validators and 304
// still work, and the response is marked `private, no-cache` when the handler set no policy.
#[actix_web::test]
async fn visibility_private_stores_nothing_but_sends_etag_and_304() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()).visibility(Visibility::Private))
            .route("/private-policy", counted(&calls, &[]))
            .route(
                "/private-own",
                counted(&calls, &[("cache-control", "max-age=5")]),
            ),
    )
    .await;
    let res = get_n!(app, "/private-policy", 2);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "cache-control"), "private, no-cache");
    let tag = header(&res, "etag");
    assert_eq!(tag, etag_of(BODY.as_bytes()));
    assert_eq!(calls.get(), 2, "nothing is stored");

    let res = call_service(
        &app,
        get("/private-policy")
            .insert_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 3);

    // A handler's own Cache-Control is left alone.
    let res = get_n!(app, "/private-own", 1);
    assert_eq!(header(&res, "cache-control"), "max-age=5");
    assert_eq!(store.len(), 0);
}

// RFC 9111 §5.2.2.7: under Visibility::Private, responses the cache does not buffer (streams,
// large bodies) are marked `private, no-cache` too, so no downstream cache stores them.
#[actix_web::test]
async fn visibility_private_marks_unbuffered_responses_private() {
    let app = init_service(
        App::new()
            .wrap(
                Cache::new(MemoryStore::new(100))
                    .visibility(Visibility::Private)
                    .max_body_size(16),
            )
            .route(
                "/private-stream",
                web::get().to(|| async {
                    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"chunk"))];
                    HttpResponse::Ok().streaming(futures_util::stream::iter(chunks))
                }),
            )
            .route(
                "/private-large",
                web::get().to(|| async { HttpResponse::Ok().body(vec![b'z'; 17]) }),
            ),
    )
    .await;
    for path in ["/private-stream", "/private-large"] {
        let res = get_n!(app, path, 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-control"), "private, no-cache", "{path}");
    }
}

// RFC 9111 §4.2.1: the response's max-age lowers the configured expiry.
#[actix_web::test]
async fn response_max_age_lowers_cache_expiry() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(600)),
        "/short",
        counted(&calls, &[("cache-control", "max-age=1")])
    );
    let res = get_n!(app, "/short", 2);
    assert_eq!(header(&res, "cache-control"), "max-age=1");
    assert_eq!(calls.get(), 1);

    sleep(Duration::from_millis(1100)).await;
    let res = get_n!(app, "/short", 1);
    assert!(!header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 2, "the entry expired after its max-age");
}

// RFC 9111 §4.2.1: the configured expiry bounds a longer max-age, which is left unchanged.
#[actix_web::test]
async fn cache_expiry_bounds_a_longer_response_max_age() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(1)),
        "/long",
        counted(&calls, &[("cache-control", "max-age=600")])
    );
    let res = get_n!(app, "/long", 2);
    assert_eq!(header(&res, "cache-control"), "max-age=600");
    assert_eq!(calls.get(), 1);

    sleep(Duration::from_millis(1100)).await;
    get_n!(app, "/long", 1);
    assert_eq!(calls.get(), 2, "the entry expired after cache_expiry");
}

// RFC 9111 §5.2.2.1: the cache states its own freshness only where the handler said nothing.
#[actix_web::test]
async fn max_age_is_added_only_when_the_handler_set_no_cache_control() {
    let calls = Calls::default();
    let app = init_service(
        App::new()
            .service(
                web::scope("/default")
                    .wrap(Cache::new(MemoryStore::new(100)))
                    .route("", counted(&calls, &[])),
            )
            .service(
                web::scope("/thirty")
                    .wrap(Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(30)))
                    .route("", counted(&calls, &[])),
            ),
    )
    .await;
    for (path, expected) in [("/default", "max-age=60"), ("/thirty", "max-age=30")] {
        let miss = get_n!(app, path, 1);
        assert_eq!(miss.headers().get_all(header::CACHE_CONTROL).count(), 1);
        assert_eq!(header(&miss, "cache-control"), expected);
        let hit = get_n!(app, path, 1);
        assert!(header(&hit, "cache-status").contains("hit"));
        assert_eq!(header(&hit, "cache-control"), expected);
    }
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2: a cache never rewrites the origin's Cache-Control directives.
#[actix_web::test]
async fn handler_cache_control_is_never_changed() {
    let calls = Calls::default();
    let app = init_service(
        App::new()
            .wrap(
                Cache::new(MemoryStore::new(100))
                    .visibility(Visibility::Public)
                    .cache_expiry(Duration::from_secs(10)),
            )
            .route(
                "/cc-short",
                counted(&calls, &[("cache-control", "max-age=5")]),
            )
            .route(
                "/cc-long",
                counted(&calls, &[("cache-control", "max-age=600")]),
            )
            .route(
                "/cc-revalidate",
                counted(&calls, &[("cache-control", "must-revalidate")]),
            )
            .route(
                "/cc-no-store",
                counted(&calls, &[("cache-control", "no-store")]),
            )
            .route(
                "/cc-two-lines",
                counted(
                    &calls,
                    &[
                        ("cache-control", "max-age=5"),
                        ("cache-control", "stale-if-error=9"),
                    ],
                ),
            ),
    )
    .await;
    for (path, expected) in [
        ("/cc-short", vec!["max-age=5"]),
        ("/cc-long", vec!["max-age=600"]),
        ("/cc-revalidate", vec!["must-revalidate"]),
        ("/cc-no-store", vec!["no-store"]),
        ("/cc-two-lines", vec!["max-age=5", "stale-if-error=9"]),
    ] {
        // The miss, then (for the stored ones) the hit.
        for _ in 0..2 {
            let res = get_n!(app, path, 1);
            let values: Vec<&str> = res
                .headers()
                .get_all(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap_or("<opaque>"))
                .collect();
            assert_eq!(values, expected, "{path}");
        }
    }
    // Every route stored but no-store: 5 misses plus one more for no-store.
    assert_eq!(calls.get(), 6);
}

// RFC 9110 §15.1: 200 is cacheable by default.
#[actix_web::test]
async fn status_200_is_stored() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/ok", counted(&calls, &[]));
    let res = get_n!(app, "/ok", 3);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.get(), 1);
    assert_eq!(store.len(), 1);
}

// RFC 9110 §15.1: 500 is not cacheable by default.
#[actix_web::test]
async fn status_500_is_not_stored() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let route = common::counted(web::get(), &calls, |_| {
        HttpResponse::InternalServerError().body("boom")
    });
    let app = cached_route!(Cache::new(store.clone()), "/boom", route);
    let res = get_n!(app, "/boom", 2);
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!res.headers().contains_key(header::ETAG));
    assert_eq!(read_body(res).await, "boom".as_bytes());
    assert_eq!(calls.get(), 2);
    assert_eq!(store.len(), 0);
}

// RFC 9110 §15.1, RFC 9111 §3: 404 is stored only with explicit freshness (this crate's policy
// for negative answers), and then served from the store as a 404.
#[actix_web::test]
async fn status_404_is_stored_only_with_explicit_freshness() {
    let (plain, fresh) = (Calls::default(), Calls::default());
    let store = MemoryStore::new(100);
    let not_found = |calls: &Calls, max_age: bool| {
        common::counted(web::get(), calls, move |_| {
            let mut res = HttpResponse::NotFound();
            if max_age {
                res.insert_header((header::CACHE_CONTROL, "max-age=60"));
            }
            res.body("not here")
        })
    };
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()))
            .route("/404-plain", not_found(&plain, false))
            .route("/404-fresh", not_found(&fresh, true)),
    )
    .await;
    let res = get_n!(app, "/404-plain", 2);
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(plain.get(), 2);
    assert_eq!(store.len(), 0);

    let res = get_n!(app, "/404-fresh", 2);
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(read_body(res).await, "not here".as_bytes());
    assert_eq!(fresh.get(), 1);
    assert_eq!(store.len(), 1);
}

// RFC 9110 §15.5.5: an unknown route stays a 404 through the cache, and is not stored.
#[actix_web::test]
async fn unknown_route_stays_404_and_is_not_stored() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/known", counted(&calls, &[]));
    for _ in 0..2 {
        let res = get_n!(app, "/unknown", 1);
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(!res.headers().contains_key(header::ETAG));
    }
    assert_eq!(store.len(), 0);
    assert_eq!(calls.get(), 0);
}

// RFC 9110 §9.3.2, RFC 9111 §4: HEAD may be answered from the stored GET response.
#[actix_web::test]
async fn head_is_served_from_the_get_entry() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/head",
        counted(&calls, &[])
    );
    let res = get_n!(app, "/head", 1);
    let tag = header(&res, "etag");
    let res = call_service(&app, head("/head").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(header(&res, "etag"), tag);
    assert_eq!(calls.get(), 1);
}

// RFC 9110 §9.3.2: a HEAD miss is run as a GET (documented choice) and fills the GET entry.
#[actix_web::test]
async fn head_miss_fills_the_get_entry() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/head-first",
        counted(&calls, &[])
    );
    let res = call_service(&app, head("/head-first").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "etag"), etag_of(BODY.as_bytes()));
    assert_eq!(store.len(), 1);

    let res = get_n!(app, "/head-first", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §3.1 (incomplete responses): streams pass through unbuffered and are not stored.
#[actix_web::test]
async fn streaming_body_passes_through_unbuffered_without_etag() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let route = common::counted(web::get(), &calls, |_| {
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"chunk one, ")),
            Ok(Bytes::from_static(b"chunk two")),
        ];
        HttpResponse::Ok().streaming(futures_util::stream::iter(chunks))
    });
    let app = cached_route!(Cache::new(store.clone()), "/stream", route);
    for expected in [1, 2] {
        let res = get_n!(app, "/stream", 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            body_size(&res),
            BodySize::Stream,
            "the body is not buffered"
        );
        assert!(!res.headers().contains_key(header::ETAG));
        assert!(header(&res, "cache-status").contains("detail=streaming"));
        assert_eq!(read_body(res).await, "chunk one, chunk two".as_bytes());
        assert_eq!(calls.get(), expected);
    }
    assert_eq!(store.len(), 0);
}

// RFC 9111 §3: a cache may decline to store any response; here, bodies over max_body_size.
#[actix_web::test]
async fn body_over_max_body_size_passes_through_without_etag() {
    let (big, fits) = (Calls::default(), Calls::default());
    let store = MemoryStore::new(100);
    let sized = |calls: &Calls, len: usize| {
        common::counted(web::get(), calls, move |_| {
            HttpResponse::Ok().body(vec![b'x'; len])
        })
    };
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()).max_body_size(16))
            .route("/big", sized(&big, 17))
            .route("/fits", sized(&fits, 16)),
    )
    .await;
    for expected in [1, 2] {
        let res = get_n!(app, "/big", 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_size(&res), BodySize::Sized(17));
        assert!(!res.headers().contains_key(header::ETAG));
        assert!(header(&res, "cache-status").contains("detail=too-large"));
        assert_eq!(read_body(res).await.len(), 17);
        assert_eq!(big.get(), expected);
    }
    assert_eq!(store.len(), 0);

    // A body of exactly the limit is stored and tagged.
    let res = get_n!(app, "/fits", 2);
    assert_eq!(header(&res, "etag"), etag_of(&[b'x'; 16]));
    assert_eq!(fits.get(), 1);
    assert_eq!(store.len(), 1);
}

// RFC 9110 §8.8.3: the ETag is strong, the quoted lowercase hex SHA-256 of the body.
#[actix_web::test]
async fn etag_is_quoted_lowercase_hex_sha256_of_the_body() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/etag",
        counted(&calls, &[])
    );
    let expected = etag_of(BODY.as_bytes());
    assert_eq!(expected.len(), 66);
    assert!(expected[1..65]
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    for _ in 0..2 {
        let res = get_n!(app, "/etag", 1);
        assert_eq!(res.headers().get_all(header::ETAG).count(), 1);
        assert_eq!(header(&res, "etag"), expected);
    }
    assert_eq!(calls.get(), 1);
}

// RFC 9110 §8.8.3: responses the cache does not store still get a validator (a browser may
// keep a `private` one and revalidate it). A `no-store` one does not: see below.
#[actix_web::test]
async fn etag_is_added_to_responses_that_are_not_stored() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()))
            .route(
                "/etag-private",
                counted(&calls, &[("cache-control", "private")]),
            )
            .route("/etag-cookie", counted(&calls, &[("set-cookie", "a=b")])),
    )
    .await;
    for path in ["/etag-private", "/etag-cookie"] {
        let res = get_n!(app, path, 1);
        assert_eq!(header(&res, "etag"), etag_of(BODY.as_bytes()), "{path}");
    }
    assert_eq!(store.len(), 0);
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.2.5: a `no-store` response is kept by no cache, so no client can revalidate
// it: to a request without preconditions it passes through untouched, neither buffered nor
// hashed (the handler's own ETag is kept). A request with `If-None-Match` still gets its 304.
#[actix_web::test]
async fn a_no_store_response_passes_through_unhashed() {
    let calls = Calls::default();
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .route(
                "/no-store-pass",
                counted(&calls, &[("cache-control", "no-store")]),
            )
            .route(
                "/no-store-own-etag",
                counted(&calls, &[("cache-control", "no-store"), ("etag", "\"v7\"")]),
            ),
    )
    .await;
    let res = get_n!(app, "/no-store-pass", 1);
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("etag").is_none());
    assert!(header(&res, "cache-status").contains("detail=no-store"));
    assert_eq!(read_body(res).await, BODY.as_bytes());
    let res = get_n!(app, "/no-store-own-etag", 1);
    assert_eq!(header(&res, "etag"), "\"v7\"");

    let req = TestRequest::get()
        .uri("/no-store-pass")
        .insert_header(("if-none-match", etag_of(BODY.as_bytes())))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(calls.get(), 3);
}

// The uncacheable pass: once a URL's response passed through unbuffered, its next plain GETs go
// straight to the handler (no key, no coalescing, nothing buffered). What the client gets is
// what the full flow gave the first time; preconditions and request directives still take the
// full flow.
#[actix_web::test]
async fn repeated_no_store_gets_answer_as_the_first_did() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/pass-same",
        counted(&calls, &[("cache-control", "no-store")]),
    );
    let first = get_n!(app, "/pass-same", 1);
    let status = header(&first, "cache-status");
    assert!(status.contains("fwd=uri-miss") && status.contains("detail=no-store"));
    assert!(first.headers().get("etag").is_none());
    for _ in 0..3 {
        let res = get_n!(app, "/pass-same", 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-status"), status);
        assert_eq!(header(&res, "cache-control"), "no-store");
        assert!(res.headers().get("etag").is_none());
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(calls.get(), 4);

    let req = TestRequest::get()
        .uri("/pass-same")
        .insert_header(("if-none-match", etag_of(BODY.as_bytes())))
        .to_request();
    assert_eq!(
        call_service(&app, req).await.status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(calls.get(), 5);
    let req = TestRequest::get()
        .uri("/pass-same")
        .insert_header(("cache-control", "only-if-cached"))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.get(), 5, "only-if-cached never reaches the handler");
}

// The uncacheable pass lets go: a page that answered `no-store` and then becomes cacheable is
// stored again (the response that shows the change passes as it is, the next is stored).
#[actix_web::test]
async fn a_page_that_becomes_cacheable_is_stored_again() {
    let calls = Calls::default();
    let no_store = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = no_store.clone();
    let route = common::counted(web::get(), &calls, move |_| {
        let mut res = HttpResponse::Ok();
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            res.insert_header(("cache-control", "no-store"));
        }
        res.body(BODY)
    });
    let app = cached_route!(Cache::new(MemoryStore::new(100)), "/pass-flip", route);
    get_n!(app, "/pass-flip", 3);
    assert_eq!(calls.get(), 3);
    no_store.store(false, std::sync::atomic::Ordering::SeqCst);
    get_n!(app, "/pass-flip", 2);
    assert_eq!(calls.get(), 5);
    let res = get_n!(app, "/pass-flip", 1);
    assert!(header(&res, "cache-status").contains("hit"), "stored again");
    assert!(res.headers().get("etag").is_some());
    assert_eq!(calls.get(), 5);
}

// RFC 9111 §3 (a cache may evict at will): the entry bound evicts the least recently used.
#[actix_web::test]
async fn memory_store_entry_bound_evicts_least_recently_used() {
    let calls = Calls::default();
    let store = MemoryStore::new(2);
    let app = cached_route!(Cache::new(store.clone()), "/lru/{n}", counted(&calls, &[]));
    for path in ["/lru/a", "/lru/b", "/lru/c"] {
        get_n!(app, path, 1);
    }
    assert_eq!(store.len(), 2);
    assert_eq!(calls.get(), 3);

    // /lru/a was evicted, /lru/c was not.
    let res = get_n!(app, "/lru/c", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 3);
    let res = get_n!(app, "/lru/a", 1);
    assert!(!header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 4);
    assert_eq!(store.len(), 2);
}

// RFC 9111 §3: hits keep entries. A flood of one-time URLs, ten times the store's bound, does
// not push out the entries that are being hit in between (hits mark entries under a shared
// lock; eviction passes over a marked one once).
#[actix_web::test]
async fn a_scan_flood_does_not_evict_the_entries_being_hit() {
    let (hot, scan) = (Calls::default(), Calls::default());
    let store = MemoryStore::new(100);
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()))
            .route("/hot/{n}", counted(&hot, &[]))
            .route("/scan/{n}", counted(&scan, &[])),
    )
    .await;
    for i in 0..1000 {
        get_n!(app, &format!("/scan/{i}"), 1);
        get_n!(app, &format!("/hot/{}", i % 20), 1);
    }
    assert_eq!(scan.get(), 1000);
    assert_eq!(
        hot.get(),
        20,
        "every hot URL missed once, then was always a hit"
    );
    assert_eq!(store.len(), 100);
}

// RFC 9111 §3: the byte budget evicts older entries, and an entry over the budget is not kept.
#[actix_web::test]
async fn memory_store_byte_budget_evicts() {
    let calls = Calls::default();
    let route = |calls: &Calls| {
        common::counted(web::get(), calls, |_| {
            HttpResponse::Ok().body(vec![b'y'; 1000])
        })
    };
    // One 1000-byte entry (plus key, headers and overhead) fits in 2200 bytes; two do not.
    let store = MemoryStore::new(100).max_bytes(2200);
    let tiny = MemoryStore::new(100).max_bytes(100);
    let app = init_service(
        App::new()
            .service(
                web::scope("/bytes")
                    .wrap(Cache::new(store.clone()))
                    .route("/{n}", route(&calls)),
            )
            .service(
                web::scope("/tiny")
                    .wrap(Cache::new(tiny.clone()))
                    .route("", route(&calls)),
            ),
    )
    .await;
    get_n!(app, "/bytes/1", 1);
    assert_eq!(store.len(), 1);
    get_n!(app, "/bytes/2", 1);
    assert_eq!(store.len(), 1, "the second entry evicted the first");
    assert!(store.bytes() <= 2200);
    let res = get_n!(app, "/bytes/2", 1);
    assert!(header(&res, "cache-status").contains("hit"));
    get_n!(app, "/bytes/1", 1);
    assert_eq!(calls.get(), 3);

    get_n!(app, "/tiny", 2);
    assert_eq!(tiny.len(), 0);
    assert_eq!(calls.get(), 5);
}

// RFC 9111 §3.5: `must-revalidate` says nothing about who may see a response, so it does not
// make a response to a request with Cookie shareable with other users.
#[actix_web::test]
async fn must_revalidate_response_to_a_request_with_cookie_is_not_shared() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/must-revalidate-cookie",
        echo_user(&calls, &[("cache-control", "must-revalidate")])
    );
    let res = call_service(
        &app,
        get("/must-revalidate-cookie")
            .insert_header((header::COOKIE, "session=alice"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, "hello session=alice".as_bytes());

    let res = get_n!(app, "/must-revalidate-cookie", 1);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        read_body(res).await,
        Bytes::from_static(b"hello "),
        "the cookieless GET was served Alice's response"
    );
    assert_eq!(calls.get(), 2, "the cookieless GET must reach the handler");
}

// RFC 9111 §5.2.2.7: a response stored per user (the key varies on Cookie) is `private` to
// downstream caches.
#[actix_web::test]
async fn response_stored_per_user_is_sent_private() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_vary(["cookie"]),
        "/per-user-cookie",
        echo_user(&calls, &[])
    );
    let request = || {
        get("/per-user-cookie")
            .insert_header((header::COOKIE, "id=alice"))
            .to_request()
    };
    let res = call_service(&app, request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("stored"));
    assert_eq!(
        header(&res, "cache-control"),
        "private, max-age=60",
        "the response stored for one user must be private downstream"
    );
    assert_eq!(read_body(res).await, "hello id=alice".as_bytes());

    let res = call_service(&app, request()).await;
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(header(&res, "cache-control"), "private, max-age=60");
    assert_eq!(calls.get(), 1);
}

// RFC 9110 §12.5.5: a `Vary` member that is not a field name cannot be matched, so the response
// is not stored; it still gets its validator (RFC 9110 §8.8.3).
#[actix_web::test]
async fn response_with_an_invalid_vary_member_is_not_stored_but_has_an_etag() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/vary-invalid",
        counted(&calls, &[("vary", "accept, a b")])
    );
    for _ in 0..2 {
        let res = get_n!(app, "/vary-invalid", 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "etag"), etag_of(BODY.as_bytes()));
        assert_eq!(header(&res, "vary"), "accept, a b");
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(
        calls.get(),
        2,
        "a response with an invalid Vary member was stored and served"
    );
    assert_eq!(store.len(), 0);
    let res = get_n!(app, "/vary-invalid", 1);
    assert!(
        header(&res, "cache-status").contains("detail=vary-invalid"),
        "{}",
        header(&res, "cache-status")
    );
}

// RFC 9111 §4.2.3: the Age of a hit counts the age the response had when it was stored.
#[actix_web::test]
async fn hit_age_includes_the_age_the_response_was_stored_with() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/aged",
        counted(&calls, &[("cache-control", "max-age=100"), ("age", "30")])
    );
    let res = get_n!(app, "/aged", 2);
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 1);
    let age: u64 = header(&res, "age").parse().expect("an Age on the hit");
    assert!(age >= 30, "Age {age} forgets the 30 s the response was old");
}

// RFC 9110 §7.6.1: fields named in `Connection` are hop-by-hop: they are not stored.
#[actix_web::test]
async fn fields_named_by_connection_are_not_stored() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/connection-named",
        counted(
            &calls,
            &[("connection", "x-internal"), ("x-internal", "secret")],
        )
    );
    let miss = get_n!(app, "/connection-named", 1);
    assert_eq!(miss.status(), StatusCode::OK);
    let hit = get_n!(app, "/connection-named", 1);
    assert!(header(&hit, "cache-status").contains("hit"));
    assert_eq!(calls.get(), 1);
    assert!(
        !hit.headers().contains_key("x-internal"),
        "the hop-by-hop X-Internal was stored and served: {:?}",
        header(&hit, "x-internal")
    );
    assert_eq!(read_body(hit).await, BODY.as_bytes());
}
