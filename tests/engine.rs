//! The breaker engine (`wagate::engine::Breakers`) on real stores: replicas
//! racing the same trip on a standalone Redis and on a 3-master Cluster, a
//! cool-down ending by itself on the embedded store, an operator's reset
//! reaching another replica, readiness after an outage, open breakers
//! written back to a Redis that lost them, and replicas changing one WABA's
//! record at once.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use prometheus::Registry;
use serde_json::Value;
use support::redis::{RedisCluster, RedisServer};
use support::{unique_name, wait_until, wait_until_async};
use wagate::breaker::{
    Action, Breaker, CodeMatch, OperatorAction, Release, Rule, Rules, Scope, Settings, State,
};
use wagate::engine::{Breakers, Check, OperatorOutcome, Timing};
use wagate::graph::GraphError;
use wagate::metrics::BreakerMetrics;
use wagate::store::{BreakerStore, EmbeddedStore, RedisOptions, RedisStore, StoredRecord};

const DEADLINE: Duration = Duration::from_secs(10);
/// Numbers raced per store.
const RACED: usize = 50;

/// One replica: an engine and the registry its metrics live in.
struct Replica {
    engine: Breakers,
    registry: Registry,
}

async fn replica(store: Arc<dyn BreakerStore>, rules: Rules, timing: Timing) -> Replica {
    let registry = Registry::new();
    let metrics = BreakerMetrics::new(&registry).unwrap();
    let engine = Breakers::start(store, rules, Settings::default(), metrics, timing).await;
    Replica { engine, registry }
}

async fn redis_replica(urls: &[String], options: RedisOptions) -> Replica {
    let store = RedisStore::connect(urls, options).await.unwrap();
    replica(Arc::new(store), Rules::defaults(), Timing::default()).await
}

fn redis_options(prefix: &str) -> RedisOptions {
    RedisOptions {
        key_prefix: prefix.to_owned(),
        command_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    }
}

/// A Graph error from a fixture, with its own `fbtrace_id` so a record
/// shows which replica wrote it.
fn graph_error(fixture: &str, status: u16, fbtrace_id: &str) -> GraphError {
    let body = std::fs::read(format!("tests/fixtures/{fixture}")).unwrap();
    let mut error = GraphError::parse(status, &body).expect("a Graph error fixture");
    error.fbtrace_id = Some(fbtrace_id.to_owned());
    error
}

fn lock_error(fbtrace_id: &str) -> GraphError {
    graph_error("error_131031.json", 403, fbtrace_id)
}

/// The sum of a counter family's samples whose labels include `labels`.
fn counter(registry: &Registry, family: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            labels.iter().all(|(name, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

fn trips_stored(replica: &Replica) -> u64 {
    counter(
        &replica.registry,
        "wagate_breaker_transitions_total",
        &[("from", "closed"), ("to", "open")],
    ) as u64
}

/// The breaker a stored record holds, as the engine reads it.
fn breaker_of(record: &StoredRecord) -> Breaker {
    let mut breaker: Breaker = serde_json::from_str(&record.body).unwrap();
    breaker.version = record.version;
    breaker
}

fn numbers(base: u64, count: usize) -> Vec<String> {
    (0..count as u64).map(|i| (base + i).to_string()).collect()
}

/// Both replicas observe the same lock for every number at the same moment
/// (two threads released together by a barrier per number). Each number
/// must end with one stored `closed → open` transition, version 1, and the
/// same record in both snapshots and the store.
async fn race_trips(a: &Replica, b: &Replica, store: &dyn BreakerStore, numbers: &[String]) {
    let barrier = Arc::new(Barrier::new(2));
    let observers: Vec<_> = [(&a.engine, "replica-a"), (&b.engine, "replica-b")]
        .into_iter()
        .map(|(engine, name)| {
            let (engine, barrier, numbers) = (engine.clone(), barrier.clone(), numbers.to_vec());
            let error = lock_error(name);
            // `observe` is synchronous: plain threads race it for real.
            std::thread::spawn(move || {
                for number in &numbers {
                    barrier.wait();
                    engine.observe(number, &error, None);
                }
            })
        })
        .collect();
    for observer in observers {
        observer.join().unwrap();
    }

    // Applied locally before `observe` returned.
    for number in numbers {
        for replica in [a, b] {
            let check = replica.engine.check(number);
            assert!(matches!(check, Check::Refuse(_)), "{number}: {check:?}");
        }
    }
    wait_until_async(DEADLINE, "both replicas agree with the store", || async {
        for number in numbers {
            let Ok(Some(record)) = store.get(number, number).await else {
                return false;
            };
            let stored = Some(breaker_of(&record));
            if a.engine.get(number) != stored || b.engine.get(number) != stored {
                return false;
            }
        }
        true
    })
    .await;

    let (won_a, won_b) = (trips_stored(a), trips_stored(b));
    println!(
        "{} races: replica A stored {won_a} trips, replica B {won_b}",
        numbers.len()
    );
    assert_eq!(won_a + won_b, numbers.len() as u64);
    let all_transitions: f64 = [a, b]
        .iter()
        .map(|r| counter(&r.registry, "wagate_breaker_transitions_total", &[]))
        .sum();
    assert_eq!(
        all_transitions,
        numbers.len() as f64,
        "nothing but the trips"
    );
    for number in numbers {
        let record = store.get(number, number).await.unwrap().unwrap();
        assert_eq!((record.version, record.active), (1, true), "{record:?}");
        let breaker = breaker_of(&record);
        assert_eq!(breaker.state, State::Open);
        let audit = store.audit(number, 10).await.unwrap();
        assert_eq!(audit.len(), 1, "{number}: {audit:?}");
        let line: Value = serde_json::from_str(&audit[0]).unwrap();
        assert_eq!(
            (&line["from"], &line["to"]),
            (&"closed".into(), &"open".into())
        );
        assert_eq!(line["code"], 131031);
        assert_eq!(
            line["fbtrace_id"],
            breaker.cause.fbtrace_id.unwrap().as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_a_trip_store_it_once() {
    let server = RedisServer::start();
    let prefix = unique_name("engine-race");
    let urls = [server.url()];
    let a = redis_replica(&urls, redis_options(&prefix)).await;
    let b = redis_replica(&urls, redis_options(&prefix)).await;
    let store = RedisStore::connect(&urls, redis_options(&prefix))
        .await
        .unwrap();
    race_trips(&a, &b, &store, &numbers(200_000_000_001_000, RACED)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_a_trip_on_a_cluster_store_it_once() {
    let cluster = RedisCluster::start(3);
    let prefix = unique_name("engine-cluster");
    let urls = cluster.urls();
    let options = RedisOptions {
        cluster: true,
        ..redis_options(&prefix)
    };
    // Each replica subscribes through another seed: changes cross the bus.
    let a = redis_replica(&urls, options.clone()).await;
    let mut rotated = urls.clone();
    rotated.rotate_left(1);
    let b = redis_replica(&rotated, options.clone()).await;
    let store = RedisStore::connect(&urls, options).await.unwrap();
    let raced = numbers(200_000_000_002_000, RACED);
    let masters: HashSet<usize> = raced
        .iter()
        .map(|n| cluster.node_of(&format!("{{{n}}}")))
        .collect();
    assert_eq!(masters.len(), 3, "the raced numbers live on every master");
    race_trips(&a, &b, &store, &raced).await;
    assert_reset_reaches_the_other_replica(&a, &b, &store, &raced[0]).await;
}

/// An operator's reset on `a` closes the (open) breaker of `number` on `b`.
async fn assert_reset_reaches_the_other_replica(
    a: &Replica,
    b: &Replica,
    store: &dyn BreakerStore,
    number: &str,
) {
    let reset = OperatorAction::reset("appeal won");
    let outcome = a.engine.operator(number, reset).await.unwrap();
    let OperatorOutcome::Changed(record) = outcome else {
        panic!("reset of {number}: {outcome:?}");
    };
    assert_eq!((record.from, record.to), (State::Open, State::Closed));
    assert_eq!(a.engine.get(number), None);
    wait_until(DEADLINE, "the reset reaches replica B", || {
        b.engine.get(number).is_none()
    })
    .await;
    assert_eq!(b.engine.check(number), Check::Pass);
    let stored = store.get(number, number).await.unwrap().unwrap();
    assert!(!stored.active, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reset_reaches_every_replica() {
    let server = RedisServer::start();
    let prefix = unique_name("engine-reset");
    let urls = [server.url()];
    let a = redis_replica(&urls, redis_options(&prefix)).await;
    let b = redis_replica(&urls, redis_options(&prefix)).await;
    let store = RedisStore::connect(&urls, redis_options(&prefix))
        .await
        .unwrap();
    let number = "200000000003000";

    a.engine.observe(number, &lock_error("replica-a"), None);
    // B hears of the trip through the store, never by observing it itself.
    wait_until(DEADLINE, "replica B sees the trip", || {
        b.engine.get(number).is_some_and(|b| b.state == State::Open)
    })
    .await;
    assert!(matches!(b.engine.check(number), Check::Refuse(_)));
    assert_reset_reaches_the_other_replica(&a, &b, &store, number).await;
    let audit = store.audit(number, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
}

#[tokio::test]
async fn a_cool_down_ends_by_itself_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("breakers.db")).unwrap());
    let cooldown = Duration::from_secs(1);
    let rules = Rules::try_new(vec![
        Rule::new(CodeMatch::one(130429), Action::Cooldown, Scope::Number).with_cooldown(cooldown),
    ])
    .unwrap();
    let timing = Timing {
        tick_interval: Duration::from_millis(50),
        ..Timing::default()
    };
    let r = replica(store.clone(), rules, timing).await;
    let number = "200000000004000";

    let started = Instant::now();
    r.engine
        .observe(number, &graph_error("error_130429.json", 429, "t"), None);
    let open = r.engine.get(number).expect("cooling down");
    assert_eq!(open.state, State::Open);
    assert!(matches!(open.release, Release::At(_)), "{open:?}");
    assert!(matches!(r.engine.check(number), Check::Refuse(_)));
    wait_until(DEADLINE, "the cool-down ends", || {
        r.engine.get(number).is_none()
    })
    .await;
    let lasted = started.elapsed();
    // Wall clock and monotonic clock run together; `started` is read before
    // the cool-down's start, so it cannot have ended sooner than this.
    assert!(lasted >= cooldown, "closed after {lasted:?}");
    println!("a {cooldown:?} cool-down closed after {lasted:?}");
    assert_eq!(r.engine.check(number), Check::Pass);

    let stored = store.get(number, number).await.unwrap().expect("tombstone");
    assert!(!stored.active, "{stored:?}");
    assert_eq!(stored.version, 2);
    let closed = counter(
        &r.registry,
        "wagate_breaker_transitions_total",
        &[("from", "open"), ("to", "closed"), ("source", "clock")],
    );
    assert_eq!(closed, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_without_writes_ends_ready() {
    let mut server = RedisServer::start();
    let prefix = unique_name("engine-outage");
    let store = Arc::new(
        RedisStore::connect(&[server.url()], redis_options(&prefix))
            .await
            .unwrap(),
    );
    // Resyncs often, so one fails during the outage.
    let timing = Timing {
        resync_interval: Duration::from_millis(100),
        tick_interval: Duration::from_millis(50),
    };
    let r = replica(store.clone(), Rules::defaults(), timing).await;
    assert!(!r.engine.is_degraded());

    server.kill();
    wait_until(DEADLINE, "the engine is degraded", || {
        r.engine.is_degraded()
    })
    .await;
    let failed_resyncs = || {
        counter(
            &r.registry,
            "wagate_store_errors_total",
            &[("operation", "list_active")],
        )
    };
    wait_until(DEADLINE, "a resync fails", || failed_resyncs() >= 1.0).await;

    tokio::task::block_in_place(|| server.restart());
    wait_until(DEADLINE, "the store is healthy again", || {
        store.is_healthy()
    })
    .await;
    wait_until(DEADLINE, "the engine is ready again", || {
        !r.engine.is_degraded()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_restarted_redis_lost_are_written_back_but_closings_stand() {
    let mut server = RedisServer::start();
    let prefix = unique_name("engine-lost");
    let store = Arc::new(
        RedisStore::connect(&[server.url()], redis_options(&prefix))
            .await
            .unwrap(),
    );
    let timing = Timing {
        resync_interval: Duration::from_millis(100),
        tick_interval: Duration::from_millis(50),
    };
    let r = replica(store.clone(), Rules::defaults(), timing).await;
    let (kept, closed) = ("200000000005000", "200000000005001");
    r.engine.observe(kept, &lock_error("kept"), None);
    r.engine.observe(closed, &lock_error("closed"), None);
    wait_until(DEADLINE, "both trips are stored", || trips_stored(&r) == 2).await;

    // Another replica closed `closed`, and this one missed the change event:
    // the tombstone is written without a PUBLISH.
    let record = store.get(closed, closed).await.unwrap().unwrap();
    let mut body: Value = serde_json::from_str(&record.body).unwrap();
    body["state"] = "closed".into();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:{{{closed}}}:rec:{closed}"))
        .arg(&[("version", "2"), ("active", "0")])
        .arg("body")
        .arg(body.to_string())
        .query(&mut server.connection())
        .unwrap();
    wait_until(DEADLINE, "a resync drops the closed breaker", || {
        r.engine.get(closed).is_none()
    })
    .await;
    let tombstone = store.get(closed, closed).await.unwrap().unwrap();
    assert_eq!((tombstone.version, tombstone.active), (2, false));

    // Redis comes back empty: the open breaker is written back, as it was.
    let held = r.engine.get(kept).unwrap();
    tokio::task::block_in_place(|| server.restart());
    wait_until_async(DEADLINE, "the open breaker is written back", || async {
        matches!(store.get(kept, kept).await, Ok(Some(_)))
    })
    .await;
    let restored = store.get(kept, kept).await.unwrap().unwrap();
    assert_eq!(breaker_of(&restored), held);
    assert_eq!(r.engine.get(kept), Some(held));
    assert!(matches!(r.engine.check(kept), Check::Refuse(_)));
    let audit = store.audit(kept, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let line: Value = serde_json::from_str(&audit[0]).unwrap();
    assert_eq!(
        (&line["from"], &line["to"]),
        (&"open".into(), &"open".into())
    );
    assert!(
        line["reason"].as_str().unwrap().contains("written back"),
        "{line}"
    );
    assert_eq!(trips_stored(&r), 2, "a write-back is not a transition");
    assert_eq!(store.get(closed, closed).await.unwrap(), None);
    assert_eq!(r.engine.get(closed), None);
}

/// A resync compares versions and reads only what changed: a replica
/// joining a store of 300 open breakers loads them all (one full listing),
/// and a record changed behind its back (no change event) is read again at
/// the next resync while the others are left as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_reads_only_the_records_whose_version_moved() {
    let server = RedisServer::start();
    let prefix = unique_name("engine-versions");
    let store = Arc::new(
        RedisStore::connect(&[server.url()], redis_options(&prefix))
            .await
            .unwrap(),
    );
    let a = replica(store.clone(), Rules::defaults(), Timing::default()).await;
    let tripped = numbers(200_000_000_007_000, 300);
    for number in &tripped {
        a.engine.observe(number, &lock_error("a"), None);
    }
    wait_until(DEADLINE, "300 trips are stored", || trips_stored(&a) == 300).await;

    let timing = Timing {
        resync_interval: Duration::from_millis(100),
        tick_interval: Duration::from_secs(1),
    };
    let b = replica(store.clone(), Rules::defaults(), timing).await;
    assert_eq!(b.engine.list().len(), 300);
    for number in &tripped {
        assert_eq!(b.engine.get(number), a.engine.get(number), "{number}");
    }

    // Another writer moves one record on without publishing the change.
    let changed = &tripped[7];
    let record = store.get(changed, changed).await.unwrap().unwrap();
    let mut body: Value = serde_json::from_str(&record.body).unwrap();
    body["reason"] = "changed without an event".into();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:{{{changed}}}:rec:{changed}"))
        .arg(&[("version", "2")])
        .arg("body")
        .arg(body.to_string())
        .query(&mut server.connection())
        .unwrap();
    wait_until(DEADLINE, "a resync reads the moved record", || {
        b.engine.get(changed).is_some_and(|breaker| {
            breaker.version == 2 && breaker.reason == "changed without an event"
        })
    })
    .await;
    assert_eq!(b.engine.list().len(), 300);
    assert_eq!(b.engine.get(&tripped[8]), a.engine.get(&tripped[8]));
}

/// A webhook that names a number by its display number only is resolved
/// through the links the store keeps.
#[tokio::test]
async fn a_display_number_is_resolved_through_the_waba_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("b.db")).unwrap());
    let r = replica(store, Rules::defaults(), Timing::default()).await;
    let link = wagate::store::NumberLink {
        number: "200000000000061".to_owned(),
        waba: "100000000000001".to_owned(),
        display: Some("15550001111".to_owned()),
    };
    assert!(r.engine.learn(link.clone()).await.unwrap());
    assert!(!r.engine.learn(link).await.unwrap(), "known already");
    let found = r
        .engine
        .number_for_display("100000000000001", "+1 555-000-1111")
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("200000000000061"));
    let other_waba = r
        .engine
        .number_for_display("100000000000002", "15550001111")
        .await
        .unwrap();
    assert_eq!(other_waba, None);
}

/// Two replicas recording account events on one WABA at once, and an
/// operator holding it meanwhile: every event and the hold are in the
/// stored record. The record is replaced only over the one that was read,
/// so no replica's change overwrites another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_waba_are_all_kept() {
    use wagate::breaker::{EventAction, EventRule};
    const WABA: &str = "300000000000042";
    let server = RedisServer::start();
    let prefix = unique_name("engine-waba");
    let urls = [server.url()];
    let a = redis_replica(&urls, redis_options(&prefix)).await;
    let b = redis_replica(&urls, redis_options(&prefix)).await;
    let record = EventRule {
        event: "account_update/ACCOUNT_VIOLATION".to_owned(),
        action: EventAction::Record,
        code: None,
    };
    let events = (0..9).flat_map(|i| {
        [&a, &b].map(|replica| {
            let rule = record.clone();
            let event = format!("account_update/ACCOUNT_VIOLATION/{i}");
            async move { replica.engine.waba_event(WABA, &event, &rule, &[]).await }
        })
    });
    let hold = a.engine.waba_operator(
        WABA,
        OperatorAction::Trip {
            reason: "review".to_owned(),
            by: Some("alice".to_owned()),
            ttl: None,
        },
    );
    let (recorded, held) =
        futures_util::future::join(futures_util::future::join_all(events), hold).await;
    for outcome in recorded {
        outcome.expect("every event is stored");
    }
    assert!(held.expect("the hold is stored").gate_changed);
    let stored = b.engine.waba_record(WABA).await.unwrap();
    assert_eq!(stored.events.len(), 19, "{:?}", stored.events);
    assert_eq!(
        stored.gate.and_then(|gate| gate.hold).as_deref(),
        Some("review")
    );
}
