//! The webhook routes end to end: Meta's deliveries (signed like the
//! fixtures) through a gateway in process to a test receiver over real
//! HTTP, the simulator as the Graph API, and the breakers they trip.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::gateway::{InProcess, http, metric, sim};
use wagate::config::{Config, Secret};
use wagate::graph::sign;

const SECRET: &str = "test-app-secret";
const NUMBER: &str = "200000000000001";
const SIGNED: &str = "sha256=2d45e06e21d89f53153c7f147da175b185969a5db51666735083bac5145531a7";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The integration's webhook endpoint: records every request and answers
/// with `status`, or (`answers` false) never answers, as a hung
/// integration does.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    status: u16,
    answers: bool,
}

impl Receiver {
    async fn start(status: u16) -> Self {
        Self::serve(status, true).await
    }

    /// A receiver that takes each request and never answers.
    async fn hung() -> Self {
        Self::serve(200, false).await
    }

    async fn serve(status: u16, answers: bool) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            got: got.clone(),
            status,
            answers,
        };
        let app = axum::Router::new()
            .fallback(
                |State(state): State<ReceiverState>, request: axum::extract::Request| async move {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 8 * 1024 * 1024).await.unwrap();
                    state.got.lock().unwrap().push(Received {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    });
                    if !state.answers {
                        std::future::pending::<()>().await;
                    }
                    (
                        AxumStatus::from_u16(state.status).unwrap(),
                        "received by the integration",
                    )
                },
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn forwarding_to(receiver: &Receiver) -> impl FnOnce(&mut Config) + '_ {
    move |c| {
        c.webhook.app_secret = Secret::new(format!("another-app,{SECRET}"));
        c.webhook.forward_url = receiver.url();
    }
}

async fn deliver(gateway: &InProcess, body: &[u8], signature: Option<&str>) -> reqwest::Response {
    let mut request = http()
        .post(format!("{}/webhooks/whatsapp", gateway.url()))
        .header("content-type", "application/json")
        .header("user-agent", "facebookexternalua")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.send().await.unwrap()
}

async fn send(gateway: &InProcess, number: &str) -> reqwest::Response {
    http()
        .post(format!("{}/v24.0/{number}/messages", gateway.url()))
        .bearer_auth("integration-token")
        .json(&json!({"messaging_product": "whatsapp", "to": "15550009999", "type": "text", "text": {"body": "hi"}}))
        .send()
        .await
        .unwrap()
}

/// A `messages` change with one failed status for each of `numbers`.
fn failed_batch(numbers: &[&str], code: i64) -> Vec<u8> {
    let changes: Vec<Value> = numbers
        .iter()
        .enumerate()
        .map(|(i, number)| {
            json!({"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1555000111", "phone_number_id": number},
                "statuses": [{"id": format!("wamid.batch{i}"), "status": "failed", "timestamp": "1786700000",
                    "recipient_id": "15550009999",
                    "errors": [{"code": code, "title": "Business Account locked", "error_data": {"details": "locked"}}]}]
            }})
        })
        .collect();
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "100000000000001", "changes": changes}]})).unwrap()
}

#[tokio::test]
async fn a_failed_status_trips_its_number_and_reaches_the_integration_unchanged() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;

    // Meta accepted the send; the lock shows only in the status webhook.
    assert_eq!(send(&gateway, NUMBER).await.status(), StatusCode::OK);
    let body = fixture("webhook_status_failed_131031.json");
    let answer = deliver(&gateway, &body, Some(SIGNED)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "received by the integration");

    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let forwarded = &got[0];
    assert_eq!(forwarded.method, "POST");
    assert_eq!(forwarded.body, Bytes::from(body.clone()), "byte for byte");
    assert_eq!(forwarded.headers["x-hub-signature-256"], SIGNED);
    assert_eq!(
        forwarded.headers["content-length"],
        body.len().to_string().as_str()
    );
    assert!(forwarded.headers.get("transfer-encoding").is_none());
    assert_eq!(forwarded.headers["content-type"], "application/json");
    assert_eq!(forwarded.headers["user-agent"], "facebookexternalua");

    // The very next send is refused, and Meta sees no more of them.
    let refused = send(&gateway, NUMBER).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let refusal: Value = refused.json().await.unwrap();
    assert_eq!(refusal["error"]["code"], 131031);
    for _ in 0..20 {
        assert_eq!(
            send(&gateway, NUMBER).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(sim.sim.counts(NUMBER).messages, 1);

    let (status, view) = admin(&gateway, &format!("/admin/breakers/{NUMBER}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["source"], "webhook", "{view}");
    assert!(
        view["wamid"].as_str().unwrap().starts_with("wamid."),
        "{view}"
    );
    let trips = r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="webhook",to="open"}"#;
    support::wait_until_async(Duration::from_secs(5), "the trip is counted", || async {
        metric(gateway.admin, trips).await == 1.0
    })
    .await;
}

async fn admin(gateway: &InProcess, path: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("http://{}{path}", gateway.admin))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_changes_nothing() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let body = fixture("webhook_status_failed_131031.json");
    let mut flipped = body.clone();
    flipped[200] ^= 0x01;
    let upper_wrong = "sha256=C5016C2114031632AC39A81C3CA7CDC3E8158A06E048FEE27F206D61EA99D247";
    for (body, signature) in [
        (&flipped, Some(SIGNED)),
        (&body, None),
        (&body, Some(upper_wrong)),
        (&body, Some("sha256=not-hex")),
    ] {
        let answer = deliver(&gateway, body, signature).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{signature:?}");
        let error: Value = answer.json().await.unwrap();
        assert!(error["error"].is_string(), "{error}");
    }
    assert!(receiver.got().is_empty(), "nothing forwarded");
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::OK,
        "no breaker changed"
    );
    let failures =
        |reason: &str| format!("wagate_webhook_signature_failures_total{{reason=\"{reason}\"}}");
    assert_eq!(metric(gateway.admin, &failures("mismatch")).await, 2.0);
    assert_eq!(metric(gateway.admin, &failures("missing")).await, 1.0);
    assert_eq!(metric(gateway.admin, &failures("malformed")).await, 1.0);
}

#[tokio::test]
async fn bodies_arrive_byte_identical_whatever_their_shape() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let inbound = fixture("webhook_inbound_text.json");
    let indented = serde_json::to_vec_pretty(
        &serde_json::from_slice::<Value>(&fixture("webhook_status_delivered.json")).unwrap(),
    )
    .unwrap();
    // A batch just under 3 MB: many delivered statuses.
    let status = r#"{"id":"wamid.HBgL\/abc","status":"delivered","timestamp":"1786700000","recipient_id":"15550009999"}"#;
    let mut big = String::from(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"100000000000001","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"200000000000009"},"statuses":["#,
    );
    while big.len() < 2_990_000 {
        big.push_str(status);
        big.push(',');
    }
    big.push_str(status);
    big.push_str("]}}]}]}");
    let not_json = b"{\"entry\": [oops \xff".to_vec();
    for body in [inbound, indented, big.into_bytes(), not_json] {
        let signature = sign(SECRET, &body);
        let answer = deliver(&gateway, &body, Some(&signature)).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let got = receiver.got();
        let last = got.last().unwrap();
        assert_eq!(last.body.len(), body.len());
        assert!(last.body == body, "forwarded byte for byte");
        assert_eq!(last.headers["x-hub-signature-256"], signature.as_str());
    }
    assert_eq!(receiver.got().len(), 4);
    assert_eq!(
        metric(
            gateway.admin,
            r#"wagate_webhook_unknown_total{kind="malformed"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_batch_trips_every_number_in_it_once_however_often_it_comes() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let numbers = ["200000000000011", "200000000000012", "200000000000013"];
    let body = failed_batch(&numbers, 131031);
    let signature = sign(SECRET, &body);
    for _ in 0..3 {
        assert_eq!(
            deliver(&gateway, &body, Some(&signature)).await.status(),
            StatusCode::OK
        );
    }
    for number in numbers {
        assert_eq!(
            send(&gateway, number).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{number}"
        );
        assert_eq!(sim.sim.counts(number).messages, 0);
    }
    let trips = r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="webhook",to="open"}"#;
    support::wait_until_async(
        Duration::from_secs(5),
        "three trips are counted",
        || async { metric(gateway.admin, trips).await == 3.0 },
    )
    .await;
    assert_eq!(
        metric(gateway.admin, "wagate_webhook_duplicates_total").await,
        2.0
    );
    assert_eq!(receiver.got().len(), 3, "every delivery is forwarded");
}

#[tokio::test]
async fn the_handshake_is_answered_with_the_challenge() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.webhook.verify_token = Secret::new("the-verify-token");
    })
    .await;
    let get = |query: &str| {
        http()
            .get(format!("{}/webhooks/whatsapp?{query}", gateway.url()))
            .send()
    };
    let ok = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=the-verify-token")
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=the-verify-token",
        "hub.challenge=1",
        "",
    ] {
        assert_eq!(
            get(query).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{query}"
        );
    }
    // Without a forward URL a delivery is verified, inspected and answered.
    let body = fixture("webhook_status_failed_131031.json");
    assert_eq!(
        deliver(&gateway, &body, Some(SIGNED)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn without_a_verify_token_the_integration_answers_the_handshake() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let answer = http()
        .get(format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=42&hub.verify_token=theirs",
            gateway.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let got = receiver.got();
    assert_eq!(got[0].method, "GET");
    assert_eq!(
        got[0].uri,
        "/hook?hub.mode=subscribe&hub.challenge=42&hub.verify_token=theirs"
    );
}

#[tokio::test]
async fn an_integration_down_or_slow_gets_meta_to_deliver_again_and_the_trip_stands() {
    let sim = sim().await;
    // Nothing listens on a port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.webhook.forward_url = format!("http://{closed}/hook");
    })
    .await;
    let body = fixture("webhook_status_failed_131031.json");
    let answer = deliver(&gateway, &body, Some(SIGNED)).await;
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    let error: Value = answer.json().await.unwrap();
    assert!(error["error"].is_string());
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let slow = Receiver::hung().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.webhook.forward_url = slow.url();
        c.webhook.forward_timeout = Duration::from_millis(200);
    })
    .await;
    let answer = deliver(&gateway, &body, Some(SIGNED)).await;
    assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_observe_path_inspects_and_forwards_nothing() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let body = fixture("webhook_status_failed_131031.json");
    let answer = http()
        .post(format!("{}/webhooks/whatsapp/observe", gateway.url()))
        .header("x-hub-signature-256", SIGNED)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(receiver.got().is_empty());
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        sim.sim.counts(NUMBER).messages,
        0,
        "never forwarded to Graph"
    );
}

#[test]
fn without_an_app_secret_the_gateway_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["serve", "--config", "/dev/null"])
        .env("WAGATE_WEBHOOK__FORWARD_URL", "http://127.0.0.1:9/hook")
        .env("WAGATE_LISTEN__PROXY", "127.0.0.1:0")
        .env("WAGATE_LISTEN__ADMIN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("webhook.app_secret"), "{stderr}");
}

#[tokio::test]
async fn unsigned_deliveries_are_accepted_only_when_asked_and_readyz_warns() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| c.webhook.insecure_skip_signature = true).await;
    let body = fixture("webhook_status_failed_131031.json");
    assert_eq!(
        deliver(&gateway, &body, None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&gateway, NUMBER).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, ready) = admin(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ready["warnings"][0]
            .as_str()
            .unwrap()
            .contains("signatures"),
        "{ready}"
    );
}

/// A `messages` change naming `number` of `waba` with a delivered status:
/// nothing to trip, but the number's WABA is learned.
fn delivered(waba: &str, number: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": number},
            "statuses": [{"id": "wamid.ok", "status": "delivered", "timestamp": "1786700000", "recipient_id": "15550009999"}]}}
    ]}]}))
    .unwrap()
}

fn ban(waba: &str, state: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": 1786700300, "changes": [
        {"field": "account_update", "value": {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": state, "waba_ban_date": "August 14, 2026"}}}
    ]}]}))
    .unwrap()
}

async fn deliver_signed(gateway: &InProcess, body: &[u8]) {
    let answer = deliver(gateway, body, Some(&sign(SECRET, body))).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_disabled_waba_gates_its_numbers_known_now_and_learned_later() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.wabas = vec![wagate::config::Waba {
            id: "100000000000001".to_owned(),
            numbers: vec!["200000000000031".to_owned()],
            ..Default::default()
        }];
    })
    .await;
    let waba = "100000000000001";
    let (configured, seen, later, other) = (
        "200000000000031",
        "200000000000032",
        "200000000000033",
        "200000000000034",
    );
    deliver_signed(&gateway, &delivered(waba, seen)).await;
    deliver_signed(&gateway, &delivered("100000000000002", other)).await;
    for number in [configured, seen, later, other] {
        assert_eq!(
            send(&gateway, number).await.status(),
            StatusCode::OK,
            "{number}"
        );
    }

    deliver_signed(&gateway, &fixture("webhook_account_update_disabled.json")).await;
    for number in [configured, seen] {
        let refused = send(&gateway, number).await;
        assert_eq!(
            refused.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{number}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], 131031);
    }
    assert_eq!(
        send(&gateway, other).await.status(),
        StatusCode::OK,
        "another WABA"
    );
    assert_eq!(
        send(&gateway, later).await.status(),
        StatusCode::OK,
        "not known yet"
    );

    // Learned after the trip: gated as it is learned.
    deliver_signed(&gateway, &delivered(waba, later)).await;
    assert_eq!(
        send(&gateway, later).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, view) = admin(&gateway, &format!("/admin/breakers/{later}")).await;
    assert_eq!(view["waba"], waba, "{view}");
    assert_eq!(view["display_phone_number"], "15550001111", "{view}");
    assert_eq!(
        view["waba_gate"]["event"], "account_update/DISABLED_UPDATE/DISABLE",
        "{view}"
    );

    // A reinstatement lifts the gate: a number learned now is not opened
    // (the open ones wait for health or an operator).
    deliver_signed(&gateway, &ban(waba, "REINSTATE")).await;
    let fresh = "200000000000035";
    deliver_signed(&gateway, &delivered(waba, fresh)).await;
    assert_eq!(send(&gateway, fresh).await.status(), StatusCode::OK);
    assert_eq!(
        send(&gateway, seen).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, view) = admin(&gateway, &format!("/admin/breakers/{seen}")).await;
    assert!(view["waba_gate"].is_null(), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_one_replica_gates_the_number_on_another() {
    use support::gateway::Process;
    let sim = sim().await;
    let redis = support::redis::RedisServer::start();
    let upstream = format!("http://{}", sim.addr);
    let env = [
        ("WAGATE_STORE__REDIS_URL", redis.url()),
        ("WAGATE_WEBHOOK__APP_SECRET", SECRET.to_owned()),
        ("WAGATE_UPSTREAM__BASE_URL", upstream),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Process::spawn(&env);
    let b = Process::spawn(&env);
    let send_via = |base: String| async move {
        http()
            .post(format!("{base}/v24.0/{NUMBER}/messages"))
            .json(&json!({"messaging_product": "whatsapp", "to": "15550009999", "type": "text", "text": {"body": "hi"}}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send_via(b.url()).await, StatusCode::OK);
    let answer = http()
        .post(format!("{}/webhooks/whatsapp", a.url()))
        .header("x-hub-signature-256", SIGNED)
        .body(fixture("webhook_status_failed_131031.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    support::wait_until_async(
        Duration::from_secs(10),
        "replica B refuses the number",
        || {
            let url = b.url();
            async move { send_via(url).await == StatusCode::SERVICE_UNAVAILABLE }
        },
    )
    .await;
    let view: Value = http()
        .get(format!("http://{}/admin/breakers/{NUMBER}", b.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["waba"], "100000000000001",
        "B knows the WABA A learned: {view}"
    );
    assert_eq!(view["source"], "webhook");
}

/// The simulator posts what Meta would: a batch for several numbers,
/// delivered twice, and a badly signed copy.
#[tokio::test]
async fn the_simulator_posts_batches_duplicates_and_bad_signatures_through_the_gateway() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| c.webhook.app_secret = Secret::new(SECRET)).await;
    let hook = format!("{}/webhooks/whatsapp", gateway.url());
    let post = |request: Value| {
        http()
            .post(format!("http://{}/_sim/webhooks", sim.addr))
            .json(&request)
            .send()
    };
    let bad = post(
        json!({"url": hook, "app_secret": SECRET, "kind": "status_failed",
        "phone_number_id": "200000000000041", "bad_signature": true}),
    )
    .await
    .unwrap();
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["status"], 401, "{bad}");
    assert_eq!(
        send(&gateway, "200000000000041").await.status(),
        StatusCode::OK
    );

    let batch = post(
        json!({"url": hook, "app_secret": SECRET, "kind": "status_failed",
        "phone_number_ids": ["200000000000041", "200000000000042"], "repeat": 2}),
    )
    .await
    .unwrap();
    let batch: Value = batch.json().await.unwrap();
    assert_eq!(batch["statuses"], json!([200, 200]), "{batch}");
    for number in ["200000000000041", "200000000000042"] {
        assert_eq!(
            send(&gateway, number).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        metric(gateway.admin, "wagate_webhook_duplicates_total").await,
        1.0
    );
}

fn restriction(waba: &str, kind: &str, expiration: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "time": 1786700200, "changes": [
        {"field": "account_update", "value": {"event": "ACCOUNT_RESTRICTION",
            "restriction_info": [{"restriction_type": kind, "expiration": expiration},
                                 {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": expiration}]}}
    ]}]}))
    .unwrap()
}

async fn send_kind(gateway: &InProcess, number: &str, template: bool) -> reqwest::Response {
    let body = if template {
        json!({"messaging_product": "whatsapp", "to": "15550009999", "type": "template",
            "template": {"name": "order_update", "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]}})
    } else {
        json!({"messaging_product": "whatsapp", "to": "15550009999", "type": "text", "text": {"body": "thanks, on its way"}})
    };
    http()
        .post(format!("{}/v24.0/{number}/messages", gateway.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restriction_gates_one_traffic_class_until_it_expires() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| c.webhook.app_secret = Secret::new(SECRET)).await;
    let waba = "100000000000001";
    let (known, later) = ("200000000000051", "200000000000052");
    deliver_signed(&gateway, &delivered(waba, known)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    deliver_signed(
        &gateway,
        &restriction(waba, "RESTRICTED_BIZ_INITIATED_MESSAGING", now + 3),
    )
    .await;
    // Learned while the restriction runs: restricted too.
    deliver_signed(&gateway, &delivered(waba, later)).await;
    for number in [known, later] {
        let refused = send_kind(&gateway, number, true).await;
        assert_eq!(
            refused.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{number}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], 368, "{body}");
        assert_eq!(
            send_kind(&gateway, number, false).await.status(),
            StatusCode::OK,
            "a reply passes"
        );
    }
    assert_eq!(
        sim.sim.counts(known).messages,
        1,
        "only the reply reached Meta"
    );
    support::wait_until_async(Duration::from_secs(15), "the restriction ends", || async {
        send_kind(&gateway, known, true).await.status() == StatusCode::OK
    })
    .await;

    // The customer-initiated kind stops replies and lets templates through.
    let now = now + 100;
    deliver_signed(
        &gateway,
        &restriction(waba, "RESTRICTED_CUSTOMER_INITIATED_MESSAGING", now),
    )
    .await;
    assert_eq!(
        send_kind(&gateway, known, false).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send_kind(&gateway, known, true).await.status(),
        StatusCode::OK
    );
}

/// Sends a request head announcing a body, then only part of it, on a raw
/// connection; returns the status line the gateway answers with.
async fn stalled_body(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"to\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the test's own deadline")
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_nothing_is_forwarded() {
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.webhook.forward_url = receiver.url();
        c.webhook.read_timeout = Duration::from_millis(300);
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let status = stalled_body(gateway.proxy, "/webhooks/whatsapp").await;
    assert!(status.contains(" 408 "), "{status}");
    assert!(receiver.got().is_empty());

    // The gate reads a send's body only for a number it may refuse: trip one.
    deliver_signed(&gateway, &fixture("webhook_status_failed_131031.json")).await;
    let status = stalled_body(gateway.proxy, &format!("/v24.0/{NUMBER}/messages")).await;
    assert!(status.contains(" 408 "), "{status}");
    assert_eq!(sim.sim.counts(NUMBER).messages, 0);
}

/// Whatever a signed delivery holds (arbitrary bytes, arbitrary JSON), it
/// reaches the integration byte for byte and the gateway answers with the
/// integration's status. 48 generated bodies, from a fixed seed.
#[tokio::test]
async fn any_signed_delivery_is_forwarded_unchanged() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, forwarding_to(&receiver)).await;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9/\\\\\u{e9}\u{1f64f} ]{0,16}".prop_map(|s| json!(s)),
        prop::sample::select(vec!["failed", "131031", "messages", "account_update"])
            .prop_map(|s| json!(s)),
    ];
    let json = leaf.prop_recursive(3, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        json.prop_map(|v| serde_json::to_vec_pretty(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": v}]}]})).unwrap()),
    ];
    let mut runner = TestRunner::deterministic();
    for case in 0..48 {
        let body = bodies.new_tree(&mut runner).unwrap().current();
        let answer = deliver(&gateway, &body, Some(&sign(SECRET, &body))).await;
        assert_eq!(answer.status(), StatusCode::OK, "case {case}");
        let got = receiver.got();
        assert!(
            got.last().unwrap().body == body,
            "case {case}: forwarded byte for byte"
        );
    }
    assert_eq!(receiver.got().len(), 48);
}

/// With a send cap, a number's sends past it are refused at once with
/// Meta's throughput code; a THROUGHPUT_UPGRADE webhook raises the cap.
#[tokio::test]
async fn the_send_cap_refuses_past_the_rate_and_an_upgrade_raises_it() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.webhook.app_secret = Secret::new(SECRET);
        c.limits.per_number_rate = 3;
    })
    .await;
    let number = "200000000000071";
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(send(&gateway, number).await);
    }
    let passed = answers
        .iter()
        .filter(|a| a.status() == StatusCode::OK)
        .count();
    assert_eq!(passed, 3, "a second's worth");
    let refused = answers.pop().unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], 130429);
    assert_eq!(
        sim.sim.counts(number).messages,
        3,
        "refused sends never reach Meta"
    );

    // The number's display number is learned from a messages webhook, then
    // Meta upgrades its throughput.
    deliver_signed(&gateway, &delivered("100000000000001", number)).await;
    deliver_signed(
        &gateway,
        &fixture("webhook_phone_number_quality_update_throughput.json"),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(send(&gateway, number).await.status(), StatusCode::OK);
    }
}

/// A failed status under a rule of WABA scope opens the WABA's other known
/// numbers before the delivery is acknowledged.
#[tokio::test]
async fn a_failed_status_under_a_waba_scope_rule_opens_the_whole_waba() {
    const SIBLING: &str = "200000000000009";
    let sim = sim().await;
    let receiver = Receiver::start(200).await;
    let gateway = InProcess::start(sim.addr, |c| {
        forwarding_to(&receiver)(c);
        c.rules = vec![wagate::breaker::Rule {
            codes: wagate::breaker::CodeMatch::one(131031),
            action: wagate::breaker::Action::Trip,
            scope: wagate::breaker::Scope::Waba,
            cooldown: None,
        }];
        c.wabas = vec![wagate::config::Waba {
            id: "100000000000001".to_owned(),
            numbers: vec![SIBLING.to_owned()],
            token: Secret::default(),
        }];
    })
    .await;
    assert_eq!(send(&gateway, SIBLING).await.status(), StatusCode::OK);
    deliver_signed(&gateway, &failed_batch(&[NUMBER], 131031)).await;
    for number in [NUMBER, SIBLING] {
        assert_eq!(
            send(&gateway, number).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{number} once the delivery is acknowledged"
        );
    }
    assert_eq!(sim.sim.counts(SIBLING).messages, 1);
    let (_, sibling) = admin(&gateway, &format!("/admin/breakers/{SIBLING}")).await;
    assert_eq!(sibling["source"], "webhook", "{sibling}");
}
