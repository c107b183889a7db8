//! The set-up the HTTP tests share: requests, counted handler routes, apps behind a `Cache`,
//! and the values (ETags, dates) they check responses against.
#![allow(unused_macros)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use actix_web::{
    body::{BodySize, MessageBody},
    dev::ServiceResponse,
    http::header::{HeaderName, HttpDate},
    test::TestRequest,
    HttpRequest, HttpResponse, HttpResponseBuilder, Responder, Route,
};
use sha2::{Digest, Sha256};

use super::Calls;

/// The `Cache-Status` of a hit with the default cache name.
pub const HIT: &str = "actix-response-cache; hit";

/// The strong ETag the middleware computes: quoted lowercase hex SHA-256 of the body.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(body)))
}

/// `t` as an HTTP-date (RFC 9110 §5.6.7).
pub fn http_date(t: SystemTime) -> String {
    HttpDate::from(t).to_string()
}

/// A fixed Last-Modified time.
pub fn last_modified() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000)
}

/// A `GET` of `path`.
pub fn get(path: &str) -> TestRequest {
    TestRequest::get().uri(path)
}

/// A `HEAD` of `path`.
pub fn head(path: &str) -> TestRequest {
    TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri(path)
}

/// The size of a response's body, as the server would send it.
pub fn body_size<B: MessageBody>(res: &ServiceResponse<B>) -> BodySize {
    res.response().body().size()
}

/// The value of a request header as a `String` (`""` when absent).
pub fn req_header(req: &HttpRequest, name: impl TryInto<HeaderName>) -> String {
    let Ok(name) = name.try_into() else {
        return String::new();
    };
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Lets spawned tasks (a background refresh) run.
pub async fn settle() {
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
}

/// `res` with `headers` appended, in order (a name may repeat).
pub fn with_headers(mut res: HttpResponseBuilder, headers: &[(&str, &str)]) -> HttpResponseBuilder {
    for &(name, value) in headers {
        res.append_header((name, value));
    }
    res
}

/// `route` (`web::get()`, `web::put()`, `web::route()`, …) with a handler that counts its calls
/// in `calls` and answers `respond(request)`.
pub fn counted<F, R>(route: Route, calls: &Calls, respond: F) -> Route
where
    F: Fn(&HttpRequest) -> R + Clone + 'static,
    R: Responder + 'static,
{
    let calls = calls.clone();
    route.to(move |req: HttpRequest| {
        let (calls, respond) = (calls.clone(), respond.clone());
        async move {
            calls.hit();
            respond(&req)
        }
    })
}

/// A `GET` route that counts its calls and answers `200 body` with `headers`.
pub fn counted_get(
    calls: &Calls,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Route {
    counted(actix_web::web::get(), calls, move |_| {
        with_headers(HttpResponse::Ok(), headers).body(body)
    })
}

/// Handler calls, and the most that ran at once.
#[derive(Clone, Default)]
pub struct Load {
    pub calls: Calls,
    pub running: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
}

impl Load {
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A `GET` route that counts itself in `load`, takes `delay`, and answers `200 body` with
/// `headers`.
pub fn slow_get(
    load: &Load,
    delay: Duration,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Route {
    let load = load.clone();
    actix_web::web::get().to(move || {
        let load = load.clone();
        async move {
            load.calls.hit();
            let now = load.running.fetch_add(1, Ordering::SeqCst) + 1;
            load.peak.fetch_max(now, Ordering::SeqCst);
            actix_web::rt::time::sleep(delay).await;
            load.running.fetch_sub(1, Ordering::SeqCst);
            with_headers(HttpResponse::Ok(), headers).body(body)
        }
    })
}

/// `init_service` over an `App` whose `Cache` `$cache` wraps the route `$route` at `$path`.
macro_rules! cached_route {
    ($cache:expr, $path:expr, $route:expr $(,)?) => {
        ::actix_web::test::init_service(::actix_web::App::new().wrap($cache).route($path, $route))
            .await
    };
}
#[allow(unused_imports)]
pub(crate) use cached_route;

/// `init_service` over an `App` whose `Cache` `$cache` wraps the services (resources, scopes)
/// `$service`, in order.
macro_rules! cached_service {
    ($cache:expr, $($service:expr),+ $(,)?) => {
        ::actix_web::test::init_service(::actix_web::App::new().wrap($cache)$(.service($service))+)
            .await
    };
}
#[allow(unused_imports)]
pub(crate) use cached_service;

/// Sends the `TestRequest` `$req` to `$app` and returns the response.
macro_rules! send {
    ($app:expr, $req:expr) => {
        ::actix_web::test::call_service(&$app, $req.to_request()).await
    };
}
#[allow(unused_imports)]
pub(crate) use send;
