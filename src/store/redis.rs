//! The Redis store: the shared source of truth for every replica, on a
//! standalone server or a Cluster.
//!
//! Keys carry the number as a hash tag, so a Cluster keeps each number's keys
//! in one slot and the transition script may touch them together:
//!
//! - `{prefix}:{<number>}:rec:<id>`: a hash with `id`, `number`, `version`,
//!   `active` (`1`/`0`) and `body`; closed records expire after
//!   [`RedisOptions::closed_ttl`];
//! - `{prefix}:{<number>}:audit`: a stream of `line` entries, capped at about
//!   [`RedisOptions::audit_max_len`];
//! - `{prefix}:audit`: every number's audit lines in one stream, newest
//!   last, capped at about [`RedisOptions::audit_max_len`] times ten; written
//!   after the transition (a Cluster keeps it in another slot), so a line
//!   may be missing from it if Redis fails between the two;
//! - channel `{prefix}:changes`: every applied write, as the record's JSON.
//!
//! Every command is bounded by [`RedisOptions::command_timeout`], so callers
//! learn quickly that Redis is down and go fail-static.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use redis::{Client, RedisError, RetryMethod, Script};
use tokio::sync::broadcast;

use crate::config::Secret;

use super::{
    BreakerStore, CasOutcome, EVENT_CAPACITY, ListedVersion, NumberLink, StoreError, StoreEvent,
    StoredRecord, Write, merge,
};

mod conn;
mod reply;
pub(crate) mod sentinel;
mod subscriber;

use conn::{Conn, SentinelConn};
use reply::{parse_outcome, parse_record};
use subscriber::Nodes;
use subscriber::{Health, SubscriberGuard};

/// Tuning of the Redis store.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// First part of every key and of the change channel. Default `wagate`;
    /// lets several deployments (or tests) share one Redis.
    pub key_prefix: String,
    /// Treat a single URL as a Cluster seed. Several URLs always mean a
    /// Cluster. Default false.
    pub cluster: bool,
    /// How long a closed record is kept. Default 7 days: long enough that no
    /// replica still holds a copy with an older version.
    pub closed_ttl: Duration,
    /// Approximate cap on each number's audit stream. Default 1000.
    pub audit_max_len: usize,
    /// Upper bound on each command, connection attempt included. Default 1s:
    /// the caller must learn quickly that Redis is down.
    pub command_timeout: Duration,
    /// How often the change subscription and the command connection are
    /// pinged, so a silently dead link and `is_healthy` are noticed while
    /// idle. Default 2s.
    pub keepalive: Duration,
    /// The CA (and, for mutual TLS, the client certificate and key) for
    /// `rediss://` URLs; `None` trusts the system's roots.
    pub tls: Option<redis::TlsCertificates>,
    /// The user and password wagate asks `redis+sentinel://` Sentinels
    /// with; `None` asks them without credentials.
    pub sentinel_auth: Option<SentinelAuth>,
}

/// Credentials for the Sentinels themselves (not the master, whose are in
/// the URL).
#[derive(Clone, Debug, Default)]
pub struct SentinelAuth {
    /// Empty: the default user.
    pub username: String,
    /// Printed `<redacted>`.
    pub password: Secret,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: "wagate".to_owned(),
            cluster: false,
            closed_ttl: Duration::from_secs(7 * 24 * 3600),
            audit_max_len: 1000,
            command_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(2),
            tls: None,
            sentinel_auth: None,
        }
    }
}

impl RedisOptions {
    fn validate(&self) -> Result<(), StoreError> {
        let invalid = |reason: &str| Err(StoreError::Config(reason.to_owned()));
        // Braces would move the hash tag; glob characters would break SCAN.
        let bad = |c: char| "{}*?[]\\".contains(c) || c.is_whitespace();
        if self.key_prefix.is_empty() || self.key_prefix.contains(bad) {
            return invalid("key prefix must be non-empty, without braces, globs or spaces");
        }
        if self.closed_ttl < Duration::from_millis(1) {
            return invalid("closed record TTL must be at least 1ms");
        }
        if self.audit_max_len == 0 {
            return invalid("audit stream max length must be positive");
        }
        if self.command_timeout.is_zero() || self.keepalive.is_zero() {
            return invalid("command timeout and keepalive must be positive");
        }
        Ok(())
    }
}

/// Key names of one deployment.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn record(&self, number: &str, id: &str) -> String {
        format!("{}:{{{number}}}:rec:{id}", self.prefix)
    }

    fn audit(&self, number: &str) -> String {
        format!("{}:{{{number}}}:audit", self.prefix)
    }

    fn all_audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    fn records_pattern(&self) -> String {
        format!("{}:{{*}}:rec:*", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    fn rate(&self, number: &str, name: &str) -> String {
        format!("{}:{{{number}}}:rate:{name}", self.prefix)
    }

    fn lease(&self, number: &str, name: &str) -> String {
        format!("{}:{{{number}}}:lease:{name}", self.prefix)
    }

    /// One hash of every number → WABA link. One key (one Cluster slot):
    /// links are written once per number and read on account events.
    fn links(&self) -> String {
        format!("{}:links", self.prefix)
    }

    /// One hash of the engine's WABA records.
    fn wabas(&self) -> String {
        format!("{}:wabas", self.prefix)
    }
}

/// What the store and its subscription task share.
struct Shared {
    conn: Conn,
    options: RedisOptions,
    events: broadcast::Sender<StoreEvent>,
    health: Health,
}

impl Shared {
    /// Runs one Redis call under the command timeout, records the outcome in
    /// the health flag and sorts outages from other errors.
    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.options.command_timeout, call).await {
            Err(_) => Err(StoreError::Unavailable(
                "redis command timed out".to_owned(),
            )),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_outage(&e) => Err(StoreError::Unavailable(e.to_string())),
            // Redis answered, so the link is fine even though the call failed.
            Ok(Err(e)) => Err(StoreError::Redis(e)),
        };
        let down = matches!(result, Err(StoreError::Unavailable(_)));
        self.health.set_commands(!down);
        result
    }

    /// PINGs the command connection to refresh the health flag.
    async fn check_commands(&self) {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let _ = self.run(ping.query_async::<String>(&mut conn)).await;
    }
}

/// A client of `url`: with `tls`'s CA (and client certificate) when the URL
/// is `rediss://` and they are set.
fn open_client(url: &str, tls: Option<&redis::TlsCertificates>) -> Result<Client, RedisError> {
    match tls {
        Some(certs) if url.starts_with("rediss://") => Client::build_with_tls(url, certs.clone()),
        _ => Client::open(url),
    }
}

/// Whether Redis (or a Sentinel) refused the credentials, or asked for
/// some where none were given.
fn is_refusal(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// Errors that mean "Redis is not there" (as opposed to "Redis said no").
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || !matches!(e.retry_method(), RetryMethod::NoRetry)
}

/// The Redis-backed store. Dropping it stops its subscription task.
pub struct RedisStore {
    shared: Arc<Shared>,
    keys: Keys,
    script: Script,
    lease_script: Script,
    rate_script: Script,
    waba_script: Script,
    _subscriber: SubscriberGuard,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URLs: they may carry a password.
        f.debug_struct("RedisStore")
            .field("cluster", &self.shared.conn.is_cluster())
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis: one URL is a standalone server (reconnected
    /// automatically), several URLs or [`RedisOptions::cluster`] are Cluster
    /// seeds. Returns once the change subscription is live, so no change
    /// written after this returns is missed.
    pub async fn connect(urls: &[String], options: RedisOptions) -> Result<Self, StoreError> {
        options.validate()?;
        if urls.is_empty() {
            return Err(StoreError::Config("no redis URL".to_owned()));
        }
        let keys = Keys {
            prefix: options.key_prefix.clone(),
        };
        let timeout = options.command_timeout;
        let sentinel_client = if urls.iter().any(|url| sentinel::is_sentinel(url)) {
            Some(sentinel::client(
                urls,
                options.tls.as_ref(),
                options.sentinel_auth.as_ref(),
            )?)
        } else {
            None
        };
        let clients = if sentinel_client.is_some() {
            Vec::new()
        } else {
            urls.iter()
                .enumerate()
                .map(|(i, url)| {
                    // The URL itself may carry a password: name it by position.
                    open_client(url, options.tls.as_ref())
                        .map_err(|e| StoreError::Config(format!("redis URL #{}: {e}", i + 1)))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let through_sentinels = sentinel_client.is_some();
        let connecting = async {
            if let Some(client) = sentinel_client {
                let sentinel = SentinelConn::connect(client, timeout).await?;
                return Ok((Conn::Sentinel(sentinel.clone()), Nodes::Sentinel(sentinel)));
            }
            let conn = if urls.len() > 1 || options.cluster {
                Conn::cluster(urls, timeout, options.tls.as_ref()).await?
            } else {
                Conn::standalone(clients[0].clone(), timeout).await?
            };
            Ok::<_, RedisError>((conn, Nodes::Fixed(clients)))
        };
        let (conn, nodes) = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "redis connect timed out".to_owned(),
                ));
            }
            Ok(Err(e)) if is_refusal(&e) => {
                let which = if through_sentinels {
                    "the Sentinels' own user and password are store.sentinel_username and \
                     store.sentinel_password; the master's go in the URL"
                } else {
                    "the user and password go in the URL, redis://user:password@host:port/"
                };
                return Err(StoreError::Config(format!(
                    "redis refused wagate's credentials ({e}): {which}"
                )));
            }
            Ok(Err(e)) if is_outage(&e) => return Err(StoreError::Unavailable(e.to_string())),
            Ok(Err(e)) => return Err(StoreError::Redis(e)),
            Ok(Ok(found)) => found,
        };
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            conn,
            options,
            events,
            health: Health::default(),
        });
        let subscriber = subscriber::start(shared.clone(), nodes, keys.channel()).await?;
        Ok(Self {
            shared,
            keys,
            script: Script::new(include_str!("transition.lua")),
            lease_script: Script::new(include_str!("lease.lua")),
            rate_script: Script::new(include_str!("rate.lua")),
            waba_script: Script::new(include_str!("waba.lua")),
            _subscriber: subscriber,
        })
    }

    async fn fetch(&self, key: String) -> Result<Option<StoredRecord>, StoreError> {
        let mut conn = self.shared.conn.clone();
        let fields: HashMap<String, String> = self
            .shared
            .run(redis::cmd("HGETALL").arg(&key).query_async(&mut conn))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(&key, fields).map(Some)
    }

    async fn apply(&self, write: Write) -> Result<CasOutcome, StoreError> {
        write.validate()?;
        let Write {
            expected_version,
            record,
            audit,
        } = write;
        let audit = &audit;
        let event = serde_json::to_string(&record)
            .map_err(|e| StoreError::InvalidWrite(format!("record does not encode: {e}")))?;
        let options = &self.shared.options;
        let ttl_ms = u64::try_from(options.closed_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = self
            .script
            .key(self.keys.record(&record.number, &record.id));
        invocation
            .key(self.keys.audit(&record.number))
            .arg(expected_version.to_string())
            .arg(record.version.to_string())
            .arg(if record.active { "1" } else { "0" })
            .arg(&record.id)
            .arg(&record.number)
            .arg(&record.body)
            .arg(audit)
            .arg(ttl_ms)
            .arg(options.audit_max_len)
            .arg(self.keys.channel())
            .arg(event);
        let mut conn = self.shared.conn.clone();
        let reply: Vec<Option<String>> =
            self.shared.run(invocation.invoke_async(&mut conn)).await?;
        let outcome = parse_outcome(&self.keys.record(&record.number, &record.id), reply)?;
        if matches!(outcome, CasOutcome::Applied) {
            // The transition stands whatever happens here: a missing line in
            // the combined trail is logged, not an error of the write.
            let cap = options.audit_max_len.saturating_mul(10);
            let added: Result<String, StoreError> = self
                .shared
                .run(
                    redis::cmd("XADD")
                        .arg(self.keys.all_audit())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(cap)
                        .arg("*")
                        .arg("line")
                        .arg(audit)
                        .query_async(&mut conn),
                )
                .await;
            if let Err(e) = added {
                tracing::warn!(error = %e, "audit line not added to the combined trail");
            }
        }
        Ok(outcome)
    }

    async fn active(&self) -> Result<Vec<StoredRecord>, StoreError> {
        let keys = self
            .shared
            .run(self.shared.conn.scan(&self.keys.records_pattern()))
            .await?;
        // Bounded concurrency: a resync must not flood Redis.
        let records: Vec<Option<StoredRecord>> = futures_util::stream::iter(keys)
            .map(|key| self.fetch(key))
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().filter(|r| r.active).collect())
    }

    async fn active_versions(&self) -> Result<Vec<ListedVersion>, StoreError> {
        let keys = self
            .shared
            .run(self.shared.conn.scan(&self.keys.records_pattern()))
            .await?;
        let listed: Vec<Option<ListedVersion>> = futures_util::stream::iter(keys)
            .map(|key| self.version_of(key))
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(listed.into_iter().flatten().collect())
    }

    /// The version of the record at `key` if it is active; not its body.
    async fn version_of(&self, key: String) -> Result<Option<ListedVersion>, StoreError> {
        let mut conn = self.shared.conn.clone();
        let fields: (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self
            .shared
            .run(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("id")
                    .arg("number")
                    .arg("version")
                    .arg("active")
                    .query_async(&mut conn),
            )
            .await?;
        match fields {
            // Gone (expired) between the scan and this read.
            (None, None, None, None) => Ok(None),
            (Some(id), Some(number), Some(version), Some(active)) => {
                let version = version.parse().map_err(|_| StoreError::Corrupt {
                    what: key.clone(),
                    detail: format!("version {version:?} is not a number"),
                })?;
                Ok((active == "1").then_some(ListedVersion {
                    id,
                    number,
                    version,
                }))
            }
            _ => Err(StoreError::Corrupt {
                what: key,
                detail: "a record field is missing".to_owned(),
            }),
        }
    }

    async fn lease_op(
        &self,
        number: &str,
        name: &str,
        op: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        super::check_number(number).map_err(StoreError::InvalidWrite)?;
        let mut invocation = self.lease_script.key(self.keys.lease(number, name));
        invocation.arg(op).arg(holder).arg(ttl_ms.max(1));
        let mut conn = self.shared.conn.clone();
        let held: i64 = self.shared.run(invocation.invoke_async(&mut conn)).await?;
        Ok(held == 1)
    }

    async fn admit_one(
        &self,
        number: &str,
        name: &str,
        per_second: u32,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        super::check_number(number).map_err(StoreError::InvalidWrite)?;
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        let mut invocation = self.rate_script.key(self.keys.rate(number, name));
        invocation.arg(interval_us);
        let mut conn = self.shared.conn.clone();
        let (admitted, wait_us): (i64, i64) =
            self.shared.run(invocation.invoke_async(&mut conn)).await?;
        Ok((admitted != 1)
            .then(|| std::time::Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))))
    }

    async fn hget(&self, key: String, field: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.shared.conn.clone();
        self.shared
            .run(
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(field)
                    .query_async(&mut conn),
            )
            .await
    }

    async fn hgetall(&self, key: String) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self.shared.conn.clone();
        self.shared
            .run(redis::cmd("HGETALL").arg(&key).query_async(&mut conn))
            .await
    }

    async fn hset(&self, key: String, field: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.shared.conn.clone();
        let _: i64 = self
            .shared
            .run(
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(field)
                    .arg(value)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn store_link(&self, link: NumberLink) -> Result<bool, StoreError> {
        let held = self.link_at(&link.number).await?;
        let merged = merge(held.as_ref(), link);
        if held.as_ref() == Some(&merged) {
            return Ok(false);
        }
        let body = serde_json::to_string(&merged).unwrap_or_default();
        // Two replicas learning the same link write the same value.
        self.hset(self.keys.links(), &merged.number, &body).await?;
        Ok(true)
    }

    async fn link_at(&self, number: &str) -> Result<Option<NumberLink>, StoreError> {
        let key = self.keys.links();
        self.hget(key.clone(), number)
            .await?
            .map(|json| NumberLink::parse(|| key.clone(), &json))
            .transpose()
    }

    async fn all_links(&self) -> Result<Vec<NumberLink>, StoreError> {
        let key = self.keys.links();
        let all = self.hgetall(key.clone()).await?;
        all.values()
            .map(|json| NumberLink::parse(|| key.clone(), json))
            .collect()
    }

    async fn audit_lines(&self, key: String, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.shared.conn.clone();
        let entries: Vec<(String, Vec<String>)> = self
            .shared
            .run(
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        entries
            .into_iter()
            .map(|(entry_id, fields)| {
                let mut pairs = fields.chunks_exact(2);
                pairs
                    .find(|pair| pair[0] == "line")
                    .map(|pair| pair[1].clone())
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("{key} entry {entry_id}"),
                        detail: "no line field".to_owned(),
                    })
            })
            .collect()
    }
}

impl BreakerStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn get<'a>(
        &'a self,
        number: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        self.fetch(self.keys.record(number, id)).boxed()
    }

    fn compare_and_set(&self, write: Write) -> BoxFuture<'_, Result<CasOutcome, StoreError>> {
        self.apply(write).boxed()
    }

    fn list_active(&self) -> BoxFuture<'_, Result<Vec<StoredRecord>, StoreError>> {
        self.active().boxed()
    }

    fn list_active_versions(&self) -> BoxFuture<'_, Result<Vec<ListedVersion>, StoreError>> {
        self.active_versions().boxed()
    }

    fn link(&self, link: NumberLink) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.store_link(link).boxed()
    }

    fn link_of<'a>(
        &'a self,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Option<NumberLink>, StoreError>> {
        self.link_at(number).boxed()
    }

    fn links(&self) -> BoxFuture<'_, Result<Vec<NumberLink>, StoreError>> {
        self.all_links().boxed()
    }

    fn replace_waba<'a>(
        &'a self,
        waba: &'a str,
        expected: Option<&'a str>,
        body: String,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let mut invocation = self.waba_script.key(self.keys.wabas());
            invocation
                .arg(waba)
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.unwrap_or_default())
                .arg(&body);
            let mut conn = self.shared.conn.clone();
            let replaced: i64 = self.shared.run(invocation.invoke_async(&mut conn)).await?;
            Ok(replaced == 1)
        }
        .boxed()
    }

    fn take_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.lease_op(number, name, "take", holder, ttl_ms).boxed()
    }

    fn release_lease<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.lease_op(number, name, "release", holder, 1).boxed()
    }

    fn admit<'a>(
        &'a self,
        number: &'a str,
        name: &'a str,
        per_second: u32,
    ) -> BoxFuture<'a, Result<Option<std::time::Duration>, StoreError>> {
        self.admit_one(number, name, per_second).boxed()
    }

    fn waba<'a>(&'a self, waba: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        self.hget(self.keys.wabas(), waba).boxed()
    }

    fn waba_records(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        async move { Ok(self.hgetall(self.keys.wabas()).await?.into_iter().collect()) }.boxed()
    }

    fn audit<'a>(
        &'a self,
        number: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        self.audit_lines(self.keys.audit(number), limit).boxed()
    }

    fn recent_audit(&self, limit: usize) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.audit_lines(self.keys.all_audit(), limit).boxed()
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.events.subscribe()
    }

    fn is_healthy(&self) -> bool {
        self.shared.health.is_healthy()
    }
}
