//! The deadlines and the shutdown of client connections: one timer per
//! connection instead of one per request.
//!
//! A client connection has two deadlines:
//! - **header read** (the slow-loris guard): while no request of the
//!   connection is being served, the next request head must arrive within
//!   `server.header_read_timeout` of the connection going idle (the last
//!   response handed over whole, or the accept), or the connection is
//!   closed;
//! - **upstream**: an HTTP/1 request forwarded on the connection's own
//!   upstream connection gets its response head within `upstream.timeout`,
//!   or a 504.
//!
//! Both live in a [`Watch`] shared by the connection's task and its
//! service, as plain numbers: starting or finishing a request stores a
//! number and touches no timer. The connection's [`Watched`] future keeps
//! one [`Sleep`], armed no later than the earliest deadline. When it fires,
//! the deadlines are compared with the clock: one that passed is acted on,
//! otherwise the timer is armed again at the new earliest deadline. Under a
//! steady stream of requests the timer therefore fires about once per
//! timeout instead of being set and cancelled for every request (which
//! takes the timer driver's lock twice per request: see BENCHMARKS.md).
//!
//! The upstream deadline works this way only because an HTTP/1 connection's
//! service future runs inside the connection's task: the service must not
//! move it to another task. HTTP/2 streams do run on tasks of their own,
//! so their requests carry their own timeout, and once a connection shows
//! itself to be HTTP/2 it has no header deadline (as with hyper's own).
//!
//! Graceful shutdown works the same way: [`Connections`] holds one waker per
//! connection, taken once, and a flag each connection reads when polled.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// No deadline.
const NONE: u64 = u64::MAX;

/// The deadlines of one client connection, shared by its task and its
/// service. Times are nanoseconds since `base`, so they fit in atomics.
#[derive(Debug)]
pub struct Watch {
    base: Instant,
    header_read_timeout: u64,
    /// Requests received and not yet answered (their response body not yet
    /// handed over whole).
    in_service: AtomicUsize,
    /// When `in_service` last fell to zero, or the connection was accepted.
    idle_since: AtomicU64,
    /// The connection carries concurrent requests (HTTP/2): no header
    /// deadline.
    multiplexed: AtomicBool,
    /// The deadline of the request waiting for the upstream, or [`NONE`].
    upstream_deadline: AtomicU64,
    /// That deadline passed before the response head came.
    upstream_expired: AtomicBool,
}

impl Watch {
    fn new(base: Instant, header_read_timeout: Duration) -> Self {
        let watch = Self {
            base,
            header_read_timeout: nanos(header_read_timeout),
            in_service: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            upstream_deadline: AtomicU64::new(NONE),
            upstream_expired: AtomicBool::new(false),
        };
        watch.idle_since.store(watch.now(), Ordering::Relaxed);
        watch
    }

    fn now(&self) -> u64 {
        self.since_base(Instant::now())
    }

    fn since_base(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base))
    }

    fn instant(&self, at: u64) -> Instant {
        self.base + Duration::from_nanos(at)
    }

    /// A request head arrived; the connection is busy until the returned
    /// guard is dropped (with the response body, once the connection has
    /// taken all of it: see [`Serving`]).
    pub fn request(self: &Arc<Self>, version: http::Version) -> InService {
        if version >= http::Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.in_service.fetch_add(1, Ordering::Relaxed);
        InService(self.clone())
    }

    /// Starts the upstream deadline of this connection's request.
    pub fn arm_upstream(&self, deadline: Instant) {
        self.upstream_expired.store(false, Ordering::Relaxed);
        self.upstream_deadline
            .store(self.since_base(deadline), Ordering::Relaxed);
    }

    /// The response head came: no upstream deadline any more.
    pub fn disarm_upstream(&self) {
        self.upstream_deadline.store(NONE, Ordering::Relaxed);
    }

    /// Whether the armed upstream deadline has passed. Read when the
    /// request's future is polled, which the connection's task does after
    /// finding the deadline passed.
    pub fn upstream_expired(&self) -> bool {
        self.upstream_expired.load(Ordering::Relaxed)
    }

    /// Whether the connection is waiting for a request head: an HTTP/1
    /// connection (or one not yet known) with no request in progress.
    fn between_requests(&self) -> bool {
        self.in_service.load(Ordering::Relaxed) == 0 && !self.multiplexed.load(Ordering::Relaxed)
    }

    /// The header-read deadline, when one runs.
    fn header_deadline(&self) -> u64 {
        if !self.between_requests() {
            return NONE;
        }
        self.idle_since
            .load(Ordering::Relaxed)
            .saturating_add(self.header_read_timeout)
    }

    /// The earliest deadline.
    fn next_deadline(&self) -> u64 {
        let upstream = self.upstream_deadline.load(Ordering::Relaxed);
        upstream.min(self.header_deadline())
    }

    /// Marks the upstream deadline expired if it passed by `now`.
    fn expire_upstream(&self, now: u64) {
        if self.upstream_deadline.load(Ordering::Relaxed) <= now {
            self.upstream_deadline.store(NONE, Ordering::Relaxed);
            self.upstream_expired.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the header-read deadline passed by `now`.
    fn header_read_expired(&self, now: u64) -> bool {
        self.header_deadline() <= now
    }
}

/// A request of a [`Watch`]ed connection being served.
#[derive(Debug)]
pub struct InService(Arc<Watch>);

impl Drop for InService {
    fn drop(&mut self) {
        let watch = &self.0;
        if watch.in_service.fetch_sub(1, Ordering::Relaxed) == 1 {
            watch.idle_since.store(watch.now(), Ordering::Relaxed);
        }
    }
}

pin_project! {
    /// A service's future for one request, which keeps the request's
    /// connection busy until the connection has taken all of the response
    /// it makes (its body dropped) or the future is dropped unanswered.
    pub struct Serving<F> {
        #[pin]
        inner: F,
        guard: Option<InService>,
    }
}

impl<F> Serving<F> {
    /// `inner`, keeping its connection busy.
    pub fn new(inner: F, guard: InService) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<F, B, E> Future for Serving<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Busy<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| Busy {
            inner,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body that keeps its connection busy until it is dropped,
    /// which the connection does once it has taken the last of it (its
    /// bytes may still be in the connection's buffer, which shutdown lets
    /// it flush).
    pub struct Busy<B> {
        #[pin]
        inner: B,
        _guard: Option<InService>,
    }
}

impl<B: Body> Body for Busy<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client connections of one listener: their deadlines' settings, and
/// their graceful shutdown.
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Registry>,
}

struct Registry {
    base: Instant,
    header_read_timeout: Duration,
    closing: AtomicBool,
    live: Mutex<Live>,
    drained: Notify,
}

#[derive(Default)]
struct Live {
    next: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

impl Registry {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Connections {
    /// Connections whose request heads must arrive within
    /// `header_read_timeout` of their going idle.
    pub fn new(header_read_timeout: Duration) -> Self {
        Self {
            registry: Arc::new(Registry {
                base: Instant::now(),
                header_read_timeout,
                closing: AtomicBool::new(false),
                live: Mutex::default(),
                drained: Notify::new(),
            }),
        }
    }

    /// The deadlines of a newly accepted connection.
    pub fn watch(&self) -> Arc<Watch> {
        let registry = &self.registry;
        Arc::new(Watch::new(registry.base, registry.header_read_timeout))
    }

    /// `connection`, kept to `watch`'s deadlines and closed gracefully on
    /// [`shutdown`](Self::shutdown).
    pub fn watched<C: GracefulConnection>(&self, connection: C, watch: Arc<Watch>) -> Watched<C> {
        let mut live = self.registry.live();
        let id = live.next;
        live.next += 1;
        live.wakers.insert(id, None);
        drop(live);
        Watched {
            connection,
            timer: tokio::time::sleep_until(self.registry.base),
            watch,
            registration: Registration {
                registry: self.registry.clone(),
                id,
                waker: None,
            },
            armed: NONE,
            timer_waker: None,
            closing: false,
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.registry.live().wakers.len()
    }

    /// Asks every connection, present and future, to finish its request in
    /// progress and close, and returns once all have closed. Connections
    /// waiting for a request head close at once; HTTP/2 connections say so
    /// to their client (GOAWAY) and close once their streams are done.
    pub async fn shutdown(&self) {
        let registry = &self.registry;
        registry.closing.store(true, Ordering::SeqCst);
        for waker in registry.live().wakers.values().flatten() {
            waker.wake_by_ref();
        }
        loop {
            let drained = registry.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if registry.live().wakers.is_empty() {
                return;
            }
            drained.await;
        }
    }
}

/// A connection's place in [`Connections`]; leaves it on drop.
struct Registration {
    registry: Arc<Registry>,
    id: u64,
    /// The waker last handed to the registry.
    waker: Option<Waker>,
}

impl Registration {
    fn closing(&self) -> bool {
        self.registry.closing.load(Ordering::Relaxed)
    }

    /// Makes sure shutdown wakes the task polling with `waker`. Returns
    /// whether shutdown has begun.
    fn register(&mut self, waker: &Waker) -> bool {
        if self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return self.closing();
        }
        self.waker = Some(waker.clone());
        let mut live = self.registry.live();
        live.wakers.insert(self.id, Some(waker.clone()));
        // Read under the lock: a shutdown that began before it has woken
        // the wakers it found, perhaps not this one.
        self.registry.closing.load(Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.registry.live();
        live.wakers.remove(&self.id);
        let drained = live.wakers.is_empty();
        drop(live);
        if drained && self.registry.closing.load(Ordering::SeqCst) {
            self.registry.drained.notify_waiters();
        }
    }
}

pin_project! {
    /// A client connection kept to its [`Watch`]'s deadlines.
    pub struct Watched<C> {
        #[pin]
        connection: C,
        #[pin]
        timer: Sleep,
        watch: Arc<Watch>,
        registration: Registration,
        // When `timer` is armed for, or `NONE`.
        armed: u64,
        // The waker `timer` holds.
        timer_waker: Option<Waker>,
        // Graceful shutdown of the connection has begun.
        closing: bool,
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        loop {
            if !*this.closing && this.registration.closing() {
                // hyper closes an idle connection at once, after flushing
                // what it has buffered (the end of the last response,
                // perhaps); a head begun is bounded by the header-read
                // deadline and the drain time.
                *this.closing = true;
                this.connection.as_mut().graceful_shutdown();
            }
            let mut fired = None;
            if *this.armed != NONE && this.timer.is_elapsed() {
                *this.armed = NONE;
                let now = this.watch.now();
                // Before the connection is polled, so that the waiting
                // request's future sees it there.
                this.watch.expire_upstream(now);
                fired = Some(now);
            }
            if let Poll::Ready(done) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            // After the connection is polled: a head that arrived just in
            // time is served, not dropped.
            if fired.is_some_and(|now| this.watch.header_read_expired(now)) {
                // Closed without an answer, as hyper's own guard does.
                debug!("no request head in time: closing the connection");
                return Poll::Ready(Ok(()));
            }

            let next = this.watch.next_deadline();
            if next < *this.armed {
                // Earlier than the timer (or the timer is not armed): the
                // one case that moves it in the timer driver.
                *this.armed = next;
                this.timer.as_mut().reset(this.watch.instant(next));
                *this.timer_waker = None;
            }
            if *this.armed != NONE
                && !this
                    .timer_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                *this.timer_waker = Some(cx.waker().clone());
                // Outside the task's cooperative budget: a timer polled
                // with the budget spent would not keep the waker, and
                // would fire unheard.
                let mut timer = tokio::task::coop::unconstrained(this.timer.as_mut());
                if Pin::new(&mut timer).poll(cx).is_ready() {
                    continue;
                }
            }
            if this.registration.register(cx.waker()) && !*this.closing {
                continue;
            }
            return Poll::Pending;
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(NONE - 1)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures_util::FutureExt;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn watch() -> Arc<Watch> {
        Connections::new(Duration::from_secs(30)).watch()
    }

    /// A plain hyper connection on 127.0.0.1, served with `service`
    /// behind a [`Watched`]; returns the client's end and the server task.
    async fn serve<S, B>(
        connections: &Connections,
        watch: Arc<Watch>,
        service: S,
        poll: impl FnMut(Pin<&mut Watched<ServedConnection<S>>>, &mut Context<'_>) -> Poll<()>
        + Send
        + 'static,
    ) -> (tokio::net::TcpStream, tokio::task::JoinHandle<()>)
    where
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<B>,
            > + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().writev(false);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let mut watched = Box::pin(connections.watched(connection, watch));
        let mut poll = poll;
        let task = tokio::spawn(std::future::poll_fn(move |cx| poll(watched.as_mut(), cx)));
        (client, task)
    }

    type ServedConnection<S> =
        auto::Connection<'static, TokioIo<tokio::net::TcpStream>, S, TokioExecutor>;

    /// A timer armed while the task's cooperative budget is spent still
    /// wakes the task: a silent connection is closed at its deadline.
    #[tokio::test]
    async fn the_timer_fires_when_armed_with_the_budget_spent() {
        let connections = Connections::new(Duration::from_millis(200));
        let watch = connections.watch();
        let service = hyper::service::service_fn(|_: http::Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
        });
        let mut first = true;
        let (mut client, _task) = serve(&connections, watch, service, move |watched, cx| {
            if std::mem::take(&mut first) {
                // Whatever ran before in this poll of the task spent its
                // budget.
                loop {
                    let spend = std::pin::pin!(tokio::task::coop::consume_budget());
                    if spend.poll(cx).is_pending() {
                        break;
                    }
                }
            }
            watched.poll(cx).map(|_| ())
        })
        .await;
        let mut buf = [0; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "closed at the 200 ms deadline: {read:?}"
        );
    }

    /// Shutdown lets a connection that has answered its last request
    /// deliver the end of that answer still in its buffers: the response
    /// body is handed over (and the connection counts as between requests)
    /// before its bytes are all written.
    #[tokio::test]
    async fn shutdown_delivers_the_end_of_a_buffered_response() {
        const BODY: usize = 8 << 20;
        let connections = Connections::new(Duration::from_secs(30));
        let watch = connections.watch();
        let serving = watch.clone();
        let answered = Arc::new(AtomicBool::new(false));
        let answer = answered.clone();
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let in_service = serving.request(request.version());
            let answer = answer.clone();
            Serving::new(
                async move {
                    answer.store(true, Ordering::SeqCst);
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(vec![
                        b'x';
                        BODY
                    ]))))
                },
                in_service,
            )
        });
        let (mut client, _task) = serve(&connections, watch.clone(), service, |watched, cx| {
            watched.poll(cx).map(|_| ())
        })
        .await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: wagate.test\r\n\r\n")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(answered.load(Ordering::SeqCst) && watch.between_requests()) {
            assert!(
                Instant::now() < deadline,
                "the response was never handed over"
            );
            tokio::task::yield_now().await;
        }

        let mut shutdown = Box::pin(connections.shutdown());
        assert!(
            (&mut shutdown).now_or_never().is_none(),
            "one connection open"
        );
        // The connection's task, woken by the shutdown, runs before this
        // one reads (one thread, tasks in turn).
        tokio::task::yield_now().await;
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
            .await
            .expect("closed after the response")
            .unwrap();
        assert!(
            received.len() > BODY && received.ends_with(&[b'x'; 64]),
            "the whole response arrived: {} bytes",
            received.len()
        );
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("drained");
    }

    #[test]
    fn a_request_keeps_its_connection_busy_until_its_response_is_written() {
        let watch = watch();
        assert!(watch.between_requests());
        let accepted = watch.idle_since.load(Ordering::Relaxed);
        assert_eq!(
            watch.header_deadline(),
            accepted + Duration::from_secs(30).as_nanos() as u64
        );

        let serving = Serving::new(
            std::future::ready(Ok::<_, Infallible>(http::Response::new(Full::new(
                Bytes::from_static(b"{}"),
            )))),
            watch.request(http::Version::HTTP_11),
        );
        assert!(!watch.between_requests());
        let response = serving.now_or_never().unwrap().unwrap();
        assert!(!watch.between_requests(), "the body is not written yet");
        assert_eq!(watch.header_deadline(), NONE);
        drop(response);
        assert!(watch.between_requests());
        assert!(watch.idle_since.load(Ordering::Relaxed) >= accepted);
    }

    #[test]
    fn an_unanswered_request_frees_its_connection_when_dropped() {
        let watch = watch();
        let serving = Serving::new(
            std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>(),
            watch.request(http::Version::HTTP_11),
        );
        assert!(!watch.between_requests());
        drop(serving);
        assert!(watch.between_requests());
    }

    #[test]
    fn http2_connections_have_no_header_deadline() {
        let watch = watch();
        drop(watch.request(http::Version::HTTP_2));
        assert!(!watch.between_requests());
        assert_eq!(watch.header_deadline(), NONE);
        assert!(!watch.header_read_expired(u64::MAX - 1));
    }

    #[test]
    fn the_upstream_deadline_expires_only_once_passed() {
        let watch = watch();
        let busy = watch.request(http::Version::HTTP_11);
        let deadline = Instant::now() + Duration::from_secs(5);
        watch.arm_upstream(deadline);
        let at = watch.since_base(deadline);
        assert_eq!(watch.next_deadline(), at);
        watch.expire_upstream(at - 1);
        assert!(!watch.upstream_expired());
        watch.expire_upstream(at);
        assert!(
            !watch.header_read_expired(at),
            "no header deadline while busy"
        );
        assert!(watch.upstream_expired());
        assert_eq!(watch.next_deadline(), NONE);

        // The next request starts afresh; a disarmed deadline never fires.
        watch.arm_upstream(deadline + Duration::from_secs(1));
        assert!(!watch.upstream_expired());
        watch.disarm_upstream();
        watch.expire_upstream(u64::MAX - 1);
        assert!(!watch.upstream_expired());
        drop(busy);
    }
}
