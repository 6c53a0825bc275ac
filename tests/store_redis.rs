//! The Redis store against real `redis-server` processes: racing replicas,
//! change events, expiry, audit capping, an outage and recovery, and a
//! 3-master Cluster. The contract it shares with the embedded store is in
//! `store_contract.rs`.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::redis::{RedisCluster, RedisServer, commandstats};
use support::store_contract::{self, apply, next_change, record, write};
use support::{unique_name, wait_until, wait_until_async};
use wagate::store::{
    BreakerStore, CasOutcome, RedisOptions, RedisStore, StoreError, StoreEvent, StoredRecord,
};

const DEADLINE: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: prefix.to_owned(),
        command_timeout: COMMAND_TIMEOUT,
        ..RedisOptions::default()
    }
}

async fn connect(urls: &[String], options: RedisOptions) -> RedisStore {
    RedisStore::connect(urls, options).await.expect("connect")
}

/// Races `a` and `b` on `rounds` fresh ids: a creation (expected version 0)
/// and then an update (expected version 1). Exactly one wins each race and
/// the loser is shown the winner's record.
async fn assert_races_have_one_winner(a: &RedisStore, b: &RedisStore, numbers: &[String]) {
    for (round, number) in numbers.iter().enumerate() {
        let id = format!("{number}:race:{round}");
        for expected in [0, 1] {
            let ra = record(
                number,
                &id,
                expected + 1,
                true,
                &format!("{{\"by\":\"a{expected}\"}}"),
            );
            let rb = record(
                number,
                &id,
                expected + 1,
                true,
                &format!("{{\"by\":\"b{expected}\"}}"),
            );
            let (oa, ob) = tokio::join!(
                a.compare_and_set(write(expected, &ra)),
                b.compare_and_set(write(expected, &rb))
            );
            let (oa, ob) = (oa.expect("a"), ob.expect("b"));
            match (&oa, &ob) {
                (CasOutcome::Applied, CasOutcome::Conflict { current }) => {
                    assert_eq!(current.as_ref(), Some(&ra));
                }
                (CasOutcome::Conflict { current }, CasOutcome::Applied) => {
                    assert_eq!(current.as_ref(), Some(&rb));
                }
                _ => panic!("round {round}, expected {expected}: {oa:?} / {ob:?}"),
            }
        }
    }
}

fn numbers(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("30000000{i:07}")).collect()
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut server.connection())
        .expect("PTTL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_agree_on_one_winner() {
    let server = RedisServer::start();
    let prefix = unique_name("race");
    let a = connect(&[server.url()], options(&prefix)).await;
    let b = connect(&[server.url()], options(&prefix)).await;
    assert_races_have_one_winner(&a, &b, &numbers(50)).await;
}

#[tokio::test]
async fn a_change_written_by_one_replica_reaches_another() {
    let server = RedisServer::start();
    let prefix = unique_name("events");
    let a = connect(&[server.url()], options(&prefix)).await;
    let b = connect(&[server.url()], options(&prefix)).await;
    let mut events = b.subscribe();
    let r = record("1001", "1001", 1, true, "{\"state\":\"open\"}");
    apply(&a, write(0, &r)).await;
    assert_eq!(next_change(&mut events, DEADLINE).await, r);

    // Another prefix is another deployment: its changes stay apart.
    let other = connect(&[server.url()], options(&unique_name("other"))).await;
    apply(&other, write(0, &record("1002", "1002", 1, true, "{}"))).await;
    let r2 = record("1001", "1001", 2, false, "{}");
    apply(&a, write(1, &r2)).await;
    assert_eq!(next_change(&mut events, DEADLINE).await, r2);
}

#[tokio::test]
async fn closed_records_expire_and_active_ones_do_not() {
    let server = RedisServer::start();
    let prefix = unique_name("ttl");
    let ttl = Duration::from_secs(3600);
    let store = connect(
        &[server.url()],
        RedisOptions {
            closed_ttl: ttl,
            ..options(&prefix)
        },
    )
    .await;
    let key = format!("{prefix}:{{1001}}:rec:1001");

    apply(&store, write(0, &record("1001", "1001", 1, true, "{}"))).await;
    assert_eq!(pttl(&server, &key), -1, "active records never expire");
    apply(&store, write(1, &record("1001", "1001", 2, false, "{}"))).await;
    let left = pttl(&server, &key);
    assert!(left > 0 && left <= 3_600_000, "closed record PTTL {left}");
    apply(&store, write(2, &record("1001", "1001", 3, true, "{}"))).await;
    assert_eq!(pttl(&server, &key), -1, "re-opened record lost its expiry");
}

#[tokio::test]
async fn the_audit_stream_is_capped() {
    let server = RedisServer::start();
    let prefix = unique_name("audit");
    let store = connect(
        &[server.url()],
        RedisOptions {
            audit_max_len: 10,
            ..options(&prefix)
        },
    )
    .await;
    let writes = 300;
    for version in 1..=writes {
        apply(
            &store,
            write(version - 1, &record("1001", "1001", version, true, "{}")),
        )
        .await;
    }
    let key = format!("{prefix}:{{1001}}:audit");
    let len: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query(&mut server.connection())
        .expect("XLEN");
    // MAXLEN ~ trims whole stream nodes (100 entries by default).
    assert!((10..=110).contains(&len), "audit stream length {len}");
    let newest = store.audit("1001", 3).await.expect("audit");
    let expected: Vec<String> = (writes - 2..=writes)
        .rev()
        .map(|v| write(v - 1, &record("1001", "1001", v, true, "{}")).audit)
        .collect();
    assert_eq!(newest, expected);
}

#[tokio::test]
async fn an_outage_fails_fast_and_recovery_resyncs() {
    let mut server = RedisServer::start();
    let prefix = unique_name("outage");
    let a = connect(&[server.url()], options(&prefix)).await;
    let b = connect(&[server.url()], options(&prefix)).await;
    let mut events = b.subscribe();
    apply(&a, write(0, &record("1001", "1001", 1, true, "{}"))).await;
    assert!(a.is_healthy() && b.is_healthy());

    server.kill();
    // Each call is bounded by the command timeout, not by TCP or retries.
    let bound = COMMAND_TIMEOUT + Duration::from_millis(200);
    let started = Instant::now();
    let err = a
        .compare_and_set(write(1, &record("1001", "1001", 2, true, "{}")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    let started = Instant::now();
    assert!(matches!(
        a.list_active().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    let started = Instant::now();
    assert!(matches!(
        a.get("1001", "1001").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    let started = Instant::now();
    assert!(matches!(
        a.audit("1001", 5).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    assert!(!a.is_healthy());
    wait_until(DEADLINE, "b notices the outage", || !b.is_healthy()).await;
    assert!(
        RedisStore::connect(&[server.url()], options(&prefix))
            .await
            .is_err()
    );

    server.restart();
    let resync = tokio::time::timeout(DEADLINE, async {
        loop {
            if let StoreEvent::Resync = events.recv().await.expect("events") {
                return;
            }
        }
    });
    resync.await.expect("b resyncs after the restart");
    // The restarted server is empty (no persistence): version 0 again.
    let fresh = record("1001", "1001", 1, true, "{\"after\":true}");
    wait_until_async(DEADLINE, "writes succeed again", || async {
        a.compare_and_set(write(0, &fresh)).await.is_ok()
    })
    .await;
    assert_eq!(b.get("1001", "1001").await.expect("get"), Some(fresh));
    wait_until(DEADLINE, "both stores are healthy", || {
        a.is_healthy() && b.is_healthy()
    })
    .await;
}

/// The ids of the server's pub/sub clients, from `CLIENT LIST TYPE pubsub`.
fn pubsub_client_ids(server: &RedisServer) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.connection())
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|line| line.split(' ').next()?.strip_prefix("id="))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn dropping_the_store_ends_its_subscription() {
    let server = RedisServer::start();
    let store = connect(&[server.url()], options(&unique_name("drop"))).await;
    assert_eq!(pubsub_client_ids(&server).len(), 1);
    drop(store);
    wait_until(DEADLINE, "the subscription connection closes", || {
        pubsub_client_ids(&server).is_empty()
    })
    .await;
}

#[tokio::test]
async fn keepalive_pings_keep_the_subscription() {
    let server = RedisServer::start();
    let prefix = unique_name("keepalive");
    let keepalive = RedisOptions {
        keepalive: Duration::from_millis(20),
        ..options(&prefix)
    };
    let store = connect(&[server.url()], keepalive).await;
    let mut events = store.subscribe();
    let before = pubsub_client_ids(&server);
    let pings = |server: &RedisServer| {
        commandstats(&server.url())
            .get("ping")
            .copied()
            .unwrap_or(0)
    };
    let start = pings(&server);
    wait_until(DEADLINE, "several keepalive rounds", || {
        pings(&server) >= start + 10
    })
    .await;
    assert_eq!(
        pubsub_client_ids(&server),
        before,
        "the link was never replaced"
    );
    assert!(store.is_healthy());
    let r = record("1001", "1001", 1, true, "{}");
    apply(&store, write(0, &r)).await;
    assert_eq!(events.recv().await.expect("event"), StoreEvent::Changed(r));
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let bad = ["", "wa{gate", "wa*", "wa gate"];
    for prefix in bad {
        let err = RedisStore::connect(&["redis://127.0.0.1:1/".to_owned()], options(prefix))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{prefix:?}: {err:?}");
    }
    let err = RedisStore::connect(&[], options("wagate"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let err = RedisStore::connect(&["nope://x".to_owned()], options("wagate"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("#1"), "{err}");
}

/// Numbers whose keys land on every master of `cluster`, `per_master` each.
fn numbers_on_every_master(cluster: &RedisCluster, per_master: usize) -> Vec<String> {
    let mut counts = vec![0; cluster.nodes().len()];
    let mut picked = Vec::new();
    for candidate in numbers(10_000) {
        let node = cluster.node_of(&format!("{{{candidate}}}"));
        if counts[node] < per_master {
            counts[node] += 1;
            picked.push(candidate);
        }
        if counts.iter().all(|&c| c == per_master) {
            return picked;
        }
    }
    panic!("no numbers on every master: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    let prefix = unique_name("cluster");
    let urls = cluster.urls();
    // A subscribes through the first seed, B through the second: a change
    // must cross the cluster bus to reach both.
    let a = connect(&urls, options(&prefix)).await;
    let mut rotated = urls.clone();
    rotated.rotate_left(1);
    let b = connect(&rotated, options(&prefix)).await;
    store_contract::check(&a, "200000000000001").await;

    let spread = numbers_on_every_master(&cluster, 2);
    // Leases are hash-tagged per number: one per master, one holder each.
    for number in &spread {
        let ttl = Duration::from_secs(30);
        assert!(
            a.take_lease(number, "health", "a", ttl)
                .await
                .expect("lease")
        );
        assert!(
            !b.take_lease(number, "health", "b", ttl)
                .await
                .expect("lease")
        );
    }
    let mut events_a = a.subscribe();
    let mut events_b = b.subscribe();
    let mut written = Vec::new();
    for number in &spread {
        let r = record(number, number, 1, true, "{\"state\":\"open\"}");
        apply(&a, write(0, &r)).await;
        written.push(r);
    }
    for events in [&mut events_a, &mut events_b] {
        let mut seen = HashSet::new();
        while seen.len() < written.len() {
            let r = next_change(events, DEADLINE).await;
            // Late events of the contract check above may still arrive.
            if spread.contains(&r.number) {
                assert!(written.contains(&r), "{r:?}");
                seen.insert(r.number);
            }
        }
    }

    let active: Vec<StoredRecord> = b.list_active().await.expect("list_active");
    for r in &written {
        assert!(active.contains(r), "{r:?} missing from list_active");
    }
    let masters: HashSet<usize> = written
        .iter()
        .map(|r| cluster.node_of(&format!("{{{}}}", r.number)))
        .collect();
    assert_eq!(masters.len(), 3, "records on every master");

    let number = &spread[0];
    let record_key = format!("{prefix}:{{{number}}}:rec:{number}");
    let audit_key = format!("{prefix}:{{{number}}}:audit");
    assert_eq!(cluster.keyslot(&record_key), cluster.keyslot(&audit_key));
    let owner = &cluster.nodes()[cluster.node_of(&record_key)];
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&record_key)
        .arg(&audit_key)
        .query(&mut owner.connection())
        .expect("EXISTS");
    assert_eq!(exists, 2, "both keys live on the slot owner");

    assert_races_have_one_winner(&a, &b, &spread).await;
}

/// A replica started while its Redis is down has no snapshot to serve from,
/// and would forward sends for numbers the others know are locked: it exits
/// with the reason instead, for its supervisor to restart it.
#[tokio::test]
async fn a_gateway_started_while_redis_is_down_exits_saying_so() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["serve", "--config", "/dev/null"])
        .env("WAGATE_STORE__REDIS_URL", &url)
        .env("WAGATE_LISTEN__PROXY", "127.0.0.1:0")
        .env("WAGATE_LISTEN__ADMIN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), gateway.wait_with_output())
        .await
        .expect("the gateway exits without its store")
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("breaker store unavailable"), "{log}");
}
