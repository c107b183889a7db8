//! Serving stale responses (RFC 5861): `stale-if-error` stands in for a failed handler, and
//! `stale-while-revalidate` answers at once and hands back a [`Refresh`] for
//! [`read`](super::read) to start once the client's response is done with the request.

use std::{
    cell::{Cell, RefCell},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::SystemTime,
};

use actix_web::{
    body::{BodySize, BoxBody, EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{header::HeaderMap, StatusCode},
    web::Bytes,
    HttpRequest,
};
use pin_project_lite::pin_project;

use super::{
    answer::{self, Hit},
    status::{Detail, Fwd},
    Inner, LOG,
};
use crate::{conditional, guard, key::seeded_hash, CacheKey};

/// The `Cache-Status` forward of a failed handler whose response `stale-if-error` may replace
/// (RFC 5861 §4: 500, 502, 503 and 504).
pub(super) fn error_forward(status: StatusCode) -> Option<Fwd> {
    Some(match status.as_u16() {
        500 => Fwd::StaleAfter500,
        502 => Fwd::StaleAfter502,
        503 => Fwd::StaleAfter503,
        504 => Fwd::StaleAfter504,
        _ => return None,
    })
}

/// Answers with a stale stored response in place of the handler's error (RFC 5861 §4), with the
/// client's own preconditions judged against it.
pub(super) fn serve_stale_on_error<St, B>(
    inner: &Inner<St>,
    http_req: HttpRequest,
    hit: Hit<'_>,
    conditions: Option<HeaderMap>,
    fwd: Fwd,
) -> ServiceResponse<EitherBody<B>> {
    log::warn!(target: LOG, "handler failed for {}: serving it stale", http_req.path());
    // The client's own preconditions: taken aside for a revalidation, else still on the request.
    let conditions = match &conditions {
        Some(c) => Some(c).filter(|c| !c.is_empty()),
        None => conditional::has_preconditions(http_req.headers()).then(|| http_req.headers()),
    };
    let rep = hit.representation(SystemTime::now());
    let mut res = answer::respond(rep, http_req.method(), conditions);
    let status = inner.statuses.get(fwd, Detail::StaleIfError);
    answer::finish(&http_req, &mut res, status, false);
    ServiceResponse::new(http_req, res).map_into_right_body()
}

/// A background revalidation to start once the stale response's body is done.
pub(super) struct Refresh {
    /// The key's refresh claim and flight hash.
    pub(super) hash: u64,
    pub(super) request: HttpRequest,
    pub(super) payload: Payload,
    /// Fires when the client's response body has been dropped.
    pub(super) signal: Rc<DropSignal>,
}

/// RFC 5861 §3: answers with the stale `stored` response at once, and, unless a refresh of the
/// key is claimed already, returns the [`Refresh`] that revalidates it with this request once
/// the client's response is done with it. actix routing needs sole ownership of a request (see
/// DESIGN, "Pitfalls"), so the refresh waits until the response's body has been dropped.
pub(super) fn serve_while_revalidating<St>(
    inner: &Inner<St>,
    req: ServiceRequest,
    key: &CacheKey,
    hit: Hit<'_>,
) -> (ServiceResponse<BoxBody>, Option<Refresh>) {
    let now = SystemTime::now();
    let preconditions = conditional::has_preconditions(req.headers());
    let hash = seeded_hash(key.as_bytes());
    let (http_req, payload) = req.into_parts();
    let rep = hit.representation(now);
    let mut res = answer::respond(
        rep,
        http_req.method(),
        preconditions.then(|| http_req.headers()),
    );
    let status = inner.statuses.get(Fwd::Hit, Detail::StaleWhileRevalidate);
    answer::finish(&http_req, &mut res, status, false);
    // One refresh per key at a time.
    if !guard::claim_refresh(hash) {
        return (ServiceResponse::new(http_req, res), None);
    }
    log::debug!(target: LOG, "stale-while-revalidate {}: refreshing", http_req.path());
    let signal = Rc::new(DropSignal::default());
    let res = res.map_body(|_, body| {
        BoxBody::new(SignalOnDrop {
            body,
            signal: Rc::clone(&signal),
        })
    });
    let refresh = Refresh {
        hash,
        request: http_req.clone(),
        payload,
        signal,
    };
    (ServiceResponse::new(http_req, res), Some(refresh))
}

/// Set when a response body is dropped: written out, or abandoned with its connection.
#[derive(Default)]
pub(super) struct DropSignal {
    dropped: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl DropSignal {
    fn fire(&self) {
        self.dropped.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(super) async fn dropped(&self) {
        std::future::poll_fn(|cx| {
            if self.dropped.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

pin_project! {
    /// A body that fires its [`DropSignal`] when dropped.
    struct SignalOnDrop {
        #[pin]
        body: BoxBody,
        signal: Rc<DropSignal>,
    }

    impl PinnedDrop for SignalOnDrop {
        fn drop(this: Pin<&mut Self>) {
            this.signal.fire();
        }
    }
}

impl MessageBody for SignalOnDrop {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}
