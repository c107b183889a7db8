//! A store written by the user: a `HashMap` behind a mutex, which a write can ask to drop
//! every stored entry of what it changed.
//!
//! ```sh
//! cargo run --example custom_store
//! curl -i http://127.0.0.1:8080/note                       # miss: the handler runs, stored
//! curl -i http://127.0.0.1:8080/note                       # hit: Age, Cache-Status: ...; hit
//! curl -i -X PUT -d 'new text' http://127.0.0.1:8080/note  # collects the stored entries
//! ```
//!
//! A store implements two traits: [`CacheStore`] (get, set, remove) for storage, and
//! [`CollectableStore`], which [`Cache::new`] requires: `collect` drops every stored entry of a
//! resource after a successful `PUT`, `PATCH`, `DELETE` or `POST` (every alias of its path,
//! every `Vary` variant), and `coordination` says whether several servers share the store.
//! This one scans its own keys to collect: simple, and fast enough for a small store; a big one
//! would index its keys by `CacheKey::resource()`.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use actix_response_cache::{
    Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, Coordination,
    StoreError,
};
use actix_web::{web, App, HttpResponse, HttpServer};
use parking_lot::Mutex;

/// An unbounded in-process store. `Clone` shares one map, so every worker (and several
/// `Cache`s) can use the same store. A real store would bound its size; this one relies on
/// expiry and on writes collecting what they made stale.
#[derive(Clone, Default)]
pub struct HashMapStore {
    entries: Arc<Mutex<HashMap<CacheKey, CacheEntry>>>,
}

impl HashMapStore {
    /// How many entries the store holds (expired ones not yet read included).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CacheStore for HashMapStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            // The contract: never hand back an expired entry. Drop it while we hold the lock.
            Some(entry) if entry.is_expired(SystemTime::now()) => {
                entries.remove(key);
                Ok(None)
            }
            // A clone is a reference-count increment, not a copy of the body.
            Some(entry) => Ok(Some(entry.clone())),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        self.entries.lock().insert(key.clone(), entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.entries.lock().remove(key);
        Ok(())
    }
}

impl CollectableStore for HashMapStore {
    async fn collect(&self, target: &CollectTarget) -> Result<usize, StoreError> {
        // `matches` compares the key's resource group (every alias of the path) and query.
        let mut entries = self.entries.lock();
        let before = entries.len();
        entries.retain(|key, _| !target.matches(key));
        Ok(before - entries.len())
    }

    fn coordination(&self) -> Coordination<'_> {
        // One process: the middleware's own race guard and write lock are enough. A store that
        // several servers share returns `Coordination::Shared` with its `Coordinate` impl.
        Coordination::InProcess
    }
}

/// The text the tiny resource serves.
struct Note(Mutex<String>);

async fn get_note(note: web::Data<Note>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(note.0.lock().clone())
}

async fn put_note(note: web::Data<Note>, text: String) -> HttpResponse {
    *note.0.lock() = text;
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::new().default_filter_or("info"));

    let note = web::Data::new(Note(Mutex::new("hello".to_owned())));
    // One store for the process: the closure below runs once per worker, and each clone of the
    // store shares the same map.
    let store = HashMapStore::default();

    log::info!("listening on http://127.0.0.1:8080 (try /note)");
    HttpServer::new(move || {
        App::new()
            .app_data(note.clone())
            .wrap(Cache::new(store.clone()))
            .route("/note", web::get().to(get_note))
            .route("/note", web::put().to(put_note))
    })
    .bind(("127.0.0.1", 8080))?
    .run()
    .await
}
