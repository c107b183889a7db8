//! Floods and slow clients: work per request stays bounded however a client aims its requests
//! (issue P2, "bounded work per request").

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{header, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse, HttpServer,
};
use common::{header, Calls};

/// A handler that answers `Vary: User-Agent`, counting its calls.
fn varying(calls: &Calls) -> actix_web::Route {
    let calls = calls.clone();
    web::get().to(move || {
        let n = calls.hit();
        async move {
            HttpResponse::Ok()
                .insert_header((header::VARY, "User-Agent"))
                .body(format!("v{n}"))
        }
    })
}

// A flood of distinct query strings and distinct `User-Agent` values on one URL, into a store
// with room for a million entries: the variant cap keeps that one resource small, an
// unrelated resource keeps its entry, and a write still makes every variant a miss.
#[actix_web::test]
async fn a_flood_of_variants_stays_within_the_cap_and_a_write_still_collects() {
    let store = MemoryStore::new(1_000_000)
        .max_bytes(1 << 30)
        .max_variants(500);
    let (flooded, other) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()))
            .service(
                web::resource("/vitems/x")
                    .route(varying(&flooded))
                    .route(web::post().to(|| async { HttpResponse::NoContent().finish() })),
            )
            .route("/other", varying(&other)),
    )
    .await;
    let get = |uri: &str, agent: &str| {
        TestRequest::get()
            .uri(uri)
            .insert_header((header::USER_AGENT, agent.to_owned()))
            .to_request()
    };
    let res = call_service(&app, get("/other", "a")).await;
    assert_eq!(read_body(res).await, "v1");
    for i in 0..3_000 {
        let res = call_service(&app, get(&format!("/vitems/x?q={i}"), "a")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = call_service(&app, get("/vitems/x", &format!("agent-{i}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(
        store.len() <= 500 + 2,
        "one resource holds {} entries, past its cap of 500",
        store.len()
    );
    // The unrelated resource was not crowded out.
    let res = call_service(&app, get("/other", "a")).await;
    assert_eq!(read_body(res).await, "v1", "the unrelated entry was lost");
    // The newest variant is a hit before the write, a miss after it.
    let newest = || get("/vitems/x", "agent-2999");
    let before = flooded.get();
    let res = call_service(&app, newest()).await;
    assert!(header(&res, "cache-status").contains("hit"));
    assert_eq!(flooded.get(), before);
    let post = TestRequest::post().uri("/vitems/x").to_request();
    assert_eq!(
        call_service(&app, post).await.status(),
        StatusCode::NO_CONTENT
    );
    let res = call_service(&app, newest()).await;
    read_body(res).await;
    assert_eq!(flooded.get(), before + 1, "a variant survived the write");
}

// A client that sends one byte of a conditional PATCH's body and keeps the socket open holds no
// lock: a legitimate conditional PATCH of the same resource is answered at once (its lock wait
// is bounded anyway, at 5 s, past which it gets 503).
#[actix_web::test]
async fn a_trickled_body_does_not_hold_up_other_writes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("address");
    let store = MemoryStore::new(100);
    let server = HttpServer::new(move || {
        App::new().wrap(Cache::new(store.clone())).service(
            web::resource("/doc")
                .route(web::get().to(|| async { HttpResponse::Ok().body("doc") }))
                .route(
                    web::patch()
                        .to(|body: web::Bytes| async move { HttpResponse::Ok().body(body) }),
                ),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let answer = actix_web::rt::task::spawn_blocking(move || {
        let request = |stream: &mut TcpStream, text: &str| {
            stream.write_all(text.as_bytes()).expect("write");
        };
        let mut read = TcpStream::connect(addr).expect("connect");
        request(&mut read, "GET /doc HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let mut head = String::new();
        read.read_to_string(&mut head).expect("read");
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .expect("an ETag")
            .to_owned();
        // The trickler: a conditional PATCH whose body never finishes arriving.
        let mut trickler = TcpStream::connect(addr).expect("connect");
        request(
            &mut trickler,
            "PATCH /doc HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\nContent-Length: 100\r\n\r\nx",
        );
        std::thread::sleep(Duration::from_millis(200));
        let mut legit = TcpStream::connect(addr).expect("connect");
        legit
            .set_read_timeout(Some(Duration::from_secs(4)))
            .expect("timeout");
        request(
            &mut legit,
            &format!(
                "PATCH /doc HTTP/1.1\r\nHost: h\r\nIf-Match: {etag}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            ),
        );
        let mut answer = String::new();
        let _ = legit.read_to_string(&mut answer);
        drop(trickler);
        answer
    })
    .await
    .expect("the client thread");
    handle.stop(false).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the legitimate PATCH was held up by a trickled body: {answer:?}"
    );
}
