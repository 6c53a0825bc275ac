//! Metrics the gateway exports on its admin listener, over real HTTP: the
//! simulator and the gateway in process.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::json;
use support::gateway::{InProcess, http, sim};
use wagate::sim::ErrorInjection;

const SENT: &str = "200000000000001";
const LOCKED: &str = "200000000000002";
const FAILING: &str = "200000000000003";
const REGISTERED: &str = "200000000000004";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

async fn post(base: &str, path: &str) -> StatusCode {
    http()
        .post(format!("{base}{path}"))
        .bearer_auth("integration-token")
        .json(&json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text", "text": {"body": "hi"}}))
        .send()
        .await
        .unwrap()
        .status()
}

/// The `phone_number_id` and value of every
/// `wagate_last_successful_send_timestamp_seconds` sample.
async fn last_sends(admin: std::net::SocketAddr) -> Vec<(String, f64)> {
    let text = http()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("wagate_last_successful_send_timestamp_seconds{phone_number_id=\"")?;
            let (number, value) = rest.split_once("\"} ")?;
            Some((number.to_owned(), value.trim().parse().unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn only_a_send_meta_accepted_sets_the_last_successful_send() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    sim.sim.inject_error(
        FAILING,
        ErrorInjection {
            code: 1,
            http_status: Some(500),
            ..ErrorInjection::default()
        },
    );
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let base = gateway.url();
    assert!(last_sends(gateway.admin).await.is_empty(), "no send yet");

    let before = unix_now();
    assert_eq!(
        post(&base, &format!("/v24.0/{SENT}/messages")).await,
        StatusCode::OK
    );
    let after = unix_now();
    // Meta's lock, then the gateway's refusal of the retry.
    assert_eq!(
        post(&base, &format!("/v24.0/{LOCKED}/messages")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(&base, &format!("/v24.0/{LOCKED}/messages")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        post(&base, &format!("/v24.0/{FAILING}/messages")).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // A 2xx that is not a send.
    assert_eq!(
        post(&base, &format!("/v24.0/{REGISTERED}/register")).await,
        StatusCode::OK
    );

    let series = last_sends(gateway.admin).await;
    assert_eq!(series.len(), 1, "only the accepted send: {series:?}");
    let (number, at) = &series[0];
    assert_eq!(number, SENT);
    assert!(
        (before..=after).contains(at),
        "{at} within [{before}, {after}]"
    );

    // A later send moves it; a failed one for the same number does not.
    sim.sim.inject_error(
        SENT,
        ErrorInjection {
            code: 1,
            http_status: Some(500),
            times: Some(1),
            ..ErrorInjection::default()
        },
    );
    assert_eq!(
        post(&base, &format!("/v24.0/{SENT}/messages")).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(last_sends(gateway.admin).await, series);
    assert_eq!(
        post(&base, &format!("/{SENT}/marketing_messages")).await,
        StatusCode::OK
    );
    let (_, later) = &last_sends(gateway.admin).await[0];
    assert!(later >= at && *later <= unix_now(), "{later} after {at}");
}
