//! Small response helpers shared by the Graph surface and the control API.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

/// A buffered JSON answer; kept as bytes so the log can quote it.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn ok(body: Bytes) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }

    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        Self {
            status,
            body: json_bytes(value),
        }
    }

    /// `{"success":true}`, Meta's answer to mark-as-read and registration calls.
    pub(crate) fn success() -> Self {
        Self::ok(Bytes::from_static(br#"{"success":true}"#))
    }

    /// A control-API error: `{"error": "..."}`.
    pub(crate) fn control_error(status: StatusCode, message: impl Into<String>) -> Self {
        #[derive(Serialize)]
        struct E {
            error: String,
        }
        Self::json(
            status,
            &E {
                error: message.into(),
            },
        )
    }

    pub(crate) fn response(&self) -> Response {
        json_response(self.status, self.body.clone())
    }
}

impl axum::response::IntoResponse for Answer {
    fn into_response(self) -> Response {
        json_response(self.status, self.body)
    }
}

/// Serialises `value`; the simulator's own types always serialise, and the
/// fallback keeps even an impossible failure a valid JSON answer.
pub(crate) fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"error":"serialisation failed"}"#))
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    r
}
