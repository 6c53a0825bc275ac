//! Fault injection: a real `redis-server` killed with SIGKILL under load,
//! then restarted, in front of the gateway (in process) and the simulator.
//!
//! The gateway is fail-static: while Redis is down it keeps serving from its
//! snapshot, applies new trips locally, says `degraded` on `/readyz` (still
//! 200), and writes the held-back trips once Redis is back.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::gateway::{InProcess, http, metric};
use support::redis::RedisServer;
use support::wait_until_async;
use wagate::store::{BreakerStore, RedisOptions, RedisStore};

/// Locked before the outage.
const A: &str = "200000000000001";
/// Locked during the outage.
const B: &str = "200000000000002";
/// Concurrent senders during the outage, and sends each.
const TASKS: usize = 8;
const SENDS_PER_TASK: usize = 250;
/// Closed numbers the load spreads over.
const CLOSED_NUMBERS: usize = 16;
/// Every this many sends, a task also sends to A, which must stay refused.
const LOCKED_EVERY: usize = 25;
const DEADLINE: Duration = Duration::from_secs(10);

const STORED_TRIPS: &str =
    r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="response",to="open"}"#;

fn closed_number(i: usize) -> String {
    format!("2000000001{:05}", i % CLOSED_NUMBERS)
}

async fn send(client: &reqwest::Client, base: &str, number: &str) -> reqwest::Response {
    client
        .post(format!("{base}/v24.0/{number}/messages"))
        .bearer_auth("integration-token")
        .json(&json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text", "text": {"body": "hi"}}))
        .send()
        .await
        .unwrap()
}

/// `Ok` when `response` is the gateway's refusal quoting 131031, else
/// what it was instead.
async fn refusal(response: reqwest::Response) -> Result<(), String> {
    let status = response.status();
    let breaker = response
        .headers()
        .get("x-wagate-breaker")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status == StatusCode::SERVICE_UNAVAILABLE
        && breaker.as_deref() == Some("open")
        && body["error"]["code"] == 131031
    {
        Ok(())
    } else {
        Err(format!("{status} x-wagate-breaker={breaker:?} {body}"))
    }
}

async fn assert_refused(response: reqwest::Response, what: &str) {
    if let Err(got) = refusal(response).await {
        panic!("{what}: expected a 503 refusal quoting 131031, got {got}");
    }
}

/// Meta's own lock error, passed through.
async fn assert_locked_by_meta(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 131031, "{body}");
    assert_eq!(body["error"]["type"], "OAuthException", "{body}");
}

async fn readyz(admin: SocketAddr) -> (StatusCode, String) {
    let response = http()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["status"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn wait_for_readiness(admin: SocketAddr, want: &str) {
    wait_until_async(DEADLINE, &format!("/readyz says {want}"), || async {
        readyz(admin).await == (StatusCode::OK, want.to_owned())
    })
    .await;
}

/// What the load saw: sends per closed number and every unexpected answer.
#[derive(Default)]
struct Load {
    closed: Vec<(String, u64)>,
    locked: usize,
    failures: Vec<String>,
}

/// `TASKS` concurrent senders, each `SENDS_PER_TASK` sends to closed
/// numbers, with a send to A every `LOCKED_EVERY`.
async fn outage_load(base: &str) -> Load {
    let client = http();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, base) = (client.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut locked = 0;
                for i in 0..SENDS_PER_TASK {
                    let number = closed_number(task * SENDS_PER_TASK + i);
                    let status = send(&client, &base, &number).await.status();
                    if status != StatusCode::OK {
                        failures.push(format!("closed {number}: {status}"));
                    }
                    if i % LOCKED_EVERY == 0 {
                        locked += 1;
                        if let Err(got) = refusal(send(&client, &base, A).await).await {
                            failures.push(format!("locked {A}: {got}"));
                        }
                    }
                }
                (locked, failures)
            })
        })
        .collect();
    let mut load = Load {
        closed: (0..CLOSED_NUMBERS).map(|i| (closed_number(i), 0)).collect(),
        ..Load::default()
    };
    for i in 0..TASKS * SENDS_PER_TASK {
        load.closed[i % CLOSED_NUMBERS].1 += 1;
    }
    for task in tasks {
        let (locked, failures) = task.await.unwrap();
        load.locked += locked;
        load.failures.extend(failures);
    }
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_fails_static_and_recovers() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let sim = wagate::sim::spawn(wagate::sim::SimOptions::default())
        .await
        .unwrap();
    let gateway = InProcess::start(sim.addr, |c| {
        c.store.redis_url = wagate::config::RedisUrl::new(url.clone());
    })
    .await;
    let (base, admin) = (gateway.url(), gateway.admin);
    let client = http();
    // The test's own view of the store, on its own connections.
    let store = RedisStore::connect(std::slice::from_ref(&url), RedisOptions::default())
        .await
        .unwrap();
    wait_for_readiness(admin, "ready").await;

    // 1. A trips and the trip is stored.
    sim.sim.lock(A);
    assert_locked_by_meta(send(&client, &base, A).await).await;
    assert_refused(send(&client, &base, A).await, "A after its lock").await;
    wait_until_async(DEADLINE, "A's trip is stored", || async {
        metric(admin, STORED_TRIPS).await == 1.0
    })
    .await;
    let stored = store.get(A, A).await.unwrap().expect("A's record in redis");
    assert!(stored.active, "{stored:?}");

    // 2. Redis dies; the gateway says so but stays in the load balancer.
    redis.kill();
    let outage = Instant::now();
    wait_for_readiness(admin, "degraded").await;
    let noticed = outage.elapsed();
    assert_eq!(metric(admin, "wagate_store_degraded").await, 1.0);

    // 3. Load during the outage: closed numbers all pass, A stays refused.
    let load_started = Instant::now();
    let load = outage_load(&base).await;
    let load_took = load_started.elapsed();
    assert!(
        load.failures.is_empty(),
        "{} of {} sends went wrong while redis was down, e.g. {:?}",
        load.failures.len(),
        TASKS * SENDS_PER_TASK + load.locked,
        &load.failures[..load.failures.len().min(10)]
    );
    for (number, sent) in &load.closed {
        assert_eq!(
            sim.sim.counts(number).messages,
            *sent,
            "every send for {number} reached Meta"
        );
    }
    assert_eq!(
        sim.sim.counts(A).messages,
        1,
        "only A's first send reached Meta"
    );

    // 4. B locks while Redis is down: tripped on this replica alone.
    sim.sim.lock(B);
    assert_locked_by_meta(send(&client, &base, B).await).await;
    assert_refused(send(&client, &base, B).await, "B during the outage").await;
    assert_eq!(sim.sim.counts(B).messages, 1);
    assert_eq!(
        metric(admin, STORED_TRIPS).await,
        1.0,
        "B's trip cannot be stored yet"
    );
    // The write of B's trip fails in the background, within the command
    // timeout: wait for it to be counted rather than race it.
    wait_until_async(DEADLINE, "B's failed write is counted", || async {
        metric(
            admin,
            r#"wagate_store_errors_total{operation="compare_and_set"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(readyz(admin).await, (StatusCode::OK, "degraded".to_owned()));

    // 5. Redis returns, empty (no persistence): the held-back trip of B is
    // written, and the gateway is ready again.
    tokio::task::block_in_place(|| redis.restart());
    let outage_lasted = outage.elapsed();
    let restarted = Instant::now();
    wait_until_async(DEADLINE, "B's trip is written to redis", || async {
        matches!(store.get(B, B).await, Ok(Some(record)) if record.active)
    })
    .await;
    let b_stored_after = restarted.elapsed();
    // A was stored before the outage; the restarted Redis lost it, and the
    // gateway writes it back from its snapshot.
    wait_until_async(DEADLINE, "A's breaker is written back to redis", || async {
        matches!(store.get(A, A).await, Ok(Some(record)) if record.active)
    })
    .await;
    wait_for_readiness(admin, "ready").await;
    assert_eq!(metric(admin, "wagate_store_degraded").await, 0.0);
    assert_eq!(metric(admin, STORED_TRIPS).await, 2.0);

    assert_refused(send(&client, &base, A).await, "A after the outage").await;
    assert_refused(send(&client, &base, B).await, "B after the outage").await;
    for i in 0..CLOSED_NUMBERS {
        let number = closed_number(i);
        assert_eq!(send(&client, &base, &number).await.status(), StatusCode::OK);
    }
    assert_eq!(sim.sim.counts(A).messages, 1, "A never reached Meta again");
    assert_eq!(sim.sim.counts(B).messages, 1, "B never reached Meta again");

    println!(
        "redis outage: noticed after {noticed:?}; {} sends ({} closed, all 200; {} to A, all refused) in {load_took:?}; \
         outage lasted {outage_lasted:?}; B's held-back trip stored {b_stored_after:?} after the restart",
        TASKS * SENDS_PER_TASK + load.locked,
        TASKS * SENDS_PER_TASK,
        load.locked,
    );
}
