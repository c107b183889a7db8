//! The quickstart on Redis: the same users resource, with `RedisStore`, so that several app
//! servers share one cache (run two on different ports and PATCH on one: the other sees it).
//!
//! ```sh
//! sudo apt-get install redis-server      # or any Redis / Valkey
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features redis --example redis -- 127.0.0.1:8080
//! curl -i http://127.0.0.1:8080/users/1
//! ```
//!
//! `REDIS_URL` defaults to `redis://127.0.0.1:6379`, the address to `127.0.0.1:8080`. When Redis
//! is down the app keeps answering, uncached, and logs a warning.
//!
//! `GET /users/{id}` returns the user as JSON; `PATCH /users/{id}` with a plain-text body renames
//! them. Try `If-None-Match` with the ETag you got (304) and `If-Match` with a stale one (412).
//! `RUST_LOG=actix_response_cache=debug` shows hits, misses, stores, 304s, 412s and collections.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use actix_response_cache::{Cache, RedisStore};
use actix_web::{middleware::Logger, web, App, HttpResponse, HttpServer};

struct Users(Mutex<HashMap<u32, String>>);

async fn get_user(users: web::Data<Users>, id: web::Path<u32>) -> HttpResponse {
    // Stands in for a slow query: the cache answers repeat requests without it.
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    let users = users.0.lock().unwrap_or_else(|e| e.into_inner());
    match users.get(&id) {
        Some(name) => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!("{{\"id\":{id},\"name\":{name:?}}}")),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn patch_user(users: web::Data<Users>, id: web::Path<u32>, name: String) -> HttpResponse {
    let mut users = users.0.lock().unwrap_or_else(|e| e.into_inner());
    match users.get_mut(&id) {
        Some(slot) => {
            *slot = name.trim().to_owned();
            HttpResponse::NoContent().finish()
        }
        None => HttpResponse::NotFound().finish(),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::new().default_filter_or("info"));

    let users = web::Data::new(Users(Mutex::new(HashMap::from([
        (1, "alice".to_owned()),
        (2, "bob".to_owned()),
    ]))));
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    // Every worker and every server with the same URL and prefix share the entries.
    let store = RedisStore::new(&url).prefix("quickstart:");

    log::info!("listening on http://{addr} (try /users/1), cache on {url}");
    HttpServer::new(move || {
        App::new()
            .app_data(users.clone())
            .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(30)))
            .wrap(Logger::new("%r %s %Dms"))
            .route("/users/{id}", web::get().to(get_user))
            .route("/users/{id}", web::patch().to(patch_user))
    })
    .bind(addr)?
    .run()
    .await
}
