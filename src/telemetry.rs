//! Logging set-up: `pretty` or `json` lines on stderr, filtered by
//! `log.level`.
//!
//! Nothing in wagate logs headers, query strings or bodies, which is where
//! access tokens, PINs and webhook signatures travel. The HTTP libraries
//! underneath can log frames at debug and trace level, so they are held at
//! `warn` unless the filter names them explicitly.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Log, LogFormat};

/// Libraries whose debug output can include request details.
const QUIET: &str =
    "hyper=warn,hyper_util=warn,h2=warn,rustls=warn,reqwest=warn,redis=warn,tower=warn,axum=warn";

/// The filter for `level`, with the HTTP libraries held at `warn` unless
/// `level` names them itself.
pub fn filter(level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(format!("{QUIET},{level}"))
}

/// Installs the global subscriber writing to `writer`. Call once, from
/// `main` (tests capture logs by running the binary).
pub fn init<W>(config: &Log, writer: W) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = filter(&config.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    }
}
