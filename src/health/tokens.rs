//! The tokens the poller may use when no configured token applies: for each
//! number, the bearer token (and Graph API version) of the last request the
//! gateway forwarded for it that Meta answered with a 2xx.
//!
//! Held in memory only: never written to the store, the logs or the
//! metrics, and gone when the process ends. Learning runs on the proxy's
//! path for successful sends, so the common case (the same token as last
//! time) is a read-locked lookup and a comparison, with no allocation; a
//! copy is made only when a number's token or version changes.

use std::collections::HashMap;
use std::sync::RwLock;

use http::HeaderValue;

/// Numbers remembered at most; past it, new numbers are not learned (a
/// business has far fewer numbers; this bounds what a hostile client could
/// make the gateway hold).
const MAX_NUMBERS: usize = 100_000;

/// A learned token and the version it was used with.
#[derive(Clone, Debug)]
pub struct Learned {
    /// The whole `Authorization` value, `Bearer …`; marked sensitive.
    pub authorization: HeaderValue,
    /// The version segment of that request's path, when it had one.
    pub version: Option<String>,
}

/// Tokens learned from successful sends, per number.
#[derive(Debug, Default)]
pub struct Tokens {
    learned: RwLock<HashMap<Box<str>, Learned, foldhash::fast::RandomState>>,
}

/// The version segment that starts `path`, if it has one.
fn version_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
    let segment = &rest[..end];
    crate::graph::is_version(segment).then_some(segment)
}

impl Tokens {
    /// Remembers that a request for `number` with `authorization` (the
    /// `Authorization` header, or `None` when the token came in the
    /// `access_token` query parameter) on `path` and `query` succeeded.
    ///
    /// Byte scans rather than `str` patterns, and foldhash rather than
    /// SipHash: this runs for every successful send.
    pub fn learn(
        &self,
        number: &str,
        path: &str,
        query: Option<&str>,
        authorization: Option<&HeaderValue>,
    ) {
        let version = version_of(path);
        let from_query = || {
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find(|(name, _)| name == "access_token")
                .map(|(_, token)| token)
        };
        {
            let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = learned.get(number)
                && known.version.as_deref() == version
            {
                let same = match authorization {
                    Some(value) => known.authorization.as_bytes() == value.as_bytes(),
                    None => from_query().is_some_and(|token| {
                        known.authorization.as_bytes().strip_prefix(b"Bearer ")
                            == Some(token.as_bytes())
                    }),
                };
                if same {
                    return;
                }
            }
            if learned.len() >= MAX_NUMBERS && !learned.contains_key(number) {
                return;
            }
        }
        let value = match authorization {
            // A copy: the parsed header points into the connection's read
            // buffer, which must not be kept alive by this map.
            Some(value) => HeaderValue::from_bytes(value.as_bytes()).ok(),
            None => from_query().and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok()),
        };
        let Some(mut authorization) = value else {
            return;
        };
        authorization.set_sensitive(true);
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        learned.insert(
            number.into(),
            Learned {
                authorization,
                version: version.map(str::to_owned),
            },
        );
    }

    /// What was learned for `number`.
    pub fn get(&self, number: &str) -> Option<Learned> {
        let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
        learned.get(number).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_header_or_the_query_token_and_the_version() {
        let tokens = Tokens::default();
        let header = HeaderValue::from_static("Bearer EAAG-one");
        tokens.learn("1", "/v23.0/1/messages", None, Some(&header));
        let got = tokens.get("1").unwrap();
        assert_eq!(got.authorization, "Bearer EAAG-one");
        assert!(got.authorization.is_sensitive());
        assert_eq!(got.version.as_deref(), Some("v23.0"));
        tokens.learn("1", "/1/messages", Some("access_token=EAAG-two"), None);
        let got = tokens.get("1").unwrap();
        assert_eq!(got.authorization, "Bearer EAAG-two");
        assert_eq!(got.version, None);
        assert!(format!("{got:?}").contains("Sensitive"), "{got:?}");
        tokens.learn("2", "/v24.0/2/messages", None, None);
        assert!(tokens.get("2").is_none(), "no token, nothing learned");
    }
}
