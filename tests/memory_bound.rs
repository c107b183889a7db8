//! The `MemoryStore`'s byte budget holds for the live heap: a flood of distinct URLs, many
//! times what the budget holds, leaves the heap within the budget plus the documented
//! overhead per entry. Counted with a counting allocator, so this file holds one test only
//! (another running at once would be counted too). `cargo bench --bench memory` is the
//! 100,000-URL version with the figures.

use std::{
    alloc::{GlobalAlloc, Layout, System as SystemAlloc},
    sync::atomic::{AtomicIsize, Ordering},
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    test::{call_service, init_service, read_body, TestRequest},
    web, App, HttpResponse,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { SystemAlloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { SystemAlloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { SystemAlloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the `MemoryStore` docs promise beyond the counted bytes, with room for the hash
/// tables' load factor.
const OVERHEAD_PER_ENTRY: isize = 128;

#[actix_web::test]
async fn a_flood_of_distinct_urls_stays_within_the_byte_budget() {
    let budget = 2 * 1024 * 1024;
    // Enough entries for 16 shards, so each shard's tables are as they are in production.
    let store = MemoryStore::new(100_000).max_bytes(budget);
    let app = init_service(App::new().wrap(Cache::new(store.clone())).route(
        "/flood/{n}",
        web::get().to(|| async { HttpResponse::Ok().body(vec![b'm'; 1024]) }),
    ))
    .await;
    let send = |uri: String| {
        let app = &app;
        async move {
            read_body(call_service(app, TestRequest::get().uri(&uri).to_request()).await).await
        }
    };
    for n in 0..500 {
        send(format!("/flood/warm{n}")).await;
    }
    store.clear();
    let before = LIVE.load(Ordering::SeqCst);
    for n in 0..10_000 {
        send(format!("/flood/{n}")).await;
    }
    let grown = LIVE.load(Ordering::SeqCst) - before;
    let entries = store.len() as isize;
    assert!(
        entries > 500 && entries < 2_000,
        "the budget holds some: {entries}"
    );
    let bound = budget as isize + OVERHEAD_PER_ENTRY * entries;
    assert!(
        grown <= bound,
        "heap grew by {grown}, beyond budget + {OVERHEAD_PER_ENTRY} per entry ({bound}); \
         {} per entry beyond the counted {} bytes",
        (grown - store.bytes() as isize) / entries,
        store.bytes()
    );
}
