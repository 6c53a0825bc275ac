//! The Graph surface: every path that is not `/_sim/…`.
//!
//! Paths are parsed by hand because the version segment is optional
//! (`/v23.0/{id}/messages` and `/{id}/messages` are the same call), which
//! axum's router cannot express without duplicating every route.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::answer::{Answer, json_bytes};
use super::record::{BodyDigest, Pending, digest_stream};
use super::state::{Kind, Number};
use super::{Sim, codes, health, ids};

/// Largest send or PIN body read into memory; Meta's own limit is not
/// documented, and real message bodies are a few KiB.
const JSON_BODY_MAX: usize = 4 * 1024 * 1024;

/// What a Graph path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Send(Kind),
    Media,
    Registration,
    SetPin,
    Health(String),
    Info,
    Unsupported,
}

#[derive(Debug, PartialEq, Eq)]
struct Route<'a> {
    /// The object segment, quoted in "unsupported request" errors.
    object: &'a str,
    /// The object segment when it is an id; only ids get counters.
    id: Option<&'a str>,
    action: Action,
}

/// `^v\d+\.\d+$`
fn is_version(seg: &str) -> bool {
    let Some(rest) = seg.strip_prefix('v') else {
        return false;
    };
    match rest.split_once('.') {
        Some((major, minor)) => is_id(major) && is_id(minor),
        None => false,
    }
}

pub(crate) fn is_id(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Route<'a> {
    fn parse(method: &Method, path: &'a str, query: &str) -> Self {
        let mut segs = path.strip_prefix('/').unwrap_or(path).split('/');
        let mut object = segs.next().unwrap_or("");
        if is_version(object) {
            object = segs.next().unwrap_or("");
        }
        let edge = segs.next();
        let id = is_id(object).then_some(object);
        let action = match (id, segs.next(), edge) {
            (None, _, _) | (_, Some(_), _) => Action::Unsupported,
            (Some(_), None, edge) => Self::action(method, edge, query),
        };
        Self { object, id, action }
    }

    fn action(method: &Method, edge: Option<&str>, query: &str) -> Action {
        match (method, edge) {
            (&Method::POST, Some("messages")) => Action::Send(Kind::Messages),
            (&Method::POST, Some("marketing_messages")) => Action::Send(Kind::MarketingMessages),
            (&Method::POST, Some("media")) => Action::Media,
            (&Method::POST, Some("register" | "deregister" | "request_code" | "verify_code")) => {
                Action::Registration
            }
            (&Method::POST, None) => Action::SetPin,
            (&Method::GET, None) => match query_param(query, "fields") {
                Some(f) if f.split(',').any(|x| x.trim() == "health_status") => Action::Health(f),
                _ => Action::Info,
            },
            _ => Action::Unsupported,
        }
    }
}

impl Action {
    fn kind(&self) -> Kind {
        match self {
            Action::Send(kind) => *kind,
            Action::Media => Kind::Media,
            Action::Health(_) => Kind::Health,
            Action::Registration | Action::SetPin => Kind::Registration,
            Action::Info | Action::Unsupported => Kind::Other,
        }
    }
}

/// The first value of `key` in a query string, percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let pair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|p| Some((hex(p[0])?, hex(p[1])?)));
                if let Some((high, low)) = pair {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
    let (answer, digest) = match (route.action, number) {
        (Action::Unsupported, _) | (_, None) => {
            let digest = digest_stream(body).await.unwrap_or_default();
            (
                codes::unsupported(parts.method.as_str(), route.object),
                digest,
            )
        }
        (action, Some(n)) => {
            let id = route.object;
            answer(action, id, &n, body, pending.is_some()).await
        }
    };
    match pending {
        Some(p) => {
            let response = answer.response();
            p.finish(inner, digest, &answer);
            response
        }
        None => answer.into_response(),
    }
}

async fn answer(
    action: Action,
    id: &str,
    number: &Arc<Number>,
    body: Body,
    record: bool,
) -> (Answer, BodyDigest) {
    match action {
        Action::Send(_) => {
            let bytes = axum::body::to_bytes(body, JSON_BODY_MAX).await;
            let digest = match (&bytes, record) {
                (Ok(b), true) => BodyDigest::of(b),
                _ => BodyDigest::default(),
            };
            (send(number, bytes.ok()), digest)
        }
        Action::Media => match digest_stream(body).await {
            Ok(digest) => (media_ok(), digest),
            Err(_) => (
                codes::invalid_parameter("the upload could not be read"),
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
        Action::Health(fields) => {
            let fields: Vec<&str> = fields.split(',').map(str::trim).collect();
            let value = health::health_body(id, number.health(), &fields);
            (Answer::json(StatusCode::OK, &value), drain(body).await)
        }
        Action::Info => (
            Answer::json(StatusCode::OK, &health::info_body(id)),
            drain(body).await,
        ),
        Action::Unsupported => (codes::unsupported("", id), drain(body).await),
    }
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
fn send(number: &Number, body: Option<Bytes>) -> Answer {
    if let Some(injection) = number.take_error() {
        return codes::injected(&injection);
    }
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

    fn action(method: Method, path: &str, query: &str) -> Action {
        Route::parse(&method, path, query).action
    }

    #[test]
    fn version_segment_is_optional_and_opaque() {
        for path in ["/v23.0/123/messages", "/123/messages", "/v1.5/123/messages"] {
            let r = Route::parse(&Method::POST, path, "");
            assert_eq!(r.id, Some("123"), "{path}");
            assert_eq!(r.action, Action::Send(Kind::Messages), "{path}");
        }
        assert_eq!(
            action(Method::POST, "/v23/123/messages", ""),
            Action::Unsupported
        );
        assert_eq!(
            action(Method::POST, "/vx.0/123/messages", ""),
            Action::Unsupported
        );
    }

    #[test]
    fn routes_map_to_actions() {
        assert_eq!(
            action(Method::POST, "/1/marketing_messages", ""),
            Action::Send(Kind::MarketingMessages)
        );
        assert_eq!(action(Method::POST, "/v23.0/1/media", ""), Action::Media);
        for edge in ["register", "deregister", "request_code", "verify_code"] {
            assert_eq!(
                action(Method::POST, &format!("/1/{edge}"), ""),
                Action::Registration
            );
        }
        assert_eq!(action(Method::POST, "/v23.0/1", ""), Action::SetPin);
        assert_eq!(
            action(Method::GET, "/1", "fields=status%2Chealth_status"),
            Action::Health("status,health_status".into())
        );
        assert_eq!(action(Method::GET, "/1", "fields=status"), Action::Info);
        assert_eq!(action(Method::GET, "/1", ""), Action::Info);
        assert_eq!(action(Method::GET, "/1/messages", ""), Action::Unsupported);
        assert_eq!(
            action(Method::POST, "/1/messages/extra", ""),
            Action::Unsupported
        );
        let r = Route::parse(&Method::POST, "/abc/messages", "");
        assert_eq!(
            (r.id, r.object, r.action),
            (None, "abc", Action::Unsupported)
        );
    }

    #[test]
    fn percent_decoding_handles_edges() {
        assert_eq!(percent_decode("a%2Cb+c"), "a,b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            query_param("x=1&fields=health_status", "fields").as_deref(),
            Some("health_status")
        );
        assert_eq!(query_param("fields", "fields").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "fields"), None);
    }

    #[test]
    fn send_checks_error_then_lock_then_body() {
        let n = Number::new();
        let ok = send(&n, Some(Bytes::from_static(br#"{"to":"+15550009999"}"#)));
        let v: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!(v["contacts"][0]["wa_id"], "15550009999");
        assert_eq!(v["contacts"][0]["input"], "+15550009999");
        let bad = send(&n, Some(Bytes::from_static(b"{}")));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let read = send(&n, Some(Bytes::from_static(br#"{"status":"read"}"#)));
        assert_eq!(&read.body[..], br#"{"success":true}"#);
        n.set_locked(true);
        assert_eq!(
            send(&n, Some(Bytes::from_static(b"garbage"))).status,
            StatusCode::FORBIDDEN
        );
    }
}
