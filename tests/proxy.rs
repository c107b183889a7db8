//! The caching reverse proxy of `examples/caching_proxy.rs`, against a small upstream server
//! started by each test on a loopback port: forwarding (RFC 9110 §7.6), shared-cache storage
//! (RFC 9111 §3, §4.2), revalidation (§4.3) and invalidation (§4.4).

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/caching_proxy.rs"]
mod caching_proxy;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use actix_response_cache::MemoryStore;
use actix_web::{
    http::{header, Method, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpRequest, HttpResponse, HttpServer,
};
use caching_proxy::{proxy, Upstream};
use common::header;

/// What the upstream received: method, path and query, headers, body.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The upstream's answers, by path:
/// - `/fresh`: `max-age=60`;
/// - `/nofresh`: no freshness at all;
/// - `/reval`: `max-age=0` with `ETag: "r1"`, and a 304 to `If-None-Match: "r1"`;
/// - anything else: `<METHOD> <body>`, with `max-age=60` for a GET.
async fn upstream_handler(req: HttpRequest, body: web::Bytes, log: web::Data<Log>) -> HttpResponse {
    let seen = Seen {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().unwrap().push(seen);
    match req.path() {
        "/fresh" => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "max-age=60"))
            .body("fresh"),
        "/nofresh" => HttpResponse::Ok().body("no freshness"),
        "/reval" => {
            let matches = req
                .headers()
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"r1\"");
            let mut res = if matches {
                HttpResponse::NotModified()
            } else {
                HttpResponse::Ok()
            };
            res.insert_header((header::ETAG, "\"r1\""))
                .insert_header((header::CACHE_CONTROL, "max-age=0"));
            if matches {
                res.finish()
            } else {
                res.body("revalidated body")
            }
        }
        _ => {
            let mut res = HttpResponse::Ok();
            if req.method() == Method::GET {
                res.insert_header((header::CACHE_CONTROL, "max-age=60"));
            }
            res.body(format!(
                "{} {}",
                req.method(),
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

/// Starts the upstream on a free loopback port.
fn start_upstream() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let data = web::Data::new(log.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(upstream_handler))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind a loopback port");
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    (addr, log)
}

macro_rules! proxy_app {
    ($addr:expr) => {
        init_service(App::new().configure(proxy(
            MemoryStore::new(100),
            Upstream(format!("http://{}", $addr)),
        )))
        .await
    };
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

// RFC 9111 §3 and §4.2.1 (shared cache): a response with explicit freshness is stored, and the
// second request never reaches the upstream. RFC 9110 §7.6.3: the proxy adds Via.
#[actix_web::test]
async fn fresh_upstream_responses_are_served_from_the_cache() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    for n in 1..=2 {
        let res = call_service(&app, TestRequest::get().uri("/fresh").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::VIA), "1.1 actix-response-cache");
        let status = header(&res, "cache-status");
        if n == 2 {
            assert_eq!(status, "actix-response-cache; hit");
        }
        assert_eq!(read_body(res).await, "fresh");
    }
    assert_eq!(seen(&log).len(), 1, "the hit reached the upstream");
}

// RFC 9111 §4.2 (shared mode): without explicit freshness nothing is stored.
#[actix_web::test]
async fn responses_without_freshness_are_not_stored() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    for _ in 0..2 {
        let res = call_service(&app, TestRequest::get().uri("/nofresh").to_request()).await;
        assert!(header(&res, "cache-status").contains("detail=no-freshness"));
        assert_eq!(read_body(res).await, "no freshness");
    }
    assert_eq!(seen(&log).len(), 2);
}

// RFC 9111 §4.3.1, §4.3.4: a stale entry is revalidated with the stored ETag; the upstream's
// 304 saves sending the body again, and the client gets the stored body.
#[actix_web::test]
async fn stale_entries_are_revalidated_with_the_upstream() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    let res = call_service(&app, TestRequest::get().uri("/reval").to_request()).await;
    assert_eq!(read_body(res).await, "revalidated body");
    let res = call_service(&app, TestRequest::get().uri("/reval").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "cache-status"),
        "actix-response-cache; fwd=stale; fwd-status=304; stored; ttl=0"
    );
    assert_eq!(read_body(res).await, "revalidated body");
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"r1\""));
}

// RFC 9110 §9.3.4 through a proxy, RFC 9111 §4.4: a PUT reaches the upstream with its body,
// its response comes back, and the stored GET of the same URI is invalidated.
#[actix_web::test]
async fn put_passes_through_and_invalidates() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    let get = || TestRequest::get().uri("/item").to_request();
    assert_eq!(read_body(call_service(&app, get()).await).await, "GET ");
    assert_eq!(read_body(call_service(&app, get()).await).await, "GET ");
    assert_eq!(seen(&log).len(), 1, "the second GET was a hit");

    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/item")
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("new state")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, "PUT new state");
    let put = seen(&log)[1].clone();
    assert_eq!(put.method, Method::PUT);
    assert_eq!(put.body, "new state");
    assert_eq!(put.header("content-type"), Some("text/plain"));

    call_service(&app, get()).await;
    assert_eq!(
        seen(&log).len(),
        3,
        "the PUT did not invalidate the stored GET"
    );
}

// Every method is forwarded, extension methods included.
#[actix_web::test]
async fn unusual_methods_pass_through() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let res = call_service(
        &app,
        TestRequest::default()
            .method(propfind.clone())
            .uri("/dav/file")
            .set_payload("<propfind/>")
            .to_request(),
    )
    .await;
    assert_eq!(read_body(res).await, "PROPFIND <propfind/>");
    assert_eq!(seen(&log)[0].method, propfind);
}

// The path, query string and end-to-end request headers reach the upstream as sent.
#[actix_web::test]
async fn path_query_and_headers_are_forwarded() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    call_service(
        &app,
        TestRequest::get()
            .uri("/a/b?x=1&y=two")
            .insert_header(("x-custom", "value"))
            .insert_header((header::ACCEPT, "text/plain"))
            .to_request(),
    )
    .await;
    let seen = &seen(&log)[0];
    assert_eq!(seen.uri, "/a/b?x=1&y=two");
    assert_eq!(seen.header("x-custom"), Some("value"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
    assert_eq!(seen.header("via"), Some("1.1 actix-response-cache"));
    assert!(seen.header("forwarded").is_some());
}

// RFC 9110 §7.6.1: hop-by-hop fields, and the fields a Connection header names, are not
// forwarded to the upstream.
#[actix_web::test]
async fn hop_by_hop_request_fields_are_not_forwarded() {
    let (addr, log) = start_upstream();
    let app = proxy_app!(addr);
    call_service(
        &app,
        TestRequest::get()
            .uri("/hop")
            .insert_header((header::CONNECTION, "x-secret"))
            .insert_header(("x-secret", "s"))
            .insert_header(("keep-alive", "timeout=5"))
            .insert_header((header::TE, "trailers"))
            .insert_header(("x-end-to-end", "e"))
            .to_request(),
    )
    .await;
    let seen = &seen(&log)[0];
    for name in ["x-secret", "keep-alive", "te"] {
        assert_eq!(seen.header(name), None, "{name} was forwarded");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("e"));
}

// RFC 9110 §7.6.1, the other way: an upstream response's hop-by-hop fields do not reach the
// client. actix's own server rewrites `Connection`, so this upstream writes raw HTTP/1.1.
#[actix_web::test]
async fn hop_by_hop_response_fields_are_not_forwarded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut conn, _)) = listener.accept() {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nConnection: x-up, close\r\nX-Up: 1\r\nX-Keep: 2\r\n\
                  Keep-Alive: timeout=5\r\nContent-Length: 3\r\n\r\nhop",
            );
        }
    });
    let app = proxy_app!(addr);
    let res = call_service(&app, TestRequest::get().uri("/raw").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "x-up"),
        "",
        "a field named by Connection came back"
    );
    assert_eq!(header(&res, "keep-alive"), "");
    assert_eq!(header(&res, "x-keep"), "2");
    assert_eq!(read_body(res).await, "hop");
}

// An upstream that cannot be reached gives 502 Bad Gateway, not a hang or a panic.
#[actix_web::test]
async fn unreachable_upstream_is_a_bad_gateway() {
    // A port that was free a moment ago: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = proxy_app!(addr);
    let res = call_service(&app, TestRequest::get().uri("/anything").to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
}
