//! Reading Meta's verdict out of a failed send's response, without changing
//! a byte of what the client receives.
//!
//! Only non-2xx responses on send routes are read, and only up to a bound:
//! Meta's error bodies are a few hundred bytes, while a misbehaving upstream
//! could send anything. What was read is replayed ahead of the unread rest.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::ProxyBody;
use crate::graph::GraphError;

/// The result of inspecting a response body.
pub(super) struct Inspected {
    /// The body to send on: byte for byte what the upstream sent.
    pub(super) body: ProxyBody,
    /// Meta's error, when the body was read whole and is Meta's envelope.
    pub(super) error: Option<GraphError>,
}

/// Reads up to `limit` bytes of `body` and parses them as a Graph error.
///
/// A body longer than `limit` is not parsed (no Graph error is that large)
/// and is streamed on after the bytes already read. A body that fails while
/// being read is handed on as read so far, followed by the same failure, so
/// the client sees a broken response exactly as it would without inspection.
pub(super) async fn inspect(status: u16, mut body: Incoming, limit: usize) -> Inspected {
    let mut buf = BytesMut::new();
    loop {
        if body.is_end_stream() {
            break;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.len() > limit {
                    return Inspected {
                        body: ProxyBody::prefixed(buf.freeze(), body),
                        error: None,
                    };
                }
            }
            Some(Err(_)) => {
                // Replay what arrived, then end the body with an error so the
                // client's connection is cut as the upstream's was.
                return Inspected {
                    body: ProxyBody::broken(buf.freeze()),
                    error: None,
                };
            }
            None => break,
        }
    }
    let bytes: Bytes = buf.freeze();
    let error = GraphError::parse(status, &bytes);
    Inspected {
        body: ProxyBody::full(bytes),
        error,
    }
}
