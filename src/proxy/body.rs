//! The body types the proxy streams in both directions.
//!
//! Concrete enums rather than boxed bodies: every request would otherwise pay
//! an allocation and a dynamic call per frame on the hot path, and these are
//! the only shapes a body takes here.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntGauge;

/// Errors that end a body early.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream's response body failed part way.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body broke off")]
pub(crate) struct UpstreamBodyBroken;

/// The request body was longer than the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body over the limit of {0} bytes")]
pub(crate) struct BodyTooLarge(pub(crate) u64);

pin_project_lite::pin_project! {
    /// A request body on its way upstream.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        /// The client's body, streamed, ended with [`BodyTooLarge`] once it
        /// passes the limit (bodies without a `Content-Length` are only
        /// found to be too large while streaming). `prefix` replays bytes the
        /// gate already read; `capture` keeps a reference to the first data
        /// frame (no copy) so a send's recipient can be read after a 131056.
        Streaming {
            prefix: Option<Bytes>,
            #[pin] inner: Incoming,
            seen: u64,
            limit: u64,
            capture: Option<Capture>,
        },
        /// A body the gateway already read (for example to tell a
        /// mark-as-read from a send).
        Full { data: Option<Bytes> },
    }
}

impl RequestBody {
    /// Streams `inner`, failing once more than `limit` bytes have passed.
    pub fn limited(inner: Incoming, limit: u64) -> Self {
        Self::Streaming {
            prefix: None,
            inner,
            seen: 0,
            limit,
            capture: None,
        }
    }

    /// Keeps the first data frame of this body for later reading, and
    /// returns where to find it. Zero-copy: the frame's bytes are shared.
    pub fn capture_first_frame(&mut self) -> Capture {
        match self {
            Self::Streaming { capture, .. } => capture.get_or_insert_with(Capture::default).clone(),
            Self::Full { data } => {
                let capture = Capture::default();
                if let Some(data) = data {
                    let _ = capture.0.set(data.clone());
                }
                capture
            }
        }
    }

    /// [`RequestBody::read_bounded`] within `deadline`: every body the
    /// gateway reads itself (the gate's look at a send, a webhook delivery)
    /// is read this way, so a client that sends slowly cannot hold the
    /// connection. `Ok(None)` when the deadline passed.
    pub async fn read_bounded_within(
        self,
        bound: usize,
        deadline: std::time::Duration,
    ) -> Result<Option<Buffered>, BoxError> {
        match tokio::time::timeout(deadline, self.read_bounded(bound)).await {
            Ok(read) => read.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Reads up to `bound` bytes. Returns the whole body when it fits, or a
    /// body that replays what was read followed by the rest.
    pub async fn read_bounded(self, bound: usize) -> Result<Buffered, BoxError> {
        let (prefix, mut inner, seen, limit, capture) = match self {
            Self::Full { data } => return Ok(Buffered::Whole(data.unwrap_or_default())),
            Self::Streaming {
                prefix,
                inner,
                seen,
                limit,
                capture,
            } => (prefix, inner, seen, limit, capture),
        };
        let mut buf = bytes::BytesMut::from(prefix.as_deref().unwrap_or_default());
        let mut seen = seen;
        while !inner.is_end_stream() {
            let Some(frame) = http_body_util::BodyExt::frame(&mut inner).await else {
                break;
            };
            if let Ok(data) = frame?.into_data() {
                seen += data.len() as u64;
                if seen > limit {
                    return Err(Box::new(BodyTooLarge(limit)));
                }
                buf.extend_from_slice(&data);
            }
            if buf.len() > bound {
                return Ok(Buffered::Partial(Self::Streaming {
                    prefix: Some(buf.freeze()),
                    inner,
                    seen,
                    limit,
                    capture,
                }));
            }
        }
        Ok(Buffered::Whole(buf.freeze()))
    }

    /// A body already in memory.
    pub fn full(data: Bytes) -> Self {
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RequestBodyProj::Streaming {
                prefix,
                inner,
                seen,
                limit,
                capture,
            } => {
                // `seen` already counts the prefix.
                if let Some(data) = prefix.take() {
                    if let Some(capture) = capture {
                        let _ = capture.0.set(data.clone());
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                let frame = ready!(inner.poll_frame(cx));
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    *seen += data.len() as u64;
                    if *seen > *limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                    }
                    if let Some(capture) = capture {
                        let _ = capture.0.set(data.clone());
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            RequestBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streaming { prefix, inner, .. } => prefix.is_none() && inner.is_end_stream(),
            Self::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streaming { prefix, inner, .. } => plus(
                inner.size_hint(),
                prefix.as_ref().map_or(0, |p| p.len() as u64),
            ),
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The first data frame of a request body, kept by reference.
#[derive(Clone, Debug, Default)]
pub struct Capture(Arc<std::sync::OnceLock<Bytes>>);

impl Capture {
    /// The frame, once the body has been sent.
    pub fn get(&self) -> Option<&Bytes> {
        self.0.get()
    }
}

/// A request body read up to a bound.
pub enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// The body was longer: what was read, then the rest.
    Partial(RequestBody),
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client. It holds the request's
    /// in-flight slot until the body is finished or dropped, so the in-flight
    /// limit counts streaming downloads too.
    pub struct ProxyBody {
        #[pin]
        kind: Kind,
        guard: Option<InFlight>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        // The upstream's body, streamed untouched.
        Upstream { #[pin] inner: Incoming },
        // Bytes read while inspecting a response, then the unread rest.
        Prefixed { prefix: Option<Bytes>, #[pin] rest: Incoming },
        // A body made by the gateway, or read whole during inspection.
        Full { data: Option<Bytes> },
        // Bytes read before the upstream's body failed, then the failure.
        Broken { prefix: Option<Bytes>, failed: bool },
    }
}

impl ProxyBody {
    /// Streams the upstream's body.
    pub fn upstream(inner: Incoming) -> Self {
        Self::new(Kind::Upstream { inner })
    }

    /// Replays `prefix`, then streams the rest of the upstream's body.
    pub fn prefixed(prefix: Bytes, rest: Incoming) -> Self {
        Self::new(Kind::Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        })
    }

    /// A body in memory.
    pub fn full(data: Bytes) -> Self {
        Self::new(Kind::Full {
            data: (!data.is_empty()).then_some(data),
        })
    }

    /// Replays `prefix`, then fails: the upstream's body broke after it.
    pub fn broken(prefix: Bytes) -> Self {
        Self::new(Kind::Broken {
            prefix: (!prefix.is_empty()).then_some(prefix),
            failed: false,
        })
    }

    fn new(kind: Kind) -> Self {
        Self { kind, guard: None }
    }

    /// Keeps `guard` until this body ends.
    pub fn with_guard(mut self, guard: InFlight) -> Self {
        self.guard = Some(guard);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProj::Upstream { inner } => ready!(inner.poll_frame(cx)),
            KindProj::Prefixed { prefix, rest } => match prefix.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => ready!(rest.poll_frame(cx)),
            },
            KindProj::Full { data } => data.take().map(|d| Ok(Frame::data(d))),
            KindProj::Broken { prefix, failed } => match prefix.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None if !*failed => {
                    *failed = true;
                    return Poll::Ready(Some(Err(Box::new(UpstreamBodyBroken))));
                }
                None => None,
            },
        };
        if frame.is_none() {
            // Finished: free the in-flight slot now rather than when hyper
            // gets round to dropping the body.
            this.guard.take();
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { inner } => inner.is_end_stream(),
            Kind::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Broken { failed, .. } => *failed,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Broken { .. } => SizeHint::new(),
            Kind::Upstream { inner } => inner.size_hint(),
            Kind::Prefixed { prefix, rest } => plus(
                rest.size_hint(),
                prefix.as_ref().map_or(0, |p| p.len() as u64),
            ),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// `hint` grown by `extra` bytes already read.
fn plus(hint: SizeHint, extra: u64) -> SizeHint {
    let mut out = SizeHint::new();
    out.set_lower(hint.lower() + extra);
    if let Some(upper) = hint.upper() {
        out.set_upper(upper + extra);
    }
    out
}

/// Counts requests in flight against `limits.max_in_flight`.
#[derive(Clone, Debug)]
pub struct InFlightLimit {
    current: Arc<AtomicUsize>,
    max: usize,
    gauge: IntGauge,
}

impl InFlightLimit {
    /// A limit of `max` requests, mirrored in `gauge`.
    pub fn new(max: usize, gauge: IntGauge) -> Self {
        Self {
            current: Arc::new(AtomicUsize::new(0)),
            max,
            gauge,
        }
    }

    /// Takes a slot, or `None` when all are taken. Never waits: a gateway
    /// that queues requests only hides overload from the caller.
    pub fn try_acquire(&self) -> Option<InFlight> {
        let previous = self.current.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight {
            current: self.current.clone(),
            gauge: self.gauge.clone(),
        };
        self.gauge.inc();
        // Dropping the guard gives the slot back when over the limit.
        (previous < self.max).then_some(guard)
    }
}

/// One request's in-flight slot; given back on drop.
#[derive(Debug)]
pub struct InFlight {
    current: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}
