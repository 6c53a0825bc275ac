//! The Graph API client that the proxy and the health poller share: where
//! requests go (the one configured upstream), how connections are made (TLS,
//! connect timeout, keep-alive) and how a client's request is rewritten for
//! the upstream.
//!
//! **wagate never retries or queues a send.** A retried POST can deliver a
//! message to a customer twice; whether to retry is the integration's
//! decision, made on the response wagate returns. The client below is
//! therefore used with retries off, and every failure becomes a response.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;

/// A pooled, keep-alive upstream client (TLS by rustls) sending bodies of
/// type `B`.
pub type Client<B> = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, B>;

/// Where requests go: the one upstream the proxy can ever reach.
#[derive(Clone, Debug)]
pub struct Target {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    host: HeaderValue,
}

impl Target {
    /// The upstream of `base_url`, which config validation has checked to be
    /// an absolute http(s) URL without path.
    pub fn new(base_url: &Uri) -> Result<Self, InvalidTarget> {
        let scheme = base_url.scheme().cloned().ok_or(InvalidTarget)?;
        let authority = base_url.authority().cloned().ok_or(InvalidTarget)?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| InvalidTarget)?;
        Ok(Self {
            scheme,
            authority,
            host,
        })
    }

    /// The upstream's URI for `path_and_query` (the health poller's GETs).
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Rewrites a client's request for the upstream, in place.
    ///
    /// Only the path and query of the client's URI are kept: an absolute-form
    /// URI (`POST http://elsewhere/...`) or a hostile `Host` header cannot
    /// steer the request anywhere but the configured upstream. Hop-by-hop
    /// headers are removed and `Host` is set to the upstream's.
    pub fn rewrite<B>(&self, request: &mut Request<B>) {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        // Scheme, authority and a path always make a valid URI.
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        // The upstream speaks HTTP/1.1 or negotiates HTTP/2 itself.
        *request.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
    }
}

/// `upstream.base_url` is not an absolute http(s) URL.
#[derive(Debug, thiserror::Error)]
#[error("upstream base url needs a scheme and a host")]
pub struct InvalidTarget;

/// Builds the upstream client: pooled keep-alive connections, TLS by rustls
/// with the webpki roots, HTTP/2 when the upstream offers it over ALPN.
pub fn client<B>(config: &config::Upstream) -> Client<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp_connector(config));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle)
        // A request that failed on a reused connection is not retried:
        // the upstream may already have acted on it.
        .retry_canceled_requests(false)
        .build(https)
}

/// The connector for dedicated upstream connections: like [`client`]'s, but
/// offering only HTTP/1.1, so a TLS upstream never negotiates HTTP/2 on a
/// connection that carries one request at a time.
pub fn h1_connector(config: &config::Upstream) -> HttpsConnector<HttpConnector> {
    h1_over(tcp_connector(config))
}

/// An HTTP/1.1 connector, `http://` or `https://` (rustls, webpki roots),
/// for wagate's other clients (the webhook forwarder, the admin CLI):
/// connections without Nagle delay that give up connecting after
/// `connect_timeout`.
pub fn https_h1_connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    h1_over(tcp(connect_timeout))
}

fn h1_over(tcp: HttpConnector) -> HttpsConnector<HttpConnector> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp)
}

/// TCP to the upstream: no Nagle delay (requests are small and latency
/// matters), the configured connect timeout, TCP keep-alive probes so dead
/// idle connections are noticed.
fn tcp_connector(config: &config::Upstream) -> HttpConnector {
    let mut http = tcp(config.connect_timeout);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

fn tcp(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

/// Whether `name` is hop-by-hop (RFC 9110 §7.6.1): it describes one
/// connection, not the message, so a proxy must not forward it.
/// `Transfer-Encoding` and `Trailer` belong to the old framing; hyper
/// re-frames bodies on each side.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop headers, including any that `Connection` names.
///
/// One pass over the names present, without hashing: most messages carry
/// none of these, and this runs twice per proxied request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers listed in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// An error and its sources on one line, for logs: hyper's client errors
/// say what failed only in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new(&"https://graph.facebook.com".parse().unwrap()).unwrap()
    }

    #[test]
    fn keeps_only_path_and_query_of_any_uri() {
        for uri in [
            "/v24.0/1/messages?access_token=x",
            "http://evil.example/v24.0/1/messages?access_token=x",
            "https://127.0.0.1:6379/v24.0/1/messages?access_token=x",
        ] {
            let mut request = Request::builder().uri(uri).body(()).unwrap();
            request
                .headers_mut()
                .insert(header::HOST, HeaderValue::from_static("evil.example"));
            target().rewrite(&mut request);
            assert_eq!(
                request.uri().to_string(),
                "https://graph.facebook.com/v24.0/1/messages?access_token=x"
            );
            assert_eq!(request.headers()[header::HOST], "graph.facebook.com");
        }
    }

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-hop", "1"),
            ("authorization", "Bearer token"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }
}
