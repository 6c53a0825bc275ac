//! `/admin/breakers`: read every breaker that is not closed, and reset,
//! trip or release (start the ramp of) one by hand. Changes are recorded as transitions with source
//! `operator` and need `Authorization: Bearer <admin.token>`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AdminState;
use crate::breaker::{Breaker, OperatorAction};
use crate::engine::{OperatorOutcome, now};

/// One breaker as the admin API shows it.
#[derive(Serialize)]
struct View {
    phone_number_id: String,
    key: String,
    state: &'static str,
    cause_code: i64,
    source: &'static str,
    since: String,
    since_unix_ms: u64,
    trips: u32,
    /// The earliest time health may start the ramp (grows with each re-trip).
    min_open_until: String,
    min_open_until_unix_ms: u64,
    fbtrace_id: Option<String>,
    wamid: Option<String>,
    details: Option<String>,
    reason: String,
    retry_after_seconds: u64,
    version: u64,
    /// Meta's errors from the last BLOCKED health poll.
    health_errors: Vec<crate::breaker::HealthError>,
    /// The ramp stage (0: the probe) while ramping or paused.
    ramp_stage: Option<u32>,
    /// The stage's sends per second, once past the probe.
    ramp_rate: Option<u32>,
}

impl View {
    fn of(b: &Breaker) -> Self {
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
        }
    }
}

pub(super) async fn list(State(state): State<AdminState>) -> Response {
    let breakers: Vec<View> = state.breakers.list().iter().map(View::of).collect();
    Json(json!({ "breakers": breakers })).into_response()
}

pub(super) async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    let Some(breaker) = state.breakers.get(&id) else {
        return not_found(&id);
    };
    let mut view = json!(View::of(&breaker));
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
    Json(view).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    reason: String,
}

/// `POST /admin/breakers/{id}/{action}`: `reset` (closed now), `trip`
/// (held until an operator lets go) or `release` (start the ramp now).
pub(super) async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action: fn(String) -> OperatorAction = match action.as_str() {
        "reset" => |reason| OperatorAction::Reset { reason },
        "trip" => |reason| OperatorAction::Trip { reason },
        "release" => |reason| OperatorAction::Release { reason },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no action {action:?}: reset, trip or release"),
            );
        }
    };
    change(state, id, headers, body, action).await
}

async fn change(
    state: AdminState,
    id: String,
    headers: HeaderMap,
    body: Bytes,
    action: impl FnOnce(String) -> OperatorAction,
) -> Response {
    if let Some(response) = unauthorized(&state, &headers) {
        return response;
    }
    if let Some(response) = invalid_id(&id) {
        return response;
    }
    let change: Change = if body.iter().all(u8::is_ascii_whitespace) {
        Change {
            reason: String::new(),
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(change) => change,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("body must be JSON like {{\"reason\": \"...\"}}: {e}"),
                );
            }
        }
    };
    let action = action(change.reason);
    if matches!(action, OperatorAction::Reset { .. }) && state.breakers.get(&id).is_none() {
        return not_found(&id);
    }
    match state.breakers.operator(&id, action).await {
        Ok(outcome) => {
            let (status, word) = match outcome {
                OperatorOutcome::Changed(_) => (StatusCode::OK, "changed"),
                OperatorOutcome::Unchanged => (StatusCode::OK, "unchanged"),
                // Applied here; the store has it once it is reachable again.
                OperatorOutcome::Pending => (StatusCode::ACCEPTED, "pending"),
            };
            let breaker = state.breakers.get(&id).map(|b| View::of(&b));
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

/// Changes need the configured bearer token, compared in constant time.
/// Returns the rejection, if any.
fn unauthorized(state: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = state.token.as_deref() else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin changes are disabled: set admin.token (WAGATE_ADMIN__TOKEN) to enable them",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        None
    } else {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(response)
    }
}

/// The rejection of an id that is not a phone number id, if it is not.
fn invalid_id(id: &str) -> Option<Response> {
    let valid = !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit());
    (!valid).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "a phone number id is a string of digits",
        )
    })
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no open, held or ramping breaker for phone number {id}"),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
