//! Checks that a deserialized config makes sense, naming the key at fault.
//!
//! Type-level checks (a duration that does not parse, a malformed
//! `upstream.base_url`) already happened while deserializing; this is what
//! types alone do not say: ranges, URL schemes, filter syntax.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use http::uri::PathAndQuery;
use tracing_subscriber::EnvFilter;

use super::redis_url::redact_url;
use super::{Config, ConfigError};
use crate::store::is_sentinel_url;

/// `limits.inspect_body_bytes` bounds: Meta's error bodies are a few hundred
/// bytes, so less than 1 KiB risks cutting one off, and more than 1 MiB per
/// in-flight failed send is memory spent on nothing.
const INSPECT_MIN: usize = 1024;
const INSPECT_MAX: usize = 1024 * 1024;

impl Config {
    /// Checks every value, returning the config unchanged if all are valid,
    /// else an [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        self.breaker = self
            .breaker
            .try_validate()
            .map_err(|e| ConfigError::invalid(&format!("breaker.{}", e.key), e.reason))?;
        if let Err(e) = crate::breaker::Rules::with_overrides(self.rules.clone()) {
            return Err(ConfigError::invalid("rules", e.to_string()));
        }
        if let Err(e) = crate::breaker::EventRules::with_overrides(self.event_rules.clone()) {
            return Err(ConfigError::invalid("event_rules", e.to_string()));
        }
        for (i, waba) in self.wabas.iter().enumerate() {
            if waba.id.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &format!("wabas[{i}].id"),
                    "must not be empty",
                ));
            }
            for number in &waba.numbers {
                crate::store::check_number(number).map_err(|reason| {
                    ConfigError::invalid(&format!("wabas[{i}].numbers"), reason)
                })?;
            }
        }
        let health = &self.health;
        positive("health.interval", health.interval)?;
        positive("health.timeout", health.timeout)?;
        positive("health.lease_ttl", health.lease_ttl)?;
        if health.max_interval < health.interval {
            return Err(ConfigError::invalid(
                "health.max_interval",
                "must be at least health.interval",
            ));
        }
        at_least(
            "health.required_available",
            u64::from(health.required_available),
            1,
        )?;
        at_least(
            "health.waba_budget_per_hour",
            u64::from(health.waba_budget_per_hour),
            1,
        )?;
        for (key, version) in [
            ("health.api_version", &health.api_version),
            ("health.fallback_api_version", &health.fallback_api_version),
        ] {
            let allowed_empty = key == "health.api_version" && version.is_empty();
            if !(allowed_empty || crate::graph::is_version(version)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be a Graph API version such as v24.0, got {version:?}"),
                ));
            }
        }
        listen_addrs_differ(self.listen.proxy, self.listen.admin)?;
        admin_tokens(&self.admin)?;
        positive("upstream.connect_timeout", self.upstream.connect_timeout)?;
        positive("upstream.timeout", self.upstream.timeout)?;
        positive("server.drain_timeout", self.server.drain_timeout)?;
        positive(
            "server.header_read_timeout",
            self.server.header_read_timeout,
        )?;
        at_least("limits.max_in_flight", self.limits.max_in_flight as u64, 1)?;
        at_least("limits.max_body_bytes", self.limits.max_body_bytes, 1)?;
        let inspect = self.limits.inspect_body_bytes;
        if !(INSPECT_MIN..=INSPECT_MAX).contains(&inspect) {
            return Err(ConfigError::invalid(
                "limits.inspect_body_bytes",
                format!(
                    "must be between {INSPECT_MIN} (1 KiB) and {INSPECT_MAX} (1 MiB), got {inspect}"
                ),
            ));
        }
        for (i, cap) in self.limits.number_rates.iter().enumerate() {
            let key = format!("limits.number_rates[{i}]");
            crate::store::check_number(&cap.number)
                .map_err(|reason| ConfigError::invalid(&format!("{key}.number"), reason))?;
            at_least(&format!("{key}.rate"), u64::from(cap.rate), 1)?;
        }
        if let Err(e) = EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                format!("not a tracing filter (e.g. `info` or `wagate=debug,info`): {e}"),
            ));
        }
        let urls = self.store.redis_url.urls();
        let sentinels = urls.iter().filter(|url| is_sentinel_url(url)).count();
        if sentinels > 0 && sentinels < urls.len() {
            return Err(ConfigError::invalid(
                "store.redis_url",
                "either every URL is a redis+sentinel:// Sentinel or none is",
            ));
        }
        for url in urls {
            redis_url(url).map_err(|reason| ConfigError::invalid("store.redis_url", reason))?;
        }
        let store = &self.store;
        let sentinel_auth =
            !store.sentinel_username.is_empty() || !store.sentinel_password.is_empty();
        if sentinel_auth && sentinels == 0 {
            return Err(ConfigError::invalid(
                "store.sentinel_password",
                "store.sentinel_username and store.sentinel_password apply to redis+sentinel:// URLs only",
            ));
        }
        if store.tls_cert_file.as_os_str().is_empty() != store.tls_key_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "store.tls_key_file",
                "store.tls_cert_file and store.tls_key_file go together, for mutual TLS",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "store.path",
                "must not be empty: the embedded store needs a file to survive restarts",
            ));
        }
        let webhook = &self.webhook;
        webhook_path(&webhook.path)
            .map_err(|reason| ConfigError::invalid("webhook.path", reason))?;
        webhook_path(&webhook.observe_path)
            .map_err(|reason| ConfigError::invalid("webhook.observe_path", reason))?;
        if webhook.observe_path == webhook.path {
            return Err(ConfigError::invalid(
                "webhook.observe_path",
                "must differ from webhook.path",
            ));
        }
        if !webhook.forward_url.is_empty() {
            forward_url(&webhook.forward_url)
                .map_err(|reason| ConfigError::invalid("webhook.forward_url", reason))?;
        }
        for url in webhook.mirrors() {
            forward_url(url)
                .map_err(|reason| ConfigError::invalid("webhook.mirror_urls", reason))?;
        }
        positive("webhook.forward_timeout", webhook.forward_timeout)?;
        positive("webhook.read_timeout", webhook.read_timeout)?;
        if webhook.enabled() && webhook.app_secret.is_empty() && !webhook.insecure_skip_signature {
            return Err(ConfigError::invalid(
                "webhook.app_secret",
                "must be set when the webhook route is on (webhook.forward_url or webhook.verify_token is set): \
                 deliveries are accepted only with a valid X-Hub-Signature-256. \
                 Set webhook.insecure_skip_signature = true to accept unsigned deliveries",
            ));
        }
        Ok(self)
    }
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(
            key,
            "must be greater than zero, e.g. `30s`",
        ));
    }
    Ok(())
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(())
}

/// Both listeners cannot bind the same port: the second bind would fail at
/// start-up with a less helpful message. Port 0 (any free port) never clashes.
fn listen_addrs_differ(proxy: SocketAddr, admin: SocketAddr) -> Result<(), ConfigError> {
    let same_ip =
        proxy.ip() == admin.ip() || proxy.ip().is_unspecified() || admin.ip().is_unspecified();
    if admin.port() != 0 && admin.port() == proxy.port() && same_ip {
        return Err(ConfigError::invalid(
            "listen.admin",
            format!("{admin} clashes with listen.proxy {proxy}"),
        ));
    }
    Ok(())
}

/// One `redis://` or `rediss://` URL with a host and an optional database
/// number, or a `redis+sentinel://` URL with a host and `/<master>[/<db>]`.
/// Reasons quote the URL only in redacted form.
fn redis_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    if url.is_empty() {
        return Err("empty url in the comma-separated list".to_owned());
    }
    if is_sentinel_url(url) {
        return crate::store::check_sentinel_url(url).map_err(|reason| {
            format!("`{shown}` must be redis+sentinel://host:port/<master>[/<db>]: {reason}")
        });
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{shown}` is not a url: {e}"))?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("redis") || s.eq_ignore_ascii_case("rediss"));
    if !scheme_ok {
        return Err(format!(
            "`{shown}` must start with redis://, rediss:// or redis+sentinel://"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` must name a host"));
    }
    let db = uri.path().trim_start_matches('/');
    if !db.is_empty() && !db.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{shown}` may only have a database number as its path"
        ));
    }
    Ok(())
}

/// A path of its own on the proxy listener: `/` would swallow every Graph
/// API call.
fn webhook_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("must start with `/`, got `{path}`"));
    }
    if path == "/" {
        return Err(
            "must not be `/`: every Graph API call would be taken for a webhook".to_owned(),
        );
    }
    match path.parse::<PathAndQuery>() {
        Ok(pq) if pq.query().is_none() => Ok(()),
        _ => Err(format!(
            "must be a plain url path without a query, got `{path}`"
        )),
    }
}

/// An absolute `http://` or `https://` URL with a host and no user info.
fn forward_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a url: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with http:// or https://".to_owned());
    }
    let Some(authority) = uri.authority() else {
        return Err("must name a host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err("must not contain user info".to_owned());
    }
    if authority.host().is_empty() {
        return Err("must name a host".to_owned());
    }
    Ok(())
}

/// `admin.tokens` entries are `name:token` with a plain name and a token;
/// names are unique (the audit log tells operators apart by them). Errors
/// name the entry by position, never by its token.
fn admin_tokens(admin: &super::Admin) -> Result<(), ConfigError> {
    let raw = admin.tokens.expose();
    let mut names: Vec<&str> = Vec::new();
    if !admin.token.is_empty() {
        names.push("admin");
    }
    for (i, entry) in raw.split(',').map(str::trim).enumerate() {
        if raw.trim().is_empty() {
            break;
        }
        let position = i + 1;
        let Some((name, token)) = entry.split_once(':') else {
            return Err(ConfigError::invalid(
                "admin.tokens",
                format!("entry {position} must be name:token"),
            ));
        };
        let (name, token) = (name.trim(), token.trim());
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-@".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
            return Err(ConfigError::invalid(
                "admin.tokens",
                format!(
                    "entry {position}: a name is 1 to 64 letters, digits or . _ - @, got {name:?}"
                ),
            ));
        }
        if token.is_empty() {
            return Err(ConfigError::invalid(
                "admin.tokens",
                format!("entry {position} ({name}) has an empty token"),
            ));
        }
        if names.contains(&name) {
            return Err(ConfigError::invalid(
                "admin.tokens",
                format!("the name {name:?} is used twice"),
            ));
        }
        names.push(name);
    }
    Ok(())
}
