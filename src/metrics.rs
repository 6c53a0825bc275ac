//! Every Prometheus metric wagate exports, registered once on an explicit
//! registry that is passed down (no default-registry globals).
//!
//! Label values come from closed sets (route kinds, outcomes, Meta's error
//! codes, the business's own phone number ids), never from recipients or raw
//! paths. Counters on the hot path are resolved once at start-up, so counting
//! a request is an atomic add with no label lookup.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::breaker::{BreakerKey, State, TransitionRecord};
use crate::graph::Refused;
use crate::proxy::RouteKind;

mod last_send;

pub use last_send::{LastSends, MAX_SEND_NUMBERS};

/// How a proxied request ended, from the gateway's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with a status below 400.
    Ok,
    /// The upstream answered with a status of 400 or more (Meta's verdict).
    GraphError,
    /// The gateway refused the request (for example a send for a number
    /// whose breaker is open).
    Refused,
    /// The upstream could not be reached or broke the connection (502).
    BadGateway,
    /// The upstream did not answer in time (504).
    Timeout,
    /// The request body was over the limit (413).
    TooLarge,
    /// Too many requests were in flight (503).
    Overloaded,
    /// The request could not be forwarded as sent (400, 405).
    BadRequest,
}

impl Outcome {
    /// Every outcome, for pre-registering label values.
    pub const ALL: [Outcome; 8] = [
        Self::Ok,
        Self::GraphError,
        Self::Refused,
        Self::BadGateway,
        Self::Timeout,
        Self::TooLarge,
        Self::Overloaded,
        Self::BadRequest,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::GraphError => "graph_error",
            Self::Refused => "refused",
            Self::BadGateway => "bad_gateway",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
            Self::Overloaded => "overloaded",
            Self::BadRequest => "bad_request",
        }
    }
}

const ROUTES: usize = RouteKind::ALL.len();
const OUTCOMES: usize = Outcome::ALL.len();

/// The metrics of the proxy path.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: [[IntCounter; OUTCOMES]; ROUTES],
    upstream_seconds: [Histogram; ROUTES],
    graph_errors: IntCounterVec,
    in_flight: IntGauge,
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "wagate_requests_total",
                "Requests through the proxy listener, by route and outcome.",
            ),
            &["route", "outcome"],
        )?;
        let upstream = HistogramVec::new(
            HistogramOpts::new(
                "wagate_upstream_duration_seconds",
                "Time from forwarding a request to the upstream's response headers, by route.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )?;
        let graph_errors = IntCounterVec::new(
            Opts::new(
                "wagate_graph_errors_total",
                "Errors in Meta's envelope seen in upstream responses, by route and error.code.",
            ),
            &["route", "code"],
        )?;
        let in_flight = IntGauge::new(
            "wagate_in_flight_requests",
            "Requests currently being proxied, response bodies included.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(upstream.clone()))?;
        registry.register(Box::new(graph_errors.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;

        let requests = RouteKind::ALL.map(|route| {
            Outcome::ALL
                .map(|outcome| requests.with_label_values(&[route.as_str(), outcome.as_str()]))
        });
        let upstream_seconds =
            RouteKind::ALL.map(|route| upstream.with_label_values(&[route.as_str()]));
        Ok(Self {
            registry: registry.clone(),
            requests,
            upstream_seconds,
            graph_errors,
            in_flight,
        })
    }

    /// The registry the metrics live on, for the `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a finished request.
    pub fn request(&self, route: RouteKind, outcome: Outcome) {
        self.requests[route.index()][outcome as usize].inc();
    }

    /// Records how long the upstream took to answer.
    pub fn upstream_latency(&self, route: RouteKind, seconds: f64) {
        self.upstream_seconds[route.index()].observe(seconds);
    }

    /// Counts an error in Meta's envelope.
    pub fn graph_error(&self, route: RouteKind, code: i64) {
        self.graph_errors
            .with_label_values(&[route.as_str(), &code.to_string()])
            .inc();
    }

    /// The in-flight gauge; the proxy holds it up while a response streams.
    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

/// The default of `metrics.number_series`: enough for a dashboard's table
/// of open numbers, while a scrape stays small when a WABA-wide event opens
/// tens of thousands (`wagate_breakers` counts them all).
pub const DEFAULT_NUMBER_SERIES: usize = 1_000;

/// The `operation` values of `wagate_store_errors_total`, exported at 0
/// from the start so that a rate sees the first failure and an alert can
/// compare replicas.
pub const STORE_OPERATIONS: [&str; 6] = [
    "compare_and_set",
    "get",
    "list_active",
    "take_lease",
    "release_lease",
    "admit",
];

/// The metrics of the breaker engine and the gate.
#[derive(Clone)]
pub struct BreakerMetrics {
    registry: Registry,
    number_series: usize,
    by_state: IntGaugeVec,
    transitions: IntCounterVec,
    refused: IntCounterVec,
    store_errors: IntCounterVec,
    store_degraded: IntGauge,
    waba_gated: IntGaugeVec,
    resyncs: IntCounter,
    open_seconds: Histogram,
    probes: IntCounterVec,
}

impl BreakerMetrics {
    /// Registers every breaker metric on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let by_state = IntGaugeVec::new(
            Opts::new(
                "wagate_breakers",
                "Breakers that are not closed, by state and kind (number or pair).",
            ),
            &["state", "kind"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "wagate_breaker_transitions_total",
                "Breaker transitions written to the store by this replica, by from, to, cause code and source.",
            ),
            &["from", "to", "cause", "source"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "wagate_refused_sends_total",
                "Sends refused at the gateway, by phone number: the retry storm that never reached Meta.",
            ),
            &["phone_number_id"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "wagate_store_errors_total",
                "Failed breaker store operations, by operation.",
            ),
            &["operation"],
        )?;
        let store_degraded = IntGauge::new(
            "wagate_store_degraded",
            "1 while this replica cannot reach the breaker store and serves from its snapshot (/readyz says degraded), else 0.",
        )?;
        let waba_gated = IntGaugeVec::new(
            Opts::new(
                "wagate_waba_gated",
                "1 for each WABA whose gate stands (every number of it is refused, numbers learned later too), by source: webhook (Meta disabled or deleted the account) or operator (a hold). Absent: not gated.",
            ),
            &["waba", "source"],
        )?;
        let resyncs = IntCounter::new(
            "wagate_store_resyncs_total",
            "Full reloads of the breaker snapshot from the store.",
        )?;
        let open_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wagate_breaker_open_seconds",
                "Seconds from a breaker's last trip to its closing, for the breakers this replica closed.",
            )
            // A cool-down lasts seconds to minutes, a lock hours to days.
            .buckets(vec![
                1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 12.0 * 3600.0, 86_400.0,
                2.0 * 86_400.0, 7.0 * 86_400.0,
            ]),
        )?;
        let probes = IntCounterVec::new(
            Opts::new(
                "wagate_probe_outcomes_total",
                "Outcomes of ramp probes sent by this replica: accepted, failed (an error no rule trips on), lost (no answer), tripped.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(by_state.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_degraded.clone()))?;
        registry.register(Box::new(waba_gated.clone()))?;
        registry.register(Box::new(resyncs.clone()))?;
        registry.register(Box::new(open_seconds.clone()))?;
        registry.register(Box::new(probes.clone()))?;
        for outcome in ["accepted", "failed", "lost", "tripped"] {
            probes.with_label_values(&[outcome]);
        }
        for operation in STORE_OPERATIONS {
            store_errors.with_label_values(&[operation]);
        }
        for s in [State::Open, State::Held, State::Ramping] {
            for kind in ["number", "pair", "class"] {
                by_state.with_label_values(&[s.as_str(), kind]).set(0);
            }
        }
        Ok(Self {
            registry: registry.clone(),
            number_series: DEFAULT_NUMBER_SERIES,
            by_state,
            transitions,
            refused,
            store_errors,
            store_degraded,
            waba_gated,
            resyncs,
            open_seconds,
            probes,
        })
    }

    /// A breaker closed `seconds` after its last trip.
    pub fn closed_after(&self, seconds: f64) {
        self.open_seconds.observe(seconds);
    }

    /// Counts a probe's outcome: `accepted`, `failed`, `lost` or `tripped`.
    pub fn probe(&self, outcome: &str) {
        self.probes.with_label_values(&[outcome]).inc();
    }

    /// Counts a transition that reached the store.
    pub fn transition(&self, record: &TransitionRecord) {
        self.transitions
            .with_label_values(&[
                record.from.as_str(),
                record.to.as_str(),
                &record.code.to_string(),
                record.source.as_str(),
            ])
            .inc();
    }

    /// A breaker entered the snapshot in `state` (or changed to it).
    pub fn breaker_added(&self, key: &BreakerKey, state: State) {
        let kind = kind(key);
        self.by_state
            .with_label_values(&[state.as_str(), kind])
            .inc();
    }

    /// A breaker in `state` left the snapshot (or changed from it).
    pub fn breaker_removed(&self, key: &BreakerKey, state: State) {
        let kind = kind(key);
        self.by_state
            .with_label_values(&[state.as_str(), kind])
            .dec();
    }

    /// Shows at most `limit` numbers one by one in `wagate_breaker_state`.
    pub fn with_number_series(mut self, limit: usize) -> Self {
        self.number_series = limit;
        self
    }

    /// The most numbers `wagate_breaker_state` shows one by one.
    pub fn number_series(&self) -> usize {
        self.number_series
    }

    /// Adds a collector rendered at scrape time, such as the per-number
    /// state series, which is built from the snapshot when scraped rather
    /// than kept as one gauge per number.
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The counter of sends refused for `number`, resolved once per
    /// breaker by the gate rather than on every refusal.
    pub fn refused(&self, number: &str) -> IntCounter {
        self.refused.with_label_values(&[number])
    }

    /// Counts a failed store operation.
    pub fn store_error(&self, operation: &str) {
        self.store_errors.with_label_values(&[operation]).inc();
    }

    /// Whether the store is unreachable now, for `wagate_store_degraded`.
    pub fn store_degraded(&self, degraded: bool) {
        self.store_degraded.set(i64::from(degraded));
    }

    /// Replaces the `wagate_waba_gated` series with `gated`: (WABA, source)
    /// of each standing gate, at most `metrics.number_series` of them.
    pub fn waba_gates<'a>(&self, gated: impl Iterator<Item = (&'a str, &'static str)>) {
        self.waba_gated.reset();
        for (waba, source) in gated.take(self.number_series) {
            self.waba_gated.with_label_values(&[waba, source]).set(1);
        }
    }

    /// Counts a full resync.
    pub fn resync(&self) {
        self.resyncs.inc();
    }
}

/// The `kind` label of a key.
fn kind(key: &BreakerKey) -> &'static str {
    match key {
        BreakerKey::Number(_) => "number",
        BreakerKey::Pair { .. } => "pair",
        BreakerKey::Class { .. } => "class",
    }
}

/// The metrics of the health poller.
#[derive(Clone)]
pub struct HealthMetrics {
    polls: IntCounterVec,
    leases: IntGaugeVec,
    budget_left: IntGaugeVec,
}

/// The `result` values of `wagate_health_polls_total`.
pub const POLL_RESULTS: [&str; 8] = [
    "ok",
    "network",
    "timeout",
    "server_error",
    "rate_limited",
    "auth",
    "invalid",
    "no_token",
];

impl HealthMetrics {
    /// Registers every health metric on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let polls = IntCounterVec::new(
            Opts::new(
                "wagate_health_polls_total",
                "Health Status API polls by this replica, by result (ok or the kind of failure) and the number's state in the answer (available, limited, blocked, none when there was no answer).",
            ),
            &["result", "state"],
        )?;
        let leases = IntGaugeVec::new(
            Opts::new(
                "wagate_health_lease_held",
                "1 while this replica holds the polling lease of a WABA (waba=\"-\": numbers of no known WABA), 0 once it lost or gave it up.",
            ),
            &["waba"],
        )?;
        let budget_left = IntGaugeVec::new(
            Opts::new(
                "wagate_health_budget_left",
                "Health polls left in the last hour's budget (health.waba_budget_per_hour) of each WABA this replica polls.",
            ),
            &["waba"],
        )?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(leases.clone()))?;
        registry.register(Box::new(budget_left.clone()))?;
        for result in POLL_RESULTS {
            polls.with_label_values(&[result, "none"]);
        }
        for state in ["available", "limited", "blocked"] {
            polls.with_label_values(&["ok", state]);
        }
        Ok(Self {
            polls,
            leases,
            budget_left,
        })
    }

    /// Counts a poll.
    pub fn poll(&self, result: &str, state: &str) {
        self.polls.with_label_values(&[result, state]).inc();
    }

    /// Whether this replica holds the lease of `waba`.
    pub fn lease(&self, waba: &str, held: bool) {
        self.leases.with_label_values(&[waba]).set(i64::from(held));
    }

    /// Polls left in `waba`'s budget for the last hour.
    pub fn budget_left(&self, waba: &str, left: u32) {
        self.budget_left
            .with_label_values(&[waba])
            .set(i64::from(left));
    }
}

/// The webhook fields counted by name; anything else counts as `other`.
pub const WEBHOOK_FIELDS: [&str; 6] = [
    "messages",
    "account_update",
    "account_alerts",
    "account_review_update",
    "phone_number_quality_update",
    "security",
];

/// The `outcome` values of `wagate_webhook_deliveries_total`.
pub const DELIVERY_OUTCOMES: [&str; 10] = [
    "forwarded",
    "answered",
    "observed",
    "verified",
    "bad_signature",
    "too_large",
    "read_timeout",
    "bad_gateway",
    "timeout",
    "bad_request",
];

/// The metrics of the webhook routes.
#[derive(Clone)]
pub struct WebhookMetrics {
    deliveries: IntCounterVec,
    changes: IntCounterVec,
    signature_failures: IntCounterVec,
    forward_seconds: Histogram,
    forward_responses: IntCounterVec,
    unknown: IntCounterVec,
    duplicates: IntCounter,
}

impl WebhookMetrics {
    /// Registers every webhook metric on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "wagate_webhook_deliveries_total",
                "Webhook requests, by outcome (forwarded, answered, observed, verified, bad_signature, too_large, read_timeout, bad_gateway, timeout, bad_request).",
            ),
            &["outcome"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                "wagate_webhook_changes_total",
                "Changes inspected in verified webhook deliveries, by field (other: a field wagate does not know).",
            ),
            &["field"],
        )?;
        let signature_failures = IntCounterVec::new(
            Opts::new(
                "wagate_webhook_signature_failures_total",
                "Webhook deliveries refused for their X-Hub-Signature-256, by reason (missing, malformed, mismatch).",
            ),
            &["reason"],
        )?;
        let forward_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wagate_webhook_forward_duration_seconds",
                "Time from forwarding a webhook delivery to the integration's answer.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )?;
        let forward_responses = IntCounterVec::new(
            Opts::new(
                "wagate_webhook_forward_responses_total",
                "Answers of the integration to forwarded deliveries, by status class (2xx … 5xx, error, timeout).",
            ),
            &["status"],
        )?;
        let unknown = IntCounterVec::new(
            Opts::new(
                "wagate_webhook_unknown_total",
                "Webhook content wagate does not know and passed on: fields, account_update events, malformed JSON.",
            ),
            &["kind"],
        )?;
        let duplicates = IntCounter::new(
            "wagate_webhook_duplicates_total",
            "Webhook deliveries whose exact body was seen shortly before (Meta's retries, one copy per subscribed app): forwarded, not applied again.",
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        registry.register(Box::new(signature_failures.clone()))?;
        registry.register(Box::new(forward_seconds.clone()))?;
        registry.register(Box::new(forward_responses.clone()))?;
        registry.register(Box::new(unknown.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        // Closed label sets start at 0, so that a rate sees the first
        // failure rather than a series appearing at 1.
        for outcome in DELIVERY_OUTCOMES {
            deliveries.with_label_values(&[outcome]);
        }
        for reason in [Refused::Missing, Refused::Malformed, Refused::Mismatch] {
            signature_failures.with_label_values(&[reason.as_str()]);
        }
        for status in ["2xx", "3xx", "4xx", "5xx", "error", "timeout"] {
            forward_responses.with_label_values(&[status]);
        }
        for field in WEBHOOK_FIELDS.into_iter().chain(["other"]) {
            changes.with_label_values(&[field]);
        }
        for kind in ["field", "event", "malformed"] {
            unknown.with_label_values(&[kind]);
        }
        Ok(Self {
            deliveries,
            changes,
            signature_failures,
            forward_seconds,
            forward_responses,
            unknown,
            duplicates,
        })
    }

    /// Counts a webhook request by how it ended.
    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries.with_label_values(&[outcome]).inc();
    }

    /// Counts one inspected change of `field`.
    pub fn change(&self, field: &str) {
        let label = WEBHOOK_FIELDS
            .iter()
            .find(|known| **known == field)
            .copied()
            .unwrap_or("other");
        self.changes.with_label_values(&[label]).inc();
    }

    /// Counts a refused signature.
    pub fn signature_failure(&self, reason: &'static str) {
        self.signature_failures.with_label_values(&[reason]).inc();
    }

    /// Records a forward's duration and how it ended (`2xx`, `error`, …).
    pub fn forwarded(&self, seconds: f64, status: &'static str) {
        self.forward_seconds.observe(seconds);
        self.forward_responses.with_label_values(&[status]).inc();
    }

    /// Counts something unknown that was passed on.
    pub fn unknown(&self, kind: &'static str) {
        self.unknown.with_label_values(&[kind]).inc();
    }

    /// Counts a duplicate delivery.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }
}
