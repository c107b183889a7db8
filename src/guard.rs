//! The race guard: a `GET` that missed before a write of the same resource completed must not
//! store what its handler read before the write.
//!
//! Every `Cache` in the process shares one write log, because actix runs one middleware instance
//! per worker thread and a write on one worker must stop a store on another. A miss reads the
//! epoch before calling its handler; a write records a new epoch for its resource *before* it
//! collects; a miss re-checks *after* its store call and removes what it stored if a write of the
//! resource happened since. Either the write's collect or the miss's re-check then removes the
//! stale entry, whatever the interleaving.
//!
//! The log is a fixed table of write epochs indexed by resource fingerprint, updated with atomic
//! operations only, so that a write pays no lock. Two resources that share a slot only make a
//! miss of one skip its store after a write of the other: never a wrong answer.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock, Weak,
    },
};

use parking_lot::Mutex;

use crate::ResourceGroup;

/// Slots in the write table: 16 Ki epochs, 128 KiB of zeroed static memory.
const SLOTS: usize = 16 * 1024;

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The epoch of the last write of every resource whose fingerprint falls in the slot.
static LAST_WRITE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// The slot of `table` for a key hash or fingerprint: seeded hashes
/// ([`crate::key::seeded_hash`], [`ResourceGroup::fingerprint`]), so a client cannot aim its
/// requests at another key's slot.
fn slot(table: &'static [AtomicU64; SLOTS], key: u64) -> &'static AtomicU64 {
    &table[(key as usize) & (SLOTS - 1)]
}

/// The epoch a miss reads before it calls its handler.
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Records a completed write of the group with this fingerprint
/// ([`ResourceGroup::fingerprint`]). Call before collecting its entries.
pub(crate) fn record_write(key: u64) {
    let epoch = EPOCH.fetch_add(1, Ordering::SeqCst) + 1;
    slot(&LAST_WRITE, key).fetch_max(epoch, Ordering::SeqCst);
}

/// Whether `resource` may have been written since `epoch` through a store of type `St`.
pub(crate) fn written_since<St: 'static>(resource: &ResourceGroup, epoch: u64) -> bool {
    slot(&LAST_WRITE, of_store::<St>(resource.fingerprint())).load(Ordering::SeqCst) > epoch
}

/// A group fingerprint made particular to stores of type `St`: the guard and the write lock
/// keep apart what different stores hold (a write through one store collects only its
/// entries, so it has nothing to guard in another). Two stores of one type share slots,
/// which only ever makes a miss skip its store.
pub(crate) fn of_store<St: 'static>(fingerprint: u64) -> u64 {
    use std::hash::BuildHasher;
    let store_type = foldhash::fast::FixedState::with_seed(0x0073_746f_7265_7479)
        .hash_one(std::any::TypeId::of::<St>());
    fingerprint ^ store_type
}

/// A value unique enough across processes and restarts that two servers sharing a store do
/// not pick the same one by chance: variant generations and lock tokens.
pub(crate) fn unique_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Conditional writes of one resource run one at a time in this process, so that two writes
/// that carry the same (current) `If-Match` cannot both pass the check before either has
/// written: the second waits, then finds the first write's marker and gets its `412`.
///
/// Plain `PUT`/`PATCH`/`DELETE` take it too (so none slips in between a conditional write's
/// check and its handler); `POST` does not. A write's body is read in before it waits, and the
/// wait is bounded by its caller. Servers sharing a store are serialised through the store's
/// own lock ([`Coordinate::try_lock`](crate::Coordinate::try_lock)).
pub(crate) async fn lock_conditional_write(
    resource: u64,
) -> futures_util::lock::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<Mutex<Locks>> = OnceLock::new();
    keyed_lock(&LOCKS, resource).lock_owned().await
}

type AsyncLock = futures_util::lock::Mutex<()>;
type Locks = HashMap<u64, Weak<AsyncLock>>;

/// The async lock of `key` in `locks`, made when no one holds it. Locks nobody holds are
/// dropped, and their slots swept once the map grows past 1024 keys.
fn keyed_lock(locks: &OnceLock<Mutex<Locks>>, key: u64) -> Arc<AsyncLock> {
    let mut locks = locks.get_or_init(Default::default).lock();
    if locks.len() > 1024 {
        locks.retain(|_, weak| weak.strong_count() > 0);
    }
    let slot = locks.entry(key).or_default();
    match slot.upgrade() {
        Some(lock) => lock,
        None => {
            let lock = Arc::new(AsyncLock::new(()));
            *slot = Arc::downgrade(&lock);
            lock
        }
    }
}

/// One request's place in the coalescing of concurrent misses for one key.
pub(crate) enum Flight {
    /// This request goes to the handler; the others wait until this guard is dropped.
    Leader(#[allow(dead_code)] futures_util::lock::OwnedMutexGuard<()>),
    /// Another request is at the handler: wait for [`Flight::landed`], then look again.
    Follower(Arc<AsyncLock>),
}

impl Flight {
    /// Joins the flight of the key with this hash, process-wide (every worker thread): the
    /// first request in leads. A hash collision only makes a request wait for another's
    /// response before it looks its own key up again.
    pub(crate) fn join(key: u64) -> Self {
        static FLIGHTS: OnceLock<Mutex<Locks>> = OnceLock::new();
        let lock = keyed_lock(&FLIGHTS, key);
        match Arc::clone(&lock).try_lock_owned() {
            Some(guard) => Self::Leader(guard),
            None => Self::Follower(lock),
        }
    }

    /// Resolves when the leader is done (its guard dropped).
    pub(crate) async fn landed(lock: Arc<AsyncLock>) {
        drop(lock.lock_owned().await);
    }
}

/// Keys whose last response could not be stored, and until when (seconds since the epoch):
/// their misses are not coalesced, so that requests for a page that is never stored (private,
/// `Set-Cookie`) do not queue behind each other. A fixed table like the write log; a collision
/// only skips coalescing.
static UNCACHEABLE_UNTIL: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// How long a key stays marked uncacheable after a response that could not be stored.
const UNCACHEABLE_FOR: u64 = 60;

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Remembers that the last response for the key with this hash could not be stored.
pub(crate) fn mark_uncacheable(key: u64) {
    slot(&UNCACHEABLE_UNTIL, key).store(unix_secs() + UNCACHEABLE_FOR, Ordering::Relaxed);
}

/// Forgets [`mark_uncacheable`] once a response for the key was stored.
pub(crate) fn mark_cacheable(key: u64) {
    slot(&UNCACHEABLE_UNTIL, key).store(0, Ordering::Relaxed);
}

/// Whether a recent response for the key could not be stored.
pub(crate) fn is_uncacheable(key: u64) -> bool {
    slot(&UNCACHEABLE_UNTIL, key).load(Ordering::Relaxed) > unix_secs()
}

/// Primary keys whose last response to a `GET` without preconditions passed through unbuffered
/// (`no-store`, a stream, too large, an error status), and until when (seconds since the
/// epoch): their next such requests take the uncacheable pass (`middleware/pass.rs`). A fixed
/// table; a collision sends another key's miss through the pass once, which then forgets the
/// slot.
static PASSES_UNTIL: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// How long a key takes the pass after its last unbuffered response.
const PASSES_FOR: u64 = 60;

/// Remembers that the key with this hash answered with a response passed unbuffered. Writes
/// the shared slot only when it is not already marked for at least half of `PASSES_FOR`, so
/// that every worker's requests for one such page do not write one cache line each.
pub(crate) fn mark_passes(key: u64) {
    let slot = slot(&PASSES_UNTIL, key);
    let now = unix_secs();
    if slot.load(Ordering::Relaxed) < now + PASSES_FOR / 2 {
        slot.store(now + PASSES_FOR, Ordering::Relaxed);
    }
}

/// Forgets [`mark_passes`]: a response came that the full flow would buffer or store.
pub(crate) fn forget_passes(key: u64) {
    let slot = slot(&PASSES_UNTIL, key);
    if slot.load(Ordering::Relaxed) != 0 {
        slot.store(0, Ordering::Relaxed);
    }
}

/// Whether the key's recent responses passed unbuffered, at `now`.
pub(crate) fn passes(key: u64, now: std::time::SystemTime) -> bool {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    slot(&PASSES_UNTIL, key).load(Ordering::Relaxed) > now
}

/// Keys with a background refresh (stale-while-revalidate) claimed, and until when (seconds
/// since the epoch): one refresh per key at a time. A claim lapses by itself, so a refresh
/// whose client never finishes reading does not block the key for good.
static REFRESHING_UNTIL: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// How long a refresh claim holds at most.
const REFRESH_CLAIM: u64 = 60;

/// Claims the background refresh of the key with this hash; `false` when one is claimed.
pub(crate) fn claim_refresh(key: u64) -> bool {
    let slot = slot(&REFRESHING_UNTIL, key);
    let now = unix_secs();
    let current = slot.load(Ordering::Acquire);
    current <= now
        && slot
            .compare_exchange(
                current,
                now + REFRESH_CLAIM,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
}

/// Releases [`claim_refresh`] once the refresh is done.
pub(crate) fn release_refresh(key: u64) {
    slot(&REFRESHING_UNTIL, key).store(0, Ordering::Release);
}
