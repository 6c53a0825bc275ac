//! Webhook bodies: Meta's notification envelope around a `messages` or
//! `account_update` change, serialised with Meta's escaping.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{WebhookError, WebhookKind, WebhookRequest};
use crate::sim::{codes, health, ids};

/// Meta's help page for error codes, quoted in status errors.
const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

/// The exact bytes that will be signed and sent.
pub(crate) fn build(request: &WebhookRequest) -> Result<Vec<u8>, WebhookError> {
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
    changes: Vec<Change<V>>,
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
    batch(request, time, field, vec![value])
}

/// One entry with a change per value: several numbers in one delivery.
fn batch<V>(
    request: &WebhookRequest,
    time: Option<u64>,
    field: &'static str,
    values: Vec<V>,
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
            changes: values
                .into_iter()
                .map(|value| Change { value, field })
                .collect(),
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
    let ids: Vec<&str> = if request.phone_number_ids.is_empty() {
        request.phone_number_id.as_deref().into_iter().collect()
    } else {
        request
            .phone_number_ids
            .iter()
            .map(String::as_str)
            .collect()
    };
    if ids.is_empty() || !ids.iter().all(|id| crate::sim::route::is_id(id)) {
        return Err(WebhookError::InvalidField(
            "status_failed needs a numeric phone_number_id (or phone_number_ids)",
        ));
    }
    let values = ids
        .into_iter()
        .map(|id| failed_value(request, id))
        .collect();
    Ok(batch(request, None, "messages", values))
}

/// One number's `messages` change with one failed status.
fn failed_value(request: &WebhookRequest, id: &str) -> StatusValue {
    let code = request.code.unwrap_or(131031);
    let title = codes::title(code);
    StatusValue {
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
    }
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
                expiration: now + request.expires_in.unwrap_or(7 * 24 * 3600),
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
pub(super) fn text_date(unix_secs: u64) -> String {
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
pub(super) fn meta_json<T: Serialize>(value: &T) -> Vec<u8> {
    let text =
        String::from_utf8(crate::sim::answer::json_bytes(value).to_vec()).unwrap_or_default();
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
