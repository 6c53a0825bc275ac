//! The per-number circuit breaker: a pure state machine and the rules table.
//!
//! Nothing here does I/O or reads the clock. The only module of ours used
//! here is [`crate::graph`].
//!
//! - `key`: [`UnixMillis`], [`BreakerKey`] and [`RecipientHash`].
//! - `rules`: the [`Rules`] table mapping Graph error codes to actions.

mod key;
mod rules;

pub use key::{BreakerKey, KeyError, RecipientHash, UnixMillis};
pub use rules::{Action, CodeMatch, Rule, Rules, RulesError, Scope, Verdict};
