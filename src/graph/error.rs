//! The Graph API error envelope: `{"error": {"message", "type", "code", ...}}`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An error Meta returned, parsed from a non-2xx response body.
///
/// Only `code` decides anything (Meta asks integrators not to branch on titles
/// or types); the other fields are kept for logs and for the gateway's own
/// refusals, which quote the `fbtrace_id` and `details` of the response that
/// tripped a breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status of the response the error came in.
    pub http_status: u16,
    /// `error.code`: the field to branch on.
    pub code: i64,
    /// `error.error_subcode`, informational only.
    pub subcode: Option<i64>,
    /// `error.message`, for example `(#131031) Business Account locked`.
    pub message: String,
    /// `error.type`, usually `OAuthException`.
    pub kind: Option<String>,
    /// `error.error_data.details`, Meta's human-readable cause.
    pub details: Option<String>,
    /// `error.fbtrace_id`, which Meta support asks for.
    pub fbtrace_id: Option<String>,
    /// How long the response itself says to wait ([`wait_hint`]), if it
    /// says.
    pub wait_hint: Option<Duration>,
}

/// How long a response asks its caller to wait before trying again: its
/// `Retry-After` (seconds; Meta documents none, but some paths add it),
/// else the largest `estimated_time_to_regain_access` (minutes, 0 when not
/// throttled) in `X-Business-Use-Case-Usage`. `None` when neither says.
pub fn wait_hint(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(seconds) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(seconds));
    }
    let usage: serde_json::Value = headers
        .get("x-business-use-case-usage")
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access")?.as_u64())
        .max()
        .filter(|m| *m > 0)?;
    Some(Duration::from_secs(minutes.saturating_mul(60)))
}

impl GraphError {
    /// Parses a Graph error body. Returns `None` when the body is not Meta's
    /// envelope (for example an HTML page from a load balancer), so that only
    /// Meta's own verdicts are ever classified.
    pub fn parse(http_status: u16, body: &[u8]) -> Option<Self> {
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        let e = envelope.error;
        Some(Self {
            http_status,
            code: e.code,
            subcode: e.error_subcode,
            message: e.message,
            kind: e.kind,
            details: e.error_data.and_then(|d| d.details),
            fbtrace_id: e.fbtrace_id,
            wait_hint: None,
        })
    }
}

/// The envelope itself, for parsing Meta's errors and for writing the
/// gateway's own in the same shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The single `error` object.
    pub error: EnvelopeBody,
}

/// The `error` object of an [`Envelope`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvelopeBody {
    /// Human-readable message; Meta formats its own as `(#<code>) <title>`.
    #[serde(default)]
    pub message: String,
    /// `OAuthException`, `GraphMethodException`, or `WagateError` for errors
    /// the gateway made itself.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The error code.
    pub code: i64,
    /// Optional subcode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    /// `messaging_product` and `details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    /// Trace id to quote to support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

/// `error.error_data`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorData {
    /// Always `whatsapp` on Cloud API responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    /// Human-readable cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture readable")
    }

    #[test]
    fn parses_every_error_fixture() {
        for (file, status, code) in [
            ("error_131031.json", 403, 131031),
            ("error_368.json", 403, 368),
            ("error_130429.json", 400, 130429),
            ("error_130429.json", 429, 130429),
            ("error_131048.json", 400, 131048),
            ("error_131056.json", 429, 131056),
            ("error_190.json", 401, 190),
        ] {
            let e = GraphError::parse(status, &fixture(file)).expect(file);
            assert_eq!(e.code, code, "{file}");
            assert_eq!(e.http_status, status, "{file}");
            assert!(e.fbtrace_id.is_some(), "{file}");
        }
    }

    #[test]
    fn keeps_details_trace_and_optional_subcode() {
        let e = GraphError::parse(403, &fixture("error_131031.json")).unwrap();
        assert_eq!(
            e.details.as_deref(),
            Some("Business account has been locked.")
        );
        assert_eq!(e.fbtrace_id.as_deref(), Some("AqZ3nY1x0bKdT7m2pQe9sLw"));
        assert_eq!(e.subcode, None);
        let auth = GraphError::parse(401, &fixture("error_190.json")).unwrap();
        assert_eq!(auth.subcode, Some(463));
        assert_eq!(auth.details, None);
    }

    #[test]
    fn rejects_bodies_that_are_not_the_envelope() {
        assert_eq!(GraphError::parse(502, b"<html>bad gateway</html>"), None);
        assert_eq!(GraphError::parse(500, b"{\"error\":\"string\"}"), None);
        assert_eq!(GraphError::parse(500, b""), None);
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_wait_is_read_from_retry_after_then_the_usage_header() {
        assert_eq!(wait_hint(&headers(&[])), None);
        assert_eq!(
            wait_hint(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        let usage = r#"{"100000000000001":[{"type":"whatsapp","call_count":100,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":3},{"type":"whatsapp_business_management","estimated_time_to_regain_access":1}]}"#;
        assert_eq!(
            wait_hint(&headers(&[("x-business-use-case-usage", usage)])),
            Some(Duration::from_secs(180))
        );
        // Retry-After wins; zero minutes and odd values say nothing.
        assert_eq!(
            wait_hint(&headers(&[
                ("retry-after", "2"),
                ("x-business-use-case-usage", usage)
            ])),
            Some(Duration::from_secs(2))
        );
        let zero = r#"{"1":[{"estimated_time_to_regain_access":0}]}"#;
        assert_eq!(
            wait_hint(&headers(&[("x-business-use-case-usage", zero)])),
            None
        );
        assert_eq!(
            wait_hint(&headers(&[("x-business-use-case-usage", "nope")])),
            None
        );
        assert_eq!(
            wait_hint(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2026 07:28:00 GMT"
            )])),
            None
        );
    }
}
