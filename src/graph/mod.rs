//! Meta's Graph API as wagate sees it: the error envelope, webhook
//! signatures and payloads, and the Health Status API's answer.
//!
//! This module depends on nothing else in the crate, so every other part
//! (proxy, breaker, store, simulator) can share its types.

mod error;
pub mod health;
mod signature;
pub mod webhook;

pub use error::{Envelope, EnvelopeBody, ErrorData, GraphError, wait_hint};
pub use signature::{Refused, Verifier, sign};
