//! Revalidation of stale stored responses by the `Cache` middleware: RFC 9111 §4.3 (validation),
//! §4.3.1 (sending a validation request), §4.3.3 (handling the response) and §4.3.4 (freshening
//! stored responses), with RFC 9110 §13 for the client's own preconditions.
//!
//! The handlers here honour conditional requests themselves, as an origin would: they answer
//! `304 Not Modified` when the cache's `If-None-Match` (or `If-Modified-Since`) matches.
//!
//! Every test uses its own paths: the middleware's write log (its race guard) is shared by the
//! whole process.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    rt::time::sleep,
    test::{call_service, read_body, TestRequest},
    web, HttpRequest, HttpResponse, Route,
};
use common::{
    cached_route, cached_service, counted, etag_of, get, header, http_date, last_modified,
    req_header, send, with_headers, Calls, HIT,
};

const BODY: &str = "revalidated body";
const V1: &str = "\"v1\"";

/// The validators one handler call received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    if_none_match: String,
    if_modified_since: String,
}

impl Seen {
    /// An unconditional request.
    fn plain() -> Self {
        Self::default()
    }

    /// A request with only `If-None-Match: tag`.
    fn inm(tag: &str) -> Self {
        Self {
            if_none_match: tag.to_owned(),
            ..Self::default()
        }
    }
}

/// An origin handler: counts every call and every conditional call, records the validators it
/// received, and answers with `respond(request, call number)`.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    conditional: Calls,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    fn route(&self, respond: fn(&HttpRequest, usize) -> HttpResponse) -> Route {
        let origin = self.clone();
        web::get().to(move |req: HttpRequest| {
            let origin = origin.clone();
            async move {
                let n = origin.calls.hit();
                let seen = Seen {
                    if_none_match: req_header(&req, header::IF_NONE_MATCH),
                    if_modified_since: req_header(&req, header::IF_MODIFIED_SINCE),
                };
                if seen != Seen::plain() {
                    origin.conditional.hit();
                }
                origin.seen.lock().expect("not poisoned").push(seen);
                respond(&req, n)
            }
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

/// A `304` with the `not_modified` fields when the request's `If-None-Match` is `tag`, else a
/// `200 BODY` with the `ok` fields.
fn answer_if_none_match(
    req: &HttpRequest,
    tag: &str,
    not_modified: &[(&str, &str)],
    ok: &[(&str, &str)],
) -> HttpResponse {
    if req_header(req, header::IF_NONE_MATCH) == tag {
        with_headers(HttpResponse::NotModified(), not_modified).finish()
    } else {
        with_headers(HttpResponse::Ok(), ok).body(BODY)
    }
}

/// `ETag: "v1"`, `Cache-Control: max-age=0` (stale at once, kept for revalidation), and a `304`
/// when `If-None-Match` is `"v1"`.
fn v1_stale_at_once(req: &HttpRequest, _: usize) -> HttpResponse {
    let fields = [("etag", V1), ("cache-control", "max-age=0")];
    answer_if_none_match(req, V1, &fields, &fields)
}

// RFC 9111 §4.3.1, §4.3.3, §4.3.4: a stale entry is revalidated with its ETag in
// If-None-Match; the handler's 304 makes the cache serve the stored body as a 200.
#[actix_web::test]
async fn stale_entry_is_revalidated_and_a_304_serves_the_stored_body() {
    common::init_log();
    let origin = Origin::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()),
        "/reval-basic",
        origin.route(v1_stale_at_once)
    );

    let first = send!(app, get("/reval-basic"));
    assert_eq!(first.status(), StatusCode::OK);
    let status = header(&first, "cache-status");
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{status}"
    );
    assert_eq!(header(&first, "etag"), V1);
    assert_eq!(read_body(first).await, BODY.as_bytes());
    assert_eq!(store.len(), 1);

    let second = send!(app, get("/reval-basic"));
    assert_eq!(second.status(), StatusCode::OK);
    let status = header(&second, "cache-status");
    assert!(status.contains("fwd=stale; fwd-status=304"), "{status}");
    assert_eq!(header(&second, "etag"), V1);
    assert!(second.headers().contains_key(header::AGE));
    assert_eq!(read_body(second).await, BODY.as_bytes());

    assert_eq!(origin.calls.get(), 2);
    assert_eq!(origin.conditional.get(), 1);
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1)]);
}

// RFC 9111 §4.3.2, RFC 9110 §13.1.2: the client's own If-None-Match is judged by the cache
// against the revalidated entry: a matching one gets a 304; the handler still got the cache's
// validator, once.
#[actix_web::test]
async fn client_if_none_match_after_revalidation_gets_304() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-client-inm",
        origin.route(v1_stale_at_once)
    );
    send!(app, get("/reval-client-inm"));

    let res = send!(
        app,
        get("/reval-client-inm").insert_header((header::IF_NONE_MATCH, V1))
    );
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), V1);
    assert!(header(&res, "cache-status").contains("fwd-status=304"));
    assert!(read_body(res).await.is_empty());
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(origin.conditional.get(), 1);
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1)]);
}

// RFC 9111 §4.3.1: the revalidation carries the stored validators, not the client's (the
// client's If-None-Match and If-Modified-Since do not reach the handler); a client validator
// that does not match the stored one gets the full 200.
#[actix_web::test]
async fn client_validator_is_replaced_by_the_stored_one() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-client-other",
        origin.route(v1_stale_at_once)
    );
    send!(app, get("/reval-client-other"));

    let res = send!(
        app,
        get("/reval-client-other")
            .insert_header((header::IF_NONE_MATCH, "\"v0\""))
            .insert_header((header::IF_MODIFIED_SINCE, http_date(last_modified())))
    );
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("fwd=stale; fwd-status=304"));
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1)]);
}

// RFC 9111 §4.3.3: the 304 answers the cache's conditional request, not the client's: an
// unconditional GET always gets the full stored response.
#[actix_web::test]
async fn unconditional_get_never_receives_a_304_after_revalidation() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-unconditional",
        origin.route(v1_stale_at_once)
    );
    send!(app, get("/reval-unconditional"));
    for n in 2..=4 {
        let res = send!(app, get("/reval-unconditional"));
        assert_eq!(res.status(), StatusCode::OK, "request {n}");
        assert!(header(&res, "cache-status").contains("fwd-status=304"));
        assert_eq!(read_body(res).await, BODY.as_bytes(), "request {n}");
        assert_eq!(origin.calls.get(), n);
        assert_eq!(origin.conditional.get(), n - 1);
    }
}

// RFC 9111 §4.3.4, §3.2: the 304's header fields replace the stored ones of the same name; the
// refreshed entry (fresh again by the 304's max-age=60) is served by later hits.
#[actix_web::test]
async fn not_modified_fields_replace_the_stored_ones() {
    fn versioned(req: &HttpRequest, _: usize) -> HttpResponse {
        answer_if_none_match(
            req,
            V1,
            &[
                ("etag", V1),
                ("cache-control", "max-age=60"),
                ("x-version", "2"),
            ],
            &[
                ("etag", V1),
                ("cache-control", "max-age=0"),
                ("x-version", "1"),
            ],
        )
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-fields",
        origin.route(versioned)
    );
    let first = send!(app, get("/reval-fields"));
    assert_eq!(header(&first, "x-version"), "1");

    let second = send!(app, get("/reval-fields"));
    assert_eq!(second.status(), StatusCode::OK);
    let status = header(&second, "cache-status");
    assert!(
        status.contains("fwd=stale; fwd-status=304") && status.contains("stored"),
        "{status}"
    );
    assert_eq!(second.headers().get_all("x-version").count(), 1);
    assert_eq!(header(&second, "x-version"), "2");
    assert_eq!(header(&second, "cache-control"), "max-age=60");
    assert_eq!(read_body(second).await, BODY.as_bytes());
    assert_eq!(origin.calls.get(), 2);

    let third = send!(app, get("/reval-fields"));
    assert_eq!(header(&third, "cache-status"), HIT);
    assert_eq!(third.headers().get_all("x-version").count(), 1);
    assert_eq!(header(&third, "x-version"), "2");
    assert_eq!(header(&third, "cache-control"), "max-age=60");
    assert_eq!(read_body(third).await, BODY.as_bytes());
    assert_eq!(origin.calls.get(), 2, "the refreshed entry is fresh");
}

// RFC 9111 §4.3.4: a 304 whose strong ETag differs from the stored one is about another
// representation: the stored response is not updated with its fields.
#[actix_web::test]
async fn not_modified_with_another_strong_etag_does_not_update_the_entry() {
    fn other_tag(req: &HttpRequest, _: usize) -> HttpResponse {
        answer_if_none_match(
            req,
            V1,
            &[
                ("etag", "\"v9\""),
                ("cache-control", "max-age=60"),
                ("x-version", "9"),
            ],
            &[
                ("etag", V1),
                ("cache-control", "max-age=0"),
                ("x-version", "1"),
            ],
        )
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-other-tag",
        origin.route(other_tag)
    );
    send!(app, get("/reval-other-tag"));
    for n in [2, 3] {
        let res = send!(app, get("/reval-other-tag"));
        assert_eq!(res.status(), StatusCode::OK);
        let status = header(&res, "cache-status");
        assert!(
            status.contains("fwd=stale; fwd-status=304; detail=not-stored"),
            "{status}"
        );
        assert_eq!(header(&res, "x-version"), "1");
        assert_eq!(header(&res, "etag"), V1);
        assert_eq!(origin.calls.get(), n, "the entry stayed stale");
    }
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1), Seen::inm(V1)]);
}

// RFC 9111 §4.3.4 (second bullet), RFC 9110 §8.8.3.2: a 304 with no strong validator but a
// weak one that matches the stored response's identifies it for update. A handler using weak
// ETags gets its 304's fields (here a new max-age) applied like one using strong ETags.
#[actix_web::test]
async fn not_modified_with_the_same_weak_etag_updates_the_entry() {
    const WEAK: &str = "W/\"v1\"";
    fn weak(req: &HttpRequest, _: usize) -> HttpResponse {
        answer_if_none_match(
            req,
            WEAK,
            &[
                ("etag", WEAK),
                ("cache-control", "max-age=60"),
                ("x-version", "2"),
            ],
            &[
                ("etag", WEAK),
                ("cache-control", "max-age=0"),
                ("x-version", "1"),
            ],
        )
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-weak-tag",
        origin.route(weak)
    );
    send!(app, get("/reval-weak-tag"));
    let second = send!(app, get("/reval-weak-tag"));
    assert_eq!(second.status(), StatusCode::OK);
    let status = header(&second, "cache-status");
    assert!(
        status.contains("fwd=stale; fwd-status=304") && status.contains("; stored; ttl="),
        "{status}"
    );
    assert_eq!(header(&second, "x-version"), "2");
    assert_eq!(read_body(second).await, BODY.as_bytes());

    let third = send!(app, get("/reval-weak-tag"));
    assert_eq!(header(&third, "cache-status"), HIT);
    assert_eq!(header(&third, "x-version"), "2");
    assert_eq!(origin.calls.get(), 2, "the refreshed entry is fresh");
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(WEAK)]);
}

// RFC 9111 §4.3.1: a stored Last-Modified is sent as If-Modified-Since. (The middleware gives
// every 2xx with a body its own strong ETag, so If-None-Match is sent too.)
#[actix_web::test]
async fn last_modified_is_sent_as_if_modified_since() {
    fn dated(req: &HttpRequest, _: usize) -> HttpResponse {
        if req_header(req, header::IF_MODIFIED_SINCE) == http_date(last_modified()) {
            HttpResponse::NotModified()
                .insert_header((header::CACHE_CONTROL, "max-age=0"))
                .finish()
        } else {
            HttpResponse::Ok()
                .insert_header((header::LAST_MODIFIED, http_date(last_modified())))
                .insert_header((header::CACHE_CONTROL, "max-age=0"))
                .body(BODY)
        }
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-last-modified",
        origin.route(dated)
    );
    let first = send!(app, get("/reval-last-modified"));
    assert_eq!(header(&first, "etag"), etag_of(BODY.as_bytes()));

    let second = send!(app, get("/reval-last-modified"));
    assert_eq!(second.status(), StatusCode::OK);
    assert!(header(&second, "cache-status").contains("fwd=stale; fwd-status=304"));
    assert_eq!(header(&second, "last-modified"), http_date(last_modified()));
    assert_eq!(read_body(second).await, BODY.as_bytes());
    assert_eq!(
        origin.seen(),
        [
            Seen::plain(),
            Seen {
                if_none_match: etag_of(BODY.as_bytes()),
                if_modified_since: http_date(last_modified()),
            }
        ]
    );
}

// RFC 9111 §4.3.3: a full (200) response to the revalidation replaces the stored entry.
#[actix_web::test]
async fn stale_entry_is_replaced_by_a_new_200() {
    fn changed(_: &HttpRequest, n: usize) -> HttpResponse {
        if n == 1 {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "max-age=0"))
                .body("old body")
        } else {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "max-age=60"))
                .body("new body")
        }
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-replaced",
        origin.route(changed)
    );
    let first = send!(app, get("/reval-replaced"));
    assert_eq!(read_body(first).await, "old body".as_bytes());

    let second = send!(app, get("/reval-replaced"));
    assert_eq!(second.status(), StatusCode::OK);
    let status = header(&second, "cache-status");
    assert!(
        status.contains("fwd=stale") && status.contains("stored"),
        "{status}"
    );
    assert!(!status.contains("fwd-status=304"), "{status}");
    assert_eq!(header(&second, "etag"), etag_of(b"new body"));
    assert_eq!(read_body(second).await, "new body".as_bytes());

    let third = send!(app, get("/reval-replaced"));
    assert_eq!(header(&third, "cache-status"), HIT);
    assert_eq!(header(&third, "etag"), etag_of(b"new body"));
    assert_eq!(read_body(third).await, "new body".as_bytes());
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(
        origin.seen(),
        [Seen::plain(), Seen::inm(&etag_of(b"old body"))]
    );
}

// RFC 9111 §4.3 (a cache may drop a stale entry instead of keeping it for validation):
// `keep_stale(Duration::ZERO)` drops the entry when it goes stale, so the next request is a
// plain miss with no If-None-Match.
#[actix_web::test]
async fn keep_stale_zero_drops_stale_entries() {
    fn short(_: &HttpRequest, _: usize) -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((header::ETAG, V1))
            .insert_header((header::CACHE_CONTROL, "max-age=1"))
            .body(BODY)
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).keep_stale(Duration::ZERO),
        "/reval-keep-zero",
        origin.route(short)
    );
    let first = send!(app, get("/reval-keep-zero"));
    assert!(header(&first, "cache-status").contains("stored"));
    let hit = send!(app, get("/reval-keep-zero"));
    assert_eq!(header(&hit, "cache-status"), HIT);

    sleep(Duration::from_millis(1100)).await;
    let res = send!(app, get("/reval-keep-zero"));
    assert_eq!(res.status(), StatusCode::OK);
    let status = header(&res, "cache-status");
    assert!(status.contains("fwd=uri-miss"), "{status}");
    assert_eq!(origin.calls.get(), 2);
    assert_eq!(origin.conditional.get(), 0);
    assert_eq!(origin.seen(), [Seen::plain(), Seen::plain()]);
}

// RFC 9111 §4.3: with `keep_stale(Duration::ZERO)` a response that is stale at once
// (max-age=0) has nothing to be kept for: it is not stored at all.
#[actix_web::test]
async fn keep_stale_zero_does_not_store_a_response_stale_at_once() {
    let origin = Origin::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).keep_stale(Duration::ZERO),
        "/reval-keep-zero-stale",
        origin.route(v1_stale_at_once)
    );
    for _ in 0..2 {
        let res = send!(app, get("/reval-keep-zero-stale"));
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header(&res, "cache-status").contains("detail=expired"));
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(store.len(), 0);
    assert_eq!(origin.seen(), [Seen::plain(), Seen::plain()]);
}

// RFC 9111 §4.3: `keep_stale` bounds how long a stale entry is kept: after it, the next
// request is a plain miss.
#[actix_web::test]
async fn keep_stale_bounds_how_long_a_stale_entry_is_kept() {
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).keep_stale(Duration::from_secs(1)),
        "/reval-keep-one",
        origin.route(v1_stale_at_once)
    );
    send!(app, get("/reval-keep-one"));
    sleep(Duration::from_millis(1100)).await;
    let res = send!(app, get("/reval-keep-one"));
    assert!(header(&res, "cache-status").contains("fwd=uri-miss"));
    assert_eq!(origin.seen(), [Seen::plain(), Seen::plain()]);
}

// RFC 9111 §5.2.1.4, §4.3.1: in shared mode a request's `no-cache` revalidates a fresh entry
// with a conditional request; the handler's 304 lets the cache serve the stored body.
#[actix_web::test]
async fn request_no_cache_revalidates_with_a_conditional_request() {
    fn fresh_v1(req: &HttpRequest, _: usize) -> HttpResponse {
        let fields = [("etag", V1), ("cache-control", "max-age=60")];
        answer_if_none_match(req, V1, &fields, &fields)
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).shared(),
        "/reval-request-no-cache",
        origin.route(fresh_v1)
    );
    send!(app, get("/reval-request-no-cache"));
    let res = send!(
        app,
        get("/reval-request-no-cache").insert_header((header::CACHE_CONTROL, "no-cache"))
    );
    assert_eq!(res.status(), StatusCode::OK);
    let status = header(&res, "cache-status");
    assert!(status.contains("fwd=request; fwd-status=304"), "{status}");
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1)]);
}

// RFC 9111 §4.3.4, RFC 6265 §3: the handler ran for this client's request, so a cookie its 304
// sets (a rotated session, say) must reach that client, even though it is not stored.
#[actix_web::test]
async fn set_cookie_on_a_304_reaches_the_client() {
    fn rotating(req: &HttpRequest, _: usize) -> HttpResponse {
        answer_if_none_match(
            req,
            V1,
            &[
                ("etag", V1),
                ("cache-control", "max-age=0"),
                ("set-cookie", "session=rotated"),
            ],
            &[("etag", V1), ("cache-control", "max-age=0")],
        )
    }
    let origin = Origin::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-set-cookie",
        origin.route(rotating)
    );
    send!(app, get("/reval-set-cookie"));
    let res = send!(app, get("/reval-set-cookie"));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "cache-status").contains("fwd-status=304"));
    assert_eq!(
        header(&res, "set-cookie"),
        "session=rotated",
        "the cookie the handler set was lost"
    );
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(origin.seen(), [Seen::plain(), Seen::inm(V1)]);
}

// RFC 9110 §13.1.1, RFC 9111 §4.3: a stale entry is not known to be current, so the cache does
// not judge a conditional PUT against it: an If-Match with another tag goes to the handler
// (where a fresh entry would have given a 412 from the cache).
#[actix_web::test]
async fn conditional_put_against_a_stale_entry_reaches_the_handler() {
    fn v2_stale(_: &HttpRequest, _: usize) -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((header::ETAG, "\"v2\""))
            .insert_header((header::CACHE_CONTROL, "max-age=0"))
            .body(BODY)
    }
    fn v2_fresh(_: &HttpRequest, _: usize) -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((header::ETAG, "\"v2\""))
            .insert_header((header::CACHE_CONTROL, "max-age=60"))
            .body(BODY)
    }
    let counted_put =
        |calls: &Calls| counted(web::put(), calls, |_| HttpResponse::NoContent().finish());
    let (stale_origin, fresh_origin) = (Origin::default(), Origin::default());
    let (stale_puts, fresh_puts) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/reval-put-stale")
            .route(stale_origin.route(v2_stale))
            .route(counted_put(&stale_puts)),
        web::resource("/reval-put-fresh")
            .route(fresh_origin.route(v2_fresh))
            .route(counted_put(&fresh_puts))
    );
    let put = |path: &str| {
        TestRequest::put()
            .uri(path)
            .insert_header((header::IF_MATCH, V1))
    };

    // The control: a fresh entry tagged "v2" is current, so If-Match "v1" fails at the cache.
    send!(app, get("/reval-put-fresh"));
    let res = send!(app, put("/reval-put-fresh"));
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(fresh_puts.get(), 0);

    // The same entry, stale: it may no longer be current, so the cache asks the handler for
    // the current representation (the validator probe, a GET) and judges against that: "v2".
    send!(app, get("/reval-put-stale"));
    let res = send!(app, put("/reval-put-stale"));
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale_puts.get(), 0, "judged before the handler");
    assert_eq!(stale_origin.calls.get(), 2, "the GET, then the probe");

    // Without the probe, only the handler can judge.
    let unprobed = cached_service!(
        Cache::new(MemoryStore::new(100)).probe_validators(false),
        web::resource("/reval-put-stale-unprobed")
            .route(stale_origin.route(v2_stale))
            .route(counted_put(&stale_puts))
    );
    send!(unprobed, get("/reval-put-stale-unprobed"));
    let res = send!(unprobed, put("/reval-put-stale-unprobed"));
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        stale_puts.get(),
        1,
        "the conditional PUT reached the handler"
    );
    assert_eq!(stale_origin.calls.get(), 3);
}

// RFC 9111 §4.3.4: when the refreshed response may no longer be stored (its 304 now says
// `no-store`), the client still gets the representation as the 304 describes it, not the old
// stored header fields.
#[actix_web::test]
async fn a_304_that_forbids_storing_still_describes_the_clients_response() {
    let calls = Calls::default();
    let c = calls.clone();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/reval-no-store-304",
        web::get().to(move |req: HttpRequest| {
            let n = c.hit();
            async move {
                let mut res = if n > 1 && req.headers().contains_key(header::IF_NONE_MATCH) {
                    let mut res = HttpResponse::NotModified();
                    res.insert_header((header::CACHE_CONTROL, "no-store"))
                        .insert_header(("x-version", "2"));
                    return res.finish();
                } else {
                    HttpResponse::Ok()
                };
                res.insert_header((header::CACHE_CONTROL, "max-age=0"))
                    .insert_header((header::ETAG, "\"v1\""))
                    .insert_header(("x-version", "1"))
                    .body("body")
            }
        })
    );
    let request = || get("/reval-no-store-304").to_request();
    read_body(call_service(&app, request()).await).await;
    let res = call_service(&app, request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-version"), "2");
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    assert!(header(&res, "cache-status").contains("detail=no-store"));
    assert_eq!(read_body(res).await, "body");
}
