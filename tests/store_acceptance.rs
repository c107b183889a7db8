//! Every store passes the same acceptance suite (`tests/common/acceptance.rs`): the memory store,
//! the user-written store of `examples/custom_store.rs`, and a store that implements only
//! `CacheStore`.

mod common;

#[path = "../examples/custom_store.rs"]
#[allow(dead_code)]
mod custom_store;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use actix_response_cache::{CacheEntry, CacheKey, CacheStore, MemoryStore, StoreError};

/// A user store with no `CollectableStore`: writes can only remove the primary key.
#[derive(Clone, Default)]
struct GetSetRemoveStore(Arc<Mutex<HashMap<CacheKey, CacheEntry>>>);

impl CacheStore for GetSetRemoveStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .get(key)
            .filter(|entry| !entry.is_expired(SystemTime::now()))
            .cloned())
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key.clone(), entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
        Ok(())
    }
}

// The default store: collectable, and the suite checks collect.
#[actix_web::test]
async fn memory_store_passes_the_acceptance_suite() {
    assert!(
        MemoryStore::new(16).as_collectable().is_some(),
        "MemoryStore must expose its CollectableStore impl"
    );
    common::acceptance::run(|| MemoryStore::new(1_000)).await;
}

// A store of more than 1024 entries is split into shards: the suite must pass for it too.
#[actix_web::test]
async fn sharded_memory_store_passes_the_acceptance_suite() {
    common::acceptance::run(|| MemoryStore::new(100_000)).await;
}

// A user's store built from the example: collectable through `as_collectable`.
#[actix_web::test]
async fn custom_store_example_passes_the_acceptance_suite() {
    assert!(
        custom_store::HashMapStore::default()
            .as_collectable()
            .is_some(),
        "the example store must expose its CollectableStore impl"
    );
    common::acceptance::run(custom_store::HashMapStore::default).await;
}

// A store with get / set / remove only: the middleware's fallback (remove the primary key, leave
// a marker) must still make a write visible to the next GET.
#[actix_web::test]
async fn cache_store_only_passes_the_acceptance_suite() {
    assert!(GetSetRemoveStore::default().as_collectable().is_none());
    common::acceptance::run(GetSetRemoveStore::default).await;
}
