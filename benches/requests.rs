//! Whole requests through the middleware, in process (`actix_web::test`), against the same
//! handler without it.
//!
//! `cargo bench --bench requests`

use std::{
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::header,
    rt::System,
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};
use criterion::{criterion_group, criterion_main, Criterion};

static SMALL: [u8; 1024] = [b'a'; 1024];

fn requests(c: &mut Criterion) {
    let rt = System::new();
    let app = rt.block_on(init_service(
        App::new()
            .route(
                "/bare/static",
                web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
            )
            .route(
                "/bare/post",
                web::post().to(|| async { HttpResponse::Ok().body("ok") }),
            )
            .route(
                "/bare/stream",
                web::get().to(|| async {
                    HttpResponse::Ok().streaming(futures_util::stream::once(async {
                        Ok::<_, actix_web::Error>(web::Bytes::from_static(&SMALL))
                    }))
                }),
            )
            // The same handlers in the same kind of scope, without the middleware: the
            // baseline for "the same handler without it".
            .service(
                web::scope("/plain")
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    ),
            )
            .service(
                web::scope("/cached")
                    .wrap(Cache::new(MemoryStore::new(100_000)))
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/unique/{n}",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route(
                        "/stream",
                        web::get().to(|| async {
                            HttpResponse::Ok().streaming(futures_util::stream::once(async {
                                Ok::<_, actix_web::Error>(web::Bytes::from_static(&SMALL))
                            }))
                        }),
                    ),
            ),
    ));
    let etag = rt.block_on(async {
        let res = call_service(&app, TestRequest::get().uri("/cached/static").to_request()).await;
        res.headers().get(header::ETAG).cloned().expect("an ETag")
    });

    let mut group = c.benchmark_group("request");
    let get = |uri: &'static str| move || TestRequest::get().uri(uri);
    type MakeRequest = Box<dyn Fn() -> TestRequest>;
    let cases: [(&str, MakeRequest); 8] = [
        ("bare-get", Box::new(get("/bare/static"))),
        ("scope-get", Box::new(get("/plain/static"))),
        (
            "scope-post",
            Box::new(|| TestRequest::post().uri("/plain/post")),
        ),
        ("hit", Box::new(get("/cached/static"))),
        ("304", {
            let etag = etag.clone();
            Box::new(move || {
                TestRequest::get()
                    .uri("/cached/static")
                    .insert_header((header::IF_NONE_MATCH, etag.clone()))
            })
        }),
        (
            "bare-post",
            Box::new(|| TestRequest::post().uri("/bare/post")),
        ),
        ("post", Box::new(|| TestRequest::post().uri("/cached/post"))),
        ("stream", Box::new(get("/cached/stream"))),
    ];
    for (name, make) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let res = call_service(&app, make().to_request()).await;
                    black_box(read_body(res).await)
                })
            })
        });
    }
    group.bench_function("bare-stream", |b| {
        b.iter(|| {
            rt.block_on(async {
                let res =
                    call_service(&app, TestRequest::get().uri("/bare/stream").to_request()).await;
                black_box(read_body(res).await)
            })
        })
    });
    static N: AtomicU64 = AtomicU64::new(0);
    group.bench_function("miss-and-store", |b| {
        b.iter(|| {
            let uri = format!("/cached/unique/{}", N.fetch_add(1, Ordering::Relaxed));
            rt.block_on(async {
                let res = call_service(&app, TestRequest::get().uri(&uri).to_request()).await;
                black_box(read_body(res).await)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
