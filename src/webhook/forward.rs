//! Passing a delivery on to the integration: the exact bytes, Meta's
//! signature headers, a `Content-Length`, and the integration's answer back.
//! Its own client, not the Graph upstream's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::warn;

/// How much of the integration's answer is passed back to Meta.
const ANSWER_BOUND: usize = 64 * 1024;

/// The request headers that go with a delivery; nothing else of Meta's
/// request is copied.
const PASSED: [HeaderName; 4] = [
    CONTENT_TYPE,
    USER_AGENT,
    HeaderName::from_static("x-hub-signature-256"),
    HeaderName::from_static("x-hub-signature"),
];

/// The integration's answer.
#[derive(Debug)]
pub(super) enum Answer {
    /// Its status, content type and (bounded) body.
    Answered {
        status: StatusCode,
        content_type: Option<http::HeaderValue>,
        body: Bytes,
    },
    /// It could not be reached, or broke the connection.
    Unreachable,
    /// It did not answer within the forward timeout.
    TimedOut,
}

/// Sends deliveries to one URL (and copies to mirrors).
#[derive(Clone)]
pub(super) struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Forwarder {
    pub(super) fn new(timeout: Duration) -> Self {
        let https = crate::upstream::https_h1_connector(timeout);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self { client, timeout }
    }

    /// Sends `method` to `url` with `body` and the delivery headers of
    /// `headers`, and waits (up to the timeout) for the answer. The time
    /// taken is returned with it.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> (Answer, Duration) {
        let started = Instant::now();
        let mut request = Request::builder().method(method).uri(url);
        for name in &PASSED {
            for value in headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        // Always a Content-Length, never chunked: some receivers refuse
        // chunked bodies.
        let request = match request
            .header(CONTENT_LENGTH, body.len())
            .body(Full::new(body))
        {
            Ok(request) => request,
            Err(error) => {
                warn!(%error, "webhook forward request could not be built");
                return (Answer::Unreachable, started.elapsed());
            }
        };
        let exchange = async {
            let response = match self.client.request(request).await {
                Ok(response) => response,
                Err(error) => {
                    warn!(error = %crate::upstream::error_chain(&error), "webhook forward failed");
                    return Answer::Unreachable;
                }
            };
            let status = response.status();
            let content_type = response.headers().get(CONTENT_TYPE).cloned();
            match Limited::new(response.into_body(), ANSWER_BOUND)
                .collect()
                .await
            {
                Ok(body) => Answer::Answered {
                    status,
                    content_type,
                    body: body.to_bytes(),
                },
                // The status is what Meta needs; a long or broken answer
                // body is cut.
                Err(_) => Answer::Answered {
                    status,
                    content_type,
                    body: Bytes::new(),
                },
            }
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Answer::TimedOut);
        (answer, started.elapsed())
    }
}
