//! Reading a Health Status API answer into the machine's verdict, and
//! sorting a failed poll into the kinds the metrics count.

use crate::breaker::{HealthError, HealthVerdict};
use crate::graph::GraphError;
use crate::graph::health::{CanSend, Entity, HealthAnswer};

/// The entities whose verdict decides release: the number itself, its WABA
/// and the business. The app's and a template's verdicts say nothing about
/// whether the number may send.
const DECIDING: [&str; 3] = ["PHONE_NUMBER", "WABA", "BUSINESS"];

/// Why a poll gave no verdict. None of them releases or trips a breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollFailure {
    /// No connection, or it broke.
    Network(String),
    /// No answer within `health.timeout`.
    Timeout,
    /// A 5xx from Meta.
    ServerError(u16),
    /// Meta's rate limits (80007, 4, 17, 32, 613): the budget was not enough.
    RateLimited(i64),
    /// The token was refused (190 and its relatives, 10, 200-range
    /// permissions).
    Auth(i64),
    /// An answer wagate cannot read: not JSON, another error, no
    /// `PHONE_NUMBER` entity, or a verdict this version does not know.
    Invalid(String),
    /// No token to poll with.
    NoToken,
}

impl PollFailure {
    /// The `result` label of `wagate_health_polls_total`.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Network(_) => "network",
            Self::Timeout => "timeout",
            Self::ServerError(_) => "server_error",
            Self::RateLimited(_) => "rate_limited",
            Self::Auth(_) => "auth",
            Self::Invalid(_) => "invalid",
            Self::NoToken => "no_token",
        }
    }
}

impl std::fmt::Display for PollFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Network(error) => write!(f, "network error: {error}"),
            Self::Timeout => f.write_str("no answer in time"),
            Self::ServerError(status) => write!(f, "Meta answered {status}"),
            Self::RateLimited(code) => write!(f, "rate limited by Meta (error {code})"),
            Self::Auth(code) => write!(f, "token refused by Meta (error {code})"),
            Self::Invalid(why) => write!(f, "unreadable answer: {why}"),
            Self::NoToken => f.write_str(
                "no access token: set health.access_token or a [[wabas]] token, or send once through the gateway",
            ),
        }
    }
}

/// The verdict of a poll's answer: `status` and `body` as Meta sent them.
pub fn read(status: u16, body: &[u8]) -> Result<HealthVerdict, PollFailure> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, body));
    }
    let answer: HealthAnswer = serde_json::from_slice(body)
        .map_err(|e| PollFailure::Invalid(format!("not a health answer: {e}")))?;
    let entities = answer
        .health_status
        .ok_or_else(|| PollFailure::Invalid("no health_status in the answer".to_owned()))?
        .entities;
    verdict(&entities)
}

/// What the deciding entities say: BLOCKED (with their errors) if any is,
/// else LIMITED if any is, else AVAILABLE. Errors are taken from `errors`
/// on any entity, and a limited entity's `additional_info` is kept as its
/// description.
pub fn verdict(entities: &[Entity]) -> Result<HealthVerdict, PollFailure> {
    let deciding: Vec<&Entity> = entities
        .iter()
        .filter(|e| DECIDING.contains(&e.entity_type.as_str()))
        .collect();
    if !deciding.iter().any(|e| e.entity_type == "PHONE_NUMBER") {
        return Err(PollFailure::Invalid(
            "no PHONE_NUMBER entity: the id is not a phone number".to_owned(),
        ));
    }
    if let Some(unknown) = deciding
        .iter()
        .find(|e| e.can_send_message == CanSend::Unknown)
    {
        return Err(PollFailure::Invalid(format!(
            "unknown can_send_message on the {} entity",
            unknown.entity_type
        )));
    }
    let blocked: Vec<&&Entity> = deciding
        .iter()
        .filter(|e| e.can_send_message == CanSend::Blocked)
        .collect();
    if !blocked.is_empty() {
        let errors = blocked
            .iter()
            .flat_map(|e| {
                let kind = e.entity_type.clone();
                let listed = e.errors.iter().map(move |err| HealthError {
                    code: err.error_code,
                    description: format!("{kind}: {}", err.error_description),
                    possible_solution: err.possible_solution.clone(),
                });
                let bare = e.errors.is_empty().then(|| HealthError {
                    code: 0,
                    description: format!("{} is BLOCKED", e.entity_type),
                    possible_solution: None,
                });
                listed.chain(bare)
            })
            .collect();
        return Ok(HealthVerdict::Blocked(errors));
    }
    if deciding
        .iter()
        .any(|e| e.can_send_message == CanSend::Limited)
    {
        return Ok(HealthVerdict::Limited);
    }
    Ok(HealthVerdict::Available)
}

/// A non-2xx answer, by Meta's `error.code` where there is one.
fn classify_error(status: u16, body: &[u8]) -> PollFailure {
    let code = GraphError::parse(status, body).map(|e| e.code);
    match code {
        Some(code @ (80007 | 4 | 17 | 32 | 613 | 130429)) => PollFailure::RateLimited(code),
        Some(code @ (190 | 102 | 10 | 200..=299 | 463 | 467)) => PollFailure::Auth(code),
        _ if status >= 500 => PollFailure::ServerError(status),
        _ if status == 401 || status == 403 => PollFailure::Auth(code.unwrap_or(0)),
        Some(code) => PollFailure::Invalid(format!("Meta answered {status} with error {code}")),
        None => PollFailure::Invalid(format!("Meta answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn each_fixture_reads_as_its_verdict() {
        assert_eq!(
            read(200, &fixture("health_available.json")),
            Ok(HealthVerdict::Available)
        );
        assert_eq!(
            read(200, &fixture("health_limited.json")),
            Ok(HealthVerdict::Limited)
        );
        for name in ["health_blocked.json", "health_waba_blocked.json"] {
            let Ok(HealthVerdict::Blocked(errors)) = read(200, &fixture(name)) else {
                panic!("{name} is BLOCKED");
            };
            assert!(!errors.is_empty(), "{name}");
            assert!(errors.iter().all(|e| !e.description.is_empty()), "{name}");
        }
    }

    #[test]
    fn the_app_entity_does_not_decide_and_a_missing_number_is_invalid() {
        let entity = |kind: &str, can: &str| serde_json::json!({"entity_type": kind, "id": "1", "can_send_message": can});
        let answer = |entities: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({
                "health_status": {"can_send_message": "BLOCKED", "entities": entities},
                "id": "1"
            }))
            .unwrap()
        };
        let app_blocked = answer(vec![
            entity("PHONE_NUMBER", "AVAILABLE"),
            entity("WABA", "AVAILABLE"),
            entity("APP", "BLOCKED"),
        ]);
        assert_eq!(read(200, &app_blocked), Ok(HealthVerdict::Available));
        let no_number = answer(vec![entity("WABA", "AVAILABLE")]);
        assert!(matches!(
            read(200, &no_number),
            Err(PollFailure::Invalid(_))
        ));
        let unknown = answer(vec![entity("PHONE_NUMBER", "SOMETIMES")]);
        assert!(matches!(read(200, &unknown), Err(PollFailure::Invalid(_))));
        let bare = answer(vec![entity("PHONE_NUMBER", "BLOCKED")]);
        let Ok(HealthVerdict::Blocked(errors)) = read(200, &bare) else {
            panic!("blocked without errors is still blocked");
        };
        assert_eq!(errors[0].description, "PHONE_NUMBER is BLOCKED");
    }

    #[test]
    fn failures_are_sorted_by_code_then_status() {
        let error = |code: i64| {
            format!(
                r#"{{"error":{{"message":"x","type":"OAuthException","code":{code},"fbtrace_id":"A"}}}}"#
            )
        };
        assert_eq!(
            read(400, error(80007).as_bytes()),
            Err(PollFailure::RateLimited(80007))
        );
        assert_eq!(
            read(401, error(190).as_bytes()),
            Err(PollFailure::Auth(190))
        );
        assert_eq!(read(503, b"<html>"), Err(PollFailure::ServerError(503)));
        assert_eq!(
            read(500, error(1).as_bytes()),
            Err(PollFailure::ServerError(500))
        );
        assert!(matches!(
            read(400, error(100).as_bytes()),
            Err(PollFailure::Invalid(_))
        ));
        assert!(matches!(
            read(200, b"not json"),
            Err(PollFailure::Invalid(_))
        ));
    }
}
