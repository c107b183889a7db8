//! The server the load benchmark (`benches/load.sh`) drives. Not a usage example.
//!
//! ```sh
//! cargo run --release --example bench_server -- 127.0.0.1:8090 1
//! ```
//!
//! Arguments: the address to listen on (default `127.0.0.1:8090`) and the number of workers
//! (default 1). Endpoints:
//! - `GET /bare/static`: a fixed 1 KiB body, no middleware (the baseline);
//! - `GET /bare/headers`: the same, with the four headers a hit adds (`ETag`, `Cache-Control`,
//!   `Age`, `Cache-Status`) set by the handler: what those bytes alone cost, no cache involved;
//! - `GET /bare/304`: a handler that answers `304 Not Modified` with the fields a cached 304
//!   carries: the floor for the cache's 304 answers;
//! - `GET /cached/slow`: the same 1 KiB after a 2 ms sleep, behind `Cache` (measured as hits);
//! - `POST /cached/post`: a write that passes through `Cache` to a cheap handler;
//! - `GET /cached/big`: a 64 KiB body behind `Cache`;
//! - `GET /cached/no-store`: a 1 KiB response with `Cache-Control: no-store` behind `Cache`
//!   (passed through), and `GET /bare/no-store`, the same handler without it;
//! - `GET /redis/slow`: `/cached/slow` on a `RedisStore`, and `GET /tiered/slow` on a
//!   `TieredStore` (memory in front of Redis), when built with `--features redis` and run with
//!   `REDIS_URL` set.

use std::time::Duration;

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::header::{self, HeaderMap, HeaderName, HeaderValue},
    web, App, HttpResponse, HttpServer,
};

static SMALL: [u8; 1024] = [b'a'; 1024];
static BIG: [u8; 64 * 1024] = [b'b'; 64 * 1024];
/// `/redis/slow` on the Redis store named by `REDIS_URL`, when there is one.
#[cfg(feature = "redis")]
fn redis_routes(cfg: &mut web::ServiceConfig) {
    use actix_response_cache::{RedisStore, TieredStore};
    if let Ok(url) = std::env::var("REDIS_URL") {
        let slow = || async {
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
            HttpResponse::Ok().body(&SMALL[..])
        };
        let redis = RedisStore::new(&url).prefix("bench:");
        cfg.service(
            web::resource("/redis/slow")
                .wrap(Cache::new(redis).cache_expiry(Duration::from_secs(3600)))
                .route(web::get().to(slow)),
        );
        let tiered = TieredStore::new(
            MemoryStore::new(10_000),
            RedisStore::new(&url).prefix("bench-tiered:"),
        );
        cfg.service(
            web::resource("/tiered/slow")
                .wrap(Cache::new(tiered).cache_expiry(Duration::from_secs(3600)))
                .route(web::get().to(slow)),
        );
    }
}

#[cfg(not(feature = "redis"))]
fn redis_routes(_: &mut web::ServiceConfig) {}

fn cache(store: &MemoryStore) -> Cache<MemoryStore> {
    Cache::new(store.clone()).cache_expiry(Duration::from_secs(3600))
}

/// The headers a hit adds, as static values (no allocation): an entity tag as long as the
/// cache's (a quoted SHA-256 in hex), `Cache-Control`, `Age` and `Cache-Status`.
fn add_hit_headers(headers: &mut HeaderMap) {
    const ETAG: &str = "\"2edc986847e209b4016e141a6dc8716d3207350f416969382d431539bf292e4a\"";
    headers.insert(header::ETAG, HeaderValue::from_static(ETAG));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    headers.insert(
        HeaderName::from_static("cache-status"),
        HeaderValue::from_static("actix-response-cache; hit"),
    );
}

/// A 1 KiB response that may not be stored.
async fn no_store() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(&SMALL[..])
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(1);
    let store = MemoryStore::new(10_000);

    HttpServer::new(move || {
        App::new()
            .route(
                "/bare/static",
                web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
            )
            .route(
                "/bare/headers",
                web::get().to(|| async {
                    let mut res = HttpResponse::Ok().body(&SMALL[..]);
                    add_hit_headers(res.headers_mut());
                    res
                }),
            )
            .route(
                "/bare/304",
                web::get().to(|| async {
                    let mut res = HttpResponse::NotModified().finish();
                    add_hit_headers(res.headers_mut());
                    res
                }),
            )
            // An uncacheable response (`no-store`), without the cache, for reference.
            .route("/bare/no-store", web::get().to(no_store))
            // The same POST handler without the cache, for reference.
            .route(
                "/bare/post",
                web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("ok") }),
            )
            // Each cached endpoint is a resource with its own `Cache` (one store), as the bare
            // ones are resources of the app: a scope would add a routing step of its own.
            .service(
                web::resource("/cached/slow")
                    .wrap(cache(&store))
                    .route(web::get().to(|| async {
                        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
                        HttpResponse::Ok().body(&SMALL[..])
                    })),
            )
            .service(
                web::resource("/cached/post")
                    .wrap(cache(&store))
                    // Reads the request body: an unread body makes actix close the connection.
                    .route(
                        web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("ok") }),
                    ),
            )
            .service(
                web::resource("/cached/no-store")
                    .wrap(cache(&store))
                    .route(web::get().to(no_store)),
            )
            .service(
                web::resource("/cached/big")
                    .wrap(cache(&store))
                    .route(web::get().to(|| async { HttpResponse::Ok().body(&BIG[..]) })),
            )
            .configure(redis_routes)
    })
    .workers(workers)
    .backlog(4096)
    .bind(addr)?
    .run()
    .await
}
