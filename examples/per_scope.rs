//! Different caching policies per scope, sharing one store.
//!
//! ```sh
//! cargo run --example per_scope
//! curl -i http://127.0.0.1:8080/news        # stored for 5 s
//! curl -i http://127.0.0.1:8080/static/logo # stored for an hour, shared even with credentials
//! curl -i http://127.0.0.1:8080/me          # never stored on the server; ETag and 304 still work
//! ```

use std::time::Duration;

use actix_response_cache::{Cache, MemoryStore, Visibility};
use actix_web::{web, App, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(
        env_logger::Env::new().default_filter_or("actix_response_cache=debug"),
    );
    let store = MemoryStore::new(10_000).max_bytes(64 * 1024 * 1024);

    HttpServer::new(move || {
        App::new()
            // Fast-changing content: short expiry.
            .service(
                web::scope("/news")
                    .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(5)))
                    .route(
                        "",
                        web::get().to(|| async { HttpResponse::Ok().body("headlines") }),
                    ),
            )
            // The same for every user: long expiry, stored even for requests with cookies.
            .service(
                web::scope("/static")
                    .wrap(
                        Cache::new(store.clone())
                            .cache_expiry(Duration::from_secs(3600))
                            .visibility(Visibility::Public),
                    )
                    .route(
                        "/logo",
                        web::get().to(|| async { HttpResponse::Ok().body("<svg/>") }),
                    ),
            )
            // Personal: nothing stored on the server, but clients still get ETags and 304s.
            .service(
                web::scope("/me")
                    .wrap(Cache::new(store.clone()).visibility(Visibility::Private))
                    .route(
                        "",
                        web::get().to(|| async { HttpResponse::Ok().body("your profile") }),
                    ),
            )
    })
    .bind(("127.0.0.1", 8080))?
    .run()
    .await
}
