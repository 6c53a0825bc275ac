//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! It listens on loopback by default because later it also carries the
//! admin API that opens and closes breakers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    state: Arc<AtomicU8>, // STARTING (the default), READY or DRAINING
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
}

/// The admin router.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(AdminState { metrics, readiness })
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
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

async fn readyz(State(state): State<AdminState>) -> Response {
    let (status, text) = state.readiness.status();
    (status, axum::Json(json!({"status": text}))).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "not found"})),
    )
        .into_response()
}
