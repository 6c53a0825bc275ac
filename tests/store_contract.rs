//! The store contract, run against both stores: the embedded file and a
//! real `redis-server` this suite starts on a free port. Every test here
//! exists twice, `<name>::embedded` and `<name>::redis`, from one body.
//!
//! What only one store has stays with that store: migrating an earlier
//! JSON file in `store_embedded.rs`, Cluster, expiry and outages in
//! `store_redis.rs`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::gateway::{Process, http};
use support::redis::RedisServer;
use support::store_contract::{self, apply, record, write};
use support::unique_name;
use wagate::store::{
    BreakerStore, CasOutcome, EmbeddedStore, RedisOptions, RedisStore, StoreEvent,
};

/// One store under test, with what keeps it alive.
enum Backend {
    Embedded(tempfile::TempDir),
    Redis(RedisServer, String),
}

impl Backend {
    fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().expect("tempdir"))
    }

    fn redis() -> Self {
        Self::Redis(RedisServer::start(), unique_name("contract"))
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis(..) => "redis",
        }
    }

    /// A store on this backend. Each call is a new handle: a second
    /// connection to the same Redis, or the file opened again (after the
    /// previous handle was dropped).
    async fn open(&self) -> Arc<dyn BreakerStore> {
        match self {
            Self::Embedded(dir) => {
                Arc::new(EmbeddedStore::open(dir.path().join("breakers.db")).expect("open"))
            }
            Self::Redis(server, prefix) => {
                let options = RedisOptions {
                    key_prefix: prefix.clone(),
                    ..RedisOptions::default()
                };
                Arc::new(
                    RedisStore::connect(&[server.url()], options)
                        .await
                        .expect("connect"),
                )
            }
        }
    }

    /// The configuration overrides that point a gateway at this backend.
    fn gateway_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Embedded(dir) => vec![(
                "WAGATE_STORE__PATH",
                dir.path().join("gateway.db").display().to_string(),
            )],
            Self::Redis(server, _) => vec![("WAGATE_STORE__REDIS_URL", server.url())],
        }
    }
}

/// Defines `mod $name` with one test per store, both running `$body` with
/// the store's [`Backend`] bound to `$backend`.
macro_rules! on_both_stores {
    ($(#[$doc:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            async fn run($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                run(Backend::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                run(Backend::redis()).await;
            }
        }
    };
}

on_both_stores! {
    /// Compare-and-set, reads, listings, audit order, events, validation.
    async fn meets_the_store_contract(backend: Backend) {
        let store = backend.open().await;
        assert_eq!(store.kind(), backend.kind());
        store_contract::check(store.as_ref(), "200000000000001").await;
    }
}

on_both_stores! {
    /// Sixteen writers race to create one record: one wins, the others see
    /// its record, and one audit line is written. Then they race again to
    /// update it from version 1.
    async fn concurrent_writers_of_one_version_have_one_winner(backend: Backend) {
        let store = backend.open().await;
        let other = backend_second_handle(&backend, &store).await;
        for expected in [0, 1] {
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    // Half the writers use a second handle: another
                    // connection (another replica) where the store has one.
                    let store = if i % 2 == 0 { store.clone() } else { other.clone() };
                    tokio::spawn(async move {
                        let body = format!("{{\"writer\":{i},\"from\":{expected}}}");
                        let r = record("1001", "1001", expected + 1, true, &body);
                        (r.clone(), store.compare_and_set(write(expected, &r)).await)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut seen = Vec::new();
            for task in tasks {
                let (attempt, outcome) = task.await.expect("task");
                match outcome.expect("cas") {
                    CasOutcome::Applied => winners.push(attempt),
                    CasOutcome::Conflict { current } => seen.push(current),
                }
            }
            assert_eq!(winners.len(), 1, "from version {expected}");
            // A loser that read after the winner wrote is shown the winner.
            for current in seen.into_iter().flatten() {
                assert_eq!(current, winners[0]);
            }
            let stored = store.get("1001", "1001").await.expect("get");
            assert_eq!(stored.as_ref(), Some(&winners[0]));
        }
        assert_eq!(store.audit("1001", 100).await.expect("audit").len(), 2);
    }
}

on_both_stores! {
    /// Every applied write's audit line is in the combined trail too, newest
    /// first across numbers; a write that lost its race adds none.
    async fn the_combined_trail_holds_every_number_newest_first(backend: Backend) {
        let store = backend.open().await;
        let a1 = record("1001", "1001", 1, true, "{}");
        let b1 = record("1002", "1002", 1, true, "{}");
        let a2 = record("1001", "1001", 2, false, "{}");
        for w in [write(0, &a1), write(0, &b1), write(1, &a2)] {
            apply(store.as_ref(), w).await;
        }
        let lost = store
            .compare_and_set(write(0, &record("1002", "1002", 1, true, "{\"x\":1}")))
            .await
            .expect("cas");
        assert!(matches!(lost, CasOutcome::Conflict { .. }));
        let lines = store.recent_audit(10).await.expect("recent audit");
        let expected: Vec<String> = [&a2, &b1, &a1].iter().map(|r| write(0, r).audit).collect();
        assert_eq!(lines, expected);
        assert_eq!(store.recent_audit(2).await.expect("recent audit").len(), 2);
        assert_eq!(store.audit("1001", 10).await.expect("audit").len(), 2);
    }
}

/// A second handle on the backend while `first` stays open: another
/// connection to Redis; the same handle for the embedded store, whose file
/// one process opens once.
async fn backend_second_handle(
    backend: &Backend,
    first: &Arc<dyn BreakerStore>,
) -> Arc<dyn BreakerStore> {
    match backend {
        Backend::Embedded(_) => first.clone(),
        Backend::Redis(..) => backend.open().await,
    }
}

on_both_stores! {
    /// 1,000 transitions to 1,000 numbers at once (a WABA-wide event, a
    /// webhook batch): every one applied, listed and published.
    async fn a_burst_of_writes_to_many_numbers_is_applied_in_full(backend: Backend) {
        let store = backend.open().await;
        let mut events = store.subscribe();
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let number = format!("{}", 300_000 + i);
                    let r = record(&number, &number, 1, true, "{}");
                    store.compare_and_set(write(0, &r)).await.expect("cas")
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task"), CasOutcome::Applied);
        }
        assert_eq!(store.list_active().await.expect("list").len(), 1000);
        let mut changes = std::collections::HashSet::new();
        support::wait_until(Duration::from_secs(10), "1,000 change events", || {
            while let Ok(event) = events.try_recv() {
                if let StoreEvent::Changed(record) = event {
                    changes.insert(record.id);
                }
            }
            changes.len() == 1000
        })
        .await;
    }
}

on_both_stores! {
    /// What was written is there for the next handle: the file reopened, or
    /// another connection.
    async fn records_and_audit_outlive_the_handle_that_wrote_them(backend: Backend) {
        let open = record("1001", "1001", 3, true, "{\"state\":\"open\"}");
        let closed = record("1002", "1002", 2, false, "{\"state\":\"closed\"}");
        {
            let store = backend.open().await;
            apply(store.as_ref(), write(0, &open)).await;
            let first = record("1002", "1002", 1, true, "{}");
            apply(store.as_ref(), write(0, &first)).await;
            apply(store.as_ref(), write(1, &closed)).await;
        }
        let store = backend.open().await;
        assert_eq!(store.get("1001", "1001").await.expect("get"), Some(open.clone()));
        assert_eq!(store.get("1002", "1002").await.expect("get"), Some(closed));
        assert_eq!(store.list_active().await.expect("list"), vec![open]);
        assert_eq!(store.audit("1002", 10).await.expect("audit").len(), 2);
    }
}

on_both_stores! {
    /// Trips numbers through the admin API of a real gateway from four
    /// clients at once, SIGKILLs the process while trips are in flight, and
    /// starts a new one on the same store: every trip the gateway
    /// acknowledged is there, and the store loads. Three rounds, so kills
    /// land at different points of a write.
    async fn a_kill_mid_write_loses_no_acknowledged_transition(backend: Backend) {
        let store_env = backend.gateway_env();
        let mut env: Vec<(&str, &str)> = store_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([
            ("WAGATE_ADMIN__TOKEN", "crash-test-token"),
            ("WAGATE_UPSTREAM__BASE_URL", "http://127.0.0.1:9"),
        ]);
        let mut acknowledged: Vec<String> = Vec::new();
        for round in 0..3u64 {
            let mut gateway = Process::spawn(&env);
            let admin = gateway.admin;
            let acked = Arc::new(Mutex::new(Vec::new()));
            let clients: Vec<_> = (0..4u64)
                .map(|client| {
                    let acked = acked.clone();
                    tokio::spawn(async move {
                        let http = http();
                        for i in 0..10_000u64 {
                            let number = (500_000_000 + round * 1_000_000 + client * 100_000 + i)
                                .to_string();
                            let url = format!("http://{admin}/admin/breakers/{number}/trip");
                            let sent = http
                                .post(url)
                                .bearer_auth("crash-test-token")
                                .body("{\"reason\":\"crash test\"}")
                                .send()
                                .await;
                            match sent {
                                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                                    acked.lock().unwrap().push(number);
                                }
                                Ok(r) => panic!("trip answered {}", r.status()),
                                // The process was killed under this request.
                                Err(_) => return,
                            }
                        }
                    })
                })
                .collect();
            let target = 100 + usize::try_from(round).unwrap() * 37;
            support::wait_until(Duration::from_secs(30), "trips acknowledged", || {
                acked.lock().unwrap().len() >= target
            })
            .await;
            gateway.kill();
            for client in clients {
                client.await.expect("client");
            }
            acknowledged.extend(acked.lock().unwrap().drain(..));

            // The store loads, and every acknowledged trip is in it.
            let restarted = Process::spawn(&env);
            let http = http();
            for number in &acknowledged {
                let url = format!("http://{}/admin/breakers/{number}", restarted.admin);
                let shown = http.get(url).send().await.expect("show");
                assert_eq!(shown.status(), reqwest::StatusCode::OK, "{number}");
                let view: serde_json::Value = shown.json().await.expect("json");
                // An operator's trip holds the number until an operator
                // resets it.
                assert_eq!(view["state"], "held", "{number}: {view}");
            }
            drop(restarted);
        }
        assert!(acknowledged.len() >= 300, "{}", acknowledged.len());
    }
}

on_both_stores! {
    /// Number → WABA links and WABA records: stored once, merged (a known
    /// display number is kept), listed by WABA, and seen by the next handle;
    /// a WABA record is replaced only over the record that was read.
    async fn links_and_waba_records_are_kept(backend: Backend) {
        use wagate::store::NumberLink;
        let link = |number: &str, waba: &str, display: Option<&str>| NumberLink {
            number: number.to_owned(),
            waba: waba.to_owned(),
            display: display.map(str::to_owned),
        };
        {
            let store = backend.open().await;
            assert!(store.link(link("1", "W1", Some("15550001111"))).await.unwrap());
            assert!(!store.link(link("1", "W1", Some("15550001111"))).await.unwrap());
            // No display number in a later webhook keeps the known one.
            assert!(!store.link(link("1", "W1", None)).await.unwrap());
            assert!(store.link(link("2", "W1", None)).await.unwrap());
            assert!(store.link(link("3", "W2", None)).await.unwrap());
            assert_eq!(store.waba("W1").await.unwrap(), None);
            assert!(store.waba_records().await.unwrap().is_empty());
            // A check-and-set: stored only over what was read.
            assert!(store.replace_waba("W1", None, "{}".to_owned()).await.unwrap());
            assert!(!store.replace_waba("W1", None, "{\"lost\":1}".to_owned()).await.unwrap());
            assert!(
                !store
                    .replace_waba("W1", Some("{\"other\":2}"), "{\"lost\":2}".to_owned())
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .replace_waba("W1", Some("{}"), "{\"tripped\":true}".to_owned())
                    .await
                    .unwrap()
            );
            // A record for a WABA no number is known of yet.
            assert!(store.replace_waba("W9", None, "{}".to_owned()).await.unwrap());
        }
        let store = backend.open().await;
        assert_eq!(
            store.link_of("1").await.unwrap(),
            Some(link("1", "W1", Some("15550001111")))
        );
        assert_eq!(store.link_of("9").await.unwrap(), None);
        let mut numbers: Vec<String> = store
            .numbers_of("W1")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.number)
            .collect();
        numbers.sort();
        assert_eq!(numbers, ["1", "2"]);
        assert_eq!(store.links().await.unwrap().len(), 3);
        assert_eq!(store.waba("W1").await.unwrap().as_deref(), Some("{\"tripped\":true}"));
        let mut records = store.waba_records().await.unwrap();
        records.sort();
        assert_eq!(
            records,
            [
                ("W1".to_owned(), "{\"tripped\":true}".to_owned()),
                ("W9".to_owned(), "{}".to_owned())
            ]
        );
        // A number moved to another WABA is moved, and loses the display
        // number of its old one.
        assert!(store.link(link("1", "W2", None)).await.unwrap());
        assert_eq!(store.link_of("1").await.unwrap(), Some(link("1", "W2", None)));
    }
}

on_both_stores! {
    /// A lease has one holder at a time: another is refused while it runs,
    /// the holder renews it, a release frees it, and once its time passes
    /// without a renewal another holder takes it over.
    async fn a_lease_has_one_holder_and_expires(backend: Backend) {
        let a = backend.open().await;
        let b = backend_second_handle(&backend, &a).await;
        let long = Duration::from_secs(30);
        assert!(a.take_lease("1001", "health", "replica-a", long).await.unwrap());
        assert!(!b.take_lease("1001", "health", "replica-b", long).await.unwrap());
        assert!(a.take_lease("1001", "health", "replica-a", long).await.unwrap(), "renewed");
        // Another lease, or another number, is another lease.
        assert!(b.take_lease("1001", "probe", "replica-b", long).await.unwrap());
        assert!(b.take_lease("1002", "health", "replica-b", long).await.unwrap());

        assert!(!b.release_lease("1001", "health", "replica-b").await.unwrap());
        assert!(a.release_lease("1001", "health", "replica-a").await.unwrap());
        assert!(b.take_lease("1001", "health", "replica-b", Duration::from_millis(200)).await.unwrap());
        // replica-b stops renewing: replica-a takes over once it expires.
        support::wait_until_async(Duration::from_secs(5), "the lease expires", || {
            let a = a.clone();
            async move { a.take_lease("1001", "health", "replica-a", long).await.unwrap() }
        })
        .await;
        assert!(!b.take_lease("1001", "health", "replica-b", long).await.unwrap());
    }
}

on_both_stores! {
    /// A shared rate admits one event per interval across every handle,
    /// says how long until the next, and admits again once that passed.
    async fn a_rate_admits_one_event_per_interval_across_replicas(backend: Backend) {
        let a = backend.open().await;
        let b = backend_second_handle(&backend, &a).await;
        assert_eq!(a.admit("1001", "ramp", 5).await.unwrap(), None, "the first passes");
        let wait = b
            .admit("1001", "ramp", 5)
            .await
            .unwrap()
            .expect("the second, at once, from another replica, waits");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Another number's rate is its own.
        assert_eq!(b.admit("1002", "ramp", 5).await.unwrap(), None);
        support::wait_until_async(Duration::from_secs(5), "the next slot", || {
            let a = a.clone();
            async move { a.admit("1001", "ramp", 5).await.unwrap().is_none() }
        })
        .await;
        // Admitted once per slot: right after, the next waits again.
        assert!(a.admit("1001", "ramp", 5).await.unwrap().is_some());
    }
}
