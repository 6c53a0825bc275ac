//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the admin API
//! (`/admin/breakers`, `/admin/wabas`, `/admin/audit`, described by
//! `/admin/openapi.json`) and the status page at `/`.
//!
//! It listens on loopback by default because the admin API opens and closes
//! breakers; changes also need a bearer token.

mod audit;
mod auth;
mod breakers;
mod change;
mod page;
mod wabas;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::engine::Breakers;
use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    state: Arc<AtomicU8>, // STARTING (the default), READY or DRAINING
    /// Set at start-up, shown by every `/readyz` answer.
    warnings: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    /// The listeners are up and serving.
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::Release);
    }

    /// Shutdown has begun: load balancers should stop sending.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// Adds a warning that `/readyz` shows from now on, such as unsigned
    /// webhooks being accepted.
    pub fn warn(&self, warning: &'static str) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(warning);
    }

    fn warnings(&self) -> Vec<&'static str> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match self.state.load(Ordering::Acquire) {
            READY => (StatusCode::OK, "ready"),
            DRAINING => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            // STARTING, the only other value.
            _ => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
    breakers: Breakers,
    auth: Arc<auth::Auth>,
}

/// The admin router. `tokens` are the (name, token) pairs that may make
/// changes (`admin.token` and `admin.tokens`); none disables changes.
///
/// Serve it with connect info (`into_make_service_with_connect_info::
/// <SocketAddr>`), so failed attempts are limited per client; without it
/// they are not limited.
pub fn router(
    metrics: Metrics,
    readiness: Readiness,
    breakers: Breakers,
    tokens: Vec<(String, String)>,
) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/breakers", get(breakers::list))
        .route("/admin/breakers/{id}", get(breakers::show))
        .route("/admin/breakers/{id}/{action}", post(breakers::act))
        .route("/admin/wabas", get(wabas::list))
        .route("/admin/wabas/{id}", get(wabas::show))
        .route("/admin/wabas/{id}/{action}", post(wabas::act))
        .route("/admin/audit", get(audit::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AdminState {
            metrics,
            readiness,
            breakers,
            auth: Arc::new(auth::Auth::new(tokens)),
        })
        // Outermost first: an error answered in plain text or with no body
        // becomes a JSON one; a panic in a handler becomes a plain JSON 500;
        // the bearer token is marked sensitive for anything that prints
        // headers; a request gets ADMIN_TIMEOUT and bodies ADMIN_BODY_LIMIT
        // (a reason is a sentence).
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::map_response(json_errors))
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
                .layer(
                    tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                        http::header::AUTHORIZATION,
                    ]),
                )
                .layer(tower_http::limit::RequestBodyLimitLayer::new(
                    ADMIN_BODY_LIMIT,
                ))
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ADMIN_TIMEOUT,
                )),
        )
}

/// How long an admin request may take (a store write included).
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest admin request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The answer to a handler that panicked: the panic's message stays in the
/// log, never in the answer.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> http::Response<axum::body::Body> {
    tracing::error!("an admin handler panicked");
    let body = serde_json::json!({"error": "internal error"}).to_string();
    let mut response = http::Response::new(axum::body::Body::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    state.breakers.refresh_store_gauge();
    state.breakers.refresh_waba_gauge().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

/// Ready once the listeners serve. A store outage reports `degraded` with
/// 200: the gateway keeps serving from its snapshot (fail-static), and
/// taking every replica out of a load balancer because Redis is down would
/// turn a store outage into a full outage.
async fn readyz(State(state): State<AdminState>) -> Response {
    let (status, mut text) = state.readiness.status();
    let store = state.breakers.store_kind();
    if status == StatusCode::OK && state.breakers.is_degraded() {
        text = "degraded";
    }
    let mut body = json!({"status": text, "store": store});
    let warnings = state.readiness.warnings();
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    (status, axum::Json(body)).into_response()
}

/// The OpenAPI 3.1 description of every endpoint of this listener.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found: see /admin/openapi.json for the endpoints",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: see /admin/openapi.json for the endpoints",
    )
}

/// A plain JSON error.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    Rejection::new(status, message).into_response()
}

/// A request refused with a plain JSON error: small, so checks can return
/// it in a `Result`.
pub(crate) struct Rejection {
    status: StatusCode,
    message: String,
    /// Extra headers: `WWW-Authenticate`, `Retry-After`.
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    #[must_use]
    pub(crate) fn with_header(
        mut self,
        name: header::HeaderName,
        value: header::HeaderValue,
    ) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// The longest text error body turned into a JSON one; axum's and
/// tower-http's are a line.
const TEXT_ERROR_LIMIT: usize = 1024;

/// Turns an error that axum or a tower layer answered in plain text or with
/// no body (a path segment that is not UTF-8, a body over the limit, a
/// timeout) into the JSON error the handlers give, so that every error of
/// this listener has the one shape `/admin/openapi.json` describes.
async fn json_errors<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(axum::body::Body::new);
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, TEXT_ERROR_LIMIT)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    // Lowercase like the handlers' errors: axum's texts begin with a
    // capital, the reasons are title case.
    let message = match text {
        Some(text) => {
            let mut chars = text.chars();
            chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
        None => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let mut response = error(status, &message);
    response.headers_mut().extend(headers);
    response
}

/// The client's address, when the listener was served with connect info.
fn client_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(response: Response) -> (StatusCode, Option<String>, serde_json::Value) {
        let status = response.status();
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, kind, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn text_and_empty_errors_become_json_errors() {
        let text = (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Failed to buffer the request body: length limit exceeded",
        )
            .into_response();
        let (status, kind, body) = json_of(json_errors(text).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(kind.as_deref(), Some("application/json"));
        assert_eq!(
            body,
            json!({"error": "failed to buffer the request body: length limit exceeded"})
        );

        let mut empty = StatusCode::SERVICE_UNAVAILABLE.into_response();
        empty
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        let response = json_errors(empty).await;
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let (status, _, body) = json_of(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"error": "service unavailable"}));
    }

    #[tokio::test]
    async fn json_errors_and_successes_pass_unchanged() {
        let own = error(StatusCode::NOT_FOUND, "no such thing");
        let (_, _, body) = json_of(json_errors(own).await).await;
        assert_eq!(body, json!({"error": "no such thing"}));
        let page = ([(header::CONTENT_TYPE, "text/html")], "<p>ok</p>").into_response();
        let response = json_errors(page).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html");
    }
}
