use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::graph::GraphError;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture readable")
}

/// The `[[rules]]` part of a config file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Rule>,
}

fn parse(toml: &str) -> Result<Vec<Rule>, String> {
    toml::from_str::<RulesFile>(toml)
        .map(|file| file.rules)
        .map_err(|e| e.to_string())
}

fn verdict(action: Action, scope: Scope, cooldown: Option<u64>) -> Verdict {
    Verdict {
        action,
        scope,
        cooldown: cooldown.map(Duration::from_secs),
    }
}

#[test]
fn every_error_fixture_classifies_by_code_under_every_status() {
    let trip = verdict(Action::Trip, Scope::Number, None);
    let cases = [
        ("error_131031.json", vec![403], trip),
        ("error_368.json", vec![403], trip),
        (
            "error_130429.json",
            vec![400, 429],
            verdict(Action::Cooldown, Scope::Number, Some(60)),
        ),
        (
            "error_131048.json",
            vec![400, 429],
            verdict(Action::Cooldown, Scope::Number, Some(15 * 60)),
        ),
        (
            "error_131056.json",
            vec![400, 429],
            verdict(Action::Backoff, Scope::Pair, Some(60 * 60)),
        ),
        (
            "error_190.json",
            vec![401],
            verdict(Action::Count, Scope::Number, None),
        ),
    ];
    let rules = Rules::defaults();
    let mut seen = Vec::new();
    for (file, statuses, want) in cases {
        for status in statuses {
            let error = GraphError::parse(status, &fixture(file)).expect(file);
            assert_eq!(rules.classify(error.code), want, "{file} as HTTP {status}");
        }
        seen.push(file);
    }
    // A new error fixture must be added to the table above.
    let mut on_disk: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("error_") && name.ends_with(".json"))
        .collect();
    on_disk.sort();
    seen.sort();
    assert_eq!(on_disk, seen);
}

#[test]
fn failed_status_webhook_code_trips_the_number() {
    let body: serde_json::Value =
        serde_json::from_slice(&fixture("webhook_status_failed_131031.json")).expect("json");
    let value = &body["entry"][0]["changes"][0]["value"];
    let code = value["statuses"][0]["errors"][0]["code"]
        .as_i64()
        .expect("errors[0].code");
    assert_eq!(code, 131031);
    assert_eq!(
        Rules::defaults().classify(code),
        verdict(Action::Trip, Scope::Number, None)
    );
}

#[test]
fn defaults_cover_the_reference_codes() {
    let rules = Rules::defaults();
    let trip = verdict(Action::Trip, Scope::Number, None);
    let count = verdict(Action::Count, Scope::Number, None);
    for (code, want) in [
        (133010, trip),
        (131057, verdict(Action::Cooldown, Scope::Number, Some(90))),
        (0, count),
        (3, count),
        (10, count),
        (200, count),
        (250, count),
        (299, count),
        (300, Verdict::PASS),
        (199, Verdict::PASS),
        (100, Verdict::PASS),
        (131026, Verdict::PASS),
        (2, Verdict::PASS),
        (-1, Verdict::PASS),
    ] {
        assert_eq!(rules.classify(code), want, "code {code}");
    }
}

#[test]
fn toml_rules_accept_codes_and_ranges() {
    let rules = parse(
        r#"
        [[rules]]
        codes = 131031
        action = "trip"
        scope = "number"

        [[rules]]
        codes = "200-299"
        action = "count"

        [[rules]]
        codes = "80007"
        action = "cooldown"
        scope = "waba"
        cooldown = "5m"
        "#,
    )
    .expect("valid rules");
    assert_eq!(rules[0].codes, CodeMatch::one(131031));
    assert_eq!(rules[1].codes, CodeMatch::range(200, 299).unwrap());
    assert_eq!(rules[1].scope, Scope::Number, "scope defaults to number");
    assert_eq!(rules[2].cooldown, Some(Duration::from_secs(300)));
    let table = Rules::try_new(rules).expect("valid table");
    assert_eq!(table.classify(250).action, Action::Count);
    assert_eq!(table.classify(300).action, Action::Pass);
    assert_eq!(
        table.classify(80007),
        verdict(Action::Cooldown, Scope::Waba, Some(300))
    );
}

#[test]
fn user_rule_wins_over_the_default() {
    let user = parse(
        r#"
        [[rules]]
        codes = 130429
        action = "trip"

        [[rules]]
        codes = 131048
        action = "cooldown"
        cooldown = "1h"
        "#,
    )
    .unwrap();
    let rules = Rules::with_overrides(user).unwrap();
    assert_eq!(rules.classify(130429).action, Action::Trip);
    assert_eq!(
        rules.classify(131048).cooldown,
        Some(Duration::from_secs(3600))
    );
    // Codes the user did not mention keep their defaults.
    assert_eq!(rules.classify(131031).action, Action::Trip);
    assert_eq!(rules.classify(131056).scope, Scope::Pair);
    assert_eq!(
        rules.as_slice().len(),
        2 + Rules::defaults().as_slice().len()
    );
}

#[test]
fn first_match_wins_within_a_table() {
    let rules = Rules::try_new(vec![
        Rule::new(CodeMatch::one(250), Action::Pass, Scope::Number),
        Rule::new(
            CodeMatch::range(200, 299).unwrap(),
            Action::Count,
            Scope::Number,
        ),
    ])
    .unwrap();
    assert_eq!(rules.classify(250).action, Action::Pass);
    assert_eq!(rules.classify(251).action, Action::Count);
}

#[test]
fn invalid_range_is_rejected() {
    let err = parse("[[rules]]\ncodes = \"299-200\"\naction = \"count\"").unwrap_err();
    assert!(err.contains("code range `299-200` is empty"), "{err}");
    let err = parse("[[rules]]\ncodes = \"abc\"\naction = \"count\"").unwrap_err();
    assert!(err.contains("`abc` is not a code"), "{err}");
    let err = parse("[[rules]]\ncodes = \"1-2-3\"\naction = \"count\"").unwrap_err();
    assert!(err.contains("not a code or a range"), "{err}");
    assert!(parse("[[rules]]\ncodes = 1.5\naction = \"count\"").is_err());
}

#[test]
fn unknown_action_and_fields_are_rejected() {
    let err = parse("[[rules]]\ncodes = 131031\naction = \"explode\"").unwrap_err();
    assert!(err.contains("unknown variant `explode`"), "{err}");
    let err = parse("[[rules]]\ncodes = 131031\naction = \"trip\"\nscope = \"app\"").unwrap_err();
    assert!(err.contains("unknown variant `app`"), "{err}");
    let err = parse("[[rules]]\ncodes = 131031\naction = \"trip\"\ncolldown = \"1m\"").unwrap_err();
    assert!(err.contains("colldown"), "{err}");
    assert!(
        parse("[[rules]]\naction = \"trip\"").is_err(),
        "codes is required"
    );
}

#[test]
fn inconsistent_rules_are_rejected_with_their_index() {
    let cases = [
        (
            "[[rules]]\ncodes = 1\naction = \"pass\"\n[[rules]]\ncodes = 80007\naction = \"cooldown\"",
            RulesError::MissingCooldown { index: 1 },
        ),
        (
            "[[rules]]\ncodes = 80007\naction = \"backoff\"\ncooldown = \"0s\"",
            RulesError::MissingCooldown { index: 0 },
        ),
        (
            "[[rules]]\ncodes = 131031\naction = \"trip\"\ncooldown = \"1m\"",
            RulesError::UnusedCooldown {
                index: 0,
                action: Action::Trip,
            },
        ),
        (
            "[[rules]]\ncodes = 131056\naction = \"trip\"\nscope = \"pair\"",
            RulesError::PairTrip { index: 0 },
        ),
    ];
    for (toml, want) in cases {
        let rules = parse(toml).expect(toml);
        assert_eq!(Rules::with_overrides(rules).unwrap_err(), want, "{toml}");
    }
    assert_eq!(
        RulesError::PairTrip { index: 3 }.to_string(),
        "rules[3]: `trip` cannot have scope `pair`; use `backoff` or `cooldown`"
    );
}

#[test]
fn default_rules_pass_their_own_validation_and_round_trip_through_toml() {
    let defaults = Rules::defaults();
    let file = toml::to_string(&RulesFile {
        rules: defaults.as_slice().to_vec(),
    })
    .unwrap();
    assert!(file.contains("codes = \"200-299\""), "{file}");
    assert!(file.contains("cooldown = \"15m\""), "{file}");
    let parsed = Rules::try_new(parse(&file).unwrap()).unwrap();
    assert_eq!(parsed, defaults);
}
