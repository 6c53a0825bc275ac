//! What every change endpoint shares: the body `{"reason": "...", "ttl":
//! "2h"}`, the action named in the path, and the checks of ids and queries.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use super::Rejection;
use crate::breaker::OperatorAction;

/// The longest reason kept: a sentence or a ticket reference, not a file.
const REASON_MAX: usize = 1000;

/// The longest hold a `ttl` may ask for.
const TTL_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    reason: String,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

/// The operator action `action` (from the path) with `body`, done by `by`.
fn parse(action: &str, body: &[u8], by: String) -> Result<OperatorAction, Rejection> {
    let bad = |message: String| Rejection::new(StatusCode::BAD_REQUEST, message);
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body {
            reason: String::new(),
            ttl: None,
        }
    } else {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "body must be JSON like {{\"reason\": \"...\", \"ttl\": \"2h\"}}: {e}"
            ))
        })?
    };
    if body.reason.chars().count() > REASON_MAX {
        return Err(bad(format!(
            "reason is longer than {REASON_MAX} characters"
        )));
    }
    let reason = if body.reason.trim().is_empty() {
        format!("{action} by {by}")
    } else {
        body.reason.trim().to_owned()
    };
    let action = match (action, body.ttl) {
        ("reset", None) => OperatorAction::reset(reason),
        ("release", None) => OperatorAction::release(reason),
        ("trip", ttl) => {
            if let Some(ttl) = ttl
                && (ttl.is_zero() || ttl > TTL_MAX)
            {
                return Err(bad("ttl must be between 1s and 366d".to_owned()));
            }
            OperatorAction::Trip {
                reason,
                by: None,
                ttl,
            }
        }
        ("reset" | "release", Some(_)) => {
            return Err(bad(format!("ttl applies to trip only, not to {action}")));
        }
        _ => {
            return Err(Rejection::new(
                StatusCode::NOT_FOUND,
                format!("no action {action:?}: reset, trip or release"),
            ));
        }
    };
    Ok(action.by(by))
}

/// What every change endpoint checks first, in this order: the action word
/// (so a typo is told apart from a refusal), the token, the id (a `what`
/// id: digits), then the body. Returns the action, done by the token's name.
pub(super) fn prepare(
    auth: &super::auth::Auth,
    request: (&str, &str, &str),
    client: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<OperatorAction, Rejection> {
    let (action, id, what) = request;
    known_action(action)?;
    let by = auth.check(headers, client)?;
    check_id(id, what)?;
    parse(action, body, by)
}

/// Whether `action` is one the change endpoints know.
fn known_action(action: &str) -> Result<(), Rejection> {
    match action {
        "reset" | "trip" | "release" => Ok(()),
        _ => Err(Rejection::new(
            StatusCode::NOT_FOUND,
            format!("no action {action:?}: reset, trip or release"),
        )),
    }
}

/// The rejection of an id that is not a Graph id (a phone number id or a
/// WABA id: digits), if it is not.
pub(super) fn check_id(id: &str, what: &str) -> Result<(), Rejection> {
    let valid = !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("a {what} id is a string of digits"),
        ))
    }
}

/// Rejects query parameters other than `allowed`, naming the first unknown
/// one.
pub(super) fn check_query(
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), Rejection> {
    let mut unknown: Vec<&String> = query
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(key) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown query parameter {key:?}, expected one of: {}",
                allowed.join(", ")
            ),
        )),
    }
}

/// `query[name]` as a number of at most `max`, or `default`.
pub(super) fn limit(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, Rejection> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {max}, got {raw:?}"),
            )),
        },
    }
}
