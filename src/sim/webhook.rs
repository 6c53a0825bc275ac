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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{codes, health, ids};
use crate::config::Secret;

/// How long a delivery may take, connect to response head.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Meta's help page for error codes, quoted in status errors.
const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

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
    pub app_secret: Secret,
    /// Which webhook to send.
    pub kind: WebhookKind,
    /// `metadata.phone_number_id` (required for `status_failed`).
    #[serde(default)]
    pub phone_number_id: Option<String>,
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
    /// The receiver's HTTP status.
    pub status: u16,
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
    // HMAC accepts keys of any length, so this cannot fail; the fallback
    // only keeps the function total.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return String::from("sha256=");
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Builds, signs and sends a webhook; answers with the receiver's status.
pub async fn send_webhook(request: &WebhookRequest) -> Result<WebhookDelivery, WebhookError> {
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|_| WebhookError::InvalidUrl(request.url.clone()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(WebhookError::InvalidUrl(request.url.clone()));
    }
    let body = body(request)?;
    let signature = sign_webhook(request.app_secret.expose(), &body);
    let req = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-hub-signature-256", &signature)
        .header(http::header::USER_AGENT, "facebookexternalua")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| WebhookError::Delivery(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| WebhookError::Delivery(chain(&e)))?;
        let status = response.status().as_u16();
        // Read the answer (bounded) so the receiver sees a complete exchange.
        let _ = Limited::new(response.into_body(), 1024 * 1024)
            .collect()
            .await;
        Ok(WebhookDelivery { status, signature })
    };
    tokio::time::timeout(DELIVERY_TIMEOUT, exchange)
        .await
        .map_err(|_| WebhookError::Timeout)?
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

/// The exact bytes that will be signed and sent.
pub(crate) fn body(request: &WebhookRequest) -> Result<Vec<u8>, WebhookError> {
    match request.kind {
        WebhookKind::Raw => request
            .body
            .as_ref()
            .map(|b| b.as_bytes().to_vec())
            .ok_or(WebhookError::InvalidField("raw needs body")),
        WebhookKind::StatusFailed => status_failed(request).map(|v| meta_json(&v)),
        WebhookKind::AccountUpdate => account_update(request).map(|v| meta_json(&v)),
    }
}

#[derive(Serialize)]
struct Notification<V> {
    object: &'static str,
    entry: [Entry<V>; 1],
}

#[derive(Serialize)]
struct Entry<V> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<u64>,
    changes: [Change<V>; 1],
}

#[derive(Serialize)]
struct Change<V> {
    value: V,
    field: &'static str,
}

fn notification<V>(
    request: &WebhookRequest,
    time: Option<u64>,
    field: &'static str,
    value: V,
) -> Notification<V> {
    let id = request
        .waba_id
        .clone()
        .unwrap_or_else(|| health::WABA_ID.to_owned());
    Notification {
        object: "whatsapp_business_account",
        entry: [Entry {
            id,
            time,
            changes: [Change { value, field }],
        }],
    }
}

#[derive(Serialize)]
struct StatusValue {
    messaging_product: &'static str,
    metadata: Metadata,
    statuses: [FailedStatus; 1],
}

#[derive(Serialize)]
struct Metadata {
    display_phone_number: String,
    phone_number_id: String,
}

#[derive(Serialize)]
struct FailedStatus {
    id: String,
    status: &'static str,
    timestamp: String,
    recipient_id: String,
    errors: [StatusError; 1],
}

#[derive(Serialize)]
struct StatusError {
    code: i64,
    title: &'static str,
    message: &'static str,
    error_data: Details,
    href: &'static str,
}

#[derive(Serialize)]
struct Details {
    details: &'static str,
}

fn status_failed(request: &WebhookRequest) -> Result<Notification<StatusValue>, WebhookError> {
    let id = request
        .phone_number_id
        .as_deref()
        .filter(|id| super::graph::is_id(id))
        .ok_or(WebhookError::InvalidField(
            "status_failed needs a numeric phone_number_id",
        ))?;
    let code = request.code.unwrap_or(131031);
    let title = codes::title(code);
    let value = StatusValue {
        messaging_product: "whatsapp",
        metadata: Metadata {
            display_phone_number: health::display_number(id),
            phone_number_id: id.to_owned(),
        },
        statuses: [FailedStatus {
            id: ids::wamid(),
            status: "failed",
            timestamp: unix_now().to_string(),
            recipient_id: request
                .recipient_id
                .clone()
                .unwrap_or_else(|| "15550009999".to_owned()),
            errors: [StatusError {
                code,
                title,
                message: title,
                error_data: Details {
                    details: codes::details(code),
                },
                href: ERROR_CODES_HREF,
            }],
        }],
    };
    Ok(notification(request, None, "messages", value))
}

#[derive(Serialize)]
struct AccountUpdate {
    event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ban_info: Option<BanInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restriction_info: Option<[Restriction; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    violation_info: Option<Violation>,
}

#[derive(Serialize)]
struct BanInfo {
    waba_ban_state: String,
    waba_ban_date: String,
}

#[derive(Serialize)]
struct Restriction {
    restriction_type: String,
    expiration: u64,
}

#[derive(Serialize)]
struct Violation {
    violation_type: String,
}

fn account_update(request: &WebhookRequest) -> Result<Notification<AccountUpdate>, WebhookError> {
    let now = unix_now();
    let event = request
        .event
        .clone()
        .unwrap_or_else(|| "DISABLED_UPDATE".to_owned());
    let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_owned());
    let mut value = AccountUpdate {
        event,
        ban_info: None,
        restriction_info: None,
        violation_info: None,
    };
    match value.event.as_str() {
        "DISABLED_UPDATE" => {
            value.ban_info = Some(BanInfo {
                waba_ban_state: or(&request.ban_state, "DISABLE"),
                waba_ban_date: text_date(now),
            });
        }
        "ACCOUNT_RESTRICTION" => {
            value.restriction_info = Some([Restriction {
                restriction_type: or(
                    &request.restriction_type,
                    "RESTRICTED_BIZ_INITIATED_MESSAGING",
                ),
                expiration: now + 7 * 24 * 3600,
            }]);
        }
        "ACCOUNT_VIOLATION" => {
            value.violation_info = Some(Violation {
                violation_type: or(&request.violation_type, "SCAM"),
            });
        }
        other => return Err(WebhookError::UnknownEvent(other.to_owned())),
    }
    Ok(notification(request, Some(now), "account_update", value))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A date like Meta's `waba_ban_date`: "August 14, 2026" (UTC).
fn text_date(unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // Days to civil date, after Howard Hinnant's `civil_from_days`.
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS
        .get((month - 1) as usize)
        .copied()
        .unwrap_or("January");
    format!("{name} {day}, {year}")
}

/// Compact JSON with Meta's escaping: `/` as `\/`, non-ASCII as `\uXXXX`.
/// Both characters can only occur inside strings in compact JSON, so the
/// rewrite cannot touch the structure.
fn meta_json<T: Serialize>(value: &T) -> Vec<u8> {
    let text = String::from_utf8(super::answer::json_bytes(value).to_vec()).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests;
