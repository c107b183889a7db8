//! Instructions per in-process request, counted by valgrind: repeatable on a noisy machine,
//! where wall-clock benchmarks are not.
//!
//! ```sh
//! cargo bench --bench instructions --no-run
//! bash benches/instructions.sh     # runs this binary under callgrind for each case
//! ```
//!
//! Arguments: a case (`scope-get`, `hit`, `304`, `scope-post`, `post`, `bare-stream`, `stream`)
//! and a request count. Run without arguments (as `cargo bench` does) it does a few of each.

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::header,
    rt::System,
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};

static SMALL: [u8; 1024] = [b'a'; 1024];

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let case = args.next();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let rt = System::new();
    let app = rt.block_on(init_service(
        App::new()
            .service(
                web::scope("/plain")
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route("/stream", web::get().to(stream)),
            )
            .service(
                web::scope("/cached")
                    .wrap(Cache::new(MemoryStore::new(10_000)))
                    .route(
                        "/static",
                        web::get().to(|| async { HttpResponse::Ok().body(&SMALL[..]) }),
                    )
                    .route(
                        "/post",
                        web::post().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route("/stream", web::get().to(stream)),
            ),
    ));
    let etag = rt.block_on(async {
        let res = call_service(&app, TestRequest::get().uri("/cached/static").to_request()).await;
        res.headers().get(header::ETAG).cloned()
    });
    let cases: Vec<&str> = match &case {
        Some(case) => vec![case.as_str()],
        None => vec![
            "scope-get",
            "hit",
            "304",
            "scope-post",
            "post",
            "bare-stream",
            "stream",
        ],
    };
    for case in cases {
        rt.block_on(async {
            for _ in 0..n {
                let req = match case {
                    "scope-get" => TestRequest::get().uri("/plain/static"),
                    "hit" => TestRequest::get().uri("/cached/static"),
                    "304" => {
                        let mut req = TestRequest::get().uri("/cached/static");
                        if let Some(etag) = &etag {
                            req = req.insert_header((header::IF_NONE_MATCH, etag.clone()));
                        }
                        req
                    }
                    "scope-post" => TestRequest::post().uri("/plain/post"),
                    "post" => TestRequest::post().uri("/cached/post"),
                    "bare-stream" => TestRequest::get().uri("/plain/stream"),
                    "stream" => TestRequest::get().uri("/cached/stream"),
                    other => panic!("unknown case {other}"),
                };
                // Every HTTP/1.1 client sends Host.
                let req = req.insert_header((header::HOST, "bench.example"));
                read_body(call_service(&app, req.to_request()).await).await;
            }
        });
    }
}

async fn stream() -> HttpResponse {
    HttpResponse::Ok().streaming(futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(&SMALL))
    }))
}
