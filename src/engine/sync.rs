//! The engine's background task: writes transitions to the store, follows
//! the store's change events, resyncs, moves timed breakers on, and retries
//! writes held back while the store was unreachable.
//!
//! One task per replica does all store writes, in order, so this replica
//! never races itself; races with other replicas are settled by the store's
//! check-and-set on the record version.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{MissedTickBehavior, interval};
use tracing::{debug, info, warn};

use super::codec::{parse, stored};
use super::{Inner, OperatorOutcome, Timing, now};
use crate::breaker::{Breaker, BreakerKey, Decision, Event, Release, State, UnixMillis, apply};
use crate::store::{CasOutcome, StoreError, StoreEvent, StoredRecord, Write};

/// Attempts at one write before giving up on a key that keeps changing.
const MAX_CONFLICTS: usize = 8;

/// One event to write through to the store.
pub(super) struct Job {
    pub(super) key: BreakerKey,
    pub(super) event: Event,
    pub(super) now: UnixMillis,
    /// The record the event was first applied to (the snapshot's).
    pub(super) base: Option<Breaker>,
    pub(super) reply: Option<oneshot::Sender<Result<OperatorOutcome, StoreError>>>,
}

/// Runs until the engine is dropped.
pub(super) async fn run(
    engine: Weak<Inner>,
    mut events: broadcast::Receiver<StoreEvent>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    timing: Timing,
) {
    let mut pending: Vec<Job> = Vec::new();
    let mut ticks = interval(timing.tick_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut resyncs = interval(timing.resync_interval);
    resyncs.set_missed_tick_behavior(MissedTickBehavior::Delay);
    resyncs.reset();
    loop {
        tokio::select! {
            job = queue.recv() => {
                let (Some(job), Some(engine)) = (job, engine.upgrade()) else { return };
                write(&engine, job, &mut pending).await;
            }
            event = events.recv() => {
                let Some(engine) = engine.upgrade() else { return };
                match event {
                    Ok(StoreEvent::Changed(record)) => take(&engine, &record),
                    Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        info!("breaker store reconnected or events lagged: resyncing");
                        flush(&engine, &mut pending).await;
                        if pending.is_empty() {
                            // A fresh receiver, taken before the listing is
                            // read: what is queued now is covered by the
                            // listing, and the lag count starts again. Kept,
                            // the old receiver would lag again during a
                            // resync of many records under a burst of
                            // writes, and resync after resync.
                            events = engine.store.subscribe();
                            resync(&engine, Vec::new()).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The store went away; keep writing and resyncing by
                        // timer with what we have.
                        events = broadcast::channel(1).1;
                    }
                }
            }
            _ = ticks.tick() => {
                let Some(engine) = engine.upgrade() else { return };
                if !pending.is_empty() {
                    flush(&engine, &mut pending).await;
                    if pending.is_empty() {
                        resync(&engine, Vec::new()).await;
                    }
                }
                tick(&engine, &mut pending).await;
            }
            _ = resyncs.tick() => {
                let Some(engine) = engine.upgrade() else { return };
                let keep = pending.iter().filter_map(|j| engine.snapshot.get(&j.key.storage_id())).collect();
                resync(&engine, keep).await;
            }
        }
    }
}

/// Writes one job through, re-running the machine on the store's record
/// after a conflict. Transitions are counted and logged here, once they are
/// in the store, so one lock seen by several replicas counts once.
async fn write(engine: &Inner, job: Job, pending: &mut Vec<Job>) {
    let Job {
        key,
        event,
        now,
        mut base,
        reply,
    } = job;
    for _ in 0..MAX_CONFLICTS {
        let decision = apply(
            base.as_ref(),
            &key,
            &event,
            now,
            &engine.rules,
            &engine.settings,
        );
        let Decision::Transition(transition) = decision else {
            // The store already has it (another replica, or a duplicate).
            if let Some(record) = base {
                adopt(engine, record);
            }
            answer(reply, Ok(OperatorOutcome::Unchanged));
            return;
        };
        let next = match (&transition.next, &base) {
            (Some(next), _) => next.clone(),
            (None, Some(base)) => tombstone(base, now),
            // Closing needs a record to close; the machine never does that.
            (None, None) => {
                answer(reply, Ok(OperatorOutcome::Unchanged));
                return;
            }
        };
        let write = Write {
            expected_version: base.as_ref().map_or(0, |b| b.version),
            record: stored(&next),
            audit: serde_json::to_string(&transition.record).unwrap_or_default(),
        };
        match engine.store.compare_and_set(write).await {
            Ok(CasOutcome::Applied) => {
                engine.degraded.store(false, Ordering::Release);
                adopt(engine, next);
                engine.metrics.transition(&transition.record);
                if let (State::Closed, Some(base)) = (transition.to, &base) {
                    let open = now.since(base.cause.at).as_secs_f64();
                    engine.metrics.closed_after(open);
                }
                info!(
                    number = key.number(),
                    key = %key,
                    from = transition.from.as_str(),
                    to = transition.to.as_str(),
                    cause = transition.record.code,
                    source = ?transition.record.source,
                    trips = transition.record.trips,
                    reason = %transition.record.reason,
                    "breaker transition"
                );
                answer(
                    reply,
                    Ok(OperatorOutcome::Changed(Box::new(transition.record))),
                );
                return;
            }
            Ok(CasOutcome::Conflict { current }) => {
                base = match current.as_ref().map(parse).transpose() {
                    Ok(record) => record,
                    Err(error) => {
                        engine.metrics.store_error("compare_and_set");
                        warn!(%error, key = %key, "unreadable breaker record in the store");
                        answer(reply, Err(error));
                        return;
                    }
                };
            }
            Err(StoreError::Unavailable(reason)) => {
                engine.metrics.store_error("compare_and_set");
                if !engine.degraded.swap(true, Ordering::AcqRel) {
                    warn!(%reason, "breaker store unavailable: serving from the snapshot, writes held back");
                }
                answer(reply, Ok(OperatorOutcome::Pending));
                // Keep the record the local apply was based on: the store
                // write is re-run against the store's record later.
                pending.push(Job {
                    key,
                    event,
                    now,
                    base,
                    reply: None,
                });
                return;
            }
            Err(error) => {
                engine.metrics.store_error("compare_and_set");
                warn!(%error, key = %key, "breaker store write failed");
                undo_local_apply(engine, &key).await;
                answer(reply, Err(error));
                return;
            }
        }
    }
    warn!(key = %key, "breaker record kept changing under concurrent writes; event dropped");
    undo_local_apply(engine, &key).await;
    answer(reply, Ok(OperatorOutcome::Unchanged));
}

/// After a write the store refused (not an outage, which holds the write
/// back) or one dropped after too many conflicts: the snapshot takes the
/// store's record again. The local apply must not stand: the caller is told
/// nothing changed, and a resync would otherwise write the record back
/// (`restore_lost`). Left as it is when the store cannot be read either.
async fn undo_local_apply(engine: &Inner, key: &BreakerKey) {
    match engine.store.get(key.number(), &key.storage_id()).await {
        Ok(current) => match current.as_ref().map(parse).transpose() {
            Ok(record) => engine.snapshot.reset_to(key, record),
            Err(error) => warn!(%error, key = %key, "unreadable breaker record in the store"),
        },
        Err(_) => engine.metrics.store_error("get"),
    }
}

/// Retries writes held back during an outage, oldest first, each against
/// what the store holds now.
async fn flush(engine: &Inner, pending: &mut Vec<Job>) {
    if pending.is_empty() {
        return;
    }
    let jobs = std::mem::take(pending);
    let total = jobs.len();
    let mut jobs = jobs.into_iter();
    while let Some(mut job) = jobs.next() {
        match engine
            .store
            .get(job.key.number(), &job.key.storage_id())
            .await
        {
            Ok(current) => {
                job.base = match current.as_ref().map(parse).transpose() {
                    Ok(record) => record,
                    Err(_) => job.base,
                };
                write(engine, job, pending).await;
                if !pending.is_empty() {
                    // The store went away again: keep the rest, in order.
                    pending.extend(jobs);
                    return;
                }
            }
            Err(_) => {
                engine.metrics.store_error("get");
                pending.push(job);
                pending.extend(jobs);
                return;
            }
        }
    }
    info!(
        writes = total,
        "breaker store back: held-back writes stored"
    );
}

/// Moves on breakers whose time has come: expired cool-downs close, ramp
/// stages advance. Every replica does this; the store's check-and-set makes
/// it one transition.
async fn tick(engine: &Inner, pending: &mut Vec<Job>) {
    if engine.snapshot.is_empty() {
        return;
    }
    let now = now();
    // Only timed breakers (cool-downs, back-offs) and ramps move with the
    // clock; held and health-gated ones are not even copied.
    let due: Vec<Breaker> = engine.snapshot.matching(|b| {
        let timed = matches!(b.release, Release::At(_)) || b.state == State::Ramping;
        timed
            && matches!(
                apply(
                    Some(b),
                    &b.key,
                    &Event::Tick,
                    now,
                    &engine.rules,
                    &engine.settings
                ),
                Decision::Transition(_)
            )
    });
    for breaker in due {
        let job = Job {
            key: breaker.key.clone(),
            event: Event::Tick,
            now,
            base: Some(breaker),
            reply: None,
        };
        write(engine, job, pending).await;
    }
}

/// Brings the snapshot in line with the store, plus `keep` (local records
/// not yet written).
///
/// The store lists every active record's version first; only the records
/// whose version differs from the snapshot's are read and parsed. A quiet
/// resync of 100,000 breakers therefore copies and parses none of them.
/// When most records differ (the first load, a long outage) one full
/// listing is cheaper than a read per record, and is used instead.
pub(super) async fn resync(engine: &Arc<Inner>, keep: Vec<Breaker>) {
    let listed = match engine.store.list_active_versions().await {
        Ok(listed) => listed,
        Err(error) => return unavailable(engine, "list_active", &error),
    };
    // The store answered: the outage is over even when nothing was written
    // since, and `/readyz` must say so.
    engine.degraded.store(false, Ordering::Release);
    let active = listed.len();
    // The comparison is O(records): on the blocking pool, so a resync of
    // many breakers does not hold up the requests this runtime serves.
    let inner = Arc::clone(engine);
    let compared = tokio::task::spawn_blocking(move || {
        let differing = inner.snapshot.differing(&listed);
        (listed, differing)
    })
    .await;
    let Ok((listed, differing)) = compared else {
        engine.metrics.store_error("list_active");
        warn!("comparing the breaker versions failed; snapshot left as it was");
        return;
    };
    if differing.len() > FULL_LISTING_AT.max(listed.len() / 2) {
        return resync_in_full(engine, keep).await;
    }
    let mut fetched = Vec::with_capacity(differing.len());
    let mut vanished = Vec::new();
    for i in differing {
        let entry = &listed[i];
        match engine.store.get(&entry.number, &entry.id).await {
            // Expired since the listing: dropped like an unlisted record.
            Ok(None) => vanished.push(i),
            Ok(Some(record)) => match parse(&record) {
                Ok(breaker) => fetched.push(breaker),
                Err(error) => warn!(%error, id = %record.id, "skipping unreadable breaker record"),
            },
            Err(error) => return unavailable(engine, "get", &error),
        }
    }
    let inner = Arc::clone(engine);
    let unlisted = tokio::task::spawn_blocking(move || {
        let unlisted = super::restore::unlisted_by_version(&inner, &listed, &fetched, &keep);
        (listed, fetched, keep, unlisted)
    })
    .await;
    let Ok((mut listed, mut fetched, keep, unlisted)) = unlisted else {
        engine.metrics.store_error("list_active");
        warn!("resyncing the snapshot failed; snapshot left as it was");
        return;
    };
    fetched.extend(super::restore::restore_lost(engine, unlisted).await);
    for i in vanished.into_iter().rev() {
        listed.swap_remove(i);
    }
    let inner = Arc::clone(engine);
    let reconciled =
        tokio::task::spawn_blocking(move || inner.snapshot.reconcile(&listed, fetched, keep)).await;
    if reconciled.is_err() {
        engine.metrics.store_error("list_active");
        warn!("resyncing the snapshot failed; snapshot left as it was");
        return;
    }
    engine.metrics.resync();
    debug!(active, "breaker snapshot resynced");
}

/// More differing records than this (and than half the listing) are read
/// with one full listing rather than one read each.
const FULL_LISTING_AT: usize = 256;

/// Notes a failed store read: degraded, fail-static.
fn unavailable(engine: &Inner, operation: &str, error: &StoreError) {
    engine.metrics.store_error(operation);
    if !engine.degraded.swap(true, Ordering::AcqRel) {
        warn!(%error, "breaker store unavailable: serving from the snapshot");
    }
}

/// A resync from the full listing: every active record read and parsed.
async fn resync_in_full(engine: &Arc<Inner>, keep: Vec<Breaker>) {
    match engine.store.list_active().await {
        Ok(records) => {
            let active = records.len();
            // Parsing every record, and finding what the snapshot holds
            // that the listing lacks, are O(records): on the blocking pool.
            let inner = Arc::clone(engine);
            let parsed = tokio::task::spawn_blocking(move || {
                let breakers = parse_all(&records);
                let unlisted = super::restore::unlisted(&inner, &breakers, &keep);
                (breakers, unlisted, keep)
            })
            .await;
            let (mut breakers, unlisted, keep) = match parsed {
                Ok(parsed) => parsed,
                Err(error) => {
                    engine.metrics.store_error("list_active");
                    warn!(%error, "parsing the breaker records failed; snapshot left as it was");
                    return;
                }
            };
            let lost = super::restore::restore_lost(engine, unlisted).await;
            breakers.extend(lost);
            // The diff with the snapshot is O(records) as well.
            let inner = Arc::clone(engine);
            let replaced =
                tokio::task::spawn_blocking(move || inner.snapshot.replace(breakers, keep)).await;
            if let Err(error) = replaced {
                engine.metrics.store_error("list_active");
                warn!(%error, "resyncing the snapshot failed; snapshot left as it was");
                return;
            }
            engine.metrics.resync();
            debug!(active, "breaker snapshot resynced in full");
        }
        Err(error) => unavailable(engine, "list_active", &error),
    }
}

/// The breakers in `records`, skipping (and logging) unreadable ones.
fn parse_all(records: &[StoredRecord]) -> Vec<Breaker> {
    let mut breakers = Vec::with_capacity(records.len());
    for record in records {
        match parse(record) {
            Ok(breaker) => breakers.push(breaker),
            Err(error) => warn!(%error, id = %record.id, "skipping unreadable breaker record"),
        }
    }
    breakers
}

/// Takes a change published by the store (from any replica).
fn take(engine: &Inner, record: &StoredRecord) {
    match parse(record) {
        Ok(breaker) => adopt(engine, breaker),
        Err(error) => warn!(%error, id = %record.id, "ignoring unreadable breaker change"),
    }
}

/// Puts a record the store holds into the snapshot.
fn adopt(engine: &Inner, record: Breaker) {
    if record.state == State::Closed {
        engine.snapshot.close(&record.key, record.version);
    } else {
        engine.snapshot.offer(record, true);
    }
}

fn answer(
    reply: Option<oneshot::Sender<Result<OperatorOutcome, StoreError>>>,
    outcome: Result<OperatorOutcome, StoreError>,
) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome);
    }
}

/// The record stored for a closed breaker: kept (and expired by the store)
/// so that versions keep rising across episodes and a stale write from a
/// replica that missed the closing cannot land.
fn tombstone(base: &Breaker, now: UnixMillis) -> Breaker {
    let mut record = base.clone();
    record.state = State::Closed;
    record.version = base.version + 1;
    record.since = now;
    record.ramp = None;
    record
}
