//! The validator probe: a conditional write the store knows nothing of (cold, evicted, or a
//! `GET` response that is never stored) is judged against the current representation, which
//! the cache asks the handler for with a `GET` of the same request (RFC 9110 §13.1.1: against
//! the *current* representation; §13.2.2 order). Without it, a stale `If-Match` carrying the
//! SHA-256 entity tag this crate computed would reach a handler that cannot check it.

mod common;

use std::sync::{Arc, Mutex};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    dev::Service,
    http::{header, Method, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};
use common::{etag_of, header, Calls};

/// A versioned row: `None` when absent. `GET` answers `v{n}` (404 when absent), with the
/// `Cache-Control` of `cache_control` (`no-store`: the store never holds it); `PUT` creates or
/// replaces, `PATCH` bumps an existing one, `DELETE` removes it. `writes` counts the write
/// handler's calls, `reads` the `GET` handler's.
#[derive(Clone, Default)]
struct Row {
    version: Arc<Mutex<Option<u64>>>,
    reads: Calls,
    writes: Calls,
}

impl Row {
    fn at(version: u64) -> Self {
        let row = Self::default();
        *row.version.lock().unwrap() = Some(version);
        row
    }

    fn resource(&self, path: &str, cache_control: &'static str) -> actix_web::Resource {
        let (get_row, write_row) = (self.clone(), self.clone());
        web::resource(path)
            .route(web::get().to(move || {
                let row = get_row.clone();
                async move {
                    row.reads.hit();
                    match *row.version.lock().unwrap() {
                        Some(v) => HttpResponse::Ok()
                            .insert_header((header::CACHE_CONTROL, cache_control))
                            .body(format!("v{v}")),
                        None => HttpResponse::NotFound().finish(),
                    }
                }
            }))
            .route(web::route().to(move |req: actix_web::HttpRequest| {
                let row = write_row.clone();
                async move {
                    row.writes.hit();
                    let mut version = row.version.lock().unwrap();
                    match (req.method().clone(), *version) {
                        (Method::DELETE, _) => *version = None,
                        (Method::PUT, None) => {
                            *version = Some(1);
                            return HttpResponse::Created().finish();
                        }
                        (_, Some(v)) => *version = Some(v + 1),
                        (_, None) => return HttpResponse::NotFound().finish(),
                    }
                    HttpResponse::NoContent().finish()
                }
            }))
    }
}

fn patch(path: &str, if_match: &str) -> actix_http::Request {
    TestRequest::patch()
        .uri(path)
        .insert_header((header::IF_MATCH, if_match))
        .to_request()
}

// RFC 9110 §13.1.1: a `GET` response that is never stored (`private`) still carries this
// crate's entity tag; a write made with it once the resource changed gets 412, before the
// handler, although the store never held a thing.
#[actix_web::test]
async fn stale_if_match_on_a_never_stored_resource_is_412() {
    let row = Row::at(1);
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(row.resource("/probe/no-store", "private")),
    )
    .await;
    let res = call_service(&app, TestRequest::get().uri("/probe/no-store").to_request()).await;
    let first = header(&res, "etag");
    assert_eq!(first, etag_of(b"v1"));

    let res = app.call(patch("/probe/no-store", &first)).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "the current tag passes"
    );
    assert_eq!(row.writes.get(), 1);

    // The same tag again: v2 is current now.
    let res = app.call(patch("/probe/no-store", &first)).await.unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(row.writes.get(), 1, "the handler must not run");

    // An invented tag, which no write ever superseded, fails too.
    let res = app
        .call(patch("/probe/no-store", "\"invented\""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(row.writes.get(), 1);

    // The current tag passes, as the body it stands for is the current one.
    let res = app
        .call(patch("/probe/no-store", &etag_of(b"v2")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(row.writes.get(), 2);
}

// A store that lost its entry (restarted empty, evicted) must not let an old tag through:
// here the store never held it (a fresh store, as another server's would be).
#[actix_web::test]
async fn stale_if_match_on_a_cold_store_is_412() {
    let row = Row::at(7);
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(row.resource("/probe/cold", "max-age=60")),
    )
    .await;
    let res = app
        .call(patch("/probe/cold", &etag_of(b"v6")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(row.writes.get(), 0);
    assert_eq!(row.reads.get(), 1, "one probe");
    let res = app
        .call(patch("/probe/cold", &etag_of(b"v7")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(row.writes.get(), 1);
}

// RFC 9110 §13.1.1 / §13.1.2: no current representation (the `GET` answers 404): `If-Match`
// fails, `*` included; `If-None-Match: *` (create only if absent) passes once, and a second
// create finds the resource and gets 412.
#[actix_web::test]
async fn if_none_match_star_creates_once_and_if_match_fails_on_an_absent_resource() {
    let row = Row::default();
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(row.resource("/probe/absent", "no-store")),
    )
    .await;
    for tag in ["*", "\"v1\""] {
        let req = TestRequest::put()
            .uri("/probe/absent")
            .insert_header((header::IF_MATCH, tag))
            .to_request();
        let res = app.call(req).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::PRECONDITION_FAILED,
            "If-Match: {tag}"
        );
    }
    assert_eq!(row.writes.get(), 0);
    let create = || {
        TestRequest::put()
            .uri("/probe/absent")
            .insert_header((header::IF_NONE_MATCH, "*"))
            .to_request()
    };
    let res = app.call(create()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app.call(create()).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "created already"
    );
    assert_eq!(row.writes.get(), 1);

    // Deleted again: the tag of the deleted representation fails.
    let delete = TestRequest::delete().uri("/probe/absent").to_request();
    assert_eq!(
        app.call(delete).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let res = app
        .call(patch("/probe/absent", &etag_of(b"v1")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(row.writes.get(), 2);
}

// The handler's own `ETag` is the validator the probe judges with (no body hash).
#[actix_web::test]
async fn the_probe_judges_with_the_handler_s_own_etag() {
    let writes = Calls::default();
    let counted = writes.clone();
    let app = init_service(
        App::new().wrap(Cache::new(MemoryStore::new(100))).service(
            web::resource("/probe/own-etag")
                .route(web::get().to(|| async {
                    HttpResponse::Ok()
                        .insert_header((header::ETAG, "\"row-42\""))
                        .insert_header((header::CACHE_CONTROL, "no-store"))
                        .body("body")
                }))
                .route(web::put().to(move || {
                    counted.hit();
                    async { HttpResponse::NoContent().finish() }
                })),
        ),
    )
    .await;
    let put = |tag: &str| {
        TestRequest::put()
            .uri("/probe/own-etag")
            .insert_header((header::IF_MATCH, tag))
            .to_request()
    };
    let res = app.call(put(&etag_of(b"body"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let res = app.call(put("\"row-42\"")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// The probe routes the request once as a `GET`, then the write itself is routed as it came:
// its method, path parameters (under a scope), precondition fields and body reach the handler.
#[actix_web::test]
async fn the_write_after_a_probe_reaches_its_handler_whole() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let reads = Calls::default();
    let probes = reads.clone();
    let app = init_service(
        App::new().service(
            web::scope("/api")
                .wrap(Cache::new(MemoryStore::new(100)))
                .service(
                    web::resource("/things/{id}")
                        .route(web::get().to(move |id: web::Path<u32>| {
                            probes.hit();
                            async move { HttpResponse::Ok().body(format!("thing {id}")) }
                        }))
                        .route(web::patch().to(
                            move |id: web::Path<u32>, req: actix_web::HttpRequest, body: String| {
                                let if_match = req.headers().get(header::IF_MATCH).cloned();
                                log.lock().unwrap().push((*id, if_match, body));
                                async { HttpResponse::NoContent().finish() }
                            },
                        )),
                ),
        ),
    )
    .await;
    let tag = etag_of(b"thing 5");
    let req = TestRequest::patch()
        .uri("/api/things/5")
        .insert_header((header::IF_MATCH, tag.as_str()))
        .set_payload("new body")
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(reads.get(), 1, "the write was probed");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (id, if_match, body) = &seen[0];
    assert_eq!(*id, 5);
    assert_eq!(if_match.as_ref().unwrap().to_str().unwrap(), tag);
    assert_eq!(body, "new body");
}

// A probe the wrapped service answers with an `Error` (an authentication wall inside the
// `Cache`, say) ends the write with that error, which it would have met too; the handler never
// runs.
#[actix_web::test]
async fn a_probe_answered_with_an_error_ends_the_write_with_it() {
    let row = Row::at(1);
    let app = init_service(
        App::new()
            .wrap_fn(|req, srv| {
                let deny = req.method() == Method::GET;
                let fut = srv.call(req);
                async move {
                    match deny {
                        true => Err(actix_web::error::ErrorForbidden("no reads")),
                        false => fut.await,
                    }
                }
            })
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(row.resource("/probe/denied", "no-store")),
    )
    .await;
    let status = match app.call(patch("/probe/denied", "\"x\"")).await {
        Ok(res) => res.status(),
        Err(err) => err.error_response().status(),
    };
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(row.writes.get(), 0);
}

// A `GET` no route takes (the resource is guarded to `PUT`, as `#[put]` does) falls to the
// default service's 404: that says nothing of the resource, so the write goes to its handler.
#[actix_web::test]
async fn a_404_of_no_route_leaves_the_write_to_the_handler() {
    common::init_log();
    let writes = Calls::default();
    let counted = writes.clone();
    let app = init_service(
        App::new().wrap(Cache::new(MemoryStore::new(100))).service(
            web::resource("/probe/put-only")
                .guard(actix_web::guard::Put())
                .to(move || {
                    counted.hit();
                    async { HttpResponse::NoContent().finish() }
                }),
        ),
    )
    .await;
    let req = TestRequest::put()
        .uri("/probe/put-only")
        .insert_header((header::IF_MATCH, "\"its-own\""))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(writes.get(), 1);
}

// A write's `If-Modified-Since` is ignored (RFC 9110 §13.1.3): nothing a probe learns could
// change the verdict, so no probe is made.
#[actix_web::test]
async fn a_write_with_only_if_modified_since_is_not_probed() {
    let row = Row::at(1);
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(row.resource("/probe/ims", "no-store")),
    )
    .await;
    let req = TestRequest::patch()
        .uri("/probe/ims")
        .insert_header((header::IF_MODIFIED_SINCE, "Sat, 01 Jan 2000 00:00:00 GMT"))
        .to_request();
    let res = call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!((row.reads.get(), row.writes.get()), (0, 1));
}

// With the probe off, a conditional write the store knows nothing of goes to the handler
// unjudged (the handler must check it), and no `GET` is made.
#[actix_web::test]
async fn with_the_probe_off_a_cold_conditional_write_reaches_the_handler() {
    let row = Row::at(3);
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)).probe_validators(false))
            .service(row.resource("/probe/off", "max-age=60")),
    )
    .await;
    let res = app.call(patch("/probe/off", "\"whatever\"")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!((row.reads.get(), row.writes.get()), (0, 1));
}

// A `Cache` nested inside passes the probe through: were it to answer from its store, a stale
// entry it may serve while revalidating (RFC 5861) would stand for the current representation,
// and a write against that old version would pass.
#[actix_web::test]
async fn a_nested_cache_passes_the_probe_to_the_handler() {
    let row = Row::at(1);
    let store = MemoryStore::new(100);
    let app = init_service(
        App::new().wrap(Cache::new(store.clone())).service(
            web::scope("")
                .wrap(Cache::new(store).stale_while_revalidate(std::time::Duration::from_secs(60)))
                .service(row.resource("/probe/nested", "max-age=1")),
        ),
    )
    .await;
    let res = call_service(&app, TestRequest::get().uri("/probe/nested").to_request()).await;
    assert_eq!(header(&res, "etag"), etag_of(b"v1"));
    read_body(res).await;
    // The row changes behind the cache's back, and the stored v1 goes stale.
    *row.version.lock().unwrap() = Some(2);
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = app
        .call(patch("/probe/nested", &etag_of(b"v1")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(row.writes.get(), 0);
}
