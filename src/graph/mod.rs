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

/// Whether a path segment is a Graph API version, such as `v24.0`. Meta's
/// versions are opaque beyond that shape: any `v<digits>.<digits>`.
pub fn is_version(segment: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    segment
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}
