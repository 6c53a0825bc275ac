//! Timing of the breaker: how long a tripped number stays open, how the wait
//! grows with each re-trip, and how traffic comes back.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::BreakerKey;

/// Breaker timing, from the configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Shortest time a tripped number stays open before health may start
    /// its ramp. Default `5m`: Meta's locks are not lifted in seconds, and an
    /// early AVAILABLE right after a lock is more likely stale than real.
    #[serde(with = "humantime_serde")]
    pub min_open: Duration,
    /// Longest `min_open` however often a number re-trips. Default `6h`:
    /// policy reviews take 24–48 h, so health still has several chances a
    /// day to release a number that really recovered.
    #[serde(with = "humantime_serde")]
    pub max_open: Duration,
    /// Each re-trip in one episode multiplies `min_open` by this. Default
    /// `2.0`: a number that fails its ramp again waits twice as long, so a
    /// flapping number costs fewer failed sends each time.
    pub backoff_factor: f64,
    /// Spread of `min_open`, as a fraction either way. Default `0.1`: numbers
    /// locked together (a whole WABA) do not all start ramping in the same
    /// second. The spread comes from the key and the trip count, never from
    /// a random source, so every replica computes the same deadline.
    pub jitter: f64,
    /// How long each ramp stage lasts after the probe succeeded. Default
    /// `1m`: long enough for a fresh lock to show up as a failed send or a
    /// failed-status webhook before the rate rises again.
    #[serde(with = "humantime_serde")]
    pub ramp_stage: Duration,
    /// Sends per second admitted in each ramp stage after the probe; after
    /// the last stage the breaker closes. Default `[1, 5, 20, 80]`, ending at
    /// Meta's default throughput of 80 messages per second, because sending
    /// a backlog at full speed right after a lock risks 130429, 131056 and
    /// quality drops. Empty: the first good probe closes the breaker.
    pub ramp_rates: Vec<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_open: Duration::from_secs(5 * 60),
            max_open: Duration::from_secs(6 * 60 * 60),
            backoff_factor: 2.0,
            jitter: 0.1,
            ramp_stage: Duration::from_secs(60),
            ramp_rates: vec![1, 5, 20, 80],
        }
    }
}

/// A breaker setting out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid breaker setting `{key}`: {reason}")]
pub struct SettingsError {
    /// The setting's key, as written in the configuration file.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl Settings {
    /// Checks the values that would make the machine misbehave and returns
    /// the settings unchanged when they are fine.
    pub fn try_validate(self) -> Result<Self, SettingsError> {
        let err = |key, reason: String| Err(SettingsError { key, reason });
        if self.max_open < self.min_open {
            return err(
                "max_open",
                format!(
                    "must be at least min_open ({})",
                    humantime::format_duration(self.min_open)
                ),
            );
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            return err(
                "backoff_factor",
                format!(
                    "must be a number of at least 1, not {}",
                    self.backoff_factor
                ),
            );
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return err(
                "jitter",
                format!("must be at least 0 and below 1, not {}", self.jitter),
            );
        }
        if self.ramp_rates.contains(&0) {
            return err("ramp_rates", "every rate must be above 0".to_owned());
        }
        if self.ramp_rates.windows(2).any(|w| w[1] < w[0]) {
            return err("ramp_rates", "rates must not decrease".to_owned());
        }
        Ok(self)
    }

    /// How long a breaker that has tripped `trips` times in this episode
    /// stays open at least: `min_open * backoff_factor^(trips - 1)`, capped at
    /// `max_open`, then spread by up to `jitter` either way. So it never
    /// exceeds `max_open * (1 + jitter)`.
    pub fn min_open_for(&self, key: &BreakerKey, trips: u32) -> Duration {
        let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.min_open.as_secs_f64() * self.backoff_factor.powi(exponent);
        let capped = grown.min(self.max_open.as_secs_f64());
        let spread = capped * (1.0 + self.jitter * unit_jitter(key, trips));
        // Only unvalidated settings (NaN, negative) can fail here.
        Duration::try_from_secs_f64(spread).unwrap_or(self.max_open)
    }

    /// Rate of ramp stage `stage` (1-based; stage 0 is the probe).
    pub(crate) fn ramp_rate(&self, stage: u32) -> Option<u32> {
        let index = usize::try_from(stage.checked_sub(1)?).ok()?;
        self.ramp_rates.get(index).copied()
    }
}

/// A value in [-1, 1) fixed by the key and the trip count.
///
/// SHA-256 rather than std's hasher, whose output may change between Rust
/// releases: replicas built by different toolchains must agree.
fn unit_jitter(key: &BreakerKey, trips: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(key.storage_id().as_bytes());
    hasher.update(trips.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits fill an f64 mantissa exactly, giving a uniform value in [0, 1).
    let unit = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BreakerKey {
        BreakerKey::for_number("200000000000001")
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = Settings::default().try_validate().unwrap();
        assert_eq!(s.min_open, Duration::from_secs(300));
        assert_eq!(s.max_open, Duration::from_secs(21_600));
        assert_eq!(s.ramp_rates, [1, 5, 20, 80]);
    }

    #[test]
    fn parses_humantime_durations_and_rejects_unknown_keys() {
        let s: Settings = toml::from_str("min_open = \"30s\"\nramp_stage = \"2m\"").unwrap();
        assert_eq!(s.min_open, Duration::from_secs(30));
        assert_eq!(s.ramp_stage, Duration::from_secs(120));
        assert_eq!(s.max_open, Settings::default().max_open);
        let err = toml::from_str::<Settings>("min_opne = \"30s\"").unwrap_err();
        assert!(err.to_string().contains("min_opne"), "{err}");
        assert!(toml::from_str::<Settings>("min_open = 30").is_err());
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (
                Settings {
                    max_open: Duration::from_secs(1),
                    ..Settings::default()
                },
                "max_open",
            ),
            (
                Settings {
                    backoff_factor: 0.5,
                    ..Settings::default()
                },
                "backoff_factor",
            ),
            (
                Settings {
                    backoff_factor: f64::NAN,
                    ..Settings::default()
                },
                "backoff_factor",
            ),
            (
                Settings {
                    jitter: 1.0,
                    ..Settings::default()
                },
                "jitter",
            ),
            (
                Settings {
                    jitter: -0.1,
                    ..Settings::default()
                },
                "jitter",
            ),
            (
                Settings {
                    ramp_rates: vec![1, 0],
                    ..Settings::default()
                },
                "ramp_rates",
            ),
            (
                Settings {
                    ramp_rates: vec![5, 1],
                    ..Settings::default()
                },
                "ramp_rates",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(settings.try_validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn min_open_doubles_per_trip_within_jitter_and_caps() {
        let s = Settings::default();
        for trips in 1..=6u32 {
            let base = 300.0 * 2f64.powi(trips as i32 - 1);
            let got = s.min_open_for(&key(), trips).as_secs_f64();
            assert!(
                got >= base * 0.9 && got <= base * 1.1,
                "trips {trips}: {got}"
            );
        }
        for trips in [8, 20, u32::MAX] {
            let got = s.min_open_for(&key(), trips).as_secs_f64();
            assert!(
                (21_600.0 * 0.9..=21_600.0 * 1.1).contains(&got),
                "trips {trips}: {got}"
            );
        }
    }

    #[test]
    fn jitter_is_a_pure_function_of_key_and_trips() {
        let s = Settings::default();
        assert_eq!(s.min_open_for(&key(), 2), s.min_open_for(&key(), 2));
        let other = BreakerKey::for_number("200000000000002");
        let spread: Vec<Duration> = (0..20)
            .map(|i| s.min_open_for(&BreakerKey::for_number(format!("2000000000000{i:02}")), 1))
            .collect();
        assert!(
            spread.iter().any(|d| *d != spread[0]),
            "jitter spreads numbers"
        );
        assert_ne!(s.min_open_for(&key(), 1), s.min_open_for(&other, 1));
        let none = Settings {
            jitter: 0.0,
            ..Settings::default()
        };
        assert_eq!(none.min_open_for(&key(), 1), Duration::from_secs(300));
    }
}
