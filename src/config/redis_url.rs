//! `store.redis_url`: one Redis URL, or several comma-separated Cluster seed
//! nodes, shown with passwords hidden but hosts visible.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::secret::OpaqueString;

/// What a hidden password is replaced with.
const REDACTED: &str = "<redacted>";

/// The Redis URL(s) of `store.redis_url`. Empty selects the embedded store;
/// one URL is a standalone server; several, comma-separated, are the seed
/// nodes of a Redis Cluster.
///
/// A URL may carry a password (`redis://:pw@host:6379`), so `Debug`,
/// `Display` and `Serialize` print each URL with the user info's password
/// replaced by `<redacted>`. The host stays visible: "which Redis is this
/// replica talking to" is the first question when breakers disagree.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a value as written in the config (not validated).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Whether no URL is set, i.e. the embedded store is used.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The URLs with their passwords, for connecting; never log them.
    /// Empty when [`is_empty`](Self::is_empty); surrounding whitespace of each
    /// URL is trimmed.
    ///
    /// A comma starts a new URL only where a scheme (`://`) follows: a comma
    /// inside a password stays in its URL rather than cutting it in two
    /// (which would also leave half the password unredacted).
    pub fn urls(&self) -> Vec<&str> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut urls = Vec::new();
        let mut start = 0;
        for (comma, _) in self.0.match_indices(',') {
            let next = self.0[comma + 1..].split(',').next().unwrap_or("");
            if next.contains("://") || next.trim().is_empty() {
                urls.push(self.0[start..comma].trim());
                start = comma + 1;
            }
        }
        urls.push(self.0[start..].trim());
        urls
    }

    /// Whether several URLs are set, i.e. Redis Cluster seed nodes.
    pub fn is_cluster(&self) -> bool {
        self.urls().len() > 1
    }

    /// The value as written, passwords included; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URLs, comma-separated, with passwords replaced: safe to print.
    pub fn redacted(&self) -> String {
        self.urls()
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `url` with the user info's password replaced by `<redacted>`, keeping the
/// user name (ACL users are not secret and help debugging).
///
/// Works on text rather than on a parsed URL so that a malformed URL (the
/// one most likely to end up in an error message) is redacted too. User info
/// is taken to end at the *last* `@`: a password containing an unescaped `/`
/// or `@` then still ends up hidden, at the price of over-redacting a URL
/// with `@` in its query.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    let user = match userinfo.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:"),
        // No colon: the whole user info may be a password (some clients read
        // `redis://secret@host` that way), so hide all of it.
        _ => String::new(),
    };
    format!("{scheme}{user}{REDACTED}{host}")
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(OpaqueString).map(Self)
    }
}
