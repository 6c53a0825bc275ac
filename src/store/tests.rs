//! Checks of the write invariants shared by both stores.

use super::{StoreError, StoredRecord, Write};

fn write(number: &str, id: &str, expected: u64, version: u64) -> Write {
    Write {
        expected_version: expected,
        record: StoredRecord {
            id: id.to_owned(),
            number: number.to_owned(),
            version,
            active: true,
            body: "{}".to_owned(),
        },
        audit: "{}".to_owned(),
    }
}

#[test]
fn accepts_a_version_bump() {
    assert!(write("1001", "1001", 0, 1).validate().is_ok());
    assert!(write("1001", "1001:pair:ab", 4, 9).validate().is_ok());
}

#[test]
fn rejects_a_version_that_does_not_grow() {
    for (expected, version) in [(0, 0), (3, 3), (5, 4)] {
        let err = write("1001", "1001", expected, version)
            .validate()
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidWrite(_)), "{err}");
    }
}

#[test]
fn rejects_numbers_that_cannot_be_a_hash_tag() {
    for number in ["", "10{01", "1001}"] {
        let err = write(number, "1001", 0, 1).validate().unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidWrite(_)),
            "{number:?}: {err}"
        );
    }
    let err = write("1001", "", 0, 1).validate().unwrap_err();
    assert!(err.to_string().contains("id is empty"), "{err}");
}
