//! `WAGATE_<SECTION>__<KEY>` environment overrides.
//!
//! Overrides are applied to the parsed TOML table before it is deserialized,
//! so an overridden value goes through exactly the same parsing and
//! validation as one written in the file. Environment values are strings;
//! each is converted to the TOML type that the key has in
//! `Config::default()` (string, integer, boolean or float), so that
//! `WAGATE_ADMIN__TOKEN=12345` stays a string while
//! `WAGATE_LIMITS__MAX_IN_FLIGHT=100` becomes an integer.
//!
//! Only scalar keys of top-level sections can be overridden: arrays of tables
//! (`[[rules]]`) and nested tables have no flat name, and belong in the file.

use std::collections::HashMap;

use toml::{Table, Value};

use super::ConfigError;

/// Every override variable starts with this.
const PREFIX: &str = "WAGATE_";

/// Separates section from key. A single `_` does not, so the admin client's
/// `WAGATE_ADMIN_URL` and `WAGATE_ADMIN_TOKEN` are not overrides.
const SEPARATOR: &str = "__";

/// One applied override, kept so that a later error about `key` can say
/// which variable set it.
#[derive(Debug)]
pub(super) struct Applied {
    /// The variable, e.g. `WAGATE_UPSTREAM__TIMEOUT`.
    pub(super) var: String,
    /// The dotted key it set, e.g. `upstream.timeout`.
    pub(super) key: String,
}

/// Applies every override in `env` to `doc`, the parsed config file.
///
/// `defaults` is `Config::default()` as a table: it says which sections and
/// keys exist and what type each key has. Variables are applied in name
/// order so that the first error reported does not depend on hash order.
pub(super) fn apply(
    doc: &mut Table,
    defaults: &Table,
    env: &HashMap<String, String>,
) -> Result<Vec<Applied>, ConfigError> {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(var, _)| {
            var.strip_prefix(PREFIX)
                .is_some_and(|rest| rest.contains(SEPARATOR))
        })
        .collect();
    vars.sort();

    let mut applied = Vec::with_capacity(vars.len());
    for (var, raw) in vars {
        let (section, key, value) = resolve(var, raw, defaults)?;
        // A section written as something other than a table (`upstream = 1`)
        // is left alone: deserializing reports it against the file.
        if let Value::Table(table) = doc
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            table.insert(key.clone(), value);
        }
        applied.push(Applied {
            var: var.clone(),
            key: format!("{section}.{key}"),
        });
    }
    Ok(applied)
}

/// The section, key and typed value that `var=raw` sets.
fn resolve(var: &str, raw: &str, defaults: &Table) -> Result<(String, String, Value), ConfigError> {
    let fail = |reason: String| ConfigError::Override {
        var: var.to_owned(),
        reason,
    };
    let rest = var.strip_prefix(PREFIX).unwrap_or(var);
    let (section, key) = rest.split_once(SEPARATOR).unwrap_or((rest, ""));
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());

    let Some(section_default) = defaults.get(&section) else {
        return Err(fail(format!(
            "unknown section `{section}`, expected one of {}",
            list(defaults.iter().filter(|(_, v)| v.is_table()))
        )));
    };
    let Value::Table(section_default) = section_default else {
        return Err(fail(format!(
            "`{section}` is not a section of plain keys; set it in the config file"
        )));
    };
    let Some(template) = section_default.get(&key) else {
        return Err(fail(format!(
            "unknown key `{key}` in section [{section}], expected one of {}",
            list(section_default.iter())
        )));
    };
    let value = typed(template, raw).map_err(|expected| match expected {
        Some(expected) => fail(format!("{section}.{key} expects {expected}, got `{raw}`")),
        None => fail(format!(
            "{section}.{key} is not a plain value; set it in the config file"
        )),
    })?;
    Ok((section, key, value))
}

/// `raw` as a TOML value of the same type as `template`. On failure, what
/// was expected, or `None` if the key cannot be set from a string at all.
fn typed(template: &Value, raw: &str) -> Result<Value, Option<&'static str>> {
    let raw_trimmed = raw.trim();
    match template {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Integer(_) => raw_trimmed
            .parse()
            .map(Value::Integer)
            .map_err(|_| Some("an integer")),
        Value::Boolean(_) => raw_trimmed
            .parse()
            .map(Value::Boolean)
            .map_err(|_| Some("`true` or `false`")),
        Value::Float(_) => raw_trimmed
            .parse()
            .map(Value::Float)
            .map_err(|_| Some("a number")),
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => Err(None),
    }
}

/// `a`, `b`, `c`: the keys of `entries`, for "expected one of" messages.
fn list<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    entries
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
