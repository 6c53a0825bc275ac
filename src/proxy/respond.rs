//! Every response the gateway makes itself, built in this one place.
//!
//! They use Meta's error envelope so that SDKs parse them like any Graph
//! error, with `type: "WagateError"` so nobody mistakes them for Meta's
//! verdicts. The codes are chosen for what an SDK should do next: code 2
//! ("service temporarily unavailable", retry later) for an unreachable,
//! slow or overloaded gateway path, code 100 ("invalid parameter", do not
//! retry as sent) for requests that can never be forwarded. Internal details
//! (socket errors, addresses) go to logs, never to clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::breaker::{Breaker, Source, UnixMillis};
use crate::graph::{Envelope, EnvelopeBody, ErrorData};
use crate::metrics::Outcome;

use super::body::ProxyBody;

/// The `type` of every error the gateway makes itself.
pub const ERROR_TYPE: &str = "WagateError";

/// A response the gateway answers with instead of forwarding.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayError {
    /// The upstream could not be reached, or failed before answering.
    BadGateway,
    /// The upstream did not send response headers within `upstream.timeout`.
    GatewayTimeout(Duration),
    /// The request body is larger than `limits.max_body_bytes`.
    PayloadTooLarge(u64),
    /// `limits.max_in_flight` requests are already in flight.
    Overloaded,
    /// `CONNECT` and other requests that can never be forwarded.
    MethodNotAllowed,
    /// The client did not send the body the gateway had to read in time.
    RequestTimeout(Duration),
    /// The number's send cap (`limits.per_number_rate`) is used up until
    /// the next slot, this far away.
    OverCap(Duration),
}

impl GatewayError {
    /// The outcome label this error is counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::BadGateway => Outcome::BadGateway,
            Self::GatewayTimeout(_) => Outcome::Timeout,
            Self::PayloadTooLarge(_) => Outcome::TooLarge,
            Self::Overloaded => Outcome::Overloaded,
            Self::MethodNotAllowed | Self::RequestTimeout(_) => Outcome::BadRequest,
            Self::OverCap(_) => Outcome::Refused,
        }
    }

    /// Builds the response.
    pub fn into_response(self) -> Response<ProxyBody> {
        // status, code, message, details, Retry-After (seconds)
        let (status, code, message, details, retry_after) = match self {
            // The upstream is down or reset the connection: retrying later is
            // the caller's decision (wagate never retries a send itself).
            Self::BadGateway => (
                StatusCode::BAD_GATEWAY,
                2,
                "Upstream unavailable",
                "The gateway could not get a response from the Graph API.".to_owned(),
                None,
            ),
            // No response headers in time: the send may or may not have been
            // accepted by Meta, which the details say so nobody assumes it
            // was dropped.
            Self::GatewayTimeout(after) => (
                StatusCode::GATEWAY_TIMEOUT,
                2,
                "Upstream timeout",
                format!(
                    "The Graph API did not answer within {}; the request may still have been processed.",
                    humantime::format_duration(after)
                ),
                None,
            ),
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                100,
                "Request body too large",
                format!("The request body is larger than the gateway's limit of {limit} bytes."),
                None,
            ),
            // Shedding load rather than queueing: the caller keeps the
            // message and retries after a second.
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                2,
                "Gateway overloaded",
                "Too many requests are in flight through the gateway; retry shortly.".to_owned(),
                Some(1),
            ),
            // Meta's own throughput code, so SDKs back off as they would
            // for Meta's 130429; the gateway refused it before Meta saw it.
            Self::OverCap(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                "Rate limit hit",
                "wagate held this send: the number's send cap (limits.per_number_rate) is used up; nothing was forwarded.".to_owned(),
                Some(wait.as_millis().div_ceil(1000).max(1) as u64),
            ),
            // Nothing was forwarded: sending again is safe.
            Self::RequestTimeout(after) => (
                StatusCode::REQUEST_TIMEOUT,
                2,
                "Request body timeout",
                format!(
                    "The request body did not arrive within {}; nothing was forwarded.",
                    humantime::format_duration(after)
                ),
                None,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                100,
                "Method not allowed",
                "The gateway forwards Graph API calls only; CONNECT and proxy requests are refused."
                    .to_owned(),
                None,
            ),
        };
        let unanswered = matches!(self, Self::BadGateway | Self::GatewayTimeout(_));
        let mut response = envelope_response(status, code, message, details, None);
        if unanswered {
            response.extensions_mut().insert(Unanswered);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Marks, in its extensions, a response the gateway made because the
/// upstream gave no answer (502, 504): whether Meta acted on the request is
/// unknown. A ramp's probe that ends so is lost, not failed.
#[derive(Clone, Copy, Debug)]
pub struct Unanswered;

/// The refusal of a send whose breaker is open or held.
///
/// HTTP 503 with `Retry-After` (seconds until the breaker can next move) and
/// `X-Wagate-Breaker`, and Meta's envelope carrying the code that tripped
/// the breaker, so SDKs that already handle 131031 keep working; the
/// `fbtrace_id` is the one of the response that tripped it, when known.
pub fn refusal(breaker: &Breaker, now: UnixMillis) -> Response<ProxyBody> {
    refusal_response(refusal_body(breaker), breaker, breaker.retry_after(now))
}

/// The body of a refusal. It depends only on the breaker's record, so the
/// gate renders it once per record version and reuses it for every refused
/// send of a retry storm.
///
/// An operator's hold on a number with no Meta error behind it carries code
/// 2 ("temporarily unavailable"): code 0 would read as an auth error.
pub(super) fn refusal_body(breaker: &Breaker) -> Bytes {
    let cause = &breaker.cause;
    let code = if cause.code == 0 { 2 } else { cause.code };
    let seen = match cause.source {
        Source::Operator => "set by an operator".to_owned(),
        source => format!("after error {} seen in a {}", cause.code, source.as_str()),
    };
    let mut details = format!(
        "wagate held this send: the breaker for phone number {} is {} since {} ({seen}",
        breaker.key.number(),
        breaker.state.as_str(),
        breaker.since
    );
    if let Some(meta) = &cause.details {
        details.push_str(": ");
        details.push_str(meta);
    }
    details.push(')');
    if !breaker.reason.is_empty() {
        details.push_str(". ");
        details.push_str(&breaker.reason);
    }
    envelope_body(
        code,
        "Send held by the gateway: the breaker for this phone number is open",
        details,
        cause.fbtrace_id.clone(),
    )
}

/// The refusal response around a rendered `body` for `breaker`, asking the
/// client to come back after `retry_after`.
pub(super) fn refusal_response(
    body: Bytes,
    breaker: &Breaker,
    retry_after: Duration,
) -> Response<ProxyBody> {
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    let retry_after = retry_after.as_millis().div_ceil(1000).max(1) as u64;
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
    headers.insert(
        HeaderName::from_static("x-wagate-breaker"),
        HeaderValue::from_static(breaker.state.as_str()),
    );
    response
}

/// Builds a response in Meta's envelope with `type: "WagateError"`.
///
/// `fbtrace_id` is the id of the Meta response that caused the gateway's
/// answer when there is one (a breaker refusal quotes the response that
/// tripped it); otherwise the gateway makes one up, prefixed `wagate-`, to
/// find the request in the gateway's logs.
pub fn envelope_response(
    status: StatusCode,
    code: i64,
    message: &str,
    details: String,
    fbtrace_id: Option<String>,
) -> Response<ProxyBody> {
    json_response(status, envelope_body(code, message, details, fbtrace_id))
}

/// Meta's envelope with `type: "WagateError"`, serialized.
fn envelope_body(code: i64, message: &str, details: String, fbtrace_id: Option<String>) -> Bytes {
    let envelope = Envelope {
        error: EnvelopeBody {
            message: format!("(#{code}) {message}"),
            kind: Some(ERROR_TYPE.to_owned()),
            code,
            error_subcode: None,
            error_data: Some(ErrorData {
                messaging_product: Some("whatsapp".to_owned()),
                details: Some(details),
            }),
            fbtrace_id: Some(fbtrace_id.unwrap_or_else(trace_id)),
        },
    };
    // Serializing plain strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A gateway-made trace id, unique within the process.
fn trace_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PROCESS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let process = *PROCESS.get_or_init(rand::random);
    format!(
        "wagate-{process:08x}{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::graph::GraphError;

    async fn parse(response: Response<ProxyBody>) -> (StatusCode, GraphError, http::HeaderMap) {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let error = GraphError::parse(status.as_u16(), &body).expect("Meta's envelope");
        (status, error, headers)
    }

    #[tokio::test]
    async fn every_gateway_error_is_a_wagate_envelope() {
        let cases = [
            (GatewayError::BadGateway, 502, 2),
            (GatewayError::GatewayTimeout(Duration::from_secs(5)), 504, 2),
            (GatewayError::PayloadTooLarge(10), 413, 100),
            (GatewayError::Overloaded, 503, 2),
            (GatewayError::MethodNotAllowed, 405, 100),
        ];
        for (error, status, code) in cases {
            let (got, parsed, headers) = parse(error.clone().into_response()).await;
            assert_eq!(got.as_u16(), status, "{error:?}");
            assert_eq!(parsed.code, code, "{error:?}");
            assert_eq!(parsed.kind.as_deref(), Some(ERROR_TYPE));
            assert!(parsed.message.starts_with(&format!("(#{code}) ")));
            assert!(parsed.details.is_some());
            assert!(parsed.fbtrace_id.unwrap().starts_with("wagate-"));
            assert_eq!(headers[CONTENT_TYPE], "application/json");
        }
    }

    #[tokio::test]
    async fn overload_says_when_to_retry() {
        let (_, _, headers) = parse(GatewayError::Overloaded.into_response()).await;
        assert_eq!(headers[RETRY_AFTER], "1");
    }

    #[test]
    fn trace_ids_are_unique() {
        assert_ne!(trace_id(), trace_id());
    }
}
