//! `/admin/breakers`: read every breaker that is not closed, and reset,
//! trip (hold) or release (start the ramp of) one by hand. Changes are
//! recorded as transitions with source `operator` and the token's name, and
//! need a bearer token.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::{AdminState, change, client_ip, error};
use crate::breaker::{Breaker, OperatorAction, State as BreakerState};
use crate::engine::{OperatorOutcome, now};

/// Transitions shown with one breaker.
const TRANSITIONS_SHOWN: usize = 10;

/// One breaker as the admin API shows it.
#[derive(Serialize)]
pub(super) struct View {
    pub(super) phone_number_id: String,
    pub(super) key: String,
    pub(super) state: &'static str,
    pub(super) cause_code: i64,
    pub(super) source: &'static str,
    pub(super) since: String,
    pub(super) since_unix_ms: u64,
    pub(super) trips: u32,
    /// The earliest time health may start the ramp (grows with each re-trip).
    pub(super) min_open_until: String,
    pub(super) min_open_until_unix_ms: u64,
    pub(super) fbtrace_id: Option<String>,
    pub(super) wamid: Option<String>,
    pub(super) details: Option<String>,
    pub(super) reason: String,
    pub(super) retry_after_seconds: u64,
    pub(super) version: u64,
    /// Meta's errors from the last BLOCKED health poll.
    pub(super) health_errors: Vec<crate::breaker::HealthError>,
    /// The ramp stage (0: the probe) while ramping or paused.
    pub(super) ramp_stage: Option<u32>,
    /// The stage's sends per second, once past the probe.
    pub(super) ramp_rate: Option<u32>,
    /// When a timed hold ends.
    pub(super) held_until: Option<String>,
    /// The number's WABA, when the store knows it.
    pub(super) waba: Option<String>,
    /// Sends this replica refused for the number since it started.
    pub(super) refused_sends: u64,
}

impl View {
    pub(super) fn of(b: &Breaker, state: &AdminState) -> Self {
        Self {
            phone_number_id: b.key.number().to_owned(),
            key: b.key.storage_id(),
            state: b.state.as_str(),
            cause_code: b.cause.code,
            source: b.cause.source.as_str(),
            since: b.since.to_string(),
            since_unix_ms: b.since.0,
            trips: b.trips,
            min_open_until: b.min_open_until.to_string(),
            min_open_until_unix_ms: b.min_open_until.0,
            fbtrace_id: b.cause.fbtrace_id.clone(),
            wamid: b.cause.wamid.clone(),
            details: b.cause.details.clone(),
            reason: b.reason.clone(),
            retry_after_seconds: b.retry_after(now()).as_secs(),
            version: b.version,
            health_errors: b.health_errors.clone(),
            ramp_stage: b.ramp.map(|r| r.stage),
            ramp_rate: b.ramp.and_then(|r| match r.admit {
                crate::breaker::Admission::PerSecond(rate) => Some(rate),
                crate::breaker::Admission::Probe => None,
            }),
            held_until: match (b.state, b.release) {
                (BreakerState::Held, crate::breaker::Release::At(until)) => Some(until.to_string()),
                _ => None,
            },
            waba: None,
            refused_sends: state.breakers.refused_count(b.key.number()),
        }
    }
}

/// Views of `breakers`, each with its WABA from the store (unknown, null,
/// when the store cannot say).
pub(super) async fn views(state: &AdminState, breakers: &[Breaker]) -> Vec<View> {
    let links = breakers
        .iter()
        .map(|b| state.breakers.link_of(b.key.number()));
    let links = futures_util::future::join_all(links).await;
    breakers
        .iter()
        .zip(links)
        .map(|(b, link)| View {
            waba: link.ok().flatten().map(|link| link.waba),
            ..View::of(b, state)
        })
        .collect()
}

/// Sorts `breakers` as the list shows them: the latest change first.
pub(super) fn newest_first(breakers: &mut [Breaker]) {
    breakers.sort_by(|a, b| {
        b.since
            .cmp(&a.since)
            .then_with(|| a.key.storage_id().cmp(&b.key.storage_id()))
    });
}

/// `GET /admin/breakers[?state=&waba=&cause=]`.
pub(super) async fn list(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(rejection) = change::check_query(&query, &["state", "waba", "cause"]) {
        return rejection.into_response();
    }
    let wanted_state = match query.get("state").map(String::as_str) {
        None => None,
        Some(word @ ("open" | "held" | "ramping")) => Some(word.to_owned()),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("state must be open, held or ramping, got {other:?}"),
            );
        }
    };
    let cause = match query.get("cause").map(|raw| (raw, raw.parse::<i64>())) {
        None => None,
        Some((_, Ok(code))) => Some(code),
        Some((raw, Err(_))) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cause must be a Graph error code such as 131031, got {raw:?}"),
            );
        }
    };
    let mut breakers: Vec<Breaker> = state
        .breakers
        .list()
        .into_iter()
        .filter(|b| {
            wanted_state
                .as_deref()
                .is_none_or(|s| b.state.as_str() == s)
        })
        .filter(|b| cause.is_none_or(|code| b.cause.code == code))
        .collect();
    newest_first(&mut breakers);
    let mut views = views(&state, &breakers).await;
    if let Some(waba) = query.get("waba") {
        if let Err(rejection) = change::check_id(waba, "WABA") {
            return rejection.into_response();
        }
        views.retain(|view| view.waba.as_deref() == Some(waba.as_str()));
    }
    Json(json!({ "breakers": views })).into_response()
}

/// `GET /admin/breakers/{id}`.
pub(super) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    if let Err(rejection) = change::check_id(&id, "phone number") {
        return rejection.into_response();
    }
    let Some(breaker) = state.breakers.get(&id) else {
        return not_found(&id);
    };
    let mut view = json!(View::of(&breaker, &state));
    // The number's WABA and any WABA-level gate, from the store: shown as
    // unknown (null) when the store cannot say.
    let link = state.breakers.link_of(&id).await.ok().flatten();
    let gate = match &link {
        Some(link) => state
            .breakers
            .waba_record(&link.waba)
            .await
            .ok()
            .and_then(|record| record.gate),
        None => None,
    };
    view["waba"] = json!(link.as_ref().map(|l| &l.waba));
    view["display_phone_number"] = json!(link.as_ref().and_then(|l| l.display.as_ref()));
    view["waba_gate"] = json!(gate);
    // What this replica's health poller knows: next poll, last result, or
    // why the number is not polled (no token, another replica's lease).
    view["health"] = json!(state.breakers.health_note(&id));
    view["retry_after_seconds"] = json!(state.breakers.retry_after(&breaker, now()).as_secs());
    view["transitions"] = match state.breakers.audit(&id, TRANSITIONS_SHOWN).await {
        Ok(lines) => json!(super::audit::entries(&lines)),
        Err(_) => serde_json::Value::Null,
    };
    Json(view).into_response()
}

/// `POST /admin/breakers/{id}/{action}`: `reset` (closed now), `trip`
/// (held until an operator lets go, or for `ttl`) or `release` (start the
/// ramp now).
pub(super) async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = (action.as_str(), id.as_str(), "phone number");
    let client = client_ip(&extensions);
    let action = match change::prepare(&state.auth, request, client, &headers, &body) {
        Ok(action) => action,
        Err(rejection) => return rejection.into_response(),
    };
    if !matches!(action, OperatorAction::Trip { .. }) && state.breakers.get(&id).is_none() {
        return not_found(&id);
    }
    match state.breakers.operator(&id, action).await {
        Ok(outcome) => {
            let (status, word) = outcome_word(&outcome);
            // With its WABA, like the list and the page show it.
            let breaker = match state.breakers.get(&id) {
                Some(b) => views(&state, std::slice::from_ref(&b)).await.pop(),
                None => None,
            };
            let closed = breaker.is_none();
            (
                status,
                Json(json!({ "outcome": word, "closed": closed, "breaker": breaker })),
            )
                .into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("breaker store: {e}"),
        ),
    }
}

/// The status and the word for what a change did.
pub(super) fn outcome_word(outcome: &OperatorOutcome) -> (StatusCode, &'static str) {
    match outcome {
        OperatorOutcome::Changed(_) => (StatusCode::OK, "changed"),
        OperatorOutcome::Unchanged => (StatusCode::OK, "unchanged"),
        // Applied here; the store has it once it is reachable again.
        OperatorOutcome::Pending => (StatusCode::ACCEPTED, "pending"),
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no open, held or ramping breaker for phone number {id}"),
    )
}
