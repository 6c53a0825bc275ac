//! The embedded store's own behaviour: persistence across restarts,
//! migration of the former JSON file, strict loading, retention and the
//! audit cap. The contract it shares with Redis (crash safety and racing
//! writers included) is in `store_contract.rs`.

mod support;

use std::time::Duration;

use support::store_contract::{apply, record, write};
use wagate::store::{BreakerStore, CasOutcome, EmbeddedOptions, EmbeddedStore, StoreError};

fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path().join("breakers.db")).expect("open");
    (dir, store)
}

#[tokio::test]
async fn a_reopened_store_keeps_open_and_closed_records_with_their_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breakers.db");
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
    assert_eq!(names, vec!["breakers.db".to_owned()]);
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
    let path = dir.path().join("breakers.db");
    let cases = [
        "{\"format\":1,\"records\":[",
        "not json",
        "{\"format\":2,\"records\":[]}",
        "{\"format\":1,\"records\":[{\"id\":\"1\",\"number\":\"1\",\"version\":1,\"active\":true}]}",
        "{\"format\":1,\"records\":[{\"id\":\"1\",\"number\":\"{1}\",\"version\":1,\"active\":true,\"body\":\"{}\"}]}",
        // A database's magic number followed by garbage.
        "redb\u{1a}\n\u{a9}\r\nnot a database at all, just bytes after the magic number",
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
    let store = EmbeddedStore::open_with_options(dir.path().join("b.db"), options).expect("open");
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
    let path = dir.path().join("b.db");
    let options = EmbeddedOptions {
        closed_retention: Duration::ZERO,
        ..EmbeddedOptions::default()
    };
    {
        let store = EmbeddedStore::open_with_options(&path, options.clone()).expect("open");
        apply(&store, write(0, &record("1001", "1001", 1, false, "{}"))).await;
        apply(&store, write(0, &record("1002", "1002", 1, true, "{}"))).await;
        assert_eq!(store.get("1001", "1001").await.expect("get"), None);
    }
    // Reopened (which prunes), the expired record is absent: a writer that
    // expects it absent wins, and the active one is still there.
    let store = EmbeddedStore::open_with_options(&path, options).expect("reopen");
    apply(&store, write(0, &record("1001", "1001", 1, true, "{}"))).await;
    let active = store.list_active().await.expect("list");
    assert_eq!(active.len(), 2, "{active:?}");
}

#[test]
fn a_store_in_a_missing_directory_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = EmbeddedStore::open(dir.path().join("missing-dir/b.db")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

#[test]
fn a_second_process_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    let _first = EmbeddedStore::open(&path).expect("open");
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("another process"), "{err}");
}

#[tokio::test]
async fn the_audit_trail_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    let lines: Vec<String> = {
        let store = EmbeddedStore::open(&path).expect("open");
        for version in 1..=3 {
            apply(
                &store,
                write(version - 1, &record("1001", "1001", version, true, "{}")),
            )
            .await;
        }
        store.audit("1001", 10).await.expect("audit")
    };
    assert_eq!(lines.len(), 3);
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.audit("1001", 10).await.expect("audit"), lines);
}

/// A JSON file of the format wagate wrote before its database.
fn legacy_json(records: &[(&str, u64, bool, &str, Option<u64>)]) -> String {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(number, version, active, body, closed_at_ms)| {
            let mut r = serde_json::json!({
                "id": number, "number": number, "version": version,
                "active": active, "body": body,
            });
            if let Some(at) = closed_at_ms {
                r["closed_at_ms"] = (*at).into();
            }
            r
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "format": 1, "records": records })).unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_json_file_at_the_path_is_migrated_once_and_kept_as_a_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breakers.json");
    let body = "{\"state\": \"open\", \"why\": \"caf\u{e9}\"}";
    let json = legacy_json(&[
        ("1001", 3, true, body, None),
        ("1002", 2, false, "{}", Some(now_ms())),
    ]);
    std::fs::write(&path, &json).expect("write");

    {
        let store = EmbeddedStore::open(&path).expect("migrate");
        assert_eq!(
            store.get("1001", "1001").await.expect("get"),
            Some(record("1001", "1001", 3, true, body))
        );
        assert_eq!(store.list_active().await.expect("list").len(), 1);
        // The closed record kept its version.
        let stale = store
            .compare_and_set(write(0, &record("1002", "1002", 1, true, "{}")))
            .await
            .expect("cas");
        assert!(matches!(stale, CasOutcome::Conflict { current: Some(_) }));
        apply(&store, write(3, &record("1001", "1001", 4, true, "{}"))).await;
    }
    let backup = dir.path().join("breakers.json.v1.json");
    assert_eq!(std::fs::read_to_string(&backup).expect("backup"), json);
    assert!(std::fs::read(&path).expect("db").starts_with(b"redb"));

    // The second start opens the database; nothing is migrated again.
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(
        store
            .get("1001", "1001")
            .await
            .expect("get")
            .map(|r| r.version),
        Some(4)
    );
}

#[tokio::test]
async fn a_json_file_beside_the_database_path_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = legacy_json(&[("1001", 1, true, "{}", None)]);
    std::fs::write(dir.path().join("wagate-breakers.json"), &json).expect("write");
    let store = EmbeddedStore::open(dir.path().join("wagate-breakers.db")).expect("migrate");
    assert_eq!(store.list_active().await.expect("list").len(), 1);
    // The JSON is left as it was.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("wagate-breakers.json")).expect("json"),
        json
    );
}

#[tokio::test]
async fn a_corrupt_json_file_is_not_migrated_and_stops_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    std::fs::write(dir.path().join("b.json"), "{\"format\":1,\"records\":[").expect("write");
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("b.json"), "{err}");
    assert!(!path.exists());
}
