//! The embedded store: one replica, state in memory, every applied write
//! persisted to one JSON file so a restart does not forget an open breaker.
//!
//! The file holds every record, active and recently closed (closed ones keep
//! their version so it stays monotonic; they are dropped after
//! [`EmbeddedOptions::closed_retention`]). It is replaced atomically: a
//! temporary file in the same directory, fsync, rename, fsync of the
//! directory. The audit trail lives in memory only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use super::{
    BreakerStore, CasOutcome, EVENT_CAPACITY, StoreError, StoreEvent, StoredRecord, Write,
};

mod file;

/// Tuning of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// How long a closed record is kept after it closed. Default 7 days: long
    /// enough that no replica still holds a copy with an older version.
    pub closed_retention: Duration,
    /// Audit lines kept per number, newest first. Default 100.
    pub audit_capacity: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            closed_retention: Duration::from_secs(7 * 24 * 3600),
            audit_capacity: 100,
        }
    }
}

/// A record and, once closed, when it closed (unix millis), which decides
/// when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) record: StoredRecord,
    pub(crate) closed_at_ms: Option<u64>,
}

impl Entry {
    fn expired(&self, now_ms: u64, retention: Duration) -> bool {
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        self.closed_at_ms
            .is_some_and(|closed| closed.saturating_add(retention_ms) <= now_ms)
    }
}

/// Records by (number, id); ordered so the file is stable and diffable.
pub(crate) type Records = BTreeMap<(String, String), Entry>;

#[derive(Default)]
struct State {
    /// Shared, so a write can copy, change and encode the set on the
    /// blocking pool while readers keep using the current one.
    records: Arc<Records>,
    audit: HashMap<String, VecDeque<String>>,
}

/// The single-replica store backed by a local file.
pub struct EmbeddedStore {
    path: PathBuf,
    options: EmbeddedOptions,
    /// A std mutex: every critical section is short and synchronous, and it
    /// is never held across an `.await`.
    state: Mutex<State>,
    /// Serializes writers, so the file and the map change in the same order;
    /// held across the file write, which readers never wait for.
    writer: tokio::sync::Mutex<()>,
    events: broadcast::Sender<StoreEvent>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `path` with default options. A missing file is an
    /// empty store; an unreadable or corrupt one is an error naming the path,
    /// because starting empty would forget open breakers.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_options(path, EmbeddedOptions::default())
    }

    /// Opens the store at `path` with explicit `options`.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let now = now_ms();
        let mut records = file::load(&path)?;
        records.retain(|_, entry| !entry.expired(now, options.closed_retention));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Self {
            path,
            options,
            state: Mutex::new(State {
                records: Arc::new(records),
                audit: HashMap::new(),
            }),
            writer: tokio::sync::Mutex::new(()),
            events,
            healthy: AtomicBool::new(true),
        })
    }

    /// The file this store persists to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No critical section can panic halfway through a change, so a
        // poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self, number: &str, id: &str, now: u64) -> Option<StoredRecord> {
        let state = self.lock();
        state
            .records
            .get(&(number.to_owned(), id.to_owned()))
            .filter(|entry| !entry.expired(now, self.options.closed_retention))
            .map(|entry| entry.record.clone())
    }

    async fn apply(&self, write: Write) -> Result<CasOutcome, StoreError> {
        write.validate()?;
        let _writer = self.writer.lock().await;
        let now = now_ms();
        let key = (write.record.number.clone(), write.record.id.clone());

        // Check the version against the live set, then build, encode and
        // write the next set on the blocking pool without touching the live
        // one: copying and encoding every record is O(n), and on a serving
        // thread it would hold up requests for as long (about 20 ms with
        // 5,000 records). If the file cannot be written, the write is not
        // applied.
        let base = {
            let state = self.lock();
            let current = state
                .records
                .get(&key)
                .filter(|e| !e.expired(now, self.options.closed_retention));
            if current.map_or(0, |e| e.record.version) != write.expected_version {
                return Ok(CasOutcome::Conflict {
                    current: current.map(|e| e.record.clone()),
                });
            }
            Arc::clone(&state.records)
        };
        let entry = Entry {
            record: write.record.clone(),
            closed_at_ms: (!write.record.active).then_some(now),
        };
        let path = self.path.clone();
        let retention = self.options.closed_retention;
        let built = tokio::task::spawn_blocking(move || {
            let mut next = Records::clone(&base);
            next.retain(|_, entry| !entry.expired(now, retention));
            next.insert(key, entry);
            let bytes = file::encode(&next).map_err(|e| StoreError::Io {
                path: path.clone(),
                source: e.into(),
            })?;
            file::replace(&path, &bytes)?;
            Ok((next, base))
        })
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            })
        });
        self.healthy.store(built.is_ok(), Ordering::Relaxed);
        let (next, base) = built?;

        let previous = {
            let mut state = self.lock();
            let previous = std::mem::replace(&mut state.records, Arc::new(next));
            let ring = state.audit.entry(write.record.number.clone()).or_default();
            ring.push_front(write.audit);
            ring.truncate(self.options.audit_capacity);
            previous
        };
        // Freeing the old set is O(n) too: the blocking pool does it.
        tokio::task::spawn_blocking(move || drop((previous, base)));
        // No receivers is fine: nobody is watching yet.
        let _ = self.events.send(StoreEvent::Changed(write.record));
        Ok(CasOutcome::Applied)
    }
}

impl BreakerStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn get<'a>(
        &'a self,
        number: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        let found = self.live(number, id, now_ms());
        async move { Ok(found) }.boxed()
    }

    fn compare_and_set(&self, write: Write) -> BoxFuture<'_, Result<CasOutcome, StoreError>> {
        self.apply(write).boxed()
    }

    fn list_active(&self) -> BoxFuture<'_, Result<Vec<StoredRecord>, StoreError>> {
        let active = self
            .lock()
            .records
            .values()
            .filter(|entry| entry.record.active)
            .map(|entry| entry.record.clone())
            .collect();
        async move { Ok(active) }.boxed()
    }

    fn audit<'a>(
        &'a self,
        number: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let lines = self
            .lock()
            .audit
            .get(number)
            .map(|ring| ring.iter().take(limit).cloned().collect())
            .unwrap_or_default();
        async move { Ok(lines) }.boxed()
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// False after the file could not be written, until a write succeeds.
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Wall-clock unix millis: closed records must expire on schedule across
/// restarts, which a monotonic `Instant` cannot express.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
