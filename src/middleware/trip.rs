//! What a request forwarded to the handler carries to its finish: why it went ([`Forward`]),
//! the race guard read before the handler ran ([`Guard`]), and the lead of its key's flight.

use actix_web::http::header::HeaderMap;

use super::{
    coalesce::{Landing, Outcome},
    lookup::Identity,
    status::Fwd,
    Inner,
};
use crate::{entry::EntryKind, policy::Visibility, store::CollectableStore, CacheEntry, CacheKey};

/// Why and with what a request goes to the handler.
pub(super) struct Forward {
    pub(super) fwd: Fwd,
    /// A stored response that may not be reused as it is, but can be revalidated.
    pub(super) stale: Option<CacheEntry>,
    /// A stale response RFC 5861 `stale-if-error` lets answer if the handler fails.
    pub(super) fallback: Option<CacheEntry>,
    /// The variant marker the lookup found, which a new variant joins.
    pub(super) marker: Option<CacheEntry>,
}

/// What a forwarded request takes to its finish.
pub(super) struct Trip {
    pub(super) identity: Identity,
    pub(super) forward: Forward,
    pub(super) guard: Guard,
    /// The client's own preconditions, set aside for a revalidation.
    pub(super) conditions: Option<HeaderMap>,
    pub(super) flight: Option<Landing>,
}

impl Trip {
    /// Ends the key's flight, if this request leads one.
    pub(super) fn land(self, outcome: Outcome) {
        if let Some(flight) = self.flight {
            flight.land(outcome);
        }
    }

    /// The lookup's variant marker, when it is one.
    pub(super) fn variant_marker(&self) -> Option<&CacheEntry> {
        self.forward
            .marker
            .as_ref()
            .filter(|m| matches!(m.kind(), EntryKind::Variants(_)))
    }
}

/// What a miss read before its handler ran, to tell afterwards whether a write happened since.
#[derive(Clone, Copy)]
pub(super) struct Guard {
    /// This process's write epoch ([`guard::epoch`]).
    pub(super) epoch: u64,
    /// The store's write generation of the resource, for stores several servers share.
    pub(super) generation: Guarded,
}

#[derive(Clone, Copy)]
pub(super) enum Guarded {
    /// The generation read (`None`: the store keeps none).
    Generation(Option<crate::store::Generation>),
    /// The store could not say: storing could revive what another server's write collected.
    Unknown,
}

impl Guard {
    /// Reads the guard before a miss calls its handler: this process's write epoch (read by the
    /// caller before its lookup), and the store's write generation of the group where several
    /// servers share the store. Unknown when the store fails: then nothing is stored.
    pub(super) async fn read<St: CollectableStore>(
        inner: &Inner<St>,
        key: &CacheKey,
        epoch: u64,
    ) -> Self {
        let generation = match inner.coordinator() {
            Some(c) if inner.policy.visibility != Visibility::Private => {
                match inner.timed("generation", c.generation(key)).await {
                    Ok(generation) => Guarded::Generation(Some(generation)),
                    Err(_) => Guarded::Unknown,
                }
            }
            _ => Guarded::Generation(None),
        };
        Self { epoch, generation }
    }
}
