//! What a verified delivery does to the breakers: every change of the batch
//! is read, and each error Meta reported after the fact goes through the
//! same rules as an error in a response, with source `webhook`.

use futures_util::future::join_all;
use tracing::{info, warn};

use crate::breaker::{Observed, Source};
use crate::engine::Breakers;
use crate::graph::webhook::{self, Item};
use crate::metrics::{WEBHOOK_FIELDS, WebhookMetrics};

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
pub(super) async fn apply(breakers: &Breakers, metrics: &WebhookMetrics, body: &[u8]) {
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
            Item::Number { .. } => metrics.change("messages"),
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
                };
                observations.push(breakers.observe_and_store(key, observed));
            }
            Item::AccountUpdate(update) => {
                metrics.change("account_update");
                if !ACCOUNT_EVENTS.contains(&update.event.as_str()) {
                    metrics.unknown("event");
                }
                info!(
                    waba = %update.waba,
                    event = %update.rule_event(),
                    "account_update received"
                );
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
                info!(
                    field = %field,
                    waba = waba.as_deref().unwrap_or(""),
                    event = event.as_deref().unwrap_or(""),
                    display_phone_number = display_number.as_deref().unwrap_or(""),
                    "webhook event received"
                );
            }
        }
    }
    for outcome in join_all(observations).await {
        if let Err(error) = outcome {
            warn!(%error, "a webhook's breaker change is not stored yet");
        }
    }
}
