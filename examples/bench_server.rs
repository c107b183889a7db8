//! The server the load benchmark (`benches/load.sh`) drives. Not a usage example.
//!
//! ```sh
//! cargo run --release --example bench_server -- 127.0.0.1:8090 1
//! ```
//!
//! Arguments: the address to listen on (default `127.0.0.1:8090`) and the number of workers
//! (default 1). Endpoints:
//! - `GET /bare/static`: a fixed 1 KiB body, no middleware (the baseline);
//! - `GET /cached/slow`: the same 1 KiB after a 2 ms sleep, behind `Cache` (measured as hits);
//! - `POST /cached/post`: a write that passes through `Cache` to a cheap handler;
//! - `GET /cached/big`: a 64 KiB body behind `Cache`.

use std::time::Duration;

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{web, App, HttpResponse, HttpServer};

static SMALL: [u8; 1024] = [b'a'; 1024];
static BIG: [u8; 64 * 1024] = [b'b'; 64 * 1024];

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
            // The same POST handler without the cache, for reference.
            .route(
                "/bare/post",
                web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("ok") }),
            )
            .service(
                web::scope("/cached")
                    .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(3600)))
                    .route(
                        "/slow",
                        web::get().to(|| async {
                            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
                            HttpResponse::Ok().body(&SMALL[..])
                        }),
                    )
                    .route(
                        "/post",
                        // Reads the request body: an unread body makes actix close the connection.
                        web::post().to(|_body: web::Bytes| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route(
                        "/big",
                        web::get().to(|| async { HttpResponse::Ok().body(&BIG[..]) }),
                    ),
            )
    })
    .workers(workers)
    .backlog(4096)
    .bind(addr)?
    .run()
    .await
}
