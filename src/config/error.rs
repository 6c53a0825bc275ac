//! The one error type of the config boundary.
//!
//! Every variant names what the operator has to fix: the file, the line and
//! column, the key (`upstream.timeout`) or the environment variable
//! (`WAGATE_UPSTREAM__TIMEOUT`). No variant carries a secret's value.

use std::path::PathBuf;

/// Why the configuration could not be loaded. Start-up stops on any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file exists (or was asked for) but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The file is not valid TOML.
    #[error("invalid toml at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML parser expected.
        message: String,
    },

    /// A value has the wrong type or shape, or a key or section is unknown.
    #[error("{key}: {reason}")]
    Parse {
        /// Dotted path of the offending key, e.g. `upstream.timeout`; `.` for
        /// the top level (an unknown section).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A value parsed but is out of range or inconsistent.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `limits.max_in_flight`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `WAGATE_<SECTION>__<KEY>` variable names no known key, or its value
    /// does not fit the key's type.
    #[error("{var}: {reason}")]
    Override {
        /// The environment variable, e.g. `WAGATE_LIMITS__MAX_IN_FLIGHT`.
        var: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The built-in defaults could not be rendered as TOML. This is a bug in
    /// wagate (a config type that TOML cannot represent), not an operator
    /// mistake.
    #[error("cannot render the configuration as toml: {0}")]
    Render(#[from] toml::ser::Error),
}

impl ConfigError {
    /// An [`Invalid`](Self::Invalid) error for `key`.
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The dotted key the error is about, for the value-level variants.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Notes that `key` was set by the environment variable `var`, so the
    /// operator looks there rather than in the file.
    pub(crate) fn set_by(mut self, var: &str) -> Self {
        if let Self::Parse { reason, .. } | Self::Invalid { reason, .. } = &mut self {
            reason.push_str(" (set by ");
            reason.push_str(var);
            reason.push(')');
        }
        self
    }
}
