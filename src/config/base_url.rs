//! `upstream.base_url`: the Graph API's scheme and authority, checked when
//! the config is read so that the proxy can use it without re-parsing.

use std::fmt;
use std::str::FromStr;

use http::Uri;
use http::uri::{Authority, Scheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Scheme and authority of the upstream Graph API, e.g.
/// `https://graph.facebook.com`.
///
/// Only `http` and `https` with a host are accepted, with no path other than
/// `/`, no query and no user info: the proxy keeps the client's path and
/// query as they are and only swaps scheme and authority, so anything else
/// here would be silently dropped. Construct with [`FromStr`] (`parse`).
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl {
    uri: Uri,
    scheme: Scheme,
    authority: Authority,
}

impl BaseUrl {
    /// The URL as a URI with path `/`.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Host and optional port, e.g. `graph.facebook.com` or `127.0.0.1:8081`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether connections to the upstream use TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

impl Default for BaseUrl {
    fn default() -> Self {
        Self {
            uri: Uri::from_static("https://graph.facebook.com/"),
            scheme: Scheme::HTTPS,
            authority: Authority::from_static("graph.facebook.com"),
        }
    }
}

/// Why a string is not a valid [`BaseUrl`]. The reason never quotes the
/// input: a URL with user info would carry a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BaseUrlError(String);

impl FromStr for BaseUrl {
    type Err = BaseUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| BaseUrlError(reason.to_owned());
        let uri: Uri = s
            .parse()
            .map_err(|e| BaseUrlError(format!("not a url: {e}")))?;
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
            _ => return Err(err("must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| err("must name a host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(err(
                "must not contain user info: the client's own Authorization header is forwarded",
            ));
        }
        if authority.host().is_empty() {
            return Err(err("must name a host"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(err(
                "must not have a path: the client's path (e.g. /v21.0/...) is forwarded as is",
            ));
        }
        if uri.query().is_some() {
            return Err(err("must not have a query"));
        }
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| BaseUrlError(format!("not a url: {e}")))?;
        Ok(Self {
            uri,
            scheme,
            authority,
        })
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for BaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
