//! Invalidation after writes (RFC 9111 §4.4), the race guard, and nested `Cache`s.
//!
//! Every test uses paths of its own: the race guard's write log is process-wide, so a write in
//! one test must not stop a store in another test running in parallel.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    http::{
        header::{self, HeaderName},
        Method, StatusCode,
    },
    test::{call_service, init_service, TestRequest},
    web, App, HttpRequest, HttpResponse, Route,
};
use common::{body, cached_service, counted, get, head, header, Calls};

/// The application behind the cache: `GET` returns `<path>?<query> v<version>`; a write answers
/// `write_status` with `write_headers` and, when that is a 2xx or 3xx, bumps the version.
#[derive(Clone)]
struct Backend {
    reads: Calls,
    writes: Calls,
    version: Arc<AtomicUsize>,
    write_status: StatusCode,
    write_headers: Vec<(HeaderName, String)>,
    /// `GET` answers with `Vary: Accept-Language` and the language in the body.
    vary_language: bool,
}

impl Backend {
    fn new() -> Self {
        Self {
            reads: Calls::default(),
            writes: Calls::default(),
            version: Arc::new(AtomicUsize::new(1)),
            write_status: StatusCode::OK,
            write_headers: Vec::new(),
            vary_language: false,
        }
    }

    fn write_status(mut self, status: u16) -> Self {
        self.write_status = StatusCode::from_u16(status).expect("a status code");
        self
    }

    fn write_header(mut self, name: HeaderName, value: &str) -> Self {
        self.write_headers.push((name, value.to_owned()));
        self
    }

    fn vary_language(mut self) -> Self {
        self.vary_language = true;
        self
    }

    fn version(&self) -> usize {
        self.version.load(Ordering::SeqCst)
    }

    /// `route` answered by this backend.
    fn serve(&self, route: Route) -> Route {
        let backend = self.clone();
        route.to(move |req: HttpRequest| backend.clone().respond(req))
    }

    async fn respond(self, req: HttpRequest) -> HttpResponse {
        if req.method() == Method::GET {
            self.reads.hit();
            let mut text = format!("{}?{} v{}", req.path(), req.query_string(), self.version());
            let mut res = HttpResponse::Ok();
            if self.vary_language {
                let lang = req
                    .headers()
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                text = format!("{text} {lang}");
                res.insert_header((header::VARY, "Accept-Language"));
            }
            return res.body(text);
        }
        self.writes.hit();
        if self.write_status.is_success() || self.write_status.is_redirection() {
            self.version.fetch_add(1, Ordering::SeqCst);
        }
        let mut res = HttpResponse::build(self.write_status);
        for (name, value) in &self.write_headers {
            res.insert_header((name.clone(), value.as_str()));
        }
        res.body("written")
    }
}

/// `init_service` over `$cache` and the backend, for any path and method.
macro_rules! app {
    ($cache:expr, $backend:expr) => {
        init_service(
            App::new()
                .wrap($cache)
                .default_service($backend.serve(web::route())),
        )
        .await
    };
}

/// A `GET` of `$uri`, asserted 200; evaluates to the body as a `String`.
macro_rules! get {
    ($app:expr, $uri:expr) => {
        get!($app, $uri, TestRequest::get())
    };
    ($app:expr, $uri:expr, $req:expr) => {{
        let res = call_service(&$app, $req.uri($uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {}", $uri);
        String::from_utf8_lossy(&body(res).await).into_owned()
    }};
}

/// A request of `$method` to `$uri`; evaluates to its status.
macro_rules! write {
    ($app:expr, $method:expr, $uri:expr) => {
        call_service(
            &$app,
            TestRequest::default()
                .method($method)
                .uri($uri)
                .set_payload("new")
                .to_request(),
        )
        .await
        .status()
    };
}

fn writes() -> [Method; 4] {
    [Method::PUT, Method::PATCH, Method::DELETE, Method::POST]
}

// RFC 9111 §4.4: a 2xx to PUT, PATCH, DELETE or POST invalidates the target URI.
#[actix_web::test]
async fn successful_write_of_each_unsafe_method_drops_the_stored_get() {
    for method in writes() {
        let store = MemoryStore::new(100);
        let backend = Backend::new();
        let app = app!(Cache::new(store.clone()), backend);
        let uri = format!("/write-2xx-{}", method.as_str().to_lowercase());

        assert_eq!(get!(app, &uri), format!("{uri}? v1"));
        assert_eq!(get!(app, &uri), format!("{uri}? v1"));
        assert_eq!(
            backend.reads.get(),
            1,
            "{method}: the first GET was not stored"
        );

        assert_eq!(
            write!(app, method.clone(), &uri),
            StatusCode::OK,
            "{method} status"
        );
        assert_eq!(backend.writes.get(), 1, "{method}: the handler did not run");

        assert_eq!(
            get!(app, &uri),
            format!("{uri}? v2"),
            "{method}: stale GET after the write"
        );
        assert_eq!(
            backend.reads.get(),
            2,
            "{method}: the GET after the write was a hit"
        );
    }
}

// RFC 9111 §4.4, with several workers: an entry hit often enough for a worker thread to keep
// its own copy of it (the MemoryStore's front: 8 hits, so 20 are plenty) is dropped for that worker by a write another
// worker served, and by a replacement stored from another worker.
#[actix_web::test]
async fn a_write_on_another_worker_drops_this_workers_copy_of_a_hot_entry() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = app!(Cache::new(store.clone()), backend);
    let uri = "/hot-copy";
    for _ in 0..20 {
        assert_eq!(get!(app, uri), "/hot-copy? v1");
    }
    assert_eq!(backend.reads.get(), 1);

    let on_other_worker = |method: Method| {
        let (store, backend) = (store.clone(), backend.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = app!(Cache::new(store), backend);
                if method == Method::GET {
                    get!(app, uri);
                    String::new()
                } else {
                    write!(app, method, uri).to_string()
                }
            })
        })
        .join()
        .expect("the other worker")
    };
    assert_eq!(on_other_worker(Method::PATCH), "200 OK");
    assert_eq!(
        get!(app, uri),
        "/hot-copy? v2",
        "a stale copy after the write"
    );
    assert_eq!(backend.reads.get(), 2);
    for _ in 0..20 {
        assert_eq!(get!(app, uri), "/hot-copy? v2");
    }
    assert_eq!(backend.reads.get(), 2);

    // Dropped and stored again from the other worker: this worker sees the new entry.
    store.clear();
    backend.version.fetch_add(1, Ordering::SeqCst);
    on_other_worker(Method::GET);
    assert_eq!(backend.reads.get(), 3);
    assert_eq!(
        get!(app, uri),
        "/hot-copy? v3",
        "a stale copy after the store"
    );
    assert_eq!(backend.reads.get(), 3);
}

// RFC 9111 §4.4: a 3xx ("non-error") response to an unsafe method invalidates too.
#[actix_web::test]
async fn redirect_answer_to_a_write_drops_the_stored_get() {
    for status in [303, 302, 307] {
        let store = MemoryStore::new(100);
        let backend = Backend::new().write_status(status);
        let app = app!(Cache::new(store.clone()), backend);
        let uri = format!("/write-3xx-{status}");

        assert_eq!(get!(app, &uri), format!("{uri}? v1"));
        assert_eq!(write!(app, Method::POST, &uri).as_u16(), status);
        assert_eq!(
            get!(app, &uri),
            format!("{uri}? v2"),
            "{status}: stale GET after the write"
        );
        assert_eq!(
            backend.reads.get(),
            2,
            "{status}: the GET after the write was a hit"
        );
    }
}

// RFC 9111 §4.4 invalidates only on non-error responses: a 4xx/5xx write collects nothing.
#[actix_web::test]
async fn failed_write_collects_nothing() {
    for status in [400, 404, 409, 412, 422, 500, 503] {
        let store = MemoryStore::new(100);
        let backend = Backend::new().write_status(status);
        let app = app!(Cache::new(store.clone()), backend);
        let uri = format!("/write-failed-{status}");

        assert_eq!(get!(app, &uri), format!("{uri}? v1"));
        let entries = store.len();
        assert_eq!(write!(app, Method::PATCH, &uri).as_u16(), status);
        assert_eq!(backend.writes.get(), 1, "{status}: the handler did not run");
        assert_eq!(
            store.len(),
            entries,
            "{status}: the failed write changed the store"
        );
        assert_eq!(get!(app, &uri), format!("{uri}? v1"));
        assert_eq!(
            backend.reads.get(),
            1,
            "{status}: a failed write dropped the stored GET"
        );
    }
}

// RFC 9111 §4.4 ("the target URI"): every `Vary` variant of it is dropped by one write.
#[actix_web::test]
async fn one_write_drops_every_vary_variant() {
    let store = MemoryStore::new(100);
    let backend = Backend::new().vary_language();
    let app = app!(Cache::new(store.clone()), backend);
    let uri = "/vary-variants";
    let lang = |l: &'static str| TestRequest::get().insert_header((header::ACCEPT_LANGUAGE, l));

    assert_eq!(get!(app, uri, lang("en")), "/vary-variants? v1 en");
    assert_eq!(get!(app, uri, lang("fr")), "/vary-variants? v1 fr");
    assert_eq!(get!(app, uri, lang("en")), "/vary-variants? v1 en");
    assert_eq!(get!(app, uri, lang("fr")), "/vary-variants? v1 fr");
    assert_eq!(backend.reads.get(), 2, "the two variants were not stored");

    assert_eq!(write!(app, Method::PUT, uri), StatusCode::OK);
    assert!(
        store.len() <= 1,
        "only the write's marker may be left, found {}",
        store.len()
    );

    assert_eq!(
        get!(app, uri, lang("fr")),
        "/vary-variants? v2 fr",
        "stale fr variant"
    );
    assert_eq!(
        get!(app, uri, lang("en")),
        "/vary-variants? v2 en",
        "stale en variant"
    );
    assert_eq!(
        backend.reads.get(),
        4,
        "a variant stored before the write was a hit"
    );
}

// RFC 9110 §9.3.2: HEAD is answered from the GET entry, so a write makes HEAD a miss too.
#[actix_web::test]
async fn head_shares_the_get_entry_and_is_dropped_with_it() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = app!(Cache::new(store.clone()), backend);
    let uri = "/head-shared";

    let res = call_service(&app, get(uri).to_request()).await;
    let v1 = header(&res, header::ETAG);
    let res = call_service(&app, head(uri).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        backend.reads.get(),
        1,
        "HEAD was not answered from the GET entry"
    );
    assert_eq!(header(&res, header::ETAG), v1);
    assert!(
        header(&res, "cache-status").contains("hit"),
        "HEAD Cache-Status"
    );

    assert_eq!(write!(app, Method::DELETE, uri), StatusCode::OK);

    let res = call_service(&app, head(uri).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(backend.reads.get(), 2, "HEAD after the write was a hit");
    assert_ne!(
        header(&res, header::ETAG),
        v1,
        "HEAD after the write has the old ETag"
    );
}

// The target URI includes its query: other query strings of the path survive a write by default.
#[actix_web::test]
async fn other_query_strings_survive_by_default() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = app!(Cache::new(store.clone()), backend);

    assert_eq!(
        get!(app, "/query-default?page=1"),
        "/query-default?page=1 v1"
    );
    assert_eq!(
        get!(app, "/query-default?page=2"),
        "/query-default?page=2 v1"
    );
    assert_eq!(get!(app, "/query-default"), "/query-default? v1");
    assert_eq!(backend.reads.get(), 3);

    assert_eq!(
        write!(app, Method::PATCH, "/query-default?page=1"),
        StatusCode::OK
    );

    assert_eq!(
        get!(app, "/query-default?page=2"),
        "/query-default?page=2 v1"
    );
    assert_eq!(get!(app, "/query-default"), "/query-default? v1");
    assert_eq!(backend.reads.get(), 3, "another query string was dropped");
    assert_eq!(
        get!(app, "/query-default?page=1"),
        "/query-default?page=1 v2"
    );
    assert_eq!(
        backend.reads.get(),
        4,
        "the written query string was not dropped"
    );
}

// `collect_query_variants(true)`: a write drops the path's entries under every query string.
#[actix_web::test]
async fn collect_query_variants_drops_every_query_string() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = app!(
        Cache::new(store.clone()).collect_query_variants(true),
        backend
    );

    assert_eq!(get!(app, "/query-all?page=1"), "/query-all?page=1 v1");
    assert_eq!(get!(app, "/query-all?page=2"), "/query-all?page=2 v1");
    assert_eq!(get!(app, "/query-all"), "/query-all? v1");
    assert_eq!(get!(app, "/query-all-other"), "/query-all-other? v1");
    assert_eq!(backend.reads.get(), 4);

    assert_eq!(
        write!(app, Method::PATCH, "/query-all?page=1"),
        StatusCode::OK
    );

    assert_eq!(get!(app, "/query-all?page=2"), "/query-all?page=2 v2");
    assert_eq!(get!(app, "/query-all"), "/query-all? v2");
    assert_eq!(get!(app, "/query-all?page=1"), "/query-all?page=1 v2");
    assert_eq!(
        backend.reads.get(),
        7,
        "a query string survived collect_query_variants"
    );
    assert_eq!(
        get!(app, "/query-all-other"),
        "/query-all-other? v1",
        "another path was dropped"
    );
    assert_eq!(backend.reads.get(), 7);
}

// RFC 9111 §4.4: only the target URI (and Location/Content-Location) is invalidated.
#[actix_web::test]
async fn write_to_one_resource_leaves_another_stored() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = app!(Cache::new(store.clone()), backend);

    assert_eq!(get!(app, "/other-a"), "/other-a? v1");
    assert_eq!(get!(app, "/other-b"), "/other-b? v1");
    assert_eq!(write!(app, Method::PUT, "/other-a"), StatusCode::OK);
    assert_eq!(
        get!(app, "/other-b"),
        "/other-b? v1",
        "/b was dropped by a write to /a"
    );
    assert_eq!(backend.reads.get(), 2, "/b was dropped by a write to /a");
    assert_eq!(get!(app, "/other-a"), "/other-a? v2");
}

// RFC 9111 §4.4: a same-origin Location in the write's response is invalidated too.
#[actix_web::test]
async fn same_origin_location_is_collected() {
    for location in ["/loc-target", "http://localhost:8080/loc-target"] {
        let store = MemoryStore::new(100);
        let backend = Backend::new()
            .write_status(201)
            .write_header(header::LOCATION, location);
        let app = app!(Cache::new(store.clone()), backend);

        assert_eq!(get!(app, "/loc-target"), "/loc-target? v1");
        assert_eq!(
            write!(app, Method::POST, "/loc-collection"),
            StatusCode::CREATED
        );
        assert_eq!(
            get!(app, "/loc-target"),
            "/loc-target? v2",
            "Location {location:?} was not collected"
        );
        assert_eq!(
            backend.reads.get(),
            2,
            "Location {location:?}: the GET was a hit"
        );
    }
}

// RFC 9111 §4.4: a same-origin Content-Location is invalidated too.
#[actix_web::test]
async fn same_origin_content_location_is_collected() {
    let store = MemoryStore::new(100);
    let backend = Backend::new().write_header(header::CONTENT_LOCATION, "/cloc-target?id=7");
    let app = app!(Cache::new(store.clone()), backend);

    assert_eq!(get!(app, "/cloc-target?id=7"), "/cloc-target?id=7 v1");
    assert_eq!(get!(app, "/cloc-target?id=8"), "/cloc-target?id=8 v1");
    assert_eq!(write!(app, Method::PUT, "/cloc-write"), StatusCode::OK);
    assert_eq!(
        get!(app, "/cloc-target?id=7"),
        "/cloc-target?id=7 v2",
        "not collected"
    );
    assert_eq!(
        get!(app, "/cloc-target?id=8"),
        "/cloc-target?id=8 v1",
        "other query dropped"
    );
    assert_eq!(backend.reads.get(), 3);
}

// RFC 9111 §4.4: a cache MUST NOT invalidate a Location of another origin (no cache poisoning
// of other hosts' entries through one host's responses).
#[actix_web::test]
async fn foreign_host_location_is_not_collected() {
    let store = MemoryStore::new(100);
    let backend = Backend::new()
        .write_status(201)
        .write_header(header::LOCATION, "http://evil.example/loc-foreign")
        .write_header(header::CONTENT_LOCATION, "//evil.example/loc-foreign");
    let app = app!(Cache::new(store.clone()), backend);

    assert_eq!(get!(app, "/loc-foreign"), "/loc-foreign? v1");
    assert_eq!(
        write!(app, Method::POST, "/loc-foreign-writer"),
        StatusCode::CREATED
    );
    assert_eq!(
        get!(app, "/loc-foreign"),
        "/loc-foreign? v1",
        "a foreign Location collected"
    );
    assert_eq!(
        backend.reads.get(),
        1,
        "a foreign Location collected the local entry"
    );
}

// Race guard (DESIGN "Race guard"): a GET that missed before a PATCH completed must not store
// what its handler read before the write.
#[actix_web::test]
async fn slow_get_does_not_store_data_read_before_a_concurrent_patch() {
    common::init_log();
    let store = MemoryStore::new(100);
    let data = Arc::new(parking_lot::Mutex::new("old".to_owned()));
    let reads = Calls::default();
    // Held by the test while the PATCH runs: the first GET's handler waits on it after reading.
    let gate = Arc::new(futures_util::lock::Mutex::new(()));

    let app = {
        let (data, reads, gate) = (data.clone(), reads.clone(), gate.clone());
        let (data_w, gate_r) = (data.clone(), gate.clone());
        cached_service!(
            Cache::new(store.clone()),
            web::resource("/race")
                .route(web::get().to(move || {
                    let (data, reads, gate) = (data.clone(), reads.clone(), gate_r.clone());
                    async move {
                        let read = data.lock().clone();
                        reads.hit();
                        // A slow query: the answer was read before the write below.
                        drop(gate.lock().await);
                        HttpResponse::Ok().body(read)
                    }
                }))
                .route(web::patch().to(move || {
                    let data = data_w.clone();
                    async move {
                        *data.lock() = "new".to_owned();
                        HttpResponse::NoContent().finish()
                    }
                }))
        )
    };

    let held = gate.lock().await;
    let slow_get = call_service(&app, get("/race").to_request());
    let patch_then_release = async {
        // Let the GET's handler read the old data first.
        while reads.get() == 0 {
            actix_web::rt::task::yield_now().await;
        }
        let res = call_service(&app, TestRequest::patch().uri("/race").to_request()).await;
        drop(held);
        res
    };
    let (get_res, patch_res) = futures_util::future::join(slow_get, patch_then_release).await;
    assert_eq!(patch_res.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_res.status(), StatusCode::OK);
    assert_eq!(
        body(get_res).await,
        "old",
        "the slow GET answers what it read"
    );

    let res = call_service(&app, get("/race").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body(res).await,
        "new",
        "the old body read before the PATCH was stored after it"
    );
    assert_eq!(
        reads.get(),
        2,
        "the GET after the PATCH did not call the handler"
    );
}

// DESIGN "Nested Caches": the innermost policy wins and a response is stored once.
#[actix_web::test]
async fn nested_caches_inner_policy_wins_and_store_once() {
    let store = MemoryStore::new(100);
    let calls = Calls::default();
    let outer_calls = Calls::default();
    let app = init_service(
        App::new()
            .wrap(Cache::new(store.clone()))
            .service(
                web::scope("/nested")
                    .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(5)))
                    .route(
                        "/item",
                        counted(web::get(), &calls, |_| HttpResponse::Ok().body("inner")),
                    ),
            )
            .route(
                "/nested-outer",
                counted(web::get(), &outer_calls, |_| {
                    HttpResponse::Ok().body("outer")
                }),
            ),
    )
    .await;

    let res = call_service(&app, get("/nested/item").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        "max-age=5",
        "the inner expiry"
    );
    let etag = header(&res, header::ETAG);
    assert_eq!(body(res).await, "inner");
    assert_eq!(store.len(), 1, "the response was stored more than once");

    let res = call_service(&app, get("/nested/item").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.get(), 1, "the second GET was not a hit");
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        "max-age=5",
        "the hit's Cache-Control"
    );
    assert_eq!(header(&res, header::ETAG), etag);
    assert_eq!(body(res).await, "inner");
    assert_eq!(store.len(), 1);

    // Outside the scope the outer policy applies.
    let res = call_service(&app, get("/nested-outer").to_request()).await;
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        "max-age=60",
        "the outer expiry"
    );
    assert_eq!(store.len(), 2);
}

// DESIGN "Nested Caches": a response is never stored twice, even where the outer policy keys it
// differently (here by `Accept-Language`), and the outer Cache serves no second copy.
#[actix_web::test]
async fn nested_caches_with_different_keys_store_once() {
    let store = MemoryStore::new(100);
    let calls = Calls::default();
    let app = cached_service!(
        Cache::new(store.clone()).cache_vary(["accept-language"]),
        web::scope("/nested-keys")
            .wrap(Cache::new(store.clone()).cache_expiry(Duration::from_secs(7)))
            .route(
                "/item",
                counted(web::get(), &calls, |_| HttpResponse::Ok().body("inner")),
            )
    );
    for lang in ["en", "fr", "en"] {
        let req = get("/nested-keys/item")
            .insert_header((header::ACCEPT_LANGUAGE, lang))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header(&res, header::CACHE_CONTROL),
            "max-age=7",
            "the inner expiry"
        );
        assert_eq!(body(res).await, "inner");
        assert_eq!(store.len(), 1, "the outer Cache stored a second copy");
    }
    assert_eq!(
        calls.get(),
        1,
        "the inner policy (no Accept-Language key) did not answer"
    );
}

// DESIGN "Nested Caches": an inner Cache does not wait for the conditional-write lock its outer
// Cache already holds for the same request.
#[actix_web::test]
async fn nested_caches_conditional_write_does_not_deadlock() {
    let store = MemoryStore::new(100);
    let backend = Backend::new();
    let app = cached_service!(
        Cache::new(store.clone()),
        web::scope("/nested-lock")
            .wrap(Cache::new(store.clone()))
            .service(
                web::resource("/item")
                    .route(backend.serve(web::get()))
                    .route(backend.serve(web::put())),
            )
    );
    let uri = "/nested-lock/item";
    let res = call_service(&app, get(uri).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = header(&res, header::ETAG);

    let put = call_service(
        &app,
        TestRequest::put()
            .uri(uri)
            .insert_header((header::IF_MATCH, etag.as_str()))
            .to_request(),
    );
    let res = actix_web::rt::time::timeout(Duration::from_secs(5), put)
        .await
        .expect("the conditional PUT through nested Caches did not finish: deadlock");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "If-Match with the current tag"
    );
    assert_eq!(backend.writes.get(), 1);
    assert_eq!(get!(app, uri), "/nested-lock/item? v2");
}

/// A `MemoryStore` whose first `set` waits for a gate: it stands for a slow store write that a
/// concurrent PATCH overtakes.
#[derive(Clone)]
struct SlowFirstSet {
    inner: MemoryStore,
    gate: Arc<futures_util::lock::Mutex<()>>,
    first_set: Arc<std::sync::atomic::AtomicBool>,
    set_started: Calls,
}

impl actix_response_cache::CacheStore for SlowFirstSet {
    async fn get(
        &self,
        key: &actix_response_cache::CacheKey,
    ) -> Result<Option<actix_response_cache::CacheEntry>, actix_response_cache::StoreError> {
        self.inner.get(key).await
    }

    async fn set(
        &self,
        key: &actix_response_cache::CacheKey,
        entry: actix_response_cache::CacheEntry,
    ) -> Result<(), actix_response_cache::StoreError> {
        if self.first_set.swap(false, Ordering::SeqCst) {
            self.set_started.hit();
            drop(self.gate.lock().await);
        }
        self.inner.set(key, entry).await
    }

    async fn remove(
        &self,
        key: &actix_response_cache::CacheKey,
    ) -> Result<(), actix_response_cache::StoreError> {
        self.inner.remove(key).await
    }
}

impl actix_response_cache::CollectableStore for SlowFirstSet {
    async fn collect(
        &self,
        target: &actix_response_cache::CollectTarget,
    ) -> Result<usize, actix_response_cache::StoreError> {
        self.inner.collect(target).await
    }

    fn coordination(&self) -> actix_response_cache::Coordination<'_> {
        actix_response_cache::Coordination::InProcess
    }
}

// Race guard (DESIGN "Race guard", src/guard.rs): a PATCH that completes while a miss's `set` is
// in flight (after the miss's first check) must not leave the old body stored: the miss
// re-checks after its set and removes what it stored.
#[actix_web::test]
async fn get_whose_set_is_overtaken_by_a_patch_is_removed_by_the_recheck() {
    let store = SlowFirstSet {
        inner: MemoryStore::new(100),
        gate: Arc::new(futures_util::lock::Mutex::new(())),
        first_set: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        set_started: Calls::default(),
    };
    let data = Arc::new(parking_lot::Mutex::new("old".to_owned()));
    let reads = Calls::default();
    let app = {
        let (data, reads, data_w) = (data.clone(), reads.clone(), data.clone());
        init_service(
            App::new().wrap(Cache::new(store.clone())).service(
                web::resource("/race-recheck")
                    .route(web::get().to(move || {
                        reads.hit();
                        let read = data.lock().clone();
                        async move { HttpResponse::Ok().body(read) }
                    }))
                    .route(web::patch().to(move || {
                        *data_w.lock() = "new".to_owned();
                        async { HttpResponse::NoContent().finish() }
                    })),
            ),
        )
        .await
    };

    let held = store.gate.lock().await;
    let get = call_service(&app, TestRequest::get().uri("/race-recheck").to_request());
    let patch_then_release = async {
        // Wait until the GET has passed its first check and is inside the store's `set`.
        while store.set_started.get() == 0 {
            actix_web::rt::task::yield_now().await;
        }
        let res = call_service(&app, TestRequest::patch().uri("/race-recheck").to_request()).await;
        drop(held);
        res
    };
    let (get_res, patch_res) = futures_util::future::join(get, patch_then_release).await;
    assert_eq!(patch_res.status(), StatusCode::NO_CONTENT);
    assert_eq!(body(get_res).await, "old");

    let res = call_service(&app, TestRequest::get().uri("/race-recheck").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body(res).await,
        "new",
        "the old body whose set the PATCH overtook is still stored"
    );
    assert_eq!(
        reads.get(),
        2,
        "the GET after the PATCH did not call the handler"
    );
}

// RFC 9111 §4.4, RFC 9110 §9.2.1: an extension method (WebDAV's PROPPATCH) is not known to be
// safe: its success invalidates the target URI, and its preconditions are checked first.
#[actix_web::test]
async fn extension_method_invalidates_and_is_checked() {
    let proppatch = Method::from_bytes(b"PROPPATCH").expect("a method");
    let backend = Backend::new();
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/proppatch")
            .route(backend.serve(web::get()))
            .route(backend.serve(web::route().method(proppatch.clone())))
    );
    let uri = "/proppatch";

    assert_eq!(get!(app, uri), "/proppatch? v1");
    assert_eq!(write!(app, proppatch.clone(), uri), StatusCode::OK);
    assert_eq!(backend.writes.get(), 1);
    assert_eq!(
        get!(app, uri),
        "/proppatch? v2",
        "stale GET after PROPPATCH"
    );
    assert_eq!(backend.reads.get(), 2, "the GET after PROPPATCH was a hit");

    let res = call_service(
        &app,
        TestRequest::default()
            .method(proppatch)
            .uri(uri)
            .insert_header((header::IF_MATCH, "\"stale\""))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "a stale If-Match on PROPPATCH"
    );
    assert_eq!(backend.writes.get(), 1, "the handler ran despite the 412");
}

/// The bytes of a variant key that select `Accept-Language: fr` (src/key.rs: `\n name \0 value`).
const FRENCH_VARIANT: &[u8] = b"accept-language\0fr";

/// A `MemoryStore` whose `get` of the `fr` variant is slow.
#[derive(Clone)]
struct SlowFrenchGet(MemoryStore);

impl actix_response_cache::CacheStore for SlowFrenchGet {
    async fn get(
        &self,
        key: &actix_response_cache::CacheKey,
    ) -> Result<Option<actix_response_cache::CacheEntry>, actix_response_cache::StoreError> {
        let bytes = key.as_bytes();
        if bytes
            .windows(FRENCH_VARIANT.len())
            .any(|w| w == FRENCH_VARIANT)
        {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        self.0.get(key).await
    }

    async fn set(
        &self,
        key: &actix_response_cache::CacheKey,
        entry: actix_response_cache::CacheEntry,
    ) -> Result<(), actix_response_cache::StoreError> {
        self.0.set(key, entry).await
    }

    async fn remove(
        &self,
        key: &actix_response_cache::CacheKey,
    ) -> Result<(), actix_response_cache::StoreError> {
        self.0.remove(key).await
    }
}

impl actix_response_cache::CollectableStore for SlowFrenchGet {
    async fn collect(
        &self,
        target: &actix_response_cache::CollectTarget,
    ) -> Result<usize, actix_response_cache::StoreError> {
        self.0.collect(target).await
    }

    fn coordination(&self) -> actix_response_cache::Coordination<'_> {
        actix_response_cache::Coordination::InProcess
    }
}

// Race guard (DESIGN "Race guard", src/guard.rs): a write that completes while a miss is still
// looking up its variant stops that miss's store, which would otherwise write the old variant
// marker back over the write's marker and make the variants stored before the write reachable.
#[actix_web::test]
async fn write_during_a_slow_variant_lookup_does_not_revive_old_variants() {
    let store = SlowFrenchGet(MemoryStore::new(100));
    let backend = Backend::new().vary_language();
    let app = app!(Cache::new(store.clone()), backend);
    let uri = "/race-lookup";
    let lang = |l: &'static str| TestRequest::get().insert_header((header::ACCEPT_LANGUAGE, l));

    assert_eq!(get!(app, uri, lang("en")), "/race-lookup? v1 en");
    assert_eq!(get!(app, uri, lang("en")), "/race-lookup? v1 en");
    assert_eq!(backend.reads.get(), 1, "the en variant was not stored");

    let slow_fr = call_service(&app, lang("fr").uri(uri).to_request());
    let put_meanwhile = async {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        write!(app, Method::PUT, uri)
    };
    let (fr, put) = futures_util::future::join(slow_fr, put_meanwhile).await;
    assert_eq!(put, StatusCode::OK);
    assert_eq!(fr.status(), StatusCode::OK);
    assert_eq!(backend.version(), 2);

    assert_eq!(
        get!(app, uri, lang("en")),
        "/race-lookup? v2 en",
        "the en variant stored before the PUT was served after it"
    );
}

// RFC 9111 §4.4: a method of unknown safety (WebDAV's PROPFIND) invalidates, but does not mark
// the current ETag stale: a later If-Match with that ETag still reaches the handler.
#[actix_web::test]
async fn extension_method_does_not_mark_the_etag_stale() {
    let writes = Calls::default();
    let propfind = actix_web::http::Method::from_bytes(b"PROPFIND").unwrap();
    let app = cached_service!(
        Cache::new(MemoryStore::new(100)),
        web::resource("/propfind")
            .route(web::get().to(|| async { HttpResponse::Ok().body("doc") }))
            .route(
                web::route()
                    .method(propfind.clone())
                    .to(|| async { HttpResponse::build(StatusCode::MULTI_STATUS).finish() })
            )
            .route(counted(web::put(), &writes, |_| {
                HttpResponse::NoContent().finish()
            }))
    );
    let res = call_service(&app, get("/propfind").to_request()).await;
    let etag = header(&res, "etag");
    let res = call_service(
        &app,
        TestRequest::default()
            .method(propfind)
            .uri("/propfind")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::MULTI_STATUS);
    let res = call_service(
        &app,
        TestRequest::put()
            .uri("/propfind")
            .insert_header((header::IF_MATCH, etag))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "PROPFIND made the current ETag look stale"
    );
    assert_eq!(writes.get(), 1);
}
