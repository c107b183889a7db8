//! Cache keys: RFC 9111 §2 (the primary key is the method and target URI) and §4.1 (secondary
//! keys from `Vary`), plus the crate's `cache_vary`.

mod common;

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    guard,
    http::{header, StatusCode},
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse, Route,
};
use common::{cached_route, cached_service, counted, get, header, req_header, Calls};

/// A `GET` route that counts its calls and echoes the request's Accept-Language, host and query.
fn echo(calls: &Calls, vary: Option<&'static str>) -> Route {
    counted(web::get(), calls, move |req| {
        let lang = match req.headers().get(header::ACCEPT_LANGUAGE) {
            Some(v) => format!("[{}]", String::from_utf8_lossy(v.as_bytes())),
            None => "none".to_owned(),
        };
        let body = format!(
            "lang={lang} host={} query={}",
            req.connection_info().host(),
            req.query_string()
        );
        let mut res = HttpResponse::Ok();
        if let Some(vary) = vary {
            res.insert_header((header::VARY, vary));
        }
        res.body(body)
    })
}

fn with_lang(path: &str, lang: Option<&str>) -> TestRequest {
    match lang {
        Some(lang) => get(path).insert_header((header::ACCEPT_LANGUAGE, lang)),
        None => get(path),
    }
}

// RFC 9111 §4.1: cache_vary names headers that select the stored response, and says so in Vary.
#[actix_web::test]
async fn cache_vary_splits_the_key_and_adds_vary() {
    common::init_log();
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(
        Cache::new(store.clone()).cache_vary(["accept-language"]),
        "/cv",
        echo(&calls, None)
    );
    for (lang, expected_calls, hit) in [
        ("en", 1, false),
        ("en", 1, true),
        ("de", 2, false),
        ("de", 2, true),
        ("en", 2, true),
    ] {
        let res = call_service(&app, with_lang("/cv", Some(lang)).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "vary"), "accept-language");
        assert_eq!(header(&res, "cache-status").contains("hit"), hit, "{lang}");
        assert!(read_body(res)
            .await
            .starts_with(format!("lang=[{lang}]").as_bytes()));
        assert_eq!(calls.get(), expected_calls, "after {lang}");
    }
    // Two variants, plus the marker at the primary key that names the varying header.
    assert_eq!(store.len(), 3);
}

// RFC 9111 §4.1: cache_vary and the handler's own Vary both select the stored response.
#[actix_web::test]
async fn cache_vary_is_added_to_the_handler_vary() {
    let calls = Calls::default();
    let route = counted(web::get(), &calls, |req| {
        HttpResponse::Ok()
            .insert_header((header::VARY, "Accept"))
            .body(req_header(req, header::ACCEPT))
    });
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)).cache_vary(["accept-language"]),
        "/cv-merge",
        route
    );
    let request = |accept: &str, lang: &str| {
        get("/cv-merge")
            .insert_header((header::ACCEPT, accept))
            .insert_header((header::ACCEPT_LANGUAGE, lang))
            .to_request()
    };
    let res = call_service(&app, request("text/html", "en")).await;
    let vary: Vec<String> = res
        .headers()
        .get_all(header::VARY)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .collect();
    let names: Vec<&str> = vary
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert!(
        names.contains(&"accept") && names.contains(&"accept-language"),
        "{vary:?}"
    );

    call_service(&app, request("text/html", "en")).await;
    assert_eq!(calls.get(), 1);
    let res = call_service(&app, request("application/json", "en")).await;
    assert_eq!(read_body(res).await, "application/json".as_bytes());
    call_service(&app, request("text/html", "de")).await;
    assert_eq!(calls.get(), 3);
}

// RFC 9111 §4.1: the response's Vary alone splits entries; each variant is stored and hit.
#[actix_web::test]
async fn response_vary_splits_entries_without_cache_vary() {
    let calls = Calls::default();
    let app = cached_route!(
        Cache::new(MemoryStore::new(100)),
        "/rv",
        echo(&calls, Some("Accept-Language"))
    );

    let res = call_service(&app, with_lang("/rv", Some("en")).to_request()).await;
    let status = header(&res, "cache-status");
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "{status}"
    );
    assert_eq!(header(&res, "vary"), "Accept-Language");

    let res = call_service(&app, with_lang("/rv", Some("de")).to_request()).await;
    let status = header(&res, "cache-status");
    assert!(
        status.contains("fwd=vary-miss") && status.contains("stored"),
        "{status}"
    );
    assert_eq!(
        read_body(res).await,
        "lang=[de] host=localhost:8080 query=".as_bytes()
    );
    assert_eq!(calls.get(), 2);

    for lang in ["en", "de", "en"] {
        let res = call_service(&app, with_lang("/rv", Some(lang)).to_request()).await;
        assert!(header(&res, "cache-status").contains("hit"), "{lang}");
        assert!(read_body(res)
            .await
            .starts_with(format!("lang=[{lang}]").as_bytes()));
    }
    assert_eq!(calls.get(), 2);
}

// RFC 9111 §4.1: a header absent from one request and present but empty in another do not match.
#[actix_web::test]
async fn absent_and_empty_header_values_are_different_keys() {
    let (configured, responded) = (Calls::default(), Calls::default());
    let app = init_service(
        App::new()
            .service(
                web::scope("/empty-cv")
                    .wrap(Cache::new(MemoryStore::new(100)).cache_vary(["accept-language"]))
                    .route("", echo(&configured, None)),
            )
            .service(
                web::scope("/empty-rv")
                    .wrap(Cache::new(MemoryStore::new(100)))
                    .route("", echo(&responded, Some("accept-language"))),
            ),
    )
    .await;
    for (path, calls) in [("/empty-cv", &configured), ("/empty-rv", &responded)] {
        let res = call_service(&app, with_lang(path, None).to_request()).await;
        assert!(read_body(res).await.starts_with(b"lang=none"));
        let res = call_service(&app, with_lang(path, Some("")).to_request()).await;
        assert!(read_body(res).await.starts_with(b"lang=[]"), "{path}");
        assert_eq!(
            calls.get(),
            2,
            "{path}: an empty value is not an absent one"
        );

        // Both are stored, under their own keys.
        let res = call_service(&app, with_lang(path, None).to_request()).await;
        assert!(header(&res, "cache-status").contains("hit"));
        assert!(read_body(res).await.starts_with(b"lang=none"));
        let res = call_service(&app, with_lang(path, Some("")).to_request()).await;
        assert!(header(&res, "cache-status").contains("hit"));
        assert!(read_body(res).await.starts_with(b"lang=[]"));
        assert_eq!(calls.get(), 2);
    }
}

// RFC 9111 §2: the primary cache key includes the target URI, query string included.
#[actix_web::test]
async fn query_string_is_part_of_the_key() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/a", echo(&calls, None));
    for (uri, expected_calls) in [
        ("/a?x=1", 1),
        ("/a?x=2", 2),
        ("/a", 3),
        ("/a?x=1", 3),
        ("/a?x=2", 3),
        ("/a", 3),
    ] {
        let res = call_service(&app, get(uri).to_request()).await;
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        assert!(
            read_body(res)
                .await
                .ends_with(format!("query={query}").as_bytes()),
            "{uri}"
        );
        assert_eq!(calls.get(), expected_calls, "after {uri}");
    }
    assert_eq!(store.len(), 3);
}

// RFC 9111 §2: the target URI includes the authority, so hosts do not share entries.
#[actix_web::test]
async fn host_is_part_of_the_key() {
    let calls = Calls::default();
    let store = MemoryStore::new(100);
    let app = cached_route!(Cache::new(store.clone()), "/h", echo(&calls, None));
    for (host, expected_calls) in [
        ("a.example", 1),
        ("b.example", 2),
        ("a.example", 2),
        ("b.example", 2),
    ] {
        let res = call_service(
            &app,
            get("/h").insert_header((header::HOST, host)).to_request(),
        )
        .await;
        assert!(
            read_body(res)
                .await
                .ends_with(format!("host={host} query=").as_bytes()),
            "{host}"
        );
        assert_eq!(calls.get(), expected_calls, "after {host}");
    }
    assert_eq!(store.len(), 2);
}

// RFC 9111 §2 (the key is the target URI): a key built from X-Forwarded-Host or
// X-Forwarded-Proto alone would let one request store its response under another origin.
#[actix_web::test]
async fn forwarded_headers_cannot_store_a_response_under_another_origin() {
    let (staging, www, scheme) = (Calls::default(), Calls::default(), Calls::default());
    let page = |calls: &Calls, text: &'static str| {
        counted(web::get(), calls, move |_| HttpResponse::Ok().body(text))
    };
    let echo_scheme = counted(web::get(), &scheme, |req| {
        let text = req.connection_info().scheme().to_owned();
        HttpResponse::Ok().body(text)
    });
    let app = init_service(
        App::new()
            .wrap(Cache::new(MemoryStore::new(100)))
            .service(
                web::scope("")
                    .guard(guard::Host("staging.example"))
                    .route("/vhost", page(&staging, "staging page")),
            )
            .service(
                web::scope("")
                    .guard(guard::Host("www.example"))
                    .route("/vhost", page(&www, "www page")),
            )
            .route("/scheme", echo_scheme),
    )
    .await;

    // Routed to staging by Host, while X-Forwarded-Host names www.
    let res = call_service(
        &app,
        get("/vhost")
            .insert_header((header::HOST, "staging.example"))
            .insert_header(("x-forwarded-host", "www.example"))
            .to_request(),
    )
    .await;
    assert_eq!(read_body(res).await, "staging page".as_bytes());
    let res = call_service(
        &app,
        get("/vhost")
            .insert_header((header::HOST, "www.example"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        read_body(res).await,
        web::Bytes::from_static(b"www page"),
        "www.example was served the staging page"
    );
    assert_eq!((staging.get(), www.get()), (1, 1));

    // The scheme a proxy reports is part of the origin too.
    for proto in ["http", "https"] {
        let res = call_service(
            &app,
            get("/scheme")
                .insert_header(("x-forwarded-proto", proto))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            read_body(res).await,
            web::Bytes::from(proto),
            "X-Forwarded-Proto: {proto} was served another scheme's response"
        );
    }
    assert_eq!(scheme.get(), 2);
}

// From HTTP/2 on, actix routes by the URI's authority and ignores `Host`: a request whose two
// disagree must not store the page of one host where the other host's requests find it.
#[actix_web::test]
async fn http2_authority_and_host_header_cannot_poison_each_other() {
    use actix_web::http::Version;
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::scope("")
            .guard(guard::Host("staging.example"))
            .route("/h2", web::get().to(|| async { "staging page" })),
        web::scope("")
            .guard(guard::Host("www.example"))
            .route("/h2", web::get().to(|| async { "www page" }))
    );
    // HTTP/2: routed to www by the authority, while the Host header says staging.
    let res = call_service(
        &app,
        TestRequest::get()
            .version(Version::HTTP_2)
            .uri("http://www.example/h2")
            .insert_header((header::HOST, "staging.example"))
            .to_request(),
    )
    .await;
    assert_eq!(read_body(res).await, "www page".as_bytes());
    // HTTP/1.1 to staging.
    let res = call_service(
        &app,
        get("/h2")
            .insert_header((header::HOST, "staging.example"))
            .to_request(),
    )
    .await;
    assert_eq!(
        read_body(res).await,
        "staging page".as_bytes(),
        "staging.example was served the www page"
    );
}
