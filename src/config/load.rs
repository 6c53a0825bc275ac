//! Reading the config: file → TOML table → environment overrides → strict
//! deserialization → validation, once, at start-up.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use toml::Table;

use super::overrides::{self, Applied};
use super::{Config, ConfigError};

/// The file read when no `--config` is given, relative to the working
/// directory. If it does not exist the built-in defaults are used.
pub const DEFAULT_PATH: &str = "config/wagate.toml";

impl Config {
    /// Loads the configuration.
    ///
    /// Reads `path`, or [`DEFAULT_PATH`] if `path` is `None` (a missing
    /// default file means built-in defaults), applies the
    /// `WAGATE_<SECTION>__<KEY>` overrides found in `env`, deserializes
    /// strictly and validates. `env` is passed in rather than read here so
    /// that tests never mutate the process environment; `main` passes
    /// `std::env::vars().collect()`.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => read(path)?,
            None => match read(Path::new(DEFAULT_PATH)) {
                Err(ConfigError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    String::new()
                }
                other => other?,
            },
        };
        Self::from_toml_str(&text, env)
    }

    /// Like [`load`](Self::load), from TOML text instead of a file.
    pub fn from_toml_str(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut doc = parse_table(text)?;
        let defaults = Table::try_from(Self::default())?;
        let applied = overrides::apply(&mut doc, &defaults, env)?;
        let config = deserialize(doc).map_err(|e| blame_override(e, &applied))?;
        config.validate().map_err(|e| blame_override(e, &applied))
    }

    /// The effective configuration as TOML, for `wagate check-config`.
    ///
    /// Secrets that are set print as `<redacted>`; `store.redis_url` prints
    /// its hosts with passwords replaced.
    pub fn to_redacted_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => text,
            // Only a config type TOML cannot represent gets here; a comment
            // keeps the output valid TOML and the cause visible.
            Err(e) => format!("# cannot render the configuration as toml: {e}\n"),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses TOML text into a table, reporting syntax errors by line and column.
fn parse_table(text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            ConfigError::Syntax {
                line,
                column,
                message: e.message().to_owned(),
            }
        }
        None => ConfigError::Syntax {
            line: 1,
            column: 1,
            message: e.message().to_owned(),
        },
    })
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Deserializes the merged table, naming the offending key on error.
fn deserialize(doc: Table) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().message();
        // serde says "field"; in a TOML file these are keys, and at the top
        // level, sections.
        let reason = match message.strip_prefix("unknown field") {
            Some(rest) if e.path().iter().count() == 1 => format!("unknown section{rest}"),
            Some(rest) => format!("unknown key{rest}"),
            None => message.to_owned(),
        };
        ConfigError::Parse { key, reason }
    })
}

/// Adds "(set by WAGATE_…)" to an error about a key that an override set.
fn blame_override(e: ConfigError, applied: &[Applied]) -> ConfigError {
    let var = e
        .key()
        .and_then(|key| applied.iter().find(|a| a.key == key))
        .map(|a| a.var.clone());
    match var {
        Some(var) => e.set_by(&var),
        None => e,
    }
}
