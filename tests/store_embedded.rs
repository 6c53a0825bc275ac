//! The embedded store: the shared contract, persistence across restarts,
//! atomic file replacement and strict loading.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::store_contract::{self, apply, record, write};
use wagate::store::{BreakerStore, CasOutcome, EmbeddedOptions, EmbeddedStore, StoreError};

fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path().join("breakers.json")).expect("open");
    (dir, store)
}

#[tokio::test]
async fn meets_the_store_contract() {
    let (_dir, store) = temp_store();
    assert_eq!(store.kind(), "embedded");
    store_contract::check(&store, "200000000000001").await;
}

#[tokio::test]
async fn a_reopened_store_keeps_open_and_closed_records_with_their_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breakers.json");
    let open = record("1001", "1001", 3, true, "{\"state\":\"open\"}");
    let closed = record("1002", "1002", 1, false, "{\"state\":\"closed\"}");
    {
        let store = EmbeddedStore::open(&path).expect("open");
        apply(&store, write(0, &record("1001", "1001", 1, true, "{}"))).await;
        apply(&store, write(1, &record("1001", "1001", 2, true, "{}"))).await;
        apply(&store, write(2, &open)).await;
        apply(&store, write(0, &closed)).await;
    }

    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.list_active().await.expect("list"), vec![open.clone()]);
    assert_eq!(
        store.get("1001", "1001").await.expect("get"),
        Some(open.clone())
    );
    // The closed record still holds its version: a writer that thinks it is
    // absent is refused.
    let stale = record("1002", "1002", 1, true, "{}");
    let outcome = store.compare_and_set(write(0, &stale)).await.expect("cas");
    assert_eq!(
        outcome,
        CasOutcome::Conflict {
            current: Some(closed)
        }
    );
    let next = record("1001", "1001", 4, false, "{}");
    apply(&store, write(3, &next)).await;
}

#[tokio::test]
async fn writes_leave_only_the_store_file_behind() {
    let (dir, store) = temp_store();
    for version in 1..=5 {
        let r = record("1001", "1001", version, version % 2 == 1, "{}");
        apply(&store, write(version - 1, &r)).await;
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["breakers.json".to_owned()]);
}

#[test]
fn a_missing_file_is_an_empty_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path().join("absent.json")).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    assert!(rt.block_on(store.list_active()).expect("list").is_empty());
}

#[test]
fn a_corrupt_file_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breakers.json");
    let cases = [
        "{\"format\":1,\"records\":[",
        "not json",
        "{\"format\":2,\"records\":[]}",
        "{\"format\":1,\"records\":[{\"id\":\"1\",\"number\":\"1\",\"version\":1,\"active\":true}]}",
        "{\"format\":1,\"records\":[{\"id\":\"1\",\"number\":\"{1}\",\"version\":1,\"active\":true,\"body\":\"{}\"}]}",
    ];
    for contents in cases {
        std::fs::write(&path, contents).expect("write");
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{contents}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[tokio::test]
async fn audit_is_newest_first_and_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        audit_capacity: 5,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with_options(dir.path().join("b.json"), options).expect("open");
    for version in 1..=8 {
        apply(
            &store,
            write(version - 1, &record("1001", "1001", version, true, "{}")),
        )
        .await;
    }
    let audit = store.audit("1001", 100).await.expect("audit");
    let expected: Vec<String> = (4..=8)
        .rev()
        .map(|v| write(v - 1, &record("1001", "1001", v, true, "{}")).audit)
        .collect();
    assert_eq!(audit, expected);
}

#[tokio::test]
async fn closed_records_expire_after_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.json");
    let options = EmbeddedOptions {
        closed_retention: Duration::ZERO,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with_options(&path, options.clone()).expect("open");
    apply(&store, write(0, &record("1001", "1001", 1, false, "{}"))).await;
    apply(&store, write(0, &record("1002", "1002", 1, true, "{}"))).await;
    assert_eq!(store.get("1001", "1001").await.expect("get"), None);
    let file = std::fs::read_to_string(&path).expect("read");
    assert!(!file.contains("\"1001\""), "{file}");
    assert!(file.contains("\"1002\""), "{file}");
}

#[tokio::test]
async fn a_write_that_cannot_be_persisted_is_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path().join("missing-dir/b.json")).expect("open");
    let mut events = store.subscribe();
    let err = store
        .compare_and_set(write(0, &record("1001", "1001", 1, true, "{}")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
    assert!(!store.is_healthy());
    assert_eq!(store.get("1001", "1001").await.expect("get"), None);
    assert!(store.audit("1001", 10).await.expect("audit").is_empty());
    assert!(
        events.try_recv().is_err(),
        "no event for an unapplied write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_version_have_one_winner() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = record("1001", "1001", 1, true, &format!("{{\"writer\":{i}}}"));
                store.compare_and_set(write(0, &r)).await.expect("cas")
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if task.await.expect("task") == CasOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(store.audit("1001", 100).await.expect("audit").len(), 1);
}
