//! The gate: a tower layer in front of the proxy that refuses a send when
//! its number's breaker is open or held. Tower glue only; the decisions are
//! the engine's.
//!
//! While every breaker is closed a request costs one atomic load; while any
//! is open anywhere, a send costs a route classification and a snapshot
//! lookup. Never a store command, never a body read for a closed number. Bodies are read, up to a bound, only when the answer
//! depends on them: a refused number's mark-as-read calls must still pass,
//! and a number with pair back-offs is gated by recipient. Nothing is ever
//! queued: a refused send is answered at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use futures_util::future::{BoxFuture, Either};
use http::{Method, Request, Response};
use tower::{Layer, Service};
use tracing::{info, warn};

use super::body::{Buffered, ProxyBody, RequestBody};
use super::respond::{GatewayError, Unanswered, refusal_body, refusal_response};
use super::routes::{Route, RouteKind, classify, is_mark_as_read, is_template, send_recipient};
use crate::breaker::{Admission, Breaker, BreakerKey, ProbeOutcome, RETRY_FLOOR, TrafficClass};
use crate::engine::{Breakers, Check, now};
use crate::metrics::{BreakerMetrics, Metrics, Outcome};

/// How much of a send body the gate reads to tell a mark-as-read from a
/// send or to find the recipient. Send bodies are a few KiB at most.
const READ_BOUND: usize = 64 * 1024;

/// Rendered refusals kept at most; past it the cache starts over (it only
/// holds breakers that actually refused something).
const RENDERED_MAX: usize = 16_384;

/// The store lease a ramp's probe holds, per number.
const PROBE_LEASE: &str = "probe";

/// Wraps a service in a [`Gate`]. Cloned with every request (hyper hands
/// each request a clone of the connection's service), so it is one `Arc`.
#[derive(Clone)]
pub struct GateLayer {
    shared: Arc<Shared>,
}

struct Shared {
    breakers: Breakers,
    /// This replica's name in probe leases.
    replica: String,
    /// Sequence of this replica's probes, so each lease has its own holder.
    probes: AtomicU64,
    /// How long a probe's lease lasts: its answer's deadline and a margin.
    probe_ttl: Duration,
    /// How long a client may take to send a body the gate must read.
    read_timeout: Duration,
    metrics: Metrics,
    breaker_metrics: BreakerMetrics,
    rendered: RwLock<HashMap<String, Rendered>>,
}

/// A refusal body rendered for one version of one breaker, with its
/// counter resolved: a retry storm is then answered with a reference-counted
/// copy of the same bytes.
struct Rendered {
    version: u64,
    body: Bytes,
    refused: IntCounter,
}

impl GateLayer {
    /// A gate deciding with `breakers`, reading a send's body (when it must)
    /// within `read_timeout`. A ramp's probe holds a lease named after
    /// `replica` for `probe_ttl`: longer than its answer may take.
    pub fn new(
        breakers: Breakers,
        metrics: Metrics,
        breaker_metrics: BreakerMetrics,
        read_timeout: Duration,
        replica: String,
        probe_ttl: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                breakers,
                replica,
                probes: AtomicU64::new(0),
                probe_ttl,
                read_timeout,
                metrics,
                breaker_metrics,
                rendered: RwLock::default(),
            }),
        }
    }

    /// The refusal of a send by `breaker`, rendered once per record version,
    /// with the `Retry-After` the engine gives.
    fn refuse(&self, breaker: &Breaker) -> Response<ProxyBody> {
        let retry_after = self.shared.breakers.retry_after(breaker, now());
        self.refuse_for(breaker, retry_after)
    }

    /// The refusal of a ramping number's send whose admission (`what`) the
    /// store could not answer.
    fn store_unanswered(
        &self,
        breaker: &Breaker,
        what: &str,
        error: &dyn std::fmt::Display,
    ) -> Response<ProxyBody> {
        warn!(phone_number_id = breaker.key.number(), %error, "{what} not answered by the store; send refused");
        self.refuse_for(breaker, RETRY_FLOOR)
    }

    /// The refusal of a send by `breaker`, asking to come back after
    /// `retry_after`.
    fn refuse_for(&self, breaker: &Breaker, retry_after: Duration) -> Response<ProxyBody> {
        let shared = &*self.shared;
        shared.metrics.request(RouteKind::Send, Outcome::Refused);
        let id: Cow<'_, str> = match &breaker.key {
            BreakerKey::Number(number) => Cow::Borrowed(number),
            key @ (BreakerKey::Pair { .. } | BreakerKey::Class { .. }) => {
                Cow::Owned(key.storage_id())
            }
        };
        let cached = {
            let rendered = shared.rendered.read().unwrap_or_else(|e| e.into_inner());
            rendered
                .get(id.as_ref())
                .filter(|r| r.version == breaker.version)
                .map(|r| (r.body.clone(), r.refused.clone()))
        };
        let (body, refused) = cached.unwrap_or_else(|| {
            let rendered = Rendered {
                version: breaker.version,
                body: refusal_body(breaker),
                refused: shared.breaker_metrics.refused(breaker.key.number()),
            };
            let out = (rendered.body.clone(), rendered.refused.clone());
            let mut cache = shared.rendered.write().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= RENDERED_MAX {
                cache.clear();
            }
            cache.insert(id.into_owned(), rendered);
            out
        });
        refused.inc();
        refusal_response(body, breaker, retry_after)
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

/// Refuses sends for numbers whose breaker is open or held.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

type Respond = Result<Response<ProxyBody>, Infallible>;

impl<S> Service<Request<RequestBody>> for Gate<S>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Respond>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        if request.method() != Method::POST || self.layer.shared.breakers.all_closed() {
            return Either::Left(self.inner.call(request));
        }
        let uri = request.uri();
        let route = classify(request.method(), uri.path(), uri.query());
        let check = match route.number(uri.path()) {
            Some(number) if route.kind == RouteKind::Send => {
                self.layer.shared.breakers.check(number)
            }
            _ => Check::Pass,
        };
        if check == Check::Pass {
            return Either::Left(self.inner.call(request));
        }
        // The ready service goes into the future; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Either::Right(Box::pin(async move {
            Ok(decide(inner, layer, request, route, check).await)
        }))
    }
}

/// Reads the body (bounded) and refuses or forwards. `route` is the
/// request's classification (a send for a number).
async fn decide<S>(
    inner: S,
    layer: GateLayer,
    request: Request<RequestBody>,
    route: Route,
    check: Check,
) -> Response<ProxyBody>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    let (parts, body) = request.into_parts();
    let read_timeout = layer.shared.read_timeout;
    let buffered = match body.read_bounded_within(READ_BOUND, read_timeout).await {
        Ok(Some(buffered)) => buffered,
        Ok(None) => {
            // Nothing was forwarded.
            layer
                .shared
                .metrics
                .request(RouteKind::Send, Outcome::BadRequest);
            return GatewayError::RequestTimeout(read_timeout).into_response();
        }
        Err(_) => {
            // The client's body failed or passed the size limit; nothing
            // was forwarded.
            layer
                .shared
                .metrics
                .request(RouteKind::Send, Outcome::TooLarge);
            return GatewayError::PayloadTooLarge(READ_BOUND as u64).into_response();
        }
    };
    let decided = match (check, &buffered) {
        // Mark-as-read is not a send: it passes whatever breaker there is.
        (_, Buffered::Whole(bytes)) if is_mark_as_read(bytes) => Check::Pass,
        (Check::AskRecipient, Buffered::Whole(bytes)) => {
            let number = route.number(parts.uri.path()).unwrap_or_default();
            let now = now();
            let class = TrafficClass::of_send(is_template(bytes));
            match layer.shared.breakers.check_class(number, class, now) {
                refuse @ Check::Refuse(_) => refuse,
                _ => send_recipient(bytes).map_or(Check::Pass, |to| {
                    layer.shared.breakers.check_pair(number, to, now)
                }),
            }
        }
        (check, _) => check,
    };
    if let Check::Refuse(breaker) = &decided {
        return layer.refuse(breaker);
    }
    let body = match buffered {
        Buffered::Whole(bytes) => RequestBody::full(bytes),
        Buffered::Partial(body) => body,
    };
    let request = Request::from_parts(parts, body);
    match decided {
        Check::Ramp(breaker) => ramp(inner, layer, request, &breaker).await,
        _ => forward(inner, request).await,
    }
}

async fn forward<S>(mut inner: S, request: Request<RequestBody>) -> Response<ProxyBody>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A send for a ramping number: the probe, at stage 0, goes out only with
/// the probe's lease (one across every replica) and its outcome goes to the
/// engine; at a rate stage, a send goes out only with a slot of the stage's
/// rate, shared by every replica through the store. Anything else is
/// refused at once with `X-Wagate-Breaker: ramping`, never queued; so is
/// a send whose admission the store cannot answer, since a shared rate is
/// what a recovering number was promised.
async fn ramp<S>(
    inner: S,
    layer: GateLayer,
    request: Request<RequestBody>,
    breaker: &Breaker,
) -> Response<ProxyBody>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    let shared = &*layer.shared;
    let number = breaker.key.number();
    let rate = match breaker.admitted_rate() {
        Some(Admission::PerSecond(rate)) => rate,
        Some(Admission::Probe) => return probe(inner, &layer, request, breaker).await,
        // Moved on since the check: the snapshot decides again next time.
        None => return forward(inner, request).await,
    };
    match shared.breakers.admit_ramp(number, rate).await {
        Ok(None) => forward(inner, request).await,
        Ok(Some(wait)) => layer.refuse_for(breaker, wait),
        Err(error) => layer.store_unanswered(breaker, "ramp rate", &error),
    }
}

async fn probe<S>(
    inner: S,
    layer: &GateLayer,
    request: Request<RequestBody>,
    breaker: &Breaker,
) -> Response<ProxyBody>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    let shared = &*layer.shared;
    let number = breaker.key.number();
    let seq = shared.probes.fetch_add(1, Ordering::Relaxed);
    let holder = format!("{}#{seq}", shared.replica);
    match shared
        .breakers
        .take_lease(number, PROBE_LEASE, &holder, shared.probe_ttl)
        .await
    {
        Ok(true) => {}
        // Another send is the probe: its answer decides when more go.
        Ok(false) => return layer.refuse_for(breaker, RETRY_FLOOR),
        Err(error) => return layer.store_unanswered(breaker, "probe lease", &error),
    }
    info!(phone_number_id = number, "sending the ramp's probe");
    let response = forward(inner, request).await;
    let outcome = if response.status().is_success() {
        ProbeOutcome::Accepted
    } else if response.extensions().get::<Unanswered>().is_some() {
        ProbeOutcome::Lost
    } else {
        ProbeOutcome::Failed
    };
    info!(
        phone_number_id = number,
        outcome = outcome.as_str(),
        status = response.status().as_u16(),
        "ramp probe answered"
    );
    shared.breakers.probe(number, outcome);
    // An accepted probe keeps its lease until it expires: replicas that have
    // not yet seen the first rate stage must not send a second probe. A
    // failed one frees it, so the next send probes; so does a lost one,
    // whose breaker waits for health again, long after every replica has
    // seen that.
    if outcome != ProbeOutcome::Accepted
        && let Err(error) = shared
            .breakers
            .release_lease(number, PROBE_LEASE, &holder)
            .await
    {
        warn!(phone_number_id = number, %error, "probe lease not released; it expires by itself");
    }
    response
}
