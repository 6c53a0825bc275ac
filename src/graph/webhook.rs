//! Meta's webhook payloads, read for what the breakers need.
//!
//! The envelope is `{"object", "entry": [{"id", "time"?, "changes":
//! [{"field", "value"}]}]}`, several entries and changes per delivery.
//! Reading is lenient: a field of an unexpected type is treated as absent,
//! unknown fields and events come out as [`Item::Other`], and nothing here
//! fails but the JSON itself. The bytes are never re-serialised: whoever
//! forwards a delivery forwards what was received.

use serde_json::Value;

/// What one change of a delivery says, as far as the breakers care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A `messages` change named a business number: the number ↔ WABA (and
    /// display number) map learns it.
    Number {
        /// `entry[].id`, normally the WABA.
        waba: String,
        /// `metadata.phone_number_id`.
        number: String,
        /// `metadata.display_phone_number`.
        display: Option<String>,
    },
    /// An error Meta reported for a number after the fact: an
    /// `errors[]` item of a `failed` status, or of `value.errors[]`.
    Error {
        /// `metadata.phone_number_id`.
        number: String,
        /// `errors[].code`.
        code: i64,
        /// The status's `id` (the wamid), for a failed status.
        wamid: Option<String>,
        /// `statuses[].recipient_id`, for pair-scope codes.
        recipient: Option<String>,
        /// `errors[].error_data.details`, else `title`.
        details: Option<String>,
    },
    /// An `account_update` change.
    AccountUpdate(AccountUpdate),
    /// Any other field (`account_alerts`, `account_review_update`,
    /// `phone_number_quality_update`, `security`, or one wagate does not
    /// know): recorded and counted, no breaker effect of its own here.
    Other {
        /// `changes[].field`.
        field: String,
        /// `entry[].id`.
        waba: Option<String>,
        /// `value.event`, `value.decision` or `value.alert_info.alert_type`.
        event: Option<String>,
        /// `value.display_phone_number`, for fields that name the number only
        /// that way.
        display: Option<String>,
    },
}

/// An `account_update` change: WABA-level enforcement and lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountUpdate {
    /// `entry[].id`.
    pub waba: String,
    /// `value.event`, such as `DISABLED_UPDATE` or `ACCOUNT_RESTRICTION`.
    pub event: String,
    /// `ban_info.waba_ban_state` of a `DISABLED_UPDATE`: `DISABLE`,
    /// `SCHEDULE_FOR_DISABLE` or `REINSTATE`.
    pub ban_state: Option<String>,
    /// `restriction_info[]` of an `ACCOUNT_RESTRICTION`.
    pub restrictions: Vec<Restriction>,
    /// `violation_info.violation_type` of an `ACCOUNT_VIOLATION`.
    pub violation: Option<String>,
    /// `entry[].time` (Unix seconds), when given.
    pub time: Option<i64>,
}

impl AccountUpdate {
    /// `event`, with the ban state after a slash for `DISABLED_UPDATE`
    /// (`DISABLED_UPDATE/DISABLE`): the name rules match account events by.
    pub fn rule_event(&self) -> String {
        match &self.ban_state {
            Some(state) => format!("{}/{state}", self.event),
            None => self.event.clone(),
        }
    }
}

/// One `restriction_info[]` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restriction {
    /// `restriction_type`, such as `RESTRICTED_BIZ_INITIATED_MESSAGING`.
    pub kind: String,
    /// `expiration`, Unix seconds.
    pub expiration: Option<i64>,
}

/// Reads every entry and change of a delivery, in order.
pub fn parse(body: &[u8]) -> Result<Vec<Item>, serde_json::Error> {
    let envelope: Value = serde_json::from_slice(body)?;
    let mut items = Vec::new();
    for entry in array(&envelope, "entry") {
        let waba = string(entry, "id");
        let time = entry.get("time").and_then(Value::as_i64);
        for change in array(entry, "changes") {
            let field = string(change, "field").unwrap_or_default();
            let value = change.get("value").unwrap_or(&Value::Null);
            match field.as_str() {
                "messages" => messages(waba.as_deref(), value, &mut items),
                "account_update" => items.push(account_update(waba.clone(), time, value)),
                _ => items.push(Item::Other {
                    event: string(value, "event")
                        .or_else(|| string(value, "decision"))
                        .or_else(|| {
                            value
                                .get("alert_info")
                                .and_then(|a| string(a, "alert_type"))
                        }),
                    display: string(value, "display_phone_number"),
                    field,
                    waba: waba.clone(),
                }),
            }
        }
    }
    Ok(items)
}

fn messages(waba: Option<&str>, value: &Value, items: &mut Vec<Item>) {
    let metadata = value.get("metadata").unwrap_or(&Value::Null);
    let Some(number) = string(metadata, "phone_number_id") else {
        return;
    };
    if let Some(waba) = waba {
        items.push(Item::Number {
            waba: waba.to_owned(),
            number: number.clone(),
            display: string(metadata, "display_phone_number"),
        });
    }
    for status in array(value, "statuses") {
        if status.get("status").and_then(Value::as_str) != Some("failed") {
            continue;
        }
        for error in array(status, "errors") {
            if let Some(code) = code(error) {
                items.push(Item::Error {
                    number: number.clone(),
                    code,
                    wamid: string(status, "id"),
                    recipient: string(status, "recipient_id"),
                    details: details(error),
                });
            }
        }
    }
    for error in array(value, "errors") {
        if let Some(code) = code(error) {
            items.push(Item::Error {
                number: number.clone(),
                code,
                wamid: None,
                recipient: None,
                details: details(error),
            });
        }
    }
}

fn account_update(waba: Option<String>, time: Option<i64>, value: &Value) -> Item {
    let event = string(value, "event").unwrap_or_default();
    let restrictions = array(value, "restriction_info")
        .filter_map(|r| {
            Some(Restriction {
                kind: string(r, "restriction_type")?,
                expiration: r.get("expiration").and_then(as_seconds),
            })
        })
        .collect();
    Item::AccountUpdate(AccountUpdate {
        waba: waba.unwrap_or_default(),
        ban_state: value
            .get("ban_info")
            .and_then(|b| string(b, "waba_ban_state")),
        violation: value
            .get("violation_info")
            .and_then(|v| string(v, "violation_type")),
        restrictions,
        event,
        time,
    })
}

/// `key` of `value` as an array's items; none when absent or not an array.
fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `key` of `value` as a string; numbers are read as their digits (ids are
/// strings in Meta's payloads, but a hand-made one may not quote them).
fn string(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `errors[].code`, a number (or its digits in a string).
fn code(error: &Value) -> Option<i64> {
    match error.get("code")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn details(error: &Value) -> Option<String> {
    error
        .get("error_data")
        .and_then(|d| string(d, "details"))
        .or_else(|| string(error, "title"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).expect("fixture")
    }

    #[test]
    fn a_failed_status_names_its_number_code_and_wamid() {
        let items = parse(&fixture("webhook_status_failed_131031.json")).unwrap();
        assert!(matches!(&items[0], Item::Number { waba, number, .. }
            if waba == "100000000000001" && number == "200000000000001"));
        match &items[1] {
            Item::Error {
                number,
                code,
                wamid,
                details,
                ..
            } => {
                assert_eq!(number, "200000000000001");
                assert_eq!(*code, 131031);
                assert!(wamid.as_deref().is_some_and(|w| w.starts_with("wamid.")));
                assert_eq!(
                    details.as_deref(),
                    Some("Business account has been locked.")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn value_errors_and_delivered_statuses() {
        let items = parse(&fixture("webhook_value_errors_130429.json")).unwrap();
        assert!(items.iter().any(|i| matches!(
            i,
            Item::Error {
                code: 130429,
                wamid: None,
                ..
            }
        )));
        let items = parse(&fixture("webhook_status_delivered.json")).unwrap();
        assert!(!items.iter().any(|i| matches!(i, Item::Error { .. })));
    }

    #[test]
    fn account_updates_carry_their_event_and_details() {
        let items = parse(&fixture("webhook_account_update_disabled.json")).unwrap();
        let Item::AccountUpdate(update) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(update.rule_event(), "DISABLED_UPDATE/DISABLE");
        assert_eq!(update.waba, "100000000000001");
        let items = parse(&fixture("webhook_account_update_restriction.json")).unwrap();
        let Item::AccountUpdate(update) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(update.restrictions.len(), 2);
        assert_eq!(
            update.restrictions[0].kind,
            "RESTRICTED_BIZ_INITIATED_MESSAGING"
        );
        assert_eq!(update.restrictions[0].expiration, Some(1_787_304_800));
    }

    #[test]
    fn other_fields_are_named_with_their_event_and_display_number() {
        let items = parse(&fixture("webhook_security_pin_reset.json")).unwrap();
        assert_eq!(
            items,
            vec![Item::Other {
                field: "security".to_owned(),
                waba: Some("100000000000001".to_owned()),
                event: Some("PIN_RESET_REQUEST".to_owned()),
                display: Some("15550001111".to_owned()),
            }]
        );
    }

    #[test]
    fn odd_shapes_are_read_as_far_as_they_go() {
        assert!(parse(b"not json").is_err());
        assert_eq!(parse(b"{}").unwrap(), vec![]);
        assert_eq!(parse(b"[1,2]").unwrap(), vec![]);
        let odd = br#"{"entry":[{"id":7,"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"statuses":[{"status":"failed","errors":[{"code":"131031"},{"code":null}]}]}},{"field":5}]}]}"#;
        let items = parse(odd).unwrap();
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::Error { code: 131031, .. }))
        );
        assert_eq!(items.len(), 3, "{items:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let _ = parse(&body);
        }

        #[test]
        fn arbitrary_json_never_panics(value in json(3)) {
            let _ = parse(value.to_string().as_bytes());
            let envelope = serde_json::json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": value.clone()}, {"field": "account_update", "value": value}]}]});
            let _ = parse(envelope.to_string().as_bytes());
        }
    }

    fn json(depth: u32) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z_]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "failed",
                "131031",
                "messages",
                "metadata",
                "errors",
                "statuses",
                "code",
                "phone_number_id"
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(depth, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "entry",
                            "changes",
                            "field",
                            "value",
                            "metadata",
                            "phone_number_id",
                            "statuses",
                            "status",
                            "errors",
                            "code",
                            "id",
                            "event"
                        ]),
                        inner
                    ),
                    0..5
                )
                .prop_map(|pairs| Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }
}
