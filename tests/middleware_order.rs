//! Middleware order (DESIGN "Middleware order"): whichever way `Cache` and a middleware that
//! rewrites the request are registered, no stored response reaches a request it was not stored
//! for, and a write leaves nothing stale. actix runs the middleware registered last first, so
//! `App::new().wrap(inner).wrap(Cache)` puts `inner` *inside* the cache (it runs after the
//! cache's lookup, before the handler).

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderName, HeaderValue},
        Method, StatusCode,
    },
    middleware::{from_fn, Next, NormalizePath, TrailingSlash},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, Error, HttpRequest, HttpResponse,
};
use common::{header, Calls};

async fn text<B: MessageBody>(res: ServiceResponse<B>) -> String {
    String::from_utf8_lossy(&read_body(res).await).into_owned()
}

const TENANT: HeaderName = HeaderName::from_static("x-tenant");

/// Sets `X-Tenant` from the API key (`vip-key` is the VIP tenant), and to `anon` without one:
/// the handler trusts the header.
async fn tenant_from_api_key(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let tenant = match req.headers().get("x-api-key").map(|v| v.as_bytes()) {
        Some(b"vip-key") => "vip",
        _ => "anon",
    };
    req.headers_mut()
        .insert(TENANT, HeaderValue::from_static(tenant));
    next.call(req).await
}

async fn tenant_page(req: HttpRequest) -> HttpResponse {
    let tenant = req
        .headers()
        .get(TENANT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    HttpResponse::Ok()
        .insert_header((header::VARY, "X-Tenant"))
        .body(format!("page of {tenant}"))
}

// A middleware inside the cache sets a header the handler varies on: the VIP's page must not be
// stored under the header values the client sent, or an anonymous client who sends
// `X-Tenant: vip` would read it.
#[actix_web::test]
async fn a_header_set_inside_the_cache_does_not_leak_a_variant() {
    let app = init_service(
        App::new()
            .wrap(from_fn(tenant_from_api_key))
            .wrap(Cache::new(MemoryStore::new(100)))
            .route("/dashboard", web::get().to(tenant_page)),
    )
    .await;
    let vip = || {
        TestRequest::get()
            .uri("/dashboard")
            .insert_header(("x-api-key", "vip-key"))
    };
    let res = call_service(&app, vip().to_request()).await;
    assert!(header(&res, "cache-status").contains("detail=request-changed"));
    assert_eq!(text(res).await, "page of vip");
    let res = call_service(&app, vip().to_request()).await;
    assert_eq!(text(res).await, "page of vip");
    for _ in 0..2 {
        let anonymous = TestRequest::get()
            .uri("/dashboard")
            .insert_header((TENANT, "vip"))
            .to_request();
        let res = call_service(&app, anonymous).await;
        assert_eq!(
            text(res).await,
            "page of anon",
            "the VIP's page reached an anonymous client"
        );
    }
}

// The order the docs recommend: the same middleware outside the cache. Each tenant's page is
// stored under its own variant, and served to that tenant only.
#[actix_web::test]
async fn a_header_set_outside_the_cache_is_keyed() {
    let calls = Calls::default();
    let c = calls.clone();
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .wrap(from_fn(tenant_from_api_key))
            .route(
                "/dashboard",
                web::get().to(move |req: HttpRequest| {
                    c.hit();
                    tenant_page(req)
                }),
            ),
    )
    .await;
    for (key, page) in [("vip-key", "page of vip"), ("", "page of anon")] {
        for _ in 0..2 {
            let mut req = TestRequest::get()
                .uri("/dashboard")
                .insert_header((TENANT, "vip"));
            if !key.is_empty() {
                req = req.insert_header(("x-api-key", key));
            }
            let res = call_service(&app, req.to_request()).await;
            assert_eq!(text(res).await, page);
        }
    }
    assert_eq!(calls.get(), 2, "each tenant's page was stored once");
}

/// A resource whose GET shows a version and whose PATCH bumps it.
fn versioned(version: &Arc<AtomicUsize>, reads: &Calls) -> actix_web::Resource {
    let (v_get, v_patch, v_delete, reads) = (
        Arc::clone(version),
        Arc::clone(version),
        Arc::clone(version),
        reads.clone(),
    );
    web::resource("/users/{id}")
        .route(web::get().to(move || {
            reads.hit();
            let v = v_get.load(Ordering::SeqCst);
            async move { HttpResponse::Ok().body(format!("v{v}")) }
        }))
        .route(web::patch().to(move || {
            v_patch.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::NoContent().finish() }
        }))
        .route(web::delete().to(move || {
            v_delete.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::Ok().body("deleted") }
        }))
}

// `NormalizePath` inside the cache: a write through `/users/2/` (which the handler gets as
// `/users/2`) collects the stored `/users/2`; a read of `/users/2/` is answered right, and not
// stored under a key the handler did not answer.
#[actix_web::test]
async fn normalize_path_inside_the_cache() {
    let (version, reads) = (Arc::new(AtomicUsize::new(1)), Calls::default());
    let app = init_service(
        App::new()
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(versioned(&version, &reads)),
    )
    .await;
    let get = |uri: &str| TestRequest::get().uri(uri).to_request();
    assert_eq!(text(call_service(&app, get("/users/2")).await).await, "v1");
    assert_eq!(text(call_service(&app, get("/users/2")).await).await, "v1");
    assert_eq!(reads.get(), 1, "/users/2 was not stored");
    let res = call_service(&app, TestRequest::patch().uri("/users/2/").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        text(call_service(&app, get("/users/2")).await).await,
        "v2",
        "a write through /users/2/ left /users/2 stale"
    );
    let res = call_service(&app, get("/users/2/")).await;
    assert!(header(&res, "cache-status").contains("detail=request-changed"));
    assert_eq!(text(res).await, "v2");
    let res = call_service(&app, TestRequest::patch().uri("/users/2").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(text(call_service(&app, get("/users/2/")).await).await, "v3");
}

// `NormalizePath` outside the cache, as the docs recommend: the aliases are one entry.
#[actix_web::test]
async fn normalize_path_outside_the_cache() {
    let (version, reads) = (Arc::new(AtomicUsize::new(1)), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .service(versioned(&version, &reads)),
    )
    .await;
    let get = |uri: &str| TestRequest::get().uri(uri).to_request();
    assert_eq!(text(call_service(&app, get("/users/3")).await).await, "v1");
    assert_eq!(text(call_service(&app, get("/users/3/")).await).await, "v1");
    assert_eq!(reads.get(), 1, "/users/3/ did not hit the /users/3 entry");
    let res = call_service(&app, TestRequest::patch().uri("/users/3/").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(text(call_service(&app, get("/users/3")).await).await, "v2");
}

/// Turns a request with `X-HTTP-Method-Override` into that method.
async fn method_override(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let method = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
    if let Some(method) = method {
        req.head_mut().method = method;
    }
    next.call(req).await
}

// A method override inside the cache turns a GET into a DELETE: its response is not stored as
// the GET entry. (A GET the cache can answer from the store is answered there: an override on
// a GET belongs outside the cache, see the next test.) A POST turned into a DELETE is a write
// to the cache already, and collects what was stored.
#[actix_web::test]
async fn a_method_override_inside_the_cache() {
    let (version, reads) = (Arc::new(AtomicUsize::new(1)), Calls::default());
    let app = init_service(
        App::new()
            .wrap(from_fn(method_override))
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(versioned(&version, &reads)),
    )
    .await;
    let get = || TestRequest::get().uri("/users/4");
    let overridden = get().insert_header(("x-http-method-override", "DELETE"));
    let res = call_service(&app, overridden.to_request()).await;
    assert!(header(&res, "cache-status").contains("detail=request-changed"));
    assert_eq!(text(res).await, "deleted");
    let res = call_service(&app, get().to_request()).await;
    assert_eq!(
        text(res).await,
        "v2",
        "the overridden DELETE was stored as the GET entry"
    );
    assert_eq!(
        text(call_service(&app, get().to_request()).await).await,
        "v2"
    );
    assert_eq!(reads.get(), 1, "the GET after the override was not stored");
    let post = TestRequest::post()
        .uri("/users/4")
        .insert_header(("x-http-method-override", "DELETE"));
    let res = call_service(&app, post.to_request()).await;
    assert_eq!(text(res).await, "deleted");
    assert_eq!(
        text(call_service(&app, get().to_request()).await).await,
        "v3"
    );
}

// The same override outside the cache: the cache sees the DELETE and judges it as a write.
#[actix_web::test]
async fn a_method_override_outside_the_cache() {
    let (version, reads) = (Arc::new(AtomicUsize::new(1)), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .wrap(from_fn(method_override))
            .service(versioned(&version, &reads)),
    )
    .await;
    let get = || TestRequest::get().uri("/users/5");
    let res = call_service(&app, get().to_request()).await;
    let etag = header(&res, header::ETAG);
    assert_eq!(text(res).await, "v1");
    let stale = get()
        .insert_header(("x-http-method-override", "DELETE"))
        .insert_header((header::IF_MATCH, "\"old\""));
    let res = call_service(&app, stale.to_request()).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let current = get()
        .insert_header(("x-http-method-override", "DELETE"))
        .insert_header((header::IF_MATCH, etag));
    let res = call_service(&app, current.to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        text(call_service(&app, get().to_request()).await).await,
        "v2"
    );
}
