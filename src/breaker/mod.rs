//! The per-number circuit breaker: a pure state machine and the rules table.
//!
//! Nothing here does I/O or reads the clock: events and `now` come in, a
//! [`Decision`] comes out, and the stores persist the [`Breaker`] record it
//! carries with a check-and-set on its `version`. The only module of ours
//! used here is [`crate::graph`].
//!
//! - `key`: [`UnixMillis`], [`BreakerKey`] and [`RecipientHash`].
//! - `record`: the stored [`Breaker`] record and the gate's queries on it.
//! - `event`: the machine's inputs, [`Event`].
//! - `state`: the machine itself, [`apply`].
//! - `transition`: what it returns, [`Decision`] and the audit record.
//! - `rules`: the [`Rules`] table mapping Graph error codes to actions.
//! - `settings`: timing ([`Settings`]): `min_open`, backoff, jitter, ramp.
//!
//! The shared ramp budget that admits sends while ramping is not here: it
//! needs the store. This module only says what each ramp stage admits.

mod event;
mod event_rules;
mod key;
mod record;
mod rules;
mod settings;
mod state;
mod transition;

pub use event::{Event, HealthVerdict, Observed, OperatorAction, ProbeOutcome, Restriction};
pub use event_rules::{EventAction, EventRule, EventRules, EventRulesError};
pub use key::{BreakerKey, KeyError, RecipientHash, TrafficClass, UnixMillis};
pub use record::{
    Admission, Breaker, Cause, HELD_RETRY_AFTER, HealthError, RETRY_FLOOR, RampProgress, Release,
    Source, State,
};
pub use rules::{Action, CodeMatch, Rule, Rules, RulesError, Scope, Verdict};
pub use settings::{Settings, SettingsError};
pub use state::apply;
pub use transition::{Decision, Transition, TransitionRecord};
