//! Meta's webhooks: the verification handshake, the signature check, the
//! inspection that feeds the breakers, and forwarding to the integration.
//!
//! A tower layer in front of the gate and the proxy takes the requests for
//! `webhook.path` and `webhook.observe_path` and answers them itself; every
//! other request passes on untouched (the layer is only there when a webhook
//! key is set). A delivery is never forwarded to the Graph upstream.
//!
//! A POST is handled in this order, and answered only at the end:
//! 1. the body is read, up to [`BODY_LIMIT`] within `webhook.read_timeout`;
//! 2. `X-Hub-Signature-256` is checked against those exact bytes (401 and
//!    nothing else on failure);
//! 3. the changes are inspected ([`crate::graph::webhook`]) and their
//!    breaker effects applied, snapshot then store, while
//! 4. the bytes go to `webhook.forward_url` as they came.
//!
//! Meta is acknowledged with the integration's status once both are done,
//! so the next send for a number a webhook tripped is refused.

mod effects;
mod forward;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};
use tracing::{info, warn};

use crate::breaker::EventRules;
use crate::config::{self, Secret};
use crate::engine::Breakers;
use crate::graph::Verifier;
use crate::metrics::WebhookMetrics;
use crate::proxy::{Buffered, ProxyBody, RequestBody, SendCaps};

use self::forward::{Answer, Forwarder};

/// The largest delivery accepted. Meta sends up to 3 MB per POST.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Delivery bodies remembered to recognise a duplicate (a retry, or the
/// copy each subscribed app gets).
const RECENT: usize = 4096;

/// The webhook routes, built from `[webhook]`.
#[derive(Clone)]
pub struct WebhookLayer {
    shared: Arc<Shared>,
}

struct Shared {
    path: String,
    observe_path: String,
    verifier: Option<Verifier>,
    verify_token: Secret,
    forward: Option<Uri>,
    mirrors: Vec<Uri>,
    forwarder: Forwarder,
    read_timeout: Duration,
    breakers: Breakers,
    caps: Option<SendCaps>,
    event_rules: EventRules,
    known: effects::Known,
    metrics: WebhookMetrics,
    recent: Mutex<Recent>,
}

/// The digests of the last [`RECENT`] delivery bodies.
#[derive(Default)]
struct Recent {
    order: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
}

impl Recent {
    /// Whether `digest` was seen; remembers it either way.
    fn seen_before(&mut self, digest: [u8; 32]) -> bool {
        if !self.seen.insert(digest) {
            return true;
        }
        self.order.push_back(digest);
        if self.order.len() > RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        false
    }
}

impl WebhookLayer {
    /// The routes of `config`, or `None` when no webhook key is set.
    /// `config` is validated: URLs parse, and a secret is set unless
    /// `insecure_skip_signature` says otherwise.
    pub fn new(
        config: &config::Webhook,
        event_rules: EventRules,
        caps: Option<SendCaps>,
        breakers: Breakers,
        metrics: WebhookMetrics,
    ) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        let verifier = Verifier::new(config.app_secret.expose());
        if verifier.is_none() {
            warn!(
                "webhook.insecure_skip_signature is set: webhook deliveries are accepted without a signature check"
            );
        }
        let parse = |url: &str| url.parse::<Uri>().ok();
        Some(Self {
            shared: Arc::new(Shared {
                path: config.path.clone(),
                observe_path: config.observe_path.clone(),
                verifier,
                verify_token: config.verify_token.clone(),
                forward: (!config.forward_url.is_empty())
                    .then(|| parse(&config.forward_url))
                    .flatten(),
                mirrors: config.mirrors().filter_map(parse).collect(),
                forwarder: Forwarder::new(config.forward_timeout),
                read_timeout: config.read_timeout,
                breakers,
                caps,
                event_rules,
                known: effects::Known::default(),
                metrics,
                recent: Mutex::default(),
            }),
        })
    }

    /// Whether deliveries are accepted unsigned (`/readyz` says so).
    pub fn insecure(&self) -> bool {
        self.shared.verifier.is_none()
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = WebhookRoute<S>;

    fn layer(&self, inner: S) -> WebhookRoute<S> {
        WebhookRoute {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Answers the webhook paths, passes everything else to `inner`.
#[derive(Clone)]
pub struct WebhookRoute<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Which of the two paths a request came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `webhook.path`: Meta's callback, forwarded to the integration.
    Forward,
    /// `webhook.observe_path`: a copy from the integration, forwarded
    /// nowhere.
    Observe,
}

type Respond = Result<Response<ProxyBody>, Infallible>;

impl<S> Service<Request<RequestBody>> for WebhookRoute<S>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Respond>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let path = request.uri().path();
        let mode = if path == self.shared.path {
            Mode::Forward
        } else if path == self.shared.observe_path {
            Mode::Observe
        } else {
            return Either::Left(self.inner.call(request));
        };
        let shared = self.shared.clone();
        Either::Right(Box::pin(
            async move { Ok(shared.handle(request, mode).await) },
        ))
    }
}

impl Shared {
    async fn handle(&self, request: Request<RequestBody>, mode: Mode) -> Response<ProxyBody> {
        match (request.method(), mode) {
            (&Method::GET, Mode::Forward) => self.handshake(request).await,
            (&Method::POST, _) => self.delivery(request, mode).await,
            _ => {
                self.metrics.delivery("bad_request");
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "webhooks are POSTed here (and verified with a GET on webhook.path)",
                )
            }
        }
    }

    /// Meta's `GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`.
    async fn handshake(&self, request: Request<RequestBody>) -> Response<ProxyBody> {
        if self.verify_token.is_empty() {
            // The integration keeps its own token: ask it.
            let Some(url) = &self.forward else {
                self.metrics.delivery("bad_request");
                return error(StatusCode::FORBIDDEN, "no webhook.verify_token is set");
            };
            let url = with_query(url, request.uri().query());
            let (answer, _) = self
                .forwarder
                .send(Method::GET, url, request.headers(), Bytes::new())
                .await;
            return self.answer(answer);
        }
        let (mut mode, mut token, mut challenge) = (None, None, None);
        let query = request.uri().query().unwrap_or_default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "hub.mode" => mode = Some(value.into_owned()),
                "hub.verify_token" => token = Some(value.into_owned()),
                "hub.challenge" => challenge = Some(value.into_owned()),
                _ => {}
            }
        }
        let expected = self.verify_token.expose().as_bytes();
        let token_ok = token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected)));
        match (mode.as_deref(), token_ok, challenge) {
            (Some("subscribe"), true, Some(challenge)) => {
                self.metrics.delivery("verified");
                info!("webhook subscription verified");
                let mut response = Response::new(ProxyBody::full(Bytes::from(challenge)));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
            _ => {
                self.metrics.delivery("bad_request");
                warn!("webhook verification refused: wrong mode or verify token");
                error(StatusCode::FORBIDDEN, "webhook verification refused")
            }
        }
    }

    async fn delivery(&self, request: Request<RequestBody>, mode: Mode) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let read = body
            .read_bounded_within(BODY_LIMIT, self.read_timeout)
            .await;
        let body = match read {
            Ok(Some(Buffered::Whole(bytes))) => bytes,
            Ok(Some(Buffered::Partial(_))) | Err(_) => {
                self.metrics.delivery("too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "webhook deliveries are at most 3 MiB",
                );
            }
            Ok(None) => {
                self.metrics.delivery("read_timeout");
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the delivery's body did not arrive within webhook.read_timeout",
                );
            }
        };
        if let Some(verifier) = &self.verifier {
            let header = parts
                .headers
                .get("x-hub-signature-256")
                .map(HeaderValue::as_bytes);
            if let Err(refused) = verifier.verify(header, &body) {
                self.metrics.signature_failure(refused.as_str());
                self.metrics.delivery("bad_signature");
                warn!(
                    reason = refused.as_str(),
                    "webhook delivery refused: signature"
                );
                return error(StatusCode::UNAUTHORIZED, "invalid X-Hub-Signature-256");
            }
        }
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let duplicate = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen_before(digest);
        let inspect = async {
            if duplicate {
                self.metrics.duplicate();
            } else {
                effects::apply(
                    &self.breakers,
                    self.caps.as_ref(),
                    &self.event_rules,
                    &self.known,
                    &self.metrics,
                    &body,
                )
                .await;
            }
        };
        let forward = async {
            let url = match (mode, &self.forward) {
                (Mode::Forward, Some(url)) => url.clone(),
                _ => return None,
            };
            for mirror in &self.mirrors {
                let (forwarder, mirror, headers, body) = (
                    self.forwarder.clone(),
                    mirror.clone(),
                    parts.headers.clone(),
                    body.clone(),
                );
                // Only the primary's answer counts; a copy is sent and left.
                tokio::spawn(async move {
                    let _ = forwarder.send(Method::POST, mirror, &headers, body).await;
                });
            }
            Some(
                self.forwarder
                    .send(Method::POST, url, &parts.headers, body.clone())
                    .await,
            )
        };
        let ((), forwarded) = tokio::join!(inspect, forward);
        match forwarded {
            Some((answer, took)) => {
                self.metrics.forwarded(took.as_secs_f64(), class(&answer));
                self.answer(answer)
            }
            None => {
                self.metrics.delivery(match mode {
                    Mode::Forward => "answered",
                    Mode::Observe => "observed",
                });
                let mut response =
                    Response::new(ProxyBody::full(Bytes::from_static(b"{\"success\":true}")));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        }
    }

    /// What Meta is answered after a forward: the integration's answer, or
    /// 502 / 504 so Meta delivers again.
    fn answer(&self, answer: Answer) -> Response<ProxyBody> {
        match answer {
            Answer::Answered {
                status,
                content_type,
                body,
            } => {
                self.metrics.delivery("forwarded");
                let mut response = Response::new(ProxyBody::full(body));
                *response.status_mut() = status;
                if let Some(content_type) = content_type {
                    response.headers_mut().insert(CONTENT_TYPE, content_type);
                }
                response
            }
            Answer::Unreachable => {
                self.metrics.delivery("bad_gateway");
                error(
                    StatusCode::BAD_GATEWAY,
                    "the integration's webhook could not be reached",
                )
            }
            Answer::TimedOut => {
                self.metrics.delivery("timeout");
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the integration's webhook did not answer within webhook.forward_timeout",
                )
            }
        }
    }
}

/// The status label of a forward.
fn class(answer: &Answer) -> &'static str {
    match answer {
        Answer::Answered { status, .. } => match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Answer::Unreachable => "error",
        Answer::TimedOut => "timeout",
    }
}

/// `url` with `query` in place of its own.
fn with_query(url: &Uri, query: Option<&str>) -> Uri {
    let Some(query) = query else {
        return url.clone();
    };
    let path = url.path();
    let mut parts = url.clone().into_parts();
    parts.path_and_query = format!("{path}?{query}").parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| url.clone())
}

/// A plain JSON error: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
