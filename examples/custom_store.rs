//! A store written by the user: a `HashMap` behind a mutex, indexed by resource so that a write
//! can drop every stored variant of what it changed.
//!
//! ```sh
//! cargo run --example custom_store
//! curl -i http://127.0.0.1:8080/note                       # miss: the handler runs, stored
//! curl -i http://127.0.0.1:8080/note                       # hit: Age, Cache-Status: ...; hit
//! curl -i -X PUT -d 'new text' http://127.0.0.1:8080/note  # collects the stored entries
//! ```
//!
//! A store needs only [`CacheStore`] (get, set, remove). Implementing [`CollectableStore`] as
//! well, and returning `Some(self)` from `as_collectable`, lets a successful `PUT`, `PATCH`,
//! `DELETE` or `POST` drop every `Vary` variant of the resource at once.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::SystemTime,
};

use actix_response_cache::{
    Cache, CacheEntry, CacheKey, CacheStore, CollectTarget, CollectableStore, ResourceKey,
    StoreError,
};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::LocalBoxFuture;
use parking_lot::Mutex;

/// An unbounded in-process store. `Clone` shares one map, so every worker (and several
/// `Cache`s) can use the same store. A real store would bound its size; this one relies on
/// expiry and on writes collecting what they made stale.
#[derive(Clone, Default)]
pub struct HashMapStore {
    inner: Arc<Mutex<Maps>>,
}

#[derive(Default)]
struct Maps {
    entries: HashMap<CacheKey, CacheEntry>,
    /// Every key stored per resource, so that `collect` looks at that resource's keys only.
    by_resource: HashMap<ResourceKey, HashSet<CacheKey>>,
}

impl Maps {
    fn remove(&mut self, key: &CacheKey) {
        if self.entries.remove(key).is_some() {
            if let Some(keys) = self.by_resource.get_mut(key.resource()) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_resource.remove(key.resource());
                }
            }
        }
    }
}

impl HashMapStore {
    /// How many entries the store holds (expired ones not yet read included).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CacheStore for HashMapStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<CacheEntry>, StoreError> {
        let mut maps = self.inner.lock();
        match maps.entries.get(key) {
            // The contract: never hand back an expired entry. Drop it while we hold the lock.
            Some(entry) if entry.is_expired(SystemTime::now()) => {
                maps.remove(key);
                Ok(None)
            }
            // A clone is a reference-count increment, not a copy of the body.
            Some(entry) => Ok(Some(entry.clone())),
            None => Ok(None),
        }
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) -> Result<(), StoreError> {
        let mut maps = self.inner.lock();
        maps.entries.insert(key.clone(), entry);
        maps.by_resource
            .entry(key.resource().clone())
            .or_default()
            .insert(key.clone());
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.inner.lock().remove(key);
        Ok(())
    }

    // Without this line the middleware cannot see the `CollectableStore` impl below (Rust has
    // no specialization) and would fall back to removing single keys.
    fn as_collectable(&self) -> Option<&dyn CollectableStore> {
        Some(self)
    }
}

impl CollectableStore for HashMapStore {
    fn collect<'a>(
        &'a self,
        target: &'a CollectTarget,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
        // All the work is synchronous, so do it now and return a ready future: the lock is never
        // held across an `.await`.
        let mut maps = self.inner.lock();
        let doomed: Vec<CacheKey> = maps
            .by_resource
            .get(target.resource())
            .map(|keys| keys.iter().filter(|k| target.matches(k)).cloned().collect())
            .unwrap_or_default();
        for key in &doomed {
            maps.remove(key);
        }
        let dropped = doomed.len();
        Box::pin(async move { Ok(dropped) })
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
