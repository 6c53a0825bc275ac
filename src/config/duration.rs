//! Durations written as `250ms`, `30s`, `5m`, `1h 30m` (humantime syntax).
//!
//! Used with `#[serde(with = "crate::config::duration")]`. Unlike
//! `humantime_serde`, a rejected value keeps humantime's reason ("unknown
//! time unit", "time unit needed"), which is what the operator needs to fix
//! it, and a bare number is refused with a hint rather than read as seconds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Writes `d` the way humantime formats it, e.g. `1m 30s`.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Reads a humantime duration string.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as `250ms`, `30s` or `5m`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v)
            .map_err(|e| E::custom(format_args!("invalid duration `{v}`: {e}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format_args!(
            "invalid duration {v}: write it with a unit, e.g. \"{v}s\""
        )))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format_args!(
            "invalid duration {v}: write it with a unit, e.g. \"{v}s\""
        )))
    }
}
