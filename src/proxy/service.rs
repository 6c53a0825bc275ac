//! The proxy service: forward a request to the upstream and its response
//! back, byte for byte, counting and inspecting on the way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tracing::{Instrument, Span, debug_span, info, warn};

use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::ResponseFuture;
use hyper_util::client::legacy::connect::HttpConnector;

use super::body::{
    BodyTooLarge, BoxError, Capture, InFlight, InFlightLimit, ProxyBody, RequestBody,
};
use super::inspect::inspect;
use super::respond::GatewayError;
use super::routes::{Route, RouteKind, classify, send_recipient};
use super::upstream::{Checkout, Dedicated, UpstreamClient, connect};
use super::watchdog::Watch;
use crate::graph::GraphError;
use crate::metrics::{Metrics, Outcome};
use crate::upstream::{Target, error_chain, strip_hop_by_hop};

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

    /// Called for every send that Meta answered with a 2xx, with the
    /// request's path and query and, when
    /// [`wants_tokens`](Self::wants_tokens), its `Authorization` header.
    /// On the path of every successful send: it must not allocate or wait.
    fn send_succeeded(
        &self,
        _phone_number_id: &str,
        _path_and_query: &PathAndQuery,
        _authorization: Option<&HeaderValue>,
    ) {
    }

    /// Whether the hook learns the tokens of successful sends (the health
    /// poller's last resort); keeping each send's `Authorization` until its
    /// answer costs a reference count.
    fn wants_tokens(&self) -> bool {
        false
    }
}

/// A hook that does nothing beyond the proxy's own metrics and logs.
impl GraphErrorHook for () {
    fn graph_error(&self, _: &str, _: &GraphError, _: Option<&str>) {}
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
    /// upstream connection of their own (see [`Dedicated`]), and `watch`
    /// keeps their upstream deadline; clones of the result share both.
    pub fn for_connection(&self, watch: &Arc<Watch>) -> Self {
        Self {
            shared: self.shared.clone(),
            dedicated: Some(Arc::new(Dedicated::new(watch.clone()))),
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
            http::Version::HTTP_10 | http::Version::HTTP_11 => self.dedicated.as_ref(),
            _ => None,
        };
        self.shared.forward(request, dedicated)
    }
}

impl Shared {
    /// Checks and rewrites the request and hands it to the upstream at once
    /// when its connection is free, so the boxed future that waits for the
    /// response never holds the request. That keeps the future small (an
    /// `async fn` holding the request took 2,176 bytes, beyond the 1,032
    /// that glibc's per-thread cache serves): no copy of two KiB per
    /// request (see BENCHMARKS.md).
    fn forward(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        dedicated: Option<&Arc<Dedicated>>,
    ) -> BoxFuture<'static, Result<Response<ProxyBody>, Infallible>> {
        let uri = request.uri();
        let route = classify(request.method(), uri.path(), uri.query());
        let Some(slot) = self.in_flight.try_acquire() else {
            return self.refuse_now(route.kind, GatewayError::Overloaded);
        };
        // Never a tunnel: CONNECT would let a client reach any host.
        if request.method() == Method::CONNECT {
            return self.refuse_now(route.kind, GatewayError::MethodNotAllowed);
        }
        let max = self.settings.max_body_bytes;
        if content_length(&request).is_some_and(|len| len > max) {
            return self.refuse_now(route.kind, GatewayError::PayloadTooLarge(max));
        }
        // The path is kept (a cheap reference-counted clone) only for sends,
        // whose error responses are attributed to a phone number.
        let send_path = (route.kind == RouteKind::Send)
            .then(|| request.uri().path_and_query().cloned())
            .flatten();
        let number = send_path.as_ref().and_then(|p| route.number(p.path()));
        let capture = (number.is_some() && self.hook.wants_recipient())
            .then(|| request.body_mut().capture_first_frame());
        let authorization = (number.is_some() && self.hook.wants_tokens())
            .then(|| request.headers().get(AUTHORIZATION).cloned())
            .flatten();
        let span = debug_span!(
            "request",
            route = route.kind.as_str(),
            phone_number_id = number,
            fbtrace_id = tracing::field::Empty
        );
        self.target.rewrite(&mut request);

        // One clock read serves both the deadline and the latency metric.
        let started = Instant::now();
        let sent = self.send(request, dedicated, started + self.settings.timeout);
        Box::pin(Forwarding::Waiting {
            sent,
            exchange: Exchange {
                shared: self.clone(),
                route,
                send_path,
                capture,
                authorization,
                slot,
                started,
                span,
            },
        })
    }

    /// Hands the request to this client connection's own upstream
    /// connection when it has one open and free, else to the shared pool.
    /// Opening the dedicated connection, or waiting for it, happens in a
    /// boxed future: rare, and too large to carry in every request's.
    /// The response head must come by `deadline`. Never retried.
    fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        dedicated: Option<&Arc<Dedicated>>,
        deadline: Instant,
    ) -> Sending<impl Future<Output = hyper::Result<Response<Incoming>>> + Send + use<>> {
        let Some(mut checkout) = dedicated.and_then(Dedicated::checkout) else {
            return Sending::Pool {
                response: tokio::time::timeout_at(deadline.into(), self.client.request(request)),
            };
        };
        checkout.watch().arm_upstream(deadline.into());
        if let Some(sender) = checkout.sender.as_mut().filter(|s| s.is_ready()) {
            return Sending::Dedicated {
                response: sender.send_request(request),
                checkout,
            };
        }
        let shared = self.clone();
        Sending::Later {
            watch: checkout.watch_arc(),
            response: Box::pin(async move {
                let mut sender = match checkout.sender.take() {
                    Some(sender) => sender,
                    None => connect(&shared.h1, &shared.target).await?,
                };
                sender.ready().await?;
                // The checkout keeps the connection until the response
                // head is in, then frees the slot with it.
                let response = checkout.sender.insert(sender).send_request(request);
                Ok(response.await?)
            }),
        }
    }

    /// The response for the upstream's answer, or, for a failed send whose
    /// body must be read for Meta's error first, the future that reads it.
    fn respond(
        exchange: Exchange,
        sent: Result<Response<Incoming>, Failed>,
    ) -> Result<Response<ProxyBody>, BoxFuture<'static, Result<Response<ProxyBody>, Infallible>>>
    {
        let Exchange {
            shared,
            route,
            send_path,
            capture,
            authorization,
            slot,
            started,
            span,
        } = exchange;
        let response = match sent {
            Ok(response) => response,
            Err(Failed::Upstream(error)) => {
                let _enter = span.enter();
                let gateway_error = if is_body_too_large(error.as_ref()) {
                    GatewayError::PayloadTooLarge(shared.settings.max_body_bytes)
                } else {
                    warn!(route = route.kind.as_str(), error = %error_chain(error.as_ref()), "upstream request failed");
                    GatewayError::BadGateway
                };
                return Ok(shared.refuse(route.kind, gateway_error));
            }
            Err(Failed::TimedOut) => {
                let _enter = span.enter();
                let timeout = shared.settings.timeout;
                warn!(route = route.kind.as_str(), ?timeout, "upstream timed out");
                return Ok(shared.refuse(route.kind, GatewayError::GatewayTimeout(timeout)));
            }
        };
        shared
            .metrics
            .upstream_latency(route.kind, started.elapsed().as_secs_f64());

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let outcome = if parts.status.as_u16() >= 400 {
            Outcome::GraphError
        } else {
            Outcome::Ok
        };
        shared.metrics.request(route.kind, outcome);

        match send_path {
            Some(path) if !parts.status.is_success() && route.number(path.path()).is_some() => {
                Err(Box::pin(async move {
                    let number = route.number(path.path()).unwrap_or_default();
                    let status = parts.status;
                    let mut inspected =
                        inspect(status.as_u16(), body, shared.settings.inspect_body_bytes)
                            .instrument(span.clone())
                            .await;
                    if let Some(error) = &mut inspected.error {
                        error.wait_hint = crate::graph::wait_hint(&parts.headers);
                        span.record("fbtrace_id", error.fbtrace_id.as_deref());
                        let _enter = span.enter();
                        let recipient = capture
                            .as_ref()
                            .and_then(|c| c.get())
                            .and_then(|b| send_recipient(b));
                        shared.graph_error(route.kind, number, status, error, recipient);
                    }
                    Ok(Response::from_parts(parts, inspected.body.with_guard(slot)))
                }))
            }
            send_path => {
                if let Some(path) = send_path.filter(|_| parts.status.is_success())
                    && let Some(number) = route.number(path.path())
                {
                    shared
                        .hook
                        .send_succeeded(number, &path, authorization.as_ref());
                }
                Ok(Response::from_parts(
                    parts,
                    ProxyBody::upstream(body).with_guard(slot),
                ))
            }
        }
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

    fn refuse_now(
        &self,
        route: RouteKind,
        error: GatewayError,
    ) -> BoxFuture<'static, Result<Response<ProxyBody>, Infallible>> {
        Box::pin(std::future::ready(Ok(self.refuse(route, error))))
    }
}

/// What a forwarded request keeps while it waits for the upstream.
struct Exchange {
    shared: Arc<Shared>,
    route: Route,
    /// The send's path and query, for attributing its error to a number.
    send_path: Option<PathAndQuery>,
    capture: Option<Capture>,
    /// The send's `Authorization`, kept when the hook learns tokens.
    authorization: Option<HeaderValue>,
    slot: InFlight,
    started: Instant,
    span: Span,
}

pin_project! {
    /// A forwarded request: waiting for the upstream's response head, then,
    /// for a failed send, reading the error body. Written out rather than as
    /// an `async fn`, whose state would keep its arguments and what it
    /// awaits side by side (twice the size).
    #[project = ForwardingProj]
    #[project_replace = ForwardingReplace]
    enum Forwarding<F> {
        Waiting { #[pin] sent: Sending<F>, exchange: Exchange },
        Inspecting { inspecting: BoxFuture<'static, Result<Response<ProxyBody>, Infallible>> },
        Done,
    }
}

impl<F> Future for Forwarding<F>
where
    F: Future<Output = hyper::Result<Response<Incoming>>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ForwardingProj::Waiting { sent, .. } => {
                    let sent = std::task::ready!(sent.poll(cx));
                    // Dropping the wait frees the dedicated upstream
                    // connection before the response goes back.
                    let ForwardingReplace::Waiting { exchange, .. } =
                        self.as_mut().project_replace(Forwarding::Done)
                    else {
                        unreachable!("the state was Waiting");
                    };
                    match Shared::respond(exchange, sent) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(inspecting) => {
                            self.as_mut()
                                .project_replace(Forwarding::Inspecting { inspecting });
                        }
                    }
                }
                ForwardingProj::Inspecting { inspecting } => {
                    let response = std::task::ready!(inspecting.as_mut().poll(cx));
                    self.as_mut().project_replace(Forwarding::Done);
                    return Poll::Ready(response);
                }
                ForwardingProj::Done => panic!("a forwarded request polled after completion"),
            }
        }
    }
}

/// Why a forwarded request got no response head.
enum Failed {
    /// The upstream could not be reached, or failed the exchange.
    Upstream(BoxError),
    /// The response head did not come in time.
    TimedOut,
}

pin_project! {
    /// A request handed to the upstream: the response on its way, within
    /// the upstream deadline.
    #[project = SendingProj]
    enum Sending<F> {
        /// On this client connection's own upstream connection, held until
        /// the response head arrives. The client connection's watch keeps
        /// the deadline.
        Dedicated { #[pin] response: F, checkout: Checkout },
        /// After opening the dedicated connection or waiting for it; the
        /// deadline as for `Dedicated`.
        Later {
            response: BoxFuture<'static, Result<Response<Incoming>, BoxError>>,
            watch: Arc<Watch>,
        },
        /// Through the shared pool (HTTP/2 streams, which run on tasks of
        /// their own): a timer of its own.
        Pool { #[pin] response: Timeout<ResponseFuture> },
    }
}

impl<F> Future for Sending<F>
where
    F: Future<Output = hyper::Result<Response<Incoming>>>,
{
    type Output = Result<Response<Incoming>, Failed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (polled, watch) = match self.project() {
            SendingProj::Dedicated { response, checkout } => {
                (response.poll(cx).map_err(Into::into), checkout.watch())
            }
            SendingProj::Later { response, watch } => (response.as_mut().poll(cx), &**watch),
            SendingProj::Pool { response } => {
                return match std::task::ready!(response.poll(cx)) {
                    Ok(sent) => Poll::Ready(sent.map_err(|e| Failed::Upstream(e.into()))),
                    Err(_) => Poll::Ready(Err(Failed::TimedOut)),
                };
            }
        };
        match polled {
            Poll::Ready(sent) => {
                watch.disarm_upstream();
                Poll::Ready(sent.map_err(Failed::Upstream))
            }
            Poll::Pending if watch.upstream_expired() => Poll::Ready(Err(Failed::TimedOut)),
            Poll::Pending => Poll::Pending,
        }
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
