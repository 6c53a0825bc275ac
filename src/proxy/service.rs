//! The proxy service: forward a request to the upstream and its response
//! back, byte for byte, counting and inspecting on the way.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::header::CONTENT_LENGTH;
use http::{Method, Request, Response, StatusCode};
use tracing::{Instrument, debug_span, info, warn};

use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::body::{BodyTooLarge, BoxError, InFlightLimit, ProxyBody, RequestBody};
use super::inspect::inspect;
use super::respond::GatewayError;
use super::routes::{RouteKind, classify, send_recipient};
use super::upstream::{Dedicated, Target, UpstreamClient, connect, strip_hop_by_hop};
use crate::graph::GraphError;
use crate::metrics::{Metrics, Outcome};

/// Receives every Graph error seen in a send response, before that response
/// is returned to the client, so that a breaker can act on the very next
/// request.
pub trait GraphErrorHook: Send + Sync + 'static {
    /// Called with the phone number id of the send, Meta's error and, when
    /// [`wants_recipient`](Self::wants_recipient) and it could be read, the
    /// send's recipient.
    fn graph_error(&self, phone_number_id: &str, error: &GraphError, recipient: Option<&str>);

    /// Whether the hook needs the recipient of failed sends; keeping the
    /// first frame of each send body for that costs a small allocation.
    fn wants_recipient(&self) -> bool {
        false
    }
}

/// A hook that does nothing beyond the proxy's own metrics and logs.
impl GraphErrorHook for () {
    fn graph_error(&self, _: &str, _: &GraphError, _: Option<&str>) {}
}

impl GraphErrorHook for crate::engine::Breakers {
    fn graph_error(&self, phone_number_id: &str, error: &GraphError, recipient: Option<&str>) {
        self.observe(phone_number_id, error, recipient);
    }

    fn wants_recipient(&self) -> bool {
        self.has_pair_rules()
    }
}

/// Settings the proxy service needs, taken from the configuration.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Largest request body in bytes.
    pub max_body_bytes: u64,
    /// Largest error body read to find Meta's error code.
    pub inspect_body_bytes: usize,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
}

/// The proxy as a tower service; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    /// This client connection's own upstream connection, when it has one.
    dedicated: Option<Arc<Dedicated>>,
}

struct Shared {
    client: UpstreamClient,
    h1: HttpsConnector<HttpConnector>,
    target: Target,
    settings: ProxySettings,
    metrics: Metrics,
    in_flight: InFlightLimit,
    hook: Arc<dyn GraphErrorHook>,
}

impl Proxy {
    /// A proxy to `target` through `client`.
    pub fn new(
        client: UpstreamClient,
        h1: HttpsConnector<HttpConnector>,
        target: Target,
        settings: ProxySettings,
        metrics: Metrics,
        in_flight: InFlightLimit,
        hook: Arc<dyn GraphErrorHook>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                h1,
                target,
                settings,
                metrics,
                in_flight,
                hook,
            }),
            dedicated: None,
        }
    }

    /// The proxy for one client connection: its HTTP/1.x requests share one
    /// upstream connection of their own (see [`Dedicated`]); clones of the
    /// result share it too.
    pub fn for_connection(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            dedicated: Some(Arc::default()),
        }
    }
}

impl tower::Service<Request<RequestBody>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        // Only HTTP/1.x clients send one request at a time per connection;
        // HTTP/2 streams run concurrently and use the shared pool.
        let dedicated = match request.version() {
            http::Version::HTTP_10 | http::Version::HTTP_11 => self.dedicated.clone(),
            _ => None,
        };
        // The forward future is boxed as it is, not wrapped in another
        // async block: each wrapper is one more copy of the whole state.
        Box::pin(self.shared.clone().forward(request, dedicated))
    }
}

impl Shared {
    async fn forward(
        self: Arc<Self>,
        mut request: Request<RequestBody>,
        dedicated: Option<Arc<Dedicated>>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let dedicated = dedicated.as_deref();
        let uri = request.uri();
        let route = classify(request.method(), uri.path(), uri.query());
        let Some(slot) = self.in_flight.try_acquire() else {
            return Ok(self.refuse(route.kind, GatewayError::Overloaded));
        };
        // Never a tunnel: CONNECT would let a client reach any host.
        if request.method() == Method::CONNECT {
            return Ok(self.refuse(route.kind, GatewayError::MethodNotAllowed));
        }
        let max = self.settings.max_body_bytes;
        if content_length(&request).is_some_and(|len| len > max) {
            return Ok(self.refuse(route.kind, GatewayError::PayloadTooLarge(max)));
        }
        // The path is kept (a cheap reference-counted clone) only for sends,
        // whose error responses are attributed to a phone number.
        let send_path = (route.kind == RouteKind::Send)
            .then(|| request.uri().path_and_query().cloned())
            .flatten();
        let number = send_path.as_ref().and_then(|p| route.number(p.path()));
        let capture = (number.is_some() && self.hook.wants_recipient())
            .then(|| request.body_mut().capture_first_frame());
        let span = debug_span!(
            "request",
            route = route.kind.as_str(),
            phone_number_id = number,
            fbtrace_id = tracing::field::Empty
        );
        self.target.rewrite(&mut request);

        // One clock read serves both the deadline and the latency metric.
        let started = Instant::now();
        // Not instrumented: `send` logs nothing itself, and its failures are
        // logged below inside the span; wrapping it would add a move of the
        // whole future per request.
        let sent = tokio::time::timeout_at(
            (started + self.settings.timeout).into(),
            self.send(request, dedicated),
        )
        .await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let _enter = span.enter();
                let gateway_error = if is_body_too_large(error.as_ref()) {
                    GatewayError::PayloadTooLarge(max)
                } else {
                    warn!(route = route.kind.as_str(), error = %error_chain(error.as_ref()), "upstream request failed");
                    GatewayError::BadGateway
                };
                return Ok(self.refuse(route.kind, gateway_error));
            }
            Err(_) => {
                let _enter = span.enter();
                warn!(route = route.kind.as_str(), timeout = ?self.settings.timeout, "upstream timed out");
                return Ok(self.refuse(
                    route.kind,
                    GatewayError::GatewayTimeout(self.settings.timeout),
                ));
            }
        };
        self.metrics
            .upstream_latency(route.kind, started.elapsed().as_secs_f64());

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let status = parts.status;
        let outcome = if status.as_u16() >= 400 {
            Outcome::GraphError
        } else {
            Outcome::Ok
        };
        self.metrics.request(route.kind, outcome);

        let body = match number {
            Some(number) if !status.is_success() => {
                let inspected = inspect(status.as_u16(), body, self.settings.inspect_body_bytes)
                    .instrument(span.clone())
                    .await;
                if let Some(error) = &inspected.error {
                    span.record("fbtrace_id", error.fbtrace_id.as_deref());
                    let _enter = span.enter();
                    let recipient = capture
                        .as_ref()
                        .and_then(|c| c.get())
                        .and_then(|b| send_recipient(b));
                    self.graph_error(route.kind, number, status, error, recipient);
                }
                inspected.body
            }
            _ => ProxyBody::upstream(body),
        };
        Ok(Response::from_parts(parts, body.with_guard(slot)))
    }

    /// Sends over this client connection's own upstream connection when it
    /// has one free, else through the shared pool. Never retried.
    async fn send(
        &self,
        request: Request<RequestBody>,
        dedicated: Option<&Dedicated>,
    ) -> Result<Response<Incoming>, BoxError> {
        let Some(mut checkout) = dedicated.and_then(Dedicated::checkout) else {
            return Ok(self.client.request(request).await?);
        };
        let mut sender = match checkout.sender.take() {
            Some(sender) => sender,
            // Boxed: opening a connection is rare, and its large state
            // would otherwise be part of every request's future.
            None => Box::pin(connect(&self.h1, &self.target)).await?,
        };
        sender.ready().await?;
        let response = sender.send_request(request);
        checkout.sender = Some(sender);
        Ok(response.await?)
    }

    fn graph_error(
        &self,
        route: RouteKind,
        number: &str,
        status: StatusCode,
        error: &GraphError,
        recipient: Option<&str>,
    ) {
        self.metrics.graph_error(route, error.code);
        info!(
            route = route.as_str(),
            phone_number_id = number,
            status = status.as_u16(),
            code = error.code,
            fbtrace_id = error.fbtrace_id.as_deref(),
            "graph error"
        );
        self.hook.graph_error(number, error, recipient);
    }

    fn refuse(&self, route: RouteKind, error: GatewayError) -> Response<ProxyBody> {
        self.metrics.request(route, error.outcome());
        error.into_response()
    }
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether the client failed because the request body hit the size limit
/// (found while streaming a body that had no `Content-Length`).
fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error and its sources on one line, for logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
