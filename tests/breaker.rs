//! The breaker end to end: the simulator, the gateway (in process or as the
//! real binary), real redis-server processes, real HTTP.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::gateway::{
    InProcess, Process, admin_get, admin_post, http, metric, send_text as send, sim,
};
use support::redis::{RedisServer, commandstats};
use wagate::breaker::{Action, CodeMatch, Rule, Scope};
use wagate::sim::{ErrorInjection, SimHandle};

const LOCKED: &str = "200000000000001";
const OTHER: &str = "200000000000002";
const TOKEN: &str = "admin-token-for-tests";

fn send_to(recipient: &str) -> Value {
    json!({"messaging_product": "whatsapp", "to": recipient, "type": "text", "text": {"body": "hi"}})
}

fn embedded(dir: &tempfile::TempDir) -> impl FnOnce(&mut wagate::config::Config) + '_ {
    move |c| {
        c.store.path = dir.path().join("breakers.db");
        c.admin.token = wagate::config::Secret::new(TOKEN);
    }
}

/// Asserts a refusal in Meta's envelope, quoting `code` and `fbtrace_id`.
async fn assert_refused(response: reqwest::Response, code: i64, fbtrace_id: Option<&str>) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers().clone();
    assert_eq!(headers["x-wagate-breaker"], "open");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["type"], "WagateError");
    assert!(
        body["error"]["error_data"]["details"]
            .as_str()
            .unwrap()
            .contains("open")
    );
    if let Some(id) = fbtrace_id {
        assert_eq!(body["error"]["fbtrace_id"], id);
    }
}

#[tokio::test]
async fn a_lock_drains_the_retry_storm_at_the_gateway() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;
    let base = gateway.url();

    let first = send(&base, LOCKED).await;
    assert_eq!(first.status(), StatusCode::FORBIDDEN);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["error"]["code"], 131031);
    assert_eq!(
        first["error"]["type"], "OAuthException",
        "Meta's own verdict"
    );
    let trace = first["error"]["fbtrace_id"].as_str().unwrap().to_owned();

    for _ in 0..1000 {
        assert_refused(send(&base, LOCKED).await, 131031, Some(&trace)).await;
        assert_eq!(send(&base, OTHER).await.status(), StatusCode::OK);
    }
    assert_eq!(
        sim.sim.counts(LOCKED).messages,
        1,
        "only the first send reached Meta"
    );
    assert_eq!(sim.sim.counts(OTHER).messages, 1000);
    let series = format!(r#"wagate_refused_sends_total{{phone_number_id="{LOCKED}"}}"#);
    assert_eq!(metric(gateway.admin, &series).await, 1000.0);
    let state = format!(r#"wagate_breaker_state{{phone_number_id="{LOCKED}",state="open"}}"#);
    assert_eq!(metric(gateway.admin, &state).await, 1.0);
    let transition = r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="response",to="open"}"#;
    support::wait_until_async(
        Duration::from_secs(5),
        "the transition is stored",
        || async { metric(gateway.admin, transition).await == 1.0 },
    )
    .await;
}

/// A client that gives up on a send while Meta is still answering must not
/// hide Meta's verdict: the gateway reads the answer anyway, and the
/// breaker trips before the client's retry arrives.
#[tokio::test]
async fn a_lock_answered_after_the_client_left_still_trips_the_breaker() {
    use tokio::io::AsyncWriteExt;

    let sim = sim().await;
    sim.sim.lock(LOCKED);
    sim.sim
        .set_latency(Some(LOCKED), Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;

    let body = send_to("+15550009999").to_string();
    let request = format!(
        "POST /v24.0/{LOCKED}/messages HTTP/1.1\r\nHost: wagate\r\n\
         Authorization: Bearer integration-token\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    support::wait_until(Duration::from_secs(5), "the send reaches Meta", || {
        sim.sim.counts(LOCKED).messages == 1
    })
    .await;
    // The client closes its connection before Meta has answered.
    drop(client);

    let open = format!(r#"wagate_breaker_state{{phone_number_id="{LOCKED}",state="open"}}"#);
    support::wait_until_async(
        Duration::from_secs(5),
        "the breaker opens on the answer nobody waited for",
        || async { metric(gateway.admin, &open).await == 1.0 },
    )
    .await;
    assert_refused(send(&gateway.url(), LOCKED).await, 131031, None).await;
    assert_eq!(
        sim.sim.counts(LOCKED).messages,
        1,
        "the retry stayed at the gateway"
    );
}

#[tokio::test]
async fn mark_as_read_registration_and_health_pass_an_open_breaker() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;
    let base = gateway.url();
    assert_eq!(send(&base, LOCKED).await.status(), StatusCode::FORBIDDEN);
    sim.sim.unlock(LOCKED);

    let read = http()
        .post(format!("{base}/v24.0/{LOCKED}/messages"))
        .json(&json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let register = http()
        .post(format!("{base}/v24.0/{LOCKED}/register"))
        .json(&json!({"messaging_product": "whatsapp", "pin": "123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::OK);
    let health = http()
        .get(format!("{base}/v24.0/{LOCKED}?fields=health_status"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_refused(send(&base, LOCKED).await, 131031, None).await;
    let counts = sim.sim.counts(LOCKED);
    assert_eq!(
        (counts.messages, counts.registration, counts.health),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn throttling_cools_a_number_down_and_pair_limits_back_off_one_recipient() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, |c| {
        embedded(&dir)(c);
        // A short cool-down so the test sees it end.
        c.rules = vec![Rule {
            codes: CodeMatch::one(130429),
            action: Action::Cooldown,
            scope: Scope::Number,
            cooldown: Some(Duration::from_secs(2)),
        }];
    })
    .await;
    let base = gateway.url();
    sim.sim.inject_error(
        LOCKED,
        ErrorInjection {
            code: 130429,
            http_status: Some(429),
            times: Some(1),
            headers: Default::default(),
            body: None,
        },
    );
    assert_eq!(
        send(&base, LOCKED).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_refused(send(&base, LOCKED).await, 130429, None).await;
    support::wait_until_async(Duration::from_secs(10), "the cool-down ends", || async {
        send(&base, LOCKED).await.status() == StatusCode::OK
    })
    .await;

    sim.sim.inject_error(
        OTHER,
        ErrorInjection {
            code: 131056,
            http_status: Some(400),
            times: Some(1),
            headers: Default::default(),
            body: None,
        },
    );
    let to = |recipient: &str| {
        http()
            .post(format!("{base}/v24.0/{OTHER}/messages"))
            .json(&send_to(recipient))
            .send()
    };
    assert_eq!(
        to("+15550001234").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_refused(to("+15550001234").await.unwrap(), 131056, None).await;
    assert_eq!(to("+15550005678").await.unwrap().status(), StatusCode::OK);
}

/// A rule of WABA scope: 131031 on one number opens every known number of
/// its WABA, before any of their sends reaches Meta; a number of no known
/// WABA goes on.
#[tokio::test]
async fn a_waba_scope_rule_opens_every_known_number_of_the_waba() {
    const SIBLING: &str = "200000000000003";
    const WABA: &str = "300000000000001";
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, |c| {
        embedded(&dir)(c);
        c.rules = vec![Rule {
            codes: CodeMatch::one(131031),
            action: Action::Trip,
            scope: Scope::Waba,
            cooldown: None,
        }];
        c.wabas = vec![wagate::config::Waba {
            id: WABA.to_owned(),
            numbers: vec![LOCKED.to_owned(), SIBLING.to_owned()],
            token: wagate::config::Secret::default(),
        }];
    })
    .await;
    let base = gateway.url();
    assert_eq!(send(&base, LOCKED).await.status(), StatusCode::FORBIDDEN);
    support::wait_until_async(
        Duration::from_secs(10),
        "the WABA's numbers are open",
        || async {
            metric(
                gateway.admin,
                r#"wagate_breakers{kind="number",state="open"}"#,
            )
            .await
                == 2.0
        },
    )
    .await;
    assert_refused(send(&base, SIBLING).await, 131031, None).await;
    assert_eq!(
        sim.sim.counts(SIBLING).messages,
        0,
        "the sibling never reached Meta"
    );
    assert_eq!(send(&base, OTHER).await.status(), StatusCode::OK);

    let (_, sibling) = admin_get(gateway.admin, &format!("/admin/breakers/{SIBLING}")).await;
    assert_eq!(sibling["source"], "response", "{sibling}");
    assert_eq!(
        sibling["details"],
        format!("WABA {WABA}: 131031 on {LOCKED}"),
        "{sibling}"
    );
}

#[tokio::test]
async fn embedded_store_keeps_an_open_breaker_across_a_kill() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakers.db");
    let env = [
        ("WAGATE_UPSTREAM__BASE_URL", sim.base_url()),
        ("WAGATE_STORE__PATH", path.to_str().unwrap().to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut gateway = Process::spawn(&env);
    assert_eq!(
        send(&gateway.url(), LOCKED).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_refused(send(&gateway.url(), LOCKED).await, 131031, None).await;
    // The transition is logged once the store acknowledged it, which the
    // embedded store does only after its commit is on disk.
    support::wait_until(Duration::from_secs(5), "the trip is on disk", || {
        gateway.log().contains("breaker transition")
    })
    .await;
    gateway.kill();

    let restarted = Process::spawn(&env);
    assert_refused(send(&restarted.url(), LOCKED).await, 131031, None).await;
    assert_eq!(sim.sim.counts(LOCKED).messages, 1);
}

#[tokio::test]
async fn admin_lists_resets_and_trips_breakers() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;
    let admin = gateway.admin;
    assert_eq!(
        send(&gateway.url(), LOCKED).await.status(),
        StatusCode::FORBIDDEN
    );

    let (status, list) = admin_get(admin, "/admin/breakers").await;
    assert_eq!(status, StatusCode::OK);
    let listed = &list["breakers"][0];
    assert_eq!(listed["phone_number_id"], LOCKED);
    assert_eq!(listed["state"], "open");
    assert_eq!(listed["cause_code"], 131031);
    assert_eq!(listed["source"], "response");
    assert!(listed["fbtrace_id"].is_string());
    let (status, shown) = admin_get(admin, &format!("/admin/breakers/{LOCKED}")).await;
    assert_eq!((status, &shown["trips"]), (StatusCode::OK, &json!(1)));
    assert_eq!(
        admin_get(admin, &format!("/admin/breakers/{OTHER}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin_get(admin, "/admin/breakers/not-a-number").await.0,
        StatusCode::BAD_REQUEST
    );

    let reset = format!("/admin/breakers/{LOCKED}/reset");
    let (status, body) = admin_post(admin, &reset, None, r#"{"reason":"appeal won"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = admin_post(admin, &reset, Some("wrong"), r#"{"reason":"x"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_refused(send(&gateway.url(), LOCKED).await, 131031, None).await;
    let (status, body) = admin_post(admin, &reset, Some(TOKEN), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    let (status, body) = admin_post(admin, &reset, Some(TOKEN), r#"{"reason":"appeal won"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "changed");
    sim.sim.unlock(LOCKED);
    assert_eq!(send(&gateway.url(), LOCKED).await.status(), StatusCode::OK);
    let (status, _) = admin_post(admin, &reset, Some(TOKEN), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let trip = format!("/admin/breakers/{OTHER}/trip");
    let (status, body) =
        admin_post(admin, &trip, Some(TOKEN), r#"{"reason":"campaign bug"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["breaker"]["state"], "held");
    let refused = send(&gateway.url(), OTHER).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["x-wagate-breaker"], "held");
    assert_eq!(sim.sim.counts(OTHER).messages, 0);
}

#[tokio::test]
async fn admin_changes_are_forbidden_without_a_configured_token() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, |c| c.store.path = dir.path().join("b.json")).await;
    let (status, body) = admin_post(
        gateway.admin,
        &format!("/admin/breakers/{LOCKED}/trip"),
        Some("x"),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("WAGATE_ADMIN__TOKEN")
    );
}

fn redis_env(sim: &SimHandle, redis: &str) -> Vec<(String, String)> {
    vec![
        ("WAGATE_UPSTREAM__BASE_URL".into(), sim.base_url()),
        ("WAGATE_STORE__REDIS_URL".into(), redis.to_owned()),
        ("WAGATE_ADMIN__TOKEN".into(), TOKEN.into()),
    ]
}

fn spawn(env: &[(String, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Process::spawn(&env)
}

#[tokio::test]
async fn a_lock_seen_by_one_replica_is_refused_by_another() {
    let redis = RedisServer::start();
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let env = redis_env(&sim, &redis.url());
    let a = spawn(&env);
    let b = spawn(&env);

    assert_eq!(send(&a.url(), LOCKED).await.status(), StatusCode::FORBIDDEN);
    let tripped = Instant::now();
    // Poll B's admin API, not its proxy: a send to B before the change
    // arrives would reach the simulator and trip B by itself.
    support::wait_until_async(
        Duration::from_secs(5),
        "replica B sees the trip",
        || async {
            admin_get(b.admin, &format!("/admin/breakers/{LOCKED}"))
                .await
                .0
                == StatusCode::OK
        },
    )
    .await;
    let propagation = tripped.elapsed();
    println!("trip propagation from replica A to replica B: {propagation:?} (target < 250ms)");
    assert_refused(send(&b.url(), LOCKED).await, 131031, None).await;
    assert_eq!(sim.sim.counts(LOCKED).messages, 1);

    // An operator's reset on A closes the breaker on B too.
    let reset = format!("/admin/breakers/{LOCKED}/reset");
    let (status, _) = admin_post(a.admin, &reset, Some(TOKEN), r#"{"reason":"x"}"#).await;
    assert_eq!(status, StatusCode::OK);
    support::wait_until_async(
        Duration::from_secs(5),
        "replica B sees the reset",
        || async {
            admin_get(b.admin, &format!("/admin/breakers/{LOCKED}"))
                .await
                .0
                == StatusCode::NOT_FOUND
        },
    )
    .await;
}

#[tokio::test]
async fn a_closed_number_sends_no_redis_commands() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let url = redis.url();
    let gateway = InProcess::start(sim.addr, |c| {
        c.store.redis_url = wagate::config::RedisUrl::new(url.clone());
        // The poller's leases and polls of the open number are background
        // work whose count grows with the test's length, not the sends'.
        c.health.enabled = false;
    })
    .await;
    // One open breaker elsewhere, so the gate really looks the numbers up.
    sim.sim.lock(LOCKED);
    assert_eq!(
        send(&gateway.url(), LOCKED).await.status(),
        StatusCode::FORBIDDEN
    );
    support::wait_until_async(Duration::from_secs(5), "the trip is stored", || async {
        metric(
            gateway.admin,
            r#"wagate_breakers{kind="number",state="open"}"#,
        )
        .await
            == 1.0
    })
    .await;

    let before = commandstats(&url);
    let client = http();
    for i in 0..10_000u32 {
        let number = format!("3000000000{:05}", i % 500);
        let response = client
            .post(format!("{}/v24.0/{number}/messages", gateway.url()))
            .json(&send_to("+15550009999"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let after = commandstats(&url);
    let mut per_command: Vec<(String, u64)> = after
        .iter()
        .map(|(c, n)| (c.clone(), n - before.get(c).copied().unwrap_or(0)))
        .filter(|(c, n)| *n > 0 && !matches!(c.as_str(), "ping" | "info"))
        .collect();
    per_command.sort();
    println!("redis commands during 10,000 closed-number sends (ping/info aside): {per_command:?}");
    let total: u64 = per_command.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 10,
        "closed-number sends cost Redis commands: {per_command:?}"
    );
}

/// A throttle's cool-down lasts as long as Meta's answer asks (here a
/// `Retry-After` of one second), not the rule's 60 s.
#[tokio::test]
async fn a_cool_down_follows_the_answers_own_wait() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;
    let base = gateway.url();
    sim.sim.inject_error(
        LOCKED,
        ErrorInjection {
            code: 130429,
            http_status: Some(429),
            times: Some(1),
            headers: [("retry-after".to_owned(), "1".to_owned())].into(),
            body: None,
        },
    );
    let throttled = send(&base, LOCKED).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        throttled.headers()["retry-after"],
        "1",
        "Meta's headers reach the client"
    );
    let refused = send(&base, LOCKED).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry <= 1, "Retry-After {retry}");
    support::wait_until_async(Duration::from_secs(10), "the cool-down ends", || async {
        send(&base, LOCKED).await.status() == StatusCode::OK
    })
    .await;
}

/// The admin API refuses bodies past its limit instead of reading them.
#[tokio::test]
async fn the_admin_api_refuses_an_oversized_body() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = InProcess::start(sim.addr, embedded(&dir)).await;
    let reason = "x".repeat(100 * 1024);
    let answer = http()
        .post(format!(
            "http://{}/admin/breakers/{LOCKED}/trip",
            gateway.admin
        ))
        .bearer_auth(TOKEN)
        .body(format!("{{\"reason\":\"{reason}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = admin_get(gateway.admin, &format!("/admin/breakers/{LOCKED}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was tripped");
}

/// A write the store refuses (Redis out of memory: not an outage, which
/// would hold the write back) leaves nothing behind: the operator is told
/// 503, and the number is not held on this replica either.
#[tokio::test]
async fn a_write_the_store_refuses_is_not_kept_on_the_replica() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let url = redis.url();
    let gateway = InProcess::start(sim.addr, |c| {
        c.store.redis_url = wagate::config::RedisUrl::new(url.clone());
        c.admin.token = wagate::config::Secret::new(TOKEN);
        c.health.enabled = false;
    })
    .await;
    let mut conn = redis.connection();
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut conn)
            .unwrap();
    }
    let trip = format!("/admin/breakers/{OTHER}/trip");
    let (status, body) = admin_post(gateway.admin, &trip, Some(TOKEN), r#"{"reason":"x"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(send(&gateway.url(), OTHER).await.status(), StatusCode::OK);
    let (status, view) = admin_get(gateway.admin, &format!("/admin/breakers/{OTHER}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{view}");
}
