//! The store acceptance suite: every store (the memory store, the custom store of
//! `examples/custom_store.rs`, the Redis and tiered stores) must pass it, and every store that
//! several servers share passes its coordination section too.
//!
//! It checks the store contract directly (get / set / remove / expiry / collect) and the
//! behaviour the middleware builds on it, over HTTP. Each check builds a fresh store with the
//! given constructor, and uses paths no other check uses: the race guard is process-wide, so a
//! write in one check must not stop a store in another check running in parallel.

use std::{
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_response_cache::{
    Cache, CacheEntry, CacheKey, CollectTarget, CollectableStore, Coordinate, Coordination,
    LockToken, ResourceGroup,
};
use actix_web::{
    http::{header, Method, StatusCode},
    test::{call_service, init_service, TestRequest},
    web, App, HttpRequest, HttpResponse,
};

use super::{body, header, Calls};

const HOST: &str = "acceptance.test";
const TTL: Duration = Duration::from_secs(60);

/// Runs the whole suite against the stores `make_store` builds; the coordination section too
/// when they say several servers share them.
pub async fn run<St, F>(make_store: F)
where
    St: CollectableStore + Clone,
    F: Fn() -> St,
{
    super::init_log();

    // The store contract.
    get_after_set_returns_the_entry(make_store()).await;
    a_different_key_misses(make_store()).await;
    remove_removes(make_store()).await;
    set_replaces(make_store()).await;
    expired_entries_are_not_returned(make_store()).await;
    collect_exact_query_drops_only_that_query(make_store()).await;
    collect_every_query_drops_the_whole_resource(make_store()).await;
    collect_of_nothing_is_zero(make_store()).await;
    collect_drops_every_alias_of_the_path(make_store()).await;
    if matches!(make_store().coordination(), Coordination::Shared(_)) {
        generation_moves_on_collect(make_store()).await;
        a_stale_generation_is_refused(make_store()).await;
        the_lock_is_exclusive_and_only_its_token_releases_it(make_store()).await;
    }

    // The same store behind the middleware.
    second_get_is_a_hit(make_store()).await;
    patch_makes_the_next_get_call_the_handler(make_store()).await;
    stale_if_match_on_put_is_412_without_the_handler(make_store()).await;
    failed_write_collects_nothing(make_store()).await;
    one_write_drops_every_vary_variant_and_head(make_store()).await;
    write_without_the_cache_vary_header_hides_every_variant(make_store()).await;
    a_write_through_an_alias_collects_the_plain_path(make_store()).await;
}

// ---------------------------------------------------------------------------------------------
// The store contract, called directly.

fn key(path: &str, query: &str) -> CacheKey {
    CacheKey::for_get(HOST, path, query)
}

/// Two entries are told apart by body size, which `CacheEntry::size` reflects.
fn entry(body: &str) -> CacheEntry {
    CacheEntry::test_response(body.as_bytes(), TTL)
}

async fn get<St: CollectableStore>(store: &St, key: &CacheKey, point: &str) -> Option<CacheEntry> {
    store
        .get(key)
        .await
        .unwrap_or_else(|err| panic!("contract ({point}): get {key:?} failed: {err}"))
}

async fn set<St: CollectableStore>(store: &St, key: &CacheKey, entry: CacheEntry, point: &str) {
    store
        .set(key, entry)
        .await
        .unwrap_or_else(|err| panic!("contract ({point}): set {key:?} failed: {err}"));
}

fn assert_same(got: Option<CacheEntry>, want: &CacheEntry, point: &str) {
    let got = got.unwrap_or_else(|| panic!("contract ({point}): expected an entry, got none"));
    assert_eq!(
        (got.size(), got.stored_at(), got.expires_at()),
        (want.size(), want.stored_at(), want.expires_at()),
        "contract ({point}): the store returned another entry than the one set"
    );
}

async fn get_after_set_returns_the_entry<St: CollectableStore>(store: St) {
    const POINT: &str = "get after set returns the entry";
    let k = key("/contract/get", "");
    assert!(
        get(&store, &k, POINT).await.is_none(),
        "contract ({POINT}): a new store must be empty"
    );
    let e = entry("the body");
    set(&store, &k, e.clone(), POINT).await;
    assert_same(get(&store, &k, POINT).await, &e, POINT);
    // A read does not consume the entry.
    assert_same(get(&store, &k, POINT).await, &e, POINT);
}

async fn a_different_key_misses<St: CollectableStore>(store: St) {
    const POINT: &str = "a different key misses";
    set(&store, &key("/contract/a", "x=1"), entry("a"), POINT).await;
    for other in [
        key("/contract/a", ""),
        key("/contract/a", "x=2"),
        key("/contract/ab", ""),
        key("/contract/b", "x=1"),
        CacheKey::for_get("other.test", "/contract/a", "x=1"),
    ] {
        assert!(
            get(&store, &other, POINT).await.is_none(),
            "contract ({POINT}): {other:?} returned the entry set under another key"
        );
    }
}

async fn remove_removes<St: CollectableStore>(store: St) {
    const POINT: &str = "remove removes";
    let (k, kept) = (key("/contract/remove", ""), key("/contract/remove", "kept"));
    set(&store, &k, entry("gone"), POINT).await;
    set(&store, &kept, entry("kept"), POINT).await;
    store
        .remove(&k)
        .await
        .unwrap_or_else(|err| panic!("contract ({POINT}): remove failed: {err}"));
    assert!(
        get(&store, &k, POINT).await.is_none(),
        "contract ({POINT}): the entry is still there"
    );
    assert!(
        get(&store, &kept, POINT).await.is_some(),
        "contract ({POINT}): removing one key removed another"
    );
    // Removing what is not there is not an error.
    store
        .remove(&k)
        .await
        .unwrap_or_else(|err| panic!("contract ({POINT}): removing a missing key failed: {err}"));
}

async fn set_replaces<St: CollectableStore>(store: St) {
    const POINT: &str = "set replaces";
    let k = key("/contract/replace", "");
    set(&store, &k, entry("first"), POINT).await;
    let second = entry("the second, longer body");
    set(&store, &k, second.clone(), POINT).await;
    assert_same(get(&store, &k, POINT).await, &second, POINT);
}

async fn expired_entries_are_not_returned<St: CollectableStore>(store: St) {
    const POINT: &str = "expired entries are not returned";
    let k = key("/contract/expired", "");
    set(
        &store,
        &k,
        CacheEntry::test_response(b"short-lived", Duration::from_millis(1)),
        POINT,
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    assert!(
        get(&store, &k, POINT).await.is_none(),
        "contract ({POINT}): the store returned an entry after its expires_at"
    );
}

/// Fills `/contract/<name>` with three query strings, plus the same path on another host and
/// a neighbouring path, all of which a collect of `/contract/<name>` must leave alone.
async fn fill_resource<St: CollectableStore>(store: &St, path: &str, point: &str) -> Vec<CacheKey> {
    let keys = vec![
        key(path, ""),
        key(path, "page=1"),
        key(path, "page=2"),
        CacheKey::for_get("other.test", path, ""),
        key(&format!("{path}/child"), ""),
        key("/contract/unrelated", ""),
    ];
    for k in &keys {
        set(store, k, entry("stored"), point).await;
    }
    keys
}

async fn collect<St: CollectableStore>(store: &St, target: CollectTarget, point: &str) -> usize {
    store
        .collect(&target)
        .await
        .unwrap_or_else(|err| panic!("contract ({point}): collect failed: {err}"))
}

async fn present<St: CollectableStore>(store: &St, keys: &[CacheKey], point: &str) -> Vec<bool> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(get(store, k, point).await.is_some());
    }
    out
}

async fn collect_exact_query_drops_only_that_query<St: CollectableStore>(store: St) {
    const POINT: &str = "collect with an exact query drops only that query";
    let path = "/contract/collect-exact";
    let keys = fill_resource(&store, path, POINT).await;
    let target = CollectTarget::new(ResourceGroup::new(HOST, path), Some("page=1".into()));
    collect(&store, target, POINT).await;
    assert_eq!(
        present(&store, &keys, POINT).await,
        [true, false, true, true, true, true],
        "contract ({POINT}): which keys survive, in the order {keys:?}"
    );
    // The empty query is a query like any other.
    let target = CollectTarget::new(ResourceGroup::new(HOST, path), Some("".into()));
    collect(&store, target, POINT).await;
    assert_eq!(
        present(&store, &keys, POINT).await,
        [false, false, true, true, true, true],
        "contract ({POINT}): which keys survive, in the order {keys:?}"
    );
}

async fn collect_every_query_drops_the_whole_resource<St: CollectableStore>(store: St) {
    const POINT: &str = "collect of every query drops the resource, and only it";
    let path = "/contract/collect-all";
    let keys = fill_resource(&store, path, POINT).await;
    let target = CollectTarget::new(ResourceGroup::new(HOST, path), None);
    collect(&store, target, POINT).await;
    assert_eq!(
        present(&store, &keys, POINT).await,
        [false, false, false, true, true, true],
        "contract ({POINT}): which keys survive, in the order {keys:?}"
    );
    // What was collected can be stored again.
    set(&store, &keys[0], entry("again"), POINT).await;
    assert!(
        get(&store, &keys[0], POINT).await.is_some(),
        "contract ({POINT}): a collected key cannot be stored again"
    );
}

async fn collect_of_nothing_is_zero<St: CollectableStore>(store: St) {
    const POINT: &str = "collect of a resource with nothing stored drops nothing";
    set(&store, &key("/contract/kept", ""), entry("kept"), POINT).await;
    let target = CollectTarget::new(ResourceGroup::new(HOST, "/contract/never-stored"), None);
    collect(&store, target, POINT).await;
    assert!(
        get(&store, &key("/contract/kept", ""), POINT)
            .await
            .is_some(),
        "contract ({POINT}): collecting another resource dropped an entry"
    );
}

async fn collect_drops_every_alias_of_the_path<St: CollectableStore>(store: St) {
    const POINT: &str = "collect drops every alias of the path and query";
    let keys = [
        key("/contract/alias/a/b", "q=1"),
        key("/contract/alias/a%2Fb", "q=%31"),
        key("/contract/alias/a%2fb", "q=1"),
        CacheKey::for_get("http://ACCEPTANCE.test:8080", "/contract/alias/a/b", "q=1"),
        key("/contract/alias/a/b", "q=2"),
    ];
    for k in &keys {
        set(&store, k, entry("stored"), POINT).await;
    }
    let target = CollectTarget::new(
        ResourceGroup::new(HOST, "/contract/alias/a%2Fb"),
        Some("q=1".into()),
    );
    collect(&store, target, POINT).await;
    assert_eq!(
        present(&store, &keys, POINT).await,
        [false, false, false, false, true],
        "contract ({POINT}): which keys survive, in the order {keys:?}"
    );
}

fn coordinator<St: CollectableStore>(store: &St) -> &dyn Coordinate {
    match store.coordination() {
        Coordination::Shared(c) => c,
        _ => panic!("coordination: the store is not shared"),
    }
}

async fn generation_moves_on_collect<St: CollectableStore>(store: St) {
    const POINT: &str = "the write generation moves on with every collect of its query";
    let c = coordinator(&store);
    let path = "/contract/generation";
    let (page1, page2) = (key(path, "page=1"), key(path, "page=2"));
    let before = c.generation(&page1).await.expect("generation");
    assert_eq!(
        c.generation(&page1).await.expect("generation"),
        before,
        "coordination ({POINT}): the generation moved with no collect"
    );
    let other_query = c.generation(&page2).await.expect("generation");
    let other = key("/contract/generation-other", "page=1");
    let untouched = c.generation(&other).await.expect("generation");
    let exact = CollectTarget::new(page1.resource().clone(), Some("page=1".into()));
    collect(&store, exact, POINT).await;
    let after = c.generation(&page1).await.expect("generation");
    assert_ne!(before, after, "coordination ({POINT})");
    assert_eq!(
        c.generation(&page2).await.expect("generation"),
        other_query,
        "coordination ({POINT}): another query's generation moved"
    );
    collect(
        &store,
        CollectTarget::new(page1.resource().clone(), None),
        POINT,
    )
    .await;
    assert_ne!(
        c.generation(&page2).await.expect("generation"),
        other_query,
        "coordination ({POINT}): a collect of every query left a query's generation"
    );
    assert_ne!(
        c.generation(&page1).await.expect("generation"),
        after,
        "coordination ({POINT}): a collect of every query left a query's generation"
    );
    assert_eq!(
        c.generation(&other).await.expect("generation"),
        untouched,
        "coordination ({POINT}): another group's generation moved"
    );
}

async fn a_stale_generation_is_refused<St: CollectableStore>(store: St) {
    const POINT: &str = "a set under a stale generation is refused";
    let k = key("/contract/set-if-generation", "");
    let c = coordinator(&store);
    let generation = c.generation(&k).await.expect("generation");
    assert!(
        c.set_if_generation(&k, entry("current"), generation)
            .await
            .expect("set"),
        "coordination ({POINT}): a set under the current generation was refused"
    );
    assert!(
        get(&store, &k, POINT).await.is_some(),
        "coordination ({POINT}): not stored"
    );
    collect(
        &store,
        CollectTarget::new(k.resource().clone(), None),
        POINT,
    )
    .await;
    assert!(
        !c.set_if_generation(&k, entry("stale"), generation)
            .await
            .expect("set"),
        "coordination ({POINT}): a set under the old generation was accepted"
    );
    assert!(
        get(&store, &k, POINT).await.is_none(),
        "coordination ({POINT}): the refused set stored its entry"
    );
}

async fn the_lock_is_exclusive_and_only_its_token_releases_it<St: CollectableStore>(store: St) {
    const POINT: &str = "the resource lock is exclusive and only its token releases it";
    let group = ResourceGroup::new(HOST, "/contract/lock");
    let c = coordinator(&store);
    let ttl = Duration::from_secs(10);
    let token = LockToken::new(0x5eed_0001);
    let other_token = LockToken::new(0x5eed_0002);
    assert!(
        c.try_lock(&group, token, ttl).await.expect("lock"),
        "coordination ({POINT}): a free lock was not granted"
    );
    assert!(
        !c.try_lock(&group, other_token, ttl).await.expect("lock"),
        "coordination ({POINT}): a held lock was granted again"
    );
    let other = ResourceGroup::new(HOST, "/contract/lock-other");
    assert!(
        c.try_lock(&other, other_token, ttl).await.expect("lock"),
        "coordination ({POINT}): another group's lock was held"
    );
    c.unlock(&group, other_token).await.expect("unlock");
    assert!(
        !c.try_lock(&group, LockToken::new(0x5eed_0003), ttl)
            .await
            .expect("lock"),
        "coordination ({POINT}): another token released the lock"
    );
    c.unlock(&group, token).await.expect("unlock");
    let again = LockToken::new(0x5eed_0004);
    assert!(
        c.try_lock(&group, again, ttl).await.expect("lock"),
        "coordination ({POINT}): the token did not release the lock"
    );
    c.unlock(&group, again).await.expect("unlock");
    c.unlock(&other, other_token).await.expect("unlock");
}

// ---------------------------------------------------------------------------------------------
// Behaviour over HTTP.

/// A path no other check (in this or a parallel suite run) uses.
fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("/acceptance-{}/{name}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The application behind the cache: `GET` returns `<path> v<version>` (and the
/// `Accept-Language` with `Vary` when the path ends in `/vary`); a write returns
/// `write_status` and, when that is a 2xx, bumps the version.
#[derive(Clone)]
struct Backend {
    reads: Calls,
    writes: Calls,
    version: Arc<AtomicUsize>,
    write_status: Arc<AtomicU16>,
}

impl Backend {
    fn new() -> Self {
        Self {
            reads: Calls::default(),
            writes: Calls::default(),
            version: Arc::new(AtomicUsize::new(1)),
            write_status: Arc::new(AtomicU16::new(200)),
        }
    }

    fn representation(&self, path: &str, lang: &str) -> String {
        let v = self.version.load(Ordering::SeqCst);
        if lang.is_empty() {
            format!("{path} v{v}")
        } else {
            format!("{path} v{v} {lang}")
        }
    }

    async fn respond(self, req: HttpRequest) -> HttpResponse {
        if req.method() == Method::GET {
            self.reads.hit();
            if req.path().ends_with("/vary") {
                let lang = req
                    .headers()
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                return HttpResponse::Ok()
                    .insert_header((header::VARY, "Accept-Language"))
                    .body(self.representation(req.path(), &lang));
            }
            return HttpResponse::Ok().body(self.representation(req.path(), ""));
        }
        self.writes.hit();
        let status = StatusCode::from_u16(self.write_status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_success() {
            self.version.fetch_add(1, Ordering::SeqCst);
        }
        HttpResponse::build(status).body("written")
    }
}

/// `init_service` over `Cache::new(store)` (or the given `cache = ...`) and the backend, for
/// any path and method.
macro_rules! app {
    (cache = $cache:expr, $backend:expr) => {{
        let backend = $backend.clone();
        init_service(
            App::new()
                .wrap($cache)
                .default_service(web::to(move |req: HttpRequest| {
                    backend.clone().respond(req)
                })),
        )
        .await
    }};
    ($store:expr, $backend:expr) => {
        app!(cache = Cache::new($store.clone()), $backend)
    };
}

macro_rules! send {
    ($app:expr, $req:expr) => {
        call_service(&$app, $req.to_request()).await
    };
}

async fn second_get_is_a_hit<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "a GET is stored and the second GET is a hit";
    let backend = Backend::new();
    let app = app!(store, backend);
    let path = unique("hit");

    let first = send!(app, TestRequest::get().uri(&path));
    assert_eq!(
        first.status(),
        StatusCode::OK,
        "http ({POINT}): first GET status"
    );
    let etag = header(&first, header::ETAG);
    assert!(
        etag.starts_with('"'),
        "http ({POINT}): a strong ETag on the miss, got {etag:?}"
    );
    assert_eq!(
        body(first).await,
        format!("{path} v1"),
        "http ({POINT}): first body"
    );

    let second = send!(app, TestRequest::get().uri(&path));
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "http ({POINT}): second GET status"
    );
    assert_eq!(
        backend.reads.get(),
        1,
        "http ({POINT}): the second GET called the handler"
    );
    assert_eq!(
        header(&second, header::ETAG),
        etag,
        "http ({POINT}): the hit's ETag"
    );
    assert!(
        header(&second, "cache-status").contains("hit"),
        "http ({POINT}): Cache-Status of the hit: {:?}",
        header(&second, "cache-status")
    );
    assert!(
        !header(&second, header::AGE).is_empty(),
        "http ({POINT}): a hit carries Age"
    );
    assert_eq!(
        body(second).await,
        format!("{path} v1"),
        "http ({POINT}): the hit's body"
    );

    // Another query string is another entry.
    let other = send!(app, TestRequest::get().uri(&format!("{path}?page=2")));
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "http ({POINT}): other query status"
    );
    assert_eq!(
        backend.reads.get(),
        2,
        "http ({POINT}): another query string was a hit"
    );
}

async fn patch_makes_the_next_get_call_the_handler<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "a successful PATCH collects the stored GET";
    let backend = Backend::new();
    let app = app!(store, backend);
    let path = unique("patch");

    let res = send!(app, TestRequest::get().uri(&path));
    assert_eq!(
        body(res).await,
        format!("{path} v1"),
        "http ({POINT}): first body"
    );
    let res = send!(app, TestRequest::get().uri(&path));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        backend.reads.get(),
        1,
        "http ({POINT}): the GET was not stored"
    );

    let res = send!(app, TestRequest::patch().uri(&path).set_payload("new"));
    assert_eq!(res.status(), StatusCode::OK, "http ({POINT}): PATCH status");
    assert_eq!(
        backend.writes.get(),
        1,
        "http ({POINT}): the PATCH handler ran"
    );

    let res = send!(app, TestRequest::get().uri(&path));
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "http ({POINT}): GET after PATCH status"
    );
    assert_eq!(
        backend.reads.get(),
        2,
        "http ({POINT}): the GET after the PATCH was a hit"
    );
    assert_eq!(
        body(res).await,
        format!("{path} v2"),
        "http ({POINT}): stale body after PATCH"
    );

    // And the new representation is stored again.
    let res = send!(app, TestRequest::get().uri(&path));
    assert_eq!(body(res).await, format!("{path} v2"));
    assert_eq!(
        backend.reads.get(),
        2,
        "http ({POINT}): the new representation was not stored"
    );
}

async fn stale_if_match_on_put_is_412_without_the_handler<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "a stale If-Match on PUT is 412 without calling the handler";
    let backend = Backend::new();
    let app = app!(store, backend);
    let path = unique("if-match");

    let res = send!(app, TestRequest::get().uri(&path));
    let v1 = header(&res, header::ETAG);
    assert!(!v1.is_empty(), "http ({POINT}): the GET has an ETag");

    // A tag that was never current.
    let res = send!(
        app,
        TestRequest::put()
            .uri(&path)
            .insert_header((header::IF_MATCH, "\"never-current\""))
    );
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "http ({POINT}): unknown tag"
    );
    assert_eq!(
        backend.writes.get(),
        0,
        "http ({POINT}): the handler ran despite the 412"
    );

    // The current tag: the write happens.
    let res = send!(
        app,
        TestRequest::put()
            .uri(&path)
            .insert_header((header::IF_MATCH, v1.as_str()))
    );
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "http ({POINT}): If-Match with the current tag"
    );
    assert_eq!(
        backend.writes.get(),
        1,
        "http ({POINT}): the matching PUT did not run"
    );

    // The same tag again, now made stale by that write, before anyone re-read the resource.
    let res = send!(
        app,
        TestRequest::put()
            .uri(&path)
            .insert_header((header::IF_MATCH, v1.as_str()))
    );
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "http ({POINT}): the tag the last write superseded"
    );
    assert_eq!(
        backend.writes.get(),
        1,
        "http ({POINT}): the handler ran despite the 412"
    );
}

async fn failed_write_collects_nothing<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "a failed write (4xx/5xx) collects nothing";
    let backend = Backend::new();
    let app = app!(store, backend);
    let path = unique("failed-write");

    let res = send!(app, TestRequest::get().uri(&path));
    assert_eq!(res.status(), StatusCode::OK);
    for status in [500, 409] {
        backend.write_status.store(status, Ordering::SeqCst);
        let res = send!(app, TestRequest::patch().uri(&path).set_payload("x"));
        assert_eq!(
            res.status().as_u16(),
            status,
            "http ({POINT}): the handler's status"
        );
        let res = send!(app, TestRequest::get().uri(&path));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            backend.reads.get(),
            1,
            "http ({POINT}): a PATCH answered {status} dropped the stored GET"
        );
        assert_eq!(
            body(res).await,
            format!("{path} v1"),
            "http ({POINT}): the stored body"
        );
    }
    assert_eq!(
        backend.writes.get(),
        2,
        "http ({POINT}): both writes reached the handler"
    );
}

/// A `GET` or `HEAD` with `Accept-Language: $lang`; returns the status, ETag and body.
macro_rules! send_lang {
    ($app:expr, $method:expr, $path:expr, $lang:expr) => {{
        let res = send!(
            $app,
            TestRequest::default()
                .method($method)
                .uri($path)
                .insert_header((header::ACCEPT_LANGUAGE, $lang))
        );
        let (status, etag) = (res.status(), header(&res, header::ETAG));
        (
            status,
            etag,
            String::from_utf8_lossy(&body(res).await).into_owned(),
        )
    }};
}

async fn one_write_drops_every_vary_variant_and_head<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "one write drops every Vary variant, and HEAD";
    let backend = Backend::new();
    let app = app!(store, backend);
    let path = unique("vary");

    // Two variants stored, and HEAD answered from the GET entry it shares.
    let (_, en_v1, en) = send_lang!(app, Method::GET, &path, "en");
    assert_eq!(en, format!("{path} v1 en"));
    let (_, fr_v1, fr) = send_lang!(app, Method::GET, &path, "fr");
    assert_eq!(fr, format!("{path} v1 fr"));
    assert_ne!(en_v1, fr_v1, "http ({POINT}): variants with the same ETag");
    let (status, etag, _) = send_lang!(app, Method::HEAD, &path, "fr");
    assert_eq!(status, StatusCode::OK, "http ({POINT}): HEAD status");
    assert_eq!(
        etag, fr_v1,
        "http ({POINT}): HEAD did not share the GET entry"
    );
    let (_, _, en) = send_lang!(app, Method::GET, &path, "en");
    assert_eq!(en, format!("{path} v1 en"));
    assert_eq!(
        backend.reads.get(),
        2,
        "http ({POINT}): the variants and HEAD were not hits"
    );

    let res = send!(app, TestRequest::put().uri(&path).set_payload("new"));
    assert_eq!(res.status(), StatusCode::OK, "http ({POINT}): PUT status");

    // HEAD first: a miss answered as GET, which stores the new `fr` variant again.
    let (status, etag, _) = send_lang!(app, Method::HEAD, &path, "fr");
    assert_eq!(
        status,
        StatusCode::OK,
        "http ({POINT}): HEAD after the write"
    );
    assert_eq!(
        backend.reads.get(),
        3,
        "http ({POINT}): HEAD after the write was a hit"
    );
    assert_ne!(
        etag, fr_v1,
        "http ({POINT}): HEAD after the write has the old ETag"
    );
    // Then the other variant: it must not come back from the store once `fr` is re-stored.
    let (_, _, en) = send_lang!(app, Method::GET, &path, "en");
    assert_eq!(
        en,
        format!("{path} v2 en"),
        "http ({POINT}): the `en` variant stored before the write was served after it"
    );
    assert_eq!(
        backend.reads.get(),
        4,
        "http ({POINT}): GET en after the write was a hit"
    );
    // The `fr` entry HEAD filled serves GET.
    let (_, fr_v2, fr) = send_lang!(app, Method::GET, &path, "fr");
    assert_eq!(
        fr,
        format!("{path} v2 fr"),
        "http ({POINT}): GET fr after the write"
    );
    assert_eq!(fr_v2, etag, "http ({POINT}): GET fr and HEAD fr disagree");
    assert_eq!(
        backend.reads.get(),
        4,
        "http ({POINT}): HEAD did not fill the GET entry"
    );
}

async fn write_without_the_cache_vary_header_hides_every_variant<St: CollectableStore + Clone>(
    store: St,
) {
    const POINT: &str = "a write without the cache_vary header hides every variant";
    let backend = Backend::new();
    let app = app!(
        cache = Cache::new(store.clone()).cache_vary(["accept-language"]),
        backend
    );
    let path = unique("cache-vary-write");

    let (status, _, fr) = send_lang!(app, Method::GET, &path, "fr");
    assert_eq!(status, StatusCode::OK, "http ({POINT}): first GET status");
    assert_eq!(fr, format!("{path} v1"), "http ({POINT}): first body");
    let (_, _, fr) = send_lang!(app, Method::GET, &path, "fr");
    assert_eq!(fr, format!("{path} v1"));
    assert_eq!(
        backend.reads.get(),
        1,
        "http ({POINT}): the fr GET was not stored"
    );

    // The write carries no Accept-Language: it names none of the stored variants.
    let res = send!(app, TestRequest::put().uri(&path).set_payload("new"));
    assert_eq!(res.status(), StatusCode::OK, "http ({POINT}): PUT status");

    let (status, _, fr) = send_lang!(app, Method::GET, &path, "fr");
    assert_eq!(
        status,
        StatusCode::OK,
        "http ({POINT}): GET fr after the write"
    );
    assert_eq!(
        backend.reads.get(),
        2,
        "http ({POINT}): GET fr after the write was a hit"
    );
    assert_eq!(
        fr,
        format!("{path} v2"),
        "http ({POINT}): stale fr body after the write"
    );
}

async fn a_write_through_an_alias_collects_the_plain_path<St: CollectableStore + Clone>(store: St) {
    const POINT: &str = "a write through an alias of the path collects the plain path";
    let backend = Backend::new();
    let app = app!(store, backend);
    let base = unique("alias");
    let pairs = [
        (format!("{base}/a/b"), format!("{base}/a%2Fb")),
        (format!("{base}/x"), format!("{base}/%78")),
        (
            format!("{base}/q?page=2&s=1"),
            format!("{base}/q?s=1&page=%32"),
        ),
    ];
    let both_ways = pairs
        .iter()
        .flat_map(|(plain, alias)| [(plain, alias), (alias, plain)]);
    for (read, write) in both_ways {
        // The first GET may hit what the previous round stored (the router may see one path).
        send!(app, TestRequest::get().uri(read));
        let reads = backend.reads.get();
        send!(app, TestRequest::get().uri(read));
        assert_eq!(
            backend.reads.get(),
            reads,
            "http ({POINT}): {read} was not stored"
        );
        let res = send!(app, TestRequest::patch().uri(write).set_payload("x"));
        assert!(res.status().is_success(), "http ({POINT}): PATCH {write}");
        let res = send!(app, TestRequest::get().uri(read));
        assert_eq!(
            backend.reads.get(),
            reads + 1,
            "http ({POINT}): GET {read} after PATCH {write} was a stale hit"
        );
        let v = backend.version.load(Ordering::SeqCst);
        assert!(
            body(res).await.ends_with(format!("v{v}").as_bytes()),
            "http ({POINT}): stale body after PATCH {write}"
        );
    }
}
