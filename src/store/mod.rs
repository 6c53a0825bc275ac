//! Where breaker state lives: one trait, [`BreakerStore`], with two
//! implementations: [`EmbeddedStore`] (one replica, a local file) and
//! [`RedisStore`] (shared by every replica; standalone or Cluster).
//!
//! The stores are dumb. They persist a versioned record whose body is JSON
//! text written by `breaker`, swap it atomically when the caller's expected
//! version matches, publish every applied change and keep an audit trail per
//! number. They never look inside the body: the one bit of breaker meaning
//! they carry is `active`, which says whether the gateway's snapshot must
//! hold the record and whether it may expire.
//!
//! The gateway never calls a store on its hot path. It keeps a snapshot of
//! the active records, fed by [`BreakerStore::subscribe`], a periodic
//! [`BreakerStore::list_active_versions`] (reading only what changed) and a reload on every
//! [`StoreEvent::Resync`]. To start without missing a change, subscribe
//! first, then list.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub mod embedded;
pub mod redis;

pub use self::embedded::{EmbeddedOptions, EmbeddedStore};
pub use self::redis::{RedisOptions, RedisStore, SentinelAuth};

/// How many change events a slow subscriber may fall behind before it sees
/// `RecvError::Lagged`, which it must treat like [`StoreEvent::Resync`].
/// Room for a burst of a few thousand transitions (a WABA-wide event) while
/// the engine is busy, without holding much: a slot keeps its record until
/// it is overwritten.
pub const EVENT_CAPACITY: usize = 4096;

/// One stored breaker record: an opaque JSON body under a version number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Storage id, unique within its number, for example `200000000000001`
    /// or `200000000000001:pair:ab12…`.
    pub id: String,
    /// The `phone_number_id` the record belongs to. Redis keys are
    /// hash-tagged with it, so a number's keys share one Cluster slot.
    pub number: String,
    /// Bumped by every applied write; never reused while the record is kept.
    pub version: u64,
    /// False once the breaker is closed. Closed records are kept for a
    /// retention time so versions stay monotonic, then they expire.
    pub active: bool,
    /// The breaker's own JSON, stored and returned byte for byte.
    pub body: String,
}

/// Where an active record is and which version it has: what a resync
/// compares with the snapshot before it reads any record's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    /// Storage id, as in [`StoredRecord::id`].
    pub id: String,
    /// The record's `phone_number_id`.
    pub number: String,
    /// The stored version.
    pub version: u64,
}

/// A business number's place in Meta's account structure, as webhooks and
/// `[[wabas]]` tell it: the WABA it belongs to and its display number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberLink {
    /// The `phone_number_id`.
    pub number: String,
    /// The WhatsApp Business Account id.
    pub waba: String,
    /// The display phone number (`metadata.display_phone_number`), when
    /// known: some webhooks name the number only this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl NumberLink {
    /// A link as the stores keep it (JSON), read back; `what` names where it
    /// was kept, for the error.
    pub(crate) fn parse(what: impl FnOnce() -> String, json: &str) -> Result<Self, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            what: what(),
            detail: e.to_string(),
        })
    }
}

/// `link` over what is `held`: a display number already known stays when
/// `link` has none.
pub(crate) fn merge(held: Option<&NumberLink>, mut link: NumberLink) -> NumberLink {
    if link.display.is_none() {
        link.display = held
            .filter(|held| held.waba == link.waba)
            .and_then(|held| held.display.clone());
    }
    link
}

/// A compare-and-set request: store `record` if the stored version equals
/// `expected_version`, and append `audit` to the number's audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The version the caller read; 0 means the record must be absent.
    pub expected_version: u64,
    /// The new record; its `version` must be greater than `expected_version`.
    pub record: StoredRecord,
    /// One JSON line describing the transition, kept in the audit trail.
    pub audit: String,
}

impl Write {
    /// Rejects writes that would break the stores' invariants: versions go
    /// up, and the number can serve as a Redis hash tag.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let invalid = |reason: String| Err(StoreError::InvalidWrite(reason));
        let record = &self.record;
        if record.id.is_empty() {
            return invalid("record id is empty".to_owned());
        }
        if let Err(reason) = check_number(&record.number) {
            return invalid(reason);
        }
        if record.version <= self.expected_version {
            return invalid(format!(
                "new version {} is not greater than expected version {}",
                record.version, self.expected_version
            ));
        }
        Ok(())
    }
}

/// A number must be non-empty and free of braces: it becomes the Redis hash
/// tag `{number}`, and a brace inside would move the tag.
pub(crate) fn check_number(number: &str) -> Result<(), String> {
    if number.is_empty() {
        return Err("number is empty".to_owned());
    }
    if number.contains(['{', '}']) {
        return Err(format!("number {number:?} contains a brace"));
    }
    Ok(())
}

/// The result of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The record was stored, the audit line appended and the change published.
    Applied,
    /// The stored version differed; nothing was written.
    Conflict {
        /// What is stored now (`None`: absent), so the caller can re-run its
        /// transition on it without another read.
        current: Option<StoredRecord>,
    },
}

/// A change seen by a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// A record was written, by this replica or any other.
    Changed(StoredRecord),
    /// The link to the store was lost and is back: changes may have been
    /// missed, so reload everything with [`BreakerStore::list_active`].
    Resync,
}

/// Errors at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (connection refused, dropped, timed out).
    /// The caller keeps serving from its snapshot (fail-static).
    #[error("breaker store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("corrupt breaker store data in {what}: {detail}")]
    Corrupt {
        /// The file or key holding the data.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The embedded store's file could not be read or written.
    #[error("breaker store file {path}: {source}")]
    Io {
        /// The file (or temporary file) involved.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The write breaks an invariant (empty id, version not increasing, …).
    #[error("invalid breaker store write: {0}")]
    InvalidWrite(String),
    /// The store's configuration is unusable (bad URL, bad key prefix).
    #[error("invalid breaker store configuration: {0}")]
    Config(String),
    /// Redis answered with an error that is not an outage, such as a script
    /// error.
    #[error("redis command failed: {0}")]
    Redis(#[source] ::redis::RedisError),
}

/// Persistent, shared breaker state. Object-safe, so the gateway holds an
/// `Arc<dyn BreakerStore>`; calls are off the hot path, hence boxed futures.
pub trait BreakerStore: Send + Sync + 'static {
    /// `"embedded"` or `"redis"`, for logs and metrics labels.
    fn kind(&self) -> &'static str;

    /// The record `id` of `number`, if stored (closed records included until
    /// they expire).
    fn get<'a>(
        &'a self,
        number: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>>;

    /// Atomically checks the stored version and applies `write`: stores the
    /// record, appends the audit line and publishes [`StoreEvent::Changed`].
    fn compare_and_set(&self, write: Write) -> BoxFuture<'_, Result<CasOutcome, StoreError>>;

    /// Every active record, in no particular order.
    fn list_active(&self) -> BoxFuture<'_, Result<Vec<StoredRecord>, StoreError>>;

    /// The id, number and version of every active record, without bodies:
    /// a resync reads this, and then only the records whose version differs
    /// from what it holds, so a quiet resync of many breakers parses
    /// nothing and holds no copy of them.
    fn list_active_versions(&self) -> BoxFuture<'_, Result<Vec<ListedVersion>, StoreError>>;

    /// Stores `link` (number → WABA, display number), keeping a display
    /// number already known when `link` has none. Returns whether what is
    /// stored changed.
    fn link(&self, link: NumberLink) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// What is known of `number`'s WABA.
    fn link_of<'a>(
        &'a self,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Option<NumberLink>, StoreError>>;

    /// Every link; [`numbers_of`](Self::numbers_of) filters it by WABA.
    fn links(&self) -> BoxFuture<'_, Result<Vec<NumberLink>, StoreError>>;

    /// The numbers known to belong to `waba`.
    fn numbers_of<'a>(
        &'a self,
        waba: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NumberLink>, StoreError>> {
        async move {
            let mut links = self.links().await?;
            links.retain(|link| link.waba == waba);
            Ok(links)
        }
        .boxed()
    }

    /// Stores the WABA's own record (opaque JSON written by the engine, as
    /// a breaker's body is) if the record is still `expected` (`None`: there
    /// was none), so concurrent changes of one WABA on several replicas do
    /// not overwrite each other. Returns whether it was stored; `false`
    /// means the record changed since it was read.
    fn replace_waba<'a>(
        &'a self,
        waba: &'a str,
        expected: Option<&'a str>,
        body: String,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The WABA's record, if any.
    fn waba<'a>(&'a self, waba: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Every WABA record as (WABA, record), in no set order, in one read: a
    /// WABA can have one (an account event, an operator's hold) before any
    /// number of it is known.
    fn waba_records(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>>;

    /// Takes the lease `name` of `number` for `holder` for `ttl`, or renews
    /// it when `holder` has it: exactly one holder at a time across every
    /// replica, and a holder that stops renewing loses it once `ttl` has
    /// passed. Returns whether `holder` holds it now.
    fn take_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives the lease up if `holder` has it; returns whether it did.
    fn release_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Admits one event of `number`'s rate `name` at `per_second` (at
    /// least 1), shared by every replica: one event per 1/`per_second`,
    /// no burst. `None` when admitted, else how long until the next event
    /// would be. A closed number never gets here: only ramping numbers are
    /// rate-limited.
    fn admit<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        per_second: u32,
    ) -> BoxFuture<'a, Result<Option<std::time::Duration>, StoreError>>;

    /// Up to `limit` audit lines of `number`, newest first.
    fn audit<'a>(
        &'a self,
        number: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Up to `limit` audit lines of every number, newest first.
    fn recent_audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// A receiver of every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// Whether the store answered its last command and, for Redis, its change
    /// subscription is connected. Feeds `/readyz`.
    fn is_healthy(&self) -> bool;
}

/// Opens the store `config` asks for: Redis when `redis_url` is set (several
/// comma-separated URLs mean a Cluster), else the embedded file.
pub async fn open(config: &crate::config::Store) -> Result<Arc<dyn BreakerStore>, StoreError> {
    if config.redis_url.is_empty() {
        return Ok(Arc::new(EmbeddedStore::open(&config.path)?));
    }
    let urls: Vec<String> = config
        .redis_url
        .urls()
        .into_iter()
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    let sentinel_auth = (!config.sentinel_username.is_empty()
        || !config.sentinel_password.is_empty())
    .then(|| SentinelAuth {
        username: config.sentinel_username.clone(),
        password: config.sentinel_password.clone(),
    });
    let options = RedisOptions {
        tls: tls_certificates(config)?,
        sentinel_auth,
        ..RedisOptions::default()
    };
    Ok(Arc::new(RedisStore::connect(&urls, options).await?))
}

/// The certificates `store.tls_*_file` name, read now so a missing file
/// stops start-up naming the key.
fn tls_certificates(
    config: &crate::config::Store,
) -> Result<Option<::redis::TlsCertificates>, StoreError> {
    let read = |key: &str, path: &std::path::Path| -> Result<Option<Vec<u8>>, StoreError> {
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        std::fs::read(path)
            .map(Some)
            .map_err(|e| StoreError::Config(format!("{key} {}: {e}", path.display())))
    };
    let root_cert = read("store.tls_ca_file", &config.tls_ca_file)?;
    let cert = read("store.tls_cert_file", &config.tls_cert_file)?;
    let key = read("store.tls_key_file", &config.tls_key_file)?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(::redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(::redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The shape of `redis+sentinel://` URLs, for config validation.
pub(crate) use self::redis::sentinel::{
    check as check_sentinel_url, is_sentinel as is_sentinel_url,
};

#[cfg(test)]
mod tests;
