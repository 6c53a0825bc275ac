//! Helpers shared by the integration tests: waiting for a condition with a
//! deadline, unique names, real Redis servers ([`redis`]), a real headless
//! browser ([`browser`]), and the contract every `BreakerStore` must meet
//! ([`store_contract`]).
//!
//! Use it from a test file with `mod support;`.

// Every test binary compiles this module privately and uses only part of it.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod gateway;
pub mod prometheus;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod redis;

/// Pause between polls of a condition.
const POLL: Duration = Duration::from_millis(10);

/// Polls `condition` until it holds; panics naming `what` if it still does
/// not after `timeout`. The way to wait for something asynchronous instead
/// of sleeping.
pub async fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_until_async(timeout, what, || std::future::ready(condition())).await;
}

/// Like [`wait_until`], for a condition that must await (a store read, an
/// HTTP call).
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The blocking twin of [`wait_until`], for set-up code that is not async
/// (starting servers, reaping processes): polls `condition` until it gives
/// a value and returns it, or returns `None` once `timeout` has passed, for
/// the caller to fail with what it knows (a log, the last answer).
pub fn poll_until<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(found) = condition() {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A name no other test (in this or another concurrently running test
/// process) uses: for Redis key prefixes and the like.
pub fn unique_name(base: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{base}-{}-{n}", std::process::id())
}

/// The behaviour every `BreakerStore` must show, run against each store.
pub mod store_contract {
    use std::time::Duration;

    use tokio::sync::broadcast;
    use wagate::store::{BreakerStore, CasOutcome, StoreError, StoreEvent, StoredRecord, Write};

    /// A record with the given fields.
    pub fn record(number: &str, id: &str, version: u64, active: bool, body: &str) -> StoredRecord {
        StoredRecord {
            id: id.to_owned(),
            number: number.to_owned(),
            version,
            active,
            body: body.to_owned(),
        }
    }

    /// A write of `record` expecting `expected`, with an audit line naming
    /// the new version.
    pub fn write(expected: u64, record: &StoredRecord) -> Write {
        Write {
            expected_version: expected,
            record: record.clone(),
            audit: format!(r#"{{"id":"{}","version":{}}}"#, record.id, record.version),
        }
    }

    /// Applies `write`, panicking unless it is applied.
    pub async fn apply(store: &dyn BreakerStore, write: Write) {
        let outcome = store.compare_and_set(write).await.expect("compare_and_set");
        assert_eq!(outcome, CasOutcome::Applied);
    }

    /// The next `Changed` event (skipping `Resync`), within `timeout`.
    pub async fn next_change(
        events: &mut broadcast::Receiver<StoreEvent>,
        timeout: Duration,
    ) -> StoredRecord {
        let wait = async {
            loop {
                match events.recv().await.expect("event channel open") {
                    StoreEvent::Changed(record) => return record,
                    StoreEvent::Resync => continue,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| panic!("no change event within {timeout:?}"))
    }

    /// Checks compare-and-set, reads, `list_active` and
    /// `list_active_versions`, audit order, events and
    /// write validation. `number` must not have been written before.
    pub async fn check(store: &dyn BreakerStore, number: &str) {
        let mut events = store.subscribe();
        let id = number.to_owned();
        let pair = format!("{number}:pair:ab12");
        // Opaque: whitespace, escapes and non-ASCII come back byte for byte.
        let body = "{\"state\": \"open\",  \"why\": \"caf\u{e9}\\n\", \"n\": [1, 2]}";

        assert_eq!(store.get(number, &id).await.expect("get"), None);
        let v1 = record(number, &id, 1, true, body);
        apply(store, write(0, &v1)).await;
        assert_eq!(store.get(number, &id).await.expect("get"), Some(v1.clone()));
        assert_eq!(next_change(&mut events, Duration::from_secs(5)).await, v1);

        // A stale writer gets what is stored, and nothing changes.
        let stale = record(number, &id, 1, true, "{\"other\":true}");
        let outcome = store.compare_and_set(write(0, &stale)).await.expect("cas");
        assert_eq!(
            outcome,
            CasOutcome::Conflict {
                current: Some(v1.clone())
            }
        );
        let absent = record(number, &pair, 6, true, "{}");
        let outcome = store.compare_and_set(write(5, &absent)).await.expect("cas");
        assert_eq!(outcome, CasOutcome::Conflict { current: None });
        assert_eq!(store.get(number, &pair).await.expect("get"), None);

        let p1 = record(number, &pair, 1, true, "{\"pair\":1}");
        apply(store, write(0, &p1)).await;
        let v2 = record(number, &id, 2, false, "{\"state\":\"closed\"}");
        apply(store, write(1, &v2)).await;

        // Closed records are kept (so versions stay monotonic) but not listed.
        assert_eq!(store.get(number, &id).await.expect("get"), Some(v2.clone()));
        let active = store.list_active().await.expect("list_active");
        assert!(active.contains(&p1), "{active:?}");
        assert!(
            !active.iter().any(|r| r.number == number && r.id == id),
            "{active:?}"
        );
        // The version listing names the same records, without bodies.
        let mut versions: Vec<_> = store
            .list_active_versions()
            .await
            .expect("list_active_versions")
            .into_iter()
            .map(|v| (v.number, v.id, v.version))
            .collect();
        let mut listed: Vec<_> = active
            .iter()
            .map(|r| (r.number.clone(), r.id.clone(), r.version))
            .collect();
        versions.sort();
        listed.sort();
        assert_eq!(versions, listed);

        let audit = store.audit(number, 10).await.expect("audit");
        let versions: Vec<_> = audit.iter().map(String::as_str).collect();
        let expected = [
            write(1, &v2).audit,
            write(0, &p1).audit,
            write(0, &v1).audit,
        ];
        assert_eq!(
            versions,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(store.audit(number, 2).await.expect("audit").len(), 2);
        assert!(store.audit("999999", 10).await.expect("audit").is_empty());

        let not_newer = record(number, &id, 2, true, "{}");
        let err = store
            .compare_and_set(write(2, &not_newer))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidWrite(_)), "{err}");
        assert!(store.is_healthy());
    }
}
