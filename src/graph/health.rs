//! The Health Status API's answer (`GET /{id}?fields=health_status`): an
//! overall `can_send_message` and one entry per entity (the phone number,
//! its WABA, the business, the app), each with its own verdict and, when
//! limited or blocked, Meta's `additional_info` or `errors`.
//!
//! Shared by the simulator, which serialises it, and the gateway's health
//! poller, which reads it. Reading is lenient: unknown verdicts and fields
//! are kept as unknown rather than failing the poll.

use serde::{Deserialize, Serialize};

/// `can_send_message`, of the whole answer or of one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CanSend {
    /// The entity can send.
    Available,
    /// It can send, with limitations (`additional_info` says which).
    Limited,
    /// It cannot send (`errors` say why).
    Blocked,
    /// A value this version of wagate does not know.
    #[serde(other)]
    Unknown,
}

/// The body of a health status answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// The verdicts; absent when the field was not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// The node that was asked.
    #[serde(default)]
    pub id: String,
}

/// `health_status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// Meta's overall verdict: BLOCKED as soon as one entity is.
    pub can_send_message: CanSend,
    /// Each entity's own verdict.
    #[serde(default)]
    pub entities: Vec<Entity>,
}

/// One entity of a health status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// `PHONE_NUMBER`, `WABA`, `BUSINESS`, `APP` (or a type Meta adds).
    pub entity_type: String,
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// Its verdict.
    pub can_send_message: CanSend,
    /// What limits it, in Meta's words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_info: Vec<String>,
    /// Why it is blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<EntityError>,
}

/// One item of an entity's `errors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityError {
    /// `error_code`. Meta publishes no list of these: decide on
    /// `can_send_message`, never on this code.
    pub error_code: i64,
    /// `error_description`.
    #[serde(default)]
    pub error_description: String,
    /// `possible_solution`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possible_solution: Option<String>,
}

impl HealthStatus {
    /// The overall verdict Meta derives from `entities`: BLOCKED if any
    /// entity is, else LIMITED if any is, else AVAILABLE.
    pub fn overall(entities: &[Entity]) -> CanSend {
        let any = |v: CanSend| entities.iter().any(|e| e.can_send_message == v);
        if any(CanSend::Blocked) {
            CanSend::Blocked
        } else if any(CanSend::Limited) {
            CanSend::Limited
        } else {
            CanSend::Available
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> HealthAnswer {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_fixtures_read_with_their_verdicts_and_reasons() {
        let available = fixture("health_available.json").health_status.unwrap();
        assert_eq!(available.can_send_message, CanSend::Available);
        assert_eq!(available.entities.len(), 4);
        let limited = fixture("health_limited.json").health_status.unwrap();
        assert_eq!(limited.can_send_message, CanSend::Limited);
        assert_eq!(HealthStatus::overall(&limited.entities), CanSend::Limited);
        assert!(!limited.entities[2].additional_info.is_empty());
        let blocked = fixture("health_waba_blocked.json").health_status.unwrap();
        let waba = blocked
            .entities
            .iter()
            .find(|e| e.entity_type == "WABA")
            .unwrap();
        assert_eq!(waba.can_send_message, CanSend::Blocked);
        assert_eq!(waba.errors[0].error_code, 141014);
        assert_eq!(HealthStatus::overall(&blocked.entities), CanSend::Blocked);
    }

    #[test]
    fn unknown_verdicts_are_kept_as_unknown() {
        let body = r#"{"health_status":{"can_send_message":"SOMETHING_NEW","entities":[{"entity_type":"NEW_KIND","can_send_message":"AVAILABLE","extra":1}]},"id":"1"}"#;
        let answer: HealthAnswer = serde_json::from_str(body).unwrap();
        let status = answer.health_status.unwrap();
        assert_eq!(status.can_send_message, CanSend::Unknown);
        assert_eq!(status.entities[0].entity_type, "NEW_KIND");
    }
}
