//! The markers nested `Cache`s (an app-wide one and a scope's own) pass each other in request
//! and response extensions, so that the innermost policy wins and nothing is stored twice.

use actix_web::{
    dev::ServiceRequest,
    http::header::{self, HeaderMap, HeaderName},
    HttpMessage, HttpRequest, HttpResponse,
};

/// Marks a response this crate already handled, so that an outer `Cache` passes it through.
#[derive(Clone, Copy)]
pub(super) struct Handled;

/// Put in a request's extensions by a `Cache` before it calls the services it wraps: an inner
/// `Cache` then marks its responses [`Handled`]. Without an outer `Cache` there is nothing to
/// mark, and a hit saves the allocation of the response's extension map.
#[derive(Clone, Copy)]
pub(super) struct OuterCache;

/// Added to [`Handled`] when the inner `Cache` stored the response.
#[derive(Clone, Copy)]
pub(super) struct HandledStored;

/// Marks a request whose conditional write lock an outer `Cache` already holds, so that a
/// nested `Cache` does not wait for itself.
#[derive(Clone, Copy)]
pub(super) struct WriteLockHeld;

/// Put in the extensions of a conditional write's request while an outer `Cache` routes it as
/// a `GET` to learn the current validator: a `Cache` nested inside answers it only with a fresh
/// entry it can serve at once, and otherwise passes it through, neither storing it nor
/// serving a stale entry, so the outer one sees what the handler says now.
#[derive(Clone, Copy)]
pub(super) struct ValidatorProbe;

/// Left in a conditional write's extensions once a `Cache` judged it through a probe: a `Cache`
/// nested inside does not probe it again.
#[derive(Clone, Copy)]
pub(super) struct ValidatorProbed;

/// Put in the extensions of a request that refreshes a stale entry in the background.
#[derive(Clone, Copy)]
pub(super) struct BackgroundRefresh;

/// The client's precondition fields, kept aside while a `Cache` revalidates a stale entry with
/// its own: a `Cache` nested inside puts them back, so that it answers the client's request and
/// not the revalidation (which it would answer with a 304 the client never asked for).
pub(super) struct ClientConditions(pub(super) HeaderMap);

/// The request fields of RFC 9110 §13.1.
pub(super) const PRECONDITION_FIELDS: [HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Puts back the client's precondition fields an outer `Cache` set aside, if it did.
pub(super) fn restore_client_conditions(req: &mut ServiceRequest) -> bool {
    let Some(ClientConditions(client)) = req.extensions_mut().remove::<ClientConditions>() else {
        return false;
    };
    let headers = req.headers_mut();
    take_fields(headers, &PRECONDITION_FIELDS);
    put_back(headers, client);
    true
}

/// Takes every line of the fields `names` out of `headers`, into a map of their own.
pub(super) fn take_fields<'n>(
    headers: &mut HeaderMap,
    names: impl IntoIterator<Item = &'n HeaderName>,
) -> HeaderMap {
    let mut taken = HeaderMap::new();
    for name in names {
        for value in headers.remove(name) {
            taken.append(name.clone(), value);
        }
    }
    taken
}

/// Appends every line of `fields` (from [`take_fields`]) to `headers`.
pub(super) fn put_back(headers: &mut HeaderMap, fields: HeaderMap) {
    for (name, value) in fields {
        headers.append(name, value);
    }
}

/// Marks `res` [`Handled`] when a `Cache` wraps this one, and [`HandledStored`] too when
/// `stored`.
pub(super) fn mark_handled<B>(req: &HttpRequest, res: &mut HttpResponse<B>, stored: bool) {
    if req.extensions().contains::<OuterCache>() {
        res.extensions_mut().insert(Handled);
        if stored {
            res.extensions_mut().insert(HandledStored);
        }
    }
}
