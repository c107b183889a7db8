//! `RedisStore` against a real `redis-server` (Debian's `redis-server` package), started by each
//! test on a free loopback port with a temporary directory, and stopped when the test ends.
//!
//! Run with `cargo test --all-features`. Without the binary these tests fail and say how to
//! install it.
#![cfg(feature = "redis")]

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_response_cache::{Cache, RedisStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};
use common::{header, redis_server::RedisServer, Calls};

/// A store with limits generous enough for debug builds on a busy machine.
fn store(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url())
        .timeout(Duration::from_millis(500))
        .retry_after(Duration::from_millis(100))
}

// The P1 acceptance suite: the store contract, and the middleware on it.
#[actix_web::test]
async fn redis_store_passes_the_acceptance_suite() {
    let server = RedisServer::start();
    common::acceptance::run(|| store(&server)).await;
}

/// A counted GET route with `max-age=60`, its body `v<N>`, and a PATCH that counts too.
fn versioned(calls: &Calls, version: &Arc<AtomicUsize>) -> actix_web::Resource {
    let (c, v) = (calls.clone(), version.clone());
    let (v2, c2) = (version.clone(), calls.clone());
    web::resource("/item")
        .route(web::get().to(move || {
            c.hit();
            let n = v.load(Ordering::SeqCst);
            async move { HttpResponse::Ok().body(format!("v{n}")) }
        }))
        .route(web::patch().to(move || {
            c2.hit();
            v2.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::NoContent().finish() }
        }))
}

/// An app on `store($server)` with the counted `/item` of [`versioned`], and the `ETag` its
/// first `GET` stored.
/// `PATCH /item` with `If-Match: tag`.
fn patch_item(tag: &str) -> actix_http::Request {
    TestRequest::patch()
        .uri("/item")
        .insert_header((header::IF_MATCH, tag))
        .to_request()
}

macro_rules! item_app {
    ($server:expr, $calls:expr) => {{
        let version = Arc::new(AtomicUsize::new(1));
        let app = init_service(
            App::new()
                .wrap(Cache::new(store($server)))
                .service(versioned(&$calls, &version)),
        )
        .await;
        let res = call_service(&app, TestRequest::get().uri("/item").to_request()).await;
        let etag = header(&res, header::ETAG);
        read_body(res).await;
        (app, etag)
    }};
}

// Two app instances on one Redis: a write on A is seen by B, both send the same ETag, and B
// judges a conditional write against the validator A stored.
#[actix_web::test]
async fn two_instances_share_entries_writes_and_validators() {
    let server = RedisServer::start();
    let version = Arc::new(AtomicUsize::new(1));
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let a = init_service(
        App::new()
            .wrap(Cache::new(store(&server)))
            .service(versioned(&calls_a, &version)),
    )
    .await;
    let b = init_service(
        App::new()
            .wrap(Cache::new(store(&server)))
            .service(versioned(&calls_b, &version)),
    )
    .await;
    let get = || TestRequest::get().uri("/item").to_request();

    let res = call_service(&a, get()).await;
    let etag_a = header(&res, header::ETAG);
    assert_eq!(read_body(res).await, "v1");
    let res = call_service(&b, get()).await;
    assert_eq!(header(&res, "cache-status"), "actix-response-cache; hit");
    assert_eq!(
        header(&res, header::ETAG),
        etag_a,
        "the two servers sent different ETags"
    );
    assert_eq!(calls_b.get(), 0, "B called its handler for what A stored");

    // B judges If-Match against A's validator: a stale tag is 412, B's handler not called.
    let res = call_service(&b, patch_item("\"not-current\"")).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(calls_b.get(), 0);

    // A write on A is seen by B's next GET.
    let res = call_service(&a, patch_item(etag_a.as_str())).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = call_service(&b, get()).await;
    assert_eq!(
        read_body(res).await,
        "v2",
        "B served what A's write made stale"
    );
    assert_eq!(calls_b.get(), 1);
}

// Fail-open (issue: Redis down, slow, or answering errors): the request is served uncached,
// never a 5xx or a hang, and the store recovers by itself when Redis is back.
#[actix_web::test]
async fn redis_down_slow_or_failing_serves_uncached_and_recovers() {
    common::init_log();
    let mut server = RedisServer::start();
    let calls = Calls::default();
    let c = calls.clone();
    let app = init_service(
        App::new()
            .wrap(Cache::new(
                RedisStore::new(&server.url())
                    .timeout(Duration::from_millis(100))
                    .retry_after(Duration::from_millis(100)),
            ))
            .route(
                "/f",
                web::get().to(move || {
                    c.hit();
                    async { HttpResponse::Ok().body("fresh") }
                }),
            ),
    )
    .await;
    let get = || async {
        let res = actix_web::rt::time::timeout(
            Duration::from_secs(5),
            call_service(&app, TestRequest::get().uri("/f").to_request()),
        )
        .await
        .expect("a request hung on the store");
        let status = (res.status(), header(&res, "cache-status"));
        assert_eq!(read_body(res).await, "fresh");
        status
    };

    get().await;
    assert_eq!(get().await.1, "actix-response-cache; hit");
    assert_eq!(calls.get(), 1);

    // Down.
    server.stop();
    let (status, cache_status) = get().await;
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status.contains("store-error"), "{cache_status}");
    assert_eq!(calls.get(), 2);

    // Back: served from the store again once it has reconnected.
    server.spawn();
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    get().await; // stores again (the restarted server is empty)
    let mut hit = false;
    for _ in 0..20 {
        if get().await.1 == "actix-response-cache; hit" {
            hit = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hit, "the store did not recover");
    let handled = calls.get();

    // Slow: a server busy for 0.5 s, past the 100 ms limit.
    let sleeper = {
        let url = server.url();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).expect("url");
            let mut con = client.get_connection().expect("connect");
            let _: redis::Value = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("0.5")
                .query(&mut con)
                .expect("debug sleep");
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let (status, cache_status) = get().await;
    assert_eq!(status, StatusCode::OK);
    assert!(cache_status.contains("store-error"), "{cache_status}");
    assert_eq!(calls.get(), handled + 1);
    sleeper.join().expect("sleeper");

    // Answering errors: no memory for writes. Reads still work; a miss is served and logged.
    server.command(&[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    server.command(&[b"FLUSHALL"]);
    let (status, _) = get().await;
    assert_eq!(status, StatusCode::OK);
    server.command(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
}

// The entry layout is versioned: an entry in another version, or a corrupt one, is a miss
// (the handler runs), never a 500.
#[actix_web::test]
async fn corrupt_or_foreign_entries_are_misses() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let c = calls.clone();
    let app = init_service(App::new().wrap(Cache::new(store(&server))).route(
        "/c",
        web::get().to(move || {
            c.hit();
            async { HttpResponse::Ok().body("body") }
        }),
    ))
    .await;
    let get = || TestRequest::get().uri("/c").to_request();
    read_body(call_service(&app, get()).await).await;
    let keys = server.entry_keys();
    assert_eq!(keys.len(), 1, "one entry stored");

    // Another layout version.
    server.command(&[b"SETRANGE", &keys[0], b"0", b"\x63"]);
    let res = call_service(&app, get()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(read_body(res).await, "body");
    assert_eq!(calls.get(), 2, "an entry of another version was served");

    // Junk.
    let keys = server.entry_keys();
    server.command(&[b"SET", &keys[0], b"\x01\x01junk", b"KEEPTTL"]);
    let res = call_service(&app, get()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.get(), 3, "a corrupt entry was served");
}

// Expiry is Redis' own TTL: an entry carries a PTTL no longer than its lifetime.
#[actix_web::test]
async fn entries_expire_with_redis_ttl() {
    let server = RedisServer::start();
    let app = init_service(
        App::new()
            .wrap(Cache::new(store(&server)).cache_expiry(Duration::from_secs(30)))
            .route(
                "/ttl",
                web::get().to(|| async { HttpResponse::Ok().body("x") }),
            ),
    )
    .await;
    read_body(call_service(&app, TestRequest::get().uri("/ttl").to_request()).await).await;
    let keys = server.entry_keys();
    let ttl = match server.command(&[b"PTTL", &keys[0]]) {
        redis::Value::Int(ms) => ms,
        other => panic!("PTTL answered {other:?}"),
    };
    // Fresh for 30 s, kept 60 s more for revalidation.
    assert!(ttl > 80_000 && ttl <= 90_000, "PTTL {ttl}");
}

// The race guard across servers: a GET that missed on this server before a write on another
// server collected the resource must not store what its handler read before the write. The
// other server's write is the store's own `collect` (what its middleware does), so this
// process's in-process guard never hears of it.
#[actix_web::test]
async fn a_write_on_another_server_stops_a_miss_in_flight_from_storing() {
    use actix_response_cache::{CacheKey, CollectTarget, CollectableStore};
    use std::sync::atomic::AtomicBool;

    let server = RedisServer::start();
    let (entered, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let version = Arc::new(AtomicUsize::new(1));
    let calls = Calls::default();
    let (e, r, v, c) = (
        entered.clone(),
        release.clone(),
        version.clone(),
        calls.clone(),
    );
    let app = init_service(App::new().wrap(Cache::new(store(&server))).route(
        "/race",
        web::get().to(move || {
            let (e, r, v, c) = (e.clone(), r.clone(), v.clone(), c.clone());
            async move {
                c.hit();
                // What the handler reads before the other server's write...
                let read = v.load(Ordering::SeqCst);
                e.store(true, Ordering::SeqCst);
                while !r.load(Ordering::SeqCst) {
                    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                }
                // ...is returned after it.
                HttpResponse::Ok().body(format!("v{read}"))
            }
        }),
    ))
    .await;

    let other_server = store(&server);
    let in_flight = call_service(&app, TestRequest::get().uri("/race").to_request());
    let write_elsewhere = async {
        while !entered.load(Ordering::SeqCst) {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        version.store(2, Ordering::SeqCst);
        // The app's key for this request: origin as the test request routes it.
        let key = CacheKey::for_get("http://localhost:8080", "/race", "");
        let target = CollectTarget::new(key.resource().clone(), None);
        other_server.collect(&target).await.expect("collect");
        release.store(true, Ordering::SeqCst);
    };
    let (res, ()) = futures_util::future::join(in_flight, write_elsewhere).await;
    assert_eq!(read_body(res).await, "v1");

    let res = call_service(&app, TestRequest::get().uri("/race").to_request()).await;
    assert_eq!(
        read_body(res).await,
        "v2",
        "the response read before the other server's write was stored"
    );
    assert_eq!(calls.get(), 2);
}

/// A tiered store (local memory in front of this test's Redis).
fn tiered(server: &RedisServer) -> actix_response_cache::TieredStore {
    actix_response_cache::TieredStore::new(
        actix_response_cache::MemoryStore::new(1_000),
        store(server),
    )
}

/// Waits until the tiered stores' subscribers are listening (they start on first use).
async fn settle() {
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
}

// The tiered store passes the acceptance suite too.
#[actix_web::test]
async fn tiered_store_passes_the_acceptance_suite() {
    let server = RedisServer::start();
    common::acceptance::run(|| tiered(&server)).await;
}

// Two servers with local tiers: B serves A's entry from its own memory, and a write on A
// reaches B's memory through the invalidation channel.
#[actix_web::test]
async fn tiered_stores_stay_correct_across_servers() {
    let server = RedisServer::start();
    let version = Arc::new(AtomicUsize::new(1));
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let a = init_service(
        App::new()
            .wrap(Cache::new(tiered(&server)))
            .service(versioned(&calls_a, &version)),
    )
    .await;
    let b = init_service(
        App::new()
            .wrap(Cache::new(tiered(&server)))
            .service(versioned(&calls_b, &version)),
    )
    .await;
    let get = || TestRequest::get().uri("/item").to_request();
    // First use starts each store's subscriber.
    read_body(call_service(&a, get()).await).await;
    read_body(call_service(&b, get()).await).await;
    settle().await;

    let res = call_service(&a, get()).await;
    let etag = header(&res, header::ETAG);
    read_body(res).await;
    // B: from Redis, then from its local tier.
    for _ in 0..2 {
        let res = call_service(&b, get()).await;
        assert_eq!(header(&res, "cache-status"), "actix-response-cache; hit");
        assert_eq!(read_body(res).await, "v1");
    }
    assert_eq!(calls_b.get(), 0, "B's handler ran for what A stored");

    let res = call_service(&a, patch_item(etag.as_str())).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The invalidation reaches B's local tier (one pub/sub message).
    settle().await;
    let res = call_service(&b, get()).await;
    assert_eq!(
        read_body(res).await,
        "v2",
        "B's local tier served what A's write made stale"
    );
}

// Without the invalidation channel a local tier cannot be trusted: when Redis goes down, B
// serves uncached rather than from its memory.
#[actix_web::test]
async fn a_tiered_store_without_its_channel_does_not_serve_from_memory() {
    let mut server = RedisServer::start();
    let calls = Calls::default();
    let c = calls.clone();
    let app = init_service(App::new().wrap(Cache::new(tiered(&server))).route(
        "/t",
        web::get().to(move || {
            c.hit();
            async { HttpResponse::Ok().body("t") }
        }),
    ))
    .await;
    let get = || TestRequest::get().uri("/t").to_request();
    read_body(call_service(&app, get()).await).await;
    settle().await;
    read_body(call_service(&app, get()).await).await;
    let res = call_service(&app, get()).await;
    assert_eq!(header(&res, "cache-status"), "actix-response-cache; hit");
    let before = calls.get();

    server.stop();
    settle().await;
    let res = call_service(&app, get()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        calls.get(),
        before + 1,
        "served from a local tier nobody keeps correct"
    );
}
// A local tier stays invalidated after the runtime that first used the store has ended (a
// restarted worker, a second server, a test): the subscriber runs on a thread of its own.
#[test]
fn the_local_tier_is_invalidated_after_its_first_worker_ends() {
    use actix_response_cache::{
        CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, MemoryStore, TieredStore,
    };
    let server = RedisServer::start();
    let t = TieredStore::new(MemoryStore::new(100), store(&server))
        .local_ttl(Duration::from_millis(100));
    let key = CacheKey::for_get("h", "/p", "");
    {
        let (t, key) = (t.clone(), key.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let _ = t.get(&key).await;
                settle().await;
            })
        })
        .join()
        .unwrap();
    }
    let url = server.url();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            // The local tier is emptied every local_ttl: set until a copy is held locally.
            let mut held = false;
            for _ in 0..20 {
                t.set(
                    &key,
                    CacheEntry::test_response(b"old", Duration::from_secs(60)),
                )
                .await
                .unwrap();
                if matches!(t.get_now(key.as_bytes()), Some(Ok(Some(_)))) {
                    held = true;
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(held, "the local tier never held the entry");
            let other = RedisStore::new(&url);
            other
                .collect(&CollectTarget::new(key.resource().clone(), None))
                .await
                .unwrap();
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            assert!(
                t.get_now(key.as_bytes()).is_none(),
                "L1 still serves an entry another server collected, 5x local_ttl later"
            );
        })
    })
    .join()
    .unwrap();
}

// A write over an expired local copy still collects in Redis and moves the write generation:
// writes to a store several servers share always take the full write flow.
#[actix_web::test]
async fn a_write_over_an_expired_local_copy_still_collects_in_redis() {
    use actix_response_cache::{CacheEntry, CacheKey, CacheStore, MemoryStore, TieredStore};
    let server = RedisServer::start();
    let t =
        TieredStore::new(MemoryStore::new(100), store(&server)).local_ttl(Duration::from_secs(60));
    let key = CacheKey::for_get("http://localhost:8080", "/w", "");
    let _ = t.get(&key).await;
    settle().await;
    // This server stored an entry that has since expired (still in its local tier).
    t.set(
        &key,
        CacheEntry::test_response(b"v1", Duration::from_millis(200)),
    )
    .await
    .unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    // Another server stored a fresh one since.
    let other = store(&server);
    other
        .set(
            &key,
            CacheEntry::test_response(b"v2", Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let gen_before = actix_response_cache::Coordinate::generation(&other, &key)
        .await
        .unwrap();

    let app = init_service(App::new().wrap(Cache::new(t.clone())).route(
        "/w",
        web::patch().to(|| async { HttpResponse::NoContent().finish() }),
    ))
    .await;
    let res = call_service(&app, TestRequest::patch().uri("/w").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_ne!(
        actix_response_cache::Coordinate::generation(&other, &key)
            .await
            .unwrap(),
        gen_before,
        "the write did not move the generation"
    );
    // Server B, on the same Redis, after the write:
    let b = init_service(App::new().wrap(Cache::new(other)).route(
        "/w",
        web::get().to(|| async { HttpResponse::Ok().body("after-write") }),
    ))
    .await;
    let res = call_service(&b, TestRequest::get().uri("/w").to_request()).await;
    assert_eq!(
        read_body(res).await,
        "after-write",
        "another server serves the entry the write should have collected"
    );
}

// A busy worker (a blocking handler) does not hold up invalidation of the local tier: the
// subscriber runs on a thread of its own, so staleness stays bounded by local_ttl.
#[test]
fn a_busy_worker_does_not_stall_invalidation() {
    use actix_response_cache::{
        CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, MemoryStore, TieredStore,
    };
    let server = RedisServer::start();
    let t = TieredStore::new(MemoryStore::new(100), store(&server))
        .local_ttl(Duration::from_millis(100));
    let key = CacheKey::for_get("h", "/busy", "");
    let worker0 = {
        let (t, key) = (t.clone(), key.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let _ = t.get(&key).await;
                settle().await;
                std::thread::sleep(Duration::from_secs(2)); // a blocking handler
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let url = server.url();
    actix_web::rt::System::new().block_on(async move {
        t.set(
            &key,
            CacheEntry::test_response(b"old", Duration::from_secs(60)),
        )
        .await
        .unwrap();
        RedisStore::new(&url)
            .collect(&CollectTarget::new(key.resource().clone(), None))
            .await
            .unwrap();
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        assert!(
            t.get_now(key.as_bytes()).is_none(),
            "collected entry still served 5x local_ttl after the write"
        );
    });
    worker0.join().unwrap();
}

// A connection made by a runtime that has ended (its driver is gone) is not reused by the next
// runtime on the same thread.
#[test]
fn a_connection_from_an_ended_runtime_is_not_reused() {
    use actix_response_cache::{CacheEntry, CacheKey, CacheStore};
    let server = RedisServer::start();
    let s = store(&server);
    let key = CacheKey::for_get("h", "/rt", "");
    actix_web::rt::System::new().block_on(async {
        s.set(
            &key,
            CacheEntry::test_response(b"x", Duration::from_secs(60)),
        )
        .await
        .unwrap();
    });
    actix_web::rt::System::new().block_on(async {
        for i in 0..3 {
            let r = s.get(&key).await;
            assert!(matches!(r, Ok(Some(_))), "attempt {i}: {r:?}");
        }
    });
}

// Expired members leave a resource's index at its next write, so a resource with many query
// strings (/search?q=...) does not grow its index, or the collect that walks it, without bound.
#[actix_web::test]
async fn expired_members_leave_the_resource_index() {
    use actix_response_cache::{CacheEntry, CacheKey, CacheStore};
    let server = RedisServer::start();
    let s = store(&server);
    for i in 0..500 {
        let key = CacheKey::for_get("h", "/search", &format!("q={i}"));
        s.set(
            &key,
            CacheEntry::test_response(b"x", Duration::from_millis(100)),
        )
        .await
        .unwrap();
    }
    s.set(
        &CacheKey::for_get("h", "/search", "q=live"),
        CacheEntry::test_response(b"x", Duration::from_secs(60)),
    )
    .await
    .unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    // Expired members are pruned by the next write of the resource.
    s.set(
        &CacheKey::for_get("h", "/search", "q=next"),
        CacheEntry::test_response(b"x", Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let index: Vec<Vec<u8>> = redis::cmd("KEYS").arg("arc:*}r*").query(&mut con).unwrap();
    let n: i64 = redis::cmd("ZCARD").arg(&index[0]).query(&mut con).unwrap();
    assert_eq!(n, 2, "the index kept expired members");
}

// Conditional writes of one resource run one at a time across servers: while another server
// holds the resource's lock in Redis, a conditional PATCH here waits (its handler is not
// called); it goes on when the lock is released, and releases its own when done.
#[actix_web::test]
async fn conditional_writes_wait_for_another_servers_lock() {
    use actix_response_cache::CacheKey;

    let server = RedisServer::start();
    let calls = Calls::default();
    let (app, etag) = item_app!(&server, calls);
    assert_eq!(calls.get(), 1);

    let other_server = store(&server);
    let resource = CacheKey::for_get("http://localhost:8080", "/item", "")
        .resource()
        .clone();
    use actix_response_cache::Coordinate;
    let token = actix_response_cache::LockToken::new(0xabc);
    assert!(
        other_server
            .try_lock(&resource, token, Duration::from_secs(10))
            .await
            .unwrap(),
        "the other server takes the lock"
    );
    let patch = call_service(&app, patch_item(etag.as_str()));
    let other = async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        let calls_while_held = calls.get();
        other_server.unlock(&resource, token).await.unwrap();
        calls_while_held
    };
    let (res, calls_while_held) = futures_util::future::join(patch, other).await;
    assert_eq!(
        calls_while_held, 1,
        "the PATCH ran while another server held the lock"
    );
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(calls.get(), 2);
    // Released after the write: the other server can take it at once.
    assert!(other_server
        .try_lock(
            &resource,
            actix_response_cache::LockToken::new(0xabd),
            Duration::from_secs(10)
        )
        .await
        .unwrap());
}

// A conditional write whose store lock another server holds past the 5 s wait gets 503 with
// Retry-After; it never goes on unlocked, and its handler does not run.
#[actix_web::test]
async fn a_lock_held_too_long_gets_503_never_an_unlocked_write() {
    use actix_response_cache::{CacheKey, Coordinate, LockToken};

    let server = RedisServer::start();
    let calls = Calls::default();
    let (app, etag) = item_app!(&server, calls);
    let other_server = store(&server);
    let resource = CacheKey::for_get("http://localhost:8080", "/item", "")
        .resource()
        .clone();
    assert!(other_server
        .try_lock(&resource, LockToken::new(0x77), Duration::from_secs(30))
        .await
        .unwrap());
    let res = call_service(&app, patch_item(etag.as_str())).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, header::RETRY_AFTER), "1");
    assert_eq!(calls.get(), 1, "the write ran without the lock");
}

// A lock command that timed out (Redis frozen) may still be taken when Redis comes back: its
// token is released from the backlog then, so the next write does not wait for its TTL.
#[actix_web::test]
async fn a_lock_whose_command_timed_out_is_released_when_redis_answers() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let (app, etag) = item_app!(&server, calls);
    server.freeze();
    let res = call_service(&app, patch_item(etag.as_str())).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    server.thaw();
    // The frozen SET NX ran on thaw; the backlog's unlock follows within its retry pause.
    let mut locks = 1;
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        let keys = server.command(&[b"KEYS", b"arc:*}l*"]);
        locks = match keys {
            redis::Value::Array(keys) => keys.len(),
            _ => 0,
        };
        if locks == 0 {
            break;
        }
    }
    assert_eq!(locks, 0, "the timed-out lock was never released");
    let res = call_service(&app, patch_item(etag.as_str())).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

// Generation keys live as long as the longest entry stored under them: a write to a URL that
// was never cached leaves none behind, and a stored entry's generations expire with it.
#[actix_web::test]
async fn generation_keys_expire_with_their_entries() {
    let server = RedisServer::start();
    let app = init_service(
        App::new()
            .wrap(Cache::new(store(&server)).cache_expiry(Duration::from_secs(30)))
            .route(
                "/never",
                web::post().to(|| async { HttpResponse::NoContent().finish() }),
            )
            .route(
                "/kept",
                web::get().to(|| async { HttpResponse::Ok().body("kept") }),
            ),
    )
    .await;
    let res = call_service(&app, TestRequest::post().uri("/never").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let generations = |server: &RedisServer| match server.command(&[b"KEYS", b"arc:*}[gq]*"]) {
        redis::Value::Array(keys) => keys
            .into_iter()
            .filter_map(|k| match k {
                redis::Value::BulkString(k) => Some(k),
                _ => None,
            })
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert!(
        generations(&server).is_empty(),
        "a write to a URL never cached left generation keys"
    );
    let res = call_service(&app, TestRequest::get().uri("/kept").to_request()).await;
    read_body(res).await;
    let keys = generations(&server);
    assert_eq!(keys.len(), 2, "the group's and the query's generation");
    for key in keys {
        let ttl = match server.command(&[b"PTTL", &key]) {
            redis::Value::Int(ms) => ms,
            other => panic!("PTTL: {other:?}"),
        };
        assert!(
            (1..=90_000).contains(&ttl),
            "a generation key lives {ttl} ms, past its entry (30 s fresh + 60 s kept stale)"
        );
    }
}

// The validator probe through nested `Cache`s on Redis (the outer one holds the write's lock
// in Redis while it probes): a cold conditional write with the current tag passes and one with
// an old tag gets 412, and the inner `Cache` does not probe a write the outer one probed.
#[actix_web::test]
async fn a_cold_conditional_write_is_probed_through_nested_caches() {
    common::init_log();
    let server = RedisServer::start();
    let calls = Calls::default();
    let version = Arc::new(AtomicUsize::new(4));
    let app = init_service(
        App::new().wrap(Cache::new(store(&server))).service(
            web::scope("")
                .wrap(Cache::new(store(&server)).cache_expiry(Duration::from_secs(5)))
                .service(versioned(&calls, &version)),
        ),
    )
    .await;
    let res = call_service(&app, patch_item(&common::etag_of(b"v3"))).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let res = call_service(&app, patch_item(&common::etag_of(b"v4"))).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(version.load(Ordering::SeqCst), 5);
    // GET (two probes) + PATCH.
    assert_eq!(calls.get(), 3);
}

// A lock attempt whose answer was lost is retried with the same token: the store's lock finds
// it held by that token and grants it again, and no other token can take it meanwhile.
#[actix_web::test]
async fn the_store_lock_is_granted_again_to_the_token_that_holds_it() {
    use actix_response_cache::{CacheKey, Coordinate, LockToken};
    let server = RedisServer::start();
    let store = store(&server);
    let resource = CacheKey::for_get("http://localhost:8080", "/relock", "")
        .resource()
        .clone();
    let (mine, theirs) = (LockToken::new(0x51), LockToken::new(0x52));
    let ttl = Duration::from_secs(10);
    assert!(store.try_lock(&resource, mine, ttl).await.unwrap());
    assert!(
        store.try_lock(&resource, mine, ttl).await.unwrap(),
        "a retry"
    );
    assert!(!store.try_lock(&resource, theirs, ttl).await.unwrap());
    store.unlock(&resource, mine).await.unwrap();
    assert!(store.try_lock(&resource, theirs, ttl).await.unwrap());
}

// A lock the store lost between the moment a conditional write took it and its handler (here
// deleted while the write's probe runs, as `allkeys-lru` eviction would) may have been taken by
// another server since: the write gets 503, and its handler does not run.
#[actix_web::test]
async fn a_conditional_write_whose_store_lock_was_lost_gets_503() {
    let server = RedisServer::start();
    let url = server.url();
    let writes = Calls::default();
    let counted = writes.clone();
    let app = init_service(
        App::new().wrap(Cache::new(store(&server))).service(
            web::resource("/lost-lock")
                .route(web::get().to(move || {
                    // Evict every lock key, as memory pressure might.
                    let mut con = redis::Client::open(url.as_str())
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    let locks: Vec<Vec<u8>> =
                        redis::cmd("KEYS").arg("arc:*}l*").query(&mut con).unwrap();
                    for lock in &locks {
                        let _: () = redis::cmd("DEL").arg(lock).query(&mut con).unwrap();
                    }
                    async move { HttpResponse::Ok().body(format!("locks {}", locks.len())) }
                }))
                .route(web::patch().to(move || {
                    counted.hit();
                    async { HttpResponse::NoContent().finish() }
                })),
        ),
    )
    .await;
    let res = call_service(
        &app,
        TestRequest::patch()
            .uri("/lost-lock")
            .insert_header((header::IF_MATCH, common::etag_of(b"locks 1")))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(writes.get(), 0);
}
