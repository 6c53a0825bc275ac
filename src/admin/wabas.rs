//! `/admin/wabas`: the WhatsApp Business Accounts the store knows numbers
//! of, and an operator's reset, trip (hold) or release of all of a WABA's
//! numbers at once.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::breakers::outcome_word;
use super::{AdminState, change, client_ip, error};
use crate::breaker::OperatorAction;
use crate::engine::{OperatorOutcome, WabaRecord};

fn unavailable(e: &impl std::fmt::Display) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("breaker store: {e}"),
    )
}

/// `GET /admin/wabas`: each WABA with how many of its numbers are known and
/// how many are not closed, and its gate. A WABA held (or restricted) before
/// any number of it was seen is listed too, with no numbers.
pub(super) async fn list(State(state): State<AdminState>) -> Response {
    let (links, records) =
        match futures_util::future::try_join(state.breakers.links(), state.breakers.waba_records())
            .await
        {
            Ok(found) => found,
            Err(e) => return unavailable(&e),
        };
    let mut records: BTreeMap<String, WabaRecord> = records.into_iter().collect();
    let mut by_waba: BTreeMap<String, (usize, usize)> =
        records.keys().map(|waba| (waba.clone(), (0, 0))).collect();
    for link in &links {
        let counts = by_waba.entry(link.waba.clone()).or_default();
        counts.0 += 1;
        if state.breakers.get(&link.number).is_some() {
            counts.1 += 1;
        }
    }
    let wabas: Vec<_> = by_waba
        .into_iter()
        .map(|(waba, (numbers, not_closed))| {
            let gate = records.remove(&waba).and_then(|r| r.gate);
            json!({
                "waba": waba,
                "numbers": numbers,
                "not_closed": not_closed,
                "gate": gate,
            })
        })
        .collect();
    Json(json!({ "wabas": wabas })).into_response()
}

/// `GET /admin/wabas/{id}`: the WABA's gate, restrictions and account
/// events, and each known number with its breaker's state.
pub(super) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    if let Err(rejection) = change::check_id(&id, "WABA") {
        return rejection.into_response();
    }
    let (numbers, record) = match futures_util::future::try_join(
        state.breakers.numbers_of(&id),
        state.breakers.waba_record(&id),
    )
    .await
    {
        Ok(found) => found,
        Err(e) => return unavailable(&e),
    };
    if numbers.is_empty() && record == Default::default() {
        return not_found(&id);
    }
    let numbers: Vec<_> = numbers
        .iter()
        .map(|link| {
            let breaker = state.breakers.get(&link.number);
            json!({
                "phone_number_id": link.number,
                "display_phone_number": link.display,
                "state": breaker.as_ref().map_or("closed", |b| b.state.as_str()),
                "cause_code": breaker.as_ref().map(|b| b.cause.code),
                "since": breaker.as_ref().map(|b| b.since.to_string()),
            })
        })
        .collect();
    Json(json!({
        "waba": id,
        "gate": record.gate,
        "restrictions": record.restrictions,
        "events": record.events,
        "numbers": numbers,
    }))
    .into_response()
}

/// `POST /admin/wabas/{id}/{action}`: the action on every known number of
/// the WABA, and on its gate (a trip gates numbers learned later too).
pub(super) async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = (action.as_str(), id.as_str(), "WABA");
    let client = client_ip(&extensions);
    let action = match change::prepare(&state.auth, request, client, &headers, &body) {
        Ok(action) => action,
        Err(rejection) => return rejection.into_response(),
    };
    if !matches!(action, OperatorAction::Trip { .. }) {
        // Letting go of a WABA nothing is known of is a typo, not a no-op.
        let known = futures_util::future::try_join(
            state.breakers.numbers_of(&id),
            state.breakers.waba_record(&id),
        )
        .await;
        match known {
            Ok((numbers, record)) if numbers.is_empty() && record == Default::default() => {
                return not_found(&id);
            }
            Ok(_) => {}
            Err(e) => return unavailable(&e),
        }
    }
    let outcome = match state.breakers.waba_operator(&id, action).await {
        Ok(outcome) => outcome,
        Err(e) => return unavailable(&e),
    };
    let mut status = StatusCode::OK;
    // A trip of a WABA with no known number yet still gates the numbers
    // learned later: that is a change.
    let mut changed = outcome.gate_changed;
    let numbers: Vec<_> = outcome
        .numbers
        .iter()
        .map(|(number, outcome)| match outcome {
            Ok(outcome) => {
                let (code, word) = outcome_word(outcome);
                if code == StatusCode::ACCEPTED && status == StatusCode::OK {
                    status = code;
                }
                changed |= !matches!(outcome, OperatorOutcome::Unchanged);
                json!({ "phone_number_id": number, "outcome": word })
            }
            Err(e) => {
                status = StatusCode::SERVICE_UNAVAILABLE;
                json!({ "phone_number_id": number, "outcome": "failed", "error": e.to_string() })
            }
        })
        .collect();
    let word = if changed { "changed" } else { "unchanged" };
    (
        status,
        Json(json!({ "waba": id, "outcome": word, "numbers": numbers })),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no WABA {id} is known: no number of it was seen and nothing happened to it"),
    )
}
