//! The Graph surface: every path that no `/_sim/` route takes. See
//! `route` for how a path becomes an [`Action`].

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::answer::{Answer, json_bytes};
use super::record::{BodyDigest, Pending, digest_stream};
use super::route::{Action, Route};
use super::state::Number;
use super::{Sim, codes, health, ids};

/// Largest send or PIN body read into memory; Meta's own limit is not
/// documented, and real message bodies are a few KiB.
const JSON_BODY_MAX: usize = 4 * 1024 * 1024;

/// The fallback handler: every request that no `/_sim/` route took.
pub(crate) async fn handle(State(sim): State<Sim>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let inner = sim.inner();
    let pending = Pending::capture(inner, &parts);
    let route = Route::parse(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
    );
    let number = route.id.map(|id| inner.number(id));
    if let Some(n) = &number {
        n.bump(route.action.kind());
    }
    let latency = inner.latency(number.as_deref());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = pending.is_some();
    let (answer, digest, headers) =
        answer(&parts.method, route, number.as_deref(), body, record).await;
    let mut response = match pending {
        Some(p) => {
            let response = answer.response();
            p.finish(inner, digest, &answer);
            response
        }
        None => answer.into_response(),
    };
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            axum::http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Headers an injected error asked for.
type Extra = Vec<(String, String)>;

async fn answer(
    method: &Method,
    route: Route<'_>,
    number: Option<&Number>,
    body: Body,
    record: bool,
) -> (Answer, BodyDigest, Extra) {
    let id = route.object;
    let Some(number) = number else {
        return (
            codes::unsupported(method.as_str(), id),
            drain(body).await,
            Extra::new(),
        );
    };
    if let Action::Send(_) = route.action {
        let bytes = axum::body::to_bytes(body, JSON_BODY_MAX).await;
        let digest = match (&bytes, record) {
            (Ok(b), true) => BodyDigest::of(b),
            _ => BodyDigest::default(),
        };
        let (answer, extra) = send(number, bytes.ok());
        return (answer, digest, extra);
    }
    let (answer, digest) = match route.action {
        Action::Media => match digest_stream(body).await {
            Ok(digest) => (media_ok(), digest),
            Err(_) => (
                codes::invalid_parameter("The upload could not be read."),
                BodyDigest::default(),
            ),
        },
        Action::SetPin => {
            let bytes = axum::body::to_bytes(body, JSON_BODY_MAX)
                .await
                .unwrap_or_default();
            (set_pin(&bytes), BodyDigest::of(&bytes))
        }
        Action::Registration => {
            let digest = digest_stream(body).await.unwrap_or_default();
            (Answer::success(), digest)
        }
        Action::Health(_) if let Some(injection) = number.take_health_error() => {
            let extra = injection.headers.clone().into_iter().collect();
            return (codes::injected(&injection), drain(body).await, extra);
        }
        Action::Health(fields) => {
            let fields: Vec<&str> = fields.split(',').map(str::trim).collect();
            let value = health::health_body(id, number.health(), &fields);
            (Answer::json(StatusCode::OK, &value), drain(body).await)
        }
        Action::Info => (
            Answer::json(StatusCode::OK, &health::info_body(id)),
            drain(body).await,
        ),
        Action::Unsupported | Action::Send(_) => {
            (codes::unsupported(method.as_str(), id), drain(body).await)
        }
    };
    (answer, digest, Extra::new())
}

async fn drain(body: Body) -> BodyDigest {
    digest_stream(body).await.unwrap_or_default()
}

/// The fields of a send body the simulator looks at; the rest is ignored
/// (but must still be valid JSON).
#[derive(Deserialize)]
struct SendBody<'a> {
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct SendOk<'a> {
    messaging_product: &'static str,
    contacts: [Contact<'a>; 1],
    messages: [MessageId; 1],
}

#[derive(Serialize)]
struct Contact<'a> {
    input: &'a str,
    wa_id: &'a str,
}

#[derive(Serialize)]
struct MessageId {
    id: String,
}

/// Injected error, then lock, then the body: the order Meta's checks
/// imply (the account verdict does not depend on the message).
fn send(number: &Number, body: Option<Bytes>) -> (Answer, Extra) {
    if let Some(injection) = number.take_error() {
        let extra = injection.headers.clone().into_iter().collect();
        return (codes::injected(&injection), extra);
    }
    (send_answer(number, body), Extra::new())
}

fn send_answer(number: &Number, body: Option<Bytes>) -> Answer {
    if number.is_locked() {
        return codes::envelope(131031);
    }
    let Some(body) = body else {
        return codes::invalid_parameter("The request body could not be read or is too large.");
    };
    let Ok(parsed) = serde_json::from_slice::<SendBody<'_>>(&body) else {
        return codes::invalid_parameter("The request body is not a valid JSON object.");
    };
    if parsed.status.as_deref() == Some("read") {
        return Answer::success();
    }
    let to = match parsed.to.as_deref() {
        Some(to) if !to.is_empty() => to,
        _ => return codes::invalid_parameter("The parameter to is required."),
    };
    let ok = SendOk {
        messaging_product: "whatsapp",
        contacts: [Contact {
            input: to,
            wa_id: to.strip_prefix('+').unwrap_or(to),
        }],
        messages: [MessageId { id: ids::wamid() }],
    };
    Answer::ok(json_bytes(&ok))
}

fn media_ok() -> Answer {
    #[derive(Serialize)]
    struct MediaId {
        id: String,
    }
    Answer::json(
        StatusCode::OK,
        &MediaId {
            id: ids::media_id(),
        },
    )
}

fn set_pin(body: &[u8]) -> Answer {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.get("pin").is_some() => Answer::success(),
        _ => codes::invalid_parameter("POST on a phone number needs a JSON body with pin."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_checks_error_then_lock_then_body() {
        let n = Number::new();
        let ok = send_answer(&n, Some(Bytes::from_static(br#"{"to":"+15550009999"}"#)));
        let v: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(v["contacts"][0]["wa_id"], "15550009999");
        assert_eq!(v["contacts"][0]["input"], "+15550009999");
        let bad = send_answer(&n, Some(Bytes::from_static(b"{}")));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let read = send_answer(&n, Some(Bytes::from_static(br#"{"status":"read"}"#)));
        assert_eq!(&read.body[..], br#"{"success":true}"#);
        n.set_locked(true);
        assert_eq!(
            send_answer(&n, Some(Bytes::from_static(b"garbage"))).status,
            StatusCode::FORBIDDEN
        );
    }
}
