//! Health Status API bodies (reference §6), shaped like the `health_*.json`
//! fixtures, plus the phone-number info object.
//!
//! The simulator treats every id it is asked about as a phone number, so the
//! PHONE_NUMBER entity is always present, followed by WABA, BUSINESS and APP.

use serde_json::{Map, Value};

use super::Health;
use crate::graph::health::{CanSend, Entity, EntityError, HealthStatus};

/// The WABA every simulated number belongs to (the fixtures' id).
pub(crate) const WABA_ID: &str = "100000000000001";
const BUSINESS_ID: &str = "400000000000001";
const APP_ID: &str = "300000000000001";

fn available(entity_type: &str, id: &str) -> Entity {
    Entity {
        entity_type: entity_type.to_owned(),
        id: id.to_owned(),
        can_send_message: CanSend::Available,
        additional_info: Vec::new(),
        errors: Vec::new(),
    }
}

fn limited(mut entity: Entity, info: &str) -> Entity {
    entity.can_send_message = CanSend::Limited;
    entity.additional_info = vec![info.to_owned()];
    entity
}

fn blocked(mut entity: Entity, code: i64, description: &str, solution: &str) -> Entity {
    entity.can_send_message = CanSend::Blocked;
    entity.errors = vec![EntityError {
        error_code: code,
        error_description: description.to_owned(),
        possible_solution: Some(solution.to_owned()),
    }];
    entity
}

fn entities(id: &str, health: Health) -> Vec<Entity> {
    let mut phone = available("PHONE_NUMBER", id);
    let mut waba = available("WABA", WABA_ID);
    let mut business = available("BUSINESS", BUSINESS_ID);
    let mut app = available("APP", APP_ID);
    match health {
        Health::Available => {}
        Health::Limited => {
            business = limited(
                business,
                "Your business has not completed business verification, so your messaging limit cannot be increased.",
            );
            app = limited(
                app,
                "Your app is not subscribed to the message webhook. This means you will not receive any messages sent to your phone number.",
            );
        }
        Health::Blocked => {
            phone = blocked(
                phone,
                131031,
                "The business phone number is locked and cannot send messages.",
                "Check Business Support Home for policy violations or re-register the number with the correct two-step verification PIN.",
            );
        }
        Health::WabaBlocked => {
            waba = blocked(
                waba,
                141014,
                "The WABA is banned.",
                "Please visit Business Support Home for more details (https://business.facebook.com/accountquality) on how to appeal the ban.",
            );
        }
    }
    vec![phone, waba, business, app]
}

/// A display number derived from the id (`1555` and its last seven
/// digits), so different ids look different in logs and webhooks.
pub(crate) fn display_number(id: &str) -> String {
    let tail = id.get(id.len().saturating_sub(7)..).unwrap_or(id);
    format!("1555{tail:0>7}")
}

/// The phone-number fields the simulator knows, in Meta's usual order.
fn info_fields(id: &str) -> [(&'static str, Value); 4] {
    [
        ("display_phone_number", Value::from(display_number(id))),
        ("verified_name", Value::from("wagate sim")),
        ("status", Value::from("CONNECTED")),
        ("quality_rating", Value::from("GREEN")),
    ]
}

/// `GET /{id}?fields=…health_status…`: the health status, any other known
/// field that was asked for, and `id`.
pub(crate) fn health_body(id: &str, health: Health, fields: &[&str]) -> Value {
    let entities = entities(id, health);
    let status = HealthStatus {
        can_send_message: HealthStatus::overall(&entities),
        entities,
    };
    let mut map = Map::new();
    map.insert(
        "health_status".to_owned(),
        serde_json::to_value(status).unwrap_or(Value::Null),
    );
    for (name, value) in info_fields(id) {
        if fields.contains(&name) {
            map.insert(name.to_owned(), value);
        }
    }
    map.insert("id".to_owned(), Value::from(id));
    Value::Object(map)
}

/// `GET /{id}` without `health_status`: the number's info object.
pub(crate) fn info_body(id: &str) -> Value {
    let mut map = Map::new();
    map.insert("id".to_owned(), Value::from(id));
    for (name, value) in info_fields(id) {
        map.insert(name.to_owned(), value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    const ID: &str = "200000000000001";

    fn fixture(name: &str) -> Value {
        let text = std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture");
        serde_json::from_slice(&text).expect("fixture json")
    }

    #[test]
    fn each_health_matches_its_fixture() {
        for (health, file) in [
            (Health::Available, "health_available.json"),
            (Health::Limited, "health_limited.json"),
            (Health::Blocked, "health_blocked.json"),
            (Health::WabaBlocked, "health_waba_blocked.json"),
        ] {
            assert_eq!(
                health_body(ID, health, &["health_status"]),
                fixture(file),
                "{file}"
            );
        }
    }

    #[test]
    fn extra_fields_ride_along_when_asked() {
        let v = health_body("42", Health::Available, &["health_status", "status"]);
        assert_eq!(v["status"], "CONNECTED");
        assert_eq!(v["id"], "42");
        assert!(v.get("quality_rating").is_none());
        assert_eq!(v["health_status"]["entities"][0]["id"], "42");
    }

    #[test]
    fn info_has_the_documented_fields() {
        let v = info_body(ID);
        assert_eq!(v["id"], ID);
        assert_eq!(v["verified_name"], "wagate sim");
        assert_eq!(v["status"], "CONNECTED");
        assert_eq!(v["quality_rating"], "GREEN");
        assert_eq!(v["display_phone_number"], "15550000001");
    }
}
