//! Request recording: capture a request's head before its body is consumed,
//! digest the body (streamed or buffered), then append a [`LogEntry`].

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::LogEntry;
use super::answer::Answer;
use super::state::Inner;

/// The response body is quoted in the log up to this many bytes.
const RESPONSE_QUOTE_MAX: usize = 64 * 1024;

/// Length and SHA-256 of a request body.
#[derive(Clone, Debug, Default)]
pub(crate) struct BodyDigest {
    pub(crate) len: u64,
    pub(crate) sha256: String,
}

impl BodyDigest {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self {
            len: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// Reads a body chunk by chunk, hashing as it goes, so uploads of any size
/// use constant memory.
pub(crate) async fn digest_stream(body: Body) -> Result<BodyDigest, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok(BodyDigest {
        len,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// All headers in received order (repeated names come out next to each other).
pub(crate) fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A request head waiting for its body digest and answer.
pub(crate) struct Pending {
    at_ms: u64,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Pending {
    /// `None` when recording is off, so nothing is copied per request.
    pub(crate) fn capture(inner: &Inner, parts: &Parts) -> Option<Self> {
        inner.record.then(|| Self {
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: header_list(&parts.headers),
        })
    }

    pub(crate) fn finish(self, inner: &Inner, body: BodyDigest, answer: &Answer) {
        let quoted = &answer.body[..answer.body.len().min(RESPONSE_QUOTE_MAX)];
        inner.push_log(LogEntry {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            body_len: body.len,
            body_sha256: body.sha256,
            status: answer.status.as_u16(),
            response_body: String::from_utf8_lossy(quoted).into_owned(),
            at_ms: self.at_ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_digest_equals_buffered_digest() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..50u8)
            .map(|i| Ok(bytes::Bytes::from(vec![i; 1000 + usize::from(i)])))
            .collect();
        let whole: Vec<u8> = (0..50u8)
            .flat_map(|i| std::iter::repeat_n(i, 1000 + usize::from(i)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let streamed = digest_stream(body).await.expect("digest");
        let buffered = BodyDigest::of(&whole);
        assert_eq!(streamed.len, buffered.len);
        assert_eq!(streamed.sha256, buffered.sha256);
        // SHA-256 of the empty string, a known value.
        assert_eq!(
            BodyDigest::of(b"").sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
