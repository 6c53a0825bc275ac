//! The embedded store's file: its JSON format, strict loading, and atomic
//! replacement.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Entry, Records};
use crate::store::{StoreError, StoredRecord, check_number};

/// Bumped when the layout changes incompatibly; an unknown format is refused
/// rather than misread.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    format: u32,
    records: Vec<FileRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    id: String,
    number: String,
    version: u64,
    active: bool,
    /// The breaker's JSON as a string, so it comes back byte for byte.
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// The file's bytes for `records`. Encoding plain strings and numbers
/// cannot fail in practice; the error is passed on rather than assumed away.
pub(super) fn encode(records: &Records) -> Result<Vec<u8>, serde_json::Error> {
    let image = Image {
        format: FORMAT,
        records: records
            .values()
            .map(|e| FileRecord {
                id: e.record.id.clone(),
                number: e.record.number.clone(),
                version: e.record.version,
                active: e.record.active,
                body: e.record.body.clone(),
                closed_at_ms: e.closed_at_ms,
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&image)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new file, never a torn one. Blocking: run it on a blocking thread.
pub(super) fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let written = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(io_error(&tmp));
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path).map_err(io_error(path))) {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is on disk.
    let dir = parent_dir(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir))
}

/// `<dir>/.<name>.tmp`: the same directory (a rename across file systems is
/// not atomic), one fixed name because writers are serialized and only one
/// process owns the file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    parent_dir(path).join(format!(".{name}.tmp"))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
