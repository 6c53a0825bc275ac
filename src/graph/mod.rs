//! Meta's Graph API as wagate sees it: the error envelope, and later webhooks
//! and the Health Status API.
//!
//! This module depends on nothing else in the crate, so every other part
//! (proxy, breaker, store, simulator) can share its types.

mod error;

pub use error::{Envelope, EnvelopeBody, ErrorData, GraphError};
