//! What [`apply`](super::apply) returns: the decision, the record to store
//! and the line for the audit log.

use serde::{Deserialize, Serialize};

use super::key::{BreakerKey, UnixMillis};
use super::record::{Breaker, Source, State};

/// What an event does to a breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to write. Also the answer when a closed key stays closed.
    Unchanged,
    /// Write `next` over the record that was read, if its version still
    /// matches, then log and count the transition. Boxed: transitions are
    /// rare next to unchanged answers, which stay a word wide.
    Transition(Box<Transition>),
}

/// A change to one breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state of the record that was read (closed when there was none).
    pub from: State,
    /// The state after the event. Equal to `from` for updates in place.
    pub to: State,
    /// The record to store, with `version` one above the record read.
    /// `None` when the breaker closed: the store may forget or expire it.
    pub next: Option<Breaker>,
    /// What the audit log and the metrics get.
    pub record: TransitionRecord,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// Which breaker.
    pub key: BreakerKey,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// The error code of the event, or of the breaker's cause when the event
    /// carries none (a tick, a probe, an operator, health AVAILABLE).
    pub code: i64,
    /// Where the event came from.
    pub source: Source,
    /// `fbtrace_id` of the response behind the event, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    /// The wamid of the message a status webhook reported on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    /// When it happened.
    pub at: UnixMillis,
    /// Trips in the episode after the transition (before it, on closing).
    pub trips: u32,
    /// What happened, in words.
    pub reason: String,
    /// The admin token's name, for an operator's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}
