//! A Graph API simulator that speaks like Meta.
//!
//! End-to-end tests run it in process on `127.0.0.1:0` ([`spawn`]); demos and
//! the load benchmark run it as `wagate sim --listen ADDR` ([`Sim::serve`]).
//! It answers the endpoints of the reference (§4) with Meta's shapes: sends
//! with a fresh wamid, the 131031 envelope for a locked number, the Health
//! Status API, registration calls, media uploads, and Meta's "unsupported
//! request" error for anything else. Tests script it through the control API
//! under `/_sim/` or through the methods on [`Sim`], and read back what it
//! received (per-number counts and a bounded request log).
//!
//! What lives here: the HTTP surface ([`Sim::router`]), the scripted state,
//! signed webhook deliveries ([`send_webhook`]). What does not: anything the
//! gateway itself does; this module only imitates the far side.
//!
//! Layout: `state` (shared state and counters), `route` (path parsing),
//! `graph` (the Graph surface), `codes` (error table and envelopes),
//! `health` (health bodies), `control` (`/_sim/` control API and the
//! router), `helpers` (echo, blob, broken test endpoints), `record` (the
//! request log), `webhook` (signed deliveries), `server` (listener loop and
//! [`SimHandle`]), `ids` (wamids, trace ids, media ids), `answer` (response
//! helpers).
//!
//! The request log keeps headers as received, `Authorization` included, so
//! tests can check what a proxy forwarded; it lives in memory and is only
//! served by `GET /_sim/log`, never written to the process log.

mod answer;
mod codes;
mod control;
mod graph;
mod health;
mod helpers;
mod ids;
mod record;
mod route;
mod server;
mod state;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use helpers::{BLOB_MAX, blob_byte};
pub use server::{SimHandle, spawn};
pub use webhook::{
    AppSecret, WebhookDelivery, WebhookError, WebhookKind, WebhookRequest, send_webhook,
    sign_webhook,
};

use state::Inner;

/// How a simulator is set up.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Keep the request log (`GET /_sim/log`, [`Sim::log`]). Default `true`;
    /// the load benchmark turns it off so the send path stays allocation-light.
    pub record: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self { record: true }
    }
}

/// The health a number reports through the Health Status API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    /// Every entity `AVAILABLE` (the default).
    Available,
    /// BUSINESS and APP `LIMITED` with `additional_info`, like `health_limited.json`.
    Limited,
    /// PHONE_NUMBER `BLOCKED` with error 131031, like `health_blocked.json`.
    Blocked,
    /// WABA `BLOCKED` with error 141014, like `health_waba_blocked.json`.
    WabaBlocked,
}

/// A scripted error for a number's sends (`/messages`, `/marketing_messages`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInjection {
    /// Meta's `error.code`.
    pub code: i64,
    /// HTTP status; default from the simulator's table for `code` (for
    /// example 403 for 131031, 400 for 130429; pass 429 to imitate vendors).
    /// A value outside 200..=599 falls back to the table.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Answer the error this many times, then send normally again; `None`
    /// keeps answering it until cleared. `Some(0)` clears the injection.
    #[serde(default)]
    pub times: Option<u32>,
    /// Exact response body, returned byte for byte instead of the envelope
    /// built from the table (tests send fixture files this way).
    #[serde(default)]
    pub body: Option<String>,
    /// Extra response headers, such as `Retry-After` or
    /// `X-Business-Use-Case-Usage` with an `estimated_time_to_regain_access`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// How many Graph-surface requests the simulator received for one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// `POST /{id}/messages`, mark-as-read included.
    pub messages: u64,
    /// `POST /{id}/marketing_messages`.
    pub marketing_messages: u64,
    /// `POST /{id}/media`.
    pub media: u64,
    /// `GET /{id}?fields=health_status`.
    pub health: u64,
    /// `register`, `deregister`, `request_code`, `verify_code`, `POST /{id}`.
    pub registration: u64,
    /// Anything else addressed to that id.
    pub other: u64,
    /// The sum of the above.
    pub total: u64,
}

/// One recorded request (Graph surface and `/_sim/echo`), as `GET /_sim/log` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Request path, version segment included.
    pub path: String,
    /// Raw query string, empty when there was none.
    pub query: String,
    /// Request headers as received (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Request body length in bytes.
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the request body.
    pub body_sha256: String,
    /// Response status.
    pub status: u16,
    /// Response body as text, cut at 64 KiB.
    pub response_body: String,
    /// When the request arrived, in unix milliseconds.
    #[serde(default)]
    pub at_ms: u64,
}

impl LogEntry {
    /// The first value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The simulator: shared state plus the control methods. Cheap to clone.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("record", &self.inner.record)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulator with every number AVAILABLE, unlocked and without latency.
    pub fn new(options: SimOptions) -> Self {
        Self {
            inner: Arc::new(Inner::new(options.record)),
        }
    }

    /// The whole HTTP surface: Graph paths, test helpers and the control API.
    pub fn router(&self) -> axum::Router {
        control::router(self.clone())
    }

    /// Locks a number: its sends get Meta's 403 131031 and its health reports
    /// PHONE_NUMBER BLOCKED (unless set explicitly with [`Sim::set_health`]).
    pub fn lock(&self, phone_number_id: &str) {
        self.inner.number(phone_number_id).set_locked(true);
    }

    /// Unlocks a number. An explicitly set health stays as it is.
    pub fn unlock(&self, phone_number_id: &str) {
        self.inner.number(phone_number_id).set_locked(false);
    }

    /// Sets what the Health Status API reports for a number.
    pub fn set_health(&self, phone_number_id: &str, health: Health) {
        self.inner.number(phone_number_id).set_health(health);
    }

    /// Scripts an error for a number's sends, replacing any earlier one.
    pub fn inject_error(&self, phone_number_id: &str, injection: ErrorInjection) {
        self.inner
            .number(phone_number_id)
            .inject_error(Some(injection));
    }

    /// Scripts an error for a number's Health Status API reads (`None`
    /// clears it): an `error.code` with its status, or an exact `body`.
    pub fn inject_health_error(&self, phone_number_id: &str, injection: Option<ErrorInjection>) {
        self.inner
            .number(phone_number_id)
            .inject_health_error(injection);
    }

    /// Removes a number's scripted error.
    pub fn clear_errors(&self, phone_number_id: &str) {
        self.inner.number(phone_number_id).inject_error(None);
    }

    /// Delays every Graph-surface response: for one number, or for all
    /// numbers without their own setting when `phone_number_id` is `None`.
    pub fn set_latency(&self, phone_number_id: Option<&str>, latency: Duration) {
        match phone_number_id {
            Some(id) => self.inner.number(id).set_latency(latency),
            None => self.inner.set_global_latency(latency),
        }
    }

    /// Graph-surface requests received for a number, per kind and in total.
    pub fn counts(&self, phone_number_id: &str) -> RequestCounts {
        self.inner.counts(phone_number_id)
    }

    /// Counts for every number seen so far, keyed by id.
    pub fn all_counts(&self) -> std::collections::BTreeMap<String, RequestCounts> {
        self.inner.all_counts()
    }

    /// The recorded requests, oldest first (the last 1000; empty when
    /// recording is off).
    pub fn log(&self) -> Vec<LogEntry> {
        self.inner.log()
    }

    /// Forgets locks, health, errors, latency, counts and the log.
    pub fn reset(&self) {
        self.inner.reset();
    }

    /// Serves the simulator on `listener` (HTTP/1.1 and HTTP/2 prior
    /// knowledge) until `shutdown` completes, then drains open connections
    /// for a few seconds.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, shutdown).await
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}
