//! The arguments of the admin commands, as clap reads them.

use std::time::Duration;

use crate::config::Secret;

use super::EXIT_CODES;

/// The admin commands, flattened into `wagate`'s own.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Read, reset, trip (hold) or release phone numbers' breakers through the admin API.
    #[command(after_help = EXIT_CODES)]
    Breakers {
        #[command(subcommand)]
        command: BreakersCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Read, reset, trip (hold) or release every number of a WhatsApp Business Account.
    #[command(after_help = EXIT_CODES)]
    Wabas {
        #[command(subcommand)]
        command: WabasCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Read the audit trail: every transition, newest first, with who made it.
    #[command(after_help = EXIT_CODES)]
    Audit {
        /// Only this phone number id's transitions.
        #[arg(long, value_name = "ID", value_parser = graph_id)]
        number: Option<String>,
        /// At most this many entries, 1 to 1000 [default: 100].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin listener is and how to talk to it; global, so they may
/// follow the subcommand (`wagate breakers list --json`).
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin listener's URL (http:// or https://, optionally with a path prefix).
    #[arg(
        long,
        global = true,
        env = "WAGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    pub(super) admin_url: String,
    /// The bearer token that changes (reset, trip, release) need; prefer the
    /// environment variable, which other users cannot see. Never printed.
    #[arg(
        long,
        global = true,
        env = "WAGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_parser = secret,
        value_name = "TOKEN"
    )]
    pub(super) token: Option<Secret>,
    /// Print the admin API's JSON answer (pretty) instead of a table, for scripts.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// How long to wait for the connection and the answer.
    #[arg(long, global = true, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(super) timeout: Duration,
}

/// `wagate breakers …`.
#[derive(Debug, clap::Subcommand)]
pub enum BreakersCommand {
    /// List the breakers that are not closed, newest first.
    #[command(after_help = EXIT_CODES)]
    List {
        /// Only breakers in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// Only the numbers of this WhatsApp Business Account id.
        #[arg(long, value_name = "ID", value_parser = graph_id)]
        waba: Option<String>,
        /// Only breakers opened for this Graph error code, e.g. 131031.
        #[arg(long, value_name = "CODE")]
        cause: Option<i64>,
    },
    /// Show one phone number's breaker: its cause, health polls and last transitions.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The phone number id.
        #[arg(value_parser = graph_id)]
        id: String,
    },
    /// Close a number's breaker now: its sends are forwarded again.
    #[command(after_help = EXIT_CODES)]
    Reset(Change),
    /// Hold a number: its sends are refused until it is reset or released, or --ttl passes.
    #[command(after_help = EXIT_CODES)]
    Trip(Trip),
    /// Start a number's ramp now (one probe, then rising rates), skipping health.
    #[command(after_help = EXIT_CODES)]
    Release(Change),
}

/// `wagate wabas …`.
#[derive(Debug, clap::Subcommand)]
pub enum WabasCommand {
    /// List the WABAs whose numbers the gateway knows.
    #[command(after_help = EXIT_CODES)]
    List,
    /// Show one WABA: its gate, restrictions, account events and numbers.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The WABA id.
        #[arg(value_parser = graph_id)]
        id: String,
    },
    /// Close every known number of the WABA and lift its gate.
    #[command(after_help = EXIT_CODES)]
    Reset(Change),
    /// Hold every number of the WABA, also those learned later, until reset, release or --ttl.
    #[command(after_help = EXIT_CODES)]
    Trip(Trip),
    /// Start the ramp of every known number of the WABA now.
    #[command(after_help = EXIT_CODES)]
    Release(Change),
}

/// A reset or release: which id, and why.
#[derive(Debug, clap::Args)]
pub struct Change {
    /// The phone number id (breakers) or WABA id (wabas).
    #[arg(value_parser = graph_id)]
    pub(super) id: String,
    /// Why, for the audit trail [default: "<action> by <token name>"].
    #[arg(long, value_name = "TEXT")]
    pub(super) reason: Option<String>,
}

/// A trip: a change that may end by itself.
#[derive(Debug, clap::Args)]
pub struct Trip {
    #[command(flatten)]
    pub(super) change: Change,
    /// End the hold by itself after this long, e.g. 30m, 2h or 1d (at most 366d).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) ttl: Option<Duration>,
}

/// The states `breakers list --state` filters on (closed ones are not listed).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StateFilter {
    /// Refused until health or a cool-down lets go.
    Open,
    /// Refused until an operator lets go.
    Held,
    /// Coming back: a probe, then rising rates.
    Ramping,
}

impl StateFilter {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Held => "held",
            Self::Ramping => "ramping",
        }
    }
}

/// A Graph id (phone number or WABA): digits. Checked here too so that an id
/// always makes one clean path segment.
fn graph_id(raw: &str) -> Result<String, String> {
    if !raw.is_empty() && raw.len() <= 32 && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err("an id is a string of digits, such as 106540352242922".to_owned())
    }
}

fn secret(raw: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(raw))
}
