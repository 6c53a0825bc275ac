//! Time and identity: the wall-clock instants breakers are timed with and the
//! keys they are stored under.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A wall-clock instant in milliseconds since the Unix epoch.
///
/// Breaker records are shared by replicas on different machines, so their
/// deadlines are wall-clock values: an `Instant` means nothing outside the
/// process that made it. Nothing in the breaker reads the clock; every
/// function that needs the time takes it as an argument.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Converts a `SystemTime`; instants before the epoch become 0.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self(ms)
    }

    /// `self + d`, truncated to whole milliseconds and saturating at the far
    /// future rather than wrapping.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is not earlier.
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for UnixMillis {
    /// RFC 3339 in UTC with milliseconds, for reasons and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNIX_EPOCH.checked_add(Duration::from_millis(self.0)) {
            Some(t) => write!(f, "{}", humantime::format_rfc3339_millis(t)),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// Separates the number from the recipient hash in a pair's storage id.
const PAIR_TAG: &str = ":pair:";

/// Separates the number from the traffic class in a class's storage id.
const CLASS_TAG: &str = ":class:";

/// A kind of send, for restrictions that stop one kind only (Meta's
/// `ACCOUNT_RESTRICTION` webhook).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficClass {
    /// Business-initiated: template messages, the only sends allowed
    /// outside a customer service window.
    Business,
    /// Replies within a customer service window: every other send.
    Customer,
}

impl TrafficClass {
    /// `business` or `customer`, as in storage ids.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Business => "business",
            Self::Customer => "customer",
        }
    }

    /// The class of a send, from whether it is a template message.
    pub const fn of_send(template: bool) -> Self {
        if template {
            Self::Business
        } else {
            Self::Customer
        }
    }
}

/// What a breaker is keyed on.
///
/// Serialized as its [`storage_id`](Self::storage_id), so a stored record
/// names its own key in the same form the stores use for their keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BreakerKey {
    /// A business phone number, by its phone number id (the common case).
    Number(String),
    /// One business number sending to one recipient: Meta's pair rate limit
    /// (131056) backs off only that pair.
    Pair {
        /// The business phone number id.
        number: String,
        /// The recipient, hashed.
        recipient: RecipientHash,
    },
    /// One business number's sends of one traffic class: a WABA restricted
    /// from business-initiated messaging still answers its customers.
    Class {
        /// The business phone number id.
        number: String,
        /// The kind of send it gates.
        class: TrafficClass,
    },
}

impl BreakerKey {
    /// The key of a business phone number.
    pub fn for_number(number: impl Into<String>) -> Self {
        Self::Number(number.into())
    }

    /// The key of a (business number, recipient) pair; the recipient is
    /// hashed here and never stored.
    pub fn for_pair(number: impl Into<String>, recipient: &str) -> Self {
        Self::Pair {
            number: number.into(),
            recipient: RecipientHash::of(recipient),
        }
    }

    /// The key of one traffic class of a business number.
    pub fn for_class(number: impl Into<String>, class: TrafficClass) -> Self {
        Self::Class {
            number: number.into(),
            class,
        }
    }

    /// The business phone number id, for every kind of key.
    pub fn number(&self) -> &str {
        match self {
            Self::Number(number) | Self::Pair { number, .. } | Self::Class { number, .. } => number,
        }
    }

    /// Whether the key is below a number (a pair or a class): such records
    /// gate only some of the number's sends, and the gate reads the send's
    /// body to tell which.
    pub fn is_partial(&self) -> bool {
        !matches!(self, Self::Number(_))
    }

    /// The stable id stores key records on: `200000000000001` for a number,
    /// `200000000000001:pair:<16 hex>` for a pair,
    /// `200000000000001:class:business` for a class. It parses back with
    /// [`FromStr`].
    pub fn storage_id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => f.write_str(number),
            Self::Pair { number, recipient } => write!(f, "{number}{PAIR_TAG}{recipient}"),
            Self::Class { number, class } => write!(f, "{number}{CLASS_TAG}{}", class.as_str()),
        }
    }
}

/// A string that is not a breaker key or a recipient hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid breaker key `{input}`: {reason}")]
pub struct KeyError {
    /// What was parsed (a storage id: it never holds a raw recipient).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for BreakerKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let err = |reason| KeyError {
            input: s.to_owned(),
            reason,
        };
        if let Some((number, class)) = s.split_once(CLASS_TAG) {
            let class = match class {
                "business" => TrafficClass::Business,
                "customer" => TrafficClass::Customer,
                _ => return Err(err("the traffic class is `business` or `customer`")),
            };
            if number.is_empty() || number.contains(':') {
                return Err(err(
                    "the phone number id must be non-empty and contain no `:`",
                ));
            }
            return Ok(Self::for_class(number, class));
        }
        let (number, recipient) = match s.split_once(PAIR_TAG) {
            Some((number, hash)) => {
                let hash = hash.parse::<RecipientHash>().map_err(|e| err(e.reason))?;
                (number, Some(hash))
            }
            None => (s, None),
        };
        // A colon in the number would make storage ids ambiguous.
        if number.is_empty() || number.contains(':') {
            return Err(err(
                "the phone number id must be non-empty and contain no `:`",
            ));
        }
        Ok(match recipient {
            Some(recipient) => Self::Pair {
                number: number.to_owned(),
                recipient,
            },
            None => Self::Number(number.to_owned()),
        })
    }
}

impl TryFrom<String> for BreakerKey {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<BreakerKey> for String {
    fn from(key: BreakerKey) -> Self {
        key.storage_id()
    }
}

/// A recipient, hashed: the first 16 hex digits of the SHA-256 of the
/// normalised recipient.
///
/// Pair records live in shared stores and audit logs, so they must not carry
/// customers' phone numbers. 64 bits keep collisions between one business
/// number's recipients negligible.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecipientHash(String);

impl RecipientHash {
    /// Number of hex digits kept.
    pub const LEN: usize = 16;

    /// Hashes a recipient as the send request names it (`to`).
    ///
    /// A phone number (digits with `+`, spaces, `-`, `.` or parentheses) is
    /// reduced to its digits, so `+1 555-000 9999` and `15550009999` are the
    /// same pair. Any other identifier, such as a business-scoped user id,
    /// is hashed as given (trimmed): reducing it to digits would make
    /// different users share one pair.
    pub fn of(recipient: &str) -> Self {
        let trimmed = recipient.trim();
        let phone_like = trimmed.bytes().any(|b| b.is_ascii_digit())
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.() ".contains(&b));
        let digest = if phone_like {
            let digits: Vec<u8> = trimmed.bytes().filter(u8::is_ascii_digit).collect();
            Sha256::digest(&digits)
        } else {
            Sha256::digest(trimmed.as_bytes())
        };
        let mut hex = hex::encode(digest);
        hex.truncate(Self::LEN);
        Self(hex)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecipientHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RecipientHash {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let valid =
            s.len() == Self::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(KeyError {
                input: s.to_owned(),
                reason: "a recipient hash is 16 lowercase hex digits",
            })
        }
    }
}

impl TryFrom<String> for RecipientHash {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<RecipientHash> for String {
    fn from(hash: RecipientHash) -> Self {
        hash.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_keys_round_trip_and_sit_below_their_number() {
        for class in [TrafficClass::Business, TrafficClass::Customer] {
            let key = BreakerKey::for_class("200000000000001", class);
            let id = key.storage_id();
            assert_eq!(id, format!("200000000000001:class:{}", class.as_str()));
            assert_eq!(id.parse::<BreakerKey>().unwrap(), key);
            assert_eq!(key.number(), "200000000000001");
            assert!(key.is_partial());
        }
        assert!(!BreakerKey::for_number("1").is_partial());
        assert!("1:class:other".parse::<BreakerKey>().is_err());
        assert!(":class:business".parse::<BreakerKey>().is_err());
    }

    #[test]
    fn storage_ids_round_trip() {
        let number = BreakerKey::for_number("200000000000001");
        assert_eq!(number.storage_id(), "200000000000001");
        let pair = BreakerKey::for_pair("200000000000001", "15550009999");
        let id = pair.storage_id();
        assert!(id.starts_with("200000000000001:pair:"), "{id}");
        assert_eq!(id.len(), "200000000000001:pair:".len() + 16);
        for key in [number, pair] {
            assert_eq!(key.storage_id().parse::<BreakerKey>(), Ok(key.clone()));
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(json, format!("\"{}\"", key.storage_id()));
            assert_eq!(serde_json::from_str::<BreakerKey>(&json).unwrap(), key);
            assert_eq!(key.number(), "200000000000001");
        }
    }

    #[test]
    fn recipient_hash_hides_the_number_and_ignores_formatting() {
        let hash = RecipientHash::of("15550009999");
        assert_eq!(hash.as_str().len(), 16);
        assert!(!hash.as_str().contains("5550009999"));
        // The SHA-256 of "15550009999", cut to 16 hex digits.
        let full = hex::encode(Sha256::digest(b"15550009999"));
        assert_eq!(hash.as_str(), &full[..16]);
        assert_eq!(RecipientHash::of("+1 (555) 000-9999"), hash);
        assert_ne!(RecipientHash::of("15550009998"), hash);
    }

    #[test]
    fn user_ids_are_not_reduced_to_digits() {
        assert_ne!(RecipientHash::of("US.abc1"), RecipientHash::of("US.xyz1"));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            ":pair:0123456789abcdef",
            "2000:pair:short",
            "2000:pair:0123456789ABCDEF",
            "20:00",
        ] {
            assert!(bad.parse::<BreakerKey>().is_err(), "{bad:?}");
        }
        let err = "2000:pair:xyz".parse::<BreakerKey>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid breaker key `2000:pair:xyz`: a recipient hash is 16 lowercase hex digits"
        );
    }

    #[test]
    fn unix_millis_arithmetic_saturates() {
        let t = UnixMillis(1_000);
        assert_eq!(
            t.saturating_add(Duration::from_millis(1_500)),
            UnixMillis(2_500)
        );
        assert_eq!(
            UnixMillis(u64::MAX - 1).saturating_add(Duration::MAX),
            UnixMillis(u64::MAX)
        );
        assert_eq!(UnixMillis(2_500).since(t), Duration::from_millis(1_500));
        assert_eq!(t.since(UnixMillis(2_500)), Duration::ZERO);
        assert_eq!(
            UnixMillis(1_786_700_000_000).to_string(),
            "2026-08-14T09:33:20.000Z"
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), "1000");
    }
}
