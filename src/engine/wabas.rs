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
use crate::breaker::{BreakerKey, EventAction, EventRule, Observed, Source, UnixMillis};
use crate::store::{NumberLink, StoreError};

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
        if let Some(gate) = self.waba_record(&waba).await?.gate {
            self.open_for_waba(&number, &waba, &gate).await?;
        }
        Ok(true)
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
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default())
    }

    /// Applies an account event to `waba` as `rule` says, returning how
    /// many numbers it opened. The effect is stored before this returns.
    pub async fn waba_event(
        &self,
        waba: &str,
        event: &str,
        rule: &EventRule,
    ) -> Result<usize, StoreError> {
        let mut record = self.waba_record(waba).await?;
        let at = now();
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
                });
            }
            (EventAction::Lift, _) => record.gate = None,
            _ => {}
        }
        let body = serde_json::to_string(&record).unwrap_or_default();
        self.inner.store.set_waba(waba, body).await?;
        let Some(gate) = &record.gate else {
            return Ok(0);
        };
        if rule.action != EventAction::Trip {
            return Ok(0);
        }
        let numbers = self.inner.store.numbers_of(waba).await?;
        warn!(
            waba,
            event,
            numbers = numbers.len(),
            "WABA tripped: opening its numbers"
        );
        let opened = numbers.len();
        let opening = numbers
            .iter()
            .map(|link| self.open_for_waba(&link.number, waba, gate));
        for outcome in futures_util::future::join_all(opening).await {
            outcome?;
        }
        Ok(opened)
    }

    async fn open_for_waba(
        &self,
        number: &str,
        waba: &str,
        gate: &WabaGate,
    ) -> Result<OperatorOutcome, StoreError> {
        let observed = Observed {
            code: gate.code,
            source: Source::Webhook,
            fbtrace_id: None,
            details: Some(format!("WABA {waba}: {}", gate.event)),
            wamid: None,
        };
        self.observe_and_store(BreakerKey::for_number(number), observed)
            .await
    }
}
