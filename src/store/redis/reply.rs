//! Reading back what `transition.lua` wrote: record hashes and the
//! script's reply.

use std::collections::HashMap;

use crate::store::{CasOutcome, StoreError, StoredRecord};

/// A record hash as written by `transition.lua`.
pub(super) fn parse_record(
    key: &str,
    mut fields: HashMap<String, String>,
) -> Result<StoredRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: key.to_owned(),
        detail,
    };
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| corrupt(format!("missing field {name}")))
    };
    let (id, number, version, active, body) = (
        take("id")?,
        take("number")?,
        take("version")?,
        take("active")?,
        take("body")?,
    );
    Ok(StoredRecord {
        id,
        number,
        version: version
            .parse()
            .map_err(|_| corrupt(format!("version {version:?} is not a number")))?,
        active: match active.as_str() {
            "1" => true,
            "0" => false,
            other => return Err(corrupt(format!("active {other:?} is not 0 or 1"))),
        },
        body,
    })
}

/// The transition script's reply (see `transition.lua`).
pub(super) fn parse_outcome(
    key: &str,
    reply: Vec<Option<String>>,
) -> Result<CasOutcome, StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        what: key.to_owned(),
        detail: detail.to_owned(),
    };
    let mut reply = reply.into_iter();
    match reply.next().flatten().as_deref() {
        Some("applied") => Ok(CasOutcome::Applied),
        Some("conflict") => {
            let names = ["id", "number", "version", "active", "body"];
            let fields: HashMap<String, String> = names
                .iter()
                .zip(reply)
                .filter_map(|(name, value)| Some(((*name).to_owned(), value?)))
                .collect();
            if fields.is_empty() {
                return Ok(CasOutcome::Conflict { current: None });
            }
            parse_record(key, fields).map(|r| CasOutcome::Conflict { current: Some(r) })
        }
        _ => Err(corrupt("unexpected transition script reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(items: &[Option<&str>]) -> Vec<Option<String>> {
        items.iter().map(|i| i.map(str::to_owned)).collect()
    }

    #[test]
    fn reads_each_script_reply() {
        let key = "wagate:{1}:rec:1";
        assert_eq!(
            parse_outcome(key, reply(&[Some("applied")])).ok(),
            Some(CasOutcome::Applied)
        );
        assert_eq!(
            parse_outcome(key, reply(&[Some("conflict")])).ok(),
            Some(CasOutcome::Conflict { current: None })
        );
        let stored = [
            Some("conflict"),
            Some("1"),
            Some("1"),
            Some("7"),
            Some("0"),
            Some("{}"),
        ];
        let current = StoredRecord {
            id: "1".to_owned(),
            number: "1".to_owned(),
            version: 7,
            active: false,
            body: "{}".to_owned(),
        };
        assert_eq!(
            parse_outcome(key, reply(&stored)).ok(),
            Some(CasOutcome::Conflict {
                current: Some(current)
            })
        );
    }

    #[test]
    fn damaged_replies_are_corrupt_naming_the_key() {
        let key = "wagate:{1}:rec:1";
        let cases: [&[Option<&str>]; 4] = [
            &[],
            &[Some("maybe")],
            &[
                Some("conflict"),
                Some("1"),
                Some("1"),
                None,
                Some("0"),
                Some("{}"),
            ],
            &[
                Some("conflict"),
                Some("1"),
                Some("1"),
                Some("x"),
                Some("0"),
                Some("{}"),
            ],
        ];
        for case in cases {
            let err = parse_outcome(key, reply(case)).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{case:?}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
