//! The reverse proxy: route classification, upstream connections, response
//! inspection, and every response the gateway makes itself.
//!
//! A request flows `server` → `service::Proxy` → upstream; a failed send's
//! response is inspected (bounded) on the way back and Meta's error is handed
//! to a [`GraphErrorHook`] before the response is returned.

mod body;
mod cap;
mod gate;
mod inspect;
mod respond;
mod routes;
mod server;
mod service;
mod upstream;
mod watchdog;

pub use body::{BoxError, Buffered, Capture, InFlight, InFlightLimit, ProxyBody, RequestBody};
pub use cap::{Cap, SendCaps, UPGRADED_RATE};
pub use gate::{Gate, GateLayer};
pub use respond::{ERROR_TYPE, GatewayError, Unanswered, envelope_response, refusal};
pub use routes::{Route, RouteKind, classify, is_mark_as_read, is_template, send_recipient};
pub use server::{ServeSettings, serve};
pub use service::{GraphErrorHook, Proxy, ProxySettings};
pub use upstream::{Dedicated, UpstreamClient};
pub use watchdog::{Busy, Connections, InService, Serving, Watch, Watched};
