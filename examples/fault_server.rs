//! The app server the fault benchmark (`benches/faults.sh`) runs twice. Not a usage example.
//!
//! ```sh
//! cargo run --release --features redis --example fault_server -- \
//!     127.0.0.1:8091 redis://127.0.0.1:6391 redis://127.0.0.1:6392 redis
//! ```
//!
//! Arguments: the address to listen on, the URL of the cache's Redis (the one faults are
//! injected into), the URL of the app's database (a second Redis, never faulted, so that two
//! servers share real state) and the store kind, `redis` or `tiered` (memory in front of Redis).
//!
//! - `GET /items/{id}`: `{id}:{version}`, the version being the integer at `v:{id}` in the
//!   database (0 when absent). The cache computes the strong ETag from the body.
//! - `PATCH /items/{id}`: the body is the version the client believes current. In one Lua
//!   script: when it is not the current version the write is a lost update (the cache let an
//!   `If-Match` through that was not current) and `lost` is incremented; then `v:{id}` is
//!   incremented and the answer is `{id}:{new version}`. The handler never answers `412`: that
//!   is the cache's job.
//! - `GET /lost`: the `lost` counter, not cached.

use std::time::Duration;

use actix_response_cache::{Cache, CollectableStore, MemoryStore, RedisStore, TieredStore};
use actix_web::{web, App, HttpResponse, HttpServer};
use redis::aio::ConnectionManager;

/// Reads the current version, counts a lost update when the client's differs, bumps it.
const PATCH_SCRIPT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= tonumber(ARGV[1]) then redis.call('INCR', KEYS[2]) end
return redis.call('INCR', KEYS[1])
";

struct Database {
    connection: ConnectionManager,
    patch: redis::Script,
}

fn unavailable(err: redis::RedisError) -> HttpResponse {
    log::warn!("database: {err}");
    HttpResponse::InternalServerError().body("database error")
}

async fn get_item(db: web::Data<Database>, id: web::Path<u32>) -> HttpResponse {
    let mut connection = db.connection.clone();
    let version: redis::RedisResult<Option<u64>> = redis::cmd("GET")
        .arg(format!("v:{id}"))
        .query_async(&mut connection)
        .await;
    match version {
        Ok(version) => HttpResponse::Ok().body(format!("{id}:{}", version.unwrap_or(0))),
        Err(err) => unavailable(err),
    }
}

async fn patch_item(db: web::Data<Database>, id: web::Path<u32>, body: String) -> HttpResponse {
    let Ok(believed) = body.trim().parse::<u64>() else {
        return HttpResponse::BadRequest().body("the body must be the current version");
    };
    let mut connection = db.connection.clone();
    let version: redis::RedisResult<u64> = db
        .patch
        .key(format!("v:{id}"))
        .key("lost")
        .arg(believed)
        .invoke_async(&mut connection)
        .await;
    match version {
        Ok(version) => HttpResponse::Ok().body(format!("{id}:{version}")),
        Err(err) => unavailable(err),
    }
}

async fn get_lost(db: web::Data<Database>) -> HttpResponse {
    let mut connection = db.connection.clone();
    let lost: redis::RedisResult<Option<u64>> = redis::cmd("GET")
        .arg("lost")
        .query_async(&mut connection)
        .await;
    match lost {
        Ok(lost) => HttpResponse::Ok().body(lost.unwrap_or(0).to_string()),
        Err(err) => unavailable(err),
    }
}

async fn serve<St>(addr: &str, store: St, db: web::Data<Database>) -> std::io::Result<()>
where
    St: CollectableStore + Clone + Send + 'static,
{
    HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .route("/lost", web::get().to(get_lost))
            .service(
                web::resource("/items/{id}")
                    .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(30)))
                    .route(web::get().to(get_item))
                    .route(web::patch().to(patch_item)),
            )
    })
    .workers(2)
    .shutdown_timeout(1)
    .bind(addr)?
    .run()
    .await
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::new().default_filter_or("warn"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cache_url, data_url, kind] = &args[..] else {
        eprintln!("usage: fault_server ADDR CACHE_REDIS_URL DATA_REDIS_URL redis|tiered");
        std::process::exit(2);
    };
    let client = redis::Client::open(data_url.as_str()).map_err(std::io::Error::other)?;
    // One multiplexed connection, driven by the main thread's runtime, shared by the workers.
    let connection = ConnectionManager::new(client)
        .await
        .map_err(std::io::Error::other)?;
    let db = web::Data::new(Database {
        connection,
        patch: redis::Script::new(PATCH_SCRIPT),
    });
    let remote = RedisStore::new(cache_url).prefix("faults:");
    match kind.as_str() {
        "redis" => serve(addr, remote, db).await,
        "tiered" => serve(addr, TieredStore::new(MemoryStore::new(10_000), remote), db).await,
        other => {
            eprintln!("unknown store kind {other:?}: expected redis or tiered");
            std::process::exit(2);
        }
    }
}
