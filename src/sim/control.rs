//! The control API under `/_sim/` (JSON in and out) and the router that puts
//! the whole surface together.
//!
//! Every handler here does what the matching [`Sim`] method does, after
//! validating its input; bad input gets 400 `{"error": "..."}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, any, get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::answer::Answer;
use super::graph;
use super::route::is_id;
use super::webhook::{WebhookError, WebhookRequest, send_webhook};
use super::{ErrorInjection, Health, Sim, helpers};

/// The whole HTTP surface: control API, test helpers, then the Graph
/// surface as the fallback for every other path.
pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/numbers/{id}/lock", only(post(lock)))
        .route("/_sim/numbers/{id}/unlock", only(post(unlock)))
        .route("/_sim/numbers/{id}/health", only(put(set_health)))
        .route(
            "/_sim/numbers/{id}/health_error",
            only(put(inject_health_error).delete(clear_health_error)),
        )
        .route(
            "/_sim/numbers/{id}/errors",
            only(post(inject_error).delete(clear_errors)),
        )
        .route("/_sim/numbers/{id}/requests", only(get(counts)))
        .route("/_sim/requests", only(get(all_counts)))
        .route("/_sim/latency", only(put(set_latency)))
        .route("/_sim/log", only(get(log)))
        .route("/_sim/webhooks", only(post(webhook)))
        .route("/_sim/reset", only(post(reset)))
        .route("/_sim/echo/{*rest}", any(helpers::echo))
        .route("/_sim/blob", only(get(helpers::blob)))
        .route("/_sim/broken", only(get(helpers::broken)))
        .route("/_sim/{*rest}", any(unknown))
        .fallback(graph::handle)
        .with_state(sim)
}

/// Answers a wrong method on a control route in JSON like everything else.
fn only(route: MethodRouter<Sim>) -> MethodRouter<Sim> {
    route.fallback(|| async {
        Answer::control_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint",
        )
    })
}

async fn unknown() -> Answer {
    Answer::control_error(StatusCode::NOT_FOUND, "unknown simulator endpoint")
}

fn bad_request(message: impl Into<String>) -> Answer {
    Answer::control_error(StatusCode::BAD_REQUEST, message)
}

fn check_id(id: &str) -> Result<(), Answer> {
    if is_id(id) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "phone number id must be digits, got {id:?}"
        )))
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

fn ok(value: serde_json::Value) -> Answer {
    Answer::json(StatusCode::OK, &value)
}

/// Lets handlers use `?` on validation and still return one type.
fn respond(result: Result<Answer, Answer>) -> Answer {
    result.unwrap_or_else(|e| e)
}

async fn lock(State(sim): State<Sim>, Path(id): Path<String>) -> Answer {
    respond(check_id(&id).map(|()| {
        sim.lock(&id);
        ok(json!({ "phone_number_id": id, "locked": true }))
    }))
}

async fn unlock(State(sim): State<Sim>, Path(id): Path<String>) -> Answer {
    respond(check_id(&id).map(|()| {
        sim.unlock(&id);
        ok(json!({ "phone_number_id": id, "locked": false }))
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    can_send_message: Health,
}

async fn set_health(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Answer {
    respond((|| -> Result<Answer, Answer> {
        check_id(&id)?;
        let HealthBody { can_send_message } = parse(&body)?;
        sim.set_health(&id, can_send_message);
        Ok(ok(
            json!({ "phone_number_id": id, "can_send_message": can_send_message }),
        ))
    })())
}

async fn inject_health_error(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    respond((|| -> Result<Answer, Answer> {
        check_id(&id)?;
        let injection: ErrorInjection = parse(&body)?;
        let shown = json!({ "phone_number_id": id, "health_error": &injection });
        sim.inject_health_error(&id, Some(injection));
        Ok(ok(shown))
    })())
}

async fn clear_health_error(State(sim): State<Sim>, Path(id): Path<String>) -> Answer {
    respond(check_id(&id).map(|()| {
        sim.inject_health_error(&id, None);
        ok(json!({ "phone_number_id": id, "health_error": null }))
    }))
}

async fn inject_error(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Answer {
    respond((|| -> Result<Answer, Answer> {
        check_id(&id)?;
        let injection: ErrorInjection = parse(&body)?;
        if let Some(status) = injection.http_status
            && !(200..=599).contains(&status)
        {
            return Err(bad_request("http_status must be between 200 and 599"));
        }
        let shown = json!({ "phone_number_id": id, "error": &injection });
        sim.inject_error(&id, injection);
        Ok(ok(shown))
    })())
}

async fn clear_errors(State(sim): State<Sim>, Path(id): Path<String>) -> Answer {
    respond(check_id(&id).map(|()| {
        sim.clear_errors(&id);
        ok(json!({ "phone_number_id": id, "error": null }))
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyBody {
    ms: u64,
    #[serde(default)]
    phone_number_id: Option<String>,
}

async fn set_latency(State(sim): State<Sim>, body: Bytes) -> Answer {
    respond((|| -> Result<Answer, Answer> {
        let LatencyBody {
            ms,
            phone_number_id,
        } = parse(&body)?;
        if let Some(id) = &phone_number_id {
            check_id(id)?;
        }
        sim.set_latency(
            phone_number_id.as_deref(),
            std::time::Duration::from_millis(ms),
        );
        Ok(ok(json!({ "ms": ms, "phone_number_id": phone_number_id })))
    })())
}

async fn counts(State(sim): State<Sim>, Path(id): Path<String>) -> Answer {
    respond(check_id(&id).map(|()| Answer::json(StatusCode::OK, &sim.counts(&id))))
}

async fn all_counts(State(sim): State<Sim>) -> Answer {
    Answer::json(StatusCode::OK, &sim.all_counts())
}

async fn log(State(sim): State<Sim>) -> Answer {
    Answer::json(StatusCode::OK, &sim.log())
}

async fn reset(State(sim): State<Sim>) -> Answer {
    sim.reset();
    ok(json!({ "reset": true }))
}

async fn webhook(body: Bytes) -> Answer {
    let request: WebhookRequest = match parse(&body) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match send_webhook(&request).await {
        Ok(delivery) => Answer::json(StatusCode::OK, &delivery),
        Err(
            e @ (WebhookError::InvalidUrl(_)
            | WebhookError::InvalidField(_)
            | WebhookError::UnknownEvent(_)),
        ) => bad_request(e.to_string()),
        Err(e @ (WebhookError::Delivery(_) | WebhookError::Timeout)) => {
            Answer::control_error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}
