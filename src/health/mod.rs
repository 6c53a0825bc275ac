//! The health poller: for each open breaker waiting for health, once its
//! `min_open` has passed, asks Meta's Health Status API whether the number
//! can send again, and feeds the verdict to the engine.
//!
//! - **One poller per WABA across replicas.** A replica polls a WABA's
//!   numbers only while it holds the WABA's lease in the store (`health`,
//!   scope `waba:<id>`, or `waba:-` for numbers of no known WABA), renewed
//!   every third of `health.lease_ttl`; when the holder dies another
//!   replica takes the lease over once it expires. Holding the lease for
//!   the whole WABA rather than per number keeps each WABA's budget in one
//!   process, so it is exact without a store command per poll.
//! - **The budget** (`health.waba_budget_per_hour`) spaces a WABA's polls
//!   evenly; the interval of each number starts at `health.interval` and
//!   doubles, with jitter, up to `health.max_interval` on every poll that
//!   does not count towards release ([`schedule`]).
//! - **The verdict** ([`read`]): the PHONE_NUMBER, WABA and BUSINESS
//!   entities decide. AVAILABLE on `health.required_available` consecutive
//!   polls starts the ramp; LIMITED counts only with
//!   `health.release_on_limited`; BLOCKED keeps the breaker open with Meta's
//!   errors as its reason. A failed poll never releases or trips.
//! - **The token**: `health.access_token`, else the WABA's `[[wabas]]`
//!   token, else the last token a successful send of that number carried
//!   ([`Tokens`], memory only). Without one the number is not polled and
//!   the admin view says why.

mod read;
mod schedule;
mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::breaker::HealthVerdict;
use crate::config;
use crate::engine::{Breakers, HealthNote};
use crate::metrics::HealthMetrics;
use crate::upstream::{self, Target, error_chain};

pub use self::read::{PollFailure, read, verdict};
pub use self::schedule::{Outcome, Schedule};
pub use self::tokens::{Learned, Tokens};

/// How often the poller looks for numbers that started or stopped waiting
/// for health.
const SCAN: Duration = Duration::from_secs(1);

/// Largest health answer read; real ones are about a kilobyte.
const ANSWER_MAX: usize = 64 * 1024;

/// The lease a replica holds to poll a WABA's numbers.
const LEASE: &str = "health";

/// The scope of numbers whose WABA is not known.
const NO_WABA: &str = "-";

/// The poller, built once from the configuration; [`Poller::run`] runs it.
pub struct Poller {
    settings: config::Health,
    waba_tokens: HashMap<String, HeaderValue>,
    global_token: Option<HeaderValue>,
    breakers: Breakers,
    tokens: Arc<Tokens>,
    client: upstream::Client<Full<Bytes>>,
    target: Target,
    metrics: HealthMetrics,
    replica: String,
}

/// A poll's end, as the task that made it reports it.
struct Polled {
    number: String,
    result: Result<HealthVerdict, PollFailure>,
}

impl Poller {
    /// A poller for `breakers`, polling `target` with the settings of
    /// `upstream` (connect timeout, TLS, keep-alive), named `replica` in
    /// its leases.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: config::Health,
        wabas: &[config::Waba],
        upstream: &config::Upstream,
        target: Target,
        breakers: Breakers,
        tokens: Arc<Tokens>,
        metrics: HealthMetrics,
        replica: String,
    ) -> Self {
        let bearer = |token: &str| {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        };
        let global_token = (!settings.access_token.is_empty())
            .then(|| bearer(settings.access_token.expose()))
            .flatten();
        let waba_tokens = wabas
            .iter()
            .filter(|w| !w.token.is_empty())
            .filter_map(|w| Some((w.id.clone(), bearer(w.token.expose())?)))
            .collect();
        breakers.set_poll_interval(settings.interval);
        Self {
            client: upstream::client(upstream),
            settings,
            waba_tokens,
            global_token,
            breakers,
            tokens,
            target,
            metrics,
            replica,
        }
    }

    /// Polls until the task is aborted.
    pub async fn run(self) {
        let poller = Arc::new(self);
        let s = &poller.settings;
        let mut schedule = Schedule::new(s.interval, s.max_interval, s.waba_budget_per_hour);
        let mut leases: HashMap<String, Lease> = HashMap::new();
        let mut polls: JoinSet<Polled> = JoinSet::new();
        let (mut tracked, mut next_walk) = (None, Instant::now());
        loop {
            let now = Instant::now();
            // Walking every open breaker costs in proportion to them: at
            // most once per SCAN, and only when the engine's records moved
            // since the last walk (each BLOCKED poll that brings new errors
            // moves one).
            let generation = poller.breakers.generation();
            if tracked != Some(generation) && now >= next_walk {
                tracked = Some(generation);
                next_walk = now + SCAN;
                poller.track(&mut schedule, &mut leases, now).await;
            }
            // Every WABA with numbers keeps its lease renewed, due or not:
            // between polls (up to health.max_interval) a lapsed lease
            // would hand the WABA, and a budget of its own, to another
            // replica.
            for scope in schedule.scopes() {
                poller.claim(&mut leases, &schedule, &scope, now).await;
            }
            let held: HashSet<String> = leases
                .iter()
                .filter(|(_, lease)| lease.held)
                .map(|(scope, _)| scope.clone())
                .collect();
            while let Some(number) = schedule.next_due(now, |scope| held.contains(scope)) {
                let Some((token, version)) = poller.token_for(&number, &schedule) else {
                    poller.metrics.poll(PollFailure::NoToken.label(), "none");
                    poller.settle(&mut schedule, &number, Err(PollFailure::NoToken), now);
                    continue;
                };
                let (scope, _, _) = schedule.entry(&number).unwrap_or((NO_WABA, 0, now));
                let scope = scope.to_owned();
                let left = schedule.start(&number, now);
                poller.metrics.budget_left(&scope, left);
                let task = poller.clone();
                polls.spawn(async move {
                    let result = task.poll(&number, token, &version).await;
                    Polled { number, result }
                });
            }
            let renewal = leases.values().map(|lease| lease.check_at).min();
            let wake = [schedule.next_wake(), renewal]
                .into_iter()
                .flatten()
                .fold(now + SCAN, Instant::min)
                .max(now + Duration::from_millis(10));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                Some(done) = polls.join_next(), if !polls.is_empty() => {
                    let Ok(Polled { number, result }) = done else { continue };
                    poller.answered(&mut schedule, &number, result).await;
                }
            }
        }
    }

    /// Starts tracking numbers that wait for health and forgets those that
    /// no longer do (released, reset, held), giving up leases of WABAs
    /// with nothing left to poll.
    async fn track(
        &self,
        schedule: &mut Schedule,
        leases: &mut HashMap<String, Lease>,
        now: Instant,
    ) {
        let wall = crate::engine::now();
        let awaiting = self.breakers.awaiting_health();
        for (number, ready) in &awaiting {
            if schedule.contains(number) {
                continue;
            }
            let scope = match self.breakers.link_of(number).await {
                Ok(Some(link)) => link.waba,
                _ => NO_WABA.to_owned(),
            };
            schedule.track(number, &scope, now + ready.since(wall), now);
            let note = HealthNote {
                next_poll: Some(wall.max(*ready)),
                ..HealthNote::default()
            };
            self.breakers.note_health(number, Some(note));
        }
        let waiting: HashSet<&str> = awaiting.iter().map(|(n, _)| n.as_str()).collect();
        for gone in schedule.retain(now, |n| waiting.contains(n)) {
            self.breakers.note_health(&gone, None);
        }
        let idle: Vec<String> = leases
            .keys()
            .filter(|scope| !schedule.tracks_scope(scope))
            .cloned()
            .collect();
        for scope in idle {
            if leases.remove(&scope).is_some_and(|l| l.held) {
                let _ = self
                    .breakers
                    .release_lease(&lease_scope(&scope), LEASE, &self.replica)
                    .await;
            }
            self.metrics.lease(&scope, false);
        }
    }

    /// Takes or renews the lease of `scope` when it is time to.
    async fn claim(
        &self,
        leases: &mut HashMap<String, Lease>,
        schedule: &Schedule,
        scope: &str,
        now: Instant,
    ) {
        let lease = leases.entry(scope.to_owned()).or_insert(Lease {
            held: false,
            check_at: now,
        });
        if now < lease.check_at {
            return;
        }
        let ttl = self.settings.lease_ttl;
        let held = match self
            .breakers
            .take_lease(&lease_scope(scope), LEASE, &self.replica, ttl)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                warn!(waba = scope, %error, "health lease not answered by the store; not polling");
                false
            }
        };
        if held != lease.held {
            info!(waba = scope, held, "health polling lease");
        }
        lease.held = held;
        lease.check_at = now + ttl / 3;
        self.metrics.lease(scope, held);
        if !held {
            // The admin view of this replica says who polls them.
            for number in schedule.numbers_of(scope) {
                let note = HealthNote {
                    problem: Some(
                        "polled by another replica (it holds the WABA's lease)".to_owned(),
                    ),
                    ..HealthNote::default()
                };
                self.breakers.note_health(&number, Some(note));
            }
        }
    }

    /// The token and version to poll `number` with.
    fn token_for(&self, number: &str, schedule: &Schedule) -> Option<(HeaderValue, String)> {
        let learned = self.tokens.get(number);
        let scope = schedule.entry(number).map(|(scope, _, _)| scope);
        let token = self
            .global_token
            .clone()
            .or_else(|| scope.and_then(|s| self.waba_tokens.get(s)).cloned())
            .or_else(|| learned.as_ref().map(|l| l.authorization.clone()))?;
        let version = if self.settings.api_version.is_empty() {
            learned
                .and_then(|l| l.version)
                .unwrap_or_else(|| self.settings.fallback_api_version.clone())
        } else {
            self.settings.api_version.clone()
        };
        Some((token, version))
    }

    /// One GET of the number's health status.
    async fn poll(
        &self,
        number: &str,
        token: HeaderValue,
        version: &str,
    ) -> Result<HealthVerdict, PollFailure> {
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PollFailure::Invalid(format!(
                "{number:?} is not a phone number id"
            )));
        }
        let uri = self
            .target
            .uri_for(&format!("/{version}/{number}?fields=health_status"))
            .map_err(|e| PollFailure::Invalid(e.to_string()))?;
        let request = Request::get(uri)
            .header(AUTHORIZATION, token)
            .body(Full::new(Bytes::new()))
            .map_err(|e| PollFailure::Invalid(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PollFailure::Network(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), ANSWER_MAX)
                .collect()
                .await
                .map_err(|e| PollFailure::Network(e.to_string()))?
                .to_bytes();
            read(status, &body)
        };
        tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .unwrap_or(Err(PollFailure::Timeout))
    }

    /// Handles a poll's result: counts it, feeds a verdict that changes
    /// something to the engine, and schedules the next poll.
    async fn answered(
        &self,
        schedule: &mut Schedule,
        number: &str,
        result: Result<HealthVerdict, PollFailure>,
    ) {
        let (label, state) = match &result {
            Ok(HealthVerdict::Available) => ("ok", "available"),
            Ok(HealthVerdict::Limited) => ("ok", "limited"),
            Ok(HealthVerdict::Blocked(_)) => ("ok", "blocked"),
            Err(failure) => (failure.label(), "none"),
        };
        self.metrics.poll(label, state);
        // Released, reset or held while the poll was out: its answer no
        // longer applies (a BLOCKED would re-open a number an operator
        // just closed).
        if !schedule.contains(number) {
            return;
        }
        let streak = self.settle(schedule, number, result.clone(), Instant::now());
        let releases = streak >= self.settings.required_available;
        let event = match result {
            Ok(HealthVerdict::Blocked(errors)) => Some(HealthVerdict::Blocked(errors)),
            Ok(verdict @ (HealthVerdict::Available | HealthVerdict::Limited)) if releases => {
                Some(verdict)
            }
            _ => None,
        };
        match &event {
            Some(HealthVerdict::Blocked(errors)) => {
                let reasons: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{} {}", e.code, e.description))
                    .collect();
                info!(phone_number_id = number, errors = ?reasons, "health BLOCKED");
            }
            Some(_) => info!(
                phone_number_id = number,
                polls = streak,
                "health allows release"
            ),
            None => info!(
                phone_number_id = number,
                result = label,
                state,
                streak,
                "health poll"
            ),
        }
        if let Some(verdict) = event
            && let Err(error) = self.breakers.health(number, verdict).await
        {
            warn!(phone_number_id = number, %error, "health verdict not stored yet");
        }
    }

    /// Moves `number` on in the schedule after `result` and records what
    /// the poller knows of it; returns the streak of counting polls.
    fn settle(
        &self,
        schedule: &mut Schedule,
        number: &str,
        result: Result<HealthVerdict, PollFailure>,
        now: Instant,
    ) -> u32 {
        let counts = match &result {
            Ok(HealthVerdict::Available) => true,
            Ok(HealthVerdict::Limited) => self.settings.release_on_limited,
            _ => false,
        };
        let outcome = if counts {
            Outcome::Counts
        } else {
            Outcome::Resets
        };
        let jitter = rand::random::<f64>();
        let Some((streak, due)) = schedule.done(number, outcome, now, jitter) else {
            return 0;
        };
        let last = match &result {
            Ok(HealthVerdict::Available) => "AVAILABLE".to_owned(),
            Ok(HealthVerdict::Limited) if counts => "LIMITED".to_owned(),
            Ok(HealthVerdict::Limited) => {
                "LIMITED (does not release: health.release_on_limited is off)".to_owned()
            }
            Ok(HealthVerdict::Blocked(_)) => "BLOCKED".to_owned(),
            Err(failure) => format!("failed: {failure}"),
        };
        let wall = crate::engine::now();
        let problem = matches!(result, Err(PollFailure::NoToken)).then(|| last.clone());
        self.breakers.note_health(
            number,
            Some(HealthNote {
                next_poll: Some(wall.saturating_add(due.duration_since(now))),
                last_poll: (!matches!(result, Err(PollFailure::NoToken))).then_some(wall),
                last_result: Some(last),
                available_streak: streak,
                problem,
            }),
        );
        streak
    }
}

/// A WABA lease as this replica last saw it.
struct Lease {
    held: bool,
    check_at: Instant,
}

fn lease_scope(scope: &str) -> String {
    format!("waba:{scope}")
}
