//! The breaker record: the unit the stores persist and compare-and-set, and
//! the queries the gate asks of it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::key::{BreakerKey, UnixMillis};

/// A breaker's state. "Open" always means sends are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Sends are forwarded. The default, and never stored: a key without a
    /// record is closed.
    #[default]
    Closed,
    /// Sends are refused until health says AVAILABLE (after `min_open`) or
    /// a cool-down ends, depending on [`Release`].
    Open,
    /// Opened by an operator: sends are refused until an operator resets or
    /// releases it. Nothing else moves it.
    Held,
    /// Coming back: one probe first, then a rate that rises stage by stage.
    Ramping,
}

impl State {
    /// Lowercase name, as used in `X-Wagate-Breaker`, metric labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::Held => "held",
            Self::Ramping => "ramping",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the event behind a transition was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A Graph API response the proxy forwarded.
    Response,
    /// A webhook from Meta (a failed status, an account event).
    Webhook,
    /// A Health Status API poll.
    Health,
    /// An operator, through the admin API or the CLI.
    Operator,
    /// Time passing: a cool-down ending or a ramp stage completing. Only
    /// transitions carry it, never the cause of an open breaker.
    Clock,
}

impl Source {
    /// Lowercase name, for metric labels and reasons.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Webhook => "webhook",
            Self::Health => "health",
            Self::Operator => "operator",
            Self::Clock => "clock",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What opened the breaker: what the gateway's refusals quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// Meta's error code, or the first health error code when a health poll
    /// opened it. 0 when an operator held a closed number: there was no
    /// error, and `source` says so.
    pub code: i64,
    /// Where it was seen.
    pub source: Source,
    /// `fbtrace_id` of the response that tripped it, for Meta support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    /// Meta's `error_data.details` (or the health error's description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The wamid of the message whose failed status webhook tripped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    /// When it was seen.
    pub at: UnixMillis,
}

/// What lets an open breaker go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// A lock: health AVAILABLE (or LIMITED) after `min_open_until` starts
    /// the ramp. Also the value for held and ramping records, where it is
    /// not consulted.
    Health,
    /// A cool-down or back-off: the breaker lets sends through again at this
    /// instant, without asking health.
    At(UnixMillis),
}

/// How many sends a ramping breaker admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// A single probe send; its outcome decides what happens next.
    Probe,
    /// Up to this many sends per second, shared by all replicas.
    PerSecond(u32),
}

/// Where a ramp is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RampProgress {
    /// 0 while the probe is out; then 1, 2, … for each rate stage.
    pub stage: u32,
    /// When this stage began.
    pub stage_since: UnixMillis,
    /// What this stage admits. Kept in the record so that every replica
    /// admits the same rate even while their settings differ.
    pub admit: Admission,
}

/// One error of a BLOCKED entity in a Health Status API response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthError {
    /// `error_code`. Meta publishes no catalogue of these; log them, do not
    /// branch on them.
    pub code: i64,
    /// `error_description`: the reason operators read.
    pub description: String,
    /// `possible_solution`, when Meta gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_solution: Option<String>,
}

/// One key's breaker: the record the stores persist as JSON and swap with a
/// check-and-set on `version`.
///
/// Only non-closed breakers are stored. Unknown fields are ignored when
/// reading, so replicas of different versions can share a store during a
/// rolling upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// What it is keyed on.
    pub key: BreakerKey,
    /// Its state; never [`State::Closed`] in a stored record.
    pub state: State,
    /// Bumped by every transition; stores write only over the version they
    /// read, so racing replicas agree on one transition.
    pub version: u64,
    /// When the current state was entered.
    pub since: UnixMillis,
    /// What opened it.
    pub cause: Cause,
    /// Times this key has tripped in the current episode (from the first
    /// trip until it closes); drives the backoff of `min_open` and of
    /// Meta's pair-rate waits.
    pub trips: u32,
    /// What releases it while open.
    pub release: Release,
    /// Earliest time health may move it from open to ramping.
    pub min_open_until: UnixMillis,
    /// Ramp progress: set while ramping, and kept while a ramp is paused by
    /// throttling (open with [`Release::At`]) so it resumes where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampProgress>,
    /// The Health Status API's errors from the last BLOCKED poll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_errors: Vec<HealthError>,
    /// Why it is in this state, in words, for operators.
    #[serde(default)]
    pub reason: String,
}

/// The `Retry-After` floor while a breaker waits for health: health polls
/// have no schedule the breaker knows of, and clients asked to retry sooner
/// than a second only spin.
pub const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// The `Retry-After` of a held breaker: an operator's hold has no end time,
/// so clients are asked to come back once a minute.
pub const HELD_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Breaker {
    /// Whether the gate refuses this key's sends outright: open and not yet
    /// expired, or held. Ramping is not refused here: the ramp budget
    /// decides per send.
    pub fn refuses_sends(&self, now: UnixMillis) -> bool {
        match self.state {
            State::Open | State::Held => !self.is_expired(now),
            State::Closed | State::Ramping => false,
        }
    }

    /// Whether this is a cool-down, back-off or timed hold whose time has
    /// passed: sends flow again even before a tick removes the record.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        match (self.state, self.release) {
            (State::Open | State::Held, Release::At(t)) => now >= t,
            _ => false,
        }
    }

    /// How long until the breaker can next change by itself, for
    /// `Retry-After`:
    /// - open with [`Release::At`]: the time left (zero once expired);
    /// - open waiting for health: the time left of `min_open`, but at least
    ///   [`RETRY_FLOOR`], because after `min_open` release waits on a health
    ///   poll whose timing only the poller knows;
    /// - held with a ttl: the time left, at most [`HELD_RETRY_AFTER`];
    /// - held: [`HELD_RETRY_AFTER`];
    /// - ramping and closed: zero.
    pub fn retry_after(&self, now: UnixMillis) -> Duration {
        match (self.state, self.release) {
            (State::Open, Release::At(t)) => t.since(now),
            (State::Open, Release::Health) => self.min_open_until.since(now).max(RETRY_FLOOR),
            (State::Held, Release::At(t)) => t.since(now).min(HELD_RETRY_AFTER),
            (State::Held, Release::Health) => HELD_RETRY_AFTER,
            (State::Closed | State::Ramping, _) => Duration::ZERO,
        }
    }

    /// What a ramping breaker admits: the probe at stage 0, then the stage's
    /// rate. `None` when not ramping: closed forwards everything; open and
    /// held refuse everything.
    pub fn admitted_rate(&self) -> Option<Admission> {
        match self.state {
            State::Ramping => self.ramp.map(|ramp| ramp.admit),
            State::Closed | State::Open | State::Held => None,
        }
    }
}
