//! The reverse proxy: route classification, the upstream client, response
//! inspection, and every response the gateway makes itself.
//!
//! A request flows `server` → `service::Proxy` → upstream; a failed send's
//! response is inspected (bounded) on the way back and Meta's error is handed
//! to a [`GraphErrorHook`] before the response is returned.

mod body;
mod inspect;
mod respond;
mod routes;
mod server;
mod service;
mod upstream;

pub use body::{BoxError, InFlight, InFlightLimit, ProxyBody, RequestBody};
pub use respond::{ERROR_TYPE, GatewayError, envelope_response};
pub use routes::{Route, RouteKind, classify, is_mark_as_read};
pub use server::serve;
pub use service::{GraphErrorHook, Proxy, ProxySettings};
pub use upstream::{InvalidTarget, Target, UpstreamClient, client};
