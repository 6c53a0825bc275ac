//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! listener, with deadlines and graceful shutdown (see [`super::watchdog`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tracing::{debug, info, warn};

use super::body::{ProxyBody, RequestBody};
use super::watchdog::{Connections, Serving, Watch};

/// How [`serve`] treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct ServeSettings {
    /// Bounds every request body as it streams (see
    /// [`RequestBody::limited`]).
    pub body_limit: u64,
    /// A connection not being served must send a request head within this
    /// time, or it is closed: the slow-loris guard, which also closes idle
    /// keep-alive connections.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown.
    pub drain: Duration,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish for up to `settings.drain`. `make` builds
/// the service of each accepted connection (so a connection can keep state
/// of its own, such as a dedicated upstream connection) from the
/// connection's [`Watch`], which keeps its deadlines.
///
/// The service must run an HTTP/1 request's future where it is polled,
/// inside the connection's task, and not spawn it: the upstream deadline of
/// a request on a [`Watch`] is kept by that task.
pub async fn serve<S>(
    listener: TcpListener,
    make: impl Fn(&Arc<Watch>) -> S,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The slow-loris guard is the connection's watchdog: hyper's own
        // sets and cancels a timer for every request, 5% of a proxied
        // send's instructions (BENCHMARKS.md).
        .header_read_timeout(None)
        // Copy each response's head and body into one buffer and write(2)
        // it, rather than queueing buffers for writev(2): responses are
        // small, and the queue costs more than the copy (2.3% fewer
        // instructions per proxied send, callgrind). Large bodies still
        // stream: the buffer is flushed at its size limit.
        .writev(false)
        // Do not read a client's connection while its request is in flight.
        // hyper otherwise reads to notice a client that hung up, and drops
        // the request when it does: Meta's answer to a send that already
        // left, a 131031 perhaps, would then never reach the breakers. Not
        // reading also saves a fresh 8 KiB read buffer per request (the old
        // one is still shared with the request's headers): 4% less CPU per
        // send (BENCHMARKS.md). A client that hung up is noticed when
        // its response is written; the upstream deadline bounds the wait.
        .half_close(true);
    builder.http2().timer(TokioTimer::new());
    let ServeSettings {
        body_limit,
        header_read_timeout,
        drain,
    } = settings;
    let connections = Connections::new(header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have, and try again shortly.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watch = connections.watch();
        let service = make(&watch);
        let serving = watch.clone();
        let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_service = serving.request(request.version());
            let request = request.map(|body| RequestBody::limited(body, body_limit));
            Serving::new(service.clone().oneshot(request), in_service)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = connections.watched(connection, watch);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!(connections = connections.count(), "draining");
    tokio::select! {
        () = connections.shutdown() => info!("drained"),
        () = tokio::time::sleep(drain) => warn!(?drain, "drain time over, closing remaining connections"),
    }
}
