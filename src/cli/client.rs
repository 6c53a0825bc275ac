//! One request to the admin listener, and what its answer means as an
//! [`Exit`].
//!
//! The HTTP client is hyper-util's, with rustls for `https://` like the
//! upstream client's. The bearer token goes only with changes (POSTs): reads
//! need none, and a mistyped URL then carries it nowhere.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use super::Exit;
use crate::config::Secret;
use crate::upstream::error_chain;

/// The largest answer read: the longest audit page is far below it.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What went wrong, with the exit code it gives.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) exit: Exit,
    message: String,
    /// The admin API's JSON answer, when there was one.
    pub(super) body: Option<Value>,
}

impl Failure {
    pub(super) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            body: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A client of one admin listener.
pub(super) struct Client {
    /// `scheme://authority` and any path prefix, without a trailing `/`.
    base: String,
    token: Option<Secret>,
    timeout: Duration,
    http: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client of the admin listener at `url`.
    pub(super) fn new(
        url: &str,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, Failure> {
        let base = base_url(url).map_err(|e| Failure::new(Exit::Refused, e))?;
        let https = crate::upstream::https_h1_connector(timeout);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // A change that failed on the way is not sent twice.
            .retry_canceled_requests(false)
            .build(https);
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            timeout,
            http,
        })
    }

    /// Sends `method path` with `body` as JSON, and returns the JSON answer
    /// of a 2xx.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let change = method == Method::POST;
        let request = self.request(method, path, body)?;
        let exchange = async {
            let response = self.http.request(request).await?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts.status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.unreachable(&*e)),
            Err(_) => {
                return Err(Failure::new(
                    Exit::Unreachable,
                    format!(
                        "no answer from the admin listener at {} within {}",
                        self.base,
                        humantime::format_duration(self.timeout)
                    ),
                ));
            }
        };
        self.answer(status, &bytes, change)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| Failure::new(Exit::Refused, format!("invalid request URL: {e}")))?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wagate/", env!("CARGO_PKG_VERSION")),
            );
        if method == Method::POST
            && let Some(token) = &self.token
        {
            // The error names no part of the token.
            let mut value =
                HeaderValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
                    Failure::new(Exit::Refused, "the token is not a valid header value")
                })?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .map_err(|e| Failure::new(Exit::Refused, format!("invalid request: {e}")))
    }

    fn unreachable(&self, error: &(dyn std::error::Error + 'static)) -> Failure {
        let connect = error
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect);
        let message = if connect {
            format!(
                "cannot reach the admin listener at {}: {} — is wagate running? \
                 set --admin-url or WAGATE_ADMIN_URL",
                self.base,
                error_chain(error)
            )
        } else {
            format!(
                "the admin listener at {} broke off the answer: {}",
                self.base,
                error_chain(error)
            )
        };
        Failure::new(Exit::Unreachable, message)
    }

    /// The JSON of a 2xx answer, or the failure any other answer means.
    fn answer(&self, status: StatusCode, bytes: &[u8], change: bool) -> Result<Value, Failure> {
        let json: Option<Value> = serde_json::from_slice(bytes).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                Failure::new(
                    Exit::ServerError,
                    format!(
                        "{} answered {status} without JSON: is it the admin listener \
                         (listen.admin), not the proxy?",
                        self.base
                    ),
                )
            });
        }
        let exit = match status.as_u16() {
            404 => Exit::NotFound,
            401 | 403 | 429 => Exit::NotAllowed,
            500..=599 => Exit::ServerError,
            _ => Exit::Refused,
        };
        let said = match json.as_ref().and_then(|j| j.get("error")) {
            Some(Value::String(error)) => error.clone(),
            // Meta's envelope: the request went through the proxy.
            Some(Value::Object(_)) => format!(
                "a Graph API error, not the admin API's: is {} the proxy rather than \
                 the admin listener (listen.admin)?",
                self.base
            ),
            _ => match &json {
                Some(json) => json.to_string(),
                None => String::from_utf8_lossy(bytes)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            },
        };
        let mut message = format!("{status}: {said}");
        if status == StatusCode::UNAUTHORIZED && change && self.token.is_none() {
            message.push_str(" (no token given: set WAGATE_ADMIN_TOKEN or --token)");
        }
        Err(Failure {
            exit,
            message,
            body: json,
        })
    }
}

/// `url` as `scheme://authority[/prefix]`, checked: http or https, a host,
/// no query, and no credentials (the token has its own option).
fn base_url(url: &str) -> Result<String, String> {
    // Before anything quotes the URL: whatever else is wrong with it, one
    // with credentials must not be printed.
    if url.contains('@') {
        return Err(
            "--admin-url must not carry credentials: give the token with \
                    WAGATE_ADMIN_TOKEN or --token"
                .to_owned(),
        );
    }
    let bad = |why: &str| format!("--admin-url {url:?}: {why}");
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| bad("not a URL such as http://127.0.0.1:9090"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(bad("must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("names no host"))?
        .as_str();
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_a_prefix_and_refuse_credentials() {
        assert_eq!(
            base_url("http://127.0.0.1:9090").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            base_url("https://ops.example/wagate/").unwrap(),
            "https://ops.example/wagate"
        );
        for bad in [
            "127.0.0.1:9090",
            "ftp://127.0.0.1",
            "http://127.0.0.1/?x=1",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        for with_password in [
            "http://admin:hunter2@127.0.0.1:9090",
            "ftp://admin:hunter2@127.0.0.1",
            "admin:hunter2@127.0.0.1:9090",
            "http://admin:hunter2@[bad",
        ] {
            let error = base_url(with_password).unwrap_err();
            assert!(!error.contains("hunter2"), "{with_password}: {error}");
        }
    }

    fn client(token: Option<&str>) -> Client {
        Client::new(
            "http://127.0.0.1:9",
            token.map(Secret::new),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn answers_map_to_exit_codes() {
        let c = client(None);
        let cases = [
            (400, Exit::Refused),
            (404, Exit::NotFound),
            (405, Exit::Refused),
            (401, Exit::NotAllowed),
            (403, Exit::NotAllowed),
            (429, Exit::NotAllowed),
            (500, Exit::ServerError),
            (503, Exit::ServerError),
        ];
        for (status, exit) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let failure = c.answer(status, br#"{"error":"why"}"#, false).unwrap_err();
            assert_eq!(failure.exit, exit, "{status}");
            assert_eq!(failure.to_string(), format!("{status}: why"));
            assert!(failure.body.is_some());
        }
        let ok = c.answer(StatusCode::ACCEPTED, br#"{"outcome":"pending"}"#, true);
        assert_eq!(ok.unwrap()["outcome"], "pending");
        let graph = br#"{"error":{"code":100,"type":"GraphMethodException"}}"#;
        let graph = c.answer(StatusCode::BAD_REQUEST, graph, false).unwrap_err();
        assert!(graph.to_string().contains("proxy"), "{graph}");
        let html = c.answer(StatusCode::OK, b"<html>", false).unwrap_err();
        assert_eq!(html.exit, Exit::ServerError);
    }

    #[test]
    fn a_refused_change_without_a_token_says_how_to_give_one() {
        let said = client(None)
            .answer(StatusCode::UNAUTHORIZED, br#"{"error":"missing"}"#, true)
            .unwrap_err()
            .to_string();
        assert!(said.contains("WAGATE_ADMIN_TOKEN"), "{said}");
        let said = client(Some("t"))
            .answer(StatusCode::UNAUTHORIZED, br#"{"error":"wrong"}"#, true)
            .unwrap_err()
            .to_string();
        assert!(!said.contains("WAGATE_ADMIN_TOKEN"), "{said}");
    }

    #[test]
    fn only_changes_carry_the_token() {
        let c = client(Some("t0ken"));
        let read = c.request(Method::GET, "/admin/breakers", None).unwrap();
        assert!(read.headers().get(header::AUTHORIZATION).is_none());
        let change = c
            .request(Method::POST, "/admin/breakers/1/reset", Some(&Value::Null))
            .unwrap();
        let auth = &change.headers()[header::AUTHORIZATION];
        assert_eq!(auth, "Bearer t0ken");
        assert!(auth.is_sensitive());
        assert_eq!(change.uri(), "http://127.0.0.1:9/admin/breakers/1/reset");
    }
}
