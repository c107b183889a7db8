//! One shard of the [`MemoryStore`](super::MemoryStore): its LRU, its index of resource groups
//! (write generations, live counts, insertion order) and the rules that keep both bounded.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::SystemTime,
};

use lru::LruCache;

use crate::{store::CollectTarget, CacheEntry, CacheKey, ResourceGroup};

pub(super) struct State {
    /// Unbounded in the LRU's own terms: `max_entries` is enforced here, so that no table of
    /// the full capacity is allocated up front.
    pub(super) entries: LruCache<CacheKey, Slot>,
    /// Per resource group: its write generations, live counts and insertion order, so that
    /// collect, removal, eviction and the variant cap each cost O(1) (amortised), whatever the
    /// number of keys of the group.
    pub(super) groups: HashMap<Arc<ResourceGroup>, Box<Group>, foldhash::fast::RandomState>,
    pub(super) bytes: usize,
    pub(super) max_bytes: usize,
    pub(super) max_entries: usize,
    pub(super) max_variants: usize,
    /// The stamp of the next stored entry (order within the shard).
    pub(super) next_stamp: u64,
}

/// A stored entry, with the write generations it was stored under: when either cell has moved
/// on (a collect), the entry is unusable and is dropped when next met.
pub(super) struct Slot {
    entry: CacheEntry,
    group_cell: Arc<AtomicU64>,
    group_generation: u64,
    query_cell: Arc<AtomicU64>,
    query_generation: u64,
    stamp: u64,
    /// Set by a hit (under the shard's read lock); eviction passes over a marked entry once,
    /// clearing the mark and moving it to the recent end, so hits keep an entry without
    /// taking the shard's lock exclusively.
    referenced: AtomicBool,
}

impl Slot {
    /// Whether no collect has made the entry unusable since it was stored.
    fn current(&self) -> bool {
        self.group_cell.load(Ordering::Acquire) == self.group_generation
            && self.query_cell.load(Ordering::Acquire) == self.query_generation
    }

    /// Marks the entry as used, writing only when it is not marked yet (so that hits on one
    /// hot entry from several cores share its cache line instead of bouncing it).
    fn mark(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

/// What a shard keeps of one resource group.
#[derive(Default)]
pub(super) struct Group {
    /// Moved on by a collect of every query string.
    cell: Arc<AtomicU64>,
    /// Per query string (in group form): its generation cell and live entries.
    queries: QueryCells,
    /// Entries held (usable or not yet reclaimed).
    pub(super) live: usize,
    /// Keys in the order they were stored, with their stamps; an item whose key holds another
    /// stamp (or nothing) is a tombstone, skipped when met. Kept within twice the live count.
    pub(super) order: VecDeque<(CacheKey, u64)>,
}

#[derive(Default)]
struct Query {
    cell: Arc<AtomicU64>,
    live: usize,
}

/// A group's query strings. Nearly every group has one (a path without a query, or one
/// query string), held inline; a table is allocated only for a second, so that a flood of
/// distinct URLs costs no table per URL.
#[derive(Default)]
enum QueryCells {
    #[default]
    None,
    One(Arc<str>, Query),
    Many(HashMap<Arc<str>, Query, foldhash::fast::RandomState>),
}

impl QueryCells {
    fn get(&self, query: &str) -> Option<&Query> {
        match self {
            Self::One(q, cell) if &**q == query => Some(cell),
            Self::Many(map) => map.get(query),
            _ => None,
        }
    }

    fn get_mut(&mut self, query: &str) -> Option<&mut Query> {
        match self {
            Self::One(q, cell) if &**q == query => Some(cell),
            Self::Many(map) => map.get_mut(query),
            _ => None,
        }
    }

    fn remove(&mut self, query: &str) {
        match self {
            Self::One(q, _) if &**q == query => *self = Self::None,
            Self::Many(map) => {
                map.remove(query);
            }
            _ => {}
        }
    }

    /// The cell of `query`, made when it has none.
    fn entry(&mut self, query: &Arc<str>) -> &mut Query {
        match self {
            Self::None => *self = Self::One(Arc::clone(query), Query::default()),
            Self::One(q, _) if q != query => {
                let Self::One(q, cell) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let mut map = HashMap::default();
                map.insert(q, cell);
                *self = Self::Many(map);
            }
            _ => {}
        }
        match self {
            Self::One(_, cell) => cell,
            Self::Many(map) => map.entry(Arc::clone(query)).or_default(),
            Self::None => unreachable!("filled above"),
        }
    }
}

/// A collect of a group of at most this many entries removes them at once (at most twice as
/// many steps); a bigger group only moves its generation, O(1), and its entries are reclaimed
/// as they are met.
const EAGER_COLLECT: usize = 64;

fn weight(key: &CacheKey, entry: &CacheEntry) -> usize {
    key.as_bytes().len() + entry.size()
}

impl State {
    /// Forgets a removed entry in its group's counts: O(1), no scan of the group's keys.
    fn unindex(&mut self, key: &CacheKey, slot: &Slot) {
        self.bytes = self.bytes.saturating_sub(weight(key, &slot.entry));
        let Some(group) = self.groups.get_mut(key.resource()) else {
            return;
        };
        group.live = group.live.saturating_sub(1);
        if let Some(query) = group.queries.get_mut(key.query()) {
            query.live = query.live.saturating_sub(1);
            if query.live == 0 {
                group.queries.remove(key.query());
            }
        }
        if group.live == 0 {
            self.groups.remove(key.resource());
        }
    }

    pub(super) fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.pop(key) {
            self.unindex(key, &slot);
        }
    }

    pub(super) fn insert(&mut self, key: &CacheKey, entry: CacheEntry) {
        self.remove(key);
        let size = weight(key, &entry);
        if size > self.max_bytes {
            log::trace!(target: "actix_response_cache", "entry of {size} bytes exceeds the store budget");
            return;
        }
        while self.bytes + size > self.max_bytes || self.entries.len() >= self.max_entries {
            match self.entries.pop_lru() {
                // Second chance: a hit since the entry last reached this end keeps it.
                Some((old_key, old)) if old.referenced.swap(false, Ordering::Relaxed) => {
                    self.entries.push(old_key, old);
                }
                Some((old_key, old)) => self.unindex(&old_key, &old),
                None => break,
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let group = self
            .groups
            .entry(Arc::clone(key.resource_handle()))
            .or_default();
        let query = group.queries.entry(key.query_handle());
        query.live += 1;
        let slot = Slot {
            entry,
            group_generation: group.cell.load(Ordering::Acquire),
            group_cell: Arc::clone(&group.cell),
            query_generation: query.cell.load(Ordering::Acquire),
            query_cell: Arc::clone(&query.cell),
            stamp,
            referenced: AtomicBool::new(false),
        };
        group.live += 1;
        if group.order.capacity() == 0 {
            // Most groups hold one entry: no room for four.
            group.order.reserve_exact(1);
        }
        group.order.push_back((key.clone(), stamp));
        self.entries.push(key.clone(), slot);
        self.bytes += size;
        self.bound_group(key.resource());
    }

    /// Keeps a group within the variant cap (its oldest entries go first) and its order queue
    /// within twice its live entries; amortised O(1) per insert.
    fn bound_group(&mut self, resource: &ResourceGroup) {
        loop {
            let Some(group) = self.groups.get_mut(resource) else {
                return;
            };
            let over_cap = group.live > self.max_variants;
            let too_long = group.order.len() > 2 * group.live + 8;
            if !over_cap && !too_long {
                return;
            }
            let Some((key, stamp)) = group.order.pop_front() else {
                return;
            };
            let held = self.entries.peek(&key).is_some_and(|s| s.stamp == stamp);
            match (held, over_cap) {
                (true, true) => self.remove(&key),
                // Not over the cap: a live item only moves to the back, a tombstone goes.
                (true, false) => {
                    if let Some(group) = self.groups.get_mut(resource) {
                        group.order.push_back((key, stamp));
                    }
                    return;
                }
                (false, _) => {}
            }
        }
    }

    /// The entry at `key` if no collect has made it unusable, marked as used; expiry is the
    /// caller's to check.
    pub(super) fn peek_current(&self, key: &[u8]) -> Option<CacheEntry> {
        let slot = self.entries.peek(key).filter(|slot| slot.current())?;
        slot.mark();
        Some(slot.entry.clone())
    }

    /// The entry at `key` if it is usable (not expired at `now`, not collected), marked as
    /// used; `Err(())` when an entry is held that is not usable.
    pub(super) fn peek_usable(
        &self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Option<CacheEntry>, ()> {
        match self.entries.peek(key) {
            Some(slot) if slot.current() && !slot.entry.is_expired(now) => {
                slot.mark();
                Ok(Some(slot.entry.clone()))
            }
            Some(_) => Err(()),
            None => Ok(None),
        }
    }

    /// Drops the entry at `key` unless it is usable; returns it when it is (a store since
    /// the caller looked may have replaced it).
    pub(super) fn drop_unusable(&mut self, key: &[u8], now: SystemTime) -> Option<CacheEntry> {
        if let Ok(found) = self.peek_usable(key, now) {
            return found;
        }
        if let Some((key, slot)) = self.entries.pop_entry(key) {
            self.unindex(&key, &slot);
        }
        None
    }

    /// Makes every entry `target` matches unusable: one generation moves on. Returns how many
    /// entries that concerned (usable or not yet reclaimed).
    pub(super) fn collect(&mut self, target: &CollectTarget) -> usize {
        let Some(group) = self.groups.get_mut(target.resource()) else {
            return 0;
        };
        if group.live <= EAGER_COLLECT {
            // A small group (nearly every resource) is dropped at once, in bounded steps, so
            // its memory is back now; the generation moves on as well.
            let doomed: Vec<(CacheKey, u64)> = group
                .order
                .iter()
                .filter(|(key, _)| target.query().is_none_or(|q| q == key.query()))
                .cloned()
                .collect();
            let mut dropped = 0;
            for (key, stamp) in doomed {
                if self.entries.peek(&key).is_some_and(|s| s.stamp == stamp) {
                    self.remove(&key);
                    dropped += 1;
                }
            }
            if let Some(group) = self.groups.get_mut(target.resource()) {
                match target.query() {
                    None => group.cell.fetch_add(1, Ordering::AcqRel),
                    Some(q) => group
                        .queries
                        .get(q)
                        .map_or(0, |q| q.cell.fetch_add(1, Ordering::AcqRel)),
                };
            }
            return dropped;
        }
        match target.query() {
            None => {
                group.cell.fetch_add(1, Ordering::AcqRel);
                group.live
            }
            Some(query) => match group.queries.get(query) {
                Some(q) => {
                    q.cell.fetch_add(1, Ordering::AcqRel);
                    q.live
                }
                None => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cells_hold_one_inline_and_more_in_a_table() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a=1"), Arc::from("b=2"));
        let mut cells = QueryCells::default();
        assert!(cells.get("a=1").is_none());
        cells.entry(&a).live = 1;
        assert!(matches!(cells, QueryCells::One(..)));
        cells.entry(&a).live += 1;
        assert_eq!(cells.get("a=1").map(|q| q.live), Some(2));
        cells.entry(&b).live = 5;
        assert!(matches!(cells, QueryCells::Many(..)));
        assert_eq!(cells.get("a=1").map(|q| q.live), Some(2));
        assert_eq!(cells.get_mut("b=2").map(|q| q.live), Some(5));
        cells.remove("a=1");
        assert!(cells.get("a=1").is_none());
        assert_eq!(cells.get("b=2").map(|q| q.live), Some(5));
        let mut one = QueryCells::default();
        one.entry(&a);
        one.remove("b=2");
        assert!(one.get("a=1").is_some());
        one.remove("a=1");
        assert!(matches!(one, QueryCells::None));
    }
}
