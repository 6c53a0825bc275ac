//! The breaker engine: the pure machine ([`crate::breaker`]) applied to a
//! local snapshot and written through to a [`BreakerStore`].
//!
//! Every replica keeps a snapshot of the breakers that are not closed, fed by
//! its own transitions, by the store's change events, by a periodic full
//! resync and by a resync after every reconnect. The gate reads only the
//! snapshot, so a closed number never costs a store command.
//!
//! A Graph error that trips a number is applied to the snapshot at once,
//! before the response that carried it is returned, so the very next send is
//! refused; the store write follows on a background task. When the store is
//! unreachable the engine is **fail-static**: it keeps serving from the
//! snapshot, applies new trips locally, and writes them when the store is
//! back. A closed number is never refused because the store is down.

mod codec;
mod restore;
mod snapshot;
mod sync;
mod wabas;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::breaker::{
    Breaker, BreakerKey, Decision, Event, HealthVerdict, Observed, OperatorAction, ProbeOutcome,
    Release, Restriction, Rules, Settings, State, TrafficClass, TransitionRecord, UnixMillis,
    apply,
};
use crate::graph::GraphError;
use crate::metrics::BreakerMetrics;
use crate::store::{BreakerStore, StoreError};

use self::snapshot::{Snapshot, StateSeries};
use self::sync::Job;
pub use self::wabas::{WabaEvent, WabaGate, WabaOutcome, WabaRecord, WabaRestriction};

/// How often the engine does its background work.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Full resync of the snapshot from the store, in case a change event was
    /// missed without a reconnect.
    pub resync_interval: Duration,
    /// How often expired cool-downs and ramp stages are moved on, and writes
    /// held back during a store outage are retried.
    pub tick_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(30),
            tick_interval: Duration::from_secs(1),
        }
    }
}

/// What the gate should do with a send.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// Forward it.
    Pass,
    /// Refuse it (unless it is a mark-as-read), quoting this breaker.
    Refuse(Arc<Breaker>),
    /// The number is ramping: the send needs the probe's lease or a slot of
    /// the stage's shared rate (unless it is a mark-as-read).
    Ramp(Arc<Breaker>),
    /// The number has pair back-offs or a restricted traffic class: the
    /// send's body (its recipient, whether it is a template) decides.
    AskRecipient,
}

/// The outcome of an operator's request.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorOutcome {
    /// The breaker changed; the store has the new record.
    Changed(Box<TransitionRecord>),
    /// Nothing to change (for example resetting a closed number).
    Unchanged,
    /// The store is unreachable: applied on this replica, written when the
    /// store is back.
    Pending,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Breakers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn BreakerStore>,
    rules: Rules,
    settings: Settings,
    snapshot: Snapshot,
    metrics: BreakerMetrics,
    jobs: mpsc::UnboundedSender<Job>,
    /// The last store write or read failed; cleared by the next success.
    degraded: AtomicBool,
    /// What the health poller of this replica knows of each number it polls.
    health: RwLock<HashMap<String, HealthNote>>,
    /// The fallback wait for a number no poller of this replica schedules:
    /// `health.interval`, the soonest a poll can come.
    poll_interval: std::sync::atomic::AtomicU64,
}

/// What the health poller knows of one open number: for the admin view and
/// for the `Retry-After` of its refusals.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthNote {
    /// When the next poll is due, when this replica polls the number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_poll: Option<UnixMillis>,
    /// When the last poll was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<UnixMillis>,
    /// What it said: `AVAILABLE`, `LIMITED`, `BLOCKED` or the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Consecutive polls that counted towards release.
    pub available_streak: u32,
    /// Why the number is not polled, when it is not (no token, no lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Breakers {
    /// Starts the engine on `store`: loads every active breaker, then keeps
    /// the snapshot in sync in a background task that ends when the last
    /// handle is dropped. A store that cannot be read at start leaves the
    /// engine degraded with an empty snapshot until it can.
    pub async fn start(
        store: Arc<dyn BreakerStore>,
        rules: Rules,
        settings: Settings,
        metrics: BreakerMetrics,
        timing: Timing,
    ) -> Self {
        // Subscribe before listing, so no change falls between the two.
        let events = store.subscribe();
        let (jobs, queue) = mpsc::unbounded_channel();
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                rules,
                settings,
                snapshot: Snapshot::new(metrics.clone()),
                metrics,
                jobs,
                degraded: AtomicBool::new(false),
                health: RwLock::default(),
                poll_interval: std::sync::atomic::AtomicU64::new(30_000),
            }),
        };
        let series = StateSeries::new(
            Arc::downgrade(&engine.inner),
            |inner: &Inner| &inner.snapshot,
            engine.inner.metrics.number_series(),
        );
        match series.map(|series| engine.inner.metrics.register(Box::new(series))) {
            Ok(Ok(())) => {}
            Ok(Err(error)) | Err(error) => {
                warn!(%error, "per-number breaker state series not registered");
            }
        }
        sync::resync(&engine.inner, Vec::new()).await;
        tokio::spawn(sync::run(
            Arc::downgrade(&engine.inner),
            events,
            queue,
            timing,
        ));
        engine
    }

    /// Whether every breaker is closed: one atomic load, so the gate can
    /// pass a request before even classifying it.
    pub fn all_closed(&self) -> bool {
        self.inner.snapshot.is_empty()
    }

    /// The hot-path check of a send for `number`. No I/O; when no breaker
    /// is open anywhere it is a single atomic load (the clock is not even
    /// read).
    pub fn check(&self, number: &str) -> Check {
        let snapshot = &self.inner.snapshot;
        if snapshot.is_empty() {
            return Check::Pass;
        }
        let now = now();
        if let Some(breaker) = snapshot.shared_if(number, |b| {
            b.refuses_sends(now) || b.state == State::Ramping
        }) {
            return match breaker.state {
                State::Ramping => Check::Ramp(breaker),
                _ => Check::Refuse(breaker),
            };
        }
        if snapshot.has_pairs(number) {
            return Check::AskRecipient;
        }
        Check::Pass
    }

    /// The check of a send for `number` to `recipient`, once
    /// [`Check::AskRecipient`] asked for it.
    pub fn check_pair(&self, number: &str, recipient: &str, now: UnixMillis) -> Check {
        let id = BreakerKey::for_pair(number, recipient).storage_id();
        match self.inner.snapshot.shared_if(&id, |b| b.refuses_sends(now)) {
            Some(breaker) => Check::Refuse(breaker),
            None => Check::Pass,
        }
    }

    /// Feeds a Graph error seen in a send response for `number` (and, when
    /// known, the recipient of that send, for pair back-offs).
    ///
    /// Applied to the snapshot before this returns, so the next send is
    /// refused on this replica at once; the store write follows.
    ///
    /// A rule of WABA scope also opens the WABA's other known numbers, in a
    /// task of its own: the response is not held for the store.
    pub fn observe(&self, number: &str, error: &GraphError, recipient: Option<&str>) {
        let key = self.key_for(number, error.code, recipient);
        let observed = Observed::from(error);
        if self.spreads(error.code) {
            let (breakers, number, observed) = (self.clone(), number.to_owned(), observed.clone());
            tokio::spawn(async move {
                if let Err(error) = breakers.spread_to_waba(&number, &observed).await {
                    warn!(%error, number, "a WABA-scope trip did not reach the WABA's numbers");
                }
            });
        }
        self.inner
            .submit(key, Event::GraphError(observed), now(), None);
    }

    /// The breaker an error `code` for `number` belongs to: the pair of
    /// `number` and `recipient` for a pair-scope rule when the recipient is
    /// known, else the number.
    pub fn key_for(&self, number: &str, code: i64, recipient: Option<&str>) -> BreakerKey {
        match recipient {
            Some(recipient)
                if self.inner.rules.classify(code).scope == crate::breaker::Scope::Pair =>
            {
                BreakerKey::for_pair(number, recipient)
            }
            _ => BreakerKey::for_number(number),
        }
    }

    /// Feeds an error Meta reported for `key` through any input (a webhook,
    /// later a health poll), and waits until the store has the transition,
    /// or holds it back while the store is down. Like [`Breakers::observe`]
    /// the snapshot takes it at once; the wait is for callers that must not
    /// answer before the effect is stored, such as a webhook acknowledged
    /// to Meta. A duplicate that changes nothing is answered at once.
    pub async fn observe_and_store(
        &self,
        key: BreakerKey,
        observed: Observed,
    ) -> Result<OperatorOutcome, StoreError> {
        self.apply_and_store(key, Event::GraphError(observed)).await
    }

    /// Restricts one traffic class of a number until the restriction's end
    /// (an `ACCOUNT_RESTRICTION` webhook), waiting as
    /// [`Breakers::observe_and_store`] does.
    pub async fn restrict_and_store(
        &self,
        number: &str,
        class: TrafficClass,
        restriction: Restriction,
    ) -> Result<OperatorOutcome, StoreError> {
        let key = BreakerKey::for_class(number, class);
        self.apply_and_store(key, Event::Restrict(restriction))
            .await
    }

    /// The check of a send of `class` for `number`, once
    /// [`Check::AskRecipient`] asked for the body.
    pub fn check_class(&self, number: &str, class: TrafficClass, now: UnixMillis) -> Check {
        let id = BreakerKey::for_class(number, class).storage_id();
        match self.inner.snapshot.shared_if(&id, |b| b.refuses_sends(now)) {
            Some(breaker) => Check::Refuse(breaker),
            None => Check::Pass,
        }
    }

    async fn apply_and_store(
        &self,
        key: BreakerKey,
        event: Event,
    ) -> Result<OperatorOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.submit(key, event, now(), Some(reply));
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("breaker engine stopped".to_owned())))
    }

    /// Applies an operator's reset, trip or release to `number`, waiting for
    /// the store's answer so the caller can report it.
    pub async fn operator(
        &self,
        number: &str,
        action: OperatorAction,
    ) -> Result<OperatorOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.submit(
            BreakerKey::for_number(number),
            Event::Operator(action),
            now(),
            Some(reply),
        );
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("breaker engine stopped".to_owned())))
    }

    /// A counter that moves whenever the breakers may have changed; the
    /// health poller lists [`Breakers::awaiting_health`] only when it moved.
    pub fn generation(&self) -> u64 {
        self.inner.snapshot.generation()
    }

    /// The numbers whose breakers wait for a health poll: open, released by
    /// health, with the time `min_open` ends. Held breakers are not among
    /// them: only an operator lets those go.
    pub fn awaiting_health(&self) -> Vec<(String, UnixMillis)> {
        self.inner.snapshot.pick(|b| {
            (matches!(b.key, BreakerKey::Number(_))
                && b.state == State::Open
                && b.release == Release::Health)
                .then(|| (b.key.number().to_owned(), b.min_open_until))
        })
    }

    /// Feeds a health poll's verdict for `number` and waits until the
    /// store has the transition (or holds it back while the store is down).
    pub async fn health(
        &self,
        number: &str,
        verdict: HealthVerdict,
    ) -> Result<OperatorOutcome, StoreError> {
        self.apply_and_store(BreakerKey::for_number(number), Event::Health(verdict))
            .await
    }

    /// Feeds the outcome of a ramp's probe for `number`, through the same
    /// entry as every observation; the store write follows.
    pub fn probe(&self, number: &str, outcome: ProbeOutcome) {
        let state = self
            .inner
            .snapshot
            .shared_if(number, |_| true)
            .map(|b| b.state);
        let label = match (outcome, state) {
            // The proxy's hook already fed the error; it re-opened the
            // breaker.
            (ProbeOutcome::Failed, Some(State::Open)) => "tripped",
            (outcome, _) => outcome.as_str(),
        };
        self.inner.metrics.probe(label);
        self.inner.submit(
            BreakerKey::for_number(number),
            Event::Probe(outcome),
            now(),
            None,
        );
    }

    /// Takes (or renews) the lease `name` of `scope` for `holder`, shared by
    /// every replica through the store. See [`BreakerStore::take_lease`].
    pub async fn take_lease(
        &self,
        scope: &str,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let taken = self.inner.store.take_lease(scope, name, holder, ttl).await;
        self.note_store("take_lease", &taken);
        taken
    }

    /// Gives a lease up. See [`BreakerStore::release_lease`].
    pub async fn release_lease(
        &self,
        scope: &str,
        name: &str,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let released = self.inner.store.release_lease(scope, name, holder).await;
        self.note_store("release_lease", &released);
        released
    }

    /// Admits one send of a ramping `number` at `per_second`, across every
    /// replica: `None` when admitted, else the wait until the next slot.
    pub async fn admit_ramp(
        &self,
        number: &str,
        per_second: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let admitted = self.inner.store.admit(number, "ramp", per_second).await;
        self.note_store("admit", &admitted);
        admitted
    }

    fn note_store<T>(&self, operation: &str, result: &Result<T, StoreError>) {
        if result.is_err() {
            self.inner.metrics.store_error(operation);
        }
    }

    /// Records what the poller knows of `number`; `None` forgets it (the
    /// number is no longer polled here).
    pub fn note_health(&self, number: &str, note: Option<HealthNote>) {
        let mut notes = self.inner.health.write().unwrap_or_else(|e| e.into_inner());
        match note {
            Some(note) => {
                notes.insert(number.to_owned(), note);
            }
            None => {
                notes.remove(number);
            }
        }
    }

    /// What the poller of this replica knows of `number`.
    pub fn health_note(&self, number: &str) -> Option<HealthNote> {
        let notes = self.inner.health.read().unwrap_or_else(|e| e.into_inner());
        notes.get(number).cloned()
    }

    /// Sets the wait quoted for open numbers this replica does not poll.
    pub fn set_poll_interval(&self, interval: Duration) {
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.inner.poll_interval.store(millis, Ordering::Relaxed);
    }

    /// The `Retry-After` of a refusal by `breaker` at `now`: the time left
    /// of a cool-down or of `min_open`, else, waiting for health, the time
    /// of the next poll (this replica's own schedule when it polls the
    /// number, `health.interval` when another replica does).
    pub fn retry_after(&self, breaker: &Breaker, now: UnixMillis) -> Duration {
        let own = breaker.retry_after(now);
        let waits_for_poll = breaker.state == State::Open
            && breaker.release == Release::Health
            && now >= breaker.min_open_until;
        if !waits_for_poll {
            return own;
        }
        let notes = self.inner.health.read().unwrap_or_else(|e| e.into_inner());
        let next = notes
            .get(breaker.key.number())
            .and_then(|note| note.next_poll);
        drop(notes);
        let wait = match next {
            Some(at) => at.since(now),
            None => Duration::from_millis(self.inner.poll_interval.load(Ordering::Relaxed)),
        };
        wait.max(own)
    }

    /// Whether any rule backs off (number, recipient) pairs, so failed sends
    /// need their recipient.
    pub fn has_pair_rules(&self) -> bool {
        self.inner
            .rules
            .as_slice()
            .iter()
            .any(|rule| rule.scope == crate::breaker::Scope::Pair)
    }

    /// Every breaker that is not closed, numbers first, then pairs.
    pub fn list(&self) -> Vec<Breaker> {
        let mut all = self.inner.snapshot.all();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The breaker of `number`, if not closed.
    pub fn get(&self, number: &str) -> Option<Breaker> {
        self.inner.snapshot.get(number)
    }

    /// Whether the store is unreachable (the engine serves from its
    /// snapshot). Feeds `/readyz`.
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Acquire) || !self.inner.store.is_healthy()
    }

    /// Sets `wagate_store_degraded` to what [`is_degraded`](Self::is_degraded)
    /// says now. Called before each scrape, so the gauge agrees with
    /// `/readyz` and the store path has no gauge to keep.
    pub fn refresh_store_gauge(&self) {
        self.inner.metrics.store_degraded(self.is_degraded());
    }

    /// `"embedded"` or `"redis"`.
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// The store's audit lines for `number`, newest first.
    pub async fn audit(&self, number: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.store.audit(number, limit).await
    }

    /// The store's audit lines of every number, newest first.
    pub async fn recent_audit(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.store.recent_audit(limit).await
    }

    /// Sends refused for `number` by this replica since it started.
    pub fn refused_count(&self, number: &str) -> u64 {
        self.inner.metrics.refused(number).get()
    }
}

impl Inner {
    /// Applies `event` to the snapshot now, and queues the store write.
    fn submit(
        &self,
        key: BreakerKey,
        event: Event,
        now: UnixMillis,
        reply: Option<oneshot::Sender<Result<OperatorOutcome, StoreError>>>,
    ) {
        let base = self.snapshot.get(&key.storage_id());
        let decision = apply(
            base.as_ref(),
            &key,
            &event,
            now,
            &self.rules,
            &self.settings,
        );
        let Decision::Transition(transition) = decision else {
            // Already in that state here. An operator still goes to the
            // store, which may know better than this replica; anything else
            // is a duplicate.
            if !matches!(event, Event::Operator(_)) {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(OperatorOutcome::Unchanged));
                }
                return;
            }
            if let Some(reply) = reply {
                let _ = self.jobs.send(Job {
                    key,
                    event,
                    now,
                    base,
                    reply: Some(reply),
                });
            }
            return;
        };
        match &transition.next {
            Some(next) => {
                self.snapshot.offer(next.clone(), false);
            }
            None => self
                .snapshot
                .close(&key, base.as_ref().map_or(0, |b| b.version)),
        }
        if transition.to != transition.from && transition.to != State::Closed {
            info!(
                number = key.number(),
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                code = transition.record.code,
                source = ?transition.record.source,
                "breaker tripped on this replica"
            );
        }
        let _ = self.jobs.send(Job {
            key,
            event,
            now,
            base,
            reply,
        });
    }
}

/// The wall clock as unix millis: breaker state is shared across machines,
/// so it is stamped with wall-clock time, not a monotonic instant.
pub fn now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}
