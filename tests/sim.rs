//! The simulator over real HTTP: `spawn()` on 127.0.0.1:0, driven by reqwest.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wagate::graph::GraphError;
use wagate::sim::{self, ErrorInjection, Health, LogEntry, RequestCounts, SimHandle, SimOptions};

// ---------------------------------------------------------------- helpers

const ID: &str = "200000000000001";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// Upper bound for any single exchange, so a bug shows as a failure, not a hang.
const BOUND: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture readable")
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

fn client() -> Client {
    Client::builder().timeout(BOUND).build().expect("client")
}

async fn start() -> (SimHandle, Client) {
    (
        sim::spawn(SimOptions::default()).await.expect("spawn sim"),
        client(),
    )
}

fn url(h: &SimHandle, path: &str) -> String {
    format!("{}{path}", h.base_url())
}

fn message(to: &str) -> Value {
    json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hi"}})
}

async fn post_json(c: &Client, h: &SimHandle, path: &str, body: &Value) -> Response {
    c.post(url(h, path))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn send(c: &Client, h: &SimHandle) -> Response {
    post_json(
        c,
        h,
        &format!("/v23.0/{ID}/messages"),
        &message("+15550009999"),
    )
    .await
}

async fn body_json(r: Response) -> Value {
    r.json().await.expect("JSON body")
}

/// A control call: method, path, optional JSON body → (status, JSON body).
async fn control(
    c: &Client,
    h: &SimHandle,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = c.request(method, url(h, path));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let r = req.send().await.expect("control request");
    let status = r.status().as_u16();
    (status, body_json(r).await)
}

async fn counts(c: &Client, h: &SimHandle, id: &str) -> RequestCounts {
    let (status, v) = control(
        c,
        h,
        Method::GET,
        &format!("/_sim/numbers/{id}/requests"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    serde_json::from_value(v).expect("counts shape")
}

async fn log(c: &Client, h: &SimHandle) -> Vec<LogEntry> {
    let (status, v) = control(c, h, Method::GET, "/_sim/log", None).await;
    assert_eq!(status, 200);
    serde_json::from_value(v).expect("log shape")
}

/// A webhook receiver on 127.0.0.1:0 that answers `status` and hands every
/// delivery (headers, raw body) to the test.
async fn receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    type Tx = mpsc::UnboundedSender<(HeaderMap, Bytes)>;
    async fn hook(
        State((tx, status)): State<(Tx, StatusCode)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let _ = tx.send((headers, body));
        status
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state((tx, status));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

/// Checks `sha256=<hex>` against the raw body with an independent HMAC.
fn signature_is_valid(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

// ------------------------------------------------------------------ sends

#[tokio::test]
async fn send_returns_contacts_and_unique_wamids() {
    let (h, c) = start().await;
    let mut wamids = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = send(&c, &h).await;
        assert_eq!(r.status(), 200);
        let v = body_json(r).await;
        assert_eq!(v["messaging_product"], "whatsapp");
        assert_eq!(v["contacts"][0]["input"], "+15550009999");
        assert_eq!(v["contacts"][0]["wa_id"], "15550009999");
        let wamid = v["messages"][0]["id"].as_str().expect("wamid").to_owned();
        assert!(wamid.starts_with("wamid."), "{wamid}");
        assert!(wamids.insert(wamid), "wamid repeated");
    }
    // Same keys as Meta's accepted-send fixture.
    let shape = fixture_json("send_ok.json");
    let v = body_json(send(&c, &h).await).await;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&v), keys(&shape));
}

#[tokio::test]
async fn version_segment_is_optional() {
    let (h, c) = start().await;
    let r = post_json(&c, &h, &format!("/{ID}/messages"), &message("15550009999")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["contacts"][0]["wa_id"], "15550009999");
    let r = post_json(
        &c,
        &h,
        &format!("/v25.0/{ID}/marketing_messages"),
        &message("1"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(counts(&c, &h, ID).await.messages, 1);
    assert_eq!(counts(&c, &h, ID).await.marketing_messages, 1);
}

#[tokio::test]
async fn mark_as_read_answers_success() {
    let (h, c) = start().await;
    let read = json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"});
    let r = post_json(&c, &h, &format!("/v23.0/{ID}/messages"), &read).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"success":true}"#);
}

#[tokio::test]
async fn bad_send_bodies_get_code_100() {
    let (h, c) = start().await;
    let path = url(&h, &format!("/v23.0/{ID}/messages"));
    for body in ["not json", "{}", r#"{"to":""}"#, "[1,2]"] {
        let r = c.post(&path).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e = GraphError::parse(400, &r.bytes().await.unwrap()).expect("envelope");
        assert_eq!(e.code, 100, "{body}");
        assert_eq!(e.kind.as_deref(), Some("OAuthException"));
        assert_eq!(e.message, "(#100) Invalid parameter");
    }
}

#[tokio::test]
async fn locked_number_gets_131031_until_unlocked() {
    let (h, c) = start().await;
    let (status, _) = control(
        &c,
        &h,
        Method::POST,
        &format!("/_sim/numbers/{ID}/lock"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let want = GraphError::parse(403, &fixture("error_131031.json")).unwrap();
    let mut traces = Vec::new();
    for _ in 0..2 {
        let r = send(&c, &h).await;
        assert_eq!(r.status(), 403);
        let e = GraphError::parse(403, &r.bytes().await.unwrap()).expect("envelope");
        assert_eq!(
            (e.code, &e.message, &e.details, &e.kind),
            (131031, &want.message, &want.details, &want.kind)
        );
        traces.push(e.fbtrace_id.expect("fbtrace_id"));
    }
    assert_ne!(
        traces[0], traces[1],
        "fbtrace_id must be unique per response"
    );
    // Other numbers are unaffected.
    let other = post_json(&c, &h, "/v23.0/200000000000002/messages", &message("1")).await;
    assert_eq!(other.status(), 200);

    control(
        &c,
        &h,
        Method::POST,
        &format!("/_sim/numbers/{ID}/unlock"),
        None,
    )
    .await;
    assert_eq!(send(&c, &h).await.status(), 200);
}

#[tokio::test]
async fn injected_error_answers_n_times_then_stops() {
    let (h, c) = start().await;
    let body = r#"{"code":131000,"times":2}"#;
    let (status, _) = control(
        &c,
        &h,
        Method::POST,
        &format!("/_sim/numbers/{ID}/errors"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let r = send(&c, &h).await;
        assert_eq!(r.status(), 500);
        assert_eq!(
            GraphError::parse(500, &r.bytes().await.unwrap())
                .unwrap()
                .code,
            131000
        );
    }
    assert_eq!(send(&c, &h).await.status(), 200);

    // Without times it stays until cleared; registration is not affected.
    h.sim.inject_error(
        ID,
        ErrorInjection {
            code: 2,
            ..Default::default()
        },
    );
    assert_eq!(send(&c, &h).await.status(), 503);
    assert_eq!(send(&c, &h).await.status(), 503);
    let reg = post_json(
        &c,
        &h,
        &format!("/v23.0/{ID}/register"),
        &json!({"pin": "123456"}),
    )
    .await;
    assert_eq!(reg.status(), 200);
    control(
        &c,
        &h,
        Method::DELETE,
        &format!("/_sim/numbers/{ID}/errors"),
        None,
    )
    .await;
    assert_eq!(send(&c, &h).await.status(), 200);
}

#[tokio::test]
async fn injected_body_is_returned_byte_for_byte() {
    let (h, c) = start().await;
    let text = String::from_utf8(fixture("error_131056.json")).unwrap();
    let injection =
        json!({"code": 131056, "http_status": 429, "times": 1, "body": text}).to_string();
    control(
        &c,
        &h,
        Method::POST,
        &format!("/_sim/numbers/{ID}/errors"),
        Some(&injection),
    )
    .await;
    let r = send(&c, &h).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        fixture("error_131056.json").as_slice()
    );
}

#[tokio::test]
async fn throttling_is_400_by_default_and_429_on_request() {
    let (h, c) = start().await;
    for (body, want) in [
        (r#"{"code":130429,"times":1}"#, 400),
        (r#"{"code":130429,"http_status":429,"times":1}"#, 429),
    ] {
        control(
            &c,
            &h,
            Method::POST,
            &format!("/_sim/numbers/{ID}/errors"),
            Some(body),
        )
        .await;
        let r = send(&c, &h).await;
        assert_eq!(r.status().as_u16(), want, "{body}");
        let e = GraphError::parse(want, &r.bytes().await.unwrap()).unwrap();
        assert_eq!(e.message, "(#130429) Rate limit hit");
    }
}

// ------------------------------------------------- health and registration

async fn health(c: &Client, h: &SimHandle) -> Value {
    let r = c
        .get(url(h, &format!("/v23.0/{ID}?fields=health_status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    body_json(r).await
}

#[tokio::test]
async fn health_reports_each_state_like_the_fixtures() {
    let (h, c) = start().await;
    assert_eq!(health(&c, &h).await, fixture_json("health_available.json"));
    for (state, file) in [
        ("LIMITED", "health_limited.json"),
        ("BLOCKED", "health_blocked.json"),
        ("WABA_BLOCKED", "health_waba_blocked.json"),
        ("AVAILABLE", "health_available.json"),
    ] {
        let body = json!({ "can_send_message": state }).to_string();
        let (status, _) = control(
            &c,
            &h,
            Method::PUT,
            &format!("/_sim/numbers/{ID}/health"),
            Some(&body),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(health(&c, &h).await, fixture_json(file), "{state}");
    }
    assert_eq!(counts(&c, &h, ID).await.health, 5);
}

#[tokio::test]
async fn lock_shows_in_health_unless_set_explicitly() {
    let (h, c) = start().await;
    h.sim.lock(ID);
    assert_eq!(health(&c, &h).await, fixture_json("health_blocked.json"));
    h.sim.set_health(ID, Health::Available);
    assert_eq!(
        health(&c, &h).await["health_status"]["can_send_message"],
        "AVAILABLE"
    );
    // Combined fields, version-less path.
    let r = c
        .get(url(
            &h,
            &format!("/{ID}?fields=health_status,quality_rating"),
        ))
        .send()
        .await
        .unwrap();
    let v = body_json(r).await;
    assert_eq!(v["quality_rating"], "GREEN");
    assert_eq!(v["id"], ID);
}

#[tokio::test]
async fn number_info_without_health_fields() {
    let (h, c) = start().await;
    let v = body_json(
        c.get(url(&h, &format!("/v23.0/{ID}?fields=status")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["id"], ID);
    assert_eq!(v["verified_name"], "wagate sim");
    assert_eq!(v["status"], "CONNECTED");
    assert_eq!(v["quality_rating"], "GREEN");
    assert!(v["display_phone_number"].as_str().is_some());
    assert_eq!(counts(&c, &h, ID).await.other, 1);
}

#[tokio::test]
async fn registration_passes_while_locked() {
    let (h, c) = start().await;
    h.sim.lock(ID);
    for edge in ["register", "deregister", "request_code", "verify_code"] {
        let r = post_json(
            &c,
            &h,
            &format!("/v23.0/{ID}/{edge}"),
            &json!({"messaging_product": "whatsapp", "pin": "123456"}),
        )
        .await;
        assert_eq!(r.status(), 200, "{edge}");
        assert_eq!(r.text().await.unwrap(), r#"{"success":true}"#);
    }
    let pin = post_json(&c, &h, &format!("/v23.0/{ID}"), &json!({"pin": "654321"})).await;
    assert_eq!(pin.status(), 200);
    let no_pin = post_json(&c, &h, &format!("/v23.0/{ID}"), &json!({"name": "x"})).await;
    assert_eq!(no_pin.status(), 400);
    assert_eq!(send(&c, &h).await.status(), 403);
    assert_eq!(counts(&c, &h, ID).await.registration, 6);
}

// ------------------------------------------------------ counts and the log

#[tokio::test]
async fn counts_are_kept_per_kind_and_per_number() {
    let (h, c) = start().await;
    send(&c, &h).await;
    send(&c, &h).await;
    post_json(&c, &h, &format!("/{ID}/marketing_messages"), &message("1")).await;
    c.post(url(&h, &format!("/v23.0/{ID}/media")))
        .body("x")
        .send()
        .await
        .unwrap();
    health(&c, &h).await;
    post_json(
        &c,
        &h,
        &format!("/v23.0/{ID}/register"),
        &json!({"pin": "1"}),
    )
    .await;
    c.get(url(&h, &format!("/v23.0/{ID}/unknown_edge")))
        .send()
        .await
        .unwrap();
    post_json(&c, &h, "/v23.0/300/messages", &message("1")).await;
    // Control and helper requests are not Graph traffic.
    c.get(url(&h, "/_sim/log")).send().await.unwrap();
    c.get(url(&h, "/_sim/echo/x")).send().await.unwrap();

    let want = RequestCounts {
        messages: 2,
        marketing_messages: 1,
        media: 1,
        health: 1,
        registration: 1,
        other: 1,
        total: 7,
    };
    assert_eq!(counts(&c, &h, ID).await, want);
    assert_eq!(h.sim.counts(ID), want);
    let (_, all) = control(&c, &h, Method::GET, "/_sim/requests", None).await;
    assert_eq!(all[ID]["total"], 7);
    assert_eq!(all["300"]["messages"], 1);
    assert_eq!(counts(&c, &h, "999").await, RequestCounts::default());
}

#[tokio::test]
async fn unknown_objects_get_graph_method_exception() {
    let (h, c) = start().await;
    for (method, path, object) in [
        (Method::POST, "/v23.0/abc/messages", "abc"),
        (Method::POST, format!("/v23.0/{ID}/unknown").as_str(), ID),
        (Method::GET, "/v23.0/123/messages/extra", "123"),
        (Method::DELETE, "/", ""),
    ] {
        let r = c
            .request(method.clone(), url(&h, path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let e = GraphError::parse(400, &r.bytes().await.unwrap()).expect("envelope");
        assert_eq!(
            (e.code, e.kind.as_deref()),
            (100, Some("GraphMethodException")),
            "{path}"
        );
        let verb = method.as_str().to_ascii_lowercase();
        assert!(
            e.message.starts_with(&format!(
                "Unsupported {verb} request. Object with ID '{object}' does not exist"
            )),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn log_records_requests_and_responses() {
    let (h, c) = start().await;
    let body = message("+15550009999").to_string();
    let r = c
        .post(url(&h, &format!("/v23.0/{ID}/messages?x=1")))
        .header("authorization", "Bearer t")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let answered = r.text().await.unwrap();
    let entries = log(&c, &h).await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.query.as_str()),
        ("POST", "/v23.0/200000000000001/messages", "x=1")
    );
    assert_eq!(e.header("authorization"), Some("Bearer t"));
    assert_eq!(e.body_len, body.len() as u64);
    assert_eq!(e.body_sha256, hex::encode(Sha256::digest(body.as_bytes())));
    assert_eq!(
        (e.status, e.response_body.as_str()),
        (200, answered.as_str())
    );
    assert_eq!(h.sim.log(), entries);
}

#[tokio::test]
async fn record_off_keeps_counts_but_no_log() {
    let h = sim::spawn(SimOptions { record: false }).await.unwrap();
    let c = client();
    assert_eq!(send(&c, &h).await.status(), 200);
    assert_eq!(counts(&c, &h, ID).await.messages, 1);
    assert!(log(&c, &h).await.is_empty());
}

// ------------------------------------------------------------ media, helpers

#[tokio::test]
async fn media_upload_is_streamed_and_hashed() {
    let (h, c) = start().await;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 64; // 4 MiB
    let mut hasher = Sha256::new();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..CHUNKS)
        .map(|i| {
            let chunk: Vec<u8> = (0..CHUNK).map(|j| ((i * 7 + j) % 256) as u8).collect();
            hasher.update(&chunk);
            Ok(chunk)
        })
        .collect();
    let want_sha = hex::encode(hasher.finalize());
    let r = c
        .post(url(&h, &format!("/v23.0/{ID}/media")))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = body_json(r).await["id"]
        .as_str()
        .expect("media id")
        .to_owned();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    let entry = log(&c, &h).await.pop().expect("logged");
    assert_eq!(entry.body_len, (CHUNK * CHUNKS) as u64);
    assert_eq!(entry.body_sha256, want_sha);
}

#[tokio::test]
async fn echo_returns_every_header_in_order() {
    let (h, c) = start().await;
    let r = c
        .put(url(&h, "/_sim/echo/some/path?a=1&b=2"))
        .header("x-first", "1")
        .header("x-second", "two")
        .header("x-first-again", "3")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert_eq!(
        (
            v["method"].as_str(),
            v["path"].as_str(),
            v["query"].as_str()
        ),
        (Some("PUT"), Some("/_sim/echo/some/path"), Some("a=1&b=2"))
    );
    assert_eq!(v["body_len"], 5);
    assert_eq!(v["body_sha256"], hex::encode(Sha256::digest(b"hello")));
    let names: Vec<&str> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing in {names:?}"))
    };
    assert!(pos("x-first") < pos("x-second") && pos("x-second") < pos("x-first-again"));
    assert!(names.contains(&"host"));
    assert_eq!(log(&c, &h).await.len(), 1, "echo requests are logged");
}

#[tokio::test]
async fn blob_streams_the_requested_size() {
    let (h, c) = start().await;
    let n: u64 = 3 * 1024 * 1024 + 17;
    let r = c
        .get(url(&h, &format!("/_sim/blob?bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["content-length"], n.to_string().as_str());
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, n);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, &b)| b == sim::blob_byte(i as u64))
    );
    let empty = c.get(url(&h, "/_sim/blob?bytes=0")).send().await.unwrap();
    assert_eq!(empty.bytes().await.unwrap().len(), 0);
    for q in [
        format!("bytes={}", sim::BLOB_MAX + 1),
        "bytes=abc".into(),
        String::new(),
    ] {
        let r = c
            .get(url(&h, &format!("/_sim/blob?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert!(body_json(r).await["error"].is_string());
    }
}

#[tokio::test]
async fn broken_response_fails_the_client_instead_of_hanging() {
    let (h, c) = start().await;
    let (received, outcome) = tokio::time::timeout(BOUND, async {
        let mut r = c
            .get(url(&h, "/_sim/broken"))
            .send()
            .await
            .expect("headers arrive");
        assert_eq!(r.headers()["content-length"], "1048576");
        let mut received = Vec::new();
        loop {
            match r.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => break (received, Ok(())),
                Err(e) => break (received, Err(e)),
            }
        }
    })
    .await
    .expect("bounded");
    assert!(outcome.is_err(), "a truncated body must be an error");
    assert!(received.len() < 1_048_576, "got {} bytes", received.len());
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, &b)| b == sim::blob_byte(i as u64))
    );
}

// ----------------------------------------------------------------- latency

#[tokio::test]
async fn latency_delays_graph_responses() {
    let (h, c) = start().await;
    let (status, _) = control(&c, &h, Method::PUT, "/_sim/latency", Some(r#"{"ms":200}"#)).await;
    assert_eq!(status, 200);
    let t = Instant::now();
    assert_eq!(send(&c, &h).await.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    let body = format!(r#"{{"ms":300,"phone_number_id":"{ID}"}}"#);
    control(&c, &h, Method::PUT, "/_sim/latency", Some(&body)).await;
    let t = Instant::now();
    health(&c, &h).await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // Direct control: a per-number zero overrides the global delay.
    h.sim.set_latency(None, Duration::from_secs(60));
    h.sim.set_latency(Some(ID), Duration::ZERO);
    let t = Instant::now();
    assert_eq!(send(&c, &h).await.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(30));
}

// ------------------------------------------------------------- control API

#[tokio::test]
async fn control_api_rejects_bad_input_with_json_errors() {
    let (h, c) = start().await;
    let cases: [(Method, String, Option<&str>, u16); 10] = [
        (
            Method::PUT,
            format!("/_sim/numbers/{ID}/health"),
            Some("{not json"),
            400,
        ),
        (
            Method::PUT,
            format!("/_sim/numbers/{ID}/health"),
            Some(r#"{"can_send_message":"MAYBE"}"#),
            400,
        ),
        (
            Method::POST,
            format!("/_sim/numbers/{ID}/errors"),
            Some(r#"{"http_status":429}"#),
            400,
        ),
        (
            Method::POST,
            format!("/_sim/numbers/{ID}/errors"),
            Some(r#"{"code":1,"http_status":99}"#),
            400,
        ),
        (
            Method::POST,
            format!("/_sim/numbers/{ID}/errors"),
            Some(r#"{"code":1,"typo":1}"#),
            400,
        ),
        (
            Method::PUT,
            "/_sim/latency".into(),
            Some(r#"{"ms":-1}"#),
            400,
        ),
        (
            Method::PUT,
            "/_sim/latency".into(),
            Some(r#"{"ms":1,"phone_number_id":"abc"}"#),
            400,
        ),
        (Method::POST, "/_sim/numbers/abc/lock".into(), None, 400),
        (
            Method::POST,
            "/_sim/webhooks".into(),
            Some(r#"{"url":"http://127.0.0.1:1/"}"#),
            400,
        ),
        (Method::GET, "/_sim/nope".into(), None, 404),
    ];
    for (method, path, body, want) in cases {
        let (status, v) = control(&c, &h, method, &path, body).await;
        assert_eq!(status, want, "{path} {body:?}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (status, v) = control(&c, &h, Method::GET, "/_sim/reset", None).await;
    assert_eq!((status, v["error"].is_string()), (405, true));
    assert_eq!(
        counts(&c, &h, ID).await.total,
        0,
        "nothing reached the Graph surface"
    );
}

#[tokio::test]
async fn reset_clears_locks_errors_latency_counts_and_log() {
    let (h, c) = start().await;
    h.sim.lock(ID);
    h.sim.set_health("200000000000002", Health::WabaBlocked);
    h.sim.inject_error(
        "200000000000003",
        ErrorInjection {
            code: 368,
            ..Default::default()
        },
    );
    h.sim.set_latency(None, Duration::from_secs(60));
    let (status, _) = control(&c, &h, Method::POST, "/_sim/reset", None).await;
    assert_eq!(status, 200);
    assert!(log(&c, &h).await.is_empty());
    assert_eq!(counts(&c, &h, ID).await, RequestCounts::default());
    let t = Instant::now();
    assert_eq!(send(&c, &h).await.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(30));
    let r = post_json(&c, &h, "/v23.0/200000000000003/messages", &message("1")).await;
    assert_eq!(r.status(), 200);
    let r = c
        .get(url(&h, "/v23.0/200000000000002?fields=health_status"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_json(r).await["health_status"]["can_send_message"],
        "AVAILABLE"
    );
}

// ---------------------------------------------------------------- webhooks

#[tokio::test]
async fn status_failed_webhook_is_signed_over_the_raw_body() {
    let (h, c) = start().await;
    let (hook, mut deliveries) = receiver(StatusCode::OK).await;
    let request = json!({"url": hook, "app_secret": "s3cret", "kind": "status_failed", "phone_number_id": ID, "code": 131031});
    let (status, v) = control(
        &c,
        &h,
        Method::POST,
        "/_sim/webhooks",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!((status, v["status"].as_u64()), (200, Some(200)), "{v}");
    let (headers, body) = deliveries.recv().await.expect("delivered");
    let sig = headers["x-hub-signature-256"].to_str().unwrap();
    assert_eq!(v["signature"], sig);
    assert!(signature_is_valid("s3cret", &body, sig));
    assert!(!signature_is_valid("wrong", &body, sig));
    assert_eq!(headers["content-type"], "application/json");
    let payload: Value = serde_json::from_slice(&body).unwrap();
    let value = &payload["entry"][0]["changes"][0]["value"];
    assert_eq!(payload["entry"][0]["id"], "100000000000001");
    assert_eq!(value["metadata"]["phone_number_id"], ID);
    assert_eq!(value["statuses"][0]["status"], "failed");
    assert_eq!(value["statuses"][0]["errors"][0]["code"], 131031);
}

#[tokio::test]
async fn raw_webhook_sends_exact_bytes_with_the_reference_signature() {
    let (h, c) = start().await;
    let (hook, mut deliveries) = receiver(StatusCode::OK).await;
    let exact = String::from_utf8(fixture("webhook_status_failed_131031.json")).unwrap();
    let request =
        json!({"url": hook, "app_secret": "test-app-secret", "kind": "raw", "body": exact});
    let (status, v) = control(
        &c,
        &h,
        Method::POST,
        "/_sim/webhooks",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let want = "sha256=2d45e06e21d89f53153c7f147da175b185969a5db51666735083bac5145531a7";
    assert_eq!(v["signature"], want);
    let (headers, body) = deliveries.recv().await.expect("delivered");
    assert_eq!(body.as_ref(), exact.as_bytes());
    assert_eq!(headers["x-hub-signature-256"], want);
}

#[tokio::test]
async fn account_update_webhook_reports_the_receivers_status() {
    let (h, c) = start().await;
    let (hook, mut deliveries) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let request = json!({"url": hook, "app_secret": "k", "kind": "account_update", "event": "DISABLED_UPDATE", "ban_state": "DISABLE", "waba_id": "100000000000009"});
    let (status, v) = control(
        &c,
        &h,
        Method::POST,
        "/_sim/webhooks",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!((status, v["status"].as_u64()), (200, Some(500)), "{v}");
    let (headers, body) = deliveries.recv().await.expect("delivered");
    assert!(signature_is_valid(
        "k",
        &body,
        headers["x-hub-signature-256"].to_str().unwrap()
    ));
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["entry"][0]["id"], "100000000000009");
    let change = &payload["entry"][0]["changes"][0];
    assert_eq!(change["field"], "account_update");
    assert_eq!(change["value"]["ban_info"]["waba_ban_state"], "DISABLE");
}

#[tokio::test]
async fn unreachable_webhook_target_is_a_502() {
    let (h, c) = start().await;
    // Bind then drop a listener to get a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let request = json!({"url": format!("http://127.0.0.1:{port}/hook"), "app_secret": "k", "kind": "raw", "body": "{}"});
    let (status, v) = control(
        &c,
        &h,
        Method::POST,
        "/_sim/webhooks",
        Some(&request.to_string()),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("delivery failed"),
        "{v}"
    );
}

// ------------------------------------------------------ protocols, lifecycle

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let h = sim::spawn(SimOptions::default()).await.unwrap();
    let c = Client::builder()
        .http2_prior_knowledge()
        .timeout(BOUND)
        .build()
        .unwrap();
    let r = send(&c, &h).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(
        body_json(r).await["messages"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.")
    );
    let echo = body_json(c.get(url(&h, "/_sim/echo/h2")).send().await.unwrap()).await;
    assert_eq!(echo["version"], "HTTP/2.0");
    let blob = c
        .get(url(&h, "/_sim/blob?bytes=200000"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.bytes().await.unwrap().len(), 200_000);
    let broken = tokio::time::timeout(BOUND, async {
        c.get(url(&h, "/_sim/broken")).send().await?.bytes().await
    });
    assert!(broken.await.expect("bounded").is_err());
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let h = sim::spawn(SimOptions::default()).await.unwrap();
    let addr = h.addr;
    let c = client();
    assert_eq!(send(&c, &h).await.status(), 200);
    drop(c); // close the idle keep-alive connection's client side
    tokio::time::timeout(BOUND, h.shutdown())
        .await
        .expect("bounded")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still accepts"
    );
}
