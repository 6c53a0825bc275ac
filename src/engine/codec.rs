//! A breaker record as the stores keep it: the engine's JSON of a
//! [`Breaker`] inside a [`StoredRecord`], whose version is the one the
//! store's check-and-set compares. The only place that serialises and
//! parses record bodies.

use crate::breaker::{Breaker, State};
use crate::store::{StoreError, StoredRecord};

/// `breaker` as the stores keep it.
pub(super) fn stored(breaker: &Breaker) -> StoredRecord {
    StoredRecord {
        id: breaker.key.storage_id(),
        number: breaker.key.number().to_owned(),
        version: breaker.version,
        active: breaker.state != State::Closed,
        // Plain data with string keys: serializing cannot fail.
        body: serde_json::to_string(breaker).unwrap_or_default(),
    }
}

/// A stored record back as a breaker, with the store's version.
pub(super) fn parse(record: &StoredRecord) -> Result<Breaker, StoreError> {
    let mut breaker: Breaker =
        serde_json::from_str(&record.body).map_err(|e| StoreError::Corrupt {
            what: record.id.clone(),
            detail: e.to_string(),
        })?;
    // The store's version is the one its check-and-set compares.
    breaker.version = record.version;
    Ok(breaker)
}
