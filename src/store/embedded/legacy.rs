//! The embedded store's former file format: one JSON document holding every
//! record, rewritten whole on each transition. It is read once, to migrate it
//! into the database, and never written.

use std::fs;
use std::io;
use std::path::Path;

use serde::Deserialize;

use super::{Entry, Records};
use crate::store::{StoreError, StoredRecord, check_number};

/// The only format the JSON file ever had; any other is refused rather than
/// misread.
const FORMAT: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    format: u32,
    records: Vec<FileRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    id: String,
    number: String,
    version: u64,
    active: bool,
    /// The breaker's JSON as a string, so it comes back byte for byte.
    body: String,
    #[serde(default)]
    closed_at_ms: Option<u64>,
}

/// Reads the records at `path`; a missing file is an empty store.
pub(super) fn load(path: &Path) -> Result<Records, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Records::new()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        what: path.display().to_string(),
        detail,
    };
    let image: Image = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if image.format != FORMAT {
        return Err(corrupt(format!("unknown format {}", image.format)));
    }
    let mut records = Records::new();
    for r in image.records {
        check_number(&r.number).map_err(&corrupt)?;
        if r.id.is_empty() || r.version == 0 {
            return Err(corrupt(format!("record {:?} has no id or version", r.id)));
        }
        let key = (r.number.clone(), r.id.clone());
        let entry = Entry {
            record: StoredRecord {
                id: r.id,
                number: r.number,
                version: r.version,
                active: r.active,
                body: r.body,
            },
            closed_at_ms: r.closed_at_ms,
        };
        if records.insert(key, entry).is_some() {
            return Err(corrupt("a record appears twice".to_owned()));
        }
    }
    Ok(records)
}
