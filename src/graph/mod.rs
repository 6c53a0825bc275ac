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
///
/// On bytes: the proxy asks this of every request's path, and `str`'s
/// pattern searches cost several times more.
pub fn is_version(segment: &str) -> bool {
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let Some(rest) = segment.as_bytes().strip_prefix(b"v") else {
        return false;
    };
    match rest.iter().position(|&b| b == b'.') {
        Some(dot) => digits(&rest[..dot]) && digits(&rest[dot + 1..]),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_version;

    #[test]
    fn a_version_is_v_digits_dot_digits() {
        for yes in ["v24.0", "v3.10", "v100.01"] {
            assert!(is_version(yes), "{yes}");
        }
        for no in [
            "", "v", "v24", "24.0", "v.0", "v24.", "v24.0a", "v1.2.3", "V24.0", "v２.0",
        ] {
            assert!(!is_version(no), "{no}");
        }
    }
}
