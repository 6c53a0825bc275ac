//! The dashboard (deploy/grafana/wagate.json) and the alerting rules
//! (deploy/prometheus/alerts.yml) against a real Prometheus scraping a real
//! gateway: every expression parses, names only metrics the gateway
//! exports, and the breaker queries find a tripped number.
//!
//! Needs Debian's `prometheus` package; scripts/test.sh installs it.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::gateway::{InProcess, http, sim};
use support::prometheus::Prometheus;
use support::wait_until_async;
use wagate::config::{Config, Secret};
use wagate::sim::ErrorInjection;

/// Locked at Meta: tripped and kept open by the health poller.
const LOCKED: &str = "200000000000001";
/// Tripped once, then released by health into its ramp.
const RAMPING: &str = "200000000000002";
/// Sends normally.
const SENDING: &str = "200000000000003";
/// Disabled by Meta through an account_update webhook.
const DISABLED_WABA: &str = "300000000000009";
const APP_SECRET: &str = "webhook-app-secret";
const WAIT: Duration = Duration::from_secs(30);
/// The most refused sends the retry storm may take.
const MAX_STORM: usize = 5_000;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/wagate.json");
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");

/// What Grafana puts in place of its own variables; the dashboard's
/// template variables all become `.*` (their "All").
const GRAFANA_VARIABLES: [(&str, &str); 4] = [
    ("$__rate_interval", "30s"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
    ("${__range}", "5m"),
];

fn config(c: &mut Config) {
    c.breaker.min_open = Duration::from_millis(200);
    c.breaker.jitter = 0.0;
    c.health.interval = Duration::from_millis(100);
    c.health.max_interval = Duration::from_millis(200);
    c.health.waba_budget_per_hour = 3_600_000;
    c.health.access_token = Secret::new("health-token");
    c.webhook.app_secret = Secret::new(APP_SECRET);
}

async fn send(base: &str, number: &str) -> StatusCode {
    http()
        .post(format!("{base}/v24.0/{number}/messages"))
        .bearer_auth("integration-token")
        .header("content-type", "application/json")
        .body(r#"{"messaging_product":"whatsapp","to":"+15550009999","type":"text","text":{"body":"hi"}}"#)
        .send()
        .await
        .unwrap()
        .status()
}

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    http()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The metric names of the samples in a text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// The metric names a PromQL expression selects: what is left once string
/// literals, label matchers, ranges, grouping label lists, numbers and
/// durations, keywords and function or aggregation names are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 7] = ["offset", "bool", "and", "or", "unless", "inf", "nan"];
    let mut text = String::new();
    let mut chars = expr.chars().peekable();
    // Strings, `{...}` and `[...]` become a space.
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                text.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                text.push(' ');
            }
            _ => text.push(c),
        }
    }
    let text = without_grouping(&text);
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (5m, 1e3, 0x1f).
            let end = rest
                .find(|d: char| !(d.is_ascii_alphanumeric() || d == '.'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
        } else if is_name_char(c) {
            let end = rest.find(|d| !is_name_char(d)).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            let call = rest.trim_start().starts_with('(');
            if !call && !KEYWORDS.contains(&word) {
                names.insert(word.to_owned());
            }
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    names
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `text` without the label lists of `by`, `without`, `on`, `ignoring`,
/// `group_left` and `group_right`, so that an aggregation before its
/// `by (...)` reads as a call.
fn without_grouping(text: &str) -> String {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if is_name_char(c) && !c.is_ascii_digit() {
            let end = rest.find(|d| !is_name_char(d)).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            let after = rest.trim_start();
            if GROUPING.contains(&word) {
                if let Some(list) = after.strip_prefix('(') {
                    rest = list.split_once(')').map_or("", |(_, r)| r);
                }
                out.push(' ');
            } else {
                out.push_str(word);
            }
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[test]
fn metric_names_leave_out_labels_functions_and_durations() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route="send", x=~"$y"}[5m] offset 1h)))
           / on (job) group_left (instance) b and c > 25 * 86400 unless max(d) without (le) or time() - e[30d:1h]
           or min by (job) (f offset 10m) - bool count without (x) (g)"#,
    );
    let want: BTreeSet<String> = ["a_bucket", "b", "c", "d", "e", "f", "g"]
        .map(str::to_owned)
        .into();
    assert_eq!(names, want);
}

/// Every target expression of the dashboard, with the panel's title, the
/// variables substituted; and the metric selectors of its template
/// variables' `label_values` queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().unwrap(), &mut out);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for variable in variables {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str());
        if let Some(selector) = query
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector)
        {
            let name = variable["name"].as_str().unwrap();
            out.push((format!("variable {name}"), selector.to_owned()));
        }
    }
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    out.into_iter()
        .map(|(title, mut expr)| {
            for (variable, value) in GRAFANA_VARIABLES {
                expr = expr.replace(variable, value);
            }
            for name in &names {
                expr = expr
                    .replace(&format!("${{{name}}}"), ".*")
                    .replace(&format!("${name}"), ".*");
            }
            assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
            (title, expr)
        })
        .collect()
}

/// Every alerting or recording rule's name and expression.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(ALERTS).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            let expr = rule["expr"].as_str().unwrap();
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// The `phone_number_id`s in a query's vector result.
fn numbers(answer: &Value) -> BTreeSet<String> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"]["phone_number_id"].as_str())
        .map(str::to_owned)
        .collect()
}

fn values(answer: &Value) -> Vec<f64> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"][1].as_str()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_what_the_gateway_exports() {
    // Fail before anything starts when Prometheus is missing.
    support::prometheus::binary();
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    sim.sim.inject_error(
        RAMPING,
        ErrorInjection {
            code: 131031,
            times: Some(1),
            ..ErrorInjection::default()
        },
    );
    let gateway = InProcess::start(sim.addr, config).await;
    let base = gateway.url();
    assert_eq!(send(&base, SENDING).await, StatusCode::OK);
    assert_eq!(send(&base, LOCKED).await, StatusCode::FORBIDDEN);
    assert_eq!(send(&base, LOCKED).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&base, RAMPING).await, StatusCode::FORBIDDEN);
    let unsigned = http()
        .post(format!("{base}/webhooks/whatsapp"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    // Meta disables a WABA: its gate is exported by every replica.
    let disabled = serde_json::json!({"object": "whatsapp_business_account", "entry": [{
        "id": DISABLED_WABA, "time": 1786700300, "changes": [{"field": "account_update",
        "value": {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "DISABLE"}}}]}]})
    .to_string();
    let delivered = http()
        .post(format!("{base}/webhooks/whatsapp"))
        .header(
            "x-hub-signature-256",
            wagate::graph::sign(APP_SECRET, disabled.as_bytes()),
        )
        .body(disabled)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::OK);
    // Health finds RAMPING available and starts its ramp: every series
    // the dashboard shows now exists.
    let ramp = format!(r#"wagate_ramp_stage{{phone_number_id="{RAMPING}"}}"#);
    wait_until_async(WAIT, "the ramping number's stage is exported", || async {
        metrics_text(gateway.admin).await.contains(&ramp)
    })
    .await;
    let exported = exported(&metrics_text(gateway.admin).await);

    let prometheus = Prometheus::start(gateway.admin, &[Path::new(ALERTS)]);
    wait_until_async(
        WAIT,
        "Prometheus has scraped the gateway three times",
        || async {
            values(
                &prometheus
                    .query("count_over_time(wagate_in_flight_requests[1m])")
                    .await,
            )
            .first()
            .is_some_and(|n| *n >= 3.0)
        },
    )
    .await;

    // A retry storm against the open number, in bounded batches, until the
    // storm rule sees it.
    let storm = alert_exprs()
        .into_iter()
        .find(|(name, _)| name == "WagateRetryStorm")
        .expect("a WagateRetryStorm rule")
        .1;
    let mut refused = 0;
    loop {
        if numbers(&prometheus.query(&storm).await).contains(LOCKED) {
            break;
        }
        assert!(
            refused < MAX_STORM,
            "WagateRetryStorm did not see {refused} refused sends"
        );
        let batch = (0..25).map(|_| send(&base, LOCKED));
        for status in futures_util::future::join_all(batch).await {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        refused += 25;
    }

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .expect("the dashboard is JSON");
    let panels = dashboard_exprs(&dashboard);
    let rules = alert_exprs();
    assert!(panels.len() >= 20, "{} dashboard queries", panels.len());
    assert_eq!(rules.len(), 11, "the alerting rules");
    let mut failures = Vec::new();
    for (what, expr) in panels.iter().chain(&rules) {
        let answer = prometheus.query(expr).await;
        if answer["status"] != "success" {
            failures.push(format!("{what}: {expr}: {answer}"));
        }
        let names = metric_names(expr);
        if names.is_empty() {
            failures.push(format!("{what}: {expr}: names no metric"));
        }
        for name in names.difference(&exported) {
            failures.push(format!("{what}: {expr}: {name} is not exported"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The breaker queries find the open number: per-number panels list it,
    // counts include it, and so does the breaker-open rule.
    for (what, expr) in &panels {
        let per_number = expr.contains("phone_number_id")
            && (expr.contains("wagate_breaker_state")
                || expr.contains("wagate_refused_sends_total"));
        if per_number {
            let found = numbers(&prometheus.query(expr).await);
            assert!(found.contains(LOCKED), "{what}: {expr}: {found:?}");
        }
    }
    let by_title = |title: &str| {
        panels
            .iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("a panel {title}"))
            .1
            .clone()
    };
    let open = values(&prometheus.query(&by_title("Open numbers")).await);
    assert_eq!(open, [1.0], "Open numbers");
    let ramping = values(&prometheus.query(&by_title("Ramping numbers")).await);
    assert_eq!(ramping, [1.0], "Ramping numbers");
    let stages = numbers(&prometheus.query(&by_title("Ramp stages")).await);
    assert!(stages.contains(RAMPING), "Ramp stages: {stages:?}");
    let open_rule = &rules
        .iter()
        .find(|(n, _)| n == "WagateBreakerOpen")
        .unwrap()
        .1;
    let found = numbers(&prometheus.query(open_rule).await);
    assert_eq!(
        found,
        BTreeSet::from([LOCKED.to_owned()]),
        "WagateBreakerOpen"
    );
    let locked_rule = &rules
        .iter()
        .find(|(n, _)| n == "WagateWabaLocked")
        .unwrap()
        .1;
    let answer = prometheus.query(locked_rule).await;
    let wabas: Vec<&str> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["waba"].as_str())
        .collect();
    assert_eq!(wabas, [DISABLED_WABA], "WagateWabaLocked");

    // Prometheus loaded the rule file, evaluates every rule without error
    // and holds the breaker-open alert pending for the number.
    wait_until_async(WAIT, "every rule evaluated, healthy", || async {
        let groups = prometheus.get("/api/v1/rules").await;
        let rules: Vec<&Value> = groups["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == 11 && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;
    let alerts = prometheus.get("/api/v1/alerts").await;
    let state_of = |name: &str, label: &str, value: &str| {
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"][label] == value)
            .and_then(|a| a["state"].as_str())
    };
    // Pending for its minute, firing after it on a slow machine.
    assert!(
        matches!(
            state_of("WagateBreakerOpen", "phone_number_id", LOCKED),
            Some("pending" | "firing")
        ),
        "{alerts}"
    );
    assert_eq!(
        state_of("WagateWabaLocked", "waba", DISABLED_WABA),
        Some("firing"),
        "{alerts}"
    );
    gateway.stop().await;
}
