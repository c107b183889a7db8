//! The fault suite: two app servers on one `redis-server` (two `Cache`s, each on a store of its
//! own type, so that nothing in the process (race guard, write lock, backlog) is shared between
//! them: all they share is Redis), under a mix of reads, conditional writes and plain writes,
//! while the test injects a fault into Redis: slow replies (`DEBUG SLEEP` past the store's
//! timeout), a freeze (`SIGSTOP`/`SIGCONT`), a kill and restart, a restart empty, and `maxmemory`
//! with `allkeys-lru` eviction under a flood of distinct query strings.
//!
//! Every scenario asserts: no stale read after a completed write (a read that began after a
//! write's 2xx never returns an older version), no conditional write let through against a
//! version that was no longer current (the application counts them), no 5xx but the documented
//! `503` of a conditional write that could not be judged, every request answered within the
//! documented bounds, and the cache serving again after the fault.
//!
//! The same faults against two release servers, under wrk load: `benches/faults.sh`.
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix_response_cache::{
    Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, Coordination,
    MemoryStore, RedisStore, StoreError, TieredStore,
};
use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::{header, StatusCode},
    test::{init_service, read_body, TestRequest},
    web, App, HttpResponse,
};
use common::redis_server::RedisServer;

/// How long one request may take at most: a conditional write waits up to 5 s for its locks,
/// a write up to 5 s for its collects, and each store operation is cut off by its timeout.
const MAX_LATENCY: Duration = Duration::from_secs(11);
const ITEMS: u32 = 6;

// ---------------------------------------------------------------------------------------------
// The application: one database for both servers.

/// The application's database: item versions, and the lost updates (conditional writes the
/// cache let through while the client's version was no longer current).
#[derive(Clone, Default)]
struct Db {
    versions: Arc<Mutex<HashMap<u32, u64>>>,
    lost: Arc<AtomicU64>,
}

impl Db {
    fn read(&self, id: u32) -> u64 {
        *self.versions.lock().unwrap().get(&id).unwrap_or(&0)
    }

    /// A write: `expected` is the version the client's `If-Match` stood for (`None`: a plain
    /// write). Returns the new version.
    fn write(&self, id: u32, expected: Option<u64>) -> u64 {
        let mut versions = self.versions.lock().unwrap();
        let version = versions.entry(id).or_insert(0);
        if expected.is_some_and(|e| e != *version) {
            self.lost.fetch_add(1, Ordering::SeqCst);
            log::error!("LOST item {id} expected {expected:?} actual {version}");
        }
        *version += 1;
        *version
    }
}

fn routes(db: Db) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let (get_db, patch_db, put_db) = (db.clone(), db.clone(), db);
        cfg.service(
            web::resource("/items/{id}")
                .route(web::get().to(move |id: web::Path<u32>| {
                    let v = get_db.read(*id);
                    async move { HttpResponse::Ok().body(format!("{}:{v}", *id)) }
                }))
                .route(
                    web::patch().to(move |id: web::Path<u32>, body: web::Bytes| {
                        let expected = std::str::from_utf8(&body).ok().and_then(|b| b.parse().ok());
                        let v = patch_db.write(*id, expected);
                        async move { HttpResponse::Ok().body(format!("{}:{v}", *id)) }
                    }),
                )
                .route(web::put().to(move |id: web::Path<u32>| {
                    let v = put_db.write(*id, None);
                    async move { HttpResponse::Ok().body(format!("{}:{v}", *id)) }
                })),
        )
        .route(
            "/flood",
            web::get().to(|| async { HttpResponse::Ok().body(vec![b'f'; 4096]) }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The second server: a store of its own type, so that it shares nothing in-process with the
// first one.

#[derive(Clone)]
struct OtherServer<S>(S);

impl<S: CacheStore> CacheStore for OtherServer<S> {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        self.0.get(key).await
    }
    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.0.set(key, entry).await
    }
    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.0.remove(key).await
    }
    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        self.0.get_now(key)
    }
}

impl<S: CollectableStore> CollectableStore for OtherServer<S> {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        self.0.collect(target).await
    }
    fn coordination(&self) -> Coordination<'_> {
        self.0.coordination()
    }
}

// ---------------------------------------------------------------------------------------------
// The clients.

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    writes: AtomicU64,
    refused_412: AtomicU64,
    unavailable_503: AtomicU64,
    /// Any other status that is not 2xx (a 5xx the cache caused, a 4xx it should not send).
    other: AtomicU64,
    stale: AtomicU64,
    max_latency_ms: AtomicU64,
    /// Per item, the highest version a completed write returned.
    completed: Mutex<HashMap<u32, u64>>,
}

impl Tally {
    fn completed(&self, id: u32) -> u64 {
        *self.completed.lock().unwrap().get(&id).unwrap_or(&0)
    }

    fn complete(&self, id: u32, version: u64) {
        let mut completed = self.completed.lock().unwrap();
        let v = completed.entry(id).or_insert(0);
        *v = (*v).max(version);
    }

    fn report(&self) -> String {
        format!(
            "requests={} ok={} writes={} 412={} 503={} other={} stale={} max_ms={}",
            self.requests.load(Ordering::SeqCst),
            self.ok.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
            self.refused_412.load(Ordering::SeqCst),
            self.unavailable_503.load(Ordering::SeqCst),
            self.other.load(Ordering::SeqCst),
            self.stale.load(Ordering::SeqCst),
            self.max_latency_ms.load(Ordering::SeqCst),
        )
    }
}

/// What a request got: status, `ETag`, and the version in its body.
struct Got {
    status: StatusCode,
    etag: Option<String>,
    version: Option<u64>,
}

async fn send<S, B>(app: &S, tally: &Tally, req: actix_http::Request) -> Got
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let started = Instant::now();
    tally.requests.fetch_add(1, Ordering::SeqCst);
    let got = match app.call(req).await {
        Ok(res) => {
            let status = res.status();
            let etag = res
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = read_body(res).await;
            let version = std::str::from_utf8(&body)
                .ok()
                .and_then(|b| b.split(':').nth(1))
                .and_then(|v| v.parse().ok());
            Got {
                status,
                etag,
                version,
            }
        }
        Err(err) => Got {
            status: err.as_response_error().status_code(),
            etag: None,
            version: None,
        },
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tally.max_latency_ms.fetch_max(ms, Ordering::SeqCst);
    match got.status {
        s if s.is_success() => tally.ok.fetch_add(1, Ordering::SeqCst),
        StatusCode::PRECONDITION_FAILED => tally.refused_412.fetch_add(1, Ordering::SeqCst),
        StatusCode::SERVICE_UNAVAILABLE => tally.unavailable_503.fetch_add(1, Ordering::SeqCst),
        _ => tally.other.fetch_add(1, Ordering::SeqCst),
    };
    got
}

/// A small xorshift, so runs differ in their interleaving but need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One client until `until`: reads (75 %), conditional writes after a read (20 %), plain writes
/// (5 %), each to either server at random.
async fn client<A, B, X, Y>(a: &A, b: &B, tally: &Tally, until: Instant, seed: u64)
where
    A: Service<actix_http::Request, Response = ServiceResponse<X>, Error = actix_web::Error>,
    B: Service<actix_http::Request, Response = ServiceResponse<Y>, Error = actix_web::Error>,
    X: MessageBody,
    Y: MessageBody,
{
    let mut rng = Rng(seed | 1);
    while Instant::now() < until {
        let id = (rng.next() % u64::from(ITEMS)) as u32;
        let uri = format!("/items/{id}");
        let roll = rng.next() % 100;
        let pick = |rng: &mut Rng| rng.next().is_multiple_of(2);
        let on_a = pick(&mut rng);
        macro_rules! to {
            ($on_a:expr, $req:expr) => {
                if $on_a {
                    send(a, tally, $req).await
                } else {
                    send(b, tally, $req).await
                }
            };
        }
        if roll < 75 {
            let known = tally.completed(id);
            let got = to!(on_a, TestRequest::get().uri(&uri).to_request());
            if got.status.is_success() && got.version.is_some_and(|v| v < known) {
                tally.stale.fetch_add(1, Ordering::SeqCst);
                eprintln!("stale read of {uri}: {:?} after {known}", got.version);
            }
        } else if roll < 95 {
            let read = to!(on_a, TestRequest::get().uri(&uri).to_request());
            let (Some(etag), Some(version)) = (read.etag, read.version) else {
                continue;
            };
            let req = TestRequest::patch()
                .uri(&uri)
                .insert_header((header::IF_MATCH, etag))
                .set_payload(version.to_string())
                .to_request();
            let got = to!(pick(&mut rng), req);
            if got.status.is_success() {
                tally.writes.fetch_add(1, Ordering::SeqCst);
                tally.complete(id, got.version.unwrap_or(0));
            }
        } else {
            let got = to!(on_a, TestRequest::put().uri(&uri).to_request());
            if got.status.is_success() {
                tally.writes.fetch_add(1, Ordering::SeqCst);
                tally.complete(id, got.version.unwrap_or(0));
            }
        }
        // Let the other clients and the stores' tasks in.
        actix_web::rt::task::yield_now().await;
    }
}

/// Floods `/flood` with distinct query strings until `until` (the eviction scenario).
async fn flood<A, X>(a: &A, until: Instant)
where
    A: Service<actix_http::Request, Response = ServiceResponse<X>, Error = actix_web::Error>,
    X: MessageBody,
{
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let req = TestRequest::get()
            .uri(&format!("/flood?q={n}"))
            .to_request();
        if let Ok(res) = a.call(req).await {
            let _ = read_body(res).await;
        }
        actix_web::rt::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Replies slower than the store's timeout.
    Slow,
    Freeze,
    KillRestart,
    RestartEmpty,
    Evict,
}

/// The store's limits: tight enough that the faults bite, generous enough for a debug build.
fn redis(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url())
        .timeout(Duration::from_millis(150))
        .retry_after(Duration::from_millis(200))
}

/// Injects `fault` (from a thread: the test's runtime drives the load meanwhile).
fn inject(server: Arc<Mutex<RedisServer>>, fault: Fault) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        pause(800);
        match fault {
            Fault::None | Fault::Evict => {}
            Fault::Slow => {
                for _ in 0..3 {
                    let sleeper = server.lock().unwrap().sleep_in_background(0.4);
                    let _ = sleeper.join();
                    pause(300);
                }
            }
            Fault::Freeze => {
                server.lock().unwrap().freeze();
                pause(1500);
                server.lock().unwrap().thaw();
            }
            Fault::KillRestart => {
                server.lock().unwrap().stop();
                pause(1000);
                server.lock().unwrap().spawn();
            }
            Fault::RestartEmpty => {
                server.lock().unwrap().restart_empty();
                pause(700);
                server.lock().unwrap().restart_empty();
            }
        }
    })
}

/// One scenario at a time: each loads the machine on its own, as a real fault would.
static ONE_AT_A_TIME: futures_util::lock::Mutex<()> = futures_util::lock::Mutex::new(());

async fn run_scenario(fault: Fault, tiered: bool) {
    common::init_log();
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = RedisServer::start();
    if let Fault::Evict = fault {
        server.command(&[b"CONFIG", b"SET", b"maxmemory", b"4mb"]);
        server.command(&[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"]);
    }
    let db = Db::default();
    let expiry = Duration::from_secs(30);
    let a_store = redis(&server);
    let b_store = OtherServer(redis(&server));
    let (a, b);
    if tiered {
        let local = || MemoryStore::new(1_000);
        a = Either::Tiered(TieredStore::new(local(), a_store));
        b = OtherServer(Either::Tiered(TieredStore::new(local(), b_store.0)));
    } else {
        a = Either::Redis(a_store);
        b = OtherServer(Either::Redis(b_store.0));
    }
    let app_a = init_service(
        App::new()
            .wrap(Cache::new(a).cache_expiry(expiry))
            .configure(routes(db.clone())),
    )
    .await;
    let app_b = init_service(
        App::new()
            .wrap(Cache::new(b).cache_expiry(expiry))
            .configure(routes(db.clone())),
    )
    .await;
    let server = Arc::new(Mutex::new(server));
    let tally = Tally::default();
    let started = Instant::now();
    let until = started + Duration::from_millis(3800);
    let faults = inject(Arc::clone(&server), fault);
    let clients = (0..6u64).map(|i| client(&app_a, &app_b, &tally, until, 0x9e37_79b9 * (i + 1)));
    let flooding = async {
        if let Fault::Evict = fault {
            flood(&app_a, until).await;
        }
    };
    futures_util::future::join(futures_util::future::join_all(clients), flooding).await;
    faults.join().expect("the fault thread");

    // After the fault: the cache serves hits again, from both servers.
    let recovered = Instant::now();
    let mut hits = 0;
    while hits < 2 && recovered.elapsed() < Duration::from_secs(5) {
        hits = 0;
        for on_a in [true, false] {
            let req = TestRequest::get().uri("/items/0").to_request();
            let res = match on_a {
                true => app_a.call(req).await.map(cache_status),
                false => app_b.call(req).await.map(cache_status),
            };
            if res.is_ok_and(|s| s.contains("hit")) {
                hits += 1;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let report = format!(
        "{fault:?} ({}): {} lost={} recovered_in={:?}",
        if tiered { "tiered" } else { "redis" },
        tally.report(),
        db.lost.load(Ordering::SeqCst),
        recovered.elapsed()
    );
    eprintln!("{report}");
    if !tiered {
        assert_eq!(
            tally.stale.load(Ordering::SeqCst),
            0,
            "stale reads: {report}"
        );
    }
    // A fault that loses what the store held (a restart, an eviction) leaves a conditional
    // write nothing stored to be judged against: the validator probe asks the handler then.
    let allowed_lost = 0;
    assert!(
        db.lost.load(Ordering::SeqCst) <= allowed_lost,
        "lost updates: {report}"
    );
    assert_eq!(
        tally.other.load(Ordering::SeqCst),
        0,
        "unexpected statuses: {report}"
    );
    assert!(
        tally.max_latency_ms.load(Ordering::SeqCst) < MAX_LATENCY.as_millis() as u64,
        "a request took too long: {report}"
    );
    assert!(
        tally.writes.load(Ordering::SeqCst) > 0,
        "no write completed: {report}"
    );
    assert!(
        tally.ok.load(Ordering::SeqCst) > 100,
        "too little load: {report}"
    );
    assert_eq!(hits, 2, "the cache did not serve hits again: {report}");
}

fn cache_status<B>(res: ServiceResponse<B>) -> String {
    res.headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A Redis or a tiered store, as one type (each server's store is one of them).
#[derive(Clone)]
enum Either {
    Redis(RedisStore),
    Tiered(TieredStore),
}

impl CacheStore for Either {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        match self {
            Self::Redis(s) => s.get(key).await,
            Self::Tiered(s) => s.get(key).await,
        }
    }
    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        match self {
            Self::Redis(s) => s.set(key, entry).await,
            Self::Tiered(s) => s.set(key, entry).await,
        }
    }
    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        match self {
            Self::Redis(s) => s.remove(key).await,
            Self::Tiered(s) => s.remove(key).await,
        }
    }
    fn get_now(&self, key: &[u8]) -> Option<Result<Option<CacheEntry>, StoreError>> {
        match self {
            Self::Redis(s) => s.get_now(key),
            Self::Tiered(s) => s.get_now(key),
        }
    }
}

impl CollectableStore for Either {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        match self {
            Self::Redis(s) => s.collect(target).await,
            Self::Tiered(s) => s.collect(target).await,
        }
    }
    fn coordination(&self) -> Coordination<'_> {
        match self {
            Self::Redis(s) => s.coordination(),
            Self::Tiered(s) => s.coordination(),
        }
    }
}

#[actix_web::test]
async fn no_fault() {
    run_scenario(Fault::None, false).await;
}

#[actix_web::test]
async fn slow_replies() {
    run_scenario(Fault::Slow, false).await;
}

#[actix_web::test]
async fn frozen_redis() {
    run_scenario(Fault::Freeze, false).await;
}

#[actix_web::test]
async fn killed_and_restarted_redis() {
    run_scenario(Fault::KillRestart, false).await;
}

#[actix_web::test]
async fn redis_restarted_empty() {
    run_scenario(Fault::RestartEmpty, false).await;
}

#[actix_web::test]
async fn redis_evicting_under_maxmemory() {
    run_scenario(Fault::Evict, false).await;
}

// TieredStore: the writing server never serves what its own write collected; across servers
// the window is the delivery of one pub/sub message (measured here and by benches/faults.sh).
#[actix_web::test]
async fn tiered_no_fault() {
    run_scenario(Fault::None, true).await;
}
