//! The replica's local copy of every breaker that is not closed.
//!
//! The gate reads it on every send, so a closed number costs one atomic load
//! when nothing is open anywhere, and one uncontended read lock plus a map
//! lookup otherwise; never a store command.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::breaker::{Breaker, BreakerKey, State};

/// Non-closed breakers by storage id, with a count of pair records per
/// number so a send only reads its body when the number has pair back-offs.
#[derive(Default)]
pub(crate) struct Snapshot {
    inner: RwLock<Records>,
    /// `inner.records.len()`, readable without the lock.
    len: AtomicUsize,
}

#[derive(Default)]
struct Records {
    records: HashMap<String, Breaker>,
    pairs: HashMap<String, usize>,
}

/// Whether [`Snapshot::offer`] changed the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The record was taken (or a closed record removed its entry).
    Taken,
    /// The snapshot already held the same or a newer version.
    Stale,
}

impl Snapshot {
    /// Whether any breaker is not closed.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// A copy of the record stored under `id`, if not closed.
    pub(crate) fn get(&self, id: &str) -> Option<Breaker> {
        self.read(|r| r.records.get(id).cloned())
    }

    /// Runs `f` on the record under `id` without copying it.
    pub(crate) fn with<T>(&self, id: &str, f: impl FnOnce(&Breaker) -> T) -> Option<T> {
        self.read(|r| r.records.get(id).map(f))
    }

    /// Whether `number` has any pair back-off records.
    pub(crate) fn has_pairs(&self, number: &str) -> bool {
        self.read(|r| r.pairs.contains_key(number))
    }

    /// Every record, for listings.
    pub(crate) fn all(&self) -> Vec<Breaker> {
        self.read(|r| r.records.values().cloned().collect())
    }

    /// Takes `record` when it is newer than what is held. A record from the
    /// store wins a tie (`authoritative`): the store's copy is the truth,
    /// while a local record of the same version is only this replica's
    /// optimistic guess.
    pub(crate) fn offer(&self, record: Breaker, authoritative: bool) -> Offer {
        let id = record.key.storage_id();
        let mut guard = self.write();
        let newer = match guard.records.get(&id) {
            None => true,
            Some(held) if authoritative => record.version >= held.version,
            Some(held) => record.version > held.version,
        };
        if !newer {
            return Offer::Stale;
        }
        if record.state == State::Closed {
            guard.remove(&id);
        } else {
            guard.insert(id, record);
        }
        self.len.store(guard.records.len(), Ordering::Release);
        Offer::Taken
    }

    /// Removes `key` if its held version is at most `version` (a tombstone
    /// written by the store for a closed breaker).
    pub(crate) fn close(&self, key: &BreakerKey, version: u64) {
        let id = key.storage_id();
        let mut guard = self.write();
        if guard.records.get(&id).is_some_and(|b| b.version <= version) {
            guard.remove(&id);
        }
        self.len.store(guard.records.len(), Ordering::Release);
    }

    /// Replaces everything with `records` (a full resync), keeping `keep`:
    /// local records not yet written to the store.
    pub(crate) fn replace(&self, records: Vec<Breaker>, keep: Vec<Breaker>) {
        let mut fresh = Records::default();
        for record in records.into_iter().chain(keep) {
            if record.state != State::Closed {
                let id = record.key.storage_id();
                let newer = fresh
                    .records
                    .get(&id)
                    .is_none_or(|b| record.version >= b.version);
                if newer {
                    fresh.insert(id, record);
                }
            }
        }
        let mut guard = self.write();
        *guard = fresh;
        self.len.store(guard.records.len(), Ordering::Release);
    }

    fn read<T>(&self, f: impl FnOnce(&Records) -> T) -> T {
        // A poisoned lock means a panic while writing a map insert; the map
        // itself is still consistent, so keep serving from it.
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Records {
    fn insert(&mut self, id: String, record: Breaker) {
        let pair_number = match &record.key {
            BreakerKey::Pair { number, .. } => Some(number.clone()),
            BreakerKey::Number(_) => None,
        };
        if self.records.insert(id, record).is_none()
            && let Some(number) = pair_number
        {
            *self.pairs.entry(number).or_default() += 1;
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(record) = self.records.remove(id)
            && let BreakerKey::Pair { number, .. } = &record.key
            && let Some(count) = self.pairs.get_mut(number)
        {
            *count -= 1;
            if *count == 0 {
                self.pairs.remove(number);
            }
        }
    }
}
