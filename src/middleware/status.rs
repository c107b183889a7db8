//! `Cache-Status` (RFC 9211): what the cache did, as two enums, with each header value
//! formatted once per `Cache` and worker.

use std::cell::OnceCell;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::freshness::NotStored;

/// The header's name.
pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The first parameters: a hit, or why and how the request went forward (§2.1, §2.2, §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fwd {
    Hit,
    /// No forward and no hit (only-if-cached).
    Nothing,
    UriMiss,
    VaryMiss,
    Stale,
    /// The request's directives asked for a fresher response.
    Request,
    /// An unsafe method.
    Method,
    /// A stored response the request may not be served (credentials).
    Bypass,
    /// The store failed: a miss.
    StoreError,
    /// A revalidation the handler answered with `304`.
    Stale304,
    Request304,
    /// The handler failed with this status, and a stale response stood in (RFC 5861 §4).
    StaleAfter500,
    StaleAfter502,
    StaleAfter503,
    StaleAfter504,
}

impl Fwd {
    const COUNT: usize = 15;

    fn text(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Nothing => "",
            Self::UriMiss => "fwd=uri-miss",
            Self::VaryMiss => "fwd=vary-miss",
            Self::Stale => "fwd=stale",
            Self::Request => "fwd=request",
            Self::Method => "fwd=method",
            Self::Bypass => "fwd=bypass",
            Self::StoreError => "fwd=miss; detail=store-error",
            Self::Stale304 => "fwd=stale; fwd-status=304",
            Self::Request304 => "fwd=request; fwd-status=304",
            Self::StaleAfter500 => "fwd=stale; fwd-status=500",
            Self::StaleAfter502 => "fwd=stale; fwd-status=502",
            Self::StaleAfter503 => "fwd=stale; fwd-status=503",
            Self::StaleAfter504 => "fwd=stale; fwd-status=504",
        }
    }

    /// The forward of a revalidation the handler answered with `304`.
    pub(super) fn revalidated(self) -> Self {
        match self {
            Self::Request => Self::Request304,
            _ => Self::Stale304,
        }
    }
}

/// What followed (§2.5 `stored`, §2.6 `collapsed`, and `detail`, §2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Detail {
    None,
    Stored,
    /// Storable, but a write in flight or the store stopped it.
    NotStored,
    Collapsed,
    StaleIfError,
    StaleWhileRevalidate,
    PreconditionFailed,
    OnlyIfCached,
    /// A conditional write refused with `503`: its validator or lock was out of reach.
    ValidatorUnavailable,
    Reason(NotStored),
}

impl Detail {
    const COUNT: usize = 9 + NotStored::ALL.len();

    fn index(self) -> usize {
        match self {
            Self::None => 0,
            Self::Stored => 1,
            Self::NotStored => 2,
            Self::Collapsed => 3,
            Self::StaleIfError => 4,
            Self::StaleWhileRevalidate => 5,
            Self::PreconditionFailed => 6,
            Self::OnlyIfCached => 7,
            Self::ValidatorUnavailable => 8,
            Self::Reason(reason) => 9 + reason.index(),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Stored => "; stored",
            Self::NotStored => "; detail=not-stored",
            Self::Collapsed => "; collapsed",
            Self::StaleIfError => "; detail=stale-if-error",
            Self::StaleWhileRevalidate => "; detail=stale-while-revalidate",
            Self::PreconditionFailed => "; detail=precondition-failed",
            Self::OnlyIfCached => "; detail=only-if-cached",
            Self::ValidatorUnavailable => "; detail=validator-unavailable",
            Self::Reason(reason) => reason.detail_param(),
        }
    }
}

/// The header values of one `Cache`, each formatted the first time it is used.
pub(crate) struct Statuses {
    name: Option<Box<str>>,
    /// The hit's value, formatted up front: the hit path formats nothing.
    hit: Option<HeaderValue>,
    cells: Box<[OnceCell<Option<HeaderValue>>]>,
}

impl Statuses {
    /// The values of a cache named `name`; `None`: the header is off.
    pub(crate) fn new(name: Option<&str>) -> Self {
        let mut statuses = Self {
            name: name.map(Into::into),
            hit: None,
            cells: (0..Fwd::COUNT * Detail::COUNT)
                .map(|_| OnceCell::new())
                .collect(),
        };
        statuses.hit = statuses.format(Fwd::Hit, Detail::None, None);
        statuses
    }

    fn format(&self, fwd: Fwd, detail: Detail, ttl: Option<u64>) -> Option<HeaderValue> {
        let name = self.name.as_deref()?;
        let params = match fwd.text() {
            "" => detail.text().trim_start_matches("; ").to_owned(),
            fwd => format!("{fwd}{}", detail.text()),
        };
        let value = match ttl {
            Some(ttl) => format!("{name}; {params}; ttl={ttl}"),
            None => format!("{name}; {params}"),
        };
        HeaderValue::try_from(value).ok()
    }

    /// The prebuilt value of a hit.
    pub(super) fn hit(&self) -> Option<&HeaderValue> {
        self.hit.as_ref()
    }

    /// The value `<name>; <fwd><detail>`, or `None` when the header is off.
    pub(super) fn get(&self, fwd: Fwd, detail: Detail) -> Option<HeaderValue> {
        let cell = self
            .cells
            .get(fwd as usize * Detail::COUNT + detail.index())?;
        cell.get_or_init(|| self.format(fwd, detail, None)).clone()
    }

    /// [`get`](Self::get) with `; ttl=N` added when a response was stored (RFC 9211 §2.7),
    /// formatted each time.
    pub(super) fn with_ttl(
        &self,
        fwd: Fwd,
        detail: Detail,
        ttl: Option<u64>,
    ) -> Option<HeaderValue> {
        match ttl {
            Some(_) => self.format(fwd, detail, ttl),
            None => self.get(fwd, detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_rfc_9211_parameters() {
        let s = Statuses::new(Some("c"));
        let text = |v: Option<HeaderValue>| v.unwrap().to_str().unwrap().to_owned();
        assert_eq!(s.hit().unwrap(), "c; hit");
        assert_eq!(
            text(s.get(Fwd::UriMiss, Detail::Stored)),
            "c; fwd=uri-miss; stored"
        );
        assert_eq!(
            text(s.get(Fwd::Nothing, Detail::OnlyIfCached)),
            "c; detail=only-if-cached"
        );
        assert_eq!(
            text(s.with_ttl(Fwd::Stale304, Detail::Stored, Some(0))),
            "c; fwd=stale; fwd-status=304; stored; ttl=0"
        );
        assert_eq!(
            text(s.get(Fwd::UriMiss, Detail::Reason(NotStored::NoStore))),
            "c; fwd=uri-miss; detail=no-store"
        );
        assert!(Statuses::new(None).get(Fwd::Hit, Detail::None).is_none());
        // Every cell has a place.
        for reason in NotStored::ALL {
            assert!(s.get(Fwd::StaleAfter504, Detail::Reason(reason)).is_some());
        }
    }
}
