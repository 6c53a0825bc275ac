//! The admin API end to end: named tokens and who the audit trail records,
//! the failed-attempt limit, timed holds, filters, WABA actions, errors,
//! and a reset racing a trip on two replicas sharing a real Redis.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::gateway::{
    InProcess, Process, admin_get as get, admin_post as post, http, send_text as send, sim,
};
use support::redis::RedisServer;
use wagate::config::{Secret, Waba};

const LOCKED: &str = "200000000000001";
const OTHER: &str = "200000000000002";
const THIRD: &str = "200000000000003";
const WABA: &str = "300000000000001";
const ADMIN_TOKEN: &str = "admin-token-for-tests";
const ALICE_TOKEN: &str = "alice-token-for-tests";

/// A gateway with `admin.token` and a named token for alice, and OTHER and
/// THIRD known to belong to WABA.
async fn gateway(sim: SocketAddr) -> InProcess {
    InProcess::start(sim, |c| {
        c.admin.token = Secret::new(ADMIN_TOKEN);
        c.admin.tokens = Secret::new(format!("alice:{ALICE_TOKEN}"));
        c.wabas = vec![Waba {
            id: WABA.to_owned(),
            numbers: vec![OTHER.to_owned(), THIRD.to_owned()],
            token: Secret::default(),
        }];
    })
    .await
}

fn message(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn every_change_needs_a_valid_token_and_the_trail_records_whose() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let gateway = gateway(sim.addr).await;
    let admin = gateway.admin;
    assert_eq!(
        send(&gateway.url(), LOCKED).await.status(),
        StatusCode::FORBIDDEN
    );

    for action in ["reset", "trip", "release"] {
        let path = format!("/admin/breakers/{LOCKED}/{action}");
        let (status, body) = post(admin, &path, None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action}: {body}");
        let (status, body) = post(admin, &path, Some("not-a-token"), "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action}: {body}");
        let (status, _) = post(admin, &format!("/admin/wabas/{WABA}/{action}"), None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action} on the WABA");
    }
    // Reads need no token.
    assert_eq!(get(admin, "/admin/breakers").await.0, StatusCode::OK);

    let (status, body) = post(
        admin,
        &format!("/admin/breakers/{LOCKED}/release"),
        Some(ALICE_TOKEN),
        r#"{"reason": "verified in WhatsApp Manager"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["breaker"]["state"], "ramping");
    let (status, body) = post(
        admin,
        &format!("/admin/breakers/{LOCKED}/reset"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(
        (status, &body["closed"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );

    let (status, trail) = get(admin, &format!("/admin/audit?number={LOCKED}")).await;
    assert_eq!(status, StatusCode::OK);
    let entries = trail["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
                e["by"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ramping", "closed", Some("admin")),
            ("open", "ramping", Some("alice")),
            ("closed", "open", None),
        ]
    );
    assert_eq!(entries[1]["reason"], "verified in WhatsApp Manager");
    // An empty body still leaves a reason naming the operator.
    assert_eq!(entries[0]["reason"], "reset by admin");
    // The combined trail has them too, newest first.
    let (_, all) = get(admin, "/admin/audit?limit=2").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 2);
    assert_eq!(all["entries"][0]["by"], "admin");
    // No token reaches the trail.
    let text = all.to_string() + &trail.to_string();
    assert!(!text.contains(ADMIN_TOKEN) && !text.contains(ALICE_TOKEN));
}

#[tokio::test]
async fn failed_attempts_are_limited_per_client_then_answered_429() {
    let sim = sim().await;
    let gateway = gateway(sim.addr).await;
    let path = format!("/admin/breakers/{LOCKED}/trip");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post(gateway.admin, &path, Some("guess"), "{}").await.0);
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!((5..=6).contains(&unauthorized), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // While limited, even the right token is refused, so a guess that
    // happens to be right is refused too.
    let response = http()
        .post(format!("http://{}{path}", gateway.admin))
        .bearer_auth(ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert!(
        message(&body).contains("too many failed attempts"),
        "{body}"
    );
    // Reads are not limited.
    assert_eq!(
        get(gateway.admin, "/admin/breakers").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let gateway = gateway(sim.addr).await;
    let admin = gateway.admin;
    assert_eq!(
        send(&gateway.url(), LOCKED).await.status(),
        StatusCode::FORBIDDEN
    );
    let reset = format!("/admin/breakers/{LOCKED}/reset");
    let trip = format!("/admin/breakers/{LOCKED}/trip");

    let cases: Vec<(&str, Option<&str>, &str, StatusCode, &str)> = vec![
        (
            &reset,
            Some(ADMIN_TOKEN),
            "{not json",
            StatusCode::BAD_REQUEST,
            "body must be JSON",
        ),
        (
            &reset,
            Some(ADMIN_TOKEN),
            r#"{"reason":"x","why":"y"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `why`",
        ),
        (
            &reset,
            Some(ADMIN_TOKEN),
            r#"{"ttl":"2h"}"#,
            StatusCode::BAD_REQUEST,
            "ttl applies to trip only",
        ),
        (
            &trip,
            Some(ADMIN_TOKEN),
            r#"{"ttl":"soon"}"#,
            StatusCode::BAD_REQUEST,
            "body must be JSON",
        ),
        (
            &trip,
            Some(ADMIN_TOKEN),
            r#"{"ttl":"0s"}"#,
            StatusCode::BAD_REQUEST,
            "ttl must be between",
        ),
        (
            "/admin/breakers/12ab/reset",
            Some(ADMIN_TOKEN),
            "{}",
            StatusCode::BAD_REQUEST,
            "string of digits",
        ),
        (
            "/admin/breakers/200000000000009/reset",
            Some(ADMIN_TOKEN),
            "{}",
            StatusCode::NOT_FOUND,
            "no open, held or ramping breaker",
        ),
        (
            "/admin/breakers/200000000000009/release",
            Some(ADMIN_TOKEN),
            "{}",
            StatusCode::NOT_FOUND,
            "no open, held or ramping breaker",
        ),
        (
            "/admin/breakers/200000000000001/explode",
            Some(ADMIN_TOKEN),
            "{}",
            StatusCode::NOT_FOUND,
            "reset, trip or release",
        ),
        (
            "/admin/wabas/399999999999999/reset",
            Some(ADMIN_TOKEN),
            "{}",
            StatusCode::NOT_FOUND,
            "no WABA 399999999999999",
        ),
    ];
    for (path, token, body, want, text) in cases {
        let (status, answer) = post(admin, path, token, body).await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        assert!(message(&answer).contains(text), "{path} {body}: {answer}");
    }
    let reads: Vec<(&str, StatusCode, &str)> = vec![
        (
            "/admin/breakers?color=red",
            StatusCode::BAD_REQUEST,
            "unknown query parameter \"color\"",
        ),
        (
            "/admin/breakers?state=closed",
            StatusCode::BAD_REQUEST,
            "open, held or ramping",
        ),
        (
            "/admin/breakers?cause=locked",
            StatusCode::BAD_REQUEST,
            "Graph error code",
        ),
        (
            "/admin/breakers/200000000000009",
            StatusCode::NOT_FOUND,
            "no open, held or ramping breaker",
        ),
        (
            "/admin/wabas/399999999999999",
            StatusCode::NOT_FOUND,
            "no WABA",
        ),
        (
            "/admin/audit?limit=0",
            StatusCode::BAD_REQUEST,
            "limit must be",
        ),
        (
            "/admin/audit?number=x",
            StatusCode::BAD_REQUEST,
            "string of digits",
        ),
        ("/admin/nothing-here", StatusCode::NOT_FOUND, "openapi.json"),
    ];
    for (path, want, text) in reads {
        let (status, answer) = get(admin, path).await;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(message(&answer).contains(text), "{path}: {answer}");
    }
    let response = http()
        .delete(format!("http://{admin}/admin/breakers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // None of it changed the breaker.
    let (_, shown) = get(admin, &format!("/admin/breakers/{LOCKED}")).await;
    assert_eq!(shown["state"], "open");
}

#[tokio::test]
async fn a_timed_hold_refuses_then_lets_go_by_itself() {
    let sim = sim().await;
    let gateway = gateway(sim.addr).await;
    let (status, body) = post(
        gateway.admin,
        &format!("/admin/breakers/{OTHER}/trip"),
        Some(ALICE_TOKEN),
        r#"{"reason": "template fix deploying", "ttl": "2s"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["breaker"]["state"], "held");
    assert_eq!(body["breaker"]["waba"], WABA, "{body}");
    assert!(body["breaker"]["held_until"].is_string(), "{body}");
    let refused = send(&gateway.url(), OTHER).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry <= 2, "Retry-After {retry} for a 2s hold");
    let (_, held) = get(gateway.admin, "/admin/breakers?state=held").await;
    assert_eq!(held["breakers"][0]["phone_number_id"], OTHER);
    assert_eq!(held["breakers"][0]["waba"], WABA);
    support::wait_until_async(Duration::from_secs(10), "the hold ends", || async {
        get(gateway.admin, &format!("/admin/breakers/{OTHER}"))
            .await
            .0
            == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(send(&gateway.url(), OTHER).await.status(), StatusCode::OK);
    let (_, trail) = get(gateway.admin, &format!("/admin/audit?number={OTHER}")).await;
    assert_eq!(trail["entries"][0]["source"], "clock");
    assert_eq!(trail["entries"][1]["by"], "alice");
}

#[tokio::test]
async fn lists_filter_by_state_waba_and_cause() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    sim.sim.lock(OTHER);
    let gateway = gateway(sim.addr).await;
    for number in [LOCKED, OTHER] {
        assert_eq!(
            send(&gateway.url(), number).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    post(
        gateway.admin,
        &format!("/admin/breakers/{THIRD}/trip"),
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    let numbers = |list: &Value| -> Vec<String> {
        let mut numbers: Vec<String> = list["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["phone_number_id"].as_str().unwrap().to_owned())
            .collect();
        numbers.sort();
        numbers
    };
    let cases = [
        ("", vec![LOCKED, OTHER, THIRD]),
        ("?state=open", vec![LOCKED, OTHER]),
        ("?state=held", vec![THIRD]),
        (&format!("?waba={WABA}") as &str, vec![OTHER, THIRD]),
        ("?cause=131031", vec![LOCKED, OTHER]),
        (
            &format!("?state=open&waba={WABA}&cause=131031"),
            vec![OTHER],
        ),
        ("?cause=368", vec![]),
    ];
    for (query, want) in cases {
        let (status, list) = get(gateway.admin, &format!("/admin/breakers{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(numbers(&list), want, "{query}");
    }
    let (_, shown) = get(gateway.admin, &format!("/admin/breakers/{OTHER}")).await;
    assert_eq!(shown["waba"], WABA);
    assert_eq!(shown["transitions"][0]["to"], "open");
    assert_eq!(shown["refused_sends"], 0);
    assert_eq!(
        send(&gateway.url(), OTHER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, shown) = get(gateway.admin, &format!("/admin/breakers/{OTHER}")).await;
    assert_eq!(shown["refused_sends"], 1);
}

#[tokio::test]
async fn a_waba_is_held_and_let_go_as_a_whole() {
    let sim = sim().await;
    let gateway = gateway(sim.addr).await;
    let admin = gateway.admin;
    let (status, list) = get(admin, "/admin/wabas").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["wabas"],
        json!([{"waba": WABA, "numbers": 2, "not_closed": 0, "gate": null}])
    );

    let (status, body) = post(
        admin,
        &format!("/admin/wabas/{WABA}/trip"),
        Some(ALICE_TOKEN),
        r#"{"reason": "account review"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "changed");
    assert_eq!(body["numbers"].as_array().unwrap().len(), 2);
    for number in [OTHER, THIRD] {
        let refused = send(&gateway.url(), number).await;
        assert_eq!(
            refused.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{number}"
        );
        assert_eq!(refused.headers()["x-wagate-breaker"], "held");
    }
    assert_eq!(send(&gateway.url(), LOCKED).await.status(), StatusCode::OK);
    let (_, shown) = get(admin, &format!("/admin/wabas/{WABA}")).await;
    assert_eq!(shown["gate"]["hold"], "account review");
    assert_eq!(shown["events"][0]["event"], "operator/HOLD/alice");
    let states: Vec<&str> = shown["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["held", "held"]);

    let (status, body) = post(
        admin,
        &format!("/admin/wabas/{WABA}/reset"),
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for number in [OTHER, THIRD] {
        assert_eq!(
            send(&gateway.url(), number).await.status(),
            StatusCode::OK,
            "{number}"
        );
    }
    let (_, shown) = get(admin, &format!("/admin/wabas/{WABA}")).await;
    assert!(shown["gate"].is_null(), "{shown}");
}

/// An operator holds a WABA before any number of it was seen: the hold is
/// a change, the WABA is listed with no numbers, and a reset lifts it.
#[tokio::test]
async fn a_waba_with_no_known_number_is_held_and_listed() {
    const NEW_WABA: &str = "300000000000077";
    let sim = sim().await;
    let gateway = gateway(sim.addr).await;
    let admin = gateway.admin;
    let trip = format!("/admin/wabas/{NEW_WABA}/trip");
    let (status, body) = post(
        admin,
        &trip,
        Some(ALICE_TOKEN),
        r#"{"reason": "onboarding"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "changed", "{body}");
    assert_eq!(body["numbers"], json!([]));

    let (_, list) = get(admin, "/admin/wabas").await;
    let listed = list["wabas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["waba"] == NEW_WABA)
        .unwrap_or_else(|| panic!("{NEW_WABA} not listed: {list}"));
    assert_eq!(listed["numbers"], 0);
    assert_eq!(listed["gate"]["hold"], "onboarding");

    let reset = format!("/admin/wabas/{NEW_WABA}/reset");
    let (status, body) = post(admin, &reset, Some(ADMIN_TOKEN), "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "changed", "{body}");
    let (status, body) = post(admin, &reset, Some(ADMIN_TOKEN), "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "unchanged", "{body}");
    let (_, shown) = get(admin, &format!("/admin/wabas/{NEW_WABA}")).await;
    assert!(shown["gate"].is_null(), "{shown}");
}

/// Two replicas on one Redis: an operator resets a number on one while
/// another operator holds it on the other, many times over. Every round
/// ends with both replicas agreeing on one state, and the trail has one
/// line per applied change.
#[tokio::test]
async fn a_reset_racing_a_trip_on_two_replicas_ends_in_one_agreed_state() {
    let redis = RedisServer::start();
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let env = [
        ("WAGATE_UPSTREAM__BASE_URL", sim.base_url()),
        ("WAGATE_STORE__REDIS_URL", redis.url()),
        (
            "WAGATE_ADMIN__TOKENS",
            format!("alice:{ALICE_TOKEN},bob:{ADMIN_TOKEN}"),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Process::spawn(&env);
    let b = Process::spawn(&env);
    for round in 0..10 {
        assert_eq!(
            send(&a.url(), LOCKED).await.status(),
            StatusCode::FORBIDDEN,
            "round {round}"
        );
        support::wait_until_async(Duration::from_secs(5), "B sees the trip", || async {
            get(b.admin, &format!("/admin/breakers/{LOCKED}")).await.0 == StatusCode::OK
        })
        .await;
        let (reset_path, trip_path) = (
            format!("/admin/breakers/{LOCKED}/reset"),
            format!("/admin/breakers/{LOCKED}/trip"),
        );
        let reset = post(a.admin, &reset_path, Some(ALICE_TOKEN), "{}");
        let hold = post(
            b.admin,
            &trip_path,
            Some(ADMIN_TOKEN),
            r#"{"reason": "hold"}"#,
        );
        let ((reset_status, reset_body), (hold_status, hold_body)) = tokio::join!(reset, hold);
        // Both find a breaker: open or held, never closed, since only the
        // reset closes it.
        assert_eq!(reset_status, StatusCode::OK, "round {round}: {reset_body}");
        assert_eq!(hold_status, StatusCode::OK, "round {round}: {hold_body}");
        let state_on = |admin: SocketAddr| async move {
            let (status, body) = get(admin, &format!("/admin/breakers/{LOCKED}")).await;
            (status == StatusCode::OK).then(|| body["state"].as_str().unwrap().to_owned())
        };
        let agreed = std::sync::Mutex::new(None);
        support::wait_until_async(Duration::from_secs(5), "the replicas agree", || async {
            let (on_a, on_b) = (state_on(a.admin).await, state_on(b.admin).await);
            let same = on_a == on_b;
            *agreed.lock().unwrap() = Some(on_a);
            same
        })
        .await;
        let agreed = agreed.into_inner().unwrap().flatten();
        // Whichever came last wins: held (the hold after the reset) or
        // closed (the reset after the hold).
        assert!(
            matches!(agreed.as_deref(), None | Some("held")),
            "round {round}: {agreed:?}"
        );
        if agreed.is_some() {
            let (status, body) = post(
                a.admin,
                &format!("/admin/breakers/{LOCKED}/reset"),
                Some(ALICE_TOKEN),
                "{}",
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        support::wait_until_async(Duration::from_secs(5), "both closed", || async {
            state_on(a.admin).await.is_none() && state_on(b.admin).await.is_none()
        })
        .await;
    }
    // Every line of the trail is a real transition, each by a named
    // operator or Meta's response.
    let (_, trail) = get(a.admin, &format!("/admin/audit?number={LOCKED}&limit=1000")).await;
    for entry in trail["entries"].as_array().unwrap() {
        assert_ne!(entry["from"], entry["to"], "{entry}");
        match entry["source"].as_str().unwrap() {
            "operator" => assert!(
                matches!(entry["by"].as_str(), Some("alice" | "bob")),
                "{entry}"
            ),
            "response" => assert_eq!(entry["to"], "open", "{entry}"),
            other => panic!("unexpected source {other}: {entry}"),
        }
    }
}
