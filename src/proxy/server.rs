//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! listener, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tracing::{debug, info, warn};

use super::body::{ProxyBody, RequestBody};

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish for up to `drain`. `make` builds the
/// service of each accepted connection (so a connection can keep state of
/// its own, such as a dedicated upstream connection).
///
/// `body_limit` bounds every request body as it streams (see
/// [`RequestBody::limited`]).
pub async fn serve<S>(
    listener: TcpListener,
    make: impl Fn() -> S,
    body_limit: u64,
    drain: Duration,
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
        // Slow-loris guard: a client must finish its headers in time.
        .header_read_timeout(Duration::from_secs(30))
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
        // send (README, Benchmarks). A client that hung up is noticed when
        // its response is written; the upstream deadline bounds the wait.
        .half_close(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
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
        let service = make();
        let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request = request.map(|body| RequestBody::limited(body, body_limit));
            service.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!(connections = graceful.count(), "draining");
    tokio::select! {
        () = graceful.shutdown() => info!("drained"),
        () = tokio::time::sleep(drain) => warn!(?drain, "drain time over, closing remaining connections"),
    }
}
