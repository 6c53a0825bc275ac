//! WABA scope: which numbers belong to which WhatsApp Business Account, and
//! what an account-level event did to the WABA.
//!
//! Both live in the store, so every replica knows them and a restart keeps
//! them: the links (number → WABA, display number) as webhooks and
//! `[[wabas]]` tell them, and one record per WABA. A WABA-level trip opens
//! every number known to belong to the WABA, and marks the WABA gated, so a
//! number learned afterwards (on any replica) is opened as it is learned.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Breakers, OperatorOutcome, now};
use crate::breaker::{
    Action, BreakerKey, EventAction, EventRule, Observed, OperatorAction, Restriction, Scope,
    Source, TrafficClass, UnixMillis,
};
use crate::store::{NumberLink, StoreError};

/// Tries of a WABA record's check-and-set before giving up. Each lost try
/// means another change was stored in between, and each change is stored
/// once, so a change loses at most once per change racing it: far more
/// than one WABA ever sees at once.
const WABA_WRITE_TRIES: usize = 64;

/// Account events kept per WABA, newest last.
const EVENTS_KEPT: usize = 20;

/// The engine's record of one WABA, stored as the WABA's body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WabaRecord {
    /// Set while a WABA-level trip gates every number of the WABA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<WabaGate>,
    /// The latest account events, newest last.
    #[serde(default)]
    pub events: Vec<WabaEvent>,
    /// Restricted traffic classes, each until its end; numbers learned
    /// while one runs are restricted too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<WabaRestriction>,
}

/// One restriction of a WABA's traffic class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WabaRestriction {
    /// Meta's `restriction_type`.
    pub kind: String,
    /// The kind of send it stops.
    pub class: TrafficClass,
    /// The code refusals quote.
    pub code: i64,
    /// When it ends.
    pub until: UnixMillis,
}

impl WabaRecord {
    /// The record stored as `body`. One that does not parse reads as empty:
    /// the numbers' own breakers still hold their state, and the next
    /// change writes a whole record again.
    fn parse(body: &str) -> Self {
        serde_json::from_str(body).unwrap_or_default()
    }

    /// Keeps the business- and customer-initiated restrictions among
    /// `restrictions` that have not ended at `now` (one per class, the
    /// latest end winning), drops those that ended, and returns the ones
    /// taken. Other restriction types are only recorded as the event.
    fn restrict(
        &mut self,
        waba: &str,
        restrictions: &[(String, Option<i64>)],
        code: i64,
        now: UnixMillis,
    ) -> Vec<WabaRestriction> {
        self.restrictions.retain(|r| r.until > now);
        let mut added = Vec::new();
        for (kind, expiration) in restrictions {
            let class = match kind.as_str() {
                "RESTRICTED_BIZ_INITIATED_MESSAGING" => TrafficClass::Business,
                "RESTRICTED_CUSTOMER_INITIATED_MESSAGING" => TrafficClass::Customer,
                _ => continue,
            };
            let Some(seconds) = expiration.and_then(|s| u64::try_from(s).ok()) else {
                warn!(waba, kind = %kind, "restriction without an expiration: recorded only");
                continue;
            };
            let until = UnixMillis(seconds.saturating_mul(1000));
            if until <= now {
                continue;
            }
            let restriction = WabaRestriction {
                kind: kind.clone(),
                class,
                code,
                until,
            };
            self.restrictions
                .retain(|r| r.class != class || r.until > until);
            if !self.restrictions.iter().any(|r| r.class == class) {
                self.restrictions.push(restriction.clone());
            }
            added.push(restriction);
        }
        added
    }
}

impl WabaRestriction {
    fn restriction(&self, waba: &str) -> Restriction {
        Restriction {
            code: self.code,
            until: self.until,
            details: format!("WABA {waba}: {}", self.kind),
        }
    }
}

/// What gates a WABA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WabaGate {
    /// The event that tripped it (`account_update/DISABLED_UPDATE/DISABLE`).
    pub event: String,
    /// The code its numbers are opened with.
    pub code: i64,
    /// When.
    pub since: UnixMillis,
    /// Set when an operator held the WABA: numbers learned while the gate
    /// stands are held with this reason instead of opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// When an operator's hold ends; the gate no longer applies after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<UnixMillis>,
}

impl WabaGate {
    /// Whether the gate still applies at `now`.
    pub fn stands(&self, now: UnixMillis) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// One account event as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WabaEvent {
    /// `field/EVENT[/STATE]`.
    pub event: String,
    /// What the rules made of it.
    pub action: EventAction,
    /// When it was received.
    pub at: UnixMillis,
}

/// What an operator's action did to a WABA.
#[derive(Debug)]
pub struct WabaOutcome {
    /// Whether the WABA's gate was set, replaced or lifted.
    pub gate_changed: bool,
    /// What happened to each number known to belong to the WABA.
    pub numbers: Vec<(String, Result<OperatorOutcome, StoreError>)>,
}

impl Breakers {
    /// Records that `link.number` belongs to `link.waba`. When that is new
    /// and the WABA is gated, the number is opened like its WABA's other
    /// numbers before this returns. Returns whether the link was new.
    pub async fn learn(&self, link: NumberLink) -> Result<bool, StoreError> {
        let (number, waba) = (link.number.clone(), link.waba.clone());
        if !self.inner.store.link(link).await? {
            return Ok(false);
        }
        info!(number = %number, waba = %waba, "number learned for its WABA");
        let record = self.waba_record(&waba).await?;
        let now = now();
        if let Some(gate) = record.gate.as_ref().filter(|gate| gate.stands(now)) {
            self.open_for_waba(&number, &waba, gate).await?;
        }
        for restriction in record.restrictions.iter().filter(|r| r.until > now) {
            self.restrict_and_store(&number, restriction.class, restriction.restriction(&waba))
                .await?;
        }
        Ok(true)
    }

    /// The phone number id behind a display number of `waba`, for the
    /// webhooks that name a number only that way
    /// (`phone_number_quality_update`, `security`). Reads the WABA's links
    /// from the store: these events are rare.
    pub async fn number_for_display(
        &self,
        waba: &str,
        display: &str,
    ) -> Result<Option<String>, StoreError> {
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let wanted = digits(display);
        Ok(self
            .inner
            .store
            .numbers_of(waba)
            .await?
            .into_iter()
            .find(|link| link.display.as_deref().is_some_and(|d| digits(d) == wanted))
            .map(|link| link.number))
    }

    /// The link of `number`, if known.
    pub async fn link_of(&self, number: &str) -> Result<Option<NumberLink>, StoreError> {
        self.inner.store.link_of(number).await
    }

    /// The record of `waba`: empty when nothing happened to it.
    pub async fn waba_record(&self, waba: &str) -> Result<WabaRecord, StoreError> {
        Ok(self
            .inner
            .store
            .waba(waba)
            .await?
            .as_deref()
            .map_or_else(WabaRecord::default, WabaRecord::parse))
    }

    /// Applies an account event to `waba` as `rule` says: one read and one
    /// write of the WABA's record, then the numbers it opens or restricts.
    /// `restrictions` are an `ACCOUNT_RESTRICTION`'s `restriction_info[]`
    /// (Meta's `restriction_type`, `expiration` in Unix seconds); other
    /// events have none. Returns how many numbers it opened or restricted;
    /// the effect is stored before this returns.
    pub async fn waba_event(
        &self,
        waba: &str,
        event: &str,
        rule: &EventRule,
        restrictions: &[(String, Option<i64>)],
    ) -> Result<usize, StoreError> {
        let at = now();
        let (record, added) = self
            .update_waba(waba, |record| {
                record.events.push(WabaEvent {
                    event: event.to_owned(),
                    action: rule.action,
                    at,
                });
                let excess = record.events.len().saturating_sub(EVENTS_KEPT);
                record.events.drain(..excess);
                match (rule.action, rule.code) {
                    (EventAction::Trip, Some(code)) => {
                        record.gate = Some(WabaGate {
                            event: event.to_owned(),
                            code,
                            since: at,
                            hold: None,
                            until: None,
                        });
                        Vec::new()
                    }
                    (EventAction::Lift, _) => {
                        record.gate = None;
                        Vec::new()
                    }
                    (EventAction::Restrict, Some(code)) => {
                        record.restrict(waba, restrictions, code, at)
                    }
                    _ => Vec::new(),
                }
            })
            .await?;
        let gate = record.gate.filter(|_| rule.action == EventAction::Trip);
        if gate.is_none() && added.is_empty() {
            return Ok(0);
        }
        let numbers = self.inner.store.numbers_of(waba).await?;
        warn!(
            waba,
            event,
            numbers = numbers.len(),
            "account event: acting on the WABA's numbers"
        );
        if let Some(gate) = &gate {
            let opening = numbers
                .iter()
                .map(|link| self.open_for_waba(&link.number, waba, gate));
            for outcome in futures_util::future::join_all(opening).await {
                outcome?;
            }
        }
        let restricting = numbers.iter().flat_map(|link| {
            added
                .iter()
                .map(|r| self.restrict_and_store(&link.number, r.class, r.restriction(waba)))
        });
        for outcome in futures_util::future::join_all(restricting).await {
            outcome?;
        }
        Ok(numbers.len())
    }

    /// Reads `waba`'s record, lets `change` change it, and stores it over
    /// the record it read. When another replica changed the record
    /// meanwhile, it is read again and `change` applied to it again, so
    /// neither change is lost. Returns the stored record and what `change`
    /// returned the last time.
    async fn update_waba<T>(
        &self,
        waba: &str,
        mut change: impl FnMut(&mut WabaRecord) -> T,
    ) -> Result<(WabaRecord, T), StoreError> {
        for _ in 0..WABA_WRITE_TRIES {
            let held = self.inner.store.waba(waba).await?;
            let mut record = held
                .as_deref()
                .map_or_else(WabaRecord::default, WabaRecord::parse);
            let out = change(&mut record);
            let body = serde_json::to_string(&record).unwrap_or_default();
            if self
                .inner
                .store
                .replace_waba(waba, held.as_deref(), body)
                .await?
            {
                return Ok((record, out));
            }
        }
        Err(StoreError::Unavailable(format!(
            "WABA {waba}'s record kept changing under concurrent writes"
        )))
    }

    /// Applies an operator's action to `waba`: to every number known to
    /// belong to it, and to its gate. A trip gates the WABA, so numbers
    /// learned later are held too (until the `ttl`, if one is given); a reset
    /// or a release lifts the gate, whatever set it. Returns what happened to
    /// the gate and to each number.
    pub async fn waba_operator(
        &self,
        waba: &str,
        action: OperatorAction,
    ) -> Result<WabaOutcome, StoreError> {
        let at = now();
        let (word, event_action) = match &action {
            OperatorAction::Trip { .. } => ("HOLD", EventAction::Trip),
            OperatorAction::Reset { .. } => ("RESET", EventAction::Lift),
            OperatorAction::Release { .. } => ("RELEASE", EventAction::Lift),
        };
        let by = action.actor().unwrap_or("unknown");
        let (_, gate_changed) = self
            .update_waba(waba, |record| {
                let gate_before = record.gate.take();
                if let OperatorAction::Trip { reason, ttl, .. } = &action {
                    record.gate = Some(WabaGate {
                        event: "operator/HOLD".to_owned(),
                        code: 0,
                        since: at,
                        hold: Some(reason.clone()),
                        until: ttl.map(|ttl| at.saturating_add(ttl)),
                    });
                }
                record.events.push(WabaEvent {
                    event: format!("operator/{word}/{by}"),
                    action: event_action,
                    at,
                });
                let excess = record.events.len().saturating_sub(EVENTS_KEPT);
                record.events.drain(..excess);
                record.gate != gate_before
            })
            .await?;
        let numbers = self.inner.store.numbers_of(waba).await?;
        warn!(
            waba,
            action = word,
            by,
            numbers = numbers.len(),
            "operator action on a WABA"
        );
        let applying = numbers.iter().map(|link| {
            let action = action.clone();
            async move {
                let outcome = self.operator(&link.number, action).await;
                (link.number.clone(), outcome)
            }
        });
        Ok(WabaOutcome {
            gate_changed,
            numbers: futures_util::future::join_all(applying).await,
        })
    }

    /// Whether the rule of `code` opens breakers across the whole WABA: a
    /// `trip` or `cooldown` with `scope = "waba"`.
    pub(super) fn spreads(&self, code: i64) -> bool {
        let verdict = self.inner.rules.classify(code);
        verdict.scope == Scope::Waba && matches!(verdict.action, Action::Trip | Action::Cooldown)
    }

    /// For a rule of WABA scope: `observed`, seen on `number`, applied to
    /// every other number known to belong to the same WABA, each through its
    /// own breaker (and its own health-gated release), and stored before
    /// this returns. Numbers learned later are not opened: they open on
    /// their own first such error. Returns how many numbers it reached; none
    /// when the rule is not of WABA scope or the number's WABA is not known
    /// (the rule then acts on the number alone).
    pub async fn spread_to_waba(
        &self,
        number: &str,
        observed: &Observed,
    ) -> Result<usize, StoreError> {
        if !self.spreads(observed.code) {
            return Ok(0);
        }
        let Some(link) = self.link_of(number).await? else {
            return Ok(0);
        };
        let others: Vec<NumberLink> = self
            .numbers_of(&link.waba)
            .await?
            .into_iter()
            .filter(|other| other.number != number)
            .collect();
        if others.is_empty() {
            return Ok(0);
        }
        warn!(
            waba = %link.waba,
            number,
            code = observed.code,
            numbers = others.len(),
            "a WABA-scope rule: opening the WABA's other numbers"
        );
        let details = format!("WABA {}: {} on {number}", link.waba, observed.code);
        let opening = others.iter().map(|other| {
            let observed = Observed {
                details: Some(details.clone()),
                wamid: None,
                ..observed.clone()
            };
            self.observe_and_store(BreakerKey::for_number(&other.number), observed)
        });
        for outcome in futures_util::future::join_all(opening).await {
            outcome?;
        }
        Ok(others.len())
    }

    /// [`observe_and_store`](Self::observe_and_store) for an error Meta
    /// reported on `number` after the fact (a status webhook), then
    /// [`spread_to_waba`](Self::spread_to_waba): returns once both are
    /// stored.
    pub async fn observe_reported(
        &self,
        number: String,
        key: BreakerKey,
        observed: Observed,
    ) -> Result<OperatorOutcome, StoreError> {
        let own = self.observe_and_store(key, observed.clone()).await;
        self.spread_to_waba(&number, &observed).await?;
        own
    }

    /// Every number the store knows a WABA of.
    pub async fn links(&self) -> Result<Vec<NumberLink>, StoreError> {
        self.inner.store.links().await
    }

    /// Sets `wagate_waba_gated` from the store's WABA records, before a
    /// scrape: every replica shows every standing gate, whichever replica
    /// set it, and a restart loses none. Left as it was when the store does
    /// not answer (`wagate_store_degraded` says so).
    pub async fn refresh_waba_gauge(&self) {
        let Ok(records) = self.waba_records().await else {
            return;
        };
        let at = now();
        self.inner
            .metrics
            .waba_gates(records.iter().filter_map(|(waba, record)| {
                let gate = record.gate.as_ref().filter(|gate| gate.stands(at))?;
                let source = if gate.hold.is_some() {
                    "operator"
                } else {
                    "webhook"
                };
                Some((waba.as_str(), source))
            }));
    }

    /// Every WABA with a record of its own (a gate, restrictions, events),
    /// in one store read.
    pub async fn waba_records(&self) -> Result<Vec<(String, WabaRecord)>, StoreError> {
        Ok(self
            .inner
            .store
            .waba_records()
            .await?
            .into_iter()
            .map(|(waba, body)| {
                let record = WabaRecord::parse(&body);
                (waba, record)
            })
            .collect())
    }

    /// The numbers known to belong to `waba`.
    pub async fn numbers_of(&self, waba: &str) -> Result<Vec<NumberLink>, StoreError> {
        self.inner.store.numbers_of(waba).await
    }

    async fn open_for_waba(
        &self,
        number: &str,
        waba: &str,
        gate: &WabaGate,
    ) -> Result<OperatorOutcome, StoreError> {
        if let Some(reason) = &gate.hold {
            let ttl = gate.until.map(|until| until.since(now()));
            let action = OperatorAction::Trip {
                reason: reason.clone(),
                by: None,
                ttl,
            };
            return self.operator(number, action).await;
        }
        let observed = Observed {
            code: gate.code,
            source: Source::Webhook,
            fbtrace_id: None,
            details: Some(format!("WABA {waba}: {}", gate.event)),
            wamid: None,
            wait_hint: None,
        };
        self.observe_and_store(BreakerKey::for_number(number), observed)
            .await
    }
}
