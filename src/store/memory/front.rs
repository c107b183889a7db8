//! Each thread's own copies of the entries it hits most, so that hits on one hot entry from
//! several workers share no lock and no reference count.
//!
//! A hit on the shared store clones the entry (a reference count), and the response built from
//! it clones its body and header values (more reference counts): on one hot entry, every worker
//! writes the same few cache lines on every hit, and the cores take turns. An entry this thread
//! hits often is copied, once per thread, into a small direct-mapped table of that thread;
//! later hits are answered from the copy. "Often" is counted per thread in a small table of
//! counters that halves every `AGE_EVERY` lookups: a key needs `ADMIT_AT` hits within about
//! that many lookups, and more than the key it would displace, so that a working set wider than
//! the table (every key hit now and then) is not copied over and over.
//!
//! A copy is used only while its shard has not been written since it was checked: every
//! exclusive acquisition of a shard's lock moves the shard's epoch on (a store, removal,
//! collect or eviction), and the epoch is read under the shared lock when a copy is made or
//! confirmed. After a write, the next hit looks in the shared store again; if it finds the same
//! entry, the copy is confirmed without copying.

use std::cell::RefCell;

use crate::{entry::EntryIdentity, CacheEntry};

/// Copies per thread (direct-mapped by a hash of the key).
const SLOTS: usize = 32;

/// Bodies larger than this are not copied: at most `SLOTS * MAX_BODY` (512 KiB) of copies per
/// thread, outside the store's byte budget.
pub(super) const MAX_BODY: usize = 16 * 1024;

struct Slot {
    /// The store the copy belongs to (`Shards::id`).
    store: u64,
    key: Box<[u8]>,
    /// The key's hash (for its hit counter).
    hash: u64,
    /// The shard's epoch when the copy was last known to match the store.
    epoch: u64,
    source: EntryIdentity,
    copy: CacheEntry,
}

/// Counters of recent hits per thread (by a hash of the key; collisions only overcount).
const COUNTERS: usize = 1024;

/// Hits a key needs (since the counters last halved, roughly) to be copied.
const ADMIT_AT: u8 = 8;

/// The counters halve after this many lookups that reached the shared store.
const AGE_EVERY: u32 = 2048;

struct Front {
    slots: [Option<Slot>; SLOTS],
    counts: [u8; COUNTERS],
    lookups: u32,
}

impl Front {
    /// Counts a hit of the key with `hash`; returns its count.
    fn count(&mut self, hash: u64) -> u8 {
        // COUNTERS is a power of two and the shift leaves the bits the slot index uses.
        let counter = &mut self.counts[((hash >> 8) as usize) & (COUNTERS - 1)];
        *counter = counter.saturating_add(1);
        *counter
    }

    fn count_of(&self, hash: u64) -> u8 {
        self.counts[((hash >> 8) as usize) & (COUNTERS - 1)]
    }

    fn age(&mut self) {
        self.lookups += 1;
        if self.lookups >= AGE_EVERY {
            self.lookups = 0;
            for counter in &mut self.counts {
                *counter /= 2;
            }
        }
    }
}

thread_local! {
    static FRONT: RefCell<Front> = const {
        RefCell::new(Front { slots: [const { None }; SLOTS], counts: [0; COUNTERS], lookups: 0 })
    };
}

fn index(hash: u64) -> usize {
    // SLOTS is a power of two: the mask keeps the index in range.
    (hash as usize) & (SLOTS - 1)
}

/// This thread's copy of `key` in `store`, if the shard is still at `epoch`.
pub(super) fn get(store: u64, key: &[u8], hash: u64, epoch: u64) -> Option<CacheEntry> {
    FRONT.with(|front| {
        let mut front = front.try_borrow_mut().ok()?;
        let slot = front.slots[index(hash)].as_ref()?;
        let copy = (slot.store == store && slot.epoch == epoch && *slot.key == *key)
            .then(|| slot.copy.clone())?;
        front.count(hash);
        Some(copy)
    })
}

/// What to answer with for `found`, just looked up in `store` under its shard's lock at
/// `epoch`: this thread's copy when it holds one of the same entry (confirmed at `epoch`), a new
/// copy when this thread hits the key often and the body is small, else `found` itself.
pub(super) fn offer(
    store: u64,
    key: &[u8],
    hash: u64,
    epoch: u64,
    found: CacheEntry,
) -> CacheEntry {
    FRONT.with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return found;
        };
        let front = &mut *front;
        front.age();
        let count = front.count(hash);
        let mut displaced = None;
        if let Some(held) = front.slots[index(hash)].as_mut() {
            if held.store == store && *held.key == *key && held.source.is(&found) {
                held.epoch = epoch;
                return held.copy.clone();
            }
            if held.store == store && *held.key != *key {
                displaced = Some(held.hash);
            }
        }
        // Another key of this store holds the slot: it stays unless this one is hit more.
        let displaced = displaced.map_or(0, |hash| front.count_of(hash));
        if count < ADMIT_AT
            || count <= displaced
            || found.response_body_len().is_none_or(|len| len > MAX_BODY)
        {
            return found;
        }
        let Some(copy) = found.unshared_copy() else {
            return found;
        };
        front.slots[index(hash)] = Some(Slot {
            store,
            key: key.into(),
            hash,
            epoch,
            source: found.identity(),
            copy: copy.clone(),
        });
        copy
    })
}
