//! The embedded store's one writer: a thread that takes every queued
//! compare-and-set, applies them in order in one transaction, commits once,
//! then publishes the applied changes and answers each caller.
//!
//! One thread rather than a writer lock on the runtime because a commit
//! blocks on fsync; batching because an fsync costs the same for one record
//! as for a thousand, so a burst of transitions is not serialized behind one
//! fsync each. A caller is answered only after the commit returned, so an
//! acknowledged transition is on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use redb::{Database, ReadableTable};
use tokio::sync::{broadcast, oneshot};

use super::{AUDIT, EmbeddedOptions, RECORDS, db_error, decode, expired, now_ms};
use crate::store::{CasOutcome, StoreError, StoreEvent, Write};

/// Writes committed together at most; bounds how long the first of a burst
/// waits for the rest.
const MAX_BATCH: usize = 1024;

/// One compare-and-set and where its outcome goes.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<CasOutcome, StoreError>>,
}

/// What the writer thread works with.
pub(super) struct Shared {
    pub(super) db: Arc<Database>,
    pub(super) path: PathBuf,
    pub(super) options: EmbeddedOptions,
    pub(super) events: broadcast::Sender<StoreEvent>,
    pub(super) healthy: Arc<AtomicBool>,
}

/// The queue into the writer thread. Dropping it (with the store) ends the
/// thread once the queued writes are done.
pub(super) struct Handle {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Handle {
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.queue
            .as_ref()
            .and_then(|queue| queue.send(job).ok())
            .ok_or_else(|| db_error(&self.path, "the store's writer thread has stopped"))
    }
}

impl Drop for Handle {
    /// Waits for the queued writes and for the thread's hold on the
    /// database to end, so the file can be opened again at once (by a
    /// restart in the same process, or a test).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) fn spawn(shared: Shared) -> std::io::Result<Handle> {
    let (queue, jobs) = mpsc::channel();
    let path = shared.path.clone();
    let thread = std::thread::Builder::new()
        .name("wagate-store".to_owned())
        .spawn(move || run(&shared, &jobs))?;
    Ok(Handle {
        queue: Some(queue),
        thread: Some(thread),
        path,
    })
}

fn run(shared: &Shared, jobs: &mpsc::Receiver<Job>) {
    let mut batch = Vec::new();
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit(shared, &batch);
        shared.healthy.store(committed.is_ok(), Ordering::Relaxed);
        match committed {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    if outcome == CasOutcome::Applied {
                        // No receivers is fine: nobody is watching yet.
                        let _ = shared
                            .events
                            .send(StoreEvent::Changed(job.write.record.clone()));
                    }
                    // The caller may have given up waiting; the write stands.
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "breaker store commit failed");
                let message = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(db_error(&shared.path, &message)));
                }
            }
        }
    }
}

/// Applies `batch` in order in one transaction. Nothing is applied unless
/// the whole transaction commits.
fn commit(shared: &Shared, batch: &[Job]) -> Result<Vec<CasOutcome>, StoreError> {
    let path = &shared.path;
    let now = now_ms();
    let txn = shared.db.begin_write().map_err(|e| db_error(path, e))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut records = txn.open_table(RECORDS).map_err(|e| db_error(path, e))?;
        let mut audit = txn.open_table(AUDIT).map_err(|e| db_error(path, e))?;
        for job in batch {
            let write = &job.write;
            let record = &write.record;
            let key = (record.number.as_str(), record.id.as_str());
            let current = records
                .get(key)
                .map_err(|e| db_error(path, e))?
                .map(|row| decode(key.0, key.1, row.value()))
                .filter(|e| !expired(e.closed_at_ms, now, shared.options.closed_retention));
            if current.as_ref().map_or(0, |e| e.record.version) != write.expected_version {
                outcomes.push(CasOutcome::Conflict {
                    current: current.map(|e| e.record),
                });
                continue;
            }
            let closed_at_ms = (!record.active).then_some(now);
            records
                .insert(
                    key,
                    (
                        record.version,
                        record.active,
                        closed_at_ms,
                        record.body.as_str(),
                    ),
                )
                .map_err(|e| db_error(path, e))?;
            append_audit(
                &mut audit,
                key.0,
                &write.audit,
                shared.options.audit_capacity,
            )
            .map_err(|e| db_error(path, e))?;
            append_audit(
                &mut audit,
                super::ALL_NUMBERS,
                &write.audit,
                shared.options.all_audit_capacity,
            )
            .map_err(|e| db_error(path, e))?;
            outcomes.push(CasOutcome::Applied);
        }
    }
    txn.commit().map_err(|e| db_error(path, e))?;
    Ok(outcomes)
}

/// Appends `line` to `number`'s trail and drops what falls past `capacity`:
/// one insert and, once full, one removal, whatever the trail's length.
fn append_audit(
    audit: &mut redb::Table<'_, (&'static str, u64), &'static str>,
    number: &str,
    line: &str,
    capacity: usize,
) -> Result<(), redb::StorageError> {
    if capacity == 0 {
        return Ok(());
    }
    let next = match audit
        .range((number, 0)..=(number, u64::MAX))?
        .next_back()
        .transpose()?
    {
        Some((key, _)) => key.value().1 + 1,
        None => 0,
    };
    audit.insert((number, next), line)?;
    let capacity = u64::try_from(capacity).unwrap_or(u64::MAX);
    if let Some(cutoff) = (next + 1).checked_sub(capacity).filter(|&c| c > 0) {
        audit.retain_in((number, 0)..(number, cutoff), |_, _| false)?;
    }
    Ok(())
}
