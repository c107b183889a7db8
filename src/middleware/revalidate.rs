//! Revalidation (RFC 9111 §4.3): the conditional request a stale entry sends to the handler,
//! and what a `304` to it does to the stored response.

use std::time::{Duration, SystemTime};

use actix_web::{
    body::EitherBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderMap, HeaderName},
    HttpMessage,
};

use super::{
    admit::{self, is_stored_field, named_by_connection, Placement},
    answer::{self, Representation},
    nested::{self, ClientConditions, PRECONDITION_FIELDS},
    status::Detail,
    trip::Trip,
    Inner, LOG,
};
use crate::{
    entry::{EntryKind, StoredResponse},
    etag::EntityTag,
    freshness::{self, entry_age, StorePlan},
    store::CollectableStore,
    CacheEntry,
};

/// Turns `req` into a revalidation of `stored` (RFC 9111 §4.3.1): the client's precondition
/// fields are taken out and returned, and the stored `ETag` and `Last-Modified` are sent as
/// `If-None-Match` and `If-Modified-Since`.
pub(super) fn ask_revalidation(req: &mut ServiceRequest, stored: &StoredResponse) -> HeaderMap {
    let headers = req.headers_mut();
    let client = nested::take_fields(headers, &PRECONDITION_FIELDS);
    if let Some(tag) = &stored.etag {
        headers.insert(header::IF_NONE_MATCH, tag.value().clone());
    }
    if let Some((_, modified)) = stored
        .headers
        .iter()
        .find(|(name, _)| name == header::LAST_MODIFIED)
    {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    req.extensions_mut()
        .insert(ClientConditions(client.clone()));
    client
}

/// §4.3.4: a 304's strong entity tag selects the stored response with the same strong tag, a
/// weak one the stored response whose tag matches it weakly. Another tag is about another
/// representation: the stored response is then not updated (but still answers: the handler
/// said that what the client would get has not changed).
fn selects(stored: &StoredResponse, res: &HeaderMap) -> bool {
    let other = res
        .get(header::ETAG)
        .and_then(|v| EntityTag::parse(v.as_bytes()))
        .zip(stored.etag.as_ref())
        .is_some_and(|(new, old)| {
            if new.weak {
                !new.weak_eq(&old.tag())
            } else {
                !new.strong_eq(&old.tag())
            }
        });
    !other
}

/// §3.2: the stored fields, with the 304's replacing those of the same name, except the fields
/// a cache does not store and Content-Length. Its `Age` takes part in the freshness computed
/// from them (§4.2.3) but is not stored; its `Set-Cookie` goes to this client alone.
fn merged_fields(stored: &StoredResponse, res: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in stored.headers.iter() {
        headers.append(name.clone(), value.clone());
    }
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in res {
        let merged = (is_stored_field(name) || name == header::AGE)
            && name != header::SET_COOKIE
            && !named_by_connection(res, name);
        if !merged {
            continue;
        }
        if !replaced.contains(&name) {
            headers.remove(name);
            replaced.push(name);
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// A `304` answered a revalidation: the stored response is refreshed with its fields and stored
/// again (under the lookup's key), and the client gets the refreshed response, or a 304 / 412
/// for its own preconditions.
pub(super) async fn refresh<St: CollectableStore, B>(
    inner: &Inner<St>,
    res: ServiceResponse<B>,
    entry: &CacheEntry,
    trip: Trip,
) -> ServiceResponse<EitherBody<B>> {
    let EntryKind::Response(stored) = entry.kind() else {
        return res.map_into_left_body();
    };
    let fwd = trip.forward.fwd.revalidated();
    let (http_req, res) = res.into_parts();
    let now = SystemTime::now();
    let (answer, detail, ttl) = if selects(stored, res.headers()) {
        store_refreshed(inner, &trip, stored, res.headers()).await
    } else {
        (None, Detail::NotStored, None)
    };
    let (entry, stored) = match answer.as_ref().map(|e| (e, e.kind())) {
        Some((e, EntryKind::Response(fresh))) => (e, fresh),
        _ => (entry, stored),
    };
    let conditions = trip.conditions.as_ref().filter(|c| !c.is_empty());
    let rep = Representation::Stored {
        stored,
        age: entry_age(entry, stored, now),
    };
    let mut response = answer::respond(rep, http_req.method(), conditions);
    // The handler ran: a cookie it set (a rotated session, say) reaches this client, and only
    // this one. Set-Cookie is never stored.
    for cookie in res.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    let status = inner.statuses.with_ttl(fwd, detail, ttl);
    answer::finish(&http_req, &mut response, status, false);
    trip.land(super::coalesce::Outcome::Other);
    ServiceResponse::new(http_req, response).map_into_right_body()
}

/// Stores the refreshed response when it may still be stored. Returns the entry that answers
/// the client, the `Cache-Status` detail, and the freshness stored.
async fn store_refreshed<St: CollectableStore>(
    inner: &Inner<St>,
    trip: &Trip,
    stored: &StoredResponse,
    fields: &HeaderMap,
) -> (Option<CacheEntry>, Detail, Option<u64>) {
    let now = SystemTime::now();
    let headers = merged_fields(stored, fields);
    let req_headers = &trip.identity.headers;
    match freshness::storability(&inner.policy, req_headers, stored.status, &headers, now) {
        Ok(plan) => {
            let fresh =
                admit::stored_response(stored.status, &headers, stored.body.clone(), &plan, now);
            let entry = CacheEntry::new(now, plan.ttl + plan.keep, EntryKind::Response(fresh));
            let at = Placement {
                key: &trip.identity.key,
                headers: req_headers,
                plan: &plan,
                marker: trip.variant_marker(),
                guard: trip.guard,
            };
            if admit::store_fresh(inner, at, entry.clone()).await {
                log::debug!(target: LOG, "refreshed {:?} for {}s", trip.identity.key, plan.ttl.as_secs());
                (Some(entry), Detail::Stored, Some(plan.ttl.as_secs()))
            } else {
                (Some(entry), Detail::NotStored, None)
            }
        }
        Err(reason) => {
            // Not stored (the 304 now says `no-store` or `private`, say), but this client
            // still gets the representation as the handler now describes it.
            let plan = StorePlan::transient();
            let once =
                admit::stored_response(stored.status, &headers, stored.body.clone(), &plan, now);
            let entry = CacheEntry::new(now, Duration::ZERO, EntryKind::Response(once));
            (Some(entry), Detail::Reason(reason), None)
        }
    }
}
