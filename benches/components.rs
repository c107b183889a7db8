//! Component benchmarks: ETag hashing, precondition evaluation, key derivation, MemoryStore.
//!
//! `cargo bench --bench components`

use std::{hint::black_box, time::Duration};

use actix_response_cache::{__bench, CacheEntry, CacheKey, CacheStore, MemoryStore};
use actix_web::http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Method,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;

fn etag(c: &mut Criterion) {
    let mut group = c.benchmark_group("etag");
    for size in [1024, 64 * 1024, 1024 * 1024] {
        let body = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| __bench::strong_etag(black_box(body)))
        });
    }
    group.finish();
}

fn preconditions(c: &mut Criterion) {
    let current = __bench::strong_etag(b"current");
    let list: Vec<String> = (0..99).map(|i| format!("\"tag-{i:04}\"")).collect();
    let long = format!(
        "{}, {}",
        list.join(", "),
        current.to_str().unwrap_or_default()
    );
    let mut group = c.benchmark_group("preconditions");
    for (name, field, method) in [
        (
            "if-none-match/1",
            current.to_str().unwrap_or_default().to_owned(),
            Method::GET,
        ),
        ("if-none-match/100", long.clone(), Method::GET),
        (
            "if-match/1",
            current.to_str().unwrap_or_default().to_owned(),
            Method::PUT,
        ),
        ("if-match/100", long.clone(), Method::PUT),
    ] {
        let mut headers = HeaderMap::new();
        let name_header = if method == Method::GET {
            header::IF_NONE_MATCH
        } else {
            header::IF_MATCH
        };
        headers.insert(name_header, HeaderValue::from_str(&field).unwrap());
        group.bench_function(name, |b| {
            b.iter(|| __bench::evaluate(&method, black_box(&headers), current.as_bytes()))
        });
    }
    group.finish();
}

fn keys(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT_LANGUAGE,
        HeaderValue::from_static("en-GB,en;q=0.9"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let vary = [header::ACCEPT, header::ACCEPT_LANGUAGE];
    let none: [HeaderName; 0] = [];
    let mut group = c.benchmark_group("key");
    group.bench_function("plain", |b| {
        b.iter(|| {
            __bench::key(
                "http://example.com",
                black_box("/users/42"),
                "page=2",
                &none,
                &headers,
            )
        })
    });
    group.bench_function("vary-2", |b| {
        b.iter(|| {
            __bench::key(
                "http://example.com",
                black_box("/users/42"),
                "page=2",
                &vary,
                &headers,
            )
        })
    });
    group.finish();
}

fn memory_store(c: &mut Criterion) {
    let store = MemoryStore::new(100_000);
    let keys: Vec<CacheKey> = (0..10_000)
        .map(|i| CacheKey::for_get("http://example.com", &format!("/item/{i}"), ""))
        .collect();
    for key in &keys {
        let entry = CacheEntry::test_response(&[b'x'; 1024], Duration::from_secs(3600));
        store.set(key, entry).now_or_never();
    }
    let mut group = c.benchmark_group("memory-store");
    let mut i = 0;
    group.bench_function("get/1-thread", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            store.get_now(black_box(keys[i].as_bytes()))
        })
    });
    group.bench_function("set/1-thread", |b| {
        let entry = CacheEntry::test_response(&[b'x'; 1024], Duration::from_secs(3600));
        b.iter(|| {
            i = (i + 1) % keys.len();
            store.set(&keys[i], entry.clone()).now_or_never()
        })
    });
    // Two threads reading at once: the cost per lookup when two workers contend.
    group.bench_function("get/2-threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (store, keys) = (&store, &keys);
                    s.spawn(move || {
                        for n in 0..iters as usize {
                            let key = &keys[(n * 7 + t * 5003) % keys.len()];
                            black_box(store.get_now(key.as_bytes()));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

/// The entry layout of remote stores (`RedisStore`): a stored 1 KiB response.
fn entry_codec(c: &mut Criterion) {
    let entry = CacheEntry::test_response(&[b'x'; 1024], Duration::from_secs(3600));
    let bytes = actix_web::web::Bytes::from(__bench::encode_entry(&entry));
    let mut group = c.benchmark_group("entry-codec");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode/1KiB", |b| {
        b.iter(|| __bench::encode_entry(black_box(&entry)))
    });
    group.bench_function("decode/1KiB", |b| {
        b.iter(|| __bench::decode_entry(black_box(&bytes)))
    });
    group.finish();
}

criterion_group!(
    benches,
    etag,
    preconditions,
    keys,
    memory_store,
    entry_codec
);
criterion_main!(benches);
