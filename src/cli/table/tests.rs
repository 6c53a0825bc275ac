//! How answers read as tables and lines.

use serde_json::json;

use super::*;

const NOW: u64 = 1_786_700_000_000;

#[test]
fn times_read_as_spans_from_now() {
    assert_eq!(relative(NOW - 12 * 60_000, NOW), "12m ago");
    assert_eq!(relative(NOW - 45_000, NOW), "45s ago");
    assert_eq!(relative(NOW - 3 * 3_600_000, NOW), "3h ago");
    assert_eq!(relative(NOW - 3 * 86_400_000, NOW), "3d ago");
    assert_eq!(relative(NOW + 2 * 3_600_000, NOW), "in 2h");
    assert_eq!(relative(NOW + 2 * 3_600_000 - 500, NOW), "in 1h59m");
    assert_eq!(relative(NOW - 26 * 3_600_000, NOW), "1d2h ago");
    assert_eq!(relative(NOW + 300, NOW), "now");
}

fn listed(reason: &str) -> Value {
    json!({"breakers": [{
        "phone_number_id": "200000000000001", "key": "200000000000001",
        "state": "held", "cause_code": 131031, "since_unix_ms": NOW - 12 * 60_000,
        "waba": null, "reason": reason,
    }]})
}

#[test]
fn a_list_is_a_table_and_the_reason_is_cut_to_the_width() {
    let long = "campaign bug: ".repeat(20);
    let text = breakers(&listed(&long), NOW, None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("STATE"), "{text}");
    for word in [
        "held",
        "200000000000001",
        "131031",
        "12m ago",
        "campaign bug",
    ] {
        assert!(lines[1].contains(word), "{word} in {text}");
    }
    assert!(lines[1].trim_end().ends_with("campaign bug:"), "{text}");

    let cut = breakers(&listed(&long), NOW, Some(80));
    for line in cut.lines() {
        assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
    }
    let row = cut.lines().nth(1).unwrap();
    assert!(
        row.contains("200000000000001") && row.ends_with('…'),
        "{cut}"
    );
    assert_eq!(cut.lines().count(), 2, "{cut}");
}

#[test]
fn an_empty_list_says_so() {
    assert_eq!(
        breakers(&json!({"breakers": []}), NOW, None),
        "no open, held or ramping breakers\n"
    );
}

#[test]
fn one_breaker_shows_fields_then_transitions() {
    let body = json!({
        "phone_number_id": "200000000000001", "state": "open", "cause_code": 131031,
        "since": "2026-08-14T10:00:00.000Z", "since_unix_ms": 1_786_701_600_000_u64,
        "health": {"next_poll": NOW + 30_000, "available_streak": 0},
        "health_errors": [{"code": 1, "description": "blocked"}],
        "transitions": [{"key": "200000000000001", "from": "closed", "to": "open",
            "source": "response", "at": NOW - 60_000, "reason": "locked", "code": 131031}],
    });
    let text = breaker(&body, NOW, None);
    let state = text.find("state:").unwrap();
    assert!(text.find("phone_number_id:").unwrap() < state, "{text}");
    assert!(text.contains("health.next_poll:"), "{text}");
    assert!(text.contains("(in 30s)"), "{text}");
    assert!(
        text.contains("health_errors[0].description: blocked"),
        "{text}"
    );
    assert!(!text.contains("since_unix_ms"), "{text}");
    assert!(text.contains("2026-08-14T10:00:00.000Z ("), "{text}");
    assert!(text.contains("transitions (newest first):"), "{text}");
    assert!(text.contains("closed→open"), "{text}");
    assert!(text.contains("1m ago"), "{text}");
}

#[test]
fn changes_say_what_the_breaker_is_now() {
    let closed = json!({"outcome": "changed", "closed": true, "breaker": null});
    assert_eq!(
        breaker_change("1", &closed, NOW),
        "1: changed, now closed\n"
    );
    let held = json!({"outcome": "pending", "closed": false, "breaker": {
        "state": "held", "reason": "bug", "held_until": "2026-08-14T10:00:00.000Z"}});
    let text = breaker_change("1", &held, NOW);
    assert!(text.starts_with("1: pending, now held until 2026-08-14T10:00:00.000Z (in "));
    assert!(
        text.contains("reason: bug\n") && text.contains("store"),
        "{text}"
    );
}

#[test]
fn audit_rows_show_who_and_unparsed_lines_as_they_are() {
    let body = json!({"entries": [
        {"key": "2", "from": "open", "to": "closed", "source": "operator",
         "by": "admin", "at": NOW - 3 * 3_600_000, "reason": "appeal won"},
        {"raw": "not json"},
    ]});
    let text = audit(&body, NOW, None);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("AT"), "{text}");
    for word in ["3h ago", "open→closed", "operator", "admin", "appeal won"] {
        assert!(lines[1].contains(word), "{word} in {text}");
    }
    assert!(lines[2].ends_with("not json"), "{text}");
}

#[test]
fn wabas_show_their_gate() {
    let body = json!({"wabas": [{"waba": "100", "numbers": 2, "not_closed": 1,
        "gate": {"event": "e", "code": 368, "since": NOW - 60_000, "hold": "fraud"}}]});
    let text = wabas(&body, NOW, None);
    assert!(
        text.lines().nth(1).unwrap().contains("held: fraud"),
        "{text}"
    );
    let shown = json!({"waba": "100", "gate": null, "restrictions": [], "events": [],
        "numbers": [{"phone_number_id": "2", "display_phone_number": null,
            "state": "closed", "cause_code": null, "since": null}]});
    let text = waba(&shown, NOW, None);
    assert!(text.starts_with("waba: 100\n"), "{text}");
    assert!(text.contains("NUMBER") && text.contains("closed"), "{text}");
}
