//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod acceptance;
pub mod app;
#[cfg(feature = "redis")]
pub mod redis_server;

#[allow(unused_imports)]
pub use app::*;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use actix_web::{
    dev::ServiceResponse,
    http::header::{HeaderName, HeaderValue},
    test,
};

/// Counts handler calls; clone it into handlers.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The value of a response header as a `String` (`""` when absent).
pub fn header<B>(res: &ServiceResponse<B>, name: impl TryInto<HeaderName>) -> String {
    let Ok(name) = name.try_into() else {
        return String::new();
    };
    res.headers()
        .get(name)
        .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Reads a response's whole body.
pub async fn body(
    res: ServiceResponse<impl actix_web::body::MessageBody>,
) -> actix_web::web::Bytes {
    test::read_body(res).await
}

/// Starts `env_logger` once, so `RUST_LOG=actix_response_cache=trace` shows the cache's log.
pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}
