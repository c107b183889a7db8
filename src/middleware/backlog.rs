//! What the store could not take when a write asked: invalidations and lock releases, kept and
//! retried in the background until the store takes them.
//!
//! A collect that failed (store down, slow past its timeout, backing off) is not lost: it goes
//! into its worker's backlog, and until it has reached the store, **no worker of this process
//! uses the store for that resource**: reads are served uncached, nothing of it is stored, and
//! a conditional write of it gets `503` (its current validator cannot be known). The check is
//! one atomic load while the backlog is empty, and a slot of a fixed table of counts, indexed by
//! the group's seeded fingerprint, otherwise: a collision only serves another resource uncached
//! for as long.
//!
//! A write marker (the entity tags a write made stale) that the store did not take is kept the
//! same way, and holds its resource the same way: without it an outdated `If-Match` could pass.
//!
//! A lock of the store whose `try_lock` timed out may still have been taken; its token goes into
//! the backlog too and is released as soon as the store answers again, so a lock never outlives
//! the write that asked for it by more than the outage.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use super::Inner;
use crate::{
    store::{CollectTarget, CollectableStore, LockToken},
    CacheEntry, CacheKey, ResourceGroup,
};

/// Slots in the table of resources with a collect outstanding.
const SLOTS: usize = 4096;

/// Collects outstanding in the whole process.
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);

/// Collects outstanding per slot of group fingerprints.
static BY_SLOT: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// The slot of `group` in a store of type `St`: stores of other types (a failing custom store
/// beside a `MemoryStore`) do not hold up each other's resources.
fn slot<St: 'static>(group: &ResourceGroup) -> &'static AtomicU32 {
    let index = crate::guard::of_store::<St>(group.fingerprint()) as usize;
    &BY_SLOT[index & (SLOTS - 1)]
}

/// The first pause before a retry, doubled after each failed round up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Whether any collect is outstanding in the process (the hit path's one check).
pub(crate) fn any() -> bool {
    OUTSTANDING.load(Ordering::Acquire) > 0
}

/// Whether a collect of `group` (or of a group sharing its slot) has not reached a store of
/// type `St` yet: the store must not be used for it.
pub(crate) fn holds<St: 'static>(group: &ResourceGroup) -> bool {
    any() && slot::<St>(group).load(Ordering::Acquire) > 0
}

/// The slot function of a store type.
type SlotOf = fn(&ResourceGroup) -> &'static AtomicU32;

/// Marks `group` as held in a store of type `St`; returns the slot function that releases it.
fn hold<St: 'static>(group: &ResourceGroup) -> SlotOf {
    slot::<St>(group).fetch_add(1, Ordering::AcqRel);
    OUTSTANDING.fetch_add(1, Ordering::AcqRel);
    slot::<St>
}

/// One thing the store has yet to take.
enum Item {
    /// A collect, with the slot function of its store type (to release it when dropped).
    Collect(CollectTarget, SlotOf),
    /// A write marker (the entity tags a write made stale), which the store must hold before
    /// a conditional write of the resource can be judged again.
    Marker(CacheKey, CacheEntry, SlotOf),
    Unlock(Arc<ResourceGroup>, LockToken),
}

impl Drop for Item {
    /// A collect leaves the table when it reached the store, or when its worker ended (the
    /// server is stopping: nothing is left to retry it).
    fn drop(&mut self) {
        let (group, slot) = match self {
            Self::Collect(target, slot) => (target.resource(), slot),
            Self::Marker(key, _, slot) => (key.resource(), slot),
            Self::Unlock(..) => return,
        };
        slot(group).fetch_sub(1, Ordering::AcqRel);
        OUTSTANDING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A worker's backlog: retried by one background task on the worker, while it is not empty.
#[derive(Default)]
pub(crate) struct Backlog {
    items: RefCell<Vec<Item>>,
    retrying: Cell<bool>,
}

impl Backlog {
    /// Keeps a collect the store did not take; from now on the group is not served from the
    /// store by any worker until it is taken.
    pub(crate) fn collect_later<St: CollectableStore>(
        inner: &Rc<Inner<St>>,
        target: CollectTarget,
    ) {
        let release = hold::<St>(target.resource());
        Self::keep(inner, Item::Collect(target, release));
    }

    /// Keeps a write marker the store did not take; like a collect, it keeps the group away
    /// from the store until it is taken (without it, an outdated `If-Match` could pass).
    pub(crate) fn mark_later<St: CollectableStore>(
        inner: &Rc<Inner<St>>,
        key: CacheKey,
        marker: CacheEntry,
    ) {
        let release = hold::<St>(key.resource());
        Self::keep(inner, Item::Marker(key, marker, release));
    }

    /// Keeps the release of a lock whose `try_lock` or `unlock` did not get an answer.
    pub(crate) fn unlock_later<St: CollectableStore>(
        inner: &Rc<Inner<St>>,
        group: Arc<ResourceGroup>,
        token: LockToken,
    ) {
        Self::keep(inner, Item::Unlock(group, token));
    }

    /// Adds `item` to the worker's backlog and makes sure the retry task runs.
    fn keep<St: CollectableStore>(inner: &Rc<Inner<St>>, item: Item) {
        inner.backlog.items.borrow_mut().push(item);
        Self::retry(inner);
    }

    /// Starts the worker's retry task, unless it runs.
    fn retry<St: CollectableStore>(inner: &Rc<Inner<St>>) {
        if inner.backlog.retrying.replace(true) {
            return;
        }
        let inner = Rc::clone(inner);
        actix_web::rt::spawn(async move {
            let mut pause = FIRST_PAUSE;
            loop {
                actix_web::rt::time::sleep(pause).await;
                let items = std::mem::take(&mut *inner.backlog.items.borrow_mut());
                let mut failed = Vec::new();
                for item in items {
                    if !take(&inner, &item).await {
                        failed.push(item);
                    }
                }
                let mut items = inner.backlog.items.borrow_mut();
                let took_all = failed.is_empty();
                items.extend(failed);
                if items.is_empty() {
                    inner.backlog.retrying.set(false);
                    return;
                }
                pause = match took_all {
                    true => FIRST_PAUSE,
                    false => (pause * 2).min(MAX_PAUSE),
                };
            }
        });
    }
}

/// Offers one item to the store again; whether it took it.
async fn take<St: CollectableStore>(inner: &Inner<St>, item: &Item) -> bool {
    match item {
        Item::Collect(target, _) => {
            let taken = inner.quiet("collect", inner.store.collect(target)).await;
            if taken.is_ok() {
                log::info!(target: super::LOG, "outstanding collect of {target:?} reached the store");
            }
            taken.is_ok()
        }
        Item::Marker(key, marker, _) => inner
            .quiet("set", inner.store.set(key, marker.clone()))
            .await
            .is_ok(),
        Item::Unlock(group, token) => match inner.coordinator() {
            Some(c) => inner.quiet("unlock", c.unlock(group, *token)).await.is_ok(),
            None => true,
        },
    }
}
