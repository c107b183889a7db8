//! How long the `Cache` middleware reuses a stored response, and which requests it reuses it
//! for: RFC 9111 §4.2 (freshness), §5.2 (Cache-Control) and §5.3 (Expires), in application mode
//! (the default) and in shared mode ([`Cache::shared`]).
//!
//! Every test uses its own paths: the middleware's write log (its race guard) is shared by the
//! whole process.

mod common;

use std::time::{Duration, SystemTime};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    dev::ServiceResponse,
    http::{header, StatusCode},
    rt::time::sleep,
    test::{init_service, read_body, TestRequest},
    web, App, HttpResponse, Route,
};
use common::{cached_route, counted_get, get, header, http_date, send, Calls, HIT};

const BODY: &str = "fresh body";

/// A `GET` of `path` with the request directives `cc` in `Cache-Control`.
fn get_cc(path: &str, cc: &'static str) -> TestRequest {
    get(path).insert_header((header::CACHE_CONTROL, cc))
}

/// A `GET` route that counts its calls and answers `200 BODY` with the given extra headers.
fn counted(calls: &Calls, headers: &'static [(&'static str, &'static str)]) -> Route {
    counted_get(calls, headers, BODY)
}

/// Like [`counted`], with headers computed at each call from the current time (for `Date`,
/// `Expires` and `Last-Modified`).
fn counted_dated(calls: &Calls, headers: fn(SystemTime) -> Vec<(&'static str, String)>) -> Route {
    common::counted(web::get(), calls, move |_| {
        let mut res = HttpResponse::Ok();
        for (name, value) in headers(SystemTime::now()) {
            res.append_header((name, value));
        }
        res.body(BODY)
    })
}

/// Every `Cache-Control` line of a response.
fn cache_control<B>(res: &ServiceResponse<B>) -> Vec<String> {
    res.headers()
        .get_all(header::CACHE_CONTROL)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Application mode
// ---------------------------------------------------------------------------------------------

// RFC 9111 §4.2.1, §5.2.2.1: in application mode a response without Cache-Control is fresh for
// `cache_expiry`, and the middleware says so downstream with `max-age`.
#[actix_web::test]
async fn application_mode_stores_for_cache_expiry_and_adds_max_age() {
    common::init_log();
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(1)),
        "/app-expiry",
        counted(&calls, &[])
    );

    let miss = send!(app, get("/app-expiry"));
    assert_eq!(miss.status(), StatusCode::OK);
    assert!(header(&miss, "cache-status").contains("stored"));
    assert_eq!(cache_control(&miss), ["max-age=1"]);
    assert_eq!(read_body(miss).await, BODY.as_bytes());

    let hit = send!(app, get("/app-expiry"));
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert_eq!(cache_control(&hit), ["max-age=1"]);
    assert_eq!(calls.get(), 1);

    sleep(Duration::from_millis(1100)).await;
    let res = send!(app, get("/app-expiry"));
    assert!(
        header(&res, "cache-status").contains("fwd=stale"),
        "{}",
        header(&res, "cache-status")
    );
    assert_eq!(calls.get(), 2, "the entry went stale after cache_expiry");
}

// RFC 9111 §4.2.1: in application mode the response's `max-age` lowers `cache_expiry`.
#[actix_web::test]
async fn application_mode_response_max_age_lowers_cache_expiry() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(600)),
        "/app-max-age",
        counted(&calls, &[("cache-control", "max-age=1")])
    );
    let miss = send!(app, get("/app-max-age"));
    assert_eq!(
        cache_control(&miss),
        ["max-age=1"],
        "the handler's own Cache-Control is left alone"
    );
    let hit = send!(app, get("/app-max-age"));
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert_eq!(calls.get(), 1);

    sleep(Duration::from_millis(1100)).await;
    let res = send!(app, get("/app-max-age"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(
        calls.get(),
        2,
        "the entry went stale after max-age=1, not 600 s"
    );
}

// RFC 9111 §4.2.1, §5.2.2.10: `s-maxage` takes precedence over `max-age` (application mode).
#[actix_web::test]
async fn application_mode_s_maxage_wins_over_max_age() {
    let (short, long) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)).cache_expiry(Duration::from_secs(600)))
            .route(
                "/app-s-maxage-short",
                counted(&short, &[("cache-control", "max-age=600, s-maxage=1")]),
            )
            .route(
                "/app-s-maxage-long",
                counted(&long, &[("cache-control", "s-maxage=600, max-age=1")]),
            ),
    )
    .await;
    for path in ["/app-s-maxage-short", "/app-s-maxage-long"] {
        send!(app, get(path));
        let hit = send!(app, get(path));
        assert_eq!(header(&hit, "cache-status"), HIT, "{path}");
    }
    assert_eq!((short.get(), long.get()), (1, 1));

    sleep(Duration::from_millis(1100)).await;
    let res = send!(app, get("/app-s-maxage-short"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(
        short.get(),
        2,
        "s-maxage=1 made it stale, whatever max-age says"
    );
    let res = send!(app, get("/app-s-maxage-long"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(
        long.get(),
        1,
        "s-maxage=600 keeps it fresh, whatever max-age says"
    );
}

// RFC 9111 §5.2.1 (a cache may ignore request directives): application mode ignores a
// client's `no-cache`, `Pragma: no-cache`, `max-age=0` and `min-fresh`.
#[actix_web::test]
async fn application_mode_ignores_request_no_cache_and_max_age() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/app-req-directives",
        counted(&calls, &[])
    );
    send!(app, get("/app-req-directives"));
    assert_eq!(calls.get(), 1);
    for req in [
        get_cc("/app-req-directives", "no-cache"),
        get("/app-req-directives").insert_header((header::PRAGMA, "no-cache")),
        get_cc("/app-req-directives", "max-age=0"),
        get_cc("/app-req-directives", "min-fresh=3600"),
    ] {
        let res = send!(app, req);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "cache-status"), HIT);
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(calls.get(), 1, "no request directive reached the handler");
}

// RFC 9111 §5.2.1.7: application mode still honours `only-if-cached`: 504 when nothing is
// stored, without calling the handler; the stored response once there is one.
#[actix_web::test]
async fn application_mode_honours_only_if_cached() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/app-only-if-cached",
        counted(&calls, &[])
    );
    let res = send!(app, get_cc("/app-only-if-cached", "only-if-cached"));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(header(&res, "cache-status").contains("detail=only-if-cached"));
    assert!(read_body(res).await.is_empty());
    assert_eq!(calls.get(), 0, "only-if-cached never reaches the handler");
    assert_eq!(store.len(), 0);

    send!(app, get("/app-only-if-cached"));
    let res = send!(app, get_cc("/app-only-if-cached", "only-if-cached"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §5.2.1: `request_directives` overrides the mode's default: on in application mode,
// a client's `no-cache` reaches the handler; off in shared mode, it does not.
#[actix_web::test]
async fn request_directives_builder_overrides_the_mode() {
    let (app_calls, shared_calls) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .service(
                web::scope("/req-directives-on")
                    .wrap(Cache::new(MemoryStore::new(100)).request_directives(true))
                    .route("", counted(&app_calls, &[])),
            )
            .service(
                web::scope("/req-directives-off")
                    .wrap(
                        Cache::new(MemoryStore::new(100))
                            .shared()
                            .request_directives(false),
                    )
                    .route(
                        "",
                        counted(&shared_calls, &[("cache-control", "max-age=60")]),
                    ),
            ),
    )
    .await;
    send!(app, get("/req-directives-on"));
    let res = send!(app, get_cc("/req-directives-on", "no-cache"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(app_calls.get(), 2);

    send!(app, get("/req-directives-off"));
    let res = send!(app, get_cc("/req-directives-off", "no-cache"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(shared_calls.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// Shared mode: the response's own headers decide
// ---------------------------------------------------------------------------------------------

// RFC 9111 §3, §4.2.2: in shared mode a response without explicit freshness (and no heuristic
// configured) is not stored.
#[actix_web::test]
async fn shared_mode_does_not_store_a_response_without_explicit_freshness() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).shared(),
        "/shared-no-freshness",
        counted(&calls, &[])
    );
    for expected in [1, 2] {
        let res = send!(app, get("/shared-no-freshness"));
        assert_eq!(res.status(), StatusCode::OK);
        let status = header(&res, "cache-status");
        assert!(
            status.contains("fwd=uri-miss") && status.contains("detail=no-freshness"),
            "{status}"
        );
        assert!(!status.contains("stored"), "{status}");
        assert!(
            !res.headers().contains_key(header::CACHE_CONTROL),
            "shared mode adds no Cache-Control"
        );
        assert_eq!(read_body(res).await, BODY.as_bytes());
        assert_eq!(calls.get(), expected);
    }
    assert_eq!(store.len(), 0);
}

// RFC 9111 §4.2.1, §5.2.2.1: in shared mode `max-age=60` makes the response fresh: stored, and
// the second GET is a hit.
#[actix_web::test]
async fn shared_mode_stores_a_response_with_max_age() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).shared(),
        "/shared-max-age",
        counted(&calls, &[("cache-control", "max-age=60")])
    );
    let miss = send!(app, get("/shared-max-age"));
    assert!(header(&miss, "cache-status").contains("stored"));
    assert_eq!(store.len(), 1);

    let hit = send!(app, get("/shared-max-age"));
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert_eq!(cache_control(&hit), ["max-age=60"]);
    assert_eq!(read_body(hit).await, BODY.as_bytes());
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §5.2: a shared cache passes the origin's directives on and adds none of its own,
// even to a response it stores (here one made fresh by Expires alone).
#[actix_web::test]
async fn shared_mode_adds_no_cache_control_to_a_stored_response() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/shared-no-cc-added",
        counted_dated(&calls, |now| {
            vec![
                ("date", http_date(now)),
                ("expires", http_date(now + Duration::from_secs(60))),
            ]
        })
    );
    let miss = send!(app, get("/shared-no-cc-added"));
    assert!(header(&miss, "cache-status").contains("stored"));
    assert_eq!(cache_control(&miss), Vec::<String>::new());
    let hit = send!(app, get("/shared-no-cc-added"));
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert_eq!(cache_control(&hit), Vec::<String>::new());
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §4.2.1, §5.2.2.10: in shared mode `s-maxage` takes precedence over `max-age`, in
// both directions.
#[actix_web::test]
async fn shared_mode_s_maxage_wins_over_max_age() {
    let (fresh, stale) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)).shared())
            .route(
                "/shared-s-maxage-fresh",
                counted(&fresh, &[("cache-control", "max-age=0, s-maxage=60")]),
            )
            .route(
                "/shared-s-maxage-stale",
                counted(&stale, &[("cache-control", "max-age=60, s-maxage=0")]),
            ),
    )
    .await;
    send!(app, get("/shared-s-maxage-fresh"));
    let res = send!(app, get("/shared-s-maxage-fresh"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(
        fresh.get(),
        1,
        "s-maxage=60 made it fresh despite max-age=0"
    );

    send!(app, get("/shared-s-maxage-stale"));
    let res = send!(app, get("/shared-s-maxage-stale"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(
        stale.get(),
        2,
        "s-maxage=0 made it stale despite max-age=60"
    );
}

// RFC 9111 §4.2.1, §5.3: without max-age, the freshness lifetime is `Expires` minus `Date`.
#[actix_web::test]
async fn shared_mode_lifetime_is_expires_minus_date() {
    let (sixty, zero) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)).shared())
            .route(
                "/shared-expires-60",
                counted_dated(&sixty, |now| {
                    vec![
                        ("date", http_date(now)),
                        ("expires", http_date(now + Duration::from_secs(60))),
                    ]
                }),
            )
            .route(
                "/shared-expires-0",
                counted_dated(&zero, |now| {
                    vec![("date", http_date(now)), ("expires", http_date(now))]
                }),
            ),
    )
    .await;
    // About 60 s of freshness: enough for min-fresh=30, not for min-fresh=120.
    send!(app, get("/shared-expires-60"));
    let res = send!(app, get_cc("/shared-expires-60", "min-fresh=30"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(sixty.get(), 1);
    let res = send!(app, get_cc("/shared-expires-60", "min-fresh=120"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(sixty.get(), 2);

    // Expires equal to Date: stale at once.
    send!(app, get("/shared-expires-0"));
    let res = send!(app, get("/shared-expires-0"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(zero.get(), 2);
}

// RFC 9111 §5.3: when max-age is present, Expires is ignored.
#[actix_web::test]
async fn shared_mode_max_age_overrides_expires() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/shared-max-age-over-expires",
        counted_dated(&calls, |now| {
            vec![
                ("cache-control", "max-age=60".to_owned()),
                ("date", http_date(now)),
                ("expires", http_date(now - Duration::from_secs(3600))),
            ]
        })
    );
    send!(app, get("/shared-max-age-over-expires"));
    let res = send!(app, get("/shared-max-age-over-expires"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §4.2.2: with `heuristic_freshness(0.1)`, a response last modified 1000 s before its
// Date is fresh (for 10 % of that, capped by cache_expiry), so the second GET is a hit.
#[actix_web::test]
async fn shared_mode_heuristic_freshness_applies_with_last_modified() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100))
            .shared()
            .heuristic_freshness(0.1),
        "/heuristic-lm",
        counted_dated(&calls, |now| {
            vec![
                ("date", http_date(now)),
                ("last-modified", http_date(now - Duration::from_secs(1000))),
            ]
        })
    );
    let miss = send!(app, get("/heuristic-lm"));
    assert!(header(&miss, "cache-status").contains("stored"));
    assert_eq!(cache_control(&miss), Vec::<String>::new());
    let hit = send!(app, get("/heuristic-lm"));
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert_eq!(read_body(hit).await, BODY.as_bytes());
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §4.2.2: the heuristic is a fraction of the time since Last-Modified (0.1 × 1000 s =
// 100 s), at most cache_expiry (default 60 s).
#[actix_web::test]
async fn heuristic_is_a_fraction_of_the_time_since_last_modified_capped_by_cache_expiry() {
    let (wide, capped) = (Calls::default(), Calls::default());
    fn modified_1000s_ago(now: SystemTime) -> Vec<(&'static str, String)> {
        vec![
            ("date", http_date(now)),
            ("last-modified", http_date(now - Duration::from_secs(1000))),
        ]
    }
    let app = init_service(
        App::new()
            .service(
                web::scope("/heuristic-wide")
                    .wrap(
                        Cache::new(MemoryStore::new(100))
                            .shared()
                            .heuristic_freshness(0.1)
                            .cache_expiry(Duration::from_secs(600)),
                    )
                    .route("", counted_dated(&wide, modified_1000s_ago)),
            )
            .service(
                web::scope("/heuristic-capped")
                    .wrap(
                        Cache::new(MemoryStore::new(100))
                            .shared()
                            .heuristic_freshness(0.1),
                    )
                    .route("", counted_dated(&capped, modified_1000s_ago)),
            ),
    )
    .await;
    // About 100 s of freshness: enough for min-fresh=80, not for min-fresh=120.
    send!(app, get("/heuristic-wide"));
    let res = send!(app, get_cc("/heuristic-wide", "min-fresh=80"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(wide.get(), 1);
    let res = send!(app, get_cc("/heuristic-wide", "min-fresh=120"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(wide.get(), 2);

    // Capped at 60 s: not enough for min-fresh=80, enough for min-fresh=30.
    send!(app, get("/heuristic-capped"));
    let res = send!(app, get_cc("/heuristic-capped", "min-fresh=30"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(capped.get(), 1);
    let res = send!(app, get_cc("/heuristic-capped", "min-fresh=80"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(capped.get(), 2);
}

// RFC 9111 §4.2.2: the heuristic needs a Last-Modified; without one the response is not stored.
#[actix_web::test]
async fn shared_mode_heuristic_needs_last_modified() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).shared().heuristic_freshness(0.1),
        "/heuristic-no-lm",
        counted_dated(&calls, |now| vec![("date", http_date(now))])
    );
    for expected in [1, 2] {
        let res = send!(app, get("/heuristic-no-lm"));
        assert!(header(&res, "cache-status").contains("detail=no-freshness"));
        assert_eq!(calls.get(), expected);
    }
    assert_eq!(store.len(), 0);
}

// RFC 9111 §4.2.2: a cache uses heuristics only if configured to; by default a Last-Modified
// alone gives a shared-mode response no freshness.
#[actix_web::test]
async fn shared_mode_heuristic_is_off_by_default() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).shared(),
        "/heuristic-off",
        counted_dated(&calls, |now| {
            vec![
                ("date", http_date(now)),
                ("last-modified", http_date(now - Duration::from_secs(1000))),
            ]
        })
    );
    for expected in [1, 2] {
        let res = send!(app, get("/heuristic-off"));
        assert!(header(&res, "cache-status").contains("detail=no-freshness"));
        assert_eq!(calls.get(), expected);
    }
    assert_eq!(store.len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Response directives
// ---------------------------------------------------------------------------------------------

// RFC 9111 §5.2.2.4: a `no-cache` response may be stored, but every use of it goes to the
// handler first, even when it also has a max-age.
#[actix_web::test]
async fn response_no_cache_is_stored_but_every_get_reaches_the_handler() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).shared(),
        "/shared-no-cache",
        counted(&calls, &[("cache-control", "no-cache, max-age=60")])
    );
    let miss = send!(app, get("/shared-no-cache"));
    assert!(header(&miss, "cache-status").contains("stored"));
    assert_eq!(store.len(), 1);
    for expected in [2, 3] {
        let res = send!(app, get("/shared-no-cache"));
        assert_eq!(res.status(), StatusCode::OK);
        let status = header(&res, "cache-status");
        assert!(status.contains("fwd=stale"), "{status}");
        assert_eq!(read_body(res).await, BODY.as_bytes());
        assert_eq!(calls.get(), expected);
    }
}

// RFC 9111 §5.2.2.7: `private="set-cookie"` lets a shared cache store the response without
// that field: the handler's response carries the cookie, the hit does not.
#[actix_web::test]
async fn private_set_cookie_is_stored_without_the_cookie() {
    let calls = Calls::default();
    let headers: &'static [(&'static str, &'static str)] = &[
        ("cache-control", "private=\"set-cookie\", max-age=60"),
        ("set-cookie", "session=abc"),
    ];
    let app = init_service(
        App::new()
            .service(
                web::scope("/private-field-app")
                    .wrap(Cache::new(MemoryStore::new(100)))
                    .route("", counted(&calls, headers)),
            )
            .service(
                web::scope("/private-field-shared")
                    .wrap(Cache::new(MemoryStore::new(100)).shared())
                    .route("", counted(&calls, headers)),
            ),
    )
    .await;
    for (n, path) in [(1, "/private-field-app"), (2, "/private-field-shared")] {
        let miss = send!(app, get(path));
        assert!(header(&miss, "cache-status").contains("stored"), "{path}");
        assert_eq!(header(&miss, "set-cookie"), "session=abc", "{path}");
        let hit = send!(app, get(path));
        assert_eq!(header(&hit, "cache-status"), HIT, "{path}");
        assert!(
            !hit.headers().contains_key(header::SET_COOKIE),
            "{path}: the hit replayed the cookie"
        );
        assert_eq!(
            cache_control(&hit),
            ["private=\"set-cookie\", max-age=60"],
            "{path}"
        );
        assert_eq!(read_body(hit).await, BODY.as_bytes());
        assert_eq!(calls.get(), n, "{path}");
    }
}

// RFC 9111 §5.2.2.4: `no-cache="set-cookie"` likewise stores the response without the field.
#[actix_web::test]
async fn no_cache_set_cookie_is_stored_without_the_cookie() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/no-cache-field",
        counted(
            &calls,
            &[
                ("cache-control", "no-cache=\"set-cookie\", max-age=60"),
                ("set-cookie", "session=abc"),
            ],
        )
    );
    let miss = send!(app, get("/no-cache-field"));
    assert_eq!(header(&miss, "set-cookie"), "session=abc");
    let hit = send!(app, get("/no-cache-field"));
    assert_eq!(header(&hit, "cache-status"), HIT);
    assert!(!hit.headers().contains_key(header::SET_COOKIE));
    assert_eq!(calls.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// Request directives (shared mode)
// ---------------------------------------------------------------------------------------------

/// An app whose shared-mode cache wraps one counted route at `$path` answering with
/// `Cache-Control: $cc` (default `max-age=60`).
macro_rules! shared_app {
    ($calls:expr, $path:expr) => {
        shared_app!($calls, $path, "max-age=60")
    };
    ($calls:expr, $path:expr, $cc:expr) => {
        cached_route!(
            Cache::new(MemoryStore::new(100)).shared(),
            $path,
            counted(&$calls, &[("cache-control", $cc)])
        )
    };
}

// RFC 9111 §5.2.1.4: a request's `no-cache` makes a shared cache go to the handler even for a
// fresh entry.
#[actix_web::test]
async fn request_no_cache_reaches_the_handler_in_shared_mode() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-no-cache");
    send!(app, get("/req-no-cache"));
    let res = send!(app, get_cc("/req-no-cache", "no-cache"));
    assert_eq!(res.status(), StatusCode::OK);
    let status = header(&res, "cache-status");
    assert!(status.contains("fwd=request"), "{status}");
    assert_eq!(calls.get(), 2);
    // A plain GET is still a hit.
    let res = send!(app, get("/req-no-cache"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.4: `Pragma: no-cache` without Cache-Control means `no-cache`.
#[actix_web::test]
async fn request_pragma_no_cache_reaches_the_handler_in_shared_mode() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-pragma");
    send!(app, get("/req-pragma"));
    let res = send!(
        app,
        get("/req-pragma").insert_header((header::PRAGMA, "no-cache"))
    );
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.1.1: a request's `max-age=0` refuses any stored response with an age above 0.
#[actix_web::test]
async fn request_max_age_zero_reaches_the_handler_in_shared_mode() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-max-age-0");
    send!(app, get("/req-max-age-0"));
    let res = send!(app, get_cc("/req-max-age-0", "max-age=0"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(calls.get(), 2);
    // A max-age the entry is younger than accepts it.
    let res = send!(app, get_cc("/req-max-age-0", "max-age=30"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.1.3: `min-fresh` asks for at least that much freshness left.
#[actix_web::test]
async fn request_min_fresh_beyond_the_remaining_freshness_reaches_the_handler() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-min-fresh");
    send!(app, get("/req-min-fresh"));
    let res = send!(app, get_cc("/req-min-fresh", "min-fresh=3600"));
    assert!(header(&res, "cache-status").contains("fwd=request"));
    assert_eq!(calls.get(), 2);
    let res = send!(app, get_cc("/req-min-fresh", "min-fresh=30"));
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.1.7: `only-if-cached` with nothing stored: 504, and the handler is not called.
#[actix_web::test]
async fn request_only_if_cached_with_nothing_stored_is_504() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-only-if-cached-empty");
    let res = send!(app, get_cc("/req-only-if-cached-empty", "only-if-cached"));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(header(&res, "cache-status").contains("detail=only-if-cached"));
    assert!(read_body(res).await.is_empty());
    assert_eq!(calls.get(), 0);
}

// RFC 9111 §5.2.1.7: `only-if-cached` with a fresh entry is answered from the store.
#[actix_web::test]
async fn request_only_if_cached_with_a_fresh_entry_is_a_hit() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-only-if-cached-fresh");
    send!(app, get("/req-only-if-cached-fresh"));
    let res = send!(app, get_cc("/req-only-if-cached-fresh", "only-if-cached"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §5.2.1.7, §4.2.4: a stale entry needs revalidation, which `only-if-cached` forbids:
// 504 without calling the handler.
#[actix_web::test]
async fn request_only_if_cached_with_a_stale_entry_is_504() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-only-if-cached-stale", "max-age=0");
    send!(app, get("/req-only-if-cached-stale"));
    let res = send!(app, get_cc("/req-only-if-cached-stale", "only-if-cached"));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.get(), 1);
}

// RFC 8246 §2: a fresh `immutable` response is reused even for a request's `no-cache`.
#[actix_web::test]
async fn immutable_fresh_entry_is_reused_for_a_request_no_cache() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-immutable", "max-age=60, immutable");
    send!(app, get("/req-immutable"));
    let res = send!(app, get_cc("/req-immutable", "no-cache"));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "cache-status"), HIT);
    assert_eq!(calls.get(), 1);
}

// RFC 9111 §4.2.4, §5.2.1.2: a request's `max-stale` accepts a stale entry (kept by keep_stale),
// which is then served without the handler; a plain GET still revalidates it.
#[actix_web::test]
async fn request_max_stale_is_served_a_stale_entry() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100))
            .shared()
            .keep_stale(Duration::from_secs(60)),
        "/req-max-stale",
        counted(&calls, &[("cache-control", "max-age=0")])
    );
    let miss = send!(app, get("/req-max-stale"));
    assert!(header(&miss, "cache-status").contains("stored"));
    for cc in ["max-stale", "max-stale=30"] {
        let res = send!(app, get_cc("/req-max-stale", cc));
        assert_eq!(res.status(), StatusCode::OK, "{cc}");
        assert_eq!(header(&res, "cache-status"), HIT, "{cc}");
        assert_eq!(read_body(res).await, BODY.as_bytes());
        assert_eq!(calls.get(), 1, "{cc}");
    }
    let res = send!(app, get("/req-max-stale"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.1.2: `max-stale=N` accepts at most N seconds of staleness: `max-stale=0` does
// not accept an entry that is already stale.
#[actix_web::test]
async fn request_max_stale_zero_is_not_served_a_stale_entry() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-max-stale-0", "max-age=0");
    send!(app, get("/req-max-stale-0"));
    sleep(Duration::from_millis(10)).await;
    let res = send!(app, get_cc("/req-max-stale-0", "max-stale=0"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.2.2: a `must-revalidate` response is never served stale, whatever max-stale
// says.
#[actix_web::test]
async fn request_max_stale_is_not_served_a_must_revalidate_entry() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-max-stale-mr", "max-age=0, must-revalidate");
    send!(app, get("/req-max-stale-mr"));
    let res = send!(app, get_cc("/req-max-stale-mr", "max-stale"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.2.10: in a shared cache `s-maxage` implies `proxy-revalidate`: never served
// stale either.
#[actix_web::test]
async fn request_max_stale_is_not_served_an_s_maxage_entry_in_shared_mode() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/req-max-stale-smaxage", "s-maxage=0");
    send!(app, get("/req-max-stale-smaxage"));
    let res = send!(app, get_cc("/req-max-stale-smaxage", "max-stale"));
    assert!(header(&res, "cache-status").contains("fwd=stale"));
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §5.2.2.4: a `no-cache` response is never reused without revalidation, not even for
// a request that accepts stale responses (`max-stale`).
#[actix_web::test]
async fn request_max_stale_is_not_served_a_no_cache_entry() {
    let calls = Calls::default();
    let app = shared_app!(calls, "/fresh/max-stale-no-cache", "no-cache");
    send!(app, get("/fresh/max-stale-no-cache"));
    send!(
        app,
        get("/fresh/max-stale-no-cache").insert_header((header::CACHE_CONTROL, "max-stale"))
    );
    assert_eq!(
        calls.get(),
        2,
        "a no-cache response was reused without revalidation"
    );
}

// RFC 9111 §4.2.2 / RFC 9110 §15.1: a negative answer (404) is stored only with explicit
// freshness, in shared mode as in application mode.
#[actix_web::test]
async fn shared_mode_stores_a_404_only_with_explicit_freshness() {
    for (path, cache_control, stored) in [
        ("/fresh/404-fresh", Some("max-age=60"), true),
        ("/fresh/404-plain", None, false),
    ] {
        let calls = Calls::default();
        let app = cached_route!(
            Cache::new(MemoryStore::new(100)).shared(),
            path,
            common::counted(web::get(), &calls, move |_| {
                let mut res = HttpResponse::NotFound();
                if let Some(cc) = cache_control {
                    res.insert_header((header::CACHE_CONTROL, cc));
                }
                res.finish()
            })
        );
        send!(app, get(path));
        let res = send!(app, get(path));
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(calls.get(), if stored { 1 } else { 2 }, "{path}");
    }
}
