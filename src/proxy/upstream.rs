//! The proxy's own upstream connections: one HTTP/1.1 connection kept per
//! client connection, beside the shared pool of [`crate::upstream`].

use std::sync::Arc;

use http::Uri;
use http::uri::PathAndQuery;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::body::{BoxError, RequestBody};
use super::watchdog::Watch;
use crate::upstream::Target;

/// The shared upstream pool, as the proxy uses it.
pub type UpstreamClient = crate::upstream::Client<RequestBody>;

/// One upstream HTTP/1.1 connection kept for one client connection.
///
/// An HTTP/1.1 client connection carries one request at a time, so pairing
/// it with its own upstream connection skips the shared pool's checkout,
/// locking and wake-ups on every request: the cheapest way to forward
/// (BENCHMARKS.md, "The proxy path"). When the slot is busy (concurrent
/// HTTP/2 streams on one client connection) requests use the shared pool.
///
/// Its requests' upstream deadline is kept by the client connection's
/// [`Watch`] (one timer per connection rather than one per request).
pub struct Dedicated {
    state: std::sync::Mutex<Slot>,
    watch: Arc<Watch>,
}

#[derive(Default)]
struct Slot {
    sender: Option<SendRequest<RequestBody>>,
    in_use: bool,
}

impl Dedicated {
    /// The slot of the client connection `watch` keeps.
    pub fn new(watch: Arc<Watch>) -> Self {
        Self {
            state: std::sync::Mutex::default(),
            watch,
        }
    }

    /// Takes the slot: `None` when another request holds it. The checkout
    /// carries the open connection, if there is one.
    pub(super) fn checkout(self: &Arc<Self>) -> Option<Checkout> {
        let mut slot = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if slot.in_use {
            return None;
        }
        slot.in_use = true;
        let sender = slot.sender.take().filter(|s| !s.is_closed());
        Some(Checkout {
            slot: self.clone(),
            sender,
        })
    }
}

/// A held [`Dedicated`] slot; frees it (keeping an open connection) on drop,
/// so a cancelled request never leaves the slot taken.
pub(super) struct Checkout {
    slot: Arc<Dedicated>,
    /// The connection, once open.
    pub(super) sender: Option<SendRequest<RequestBody>>,
}

impl Checkout {
    /// The deadlines of the client connection.
    pub(super) fn watch(&self) -> &Watch {
        &self.slot.watch
    }

    /// The same, to keep.
    pub(super) fn watch_arc(&self) -> Arc<Watch> {
        self.slot.watch.clone()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let mut slot = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        slot.in_use = false;
        slot.sender = self.sender.take().filter(|s| !s.is_closed());
    }
}

/// Opens a dedicated HTTP/1.1 connection to `target`.
pub(super) async fn connect(
    connector: &HttpsConnector<HttpConnector>,
    target: &Target,
) -> Result<SendRequest<RequestBody>, BoxError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(target.scheme.clone());
    parts.authority = Some(target.authority.clone());
    parts.path_and_query = Some(PathAndQuery::from_static("/"));
    let uri = Uri::from_parts(parts)?;
    let io = tower::ServiceExt::oneshot(connector.clone(), uri).await?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        // Flatten: a send's head and body go out in one buffer and one
        // write(2) (see `proxy::serve` for the measurement).
        .writev(false)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "dedicated upstream connection ended");
        }
    });
    Ok(sender)
}
