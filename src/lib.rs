//! Server-side HTTP response caching and correct conditional requests for actix-web 4.
//!
//! (Crate guide: see README.)

#![deny(missing_docs, unreachable_pub, rust_2018_idioms, unsafe_code)]

mod conditional;
mod entry;
mod etag;
mod guard;
mod key;
mod middleware;
mod policy;
mod store;

pub use crate::{
    entry::CacheEntry,
    key::{CacheKey, ResourceKey},
    middleware::Cache,
    policy::{
        Visibility, DEFAULT_CACHE_STATUS_NAME, DEFAULT_EXPIRY, DEFAULT_MAX_BODY_SIZE,
        DEFAULT_STORE_TIMEOUT,
    },
    store::{CacheStore, CollectTarget, CollectableStore, MemoryStore, StoreError, DEFAULT_MAX_BYTES},
};

#[doc(hidden)]
pub mod dev {
    //! Types that appear in trait bounds; not meant to be used directly.
    pub use crate::middleware::{CacheFuture, CacheMiddleware};
}
