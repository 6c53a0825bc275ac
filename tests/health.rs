//! Health-gated release and the ramp, end to end: the gateway in process in
//! front of the simulator over real HTTP, polling its Health Status API.
//! Durations are configured short; every wait is for a condition.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::{InProcess, http, metric, sim};
use support::wait_until_async;
use wagate::config::{Config, Secret};
use wagate::sim::{ErrorInjection, Health};

const BODY: &str =
    r#"{"messaging_product":"whatsapp","to":"+15550001111","type":"text","text":{"body":"hi"}}"#;
const WAIT: Duration = Duration::from_secs(20);
const ADMIN_TOKEN: &str = "admin-secret";

/// Short timings: a lock is polled within a fraction of a second.
fn fast(c: &mut Config) {
    c.breaker.min_open = Duration::from_millis(300);
    c.breaker.max_open = Duration::from_secs(30);
    c.breaker.jitter = 0.0;
    c.breaker.ramp_stage = Duration::from_millis(1500);
    c.breaker.ramp_rates = vec![2, 5];
    c.health.interval = Duration::from_millis(100);
    c.health.max_interval = Duration::from_millis(200);
    c.health.required_available = 2;
    c.health.waba_budget_per_hour = 3_600_000;
    c.health.timeout = Duration::from_secs(2);
    c.health.lease_ttl = Duration::from_secs(1);
}

async fn send(gateway: &InProcess, number: &str) -> reqwest::Response {
    send_to(&gateway.url(), number).await
}

async fn send_to(url: &str, number: &str) -> reqwest::Response {
    http()
        .post(format!("{url}/v24.0/{number}/messages"))
        .bearer_auth(format!("token-of-{number}"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap()
}

/// The admin view of `number`'s breaker; `None` when closed.
async fn breaker(gateway: &InProcess, number: &str) -> Option<Value> {
    breaker_at(gateway.admin, number).await
}

async fn breaker_at(admin: std::net::SocketAddr, number: &str) -> Option<Value> {
    let response = http()
        .get(format!("http://{admin}/admin/breakers/{number}"))
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => Some(response.json().await.unwrap()),
        404 => None,
        status => panic!("admin answered {status}"),
    }
}

async fn wait_state(gateway: &InProcess, number: &str, state: Option<&str>) -> Option<Value> {
    wait_view(gateway, number, &format!("{number} is {state:?}"), |view| {
        view.map(|v| v["state"].as_str().unwrap_or_default()) == state
    })
    .await
}

/// Polls the admin view of `number` until `done` holds; returns that view.
async fn wait_view(
    gateway: &InProcess,
    number: &str,
    what: &str,
    done: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let seen = std::cell::RefCell::new(None);
    let (seen_ref, done) = (&seen, &done);
    wait_until_async(WAIT, what, move || async move {
        let view = breaker(gateway, number).await;
        let held = done(view.as_ref());
        *seen_ref.borrow_mut() = view;
        held
    })
    .await;
    seen.into_inner()
}

/// An operator's `action` on `number`'s breaker, with the admin token.
async fn operate(gateway: &InProcess, number: &str, action: &str, reason: &str) -> u16 {
    http()
        .post(format!(
            "http://{}/admin/breakers/{number}/{action}",
            gateway.admin
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "reason": reason }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A scripted failure of the simulator's health answer.
fn failing(code: i64, http_status: u16, body: Option<&str>) -> ErrorInjection {
    ErrorInjection {
        code,
        http_status: Some(http_status),
        times: None,
        body: body.map(str::to_owned),
        headers: Default::default(),
    }
}

/// Trips `number` with a real 131031 from the simulator, after one good send
/// taught the gateway its token.
async fn lock(gateway: &InProcess, sim: &wagate::sim::SimHandle, number: &str) {
    assert_eq!(send(gateway, number).await.status(), 200);
    sim.sim.lock(number);
    assert_eq!(send(gateway, number).await.status(), 403);
    wait_state(gateway, number, Some("open")).await;
}

#[tokio::test]
async fn a_lock_is_released_by_health_through_one_probe_and_the_ramp() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, fast).await;
    let n = "300000000000001";
    lock(&gateway, &sim, n).await;

    // BLOCKED: it stays open, with Meta's errors in the admin view and in
    // the refusal.
    let view = wait_view(&gateway, n, "a BLOCKED poll shows Meta's errors", |v| {
        v.is_some_and(|v| v["health_errors"].as_array().is_some_and(|e| !e.is_empty()))
    })
    .await
    .unwrap();
    assert_eq!(view["state"], "open");
    assert_eq!(view["health_errors"][0]["code"], 131031);
    assert!(view["health"]["next_poll"].is_u64(), "{view}");
    let refused = send(&gateway, n).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-wagate-breaker"], "open");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    let details = body["error"]["error_data"]["details"].as_str().unwrap();
    assert!(
        details.contains("locked and cannot send messages"),
        "{details}"
    );

    // AVAILABLE: the ramp starts with one probe. The simulator is slow, so
    // the probe is still out while the others arrive.
    sim.sim.set_latency(Some(n), Duration::from_millis(800));
    let sends_before = sim.sim.counts(n).messages;
    sim.sim.unlock(n);
    wait_state(&gateway, n, Some("ramping")).await;
    let burst: Vec<_> = (0..10).map(|_| send(&gateway, n)).collect();
    let answers = futures_util::future::join_all(burst).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let ramping = answers
        .iter()
        .filter(|r| r.status() == 503 && r.headers()["x-wagate-breaker"] == "ramping")
        .count();
    assert_eq!((ok, ramping), (1, 9), "exactly one probe");
    assert_eq!(
        sim.sim.counts(n).messages,
        sends_before + 1,
        "one send reached Meta"
    );
    sim.sim.set_latency(Some(n), Duration::ZERO);

    // The stages: a steady 50 sends per second, never retried, until the
    // breaker closes; what reaches the simulator follows each stage's rate.
    let mut stage_since: Vec<(u64, u64)> = Vec::new(); // (stage, first seen ms)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let closed_at = loop {
        pace.tick().await;
        assert!(Instant::now() < deadline, "the ramp ends");
        let view = breaker(&gateway, n).await;
        let now_ms = wagate::engine::now().0;
        match view {
            None => break now_ms,
            Some(v) => {
                if let Some(stage) = v["ramp_stage"].as_u64()
                    && stage_since.last().is_none_or(|(s, _)| *s != stage)
                {
                    stage_since.push((stage, now_ms));
                }
            }
        }
        let _ = send(&gateway, n).await;
    };
    let stages: Vec<u64> = stage_since.iter().map(|(s, _)| *s).collect();
    assert_eq!(stages, [1, 2], "both rate stages, in order");
    let forwarded: Vec<u64> = sim
        .sim
        .log()
        .iter()
        .filter(|e| e.path.ends_with(&format!("{n}/messages")) && e.status == 200)
        .map(|e| e.at_ms)
        .filter(|at| *at >= stage_since[0].1.saturating_sub(200))
        .collect();
    let rates = [2usize, 5];
    for (i, (_, from)) in stage_since.iter().enumerate() {
        let to = stage_since.get(i + 1).map_or(closed_at, |(_, t)| *t);
        let in_stage: Vec<u64> = forwarded
            .iter()
            .copied()
            .filter(|t| *t >= *from && *t < to)
            .collect();
        // No second holds more than the stage's rate, one more allowed for
        // a window straddling the limiter's slots.
        for start in &in_stage {
            let window = in_stage
                .iter()
                .filter(|t| **t >= *start && **t < start + 1000)
                .count();
            assert!(
                window <= rates[i] + 1,
                "stage {}: {window} sends in a second",
                i + 1
            );
        }
        // And the rate is reached: at least rate - 1 in the stage's first
        // full second.
        let first = in_stage.iter().filter(|t| **t < from + 1000).count();
        assert!(
            first + 1 >= rates[i],
            "stage {}: only {first} sends in its first second",
            i + 1
        );
    }
    // Closed: sends flow at the client's pace again.
    for _ in 0..10 {
        assert_eq!(send(&gateway, n).await.status(), 200);
    }
    assert_eq!(
        metric(
            gateway.admin,
            r#"wagate_probe_outcomes_total{outcome="accepted"}"#
        )
        .await,
        1.0
    );
    assert!(
        metric(
            gateway.admin,
            r#"wagate_health_polls_total{result="ok",state="blocked"}"#
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            gateway.admin,
            r#"wagate_health_polls_total{result="ok",state="available"}"#
        )
        .await
            >= 2.0
    );
    assert!(metric(gateway.admin, "wagate_breaker_open_seconds_count").await >= 1.0);
    gateway.stop().await;
}

#[tokio::test]
async fn a_lost_probe_waits_again_and_a_lock_during_the_probe_trips_longer() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        fast(c);
        c.upstream.timeout = Duration::from_millis(300);
    })
    .await;
    let n = "300000000000002";
    lock(&gateway, &sim, n).await;
    let first = breaker(&gateway, n).await.unwrap();
    let first_wait = first["min_open_until_unix_ms"].as_u64().unwrap()
        - first["since_unix_ms"].as_u64().unwrap();

    // The probe's answer never comes (past upstream.timeout): lost, back
    // to waiting for health, no trip counted.
    sim.sim.set_latency(Some(n), Duration::from_millis(1000));
    sim.sim.unlock(n);
    wait_state(&gateway, n, Some("ramping")).await;
    assert_eq!(send(&gateway, n).await.status(), 504);
    let view = wait_state(&gateway, n, Some("open")).await.unwrap();
    assert_eq!(view["trips"], 1, "a lost probe is not a trip");
    assert!(
        view["reason"].as_str().unwrap().contains("no answer"),
        "{view}"
    );
    assert_eq!(
        metric(
            gateway.admin,
            r#"wagate_probe_outcomes_total{outcome="lost"}"#
        )
        .await,
        1.0
    );

    // Health lets it ramp again; this probe meets a fresh lock: open again,
    // a second trip, waiting longer than the first time.
    sim.sim.set_latency(Some(n), Duration::ZERO);
    wait_state(&gateway, n, Some("ramping")).await;
    sim.sim.lock(n);
    assert_eq!(send(&gateway, n).await.status(), 403);
    let view = wait_state(&gateway, n, Some("open")).await.unwrap();
    assert_eq!(view["trips"], 2);
    assert_eq!(view["cause_code"], 131031);
    let second_wait =
        view["min_open_until_unix_ms"].as_u64().unwrap() - view["since_unix_ms"].as_u64().unwrap();
    assert_eq!(
        (first_wait, second_wait),
        (300, 600),
        "min_open doubles on the re-trip (jitter off)"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn poll_failures_neither_release_nor_trip_and_are_counted() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, fast).await;
    let n = "300000000000003";
    lock(&gateway, &sim, n).await;
    // Meta would say AVAILABLE, but every poll fails, one kind after the
    // other: nothing may move the breaker.
    sim.sim.unlock(n);
    let failures = [
        ("server_error", failing(1, 500, None)),
        ("rate_limited", failing(80007, 400, None)),
        ("auth", failing(190, 401, None)),
        ("invalid", failing(100, 200, Some("not json"))),
    ];
    for (label, injection) in failures {
        sim.sim.inject_health_error(n, Some(injection));
        let series = format!(r#"wagate_health_polls_total{{result="{label}",state="none"}}"#);
        let admin = gateway.admin;
        wait_until_async(WAIT, &format!("two {label} polls"), || {
            let series = series.clone();
            async move { metric(admin, &series).await >= 2.0 }
        })
        .await;
        let view = breaker(&gateway, n).await.unwrap();
        assert_eq!(
            (view["state"].as_str(), view["trips"].as_u64()),
            (Some("open"), Some(1)),
            "{label}"
        );
        assert!(
            view["health"]["last_result"]
                .as_str()
                .unwrap()
                .starts_with("failed"),
            "{view}"
        );
    }
    // A poll that hangs past health.timeout.
    sim.sim.inject_health_error(n, None);
    sim.sim.set_latency(Some(n), Duration::from_millis(2500));
    let admin = gateway.admin;
    wait_until_async(WAIT, "a poll times out", || async move {
        metric(
            admin,
            r#"wagate_health_polls_total{result="timeout",state="none"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(breaker(&gateway, n).await.unwrap()["state"], "open");
    // Once the answers come back, AVAILABLE releases it.
    sim.sim.set_latency(Some(n), Duration::ZERO);
    wait_state(&gateway, n, Some("ramping")).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_poll_that_cannot_reach_meta_neither_releases_nor_trips() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, fast).await;
    let n = "300000000000009";
    lock(&gateway, &sim, n).await;
    // Meta would now say AVAILABLE, but it cannot be reached at all.
    sim.sim.unlock(n);
    sim.shutdown().await.unwrap();
    let admin = gateway.admin;
    wait_until_async(WAIT, "two polls fail on the network", || async move {
        metric(
            admin,
            r#"wagate_health_polls_total{result="network",state="none"}"#,
        )
        .await
            >= 2.0
    })
    .await;
    let view = breaker(&gateway, n).await.unwrap();
    assert_eq!(
        (view["state"].as_str(), view["trips"].as_u64()),
        (Some("open"), Some(1))
    );
    assert!(
        view["health"]["last_result"]
            .as_str()
            .unwrap()
            .contains("network"),
        "{view}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn held_numbers_are_never_released_and_no_token_says_why() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        fast(c);
        c.admin.token = Secret::new(ADMIN_TOKEN);
    })
    .await;
    // Held by an operator: health AVAILABLE does nothing.
    let held = "300000000000004";
    assert_eq!(operate(&gateway, held, "trip", "maintenance").await, 200);
    // Tripped by a failed-status webhook's code before any send of its
    // own: no token was ever seen for it.
    let untaught = "300000000000005";
    sim.sim.lock(untaught);
    let response = http()
        .post(format!("{}/v24.0/{untaught}/messages", gateway.url()))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    sim.sim.unlock(untaught);
    let view = wait_view(
        &gateway,
        untaught,
        "the admin view says there is no token",
        |v| {
            v.and_then(|v| v["health"]["problem"].as_str())
                .is_some_and(|p| p.contains("no access token"))
        },
    )
    .await;
    assert_eq!(view.unwrap()["state"], "open");
    let admin = gateway.admin;
    wait_until_async(WAIT, "no_token is counted", || async move {
        metric(
            admin,
            r#"wagate_health_polls_total{result="no_token",state="none"}"#,
        )
        .await
            >= 2.0
    })
    .await;
    assert_eq!(
        sim.sim.counts(untaught).health,
        0,
        "never polled without a token"
    );
    assert_eq!(
        sim.sim.counts(held).health,
        0,
        "a held number is never polled"
    );
    assert_eq!(breaker(&gateway, held).await.unwrap()["state"], "held");
    // An operator's release starts its ramp.
    assert_eq!(operate(&gateway, held, "release", "done").await, 200);
    wait_state(&gateway, held, Some("ramping")).await;
    gateway.stop().await;
}

#[tokio::test]
async fn limited_releases_only_when_configured() {
    let sim = sim().await;
    let strict = InProcess::start(sim.addr, fast).await;
    let lenient = InProcess::start(sim.addr, |c| {
        fast(c);
        c.health.release_on_limited = true;
    })
    .await;
    let (a, b) = ("300000000000006", "300000000000007");
    lock(&strict, &sim, a).await;
    lock(&lenient, &sim, b).await;
    for n in [a, b] {
        sim.sim.unlock(n);
        sim.sim.set_health(n, Health::Limited);
    }
    wait_state(&lenient, b, Some("ramping")).await;
    let admin = strict.admin;
    wait_until_async(
        WAIT,
        "the strict gateway polled LIMITED twice",
        || async move {
            metric(
                admin,
                r#"wagate_health_polls_total{result="ok",state="limited"}"#,
            )
            .await
                >= 2.0
        },
    )
    .await;
    let view = breaker(&strict, a).await.unwrap();
    assert_eq!(view["state"], "open");
    assert!(
        view["health"]["last_result"]
            .as_str()
            .unwrap()
            .contains("release_on_limited"),
        "{view}"
    );
    strict.stop().await;
    lenient.stop().await;
}

/// The Authorization of every health poll the simulator received for
/// `number`, in order.
fn poll_tokens(sim: &wagate::sim::SimHandle, number: &str) -> Vec<String> {
    sim.sim
        .log()
        .iter()
        .filter(|e| e.path.ends_with(number) && e.query.contains("health_status"))
        .map(|e| e.header("authorization").unwrap_or_default().to_owned())
        .collect()
}

async fn state_at(admin: std::net::SocketAddr, number: &str) -> Option<String> {
    breaker_at(admin, number)
        .await
        .map(|v| v["state"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn two_replicas_poll_one_at_a_time_hand_over_on_a_kill_and_share_the_ramp() {
    let redis = support::redis::RedisServer::start();
    let sim = sim().await;
    let base = sim.base_url();
    let url = redis.url();
    let replica = |token: &'static str| {
        let env = [
            ("WAGATE_UPSTREAM__BASE_URL", base.as_str()),
            ("WAGATE_STORE__REDIS_URL", url.as_str()),
            ("WAGATE_HEALTH__ACCESS_TOKEN", token),
            ("WAGATE_BREAKER__MIN_OPEN", "300ms"),
            ("WAGATE_BREAKER__JITTER", "0"),
            ("WAGATE_BREAKER__RAMP_STAGE", "10s"),
            ("WAGATE_HEALTH__INTERVAL", "100ms"),
            ("WAGATE_HEALTH__MAX_INTERVAL", "200ms"),
            ("WAGATE_HEALTH__LEASE_TTL", "1s"),
            ("WAGATE_HEALTH__WABA_BUDGET_PER_HOUR", "3600000"),
        ];
        support::gateway::Process::spawn(&env)
    };
    let mut a = replica("token-a");
    let mut b = replica("token-b");
    let n = "300000000000008";
    sim.sim.lock(n);
    assert_eq!(send_to(&a.url(), n).await.status(), 403);
    for admin in [a.admin, b.admin] {
        wait_until_async(WAIT, "both replicas see the trip", || async move {
            state_at(admin, n).await.as_deref() == Some("open")
        })
        .await;
    }
    // Only one replica polls: every poll carries the same token.
    support::wait_until(WAIT, "six polls", || poll_tokens(&sim, n).len() >= 6).await;
    let tokens = poll_tokens(&sim, n);
    let holder = tokens[0].clone();
    assert!(
        tokens.iter().all(|t| *t == holder),
        "one poller at a time: {tokens:?}"
    );
    let (dead, survivor, other) = if holder == "Bearer token-a" {
        (&mut a, b, "Bearer token-b")
    } else {
        (&mut b, a, "Bearer token-a")
    };
    let polled = tokens.len();
    dead.kill();
    support::wait_until(WAIT, "the other replica takes the lease over", || {
        poll_tokens(&sim, n)[polled..].iter().any(|t| t == other)
    })
    .await;
    let after: Vec<String> = poll_tokens(&sim, n)[polled..].to_vec();
    let first_other = after.iter().position(|t| t == other).unwrap();
    assert!(after[first_other..].iter().all(|t| t == other), "{after:?}");

    // A third replica joins; the ramp's first stage (1 send per second)
    // holds across both.
    let c = replica("token-c");
    sim.sim.unlock(n);
    let admin = survivor.admin;
    wait_until_async(WAIT, "ramping", || async move {
        state_at(admin, n).await.as_deref() == Some("ramping")
    })
    .await;
    let urls = [survivor.url(), c.url()];
    let probe = send_to(&urls[0], n).await;
    assert_eq!(probe.status(), 200, "the probe");
    let admin = c.admin;
    wait_until_async(WAIT, "stage 1 on the joined replica", || async move {
        breaker_at(admin, n)
            .await
            .is_some_and(|v| v["ramp_stage"] == 1)
    })
    .await;
    let from = wagate::engine::now().0;
    let mut answered = [0usize; 2];
    let mut pace = tokio::time::interval(Duration::from_millis(25));
    for _ in 0..120 {
        pace.tick().await;
        // Either replica at random, so neither is always the first to ask
        // after a slot frees.
        let which = usize::from(rand::random::<bool>());
        if send_to(&urls[which], n).await.status() == 200 {
            answered[which] += 1;
        }
    }
    let to = wagate::engine::now().0;
    let forwarded: Vec<u64> = sim
        .sim
        .log()
        .iter()
        .filter(|e| e.path.ends_with(&format!("{n}/messages")) && e.status == 200)
        .map(|e| e.at_ms)
        .filter(|at| (from..to).contains(at))
        .collect();
    for start in &forwarded {
        let window = forwarded
            .iter()
            .filter(|t| **t >= *start && **t < start + 1000)
            .count();
        assert!(
            window <= 2,
            "{window} sends in a second at stage 1 (1/s) across replicas"
        );
    }
    let seconds = (to - from) as f64 / 1000.0;
    assert!(
        forwarded.len() as f64 >= seconds - 1.0,
        "the rate is reached: {} sends in {seconds:.1}s",
        forwarded.len()
    );
    assert!(
        answered.iter().sum::<usize>() == forwarded.len(),
        "every admitted send reached the simulator: {answered:?}"
    );
    // Each replica admits through the shared limiter when it asks alone.
    for url in &urls {
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        let mut admitted = false;
        for _ in 0..40 {
            pace.tick().await;
            if send_to(url, n).await.status() == 200 {
                admitted = true;
                break;
            }
        }
        assert!(admitted, "{url} admits a send within two seconds at 1/s");
    }
    drop(c);
    drop(survivor);
}
