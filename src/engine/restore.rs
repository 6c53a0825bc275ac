//! Writing back what the store lost: a Redis restarted without persistence
//! (or flushed) comes back empty, while the replicas still hold the open
//! breakers in their snapshots.
//!
//! A resync replaces the snapshot with the store's listing. Taken alone, an
//! empty store would make every replica forget every open breaker, and a
//! locked number's next send would reach Meta again: the opposite of
//! fail-static. So before replacing, records the store has no trace of are
//! written back.

use std::collections::HashSet;

use tracing::warn;

use super::codec::{parse, stored};
use super::{Inner, now};
use crate::breaker::{Breaker, State, TransitionRecord};
use crate::store::{CasOutcome, ListedVersion, StoreError, StoredRecord, Write};

/// The records this replica holds that are neither in the store's listing
/// nor `pending`: the candidates for [`restore_lost`]. O(records) and
/// synchronous, so the engine runs it on the blocking pool; only the
/// candidates are copied, and there are usually none.
pub(super) fn unlisted(engine: &Inner, listed: &[Breaker], pending: &[Breaker]) -> Vec<Breaker> {
    let known: HashSet<String> = listed
        .iter()
        .chain(pending)
        .map(|b| b.key.storage_id())
        .collect();
    engine.snapshot.missing_from(|id| known.contains(id))
}

/// [`unlisted`] for a resync by versions: what the snapshot holds that is
/// neither `listed` by the store, nor `fetched`, nor `pending`.
pub(super) fn unlisted_by_version(
    engine: &Inner,
    listed: &[ListedVersion],
    fetched: &[Breaker],
    pending: &[Breaker],
) -> Vec<Breaker> {
    let ids: HashSet<String> = fetched
        .iter()
        .chain(pending)
        .map(|b| b.key.storage_id())
        .collect();
    let listed: HashSet<&str> = listed.iter().map(|entry| entry.id.as_str()).collect();
    engine
        .snapshot
        .missing_from(|id| listed.contains(id) || ids.contains(id))
}

/// Writes back the `unlisted` active records this replica holds that the
/// store has no record of at all, and returns what the snapshot should keep
/// of them.
///
/// A Redis restarted without persistence (or flushed) comes back empty.
/// Replacing the snapshot with its listing would forget every open breaker,
/// and a locked number's next send would reach Meta. A record the store has
/// closed or changed (closed records are kept for a retention time) is the
/// store's word and wins; pending records are written by their own jobs.
pub(super) async fn restore_lost(engine: &Inner, unlisted: Vec<Breaker>) -> Vec<Breaker> {
    let mut kept = Vec::new();
    for held in unlisted {
        let id = held.key.storage_id();
        let current = match engine.store.get(held.key.number(), &id).await {
            Ok(None) => write_back(engine, &held).await,
            Ok(Some(current)) => Ok(Some(current)),
            Err(error) => {
                engine.metrics.store_error("get");
                Err(error)
            }
        };
        match current {
            Ok(current) => {
                if let Some(Ok(breaker)) = current.as_ref().map(parse)
                    && breaker.state != State::Closed
                {
                    kept.push(breaker);
                }
            }
            // Fail-static: keep what this replica knows.
            Err(_) => kept.push(held),
        }
    }
    kept
}

/// Stores `held` where the store has nothing, and returns what the store
/// holds afterwards: `held`, or what another replica wrote back first.
async fn write_back(engine: &Inner, held: &Breaker) -> Result<Option<StoredRecord>, StoreError> {
    let record = stored(held);
    let write = Write {
        expected_version: 0,
        record: record.clone(),
        audit: serde_json::to_string(&restored_line(held)).unwrap_or_default(),
    };
    match engine.store.compare_and_set(write).await {
        Ok(CasOutcome::Applied) => {
            warn!(
                key = %held.key,
                state = held.state.as_str(),
                "breaker record missing from the store: written back"
            );
            Ok(Some(record))
        }
        Ok(CasOutcome::Conflict { current }) => Ok(current),
        Err(error) => {
            engine.metrics.store_error("compare_and_set");
            Err(error)
        }
    }
}

/// The audit line of a record written back: no transition, the same state.
fn restored_line(held: &Breaker) -> TransitionRecord {
    TransitionRecord {
        key: held.key.clone(),
        from: held.state,
        to: held.state,
        code: held.cause.code,
        source: held.cause.source,
        fbtrace_id: held.cause.fbtrace_id.clone(),
        wamid: held.cause.wamid.clone(),
        at: now(),
        trips: held.trips,
        reason: "written back: the store had lost this record".to_owned(),
        by: None,
    }
}
