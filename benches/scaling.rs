//! Hits from several threads at once: one hot key, and many keys, from 1, 2 and 4 threads.
//!
//! `cargo bench --bench scaling`
//!
//! Two levels: `store-hits` looks entries up in one shared `MemoryStore` (the part that could
//! serialise workers), `request-hits` sends whole in-process requests, each thread with its own
//! actix `System` and `App` around one shared store, as actix-web's workers are. Throughput is in
//! lookups (requests) per second over all threads; on a 2-core machine the 4-thread figures show
//! oversubscription, not scaling.

use std::{
    hint::black_box,
    sync::Barrier,
    time::{Duration, Instant},
};

use actix_response_cache::{Cache, CacheEntry, CacheKey, CacheStore, MemoryStore};
use actix_web::{
    rt::System,
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;

static BODY: [u8; 1024] = [b'a'; 1024];

/// How many keys the many-key cases spread over.
const MANY: usize = 1_000;

/// Runs `work(thread, iters)` on `threads` threads started together; the elapsed time runs from
/// the moment all are ready to the moment the last is done.
fn on_threads<F>(threads: usize, iters: u64, work: F) -> Duration
where
    F: Fn(usize, u64, &Barrier) + Sync,
{
    let ready = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (ready, done, work) = (&ready, &done, &work);
            s.spawn(move || {
                work(t, iters, ready);
                done.wait();
            });
        }
        ready.wait();
        let start = Instant::now();
        done.wait();
        start.elapsed()
    })
}

fn store_hits(c: &mut Criterion) {
    let store = MemoryStore::new(100_000);
    let keys: Vec<CacheKey> = (0..MANY)
        .map(|i| CacheKey::for_get("http://example.com", &format!("/item/{i}"), ""))
        .collect();
    for key in &keys {
        let entry = CacheEntry::test_response(&BODY, Duration::from_secs(3600));
        store.set(key, entry).now_or_never();
    }
    let mut group = c.benchmark_group("store-hits");
    for (name, spread) in [("hot", 1), ("many", MANY)] {
        for threads in [1, 2, 4] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, |t, iters, ready| {
                        ready.wait();
                        for n in 0..iters as usize {
                            let key = &keys[(n * 7 + t * 503) % spread];
                            black_box(store.get_now(black_box(key.as_bytes())));
                        }
                    })
                })
            });
        }
    }
    group.finish();
}

fn request_hits(c: &mut Criterion) {
    let store = MemoryStore::new(100_000);
    let uris: Vec<String> = (0..MANY).map(|i| format!("/item/{i}")).collect();
    let mut group = c.benchmark_group("request-hits");
    group.sample_size(20);
    // `bare`: the same handler without the cache, on one path: how far this machine scales
    // at all (the ceiling for the others).
    for (name, spread) in [("bare", 1), ("hot", 1), ("many", MANY)] {
        for threads in [1, 2, 4] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, |t, iters, ready| {
                        let rt = System::new();
                        let cache = Cache::new(store.clone());
                        let app = rt.block_on(init_service(
                            App::new()
                                .wrap(actix_web::middleware::Condition::new(name != "bare", cache))
                                .route(
                                    "/item/{n}",
                                    web::get().to(|| async { HttpResponse::Ok().body(&BODY[..]) }),
                                ),
                        ));
                        rt.block_on(async {
                            for uri in &uris[..spread] {
                                let req = TestRequest::get().uri(uri).to_request();
                                read_body(call_service(&app, req).await).await;
                            }
                        });
                        ready.wait();
                        rt.block_on(async {
                            for n in 0..iters as usize {
                                let uri = &uris[(n * 7 + t * 503) % spread];
                                let req = TestRequest::get().uri(uri).to_request();
                                black_box(read_body(call_service(&app, req).await).await);
                            }
                        });
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, store_hits, request_hits);
criterion_main!(benches);
