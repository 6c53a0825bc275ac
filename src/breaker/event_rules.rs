//! The account-event rules: what a webhook event about a whole WABA does.
//!
//! A code in a failed status goes through `[[rules]]` like a response's code.
//! Account events carry no code, so they get entries of their own, matched
//! by name: the webhook field, then the event, then (for
//! `DISABLED_UPDATE`) the ban state:
//!
//! ```toml
//! [[event_rules]]
//! event = "account_update/DISABLED_UPDATE/DISABLE"
//! action = "trip"
//! code = 131031
//! ```
//!
//! `trip` opens every known number of the WABA with `code` as its cause
//! (through `[[rules]]`, so `code` must be one that trips), and keeps the
//! WABA gated so a number learned later is opened too. `lift` ends that
//! gate (a reinstatement). `record` logs and keeps the event on the WABA;
//! `ignore` only counts it.

use serde::{Deserialize, Serialize};

/// What an account event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// Open every number of the WABA, now and learned later.
    Trip,
    /// Keep it on the WABA's record and log it (a warning, a violation).
    Record,
    /// Lift the WABA's gate (a reinstatement): numbers learned from now on
    /// are not opened. Numbers already open stay open until health or an
    /// operator lets them go.
    Lift,
    /// Gate the traffic classes an `ACCOUNT_RESTRICTION` names, for every
    /// number of the WABA, until each restriction's expiration:
    /// `RESTRICTED_BIZ_INITIATED_MESSAGING` refuses template sends,
    /// `RESTRICTED_CUSTOMER_INITIATED_MESSAGING` every other send. Other
    /// restriction types are recorded.
    Restrict,
    /// Count it only.
    Ignore,
}

/// One `[[event_rules]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    /// `field/EVENT[/STATE]`, for example `account_update/ACCOUNT_DELETED`.
    pub event: String,
    /// What it does.
    pub action: EventAction,
    /// For `trip` and `restrict`: the code the numbers' breakers are opened
    /// with, and that refusals quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// An event rules table that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventRulesError {
    /// A `trip` or `restrict` rule without the code refusals quote.
    #[error(
        "event_rules[{index}]: actions `trip` and `restrict` need a `code` (for example 131031 or 368)"
    )]
    MissingCode {
        /// Position of the rule in the list given.
        index: usize,
    },
    /// An empty event name.
    #[error("event_rules[{index}]: `event` is empty")]
    EmptyEvent {
        /// Position of the rule in the list given.
        index: usize,
    },
}

/// The event rules: the first rule naming an event decides; an event no
/// rule names is counted only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRules {
    rules: Vec<EventRule>,
}

impl EventRules {
    /// The shipped rules (reference: `account_update` events).
    pub fn defaults() -> Self {
        use EventAction::{Lift, Record, Restrict, Trip};
        let rule = |event: &str, action, code| EventRule {
            event: event.to_owned(),
            action,
            code,
        };
        Self {
            rules: vec![
                rule("account_update/DISABLED_UPDATE/DISABLE", Trip, Some(131031)),
                rule("account_update/ACCOUNT_DELETED", Trip, Some(131031)),
                rule(
                    "account_update/DISABLED_UPDATE/SCHEDULE_FOR_DISABLE",
                    Record,
                    None,
                ),
                rule("account_update/DISABLED_UPDATE/REINSTATE", Lift, None),
                rule("account_update/ACCOUNT_VIOLATION", Record, None),
                rule("account_update/ACCOUNT_RESTRICTION", Restrict, Some(368)),
                rule("account_update/ACCOUNT_OFFBOARDED", Record, None),
                rule("account_update/ACCOUNT_RECONNECTED", Record, None),
                rule("account_review_update/REJECTED", Record, None),
                rule("security/PIN_RESET_REQUEST", Record, None),
                rule("security/PIN_CHANGED", Record, None),
                rule("security/PIN_REQUEST_SUCCESS", Record, None),
                rule("phone_number_quality_update/FLAGGED", Record, None),
                rule("phone_number_quality_update/DOWNGRADE", Record, None),
            ],
        }
    }

    /// The operator's rules in front of the defaults.
    pub fn with_overrides(user: Vec<EventRule>) -> Result<Self, EventRulesError> {
        for (index, rule) in user.iter().enumerate() {
            if rule.event.trim().is_empty() {
                return Err(EventRulesError::EmptyEvent { index });
            }
            if matches!(rule.action, EventAction::Trip | EventAction::Restrict)
                && rule.code.is_none()
            {
                return Err(EventRulesError::MissingCode { index });
            }
        }
        let mut rules = user;
        rules.extend(Self::defaults().rules);
        Ok(Self { rules })
    }

    /// The rule for `event` (`field/EVENT[/STATE]`), if any.
    pub fn classify(&self, event: &str) -> Option<&EventRule> {
        self.rules.iter().find(|rule| rule.event == event)
    }
}

impl Default for EventRules {
    fn default() -> Self {
        Self::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_trip_a_disabled_or_deleted_waba_and_record_the_rest() {
        let rules = EventRules::defaults();
        let disable = rules
            .classify("account_update/DISABLED_UPDATE/DISABLE")
            .unwrap();
        assert_eq!(
            (disable.action, disable.code),
            (EventAction::Trip, Some(131031))
        );
        assert_eq!(
            rules
                .classify("account_update/ACCOUNT_DELETED")
                .unwrap()
                .action,
            EventAction::Trip
        );
        assert_eq!(
            rules
                .classify("account_update/DISABLED_UPDATE/REINSTATE")
                .unwrap()
                .action,
            EventAction::Lift
        );
        assert!(rules.classify("account_update/SOMETHING_NEW").is_none());
    }

    #[test]
    fn an_operator_rule_wins_and_bad_ones_are_named() {
        let user = vec![EventRule {
            event: "account_update/DISABLED_UPDATE/DISABLE".to_owned(),
            action: EventAction::Record,
            code: None,
        }];
        let rules = EventRules::with_overrides(user).unwrap();
        assert_eq!(
            rules
                .classify("account_update/DISABLED_UPDATE/DISABLE")
                .unwrap()
                .action,
            EventAction::Record
        );
        let bad = |event: &str, action| {
            EventRules::with_overrides(vec![EventRule {
                event: event.to_owned(),
                action,
                code: None,
            }])
        };
        assert_eq!(
            bad("security/PIN_CHANGED", EventAction::Trip),
            Err(EventRulesError::MissingCode { index: 0 })
        );
        assert_eq!(
            bad(" ", EventAction::Ignore),
            Err(EventRulesError::EmptyEvent { index: 0 })
        );
    }
}
