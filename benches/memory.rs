//! Memory of the MemoryStore under a unique-URL flood, measured with a counting allocator.
//!
//! `cargo bench --bench memory`
//!
//! 100,000 requests for distinct URLs go through `Cache` (1 KiB bodies) into a store whose byte
//! budget holds far fewer of them. The live heap must stay within the budget plus a fixed
//! overhead per entry; the bench prints both and fails if the heap outgrows that bound.

use std::{
    alloc::{GlobalAlloc, Layout, System as SystemAlloc},
    sync::atomic::{AtomicIsize, Ordering},
};

use actix_response_cache::{Cache, MemoryStore};
use actix_web::{
    rt::System,
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

static BODY: [u8; 1024] = [b'm'; 1024];

fn flood(requests: usize, max_entries: usize, budget: usize) -> (MemoryStore, isize) {
    let rt = System::new();
    let store = MemoryStore::new(max_entries).max_bytes(budget);
    let app = rt.block_on(init_service(App::new().service(
        web::scope("/flood").wrap(Cache::new(store.clone())).route(
            "/{n}",
            web::get().to(|| async { HttpResponse::Ok().body(BODY.to_vec()) }),
        ),
    )));
    // Warm up (allocator pools, actix pools), then measure from here.
    rt.block_on(async {
        for n in 0..1000 {
            let req = TestRequest::get()
                .uri(&format!("/flood/warm{n}"))
                .to_request();
            read_body(call_service(&app, req).await).await;
        }
    });
    store.clear();
    let before = LIVE.load(Ordering::SeqCst);
    rt.block_on(async {
        for n in 0..requests {
            let req = TestRequest::get().uri(&format!("/flood/{n}")).to_request();
            read_body(call_service(&app, req).await).await;
        }
    });
    let grown = LIVE.load(Ordering::SeqCst) - before;
    (store, grown)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep it quick
    // unless benchmarking.
    let benching = std::env::args().any(|a| a == "--bench");
    let requests = if benching { 100_000 } else { 5_000 };
    let budget = 16 * 1024 * 1024;
    let (store, grown) = flood(requests, 1_000_000, budget);
    let entries = store.len();
    let counted = store.bytes();
    let per_entry = (grown as f64 - counted as f64) / entries.max(1) as f64;
    println!("requests: {requests}, byte budget: {budget}");
    println!("entries held: {entries}, bytes counted against the budget: {counted}");
    println!(
        "live heap grown by: {grown} bytes ({:.1}% of the budget)",
        grown as f64 * 100.0 / budget as f64
    );
    println!("heap beyond the counted bytes, per entry: {per_entry:.0} bytes");
    // The promise in the MemoryStore docs: budget + a fixed overhead per entry.
    const DOCUMENTED_OVERHEAD_PER_ENTRY: f64 = 128.0;
    let bound = budget as f64 + DOCUMENTED_OVERHEAD_PER_ENTRY * entries as f64;
    assert!(
        (grown as f64) <= bound,
        "heap {grown} exceeds budget + {DOCUMENTED_OVERHEAD_PER_ENTRY} per entry ({bound})"
    );
}
