//! `GET /admin/audit[?number=&limit=]`: the store's audit trail, newest
//! first: every breaker transition with its source, reason and, for an
//! operator's change, the name of the token used.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AdminState, change, error};

/// Lines returned when no `limit` is given, and the most one may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The audit lines as JSON; a line that does not parse (written by a future
/// version, say) is shown as it is under `raw` rather than dropped.
pub(super) fn entries(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| json!({ "raw": line })))
        .collect()
}

pub(super) async fn list(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(rejection) = change::check_query(&query, &["number", "limit"]) {
        return rejection.into_response();
    }
    let limit = match change::limit(&query, DEFAULT_LIMIT, MAX_LIMIT) {
        Ok(limit) => limit,
        Err(rejection) => return rejection.into_response(),
    };
    let lines = match query.get("number") {
        Some(number) => {
            if let Err(rejection) = change::check_id(number, "phone number") {
                return rejection.into_response();
            }
            state.breakers.audit(number, limit).await
        }
        None => state.breakers.recent_audit(limit).await,
    };
    match lines {
        Ok(lines) => Json(json!({ "entries": entries(&lines) })).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("breaker store: {e}"),
        ),
    }
}
