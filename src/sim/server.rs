//! Serving the simulator: an accept loop over hyper-util's auto builder, so
//! one listener speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c), and a
//! [`SimHandle`] that runs it in a task for tests.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Sim, SimOptions};

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept (for example out of file descriptors), so
/// the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn serve(
    sim: Sim,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = sim.router();
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small request/response exchanges: Nagle would only add delay.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "sim could not set TCP_NODELAY");
                    }
                    let service = TowerToHyperService::new(router.clone());
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "sim connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sim accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("sim shutdown left connections open after the drain timeout");
    }
    Ok(())
}

/// A simulator serving on `127.0.0.1` in a background task. Dropping the
/// handle shuts the server down.
#[derive(Debug)]
pub struct SimHandle {
    /// Where the simulator listens.
    pub addr: SocketAddr,
    /// The simulator, for direct control and inspection.
    pub sim: Sim,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, waits for open connections (up to a few seconds) and
    /// returns the server's result.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `127.0.0.1:0` and serves a new simulator in a tokio task.
pub async fn spawn(options: SimOptions) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(options);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender means the handle is gone: stop as well.
        let _ = stopped.await;
    };
    let task = tokio::spawn(sim.clone().serve(listener, shutdown));
    Ok(SimHandle {
        addr,
        sim,
        stop: Some(stop),
        task: Some(task),
    })
}
