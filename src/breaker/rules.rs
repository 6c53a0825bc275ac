//! The rules table: which Graph error codes open a breaker, and how.
//!
//! Rules are data, so operators change them in config, without code:
//!
//! ```toml
//! [[rules]]
//! codes = 131031
//! action = "trip"
//! scope = "number"
//!
//! [[rules]]
//! codes = "200-299"
//! action = "count"
//! ```
//!
//! Classification reads `error.code` only, never the HTTP status: 131031
//! arrives as a 403, and throttling codes come as 400 or 429 depending on
//! whom you ask.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Codes a rule matches: one code or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeMatch {
    lo: i64,
    hi: i64,
}

impl CodeMatch {
    /// One code.
    pub const fn one(code: i64) -> Self {
        Self { lo: code, hi: code }
    }

    /// The codes `lo..=hi`; `None` when the range is empty.
    pub const fn range(lo: i64, hi: i64) -> Option<Self> {
        if lo <= hi {
            Some(Self { lo, hi })
        } else {
            None
        }
    }

    /// Whether `code` is one of these codes.
    pub const fn contains(&self, code: i64) -> bool {
        self.lo <= code && code <= self.hi
    }
}

impl fmt::Display for CodeMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for CodeMatch {
    /// An integer for one code, `"lo-hi"` for a range: the config's forms.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            s.serialize_i64(self.lo)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for CodeMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CodeMatchVisitor)
    }
}

struct CodeMatchVisitor;

impl Visitor<'_> for CodeMatchVisitor {
    type Value = CodeMatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an error code such as 131031 or a range such as \"200-299\"")
    }

    fn visit_i64<E: de::Error>(self, code: i64) -> Result<CodeMatch, E> {
        Ok(CodeMatch::one(code))
    }

    fn visit_u64<E: de::Error>(self, code: u64) -> Result<CodeMatch, E> {
        i64::try_from(code)
            .map(CodeMatch::one)
            .map_err(|_| E::custom(format!("error code {code} is out of range")))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<CodeMatch, E> {
        let number = |part: &str| {
            part.trim().parse::<i64>().map_err(|_| {
                E::custom(format!(
                    "`{s}` is not a code or a range such as \"200-299\""
                ))
            })
        };
        match s.split_once('-') {
            None => number(s).map(CodeMatch::one),
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                CodeMatch::range(lo, hi).ok_or_else(|| {
                    E::custom(format!(
                        "code range `{s}` is empty: its low end is above its high end"
                    ))
                })
            }
        }
    }
}

/// What a matching code does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Open the breaker until health says AVAILABLE (a lock).
    Trip,
    /// Open it for the rule's `cooldown`, then let sends through again
    /// (throughput and quality throttling).
    Cooldown,
    /// Open it for 4^X seconds, X = 0, 1, 2, … for each hit in a row,
    /// capped at the rule's `cooldown` (Meta's advice for the pair limit).
    Backoff,
    /// No breaker; the code is only counted by metrics (credential problems:
    /// they are not the number's fault).
    Count,
    /// Nothing: the response goes back to the caller.
    Pass,
}

/// What a rule acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The business phone number the error was seen on.
    #[default]
    Number,
    /// That number and one recipient: applies only to pair keys, which the
    /// caller builds for the send's recipient.
    Pair,
    /// The whole WABA: the number the error was seen on, as for `Number`,
    /// and (for `trip` and `cooldown`) every other number the store knows
    /// belongs to its WABA, through `Breakers::spread_to_waba`. A number of
    /// no known WABA is acted on alone.
    Waba,
}

/// One `[[rules]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which codes it matches.
    pub codes: CodeMatch,
    /// What it does.
    pub action: Action,
    /// What it acts on; `number` when left out.
    #[serde(default)]
    pub scope: Scope,
    /// How long a `cooldown` lasts, or the cap of a `backoff`. Required by
    /// those two actions and refused on the others.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
}

impl Rule {
    /// A rule for one code without a cooldown.
    pub const fn new(codes: CodeMatch, action: Action, scope: Scope) -> Self {
        Self {
            codes,
            action,
            scope,
            cooldown: None,
        }
    }

    /// The same rule with a cooldown (or back-off cap).
    pub const fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = Some(cooldown);
        self
    }

    fn check(&self, index: usize) -> Result<(), RulesError> {
        let timed = matches!(self.action, Action::Cooldown | Action::Backoff);
        match (timed, self.cooldown) {
            (true, None) => Err(RulesError::MissingCooldown { index }),
            (true, Some(d)) if d.is_zero() => Err(RulesError::MissingCooldown { index }),
            (false, Some(_)) => Err(RulesError::UnusedCooldown {
                index,
                action: self.action,
            }),
            _ if self.action == Action::Trip && self.scope == Scope::Pair => {
                Err(RulesError::PairTrip { index })
            }
            _ => Ok(()),
        }
    }
}

/// A rules table that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A `cooldown` or `backoff` rule has no (or a zero) `cooldown`.
    #[error("rules[{index}]: a cooldown or backoff rule needs a `cooldown` above zero")]
    MissingCooldown {
        /// Position of the rule in the list given.
        index: usize,
    },
    /// A rule that opens nothing for a time has a `cooldown`, which would
    /// silently do nothing.
    #[error("rules[{index}]: action `{action:?}` takes no `cooldown`")]
    UnusedCooldown {
        /// Position of the rule in the list given.
        index: usize,
        /// Its action.
        action: Action,
    },
    /// A pair cannot wait for health: the Health Status API knows numbers,
    /// not recipients, so nothing would ever release it.
    #[error("rules[{index}]: `trip` cannot have scope `pair`; use `backoff` or `cooldown`")]
    PairTrip {
        /// Position of the rule in the list given.
        index: usize,
    },
}

/// What the table says about one code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// What to do it to.
    pub scope: Scope,
    /// The rule's cooldown or back-off cap.
    pub cooldown: Option<Duration>,
}

impl Verdict {
    /// The verdict for codes no rule matches.
    pub const PASS: Self = Self {
        action: Action::Pass,
        scope: Scope::Number,
        cooldown: None,
    };
}

/// The rules table: the first rule that matches a code decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The rules shipped for the codes in Meta's error table.
    pub fn defaults() -> Self {
        use Action::{Backoff, Cooldown, Count, Trip};
        use Scope::{Number, Pair};
        let one = CodeMatch::one;
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let rules = vec![
            // Locks and policy blocks: refuse until health says AVAILABLE.
            Rule::new(one(131031), Trip, Number),
            Rule::new(one(368), Trip, Number),
            // Not registered: sends fail until someone re-registers it.
            Rule::new(one(133010), Trip, Number),
            // Throughput (80 mps) exceeded: a short pause is enough.
            Rule::new(one(130429), Cooldown, Number).with_cooldown(Duration::from_secs(60)),
            // Spam rate limit: quality-based and slow to lift; repeated hits
            // hurt quality further.
            Rule::new(one(131048), Cooldown, Number).with_cooldown(minutes(15)),
            // Maintenance such as a throughput upgrade takes about a minute.
            Rule::new(one(131057), Cooldown, Number).with_cooldown(Duration::from_secs(90)),
            // Pair rate limit: other recipients are unaffected.
            Rule::new(one(131056), Backoff, Pair).with_cooldown(minutes(60)),
            // Credentials: not the number's fault, so no breaker.
            Rule::new(one(0), Count, Number),
            Rule::new(one(3), Count, Number),
            Rule::new(one(10), Count, Number),
            Rule::new(one(190), Count, Number),
            Rule::new(CodeMatch { lo: 200, hi: 299 }, Count, Number),
        ];
        Self { rules }
    }

    /// A table of exactly these rules.
    pub fn try_new(rules: Vec<Rule>) -> Result<Self, RulesError> {
        for (index, rule) in rules.iter().enumerate() {
            rule.check(index)?;
        }
        Ok(Self { rules })
    }

    /// The operator's rules in front of the defaults, so a user rule for a
    /// code wins and every other code keeps its default. Errors index into
    /// `user`.
    pub fn with_overrides(user: Vec<Rule>) -> Result<Self, RulesError> {
        let mut rules = Self::try_new(user)?.rules;
        rules.extend(Self::defaults().rules);
        Ok(Self { rules })
    }

    /// The verdict of the first rule matching `code`, or [`Verdict::PASS`].
    pub fn classify(&self, code: i64) -> Verdict {
        self.rules
            .iter()
            .find(|rule| rule.codes.contains(code))
            .map_or(Verdict::PASS, |rule| Verdict {
                action: rule.action,
                scope: rule.scope,
                cooldown: rule.cooldown,
            })
    }

    /// The rules in order, for `check-config` and the admin API.
    pub fn as_slice(&self) -> &[Rule] {
        &self.rules
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::defaults()
    }
}

#[cfg(test)]
mod tests;
