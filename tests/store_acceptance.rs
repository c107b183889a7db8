//! Every store passes the same acceptance suite (`tests/common/acceptance.rs`): the memory store
//! (plain and sharded) and the user-written store of `examples/custom_store.rs`. The Redis and
//! tiered stores run it in `tests/redis.rs`.
//!
//! A store that cannot collect does not compile with `Cache::new`: this `compile_fail` doc test
//! of the crate shows it, in `src/store/mod.rs`.

mod common;

#[path = "../examples/custom_store.rs"]
#[allow(dead_code)]
mod custom_store;

use actix_response_cache::MemoryStore;

#[actix_web::test]
async fn memory_store_passes_the_acceptance_suite() {
    common::acceptance::run(|| MemoryStore::new(1_000)).await;
}

// A store of more than 1024 entries is split into shards: the suite must pass for it too.
#[actix_web::test]
async fn sharded_memory_store_passes_the_acceptance_suite() {
    common::acceptance::run(|| MemoryStore::new(100_000)).await;
}

// A user's store built from the example.
#[actix_web::test]
async fn custom_store_example_passes_the_acceptance_suite() {
    common::acceptance::run(custom_store::HashMapStore::default).await;
}
