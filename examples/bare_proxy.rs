//! The floor of wagate's stack: a bare HTTP/1.1 reverse proxy on hyper and
//! tokio, with nothing of wagate in it (no gate, metrics, timeouts, body
//! limit, HTTP/2, TLS or graceful shutdown). `scripts/bench-instructions.sh`
//! measures it next to wagate and nginx, so the cost of wagate's own work
//! per request is a number rather than a guess. Not a product: never expose
//! it.
//!
//!   cargo run --release --example bare_proxy -- <listen addr> <upstream addr>
//!
//! Like wagate, each client connection gets one upstream connection of its
//! own, both sides write flattened buffers, and the runtime has one thread.
//! Stops on SIGINT or SIGTERM.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare_proxy <listen addr> <upstream addr>".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(listen, upstream))
}

async fn run(listen: SocketAddr, upstream: SocketAddr) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        tokio::spawn(async move {
            if let Err(error) = serve(client, upstream).await {
                eprintln!("connection ended: {error}");
            }
        });
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr) -> Result<(), BoxError> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake::<_, Incoming>(TokioIo::new(server))
        .await?;
    tokio::spawn(connection);
    // HTTP/1.1 carries one request at a time; the slot hands the sender to
    // whichever request is in flight.
    let slot: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::new(Mutex::new(Some(sender)));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let slot = slot.clone();
        async move {
            request.headers_mut().remove(header::CONNECTION);
            let taken = slot.lock().ok().and_then(|mut slot| slot.take());
            let Some(mut sender) = taken else {
                return Err(io::Error::other("upstream connection busy"));
            };
            sender.ready().await.map_err(io::Error::other)?;
            let response = sender.send_request(request);
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(sender);
            }
            response.await.map_err(io::Error::other)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .writev(false)
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}
