//! Conditional requests through the `Cache` middleware: RFC 9110 §13 (preconditions),
//! §8.8.3 (entity tag comparison) and §15.4.5 (the 304 response).
//!
//! Every test uses its own path: the middleware's write log (its race guard) is shared by the
//! whole process, so a write in one test must not touch the resource of another.

mod common;

use std::time::{Duration, SystemTime};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    body::{BodySize, MessageBody},
    http::{
        header::{self, HeaderName, HeaderValue},
        Method, StatusCode,
    },
    middleware::Compress,
    rt::time::sleep,
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse, Route,
};
use common::{
    body_size, cached_route, cached_service, counted, etag_of, get, header, http_date,
    last_modified, req_header, Calls,
};
use futures_util::future::join;

const BODY: &str = "the representation";

const DAY: Duration = Duration::from_secs(86_400);

/// A `GET` route that counts its calls and answers `200 BODY`.
fn counted_get(calls: &Calls) -> Route {
    counted(web::get(), calls, |_| {
        HttpResponse::Ok().content_type("text/plain").body(BODY)
    })
}

/// A `GET` route that counts its calls and sets `Last-Modified`.
fn counted_get_with_last_modified(calls: &Calls) -> Route {
    counted(web::get(), calls, |_| {
        HttpResponse::Ok()
            .insert_header((header::LAST_MODIFIED, http_date(last_modified())))
            .body(BODY)
    })
}

/// A route for every other method that counts its calls and answers `204`.
fn counted_write(calls: &Calls) -> Route {
    counted(web::route(), calls, |_| HttpResponse::NoContent().finish())
}

/// A resource at `path` with a counted `GET` and a counted write handler.
fn resource(path: &str, reads: &Calls, writes: &Calls) -> actix_web::Resource {
    web::resource(path)
        .route(counted_get(reads))
        .route(counted_write(writes))
}

/// A resource at `path` with a counted `GET` that sets `Last-Modified` and a counted write handler.
fn dated_resource(path: &str, reads: &Calls, writes: &Calls) -> actix_web::Resource {
    web::resource(path)
        .route(counted_get_with_last_modified(reads))
        .route(counted_write(writes))
}

// RFC 9110 §13.1.2: If-None-Match that matches the fresh response → 304, even on a cold store.
#[actix_web::test]
async fn if_none_match_on_a_cold_store_is_304_from_the_fresh_response() {
    common::init_log();
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-cold", &reads, &writes)
    );
    let tag = etag_of(BODY.as_bytes());

    let res = call_service(
        &app,
        get("/inm-cold")
            .insert_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), tag);
    assert_eq!(body_size(&res), BodySize::None);
    assert!(read_body(res).await.is_empty());
    assert_eq!(reads.get(), 1, "a miss calls the handler once");

    // The miss stored the representation: a plain GET is now a hit with the full body.
    let res = call_service(&app, get("/inm-cold").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.2: If-None-Match that matches the stored response → 304 without the handler.
#[actix_web::test]
async fn if_none_match_on_a_hit_is_304_without_the_handler() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-hit", &reads, &writes)
    );

    let res = call_service(&app, get("/inm-hit").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tag = header(&res, "etag");
    assert_eq!(tag, etag_of(BODY.as_bytes()));

    let res = call_service(
        &app,
        get("/inm-hit")
            .insert_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), tag);
    assert!(header(&res, "cache-status").contains("hit"));
    assert!(
        !header(&res, "age").is_empty(),
        "a 304 from the store carries Age"
    );
    assert_eq!(body_size(&res), BodySize::None);
    assert!(read_body(res).await.is_empty());
    assert_eq!(reads.get(), 1, "the 304 came from the store");
}

// RFC 9110 §13.1.2 / §9.3.2: If-None-Match on HEAD is evaluated like on GET.
#[actix_web::test]
async fn if_none_match_on_head_is_304() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-head", &reads, &writes)
    );
    let tag = etag_of(BODY.as_bytes());
    for expected_reads in [1, 1] {
        let res = call_service(
            &app,
            get("/inm-head")
                .method(Method::HEAD)
                .insert_header((header::IF_NONE_MATCH, tag.as_str()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&res, "etag"), tag);
        assert_eq!(reads.get(), expected_reads);
    }
}

// RFC 9110 §8.8.3.2, §13.1.2: If-None-Match uses the weak comparison, so W/"x" matches "x".
#[actix_web::test]
async fn weak_if_none_match_matches_the_strong_etag() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-weak", &reads, &writes)
    );
    let weak = format!("W/{}", etag_of(BODY.as_bytes()));

    // Cold (the handler's fresh response), then from the store.
    for _ in 0..2 {
        let res = call_service(
            &app,
            get("/inm-weak")
                .insert_header((header::IF_NONE_MATCH, weak.as_str()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(read_body(res).await.is_empty());
    }
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.2: a list matches if any member matches; malformed members are skipped.
#[actix_web::test]
async fn if_none_match_list_with_junk_members_matches_any_valid_member() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-list", &reads, &writes)
    );
    let tag = etag_of(BODY.as_bytes());

    let matching = format!("junk, \"nope\", ,, W/\"other\", {tag}, \"unterminated");
    let res = call_service(
        &app,
        get("/inm-list")
            .insert_header((header::IF_NONE_MATCH, matching.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // The same list split over two field lines matches too.
    let res = call_service(
        &app,
        get("/inm-list")
            .append_header((header::IF_NONE_MATCH, "\"a\", junk"))
            .append_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // No member matches: the full representation.
    let res = call_service(
        &app,
        get("/inm-list")
            .insert_header((header::IF_NONE_MATCH, "\"a\", junk, W/\"b\", \"c"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.2: `If-None-Match: *` is false only when no representation exists.
#[actix_web::test]
async fn if_none_match_star_is_304_when_a_representation_exists() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-star", &reads, &writes)
    );
    for _ in 0..2 {
        let res = call_service(
            &app,
            get("/inm-star")
                .insert_header((header::IF_NONE_MATCH, "*"))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&res, "etag"), etag_of(BODY.as_bytes()));
    }
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.3: If-Modified-Since at or after Last-Modified → 304; before → 200.
#[actix_web::test]
async fn if_modified_since_is_304_when_not_modified_since_last_modified() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        dated_resource("/ims", &reads, &writes)
    );

    // Cold: evaluated on the handler's fresh response.
    let res = call_service(
        &app,
        get("/ims")
            .insert_header((header::IF_MODIFIED_SINCE, http_date(last_modified())))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "last-modified"), http_date(last_modified()));
    assert!(read_body(res).await.is_empty());

    // From the store: a later date is not modified either.
    let res = call_service(
        &app,
        get("/ims")
            .insert_header((header::IF_MODIFIED_SINCE, http_date(last_modified() + DAY)))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // An earlier date: modified since, full response.
    let res = call_service(
        &app,
        get("/ims")
            .insert_header((header::IF_MODIFIED_SINCE, http_date(last_modified() - DAY)))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, BODY.as_bytes());
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.3: a recipient MUST ignore If-Modified-Since when If-None-Match is present.
#[actix_web::test]
async fn if_modified_since_is_ignored_when_if_none_match_is_present() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        dated_resource("/ims-inm", &reads, &writes)
    );
    // Cold, then from the store.
    for _ in 0..2 {
        let res = call_service(
            &app,
            get("/ims-inm")
                .insert_header((header::IF_NONE_MATCH, "\"not-the-tag\""))
                .insert_header((header::IF_MODIFIED_SINCE, http_date(last_modified() + DAY)))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.3: an invalid If-Modified-Since date is ignored.
#[actix_web::test]
async fn invalid_if_modified_since_date_is_ignored() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        dated_resource("/ims-invalid", &reads, &writes)
    );
    for value in ["not a date", "Sun, 99 Foo 2015 07:28:00 GMT", "0", ""] {
        let res = call_service(
            &app,
            get("/ims-invalid")
                .insert_header((header::IF_MODIFIED_SINCE, value))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "If-Modified-Since: {value:?}");
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.1: If-Match that does not strongly match on GET → 412.
#[actix_web::test]
async fn if_match_mismatch_on_get_is_412() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/im-get", &reads, &writes)
    );
    let tag = etag_of(BODY.as_bytes());

    // Cold (the fresh response), then from the store.
    for _ in 0..2 {
        let res = call_service(
            &app,
            get("/im-get")
                .insert_header((header::IF_MATCH, "\"nope\""))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
        assert!(read_body(res).await.is_empty());
    }
    // A weak member never matches If-Match (strong comparison).
    let res = call_service(
        &app,
        get("/im-get")
            .insert_header((header::IF_MATCH, format!("W/{tag}")))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);

    // A strong match, and `*`, serve the representation.
    for value in [tag.as_str(), "*"] {
        let res = call_service(
            &app,
            get("/im-get")
                .insert_header((header::IF_MATCH, value))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "If-Match: {value}");
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    assert_eq!(reads.get(), 1);
}

/// Stores the representation of `path` with a GET, then sends `method` with a stale If-Match.
async fn assert_stale_if_match_is_412_before_the_handler(method: Method, path: &str) {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource(path, &reads, &writes)
    );
    let res = call_service(&app, get(path).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(reads.get(), 1);

    let res = call_service(
        &app,
        TestRequest::default()
            .method(method.clone())
            .uri(path)
            .insert_header((header::IF_MATCH, "\"stale\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED, "{method}");
    assert!(read_body(res).await.is_empty());
    assert_eq!(writes.get(), 0, "{method}: the handler must not run");

    // Nothing was written, so the stored entry is still served.
    let res = call_service(&app, get(path).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §13.1.1, §13.2.1: a false If-Match on PUT → 412 before the method is performed.
#[actix_web::test]
async fn stale_if_match_on_put_is_412_before_the_handler() {
    assert_stale_if_match_is_412_before_the_handler(Method::PUT, "/stale-put").await;
}

// RFC 9110 §13.1.1, §13.2.1: a false If-Match on PATCH → 412 before the method is performed.
#[actix_web::test]
async fn stale_if_match_on_patch_is_412_before_the_handler() {
    assert_stale_if_match_is_412_before_the_handler(Method::PATCH, "/stale-patch").await;
}

// RFC 9110 §13.1.1, §13.2.1: a false If-Match on DELETE → 412 before the method is performed.
#[actix_web::test]
async fn stale_if_match_on_delete_is_412_before_the_handler() {
    assert_stale_if_match_is_412_before_the_handler(Method::DELETE, "/stale-delete").await;
}

// RFC 9110 §13.1.1, §13.2.1: a false If-Match on POST → 412 before the method is performed.
#[actix_web::test]
async fn stale_if_match_on_post_is_412_before_the_handler() {
    assert_stale_if_match_is_412_before_the_handler(Method::POST, "/stale-post").await;
}

// RFC 9110 §13.1.1: If-Match that strongly matches the current ETag → the method is performed.
#[actix_web::test]
async fn matching_if_match_on_put_runs_the_handler() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/im-put-ok", &reads, &writes)
    );
    let res = call_service(&app, get("/im-put-ok").to_request()).await;
    let tag = header(&res, "etag");

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/im-put-ok")
            .insert_header((header::IF_MATCH, format!("\"other\", {tag}")))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// RFC 9111 §4.4: a successful unsafe request invalidates the stored response of its target.
#[actix_web::test]
async fn successful_write_invalidates_the_stored_entry() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/invalidate", &reads, &writes)
    );
    call_service(&app, get("/invalidate").to_request()).await;
    call_service(&app, get("/invalidate").to_request()).await;
    assert_eq!(reads.get(), 1);

    let res = call_service(&app, TestRequest::put().uri("/invalidate").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let res = call_service(&app, get("/invalidate").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        reads.get(),
        2,
        "the GET after the write reaches the handler"
    );
}

// RFC 9110 §13.1.4: If-Unmodified-Since earlier than Last-Modified → 412 before the method.
#[actix_web::test]
async fn if_unmodified_since_before_last_modified_is_412_before_the_handler() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        dated_resource("/ius", &reads, &writes)
    );
    call_service(&app, get("/ius").to_request()).await;

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/ius")
            .insert_header((
                header::IF_UNMODIFIED_SINCE,
                http_date(last_modified() - DAY),
            ))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(writes.get(), 0, "the handler must not run");

    // Not modified since the date: the method is performed.
    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/ius")
            .insert_header((header::IF_UNMODIFIED_SINCE, http_date(last_modified())))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// RFC 9110 §13.1.2: `If-None-Match: *` on PUT when a representation exists → 412.
#[actix_web::test]
async fn if_none_match_star_on_put_is_412_when_an_entry_is_stored() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-star-put", &reads, &writes)
    );
    call_service(&app, get("/inm-star-put").to_request()).await;

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/inm-star-put")
            .insert_header((header::IF_NONE_MATCH, "*"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert!(read_body(res).await.is_empty());
    assert_eq!(writes.get(), 0, "the handler must not run");
}

// RFC 9110 §13.1.1 (lost update): two clients hold e1; the second PATCH with If-Match e1 → 412.
#[actix_web::test]
async fn lost_update_second_patch_with_the_same_if_match_is_412() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/lost-update", &reads, &writes)
    );
    // Clients A and B both read e1.
    let e1_a = header(
        &call_service(&app, get("/lost-update").to_request()).await,
        "etag",
    );
    let e1_b = header(
        &call_service(&app, get("/lost-update").to_request()).await,
        "etag",
    );
    assert_eq!(e1_a, e1_b);
    assert_eq!(reads.get(), 1);

    let patch = |tag: &str| {
        TestRequest::patch()
            .uri("/lost-update")
            .insert_header((header::IF_MATCH, tag))
            .to_request()
    };
    let res = call_service(&app, patch(&e1_a)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "A's PATCH succeeds");
    let res = call_service(&app, patch(&e1_b)).await;
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "B's PATCH is stale"
    );
    assert_eq!(writes.get(), 1, "only A's PATCH reached the handler");
}

// RFC 9110 §13.2.1: when the cache knows nothing and may not ask (the validator probe is off),
// only the origin (the handler) can evaluate. The probe itself: tests/probe.rs.
#[actix_web::test]
async fn conditional_write_on_a_cold_store_reaches_the_handler() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)).probe_validators(false),
        resource("/cold-write", &reads, &writes),
        resource("/cold-write-star", &reads, &writes)
    );
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri("/cold-write")
            .insert_header((header::IF_MATCH, "\"whatever\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/cold-write-star")
            .insert_header((header::IF_NONE_MATCH, "*"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 2);
    assert_eq!(reads.get(), 0);
}

/// The fields RFC 9110 §15.4.5 lets a 304 carry, plus Last-Modified.
const NOT_MODIFIED_FIELDS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// Checks that a 304 carries exactly the §15.4.5 fields of the 200, with the same values,
/// besides the cache's own `Age` and `Cache-Status`, and no body.
fn assert_not_modified_mirrors<B: MessageBody>(
    not_modified: &actix_web::dev::ServiceResponse<B>,
    full: &actix_web::dev::ServiceResponse<impl MessageBody>,
) {
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(body_size(not_modified), BodySize::None);
    for name in NOT_MODIFIED_FIELDS {
        let a: Vec<&HeaderValue> = not_modified.headers().get_all(&name).collect();
        let b: Vec<&HeaderValue> = full.headers().get_all(&name).collect();
        assert!(!b.is_empty(), "the 200 carries {name}");
        assert_eq!(a, b, "{name} of the 304 and of the 200");
    }
    let mut extra: Vec<&str> = not_modified
        .headers()
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| !NOT_MODIFIED_FIELDS.iter().any(|f| f.as_str() == *n))
        .filter(|n| *n != "age" && *n != "cache-status")
        .collect();
    extra.sort_unstable();
    assert!(extra.is_empty(), "the 304 carries other fields: {extra:?}");
}

// RFC 9110 §15.4.5: a 304 carries the Cache-Control, Content-Location, Date, ETag, Expires and
// Vary (and Last-Modified) of the 200, and no other representation metadata, and no body.
#[actix_web::test]
async fn not_modified_carries_exactly_the_rfc_fields_of_the_200() {
    let reads = Calls::default();
    let now = SystemTime::now();
    let handler = counted(web::get(), &reads, move |_| {
        HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "max-age=60"))
            .insert_header((header::CONTENT_LOCATION, "/fields.json"))
            .insert_header((header::DATE, http_date(now)))
            .insert_header((header::EXPIRES, http_date(now + DAY)))
            .insert_header((header::VARY, "Accept-Language"))
            .insert_header((header::LAST_MODIFIED, http_date(last_modified())))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::CONTENT_LANGUAGE, "en"))
            .insert_header(("x-custom", "yes"))
            .body("{\"a\":1}")
    });
    let app = cached_route!(Cache::new(MemoryStore::new(100)), "/fields", handler);
    let tag = etag_of(b"{\"a\":1}");
    let conditional = || {
        get("/fields")
            .insert_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request()
    };

    // The 304 of a miss (evaluated on the handler's fresh response).
    let miss_304 = call_service(&app, conditional()).await;
    // The stored 200, then the 304 of a hit.
    let full = call_service(&app, get("/fields").to_request()).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(header(&full, "content-type"), "application/json");
    assert_eq!(header(&full, "x-custom"), "yes");
    let hit_304 = call_service(&app, conditional()).await;
    assert_eq!(reads.get(), 1);

    assert_not_modified_mirrors(&miss_304, &full);
    assert_not_modified_mirrors(&hit_304, &full);
    assert!(read_body(miss_304).await.is_empty());
    assert!(read_body(hit_304).await.is_empty());
}

// RFC 9110 §15.4.5: a 304 has no content, so an outer Compress must not encode it.
#[actix_web::test]
async fn not_modified_through_compress_has_no_body_and_no_content_encoding() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .wrap(Compress::default())
            .service(resource("/compress", &reads, &writes)),
    )
    .await;
    let tag = etag_of(BODY.as_bytes());
    let conditional = || {
        get("/compress")
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .insert_header((header::IF_NONE_MATCH, tag.as_str()))
            .to_request()
    };

    // A miss answered 304, then a 304 from the store.
    for _ in 0..2 {
        let res = call_service(&app, conditional()).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(!res.headers().contains_key(header::CONTENT_ENCODING));
        assert!(matches!(
            body_size(&res),
            BodySize::None | BodySize::Sized(0)
        ));
        assert!(read_body(res).await.is_empty());
    }

    // Compress is active: the 200 is gzip-encoded (and the ETag is still the identity one).
    let res = call_service(
        &app,
        get("/compress")
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-encoding"), "gzip");
    assert!(!read_body(res).await.is_empty());
    assert_eq!(reads.get(), 1);
}

/// A header value of raw bytes, obs-text included.
fn raw(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("a valid header value")
}

/// A list of `n` non-matching tags.
fn long_list(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"t{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

// RFC 9110 §8.8.3, §13.1.2: a malformed If-None-Match is no match, never a server error.
#[actix_web::test]
async fn malformed_if_none_match_never_gives_500() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/inm-malformed", &reads, &writes)
    );
    let values = [
        raw(b"\"unterminated"),
        raw(b"\"\xff"),
        raw(b"\"\xff\xfe\""),
        raw(b"W/"),
        raw(b"W/\""),
        raw(b"\""),
        raw(b",,,"),
        raw(b"**"),
        raw(b"\"a\"\"b\""),
        raw(long_list(1000).as_bytes()),
    ];
    // The first request is a miss (the fresh response), the rest are hits.
    for value in values {
        let res = call_service(
            &app,
            get("/inm-malformed")
                .insert_header((header::IF_NONE_MATCH, value.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "If-None-Match: {value:?}");
        assert_eq!(read_body(res).await, BODY.as_bytes());
    }
    // All 1000 members are read: a matching 1001st member gives a 304.
    let list = format!("{}, {}", long_list(1000), etag_of(BODY.as_bytes()));
    let res = call_service(
        &app,
        get("/inm-malformed")
            .insert_header((header::IF_NONE_MATCH, list.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(reads.get(), 1);
}

// RFC 9110 §8.8.3, §13.1.1: a malformed If-Match is no match (412), never a server error.
#[actix_web::test]
async fn malformed_if_match_never_gives_500() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/im-malformed", &reads, &writes)
    );
    let values = [
        raw(b"\"unterminated"),
        raw(b"\"\xff"),
        raw(b"\"\xff\xfe\""),
        raw(b"W/"),
        raw(b"\""),
        raw(b",,,"),
        raw(long_list(1000).as_bytes()),
    ];
    for value in &values {
        let res = call_service(
            &app,
            get("/im-malformed")
                .insert_header((header::IF_MATCH, value.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::PRECONDITION_FAILED,
            "GET If-Match: {value:?}"
        );
    }
    for value in &values {
        let res = call_service(
            &app,
            TestRequest::patch()
                .uri("/im-malformed")
                .insert_header((header::IF_MATCH, value.clone()))
                .to_request(),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::PRECONDITION_FAILED,
            "PATCH If-Match: {value:?}"
        );
    }
    assert_eq!(writes.get(), 0);
    assert_eq!(reads.get(), 1);

    // All 1000 members are read: a matching 1001st member lets the PATCH through.
    let list = format!("{}, {}", long_list(1000), etag_of(BODY.as_bytes()));
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri("/im-malformed")
            .insert_header((header::IF_MATCH, list.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// RFC 9110 §8.8.3: the origin's own entity tag is the validator; the cache keeps and uses it.
#[actix_web::test]
async fn handler_etag_is_kept_and_used_for_matching() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let get_route = counted(web::get(), &reads, |_| {
        HttpResponse::Ok()
            .insert_header((header::ETAG, "\"v1\""))
            .body(BODY)
    });
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/own-etag")
            .route(get_route)
            .route(counted_write(&writes))
    );

    // Cold: the fresh response's own tag matches.
    let res = call_service(
        &app,
        get("/own-etag")
            .insert_header((header::IF_NONE_MATCH, "\"v1\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, "etag"), "\"v1\"");

    let res = call_service(&app, get("/own-etag").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get_all(header::ETAG).count(), 1);
    assert_eq!(
        header(&res, "etag"),
        "\"v1\"",
        "the handler's ETag is not replaced"
    );

    // From the store: "v1" matches, the body hash does not.
    let res = call_service(
        &app,
        get("/own-etag")
            .insert_header((header::IF_NONE_MATCH, "\"v1\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = call_service(
        &app,
        get("/own-etag")
            .insert_header((header::IF_NONE_MATCH, etag_of(BODY.as_bytes())))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(reads.get(), 1);

    // Writes are judged against "v1" too.
    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/own-etag")
            .insert_header((header::IF_MATCH, etag_of(BODY.as_bytes())))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(writes.get(), 0);
    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/own-etag")
            .insert_header((header::IF_MATCH, "\"v1\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// RFC 9110 §13.2.1: preconditions are ignored when the response would not be a 2xx.
#[actix_web::test]
async fn preconditions_are_ignored_on_non_2xx_responses() {
    let calls = Calls::default();
    let gone = counted(web::get(), &calls, |_| {
        HttpResponse::NotFound().body("no such thing")
    });
    let stored_gone = || async {
        HttpResponse::NotFound()
            .insert_header((header::CACHE_CONTROL, "max-age=60"))
            .body("stored 404")
    };
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .route("/missing", gone)
            .route("/missing-stored", web::get().to(stored_gone)),
    )
    .await;

    for (name, value) in [
        (header::IF_MATCH, "\"x\""),
        (header::IF_NONE_MATCH, "*"),
        (header::IF_MATCH, "*"),
    ] {
        // A 404 handler, a stored 404 (miss then hit), and an unknown route.
        for (path, body) in [
            ("/missing", "no such thing"),
            ("/missing-stored", "stored 404"),
            ("/missing-stored", "stored 404"),
            ("/no-route-here", ""),
        ] {
            let res = call_service(
                &app,
                get(path).insert_header((name.clone(), value)).to_request(),
            )
            .await;
            assert_eq!(
                res.status(),
                StatusCode::NOT_FOUND,
                "{path} with {name}: {value}"
            );
            assert_eq!(read_body(res).await, body.as_bytes());
        }
    }
    assert_eq!(calls.get(), 3, "the plain 404 is not stored");
}

// RFC 9110 §13.1.1, RFC 9111 §3.5: a request with credentials is not judged against a shared
// entry it would not be served (its own representation, and so its ETag, may differ).
#[actix_web::test]
async fn conditional_write_with_credentials_is_not_judged_against_the_shared_entry() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let get_route = counted(web::get(), &reads, |req| {
        let user = req_header(req, header::AUTHORIZATION);
        HttpResponse::Ok().body(format!("hello {user}"))
    });
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/credentialed-write")
            .route(get_route)
            .route(counted_write(&writes))
    );
    // The anonymous representation is stored.
    let anonymous = call_service(&app, get("/credentialed-write").to_request()).await;
    assert_eq!(header(&anonymous, "etag"), etag_of(b"hello "));

    // Alice is not served the shared entry: she gets her own representation and ETag.
    let alice = call_service(
        &app,
        get("/credentialed-write")
            .insert_header((header::AUTHORIZATION, "Bearer alice"))
            .to_request(),
    )
    .await;
    let alice_tag = header(&alice, "etag");
    assert_eq!(alice_tag, etag_of(b"hello Bearer alice"));
    assert_eq!(reads.get(), 2);

    // Her write, conditional on the tag she was given, must reach the handler.
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri("/credentialed-write")
            .insert_header((header::AUTHORIZATION, "Bearer alice"))
            .insert_header((header::IF_MATCH, alice_tag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "Alice's If-Match is her current tag"
    );
    assert_eq!(writes.get(), 1);
}

// RFC 9110 §13.1.1 (lost update): two concurrent PUTs with the same current If-Match: the
// first is performed, the second finds the tag superseded and gets 412.
#[actix_web::test]
async fn concurrent_puts_with_the_same_if_match_perform_only_one() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let slow_write = {
        let writes = writes.clone();
        web::put().to(move || {
            let writes = writes.clone();
            async move {
                writes.hit();
                sleep(Duration::from_millis(30)).await;
                HttpResponse::NoContent().finish()
            }
        })
    };
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/concurrent-if-match")
            .route(counted_get(&reads))
            .route(slow_write)
    );
    let tag = header(
        &call_service(&app, get("/concurrent-if-match").to_request()).await,
        "etag",
    );

    let put = || {
        call_service(
            &app,
            TestRequest::put()
                .uri("/concurrent-if-match")
                .insert_header((header::IF_MATCH, tag.as_str()))
                .to_request(),
        )
    };
    let (a, b) = join(put(), put()).await;
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [204, 412],
        "exactly one of two PUTs with the same If-Match may be performed"
    );
    assert_eq!(writes.get(), 1, "both PUTs reached the handler");
}

// RFC 9110 §13.1.4: after a write, If-Unmodified-Since is judged by the Last-Modified the write
// answered with: a client that sends that date back has not missed a change.
#[actix_web::test]
async fn if_unmodified_since_the_write_s_last_modified_reaches_the_handler() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let dated_write = counted(web::put(), &writes, |_| {
        HttpResponse::NoContent()
            .insert_header((header::LAST_MODIFIED, http_date(last_modified())))
            .finish()
    });
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/ius-after-write")
            .route(counted_get(&reads))
            .route(dated_write)
    );
    let res = call_service(
        &app,
        TestRequest::put().uri("/ius-after-write").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&res, "last-modified"), http_date(last_modified()));

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/ius-after-write")
            .insert_header((header::IF_UNMODIFIED_SINCE, http_date(last_modified())))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "If-Unmodified-Since equal to the write's Last-Modified"
    );
    assert_eq!(writes.get(), 2);
}

// RFC 9110 §15.4.5, RFC 6265 §3: a 304 made from the handler's fresh response keeps the cookie
// the handler set (e.g. a rotated session): Set-Cookie is not representation metadata.
#[actix_web::test]
async fn not_modified_on_a_miss_keeps_the_handler_s_set_cookie() {
    let reads = Calls::default();
    let route = counted(web::get(), &reads, |_| {
        HttpResponse::Ok()
            .insert_header((header::SET_COOKIE, "session=rotated"))
            .body(BODY)
    });
    let app = cached_route!(Cache::new(MemoryStore::new(100)), "/inm-set-cookie", route);
    let res = call_service(
        &app,
        get("/inm-set-cookie")
            .insert_header((header::IF_NONE_MATCH, etag_of(BODY.as_bytes())))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(reads.get(), 1);
    assert_eq!(
        header(&res, "set-cookie"),
        "session=rotated",
        "the 304 dropped the handler's Set-Cookie"
    );
    assert!(read_body(res).await.is_empty());
}

// RFC 9110 §13.1.1: `If-Match` is `"*" / #entity-tag`: `*` inside a list is malformed, not "any".
#[actix_web::test]
async fn star_inside_an_if_match_list_is_not_any() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        resource("/im-star-list", &reads, &writes)
    );
    let res = call_service(&app, get("/im-star-list").to_request()).await;
    assert_ne!(header(&res, "etag"), "\"a\"");

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/im-star-list")
            .insert_header((header::IF_MATCH, "\"a\", *"))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "If-Match: \"a\", * against another stored tag"
    );
    assert_eq!(writes.get(), 0, "the handler must not run");
}

// RFC 9110 §13.1.4: after a write whose response carried no Last-Modified, the resource has
// still certainly been modified since the Last-Modified stored before it: If-Unmodified-Since
// with that older date gets 412, not a lost update.
#[actix_web::test]
async fn if_unmodified_since_before_a_write_without_last_modified_is_412() {
    let (reads, writes) = (Calls::default(), Calls::default());
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        dated_resource("/ius-after-write", &reads, &writes)
    );
    call_service(&app, get("/ius-after-write").to_request()).await;
    // A plain write: its 204 has no Last-Modified.
    let res = call_service(
        &app,
        TestRequest::put().uri("/ius-after-write").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/ius-after-write")
            .insert_header((header::IF_UNMODIFIED_SINCE, http_date(last_modified())))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "a write changed the resource after the client's date"
    );
    assert_eq!(writes.get(), 1, "the second handler must not run");
}
