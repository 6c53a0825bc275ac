//! Test helpers on the simulator's listener: `/_sim/echo/…`, `/_sim/blob`
//! and `/_sim/broken`. They are not Graph paths; a proxy in front forwards
//! them like anything else, which is what proxy tests need (header
//! fidelity, large streamed bodies, an upstream that dies mid-body).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::OnceLock;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;

use super::Sim;
use super::answer::Answer;
use super::record::{BodyDigest, Pending, digest_stream, header_list};

/// Largest body `/_sim/blob` serves: 64 MiB.
pub const BLOB_MAX: u64 = 64 * 1024 * 1024;

/// The blob pattern repeats every 251 bytes (a prime, so it never lines up
/// with power-of-two chunk or buffer sizes and misplaced bytes show).
const PERIOD: usize = 251;

/// Chunk size: a whole number of periods, so every chunk is the same bytes.
const CHUNK: usize = PERIOD * 256;

/// Bytes sent by `/_sim/broken` before it cuts the connection.
const BROKEN_SENT: usize = 64 * 1024;

/// Length `/_sim/broken` announces.
const BROKEN_ANNOUNCED: &str = "1048576";

/// Byte `offset` of every `/_sim/blob` body: `offset % 251`.
pub fn blob_byte(offset: u64) -> u8 {
    (offset % PERIOD as u64) as u8
}

fn pattern_chunk() -> Bytes {
    static CHUNK_BYTES: OnceLock<Bytes> = OnceLock::new();
    CHUNK_BYTES
        .get_or_init(|| (0..CHUNK as u64).map(blob_byte).collect::<Vec<u8>>().into())
        .clone()
}

#[derive(Serialize)]
struct Echo {
    method: String,
    path: String,
    query: String,
    version: String,
    headers: Vec<(String, String)>,
    body_len: u64,
    body_sha256: String,
}

/// `ANY /_sim/echo/{*rest}`: describes the request it received.
pub(crate) async fn echo(State(sim): State<Sim>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let pending = Pending::capture(sim.inner(), &parts);
    let (digest, answer) = match digest_stream(body).await {
        Ok(digest) => {
            let echo = Echo {
                method: parts.method.as_str().to_owned(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                version: format!("{:?}", parts.version),
                headers: header_list(&parts.headers),
                body_len: digest.len,
                body_sha256: digest.sha256.clone(),
            };
            (digest, Answer::json(StatusCode::OK, &echo))
        }
        Err(e) => (
            BodyDigest::default(),
            Answer::control_error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
        ),
    };
    let response = answer.response();
    if let Some(p) = pending {
        p.finish(sim.inner(), digest, &answer);
    }
    response
}

/// `GET /_sim/blob?bytes=N`: N pattern bytes, streamed with a content-length.
pub(crate) async fn blob(Query(query): Query<HashMap<String, String>>) -> Response {
    let Some(raw) = query.get("bytes") else {
        return Answer::control_error(StatusCode::BAD_REQUEST, "query parameter bytes is required")
            .into_response();
    };
    let len = match raw.parse::<u64>() {
        Ok(n) if n <= BLOB_MAX => n,
        Ok(_) => {
            return Answer::control_error(
                StatusCode::BAD_REQUEST,
                format!("bytes must be at most {BLOB_MAX}"),
            )
            .into_response();
        }
        Err(_) => {
            return Answer::control_error(StatusCode::BAD_REQUEST, "bytes must be a whole number")
                .into_response();
        }
    };
    let chunk = pattern_chunk();
    let chunks = stream::unfold(len, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            Some((Ok::<_, Infallible>(chunk.slice(..n)), left - n as u64))
        }
    });
    let mut r = Response::new(Body::from_stream(chunks));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// `GET /_sim/broken`: announces 1 MiB, sends 64 KiB, then fails the body so
/// the server aborts the connection (HTTP/1) or resets the stream (HTTP/2).
pub(crate) async fn broken() -> Response {
    let sent: Bytes = (0..BROKEN_SENT as u64)
        .map(blob_byte)
        .collect::<Vec<u8>>()
        .into();
    // States: the data to send, then the failure, then the end.
    let parts = stream::unfold(Some(Some(sent)), |state| async move {
        match state? {
            Some(sent) => Some((Ok(sent), Some(None))),
            None => {
                // Return Pending once before failing: hyper flushes what it
                // has buffered when the body is not ready, so the head and
                // the 64 KiB reach the client before the connection dies.
                tokio::task::yield_now().await;
                let failure = std::io::Error::other("simulated upstream failure");
                Some((Err(failure), None))
            }
        }
    });
    let mut r = Response::new(Body::from_stream(parts));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_static(BROKEN_ANNOUNCED),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_chunk_follows_blob_byte_across_chunks() {
        let chunk = pattern_chunk();
        assert_eq!(chunk.len(), CHUNK);
        assert_eq!(CHUNK % PERIOD, 0);
        // The byte after a chunk is byte 0 of the next one.
        assert_eq!(blob_byte(CHUNK as u64), chunk[0]);
        assert!(
            chunk
                .iter()
                .enumerate()
                .all(|(i, &b)| b == blob_byte(i as u64))
        );
    }
}
