//! Who may change breakers: bearer tokens, each with a name that the audit
//! log records, and a per-client limit on failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Rejection;

/// Failed attempts a client may make in a burst, and how fast the allowance
/// comes back: enough for an operator who mistyped, far too few to guess.
const FAILURES_BURST: u32 = 5;
const FAILURES_PER_MINUTE: u32 = 5;

/// Clients tracked before allowances that are whole again are forgotten
/// (`retain_recent`), which never lets a client try sooner than its
/// allowance would.
const CLIENTS_TRACKED: usize = 10_000;

type Limiter = RateLimiter<
    IpAddr,
    governor::state::keyed::HashMapStateStore<IpAddr>,
    DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// The admin API's tokens and the failed-attempt limiter.
pub(super) struct Auth {
    /// (name, SHA-256 of the token): comparing digests keeps the comparison
    /// constant-time whatever the lengths.
    tokens: Vec<(String, [u8; 32])>,
    failures: Limiter,
    /// Clients that used up their allowance, and until when they are refused
    /// without their token even being looked at.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl Auth {
    /// `tokens` as (name, token); empty disables changes.
    pub(super) fn new(tokens: Vec<(String, String)>) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(FAILURES_BURST).unwrap_or(NonZeroU32::MIN));
        Self {
            tokens: tokens
                .into_iter()
                .map(|(name, token)| (name, Sha256::digest(token.as_bytes()).into()))
                .collect(),
            failures: RateLimiter::hashmap(quota),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// The name of the token `headers` carry, or the answer to give.
    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<String, Rejection> {
        if self.tokens.is_empty() {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "admin changes are disabled: set admin.token or admin.tokens \
                 (WAGATE_ADMIN__TOKEN, WAGATE_ADMIN__TOKENS) to enable them",
            ));
        }
        if let Some(wait) = client.and_then(|ip| self.blocked_for(ip)) {
            return Err(too_many(wait));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110, section 11.1):
            // `bearer t` is the same credential as `Bearer t`.
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(|token| -> [u8; 32] { Sha256::digest(token.trim().as_bytes()).into() });
        // Only a presented token counts as an attempt: a request with none
        // is a mistake, not a guess.
        let attempted = presented.is_some();
        if let Some(presented) = presented {
            // Every token is compared, so the time taken does not say which
            // one matched.
            let mut found = None;
            for (name, digest) in &self.tokens {
                if bool::from(presented.ct_eq(digest)) {
                    found = Some(name);
                }
            }
            if let Some(name) = found {
                return Ok(name.clone());
            }
        }
        if attempted && let Some(ip) = client {
            if let Err(not_until) = self.failures.check_key(&ip) {
                let wait = not_until.wait_time_from(self.clock.now());
                self.block(ip, wait);
                return Err(too_many(wait));
            }
            // Clients that fail a few times and stop are forgotten once
            // their allowance is whole again, so the map stays bounded by
            // the clients of the last few minutes.
            if self.failures.len() >= CLIENTS_TRACKED {
                self.failures.retain_recent();
            }
        }
        Err(
            Rejection::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").with_header(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            ),
        )
    }

    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ip)?;
        let now = Instant::now();
        if now >= until {
            blocked.remove(&ip);
            return None;
        }
        Some(until - now)
    }

    fn block(&self, ip: IpAddr, wait: Duration) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if blocked.len() >= CLIENTS_TRACKED {
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < CLIENTS_TRACKED {
            blocked.insert(ip, now + wait);
        }
        drop(blocked);
        if self.failures.len() >= CLIENTS_TRACKED {
            self.failures.retain_recent();
        }
    }
}

fn too_many(wait: Duration) -> Rejection {
    // Rounded up: a client that waits the seconds it is told must not be
    // refused again for the fraction left over.
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    Rejection::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed attempts from this client: try again in {seconds}s"),
    )
    .with_header(header::RETRY_AFTER, header::HeaderValue::from(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(rejection: &Rejection) -> &str {
        rejection
            .headers
            .iter()
            .find(|(name, _)| name == header::RETRY_AFTER)
            .map(|(_, value)| value.to_str().unwrap())
            .unwrap()
    }

    fn check(auth: &Auth, authorization: &str) -> Result<String, StatusCode> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_str(authorization).unwrap(),
        );
        auth.check(&headers, None).map_err(|r| r.status)
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let auth = Auth::new(vec![("admin".to_owned(), "t0ken".to_owned())]);
        for good in ["Bearer t0ken", "bearer t0ken", "BEARER  t0ken "] {
            assert_eq!(check(&auth, good), Ok("admin".to_owned()), "{good:?}");
        }
        for bad in ["Basic t0ken", "Bearert0ken", "t0ken", "Bearer other"] {
            assert_eq!(check(&auth, bad), Err(StatusCode::UNAUTHORIZED), "{bad:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(&too_many(Duration::from_millis(11_900))), "12");
        assert_eq!(retry_after(&too_many(Duration::from_secs(12))), "12");
        assert_eq!(retry_after(&too_many(Duration::from_millis(1))), "1");
        assert_eq!(retry_after(&too_many(Duration::ZERO)), "1");
    }
}
