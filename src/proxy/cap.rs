//! The per-number send cap (`limits.per_number_rate`, off by default): a
//! tower layer that refuses a number's sends past its rate at once, with a
//! `Retry-After`, so the gateway itself never pushes a number past its
//! Meta throughput (130429). Never queued: a refused send is answered now.
//!
//! One governor limiter per number, in process: a shared counter would
//! cost a store command per send. With several replicas each holds its own
//! cap, so set the rate per replica. Present only when a rate is set; a
//! number's limiter is made on its first send (one allocation per number,
//! not per send).

use std::collections::HashMap;
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Either, Ready, ready};
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{Method, Request, Response};
use tower::{Layer, Service};

use super::body::{ProxyBody, RequestBody};
use super::respond::GatewayError;
use super::routes::{RouteKind, classify};
use crate::metrics::{Metrics, Outcome};

/// The rate Meta gives a number after a `THROUGHPUT_UPGRADE`.
pub const UPGRADED_RATE: u32 = 1_000;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// The caps of every number; cheap to clone.
#[derive(Clone)]
pub struct SendCaps {
    inner: Arc<Caps>,
}

struct Caps {
    default: NonZeroU32,
    overrides: RwLock<HashMap<String, NonZeroU32>>,
    limiters: RwLock<HashMap<String, (NonZeroU32, Limiter)>>,
    metrics: Metrics,
}

impl SendCaps {
    /// Caps of `per_second` for every number, `overrides` for some. `None`
    /// when `per_second` is 0 (off).
    pub fn new(per_second: u32, overrides: &[(String, u32)], metrics: Metrics) -> Option<Self> {
        let default = NonZeroU32::new(per_second)?;
        let overrides = overrides
            .iter()
            .filter_map(|(number, rate)| Some((number.clone(), NonZeroU32::new(*rate)?)))
            .collect();
        Some(Self {
            inner: Arc::new(Caps {
                default,
                overrides: RwLock::new(overrides),
                limiters: RwLock::default(),
                metrics,
            }),
        })
    }

    /// Sets `number`'s cap to `per_second` from now on (a
    /// `THROUGHPUT_UPGRADE` raises it to [`UPGRADED_RATE`]).
    pub fn set(&self, number: &str, per_second: u32) {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return;
        };
        self.inner
            .overrides
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number.to_owned(), rate);
    }

    /// `number`'s cap.
    pub fn rate(&self, number: &str) -> u32 {
        self.inner
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(number)
            .copied()
            .unwrap_or(self.inner.default)
            .get()
    }

    /// Takes one send of `number`: `None` when it is within the cap, else
    /// the time until the next slot.
    pub fn take(&self, number: &str) -> Option<Duration> {
        let rate = NonZeroU32::new(self.rate(number)).unwrap_or(self.inner.default);
        let check = |limiter: &Limiter| {
            limiter
                .check()
                .err()
                .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
        };
        {
            let limiters = self
                .inner
                .limiters
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((held, limiter)) = limiters.get(number)
                && *held == rate
            {
                return check(limiter);
            }
        }
        let mut limiters = self
            .inner
            .limiters
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let entry = limiters
            .entry(number.to_owned())
            .or_insert_with(|| (rate, limiter(rate)));
        if entry.0 != rate {
            *entry = (rate, limiter(rate));
        }
        check(&entry.1)
    }
}

/// One send per 1/rate, with a burst of one second's worth: Meta's
/// throughput is per second.
fn limiter(rate: NonZeroU32) -> Limiter {
    RateLimiter::direct(Quota::per_second(rate))
}

impl<S> Layer<S> for SendCaps {
    type Service = Cap<S>;

    fn layer(&self, inner: S) -> Cap<S> {
        Cap {
            inner,
            caps: self.clone(),
        }
    }
}

/// Refuses a number's sends past its cap.
#[derive(Clone)]
pub struct Cap<S> {
    inner: S,
    caps: SendCaps,
}

impl<S> Service<Request<RequestBody>> for Cap<S>
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = Infallible>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<ProxyBody>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        if request.method() == Method::POST {
            let uri = request.uri();
            let route = classify(request.method(), uri.path(), uri.query());
            if route.kind == RouteKind::Send
                && let Some(number) = route.number(uri.path())
                && let Some(wait) = self.caps.take(number)
            {
                self.caps
                    .inner
                    .metrics
                    .request(RouteKind::Send, Outcome::Refused);
                return Either::Right(ready(Ok(GatewayError::OverCap(wait).into_response())));
            }
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_gets_its_rate_and_an_upgrade_raises_it() {
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
        assert!(SendCaps::new(0, &[], metrics.clone()).is_none(), "0 is off");
        let caps = SendCaps::new(2, &[("9".to_owned(), 5)], metrics).unwrap();
        assert_eq!((caps.rate("1"), caps.rate("9")), (2, 5));
        let admitted = (0..10).filter(|_| caps.take("1").is_none()).count();
        assert_eq!(admitted, 2, "a second's worth at once, then refused");
        let wait = caps.take("1").expect("over the cap");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!((0..10).filter(|_| caps.take("9").is_none()).count(), 5);
        caps.set("1", UPGRADED_RATE);
        assert_eq!(caps.rate("1"), UPGRADED_RATE);
        assert!((0..100).all(|_| caps.take("1").is_none()));
    }
}
