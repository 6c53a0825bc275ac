//! Configuration: `config/wagate.toml`, overridden by `WAGATE_<SECTION>__<KEY>`
//! environment variables, validated once at start-up.
//!
//! The key names that deployments set (`listen.proxy`, `upstream.base_url`,
//! `store.redis_url`, `admin.token`, `webhook.*`, `health.access_token`, all
//! in the README's configuration table) are fixed: operators script
//! against them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod base_url;
pub(crate) mod duration;
mod error;
mod load;
mod overrides;
mod redis_url;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

pub use base_url::{BaseUrl, BaseUrlError};
pub use error::ConfigError;
pub use load::DEFAULT_PATH;
pub use redis_url::RedisUrl;
pub use secret::Secret;

/// The whole configuration. Every section has defaults, so an empty file (or
/// no file) is a valid configuration that runs on the embedded store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen addresses.
    pub listen: Listen,
    /// The Graph API the proxy forwards to.
    pub upstream: Upstream,
    /// Bounds on what a client may make the gateway hold.
    pub limits: Limits,
    /// Process-level settings: runtime threads and shutdown.
    pub server: Server,
    /// Logging.
    pub log: Log,
    /// What `/metrics` shows.
    pub metrics: MetricsConfig,
    /// Where breaker state lives.
    pub store: Store,
    /// The admin API.
    pub admin: Admin,
    /// Meta's webhooks.
    pub webhook: Webhook,
    /// Health Status API polling.
    pub health: Health,
    /// Breaker timing: `min_open`, backoff, ramp.
    pub breaker: crate::breaker::Settings,
    /// `[[rules]]`: error code → action and scope, tried before the shipped
    /// defaults (first match wins), so a rule changes without code.
    pub rules: Vec<crate::breaker::Rule>,
    /// `[[event_rules]]`: account webhook event → trip, lift, record or
    /// ignore, tried before the shipped defaults.
    pub event_rules: Vec<crate::breaker::EventRule>,
    /// `[[wabas]]`: WABAs and their numbers known before any webhook names
    /// them.
    pub wabas: Vec<Waba>,
}

/// One `[[wabas]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waba {
    /// The WhatsApp Business Account id.
    pub id: String,
    /// Its phone number ids.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// A token with `whatsapp_business_management` on this WABA, for health
    /// polls of its numbers when `health.access_token` is empty.
    #[serde(default)]
    pub token: Secret,
}

/// `[listen]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Where integrations send Graph API calls. Default `0.0.0.0:8080`.
    pub proxy: SocketAddr,
    /// Metrics, health checks and the admin API. Default `127.0.0.1:9090`:
    /// loopback, because the admin API can open and close breakers.
    pub admin: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// `[upstream]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Scheme and authority of the Graph API, for example
    /// `https://graph.facebook.com`. No path: the client's path is kept as is.
    /// Checked when the config is read (see [`BaseUrl`]).
    pub base_url: BaseUrl,
    /// How long to wait for a TCP (and TLS) connection to the upstream.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long to wait for the upstream's response headers once the request
    /// is sent; past it the client gets a 504. Media uploads of tens of MiB
    /// stream within this time, hence the generous default of 60s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    #[serde(with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept to the upstream.
    pub pool_max_idle: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            base_url: BaseUrl::default(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 256,
        }
    }
}

impl Upstream {
    /// The upstream as a URI (scheme, authority, path `/`). Always valid:
    /// [`BaseUrl`] cannot hold anything else.
    pub fn uri(&self) -> &http::Uri {
        self.base_url.uri()
    }
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body in bytes; larger ones get a 413. Meta accepts
    /// media uploads up to 100 MiB (documents), so the default is 100 MiB.
    pub max_body_bytes: u64,
    /// Requests in flight at once; past it new requests get a 503 with
    /// `Retry-After` rather than queueing inside the gateway.
    pub max_in_flight: usize,
    /// How much of a non-2xx send response is read to find Meta's error code.
    /// Meta's error bodies are a few hundred bytes.
    pub inspect_body_bytes: usize,
    /// Sends per second each number may make through this replica; past it
    /// a send is refused at once (429, code 130429, `Retry-After`). 0: off.
    pub per_number_rate: u32,
    /// `[[limits.number_rates]]`: other caps for some numbers.
    pub number_rates: Vec<NumberRate>,
}

/// One `[[limits.number_rates]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRate {
    /// The phone number id.
    pub number: String,
    /// Its sends per second.
    pub rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 100 * 1024 * 1024,
            max_in_flight: 10_000,
            inspect_body_bytes: 64 * 1024,
            per_number_rate: 0,
            number_rates: Vec::new(),
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Runtime worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish
    /// before the process exits anyway.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// A client connection with no request in progress must send the next
    /// request head within this time, or it is closed: the guard against
    /// clients that hold connections open by sending headers slowly
    /// (slow-loris), which also closes idle keep-alive connections.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Whether open breakers refuse sends. `false` runs wagate as an
    /// observing proxy: breakers still trip, show in metrics and the admin
    /// API, but every send is forwarded. For rolling wagate out in shadow
    /// mode, and for measuring the gate's own cost.
    pub gate: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            gate: true,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `pretty` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter, for example `info` or `wagate=debug,info`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The most phone numbers `wagate_breaker_state` shows one by one (held
    /// first, then open, then ramping). `wagate_breakers` counts them all.
    pub number_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            number_series: crate::metrics::DEFAULT_NUMBER_SERIES,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[store]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Redis URL(s). Empty: the embedded store (one replica only). Several,
    /// comma-separated, are Redis Cluster seed nodes. Printed with passwords
    /// hidden (see [`RedisUrl`]).
    pub redis_url: RedisUrl,
    /// The embedded store's file.
    pub path: PathBuf,
    /// PEM file of the CA that signed Redis's certificate, for `rediss://`
    /// (and Sentinel masters reached over TLS). Empty: the system's roots.
    pub tls_ca_file: PathBuf,
    /// PEM client certificate for mutual TLS with Redis; with `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// The user wagate asks the Sentinels as, for `redis+sentinel://` URLs
    /// whose Sentinels have ACL users. Empty: the default user.
    pub sentinel_username: String,
    /// The Sentinels' own password (`requirepass` in sentinel.conf), for
    /// `redis+sentinel://` URLs; the master's is in the URL. Empty: the
    /// Sentinels are asked without one.
    pub sentinel_password: Secret,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            redis_url: RedisUrl::default(),
            path: PathBuf::from("wagate-breakers.db"),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            sentinel_username: String::new(),
            sentinel_password: Secret::default(),
        }
    }
}

/// `[admin]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Bearer token for admin changes, recorded in the audit log as
    /// `admin`. Empty, with `tokens` empty too: changes are disabled.
    pub token: Secret,
    /// Named bearer tokens, `name:token` pairs separated by commas; the
    /// audit log records the name of the token a change used.
    pub tokens: Secret,
}

impl Admin {
    /// Every configured token as (name, token): `token` as `admin`, then
    /// `tokens` in order. Malformed entries are rejected by validation.
    pub fn named_tokens(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        // Trimmed as presented tokens are: a token read from a file (a
        // Kubernetes Secret made --from-file) often ends in a newline.
        let token = self.token.expose().trim();
        if !token.is_empty() {
            all.push(("admin".to_owned(), token.to_owned()));
        }
        for entry in self.tokens.expose().split(',').map(str::trim) {
            if let Some((name, token)) = entry.split_once(':') {
                all.push((name.trim().to_owned(), token.trim().to_owned()));
            }
        }
        all
    }
}

/// `[webhook]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    /// Path on the proxy listener that Meta's webhooks are sent to.
    pub path: String,
    /// A second path that verifies and inspects deliveries an integration
    /// copies to wagate, answers 200 and forwards nothing.
    pub observe_path: String,
    /// App secret(s) that sign webhooks, comma-separated for several apps.
    pub app_secret: Secret,
    /// Token for Meta's verification handshake. Empty: the handshake is
    /// passed to `forward_url`.
    pub verify_token: Secret,
    /// The integration's webhook URL. Empty: inspect, then answer 200.
    pub forward_url: String,
    /// Extra URLs, comma-separated, that get a copy of each delivery; only
    /// `forward_url`'s answer counts.
    pub mirror_urls: String,
    /// How long the integration may take to answer a forwarded delivery;
    /// past it Meta gets a 504 and delivers again.
    #[serde(with = "duration")]
    pub forward_timeout: Duration,
    /// How long a client may take to send a delivery's body.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// Accept deliveries without checking their signature. Only for tests
    /// and for a receiver behind something that already checked them.
    pub insecure_skip_signature: bool,
}

impl Default for Webhook {
    fn default() -> Self {
        Self {
            path: "/webhooks/whatsapp".to_owned(),
            observe_path: "/webhooks/whatsapp/observe".to_owned(),
            app_secret: Secret::default(),
            verify_token: Secret::default(),
            forward_url: String::new(),
            mirror_urls: String::new(),
            forward_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            insecure_skip_signature: false,
        }
    }
}

impl Webhook {
    /// Whether the webhook routes are served: any webhook key says so.
    /// Without it, wagate is a plain proxy and the paths are not special.
    pub fn enabled(&self) -> bool {
        !self.app_secret.is_empty()
            || !self.verify_token.is_empty()
            || !self.forward_url.is_empty()
            || self.insecure_skip_signature
    }

    /// The mirror URLs, blanks skipped.
    pub fn mirrors(&self) -> impl Iterator<Item = &str> {
        self.mirror_urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }
}

/// `[health]`: the Health Status API poller that releases locked numbers
/// and its ramp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Poll at all. Default `true`; off, an open breaker waits for an
    /// operator's release.
    pub enabled: bool,
    /// A system-user token for every poll. Empty: the WABA's `[[wabas]]`
    /// token, else the last token the gateway forwarded on a successful
    /// request for that number (kept in memory only).
    pub access_token: Secret,
    /// First wait between two polls of one number, once its `min_open` has
    /// passed. Default `30s`.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// The wait grows (with jitter) on every poll that does not release,
    /// up to this. Default `5m`.
    #[serde(with = "duration")]
    pub max_interval: Duration,
    /// Graph API version polled, such as `v24.0`. Empty: the version of the
    /// last request forwarded for that number, else `fallback_api_version`.
    pub api_version: String,
    /// The version polled when `api_version` is empty and no request for
    /// the number was seen. Default `v24.0`.
    pub fallback_api_version: String,
    /// Consecutive AVAILABLE polls before the ramp starts. Default `2`.
    pub required_available: u32,
    /// Whether LIMITED (no entity blocked, some limited) releases like
    /// AVAILABLE. Default `false`.
    pub release_on_limited: bool,
    /// Polls per hour per WABA, spread evenly, never a burst (Meta's
    /// management endpoints allow 200 per hour per app and WABA by default).
    /// Numbers without a known WABA share one such budget. Default `200`.
    pub waba_budget_per_hour: u32,
    /// Time allowed for one poll's answer. Default `10s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a replica's claim to poll a WABA's numbers lasts without
    /// renewal; another replica takes over this long after the holder dies.
    /// Default `30s`.
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            enabled: true,
            access_token: Secret::default(),
            interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(5 * 60),
            api_version: String::new(),
            fallback_api_version: "v24.0".to_owned(),
            required_available: 2,
            release_on_limited: false,
            waba_budget_per_hour: 200,
            timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
        }
    }
}
