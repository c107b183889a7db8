//! The per-worker service: [`CacheMiddleware::call`] only sorts a request (a hit answered at
//! once, a read, a write, or a pass-through), and [`CacheFuture`] is what it returns.

use std::{
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::SystemTime,
};

use actix_service::{forward_ready, Service};
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    Error,
};
use futures_util::future::LocalBoxFuture;
use pin_project_lite::pin_project;

use super::{
    answer, invalidate,
    lookup::{self, Lookup},
    nested::restore_client_conditions,
    pass, read,
    write::{self, Stored},
    Inner, LOG,
};
use crate::{
    entry::EntryKind, freshness, guard, request::RequestFlags, store::CollectableStore, CacheKey,
};

/// The per-worker service of [`Cache`](crate::Cache). Built by actix; not used directly.
#[doc(hidden)]
pub struct CacheMiddleware<S, St> {
    service: Rc<S>,
    inner: Rc<Inner<St>>,
}

impl<S, St> CacheMiddleware<S, St> {
    pub(super) fn new(service: S, inner: Rc<Inner<St>>) -> Self {
        Self {
            service: Rc::new(service),
            inner,
        }
    }
}

/// How `call` sorted a request.
enum Route<B> {
    /// A hit, answered synchronously.
    Hit(ServiceResponse<EitherBody<B>>),
    /// `GET`/`HEAD` that needs the store awaited or the handler.
    Read(ServiceRequest, Option<Lookup>),
    /// An unsafe method with something to judge or remember.
    Write(ServiceRequest, CacheKey, Option<Stored>),
    /// An unsafe method with nothing stored and nothing to judge: its handler's future is
    /// polled in place, and only what it invalidates is boxed.
    WriteThrough(ServiceRequest, CacheKey),
    /// `OPTIONS`, `TRACE`, `CONNECT`.
    PassThrough(ServiceRequest),
    /// A `GET` of a key whose responses pass through unbuffered (`pass.rs`), with the key's
    /// hash.
    Pass(ServiceRequest, u64),
}

impl<S, B, St> Service<ServiceRequest> for CacheMiddleware<S, St>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    St: CollectableStore,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = CacheFuture<S::Future, B, St>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (service, inner) = (&self.service, &self.inner);
        match sort(inner, req) {
            Route::Hit(res) => CacheFuture::Ready { res: Some(res) },
            Route::Read(req, lookup) => {
                // Read before the lookup: a write that completes after this point makes the
                // miss skip its store, even when the lookup saw the state from before it.
                let epoch = guard::epoch();
                let flow = read::read(Rc::clone(service), Rc::clone(inner), req, epoch, lookup);
                CacheFuture::Store {
                    fut: Box::pin(flow),
                }
            }
            Route::Write(req, key, stored) => {
                let flow = write::write(Rc::clone(service), Rc::clone(inner), req, key, stored);
                CacheFuture::Store {
                    fut: Box::pin(flow),
                }
            }
            Route::WriteThrough(req, key) => CacheFuture::WriteThrough {
                fut: service.call(req),
                inner: Rc::clone(inner),
                key: Some(key),
            },
            Route::PassThrough(req) => CacheFuture::PassThrough {
                fut: service.call(req),
            },
            Route::Pass(req, hash) => CacheFuture::Pass {
                fut: service.call(req),
                inner: Rc::clone(inner),
                hash,
            },
        }
    }
}

/// Sorts a request. A `GET`/`HEAD` that an in-process store can answer at once with an entry
/// it may be served is answered here: no future is boxed and no owned key is built.
fn sort<St: CollectableStore, B>(inner: &Inner<St>, mut req: ServiceRequest) -> Route<B> {
    let method = req.method();
    if method == Method::GET || method == Method::HEAD {
        let epoch_now = SystemTime::now();
        let mut flags = RequestFlags::of(req.headers());
        // An outer `Cache` revalidating with its own validators: answer the client's request.
        if flags.preconditions && restore_client_conditions(&mut req) {
            flags = RequestFlags::of(req.headers());
        }
        let (lookup, miss_hash) = lookup::lookup_now(inner, &req, epoch_now, flags.forwarded);
        if let Some(hash) = pass::takes_pass(&req, flags, lookup.as_ref(), miss_hash, epoch_now) {
            return Route::Pass(req, hash);
        }
        if let Some(Lookup::Hit { entry, .. }) = &lookup {
            if let EntryKind::Response(stored) = entry.kind() {
                // Request directives, when honoured, and stale entries take the full flow.
                let directives = flags.cache_control && inner.policy.honours_request_directives();
                if freshness::servable(&inner.policy, flags, stored)
                    && stored.is_fresh(epoch_now)
                    && !directives
                {
                    log::debug!(target: LOG, "hit {} {}", req.path(), req.query_string());
                    let res = answer::serve_hit(
                        inner,
                        req,
                        answer::Hit { entry, stored },
                        epoch_now,
                        flags.preconditions,
                    );
                    return Route::Hit(res.map_into_right_body());
                }
            }
        }
        return Route::Read(req, lookup);
    }
    if !crate::request::is_unsafe(method) {
        return Route::PassThrough(req);
    }
    let flags = RequestFlags::of(req.headers());
    let key = CacheKey::of_request(req.request(), flags.forwarded);
    let now = SystemTime::now();
    let outstanding = super::backlog::any() || inner.coordinator().is_some();
    let stored = lookup::lookup_key_now(&inner.store, &key, req.headers(), now)
        .filter(|_| !outstanding)
        .and_then(|lookup| {
            let marker_key = CacheKey::write_marker(key.resource_handle(), key.query_handle());
            let marker = inner.store.get_now(marker_key.as_bytes())?.ok()?;
            let marker =
                marker.filter(|m| !m.is_expired(now) && matches!(m.kind(), EntryKind::Modified(_)));
            let known = !matches!(lookup, Lookup::StoreFailed);
            Some(Stored {
                lookup,
                marker,
                known,
            })
        });
    // The write pass-through: nothing of the resource is stored under its key, no write left
    // a marker, and the write asks for no precondition, so there is nothing to judge or
    // remember. A store several servers share takes the full flow.
    let nothing = stored.as_ref().is_some_and(Stored::is_nothing);
    if nothing && !flags.preconditions && inner.coordinator().is_none() {
        return Route::WriteThrough(req, key);
    }
    Route::Write(req, key, stored)
}

pin_project! {
    /// The response future of [`CacheMiddleware`]: the inner service's own future polled in
    /// place (other methods, and writes with nothing to judge), a hit answered at once, or the
    /// boxed cache flow, which awaits the store.
    #[doc(hidden)]
    #[project = CacheFutureProj]
    pub enum CacheFuture<F, B, St> {
        PassThrough { #[pin] fut: F },
        Pass { #[pin] fut: F, inner: Rc<Inner<St>>, hash: u64 },
        Ready { res: Option<ServiceResponse<EitherBody<B>>> },
        Store { fut: LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, Error>> },
        WriteThrough { #[pin] fut: F, inner: Rc<Inner<St>>, key: Option<CacheKey> },
        Collecting {
            fut: LocalBoxFuture<'static, ()>,
            res: Option<ServiceResponse<EitherBody<B>>>,
        },
    }
}

impl<F, B, St> Future for CacheFuture<F, B, St>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody,
    St: CollectableStore,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let collecting = match self.as_mut().project() {
            CacheFutureProj::PassThrough { fut } => {
                return fut
                    .poll(cx)
                    .map(|res| res.map(ServiceResponse::map_into_left_body))
            }
            CacheFutureProj::Pass { fut, inner, hash } => {
                return fut
                    .poll(cx)
                    .map(|res| res.map(|res| pass::finish(inner, res, *hash)))
            }
            CacheFutureProj::Ready { res } => {
                return match res.take() {
                    Some(res) => Poll::Ready(Ok(res)),
                    // Polled again after completion: a contract violation by the caller.
                    None => Poll::Pending,
                };
            }
            CacheFutureProj::Store { fut } => return fut.as_mut().poll(cx),
            CacheFutureProj::WriteThrough { fut, inner, key } => {
                let res = match fut.poll(cx) {
                    Poll::Ready(Ok(res)) => res,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                };
                let plan = key
                    .as_ref()
                    .and_then(|key| invalidate::plan(inner, key, &res));
                match plan {
                    Some(plan) => {
                        let inner = Rc::clone(inner);
                        CacheFuture::Collecting {
                            fut: Box::pin(async move {
                                let deadline = invalidate::deadline(&inner);
                                invalidate::apply(&inner, plan, deadline).await
                            }),
                            res: Some(res.map_into_left_body()),
                        }
                    }
                    None => return Poll::Ready(Ok(res.map_into_left_body())),
                }
            }
            CacheFutureProj::Collecting { fut, res } => {
                return match fut.as_mut().poll(cx) {
                    Poll::Ready(()) => match res.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending,
                    },
                    Poll::Pending => Poll::Pending,
                }
            }
        };
        self.set(collecting);
        self.poll(cx)
    }
}
