//! Webhook deliveries signed like Meta's (reference §5.2): the raw body,
//! `Content-Type: application/json` and `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256(app secret, raw body)>`.
//!
//! Bodies are serialised the way Meta sends them, with `/` escaped as `\/`
//! and non-ASCII as `\uXXXX`, so a verifier that re-serialises JSON instead
//! of hashing the raw bytes fails against the simulator as it would against
//! Meta. Deliveries go over plain `http://` only: the simulator is meant to
//! call a receiver on the same machine (loopback), although it does not
//! check the host.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

mod payload;

/// How long a delivery may take, connect to response head.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// An app secret the simulator signs with: printed as `<redacted>`, so a
/// request logged by mistake does not show it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct AppSecret(String);

impl AppSecret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which webhook to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// A `messages` change with one `failed` status carrying `code`.
    StatusFailed,
    /// An `account_update` change (`DISABLED_UPDATE`, `ACCOUNT_RESTRICTION`
    /// or `ACCOUNT_VIOLATION`).
    AccountUpdate,
    /// `body` sent byte for byte.
    Raw,
}

/// A webhook to deliver, as `POST /_sim/webhooks` takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Receiver URL; `http://` only, meant for loopback.
    pub url: String,
    /// The app secret that keys the signature.
    pub app_secret: AppSecret,
    /// Which webhook to send.
    pub kind: WebhookKind,
    /// `metadata.phone_number_id` (required for `status_failed` unless
    /// `phone_number_ids` is given).
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// For `status_failed`: a batch, one `messages` change per number.
    #[serde(default)]
    pub phone_number_ids: Vec<String>,
    /// Error code of a failed status; default 131031.
    #[serde(default)]
    pub code: Option<i64>,
    /// `entry[].id`; default the simulator's WABA, `100000000000001`.
    #[serde(default)]
    pub waba_id: Option<String>,
    /// `statuses[].recipient_id`; default `15550009999`.
    #[serde(default)]
    pub recipient_id: Option<String>,
    /// `account_update` event; default `DISABLED_UPDATE`.
    #[serde(default)]
    pub event: Option<String>,
    /// `ban_info.waba_ban_state` for `DISABLED_UPDATE`; default `DISABLE`.
    #[serde(default)]
    pub ban_state: Option<String>,
    /// `restriction_type` for `ACCOUNT_RESTRICTION`; default
    /// `RESTRICTED_BIZ_INITIATED_MESSAGING`.
    #[serde(default)]
    pub restriction_type: Option<String>,
    /// Seconds from now to a restriction's `expiration`; default 7 days.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// How many times the same signed body is delivered (Meta's retries, a
    /// copy per subscribed app); default 1, at most 10.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Sign with a secret other than `app_secret`: a delivery the receiver
    /// must refuse.
    #[serde(default)]
    pub bad_signature: bool,
    /// `violation_type` for `ACCOUNT_VIOLATION`; default `SCAM`.
    #[serde(default)]
    pub violation_type: Option<String>,
    /// The exact body for `raw`.
    #[serde(default)]
    pub body: Option<String>,
}

/// The outcome of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The receiver's HTTP status (to the last delivery, when repeated).
    pub status: u16,
    /// The status of every delivery, in order.
    pub statuses: Vec<u16>,
    /// The `X-Hub-Signature-256` value that was sent.
    pub signature: String,
}

/// Why a webhook could not be built or delivered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an absolute `http://` URL.
    #[error("url must be an absolute http:// url: {0}")]
    InvalidUrl(String),
    /// A field this kind needs is missing or malformed.
    #[error("{0}")]
    InvalidField(&'static str),
    /// An `account_update` event the simulator cannot build.
    #[error(
        "unsupported account_update event {0}; use DISABLED_UPDATE, ACCOUNT_RESTRICTION or ACCOUNT_VIOLATION"
    )]
    UnknownEvent(String),
    /// Connecting or sending failed.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// The receiver did not answer in time.
    #[error("delivery timed out")]
    Timeout,
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed by `app_secret`.
pub fn sign_webhook(app_secret: &str, body: &[u8]) -> String {
    crate::graph::sign(app_secret, body)
}

/// The most deliveries of one body a request may ask for.
const MAX_REPEAT: u32 = 10;

/// Builds, signs and sends a webhook (`repeat` times); answers with the
/// receiver's statuses.
pub async fn send_webhook(request: &WebhookRequest) -> Result<WebhookDelivery, WebhookError> {
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|_| WebhookError::InvalidUrl(request.url.clone()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(WebhookError::InvalidUrl(request.url.clone()));
    }
    let repeat = request.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(WebhookError::InvalidField("repeat is between 1 and 10"));
    }
    let body = Bytes::from(payload::build(request)?);
    let secret = request.app_secret.expose();
    let signature = if request.bad_signature {
        sign_webhook(&format!("{secret}-not-the-app-secret"), &body)
    } else {
        sign_webhook(secret, &body)
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut statuses = Vec::new();
    for _ in 0..repeat {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-hub-signature-256", &signature)
            .header(http::header::USER_AGENT, "facebookexternalua")
            .body(Full::new(body.clone()))
            .map_err(|e| WebhookError::Delivery(e.to_string()))?;
        let exchange = async {
            let response = client
                .request(req)
                .await
                .map_err(|e| WebhookError::Delivery(chain(&e)))?;
            let status = response.status().as_u16();
            // Read the answer (bounded) so the receiver sees a complete
            // exchange.
            let _ = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await;
            Ok::<u16, WebhookError>(status)
        };
        let status = tokio::time::timeout(DELIVERY_TIMEOUT, exchange)
            .await
            .map_err(|_| WebhookError::Timeout)??;
        statuses.push(status);
    }
    Ok(WebhookDelivery {
        status: statuses.last().copied().unwrap_or_default(),
        statuses,
        signature,
    })
}

/// The error and its sources, since the client's top-level message alone
/// ("client error (Connect)") does not say what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
