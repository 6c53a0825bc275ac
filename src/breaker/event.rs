//! The inputs of the machine: what was seen, what health said, how a probe
//! went, what an operator asked, and time passing.

use serde::{Deserialize, Serialize};

use super::record::{HealthError, Source};
use crate::graph::GraphError;

/// One input to [`apply`](super::apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Meta reported an error for this key, in a response or a webhook; the
    /// rules decide what it does.
    GraphError(Observed),
    /// A Health Status API poll for this number.
    Health(HealthVerdict),
    /// The outcome of the one probe send a ramp starts with.
    Probe(ProbeOutcome),
    /// An operator's command.
    Operator(OperatorAction),
    /// Time passed: ends cool-downs and ramp stages. Sent periodically for
    /// the non-closed records.
    Tick,
    /// Meta restricted one traffic class of the number's WABA until a time
    /// (`ACCOUNT_RESTRICTION`); applies to [`crate::breaker::BreakerKey::Class`]
    /// keys only.
    Restrict(Restriction),
}

/// How the probe of a ramp went. A probe that a trip rule refuses is not
/// one of these: that error reaches the machine as [`Event::GraphError`]
/// and opens the breaker again with a longer `min_open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// Meta accepted it (a 2xx): the first rate stage begins.
    Accepted,
    /// Meta answered with an error that no rule trips on (a bad recipient,
    /// a malformed message): it says nothing about the number, so the next
    /// send is the probe.
    Failed,
    /// No answer came back (a timeout, a reset connection): whether Meta
    /// took it is unknown, so the breaker waits for health again, without
    /// counting a trip.
    Lost,
}

impl ProbeOutcome {
    /// Lowercase name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }
}

/// A restriction of one traffic class, as an `ACCOUNT_RESTRICTION` webhook
/// announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// The code refusals quote.
    pub code: i64,
    /// When it ends (Meta's `expiration`).
    pub until: crate::breaker::UnixMillis,
    /// Meta's `restriction_type` and the WABA, in words.
    pub details: String,
}

/// A Graph error as seen by one of wagate's inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// `error.code`, the only field classification reads.
    pub code: i64,
    /// Where it was seen: [`Source::Response`] or [`Source::Webhook`].
    pub source: Source,
    /// `fbtrace_id`, quoted back in refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    /// `error_data.details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The wamid of the message a status webhook reported on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    /// How long the answer itself asked to wait (`Retry-After`, or
    /// `estimated_time_to_regain_access`): a cool-down lasts this long
    /// instead of its rule's `cooldown`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub wait_hint: Option<std::time::Duration>,
}

impl From<&GraphError> for Observed {
    /// An error in a response the proxy forwarded.
    fn from(e: &GraphError) -> Self {
        Self {
            code: e.code,
            source: Source::Response,
            fbtrace_id: e.fbtrace_id.clone(),
            details: e.details.clone(),
            wamid: None,
            wait_hint: e.wait_hint,
        }
    }
}

/// The overall `can_send_message` of a Health Status API response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthVerdict {
    /// Every entity can send.
    Available,
    /// Some entity has limitations but none is blocked (Meta's overall value
    /// is BLOCKED as soon as one entity is). For release this counts as
    /// available: limitations such as an unverified business do not stop
    /// sends.
    Limited,
    /// Some entity cannot send; Meta's errors, for the reason.
    Blocked(Vec<HealthError>),
}

/// What an operator asked for. The reason and the operator's name are
/// recorded in the breaker and in the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// Close the breaker now, forgetting its trips.
    Reset {
        /// Why, in the operator's words.
        reason: String,
        /// Who: the name of the admin token used.
        by: Option<String>,
    },
    /// Hold the number: refuse its sends until an operator says otherwise,
    /// or until `ttl` has passed, when it closes.
    Trip {
        /// Why, in the operator's words.
        reason: String,
        /// Who: the name of the admin token used.
        by: Option<String>,
        /// How long the hold lasts; `None` holds until an operator lets go.
        ttl: Option<std::time::Duration>,
    },
    /// Start the ramp now, without waiting for health or `min_open`.
    Release {
        /// Why, in the operator's words.
        reason: String,
        /// Who: the name of the admin token used.
        by: Option<String>,
    },
}

impl OperatorAction {
    /// A reset by no one in particular.
    pub fn reset(reason: impl Into<String>) -> Self {
        Self::Reset {
            reason: reason.into(),
            by: None,
        }
    }

    /// A hold with no end, by no one in particular.
    pub fn trip(reason: impl Into<String>) -> Self {
        Self::Trip {
            reason: reason.into(),
            by: None,
            ttl: None,
        }
    }

    /// A release by no one in particular.
    pub fn release(reason: impl Into<String>) -> Self {
        Self::Release {
            reason: reason.into(),
            by: None,
        }
    }

    /// The same action, done by `name`.
    #[must_use]
    pub fn by(mut self, name: impl Into<String>) -> Self {
        let name = Some(name.into());
        match &mut self {
            Self::Reset { by, .. } | Self::Trip { by, .. } | Self::Release { by, .. } => *by = name,
        }
        self
    }

    /// Who did it, if known.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Self::Reset { by, .. } | Self::Trip { by, .. } | Self::Release { by, .. } => {
                by.as_deref()
            }
        }
    }
}
