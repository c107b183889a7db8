//! Resource identity (DESIGN "Resource identity"): the key follows actix's router, so two
//! requests the router tells apart never share an entry; the invalidation group follows the
//! extractors, so a write through any alias of a resource collects every alias. Each alias
//! class is checked both ways: written through the alias and read through the plain form, and
//! the reverse. Each test uses paths no other test writes: the race guard is process-wide, and
//! the tests of a file run in parallel.

mod common;

use std::{collections::HashMap, sync::Arc};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpRequest, HttpResponse,
};
use common::{body_size, header, Calls};
use parking_lot::Mutex;

/// The application's data: one value per name, as a handler sees the name (after the
/// extractor decoded it). A write sets it; a read returns it.
#[derive(Clone, Default)]
struct Table {
    values: Arc<Mutex<HashMap<String, String>>>,
    reads: Calls,
}

impl Table {
    fn read(&self, name: &str) -> HttpResponse {
        self.reads.hit();
        let value = self.values.lock().get(name).cloned();
        HttpResponse::Ok().body(format!("{name}={}", value.unwrap_or_default()))
    }

    fn write(&self, name: &str, value: String) -> HttpResponse {
        self.values.lock().insert(name.to_owned(), value);
        HttpResponse::NoContent().finish()
    }
}

macro_rules! table_app {
    ($table:expr) => {{
        let t = $table.clone();
        let (r1, w1, r2, w2, r3, w3) = (t.clone(), t.clone(), t.clone(), t.clone(), t.clone(), t);
        init_service(
            App::new()
                .wrap(Cache::new(MemoryStore::new(1_000)))
                .route(
                    "/users/{id}",
                    web::get().to(move |id: web::Path<String>| {
                        let t = r1.clone();
                        async move { t.read(&id) }
                    }),
                )
                .route(
                    "/users/{id}",
                    web::patch().to(move |id: web::Path<String>, body: String| {
                        let t = w1.clone();
                        async move { t.write(&id, body) }
                    }),
                )
                .route(
                    "/files/{tail:.*}",
                    web::get().to(move |tail: web::Path<String>| {
                        let t = r2.clone();
                        async move { t.read(&tail) }
                    }),
                )
                .route(
                    "/files/{tail:.*}",
                    web::patch().to(move |tail: web::Path<String>, body: String| {
                        let t = w2.clone();
                        async move { t.write(&tail, body) }
                    }),
                )
                .route(
                    "/search",
                    web::get().to(move |q: web::Query<HashMap<String, String>>| {
                        let t = r3.clone();
                        async move { t.read(&format!("{:?}", sorted(&q))) }
                    }),
                )
                .route(
                    "/search",
                    web::patch().to(
                        move |q: web::Query<HashMap<String, String>>, body: String| {
                            let t = w3.clone();
                            async move { t.write(&format!("{:?}", sorted(&q)), body) }
                        },
                    ),
                ),
        )
        .await
    }};
}

fn sorted(q: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort();
    pairs
}

async fn body_of<B: actix_web::body::MessageBody>(
    res: actix_web::dev::ServiceResponse<B>,
) -> String {
    String::from_utf8_lossy(&read_body(res).await).into_owned()
}

/// Stores `read` (two GETs, one handler call), writes through `write`, and checks that the
/// next GET of `read` reaches the handler and shows the write.
async fn write_through_alias_collects(read: &str, write: &str) {
    let table = Table::default();
    let app = table_app!(table);
    let first = body_of(call_service(&app, TestRequest::get().uri(read).to_request()).await).await;
    let again = call_service(&app, TestRequest::get().uri(read).to_request()).await;
    assert_eq!(table.reads.get(), 1, "{read} was not stored");
    assert_eq!(body_of(again).await, first);

    let value = format!("written-through-{write}");
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri(write)
            .set_payload(value.clone())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "PATCH {write}");

    let after = call_service(&app, TestRequest::get().uri(read).to_request()).await;
    assert_eq!(
        table.reads.get(),
        2,
        "GET {read} after PATCH {write} was served from the cache"
    );
    assert!(
        body_of(after).await.ends_with(&value),
        "GET {read} after PATCH {write} shows the old value"
    );
}

/// Every alias pair, both ways.
async fn both_ways(a: &str, b: &str) {
    write_through_alias_collects(a, b).await;
    write_through_alias_collects(b, a).await;
}

// Percent-encoded unreserved bytes: the router decodes `%31` to `1`.
#[actix_web::test]
async fn percent_encoded_unreserved_bytes() {
    both_ways("/users/1", "/users/%31").await;
    both_ways("/users/abc", "/users/%61%62c").await;
}

// Hex digits in either case decode to the same byte.
#[actix_web::test]
async fn hex_case_of_escapes() {
    both_ways("/users/a%3ab", "/users/a%3Ab").await;
    both_ways("/users/%c3%a9", "/users/%C3%A9").await;
}

// Reserved characters the router decodes (`%3A` is `:` to the router).
#[actix_web::test]
async fn reserved_characters_the_router_decodes() {
    both_ways("/users/c:d", "/users/c%3Ad").await;
    both_ways("/users/a@b", "/users/a%40b").await;
}

// `+`, `%2B` and `%2b`: the router keeps them apart, the `Path` extractor does not.
#[actix_web::test]
async fn plus_and_its_escapes_on_a_tail_route() {
    both_ways("/files/a+b", "/files/a%2Bb").await;
    both_ways("/files/a+b", "/files/a%2bb").await;
    both_ways("/files/a%2Bb", "/files/a%2bb").await;
}

// `/`, `%2F` and `%2f` on a `{tail:.*}` route: the router keeps them apart, the extractor
// hands the handler one string.
#[actix_web::test]
async fn slash_and_its_escapes_on_a_tail_route() {
    both_ways("/files/a/b", "/files/a%2Fb").await;
    both_ways("/files/a/b", "/files/a%2fb").await;
    both_ways("/files/a%2Fb", "/files/a%2fb").await;
}

// Invalid UTF-8 that extractors decode lossily: `%FF`, `%FE` and `%EF%BF%BD` (U+FFFD) reach the
// handler as one string.
#[actix_web::test]
async fn invalid_utf8_decoded_lossily() {
    both_ways("/users/x%FF", "/users/x%FE").await;
    both_ways("/users/x%FF", "/users/x%EF%BF%BD").await;
    both_ways("/files/x%FE", "/files/x%EF%BF%BD").await;
}

// An absolute-form request target names the same resource as the origin form.
#[actix_web::test]
async fn absolute_form_request_target() {
    both_ways("/users/7", "http://localhost:8080/users/7").await;
    both_ways("/users/8", "https://localhost:8080/users/8").await;
}

// The query string, as `web::Query` reads it: escapes decoded, `+` a space, any order.
#[actix_web::test]
async fn query_string_aliases() {
    both_ways("/search?page=2", "/search?page=%32").await;
    both_ways("/search?q=a+b", "/search?q=a%20b").await;
    both_ways("/search?a=1&b=2", "/search?b=2&a=1").await;
}

// Two requests the router tells apart never share an entry: a handler that reads the raw
// match sees different values for `a/b` and `a%2Fb`.
#[actix_web::test]
async fn requests_the_router_tells_apart_do_not_share_an_entry() {
    let calls = Calls::default();
    let c = calls.clone();
    let app = init_service(App::new().wrap(Cache::new(MemoryStore::new(100))).route(
        "/raw/{tail:.*}",
        web::get().to(move |req: HttpRequest| {
            c.hit();
            let raw = req.match_info().get("tail").unwrap_or_default().to_owned();
            async move { HttpResponse::Ok().body(raw) }
        }),
    ))
    .await;
    let mut bodies = Vec::new();
    for uri in [
        "/raw/a/b",
        "/raw/a%2Fb",
        "/raw/a%2fb",
        "/raw/a+b",
        "/raw/a%2Bb",
    ] {
        for _ in 0..2 {
            let res = call_service(&app, TestRequest::get().uri(uri).to_request()).await;
            bodies.push((uri, body_of(res).await));
        }
    }
    assert_eq!(calls.get(), 5, "each form was stored once, apart");
    for (uri, body) in bodies {
        assert_eq!(
            format!("/raw/{body}"),
            uri,
            "{uri} was answered with another's entry"
        );
    }
    // And forms the router does not tell apart share one: `%61` is `a`.
    let res = call_service(&app, TestRequest::get().uri("/raw/%61/b").to_request()).await;
    assert_eq!(body_of(res).await, "a/b");
    assert_eq!(calls.get(), 5, "/raw/%61/b did not hit the /raw/a/b entry");
}

// A conditional write through an alias: after a successful `If-Match` PATCH, the old ETag gets
// 412 through every form of the resource, before the handler runs.
#[actix_web::test]
async fn the_old_etag_gets_412_through_every_alias() {
    // Paths no other test writes: the race guard is process-wide, and tests run in parallel.
    for (read, first, second) in [
        ("/users/41", "/users/%341", "/users/41"),
        ("/users/42", "/users/42", "/users/%342"),
        ("/files/e/f", "/files/e%2Ff", "/files/e/f"),
        ("/files/g%2Fh", "/files/g/h", "/files/g%2fh"),
    ] {
        let table = Table::default();
        let app = table_app!(table);
        let res = call_service(&app, TestRequest::get().uri(read).to_request()).await;
        let etag = header(&res, header::ETAG);
        let patch = |uri: &str| {
            TestRequest::patch()
                .uri(uri)
                .insert_header((header::IF_MATCH, etag.clone()))
                .set_payload("new")
                .to_request()
        };
        let res = call_service(&app, patch(first)).await;
        assert_eq!(
            res.status(),
            StatusCode::NO_CONTENT,
            "PATCH {first} with the current tag"
        );
        let res = call_service(&app, patch(second)).await;
        assert_eq!(
            res.status(),
            StatusCode::PRECONDITION_FAILED,
            "PATCH {second} with the tag {first} made stale (read through {read})"
        );
    }
}

// A 412 has an empty body of known length (Content-Length: 0), so a keep-alive client does not
// wait for the connection to close.
#[actix_web::test]
async fn a_412_has_content_length_zero() {
    let table = Table::default();
    let app = table_app!(table);
    let res = call_service(&app, TestRequest::get().uri("/users/9").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri("/users/9")
            .insert_header((header::IF_MATCH, "\"not-current\""))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(body_size(&res), actix_web::body::BodySize::Sized(0));
}
