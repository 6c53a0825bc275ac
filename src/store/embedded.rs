//! The embedded store: one replica, breaker state in a local
//! [redb](https://www.redb.org) database, so a transition costs the same with
//! 100,000 records as with 10, and a restart forgets nothing.
//!
//! Why redb: it is pure Rust (no C library to build), crash-safe by
//! copy-on-write B-trees with a checksummed commit, and a commit with
//! `Durability::Immediate` is on disk when it returns. Every record (active
//! and recently closed, which keep their version so it stays monotonic) is a
//! row; every number's audit trail is a run of rows, capped per number.
//!
//! All writes go through one thread ([`writer`]) that commits whatever
//! writes are queued in one transaction: the fsync is paid once per batch,
//! so a burst of trips (a WABA-wide event, a campaign against a locked
//! number) is applied at disk speed rather than one fsync per trip. Reads
//! are MVCC snapshots and never wait for a writer.
//!
//! A JSON file left by an earlier wagate (the whole record set in one
//! document) is migrated once, on first start; see [`migrate`].

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read as _};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use super::{
    BreakerStore, CasOutcome, EVENT_CAPACITY, ListedVersion, NumberLink, StoreError, StoreEvent,
    StoredRecord, Write, merge,
};

mod legacy;
mod writer;

/// A stored record's row: (version, active, closed at unix millis, body).
type Row = (u64, bool, Option<u64>, &'static str);

/// Records by (number, id).
const RECORDS: TableDefinition<'static, (&str, &str), Row> = TableDefinition::new("records");

/// Audit lines by (number, sequence); a number's newest line has the highest
/// sequence.
const AUDIT: TableDefinition<'static, (&str, u64), &str> = TableDefinition::new("audit");

/// Number → WABA links by number, as JSON ([`NumberLink`]).
const LINKS: TableDefinition<'static, &str, &str> = TableDefinition::new("links");

/// The engine's WABA records by WABA id (opaque JSON).
const WABAS: TableDefinition<'static, &str, &str> = TableDefinition::new("wabas");

/// The first bytes of every redb file; anything else at the store's path is
/// taken for the former JSON format.
const REDB_MAGIC: &[u8] = b"redb";

/// Tuning of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// How long a closed record is kept after it closed. Default 7 days: long
    /// enough that no replica still holds a copy with an older version.
    pub closed_retention: Duration,
    /// Audit lines kept per number, newest first. Default 100.
    pub audit_capacity: usize,
    /// Audit lines kept of all numbers together. Default 1000.
    pub all_audit_capacity: usize,
    /// The database's page cache. Default 8 MiB: reads past it come from the
    /// kernel's page cache, which does not count against the gateway's RSS.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            closed_retention: Duration::from_secs(7 * 24 * 3600),
            audit_capacity: 100,
            all_audit_capacity: 1000,
            cache_bytes: 8 << 20,
        }
    }
}

/// The key under which the audit table keeps every number's lines: no
/// phone number id is empty.
pub(crate) const ALL_NUMBERS: &str = "";

/// A record and, once closed, when it closed (unix millis), which decides
/// when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) record: StoredRecord,
    pub(crate) closed_at_ms: Option<u64>,
}

/// Records by (number, id), as the former JSON file held them.
pub(crate) type Records = std::collections::BTreeMap<(String, String), Entry>;

fn expired(closed_at_ms: Option<u64>, now_ms: u64, retention: Duration) -> bool {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    closed_at_ms.is_some_and(|closed| closed.saturating_add(retention_ms) <= now_ms)
}

/// A governor limiter of one rate, in process.
type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// The single-replica store backed by a local database file.
pub struct EmbeddedStore {
    path: PathBuf,
    /// Leases by (number, name): (holder, until). In memory: one process
    /// is the only replica, and a restart starts with none held.
    leases: std::sync::Mutex<HashMap<(String, String), (String, std::time::Instant)>>,
    /// Rates by (number, name), each a governor limiter at the rate it was
    /// last asked for.
    rates: std::sync::Mutex<HashMap<(String, String), (u32, Limiter)>>,
    options: EmbeddedOptions,
    db: Arc<Database>,
    writer: writer::Handle,
    events: broadcast::Sender<StoreEvent>,
    healthy: Arc<AtomicBool>,
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
    /// because starting empty would forget open breakers. A JSON file of the
    /// former format, at `path` or beside it with the extension `.json`, is
    /// migrated first.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_options(path, EmbeddedOptions::default())
    }

    /// Opens the store at `path` with explicit `options`.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        migrate(&path)?;
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        prune(&db, &path, now_ms(), options.closed_retention)?;
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = writer::spawn(writer::Shared {
            db: Arc::clone(&db),
            path: path.clone(),
            options: options.clone(),
            events: events.clone(),
            healthy: Arc::clone(&healthy),
        })
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            leases: std::sync::Mutex::default(),
            rates: std::sync::Mutex::default(),
            options,
            db,
            writer,
            events,
            healthy,
        })
    }

    /// The file this store persists to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a read on the blocking pool: a read may touch the disk, and a
    /// full listing is O(n).
    /// Up to `limit` lines of the trail kept under `number`, newest first.
    fn audit_lines(
        &self,
        number: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.read(move |db, path, _| {
            let table = read_table(db, path, AUDIT)?;
            let rows = table
                .range((number.as_str(), 0)..=(number.as_str(), u64::MAX))
                .map_err(|e| db_error(path, e))?;
            let mut lines = Vec::new();
            for row in rows.rev().take(limit) {
                let (_, line) = row.map_err(|e| db_error(path, e))?;
                lines.push(line.value().to_owned());
            }
            Ok(lines)
        })
    }

    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database, &Path, &EmbeddedOptions) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let options = self.options.clone();
        async move {
            let job = tokio::task::spawn_blocking(move || read(&db, &path, &options));
            job.await
                .unwrap_or_else(|join| Err(db_error(&self.path, join)))
        }
        .boxed()
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
        let (number, id) = (number.to_owned(), id.to_owned());
        self.read(move |db, path, options| {
            let table = read_table(db, path, RECORDS)?;
            let found = table
                .get((number.as_str(), id.as_str()))
                .map_err(|e| db_error(path, e))?;
            Ok(found.and_then(|row| {
                let entry = decode(&number, &id, row.value());
                (!expired(entry.closed_at_ms, now_ms(), options.closed_retention))
                    .then_some(entry.record)
            }))
        })
    }

    fn compare_and_set(&self, write: Write) -> BoxFuture<'_, Result<CasOutcome, StoreError>> {
        async move {
            write.validate()?;
            let (reply, outcome) = oneshot::channel();
            self.writer.submit(writer::Job { write, reply })?;
            outcome.await.unwrap_or_else(|_| {
                Err(db_error(
                    &self.path,
                    "the store's writer thread has stopped",
                ))
            })
        }
        .boxed()
    }

    fn list_active(&self) -> BoxFuture<'_, Result<Vec<StoredRecord>, StoreError>> {
        self.read(|db, path, _| {
            let table = read_table(db, path, RECORDS)?;
            let mut active = Vec::new();
            for row in table.iter().map_err(|e| db_error(path, e))? {
                let (key, value) = row.map_err(|e| db_error(path, e))?;
                let (number, id) = key.value();
                let value = value.value();
                if value.1 {
                    active.push(decode(number, id, value).record);
                }
            }
            Ok(active)
        })
    }

    fn list_active_versions(&self) -> BoxFuture<'_, Result<Vec<ListedVersion>, StoreError>> {
        self.read(|db, path, _| {
            let table = read_table(db, path, RECORDS)?;
            let mut active = Vec::new();
            for row in table.iter().map_err(|e| db_error(path, e))? {
                let (key, value) = row.map_err(|e| db_error(path, e))?;
                let (version, is_active, ..) = value.value();
                if is_active {
                    let (number, id) = key.value();
                    active.push(ListedVersion {
                        id: id.to_owned(),
                        number: number.to_owned(),
                        version,
                    });
                }
            }
            Ok(active)
        })
    }

    fn link(&self, link: NumberLink) -> BoxFuture<'_, Result<bool, StoreError>> {
        // A write transaction of its own: redb runs one at a time, so this
        // waits for the writer thread's commit in progress, if any.
        self.read(move |db, path, _| {
            let txn = db.begin_write().map_err(|e| db_error(path, e))?;
            let changed = {
                let mut links = txn.open_table(LINKS).map_err(|e| db_error(path, e))?;
                let held = links
                    .get(link.number.as_str())
                    .map_err(|e| db_error(path, e))?
                    .and_then(|v| serde_json::from_str::<NumberLink>(v.value()).ok());
                let merged = merge(held.as_ref(), link);
                if held.as_ref() == Some(&merged) {
                    false
                } else {
                    let body = serde_json::to_string(&merged).unwrap_or_default();
                    links
                        .insert(merged.number.as_str(), body.as_str())
                        .map_err(|e| db_error(path, e))?;
                    true
                }
            };
            txn.commit().map_err(|e| db_error(path, e))?;
            Ok(changed)
        })
    }

    fn link_of<'a>(
        &'a self,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Option<NumberLink>, StoreError>> {
        let number = number.to_owned();
        self.read(move |db, path, _| {
            let table = read_table(db, path, LINKS)?;
            let found = table.get(number.as_str()).map_err(|e| db_error(path, e))?;
            found
                .map(|v| NumberLink::parse(|| format!("{} (links)", path.display()), v.value()))
                .transpose()
        })
    }

    fn links(&self) -> BoxFuture<'_, Result<Vec<NumberLink>, StoreError>> {
        self.read(|db, path, _| {
            let table = read_table(db, path, LINKS)?;
            let mut links = Vec::new();
            for row in table.iter().map_err(|e| db_error(path, e))? {
                let (_, value) = row.map_err(|e| db_error(path, e))?;
                links.push(NumberLink::parse(
                    || format!("{} (links)", path.display()),
                    value.value(),
                )?);
            }
            Ok(links)
        })
    }

    fn replace_waba<'a>(
        &'a self,
        waba: &'a str,
        expected: Option<&'a str>,
        body: String,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let waba = waba.to_owned();
        let expected = expected.map(str::to_owned);
        // One write transaction: redb serializes them, so the check and the
        // write cannot interleave with another change.
        self.read(move |db, path, _| {
            let txn = db.begin_write().map_err(|e| db_error(path, e))?;
            let replaced = txn
                .open_table(WABAS)
                .and_then(|mut table| {
                    let held = table.get(waba.as_str())?.map(|v| v.value().to_owned());
                    if held != expected {
                        return Ok(false);
                    }
                    table.insert(waba.as_str(), body.as_str())?;
                    Ok(true)
                })
                .map_err(|e| db_error(path, e))?;
            txn.commit().map_err(|e| db_error(path, e))?;
            Ok(replaced)
        })
    }

    fn take_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = std::time::Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (number.to_owned(), name.to_owned());
        let free = leases
            .get(&key)
            .is_none_or(|(held_by, until)| held_by == holder || *until <= now);
        if free {
            leases.insert(key, (holder.to_owned(), now + ttl));
        }
        futures_util::future::ready(Ok(free)).boxed()
    }

    fn release_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (number.to_owned(), name.to_owned());
        let held = leases
            .get(&key)
            .is_some_and(|(held_by, _)| held_by == holder);
        if held {
            leases.remove(&key);
        }
        futures_util::future::ready(Ok(held)).boxed()
    }

    fn admit<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        per_second: u32,
    ) -> BoxFuture<'a, Result<Option<Duration>, StoreError>> {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let key = (number.to_owned(), name.to_owned());
        let entry = rates.entry(key).or_insert_with(|| {
            (
                rate.get(),
                RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)),
            )
        });
        // A new stage's rate starts a new schedule.
        if entry.0 != rate.get() {
            *entry = (
                rate.get(),
                RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)),
            );
        }
        let wait = entry
            .1
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()));
        futures_util::future::ready(Ok(wait)).boxed()
    }

    fn waba<'a>(&'a self, waba: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let waba = waba.to_owned();
        self.read(move |db, path, _| {
            let table = read_table(db, path, WABAS)?;
            let found = table.get(waba.as_str()).map_err(|e| db_error(path, e))?;
            Ok(found.map(|v| v.value().to_owned()))
        })
    }

    fn waba_records(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.read(|db, path, _| {
            let table = read_table(db, path, WABAS)?;
            let mut records = Vec::new();
            for row in table.iter().map_err(|e| db_error(path, e))? {
                let (key, value) = row.map_err(|e| db_error(path, e))?;
                records.push((key.value().to_owned(), value.value().to_owned()));
            }
            Ok(records)
        })
    }

    fn audit<'a>(
        &'a self,
        number: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        self.audit_lines(number.to_owned(), limit)
    }

    fn recent_audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.audit_lines(ALL_NUMBERS.to_owned(), limit)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// False after a commit failed, until one succeeds.
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// `definition`'s table in a read transaction of its own. Both tables exist
/// from the moment the store is open (`prune` creates them).
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    db: &Database,
    path: &Path,
    definition: TableDefinition<'static, K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, StoreError> {
    let txn = db.begin_read().map_err(|e| db_error(path, e))?;
    txn.open_table(definition).map_err(|e| db_error(path, e))
}

/// A stored row back as a record.
fn decode(number: &str, id: &str, value: (u64, bool, Option<u64>, &str)) -> Entry {
    let (version, active, closed_at_ms, body) = value;
    Entry {
        record: StoredRecord {
            id: id.to_owned(),
            number: number.to_owned(),
            version,
            active,
            body: body.to_owned(),
        },
        closed_at_ms,
    }
}

/// Creates the tables and drops closed records whose retention has passed.
/// O(n) once per start; from then on a read treats an expired record as
/// absent, so nothing depends on when it is physically removed.
fn prune(db: &Database, path: &Path, now: u64, retention: Duration) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(|e| db_error(path, e))?;
    {
        let mut records = txn.open_table(RECORDS).map_err(|e| db_error(path, e))?;
        records
            .retain(|_, (_, _, closed_at_ms, _)| !expired(closed_at_ms, now, retention))
            .map_err(|e| db_error(path, e))?;
        txn.open_table(AUDIT).map_err(|e| db_error(path, e))?;
        txn.open_table(LINKS).map_err(|e| db_error(path, e))?;
        txn.open_table(WABAS).map_err(|e| db_error(path, e))?;
    }
    txn.commit().map_err(|e| db_error(path, e))
}

/// What lies at the store's path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    Database,
    /// Not a database: the former JSON format, or something corrupt, which
    /// the JSON loader refuses with a message naming the file.
    Other,
}

fn sniff(path: &Path) -> Result<Found, StoreError> {
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    let read = fs::File::open(path)
        .and_then(|file| file.take(REDB_MAGIC.len() as u64).read_to_end(&mut head));
    match read {
        Ok(_) if head == REDB_MAGIC => Ok(Found::Database),
        // An empty file is what redb itself initializes as a new database.
        Ok(0) => Ok(Found::Nothing),
        Ok(_) => Ok(Found::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Moves records of the former JSON format into a database at `path`, once.
///
/// Two layouts are migrated: `path` itself holding JSON (the JSON is first
/// copied to `<path>.v1.json`, then replaced), and `path` absent with the
/// JSON beside it under the extension `.json` (which is left as it was).
/// The database is built under a temporary name and renamed into place, so
/// a crash at any point leaves either the JSON to migrate again or the
/// finished database, never half of one.
fn migrate(path: &Path) -> Result<(), StoreError> {
    let (source, backup) = match sniff(path)? {
        Found::Database => return Ok(()),
        Found::Other => (path.to_path_buf(), Some(suffixed(path, ".v1.json"))),
        Found::Nothing => {
            let beside = path.with_extension("json");
            if beside == path || sniff(&beside)? != Found::Other {
                return Ok(());
            }
            (beside, None)
        }
    };
    let records = legacy::load(&source)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    if let Some(backup) = &backup {
        fs::copy(&source, backup)
            .and_then(|_| fs::File::open(backup)?.sync_all())
            .map_err(io(backup))?;
    }
    let temp = suffixed(path, ".migrating");
    match fs::remove_file(&temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&temp)(e)),
        _ => {}
    }
    {
        let db = Database::create(&temp).map_err(|e| open_error(&temp, e))?;
        let txn = db.begin_write().map_err(|e| db_error(&temp, e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| db_error(&temp, e))?;
            for ((number, id), entry) in &records {
                let r = &entry.record;
                table
                    .insert(
                        (number.as_str(), id.as_str()),
                        (r.version, r.active, entry.closed_at_ms, r.body.as_str()),
                    )
                    .map_err(|e| db_error(&temp, e))?;
            }
        }
        txn.commit().map_err(|e| db_error(&temp, e))?;
    }
    fs::rename(&temp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    tracing::info!(
        from = %source.display(),
        to = %path.display(),
        records = records.len(),
        backup = backup.as_ref().map(|b| b.display().to_string()),
        "migrated the embedded store's JSON file into its database"
    );
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// An error opening the database: another process holding it is said so;
/// anything else means the file is not a database we can read.
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::ResourceBusy,
                "the database is open in another process",
            ),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != io::ErrorKind::InvalidData =>
        {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        other => StoreError::Corrupt {
            what: path.display().to_string(),
            detail: other.to_string(),
        },
    }
}

/// Any other database error, as an I/O error on the store's file.
pub(super) fn db_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    }
}

/// Wall-clock unix millis: closed records must expire on schedule across
/// restarts, which a monotonic `Instant` cannot express.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
