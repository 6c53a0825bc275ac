//! What a verified delivery does to the breakers: every change of the batch
//! is read, and each error Meta reported after the fact goes through the
//! same rules as an error in a response, with source `webhook`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use futures_util::future::join_all;
use tracing::{info, warn};

use crate::breaker::{EventAction, EventRules, Observed, Source};
use crate::engine::Breakers;
use crate::graph::webhook::{self, Item};
use crate::metrics::{WEBHOOK_FIELDS, WebhookMetrics};
use crate::proxy::{SendCaps, UPGRADED_RATE};
use crate::store::NumberLink;

/// The `account_update` events wagate knows of (reference §5.4).
const ACCOUNT_EVENTS: [&str; 8] = [
    "ACCOUNT_VIOLATION",
    "ACCOUNT_RESTRICTION",
    "DISABLED_UPDATE",
    "ACCOUNT_DELETED",
    "ACCOUNT_OFFBOARDED",
    "ACCOUNT_RECONNECTED",
    "PARTNER_ADDED",
    "PARTNER_REMOVED",
];

/// Inspects `body` and applies its breaker effects, returning once the
/// store has them (or holds them back while it is down). A body that is not
/// JSON is counted and left alone: it is still forwarded as it came.
pub(super) async fn apply(
    breakers: &Breakers,
    caps: Option<&SendCaps>,
    event_rules: &EventRules,
    known: &Known,
    metrics: &WebhookMetrics,
    body: &[u8],
) {
    let items = match webhook::parse(body) {
        Ok(items) => items,
        Err(_) => {
            metrics.unknown("malformed");
            warn!("webhook delivery is not JSON: forwarded uninspected");
            return;
        }
    };
    let mut observations = Vec::new();
    for item in items {
        match item {
            Item::Number {
                waba,
                number,
                display,
            } => {
                metrics.change("messages");
                let link = NumberLink {
                    number,
                    waba,
                    display,
                };
                // Learned before this change's errors apply: a number new to
                // a gated WABA opens as it is learned.
                if known.is_new(&link) {
                    match breakers.learn(link.clone()).await {
                        Ok(_) => known.remember(&link),
                        Err(error) => warn!(%error, "a number's WABA is not stored yet"),
                    }
                }
            }
            Item::Error {
                number,
                code,
                wamid,
                recipient,
                details,
            } => {
                info!(
                    number = %number,
                    code,
                    wamid = wamid.as_deref().unwrap_or(""),
                    "error reported by webhook"
                );
                let key = breakers.key_for(&number, code, recipient.as_deref());
                let observed = Observed {
                    code,
                    source: Source::Webhook,
                    fbtrace_id: None,
                    details,
                    wamid,
                    wait_hint: None,
                };
                observations.push(breakers.observe_reported(number, key, observed));
            }
            Item::AccountUpdate(update) => {
                metrics.change("account_update");
                if !ACCOUNT_EVENTS.contains(&update.event.as_str()) {
                    metrics.unknown("event");
                }
                let event = format!("account_update/{}", update.rule_event());
                info!(waba = %update.waba, event = %event, "account_update received");
                let restrictions: Vec<(String, Option<i64>)> = update
                    .restrictions
                    .iter()
                    .map(|r| (r.kind.clone(), r.expiration))
                    .collect();
                account_event(breakers, event_rules, &update.waba, &event, &restrictions).await;
            }
            Item::Other {
                field,
                waba,
                event,
                display: display_number,
            } => {
                metrics.change(&field);
                if !WEBHOOK_FIELDS.contains(&field.as_str()) {
                    metrics.unknown("field");
                }
                // Named by its display number only: resolved through the
                // number → WABA map, for the log.
                let number = match (&waba, &display_number) {
                    (Some(waba), Some(display)) => breakers
                        .number_for_display(waba, display)
                        .await
                        .ok()
                        .flatten(),
                    _ => None,
                };
                info!(
                    field = %field,
                    waba = waba.as_deref().unwrap_or(""),
                    event = event.as_deref().unwrap_or(""),
                    display_phone_number = display_number.as_deref().unwrap_or(""),
                    number = number.as_deref().unwrap_or(""),
                    "webhook event received"
                );
                // Meta raised the number's throughput: so does its cap.
                if field == "phone_number_quality_update"
                    && event.as_deref() == Some("THROUGHPUT_UPGRADE")
                    && let (Some(caps), Some(number)) = (caps, &number)
                {
                    caps.set(number, UPGRADED_RATE);
                    info!(number = %number, rate = UPGRADED_RATE, "send cap raised");
                }
                if let (Some(waba), Some(event)) = (waba, event) {
                    let event = format!("{field}/{event}");
                    account_event(breakers, event_rules, &waba, &event, &[]).await;
                }
            }
        }
    }
    for outcome in join_all(observations).await {
        if let Err(error) = outcome {
            warn!(%error, "a webhook's breaker change is not stored yet");
        }
    }
}

/// Applies the event rule for `event` of `waba`, if there is one that does
/// more than count.
async fn account_event(
    breakers: &Breakers,
    rules: &EventRules,
    waba: &str,
    event: &str,
    restrictions: &[(String, Option<i64>)],
) {
    let Some(rule) = rules.classify(event) else {
        return;
    };
    if rule.action == EventAction::Ignore || waba.is_empty() {
        return;
    }
    match breakers.waba_event(waba, event, rule, restrictions).await {
        Ok(0) => {}
        Ok(opened) => info!(
            waba,
            event, opened, "account event acted on the WABA's numbers"
        ),
        Err(error) => warn!(%error, waba, event, "an account event is not stored yet"),
    }
}

/// The links this replica already stored, as hashes: a delivery costs a
/// store write only for a link it has not seen.
#[derive(Default)]
pub(super) struct Known {
    seen: Mutex<HashSet<u64>>,
}

impl Known {
    fn hash(link: &NumberLink) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        (&link.number, &link.waba, &link.display).hash(&mut hasher);
        hasher.finish()
    }

    fn is_new(&self, link: &NumberLink) -> bool {
        !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&Self::hash(link))
    }

    fn remember(&self, link: &NumberLink) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::hash(link));
    }
}
