//! Instructions per in-process request, counted by valgrind: repeatable on a noisy machine,
//! where wall-clock benchmarks are not.
//!
//! ```sh
//! cargo bench --bench instructions --no-run
//! bash benches/instructions.sh     # runs this binary under callgrind for each case
//! ```
//!
//! Arguments: a case (`scope-get`, `hit`, `304`, `scope-post`, `post`, `bare-stream`, `stream`,
//! `bare-no-store`, `no-store`, `bare-private`, `private`, `bare-miss`, `miss`, `bare-headers`
//! (a handler sending a hit's fields), `bare-304` (a handler's own 304 with the cache's fields))
//! and a request count. Run without arguments (as `cargo bench` does) it does a few of each.

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::header,
    rt::System,
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};

static SMALL: [u8; 1024] = [b'a'; 1024];

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let case = args.next();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let rt = System::new();
    let app = rt.block_on(init_service(
        App::new()
            .service(
                web::scope("/plain")
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route("/stream", web::get().to(stream))
                    .route("/no-store", web::get().to(no_store))
                    .route("/private", web::get().to(private))
                    .route(
                        "/miss",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route("/headers", web::get().to(hit_headers))
                    .route("/304", web::get().to(not_modified)),
            )
            .service(
                web::scope("/cached")
                    .wrap(Cache::new(MemoryStore::new(10_000)))
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route("/stream", web::get().to(stream))
                    .route("/no-store", web::get().to(no_store))
                    .route("/private", web::get().to(private))
                    .route(
                        "/miss",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    ),
            ),
    ));
    let etag = rt.block_on(async {
        let res = call_service(&app, TestRequest::get().uri("/cached/static").to_request()).await;
        res.headers().get(header::ETAG).cloned()
    });
    let cases: Vec<&str> = match &case {
        Some(case) => vec![case.as_str()],
        None => vec![
            "scope-get",
            "hit",
            "304",
            "scope-post",
            "post",
            "bare-stream",
            "stream",
            "bare-no-store",
            "no-store",
            "bare-private",
            "private",
            "bare-miss",
            "miss",
            "bare-headers",
            "bare-304",
        ],
    };
    for case in cases {
        rt.block_on(async {
            for i in 0..n {
                // A miss + store each time: a query string no request used before.
                let miss = format!("/cached/miss?n={i}");
                let bare_miss = format!("/plain/miss?n={i}");
                let req = match case {
                    "scope-get" => TestRequest::get().uri("/plain/static"),
                    "hit" => TestRequest::get().uri("/cached/static"),
                    "304" => {
                        let mut req = TestRequest::get().uri("/cached/static");
                        if let Some(etag) = &etag {
                            req = req.insert_header((header::IF_NONE_MATCH, etag.clone()));
                        }
                        req
                    }
                    "scope-post" => TestRequest::post().uri("/plain/post"),
                    "post" => TestRequest::post().uri("/cached/post"),
                    "bare-stream" => TestRequest::get().uri("/plain/stream"),
                    "stream" => TestRequest::get().uri("/cached/stream"),
                    "bare-no-store" => TestRequest::get().uri("/plain/no-store"),
                    "no-store" => TestRequest::get().uri("/cached/no-store"),
                    "bare-private" => TestRequest::get().uri("/plain/private"),
                    "private" => TestRequest::get().uri("/cached/private"),
                    "bare-miss" => TestRequest::get().uri(&bare_miss),
                    "miss" => TestRequest::get().uri(&miss),
                    "bare-headers" => TestRequest::get().uri("/plain/headers"),
                    "bare-304" => TestRequest::get().uri("/plain/304"),
                    other => panic!("unknown case {other}"),
                };
                // Every HTTP/1.1 client sends Host.
                let req = req.insert_header((header::HOST, "bench.example"));
                read_body(call_service(&app, req.to_request()).await).await;
            }
        });
    }
}

async fn stream() -> HttpResponse {
    HttpResponse::Ok().streaming(futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(&SMALL))
    }))
}

/// A dynamic page: `Cache-Control: no-store`, 1 KiB.
async fn no_store() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(&SMALL[..])
}

/// A per-user page: `Cache-Control: private`, 1 KiB (not stored, but a browser revalidates it).
async fn private() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private"))
        .body(&SMALL[..])
}

/// An entity tag of a hit's length (a quoted SHA-256 in hex).
const HIT_ETAG: &str = "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"";

/// The fields a hit sends besides its body (`ETag`, `Cache-Control`, `Age`, `Cache-Status`),
/// set by a handler: what a hit costs at least.
async fn hit_headers() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, HIT_ETAG))
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .insert_header((header::AGE, "0"))
        .insert_header(("cache-status", "actix-response-cache; hit"))
        .body(&SMALL[..])
}

/// A handler's own `304` with the fields the cache's `304` carries.
async fn not_modified() -> HttpResponse {
    HttpResponse::NotModified()
        .insert_header((header::ETAG, HIT_ETAG))
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .insert_header(("cache-status", "actix-response-cache; hit"))
        .finish()
}
