//! `wagate breakers`, `wagate wabas` and `wagate audit`: the admin API from
//! a shell. Each command is one request to the admin listener; the answer
//! is printed as a table for people or, with `--json`, as the admin API's
//! JSON for scripts, and the exit code says how it went ([`Exit`]).
//!
//! The arguments are in `args` rather than in `main.rs`, so that `main`
//! stays a dispatcher; `client` makes the request and `table` prints
//! the answer.

mod args;
mod client;
mod table;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::{Value, json};

pub use args::{AdminArgs, AdminCommand, BreakersCommand, Change, StateFilter, Trip, WabasCommand};
use client::{Client, Failure};

/// The exit codes, as `--help` shows them. Scripts rely on them: keep them
/// stable.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the admin API refused the request (400 or another 4xx not below), or a usage error
  2  not found (404): no such breaker or WABA
  3  not allowed (401, 403, 429): missing or wrong token, changes disabled, too many failed attempts
  4  the admin listener cannot be reached, or did not answer in time
  5  the admin listener failed (5xx), or its answer is not the admin API's JSON";

/// How a command ended, as its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Done = 0,
    /// 1: refused (400 and other 4xx) or a usage error.
    Refused = 1,
    /// 2: 404.
    NotFound = 2,
    /// 3: 401, 403 or 429.
    NotAllowed = 3,
    /// 4: no connection, or no answer in time.
    Unreachable = 4,
    /// 5: 5xx, or an answer that is not the admin API's.
    ServerError = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// One request and how its answer is shown.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    show: Show,
}

/// How an answer is printed for people.
enum Show {
    Breakers,
    Breaker,
    BreakerChange(String),
    Wabas,
    Waba,
    WabaChange(String),
    Audit,
}

impl Call {
    fn get(path: String, show: Show) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            show,
        }
    }

    fn change(kind: &str, action: &str, change: Change, ttl: Option<Duration>) -> Self {
        let mut body = json!({});
        if let Some(reason) = change.reason {
            body["reason"] = json!(reason);
        }
        if let Some(ttl) = ttl {
            body["ttl"] = json!(humantime::format_duration(ttl).to_string());
        }
        let show = match kind {
            "breakers" => Show::BreakerChange(change.id.clone()),
            _ => Show::WabaChange(change.id.clone()),
        };
        Self {
            method: Method::POST,
            path: format!("/admin/{kind}/{}/{action}", change.id),
            body: Some(body),
            show,
        }
    }
}

/// `path` with `params` (those set) as its query.
fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

fn plan(command: AdminCommand) -> (AdminArgs, Call) {
    match command {
        AdminCommand::Breakers { command, admin } => {
            let call = match command {
                BreakersCommand::List { state, waba, cause } => {
                    let params = [
                        ("state", state.map(|s| s.as_str().to_owned())),
                        ("waba", waba),
                        ("cause", cause.map(|c| c.to_string())),
                    ];
                    Call::get(with_query("/admin/breakers", &params), Show::Breakers)
                }
                BreakersCommand::Show { id } => {
                    Call::get(format!("/admin/breakers/{id}"), Show::Breaker)
                }
                BreakersCommand::Reset(change) => Call::change("breakers", "reset", change, None),
                BreakersCommand::Trip(trip) => {
                    Call::change("breakers", "trip", trip.change, trip.ttl)
                }
                BreakersCommand::Release(change) => {
                    Call::change("breakers", "release", change, None)
                }
            };
            (admin, call)
        }
        AdminCommand::Wabas { command, admin } => {
            let call = match command {
                WabasCommand::List => Call::get("/admin/wabas".to_owned(), Show::Wabas),
                WabasCommand::Show { id } => Call::get(format!("/admin/wabas/{id}"), Show::Waba),
                WabasCommand::Reset(change) => Call::change("wabas", "reset", change, None),
                WabasCommand::Trip(trip) => Call::change("wabas", "trip", trip.change, trip.ttl),
                WabasCommand::Release(change) => Call::change("wabas", "release", change, None),
            };
            (admin, call)
        }
        AdminCommand::Audit {
            number,
            limit,
            admin,
        } => {
            let params = [("number", number), ("limit", limit.map(|l| l.to_string()))];
            let call = Call::get(with_query("/admin/audit", &params), Show::Audit);
            (admin, call)
        }
    }
}

/// Runs one admin command: prints the answer on stdout, what went wrong on
/// stderr, and returns the exit code.
pub fn run(command: AdminCommand) -> ExitCode {
    let (admin, call) = plan(command);
    let json = admin.json;
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Refused, format!("cannot start: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let client = Client::new(&admin.admin_url, admin.token, admin.timeout)?;
                client
                    .send(call.method, &call.path, call.body.as_ref())
                    .await
            })
        });
    match answer {
        Ok(body) => {
            let text = if json {
                pretty(&body)
            } else {
                render(&call.show, &body)
            };
            out(&text).into()
        }
        Err(failure) => {
            // A script reading --json gets the admin API's error body too.
            if let (true, Some(body)) = (json, &failure.body) {
                out(&pretty(body));
            }
            eprintln!("wagate: {failure}");
            failure.exit.into()
        }
    }
}

fn pretty(body: &Value) -> String {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    text.push('\n');
    text
}

/// Writes `text` to stdout. A reader that stopped early (`| head`) is no
/// failure; print! would panic on it.
fn out(text: &str) -> Exit {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Exit::Done,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Done,
        Err(e) => {
            eprintln!("wagate: cannot write the answer: {e}");
            Exit::Refused
        }
    }
}

fn render(show: &Show, body: &Value) -> String {
    let now = now_ms();
    let width = table::width();
    match show {
        Show::Breakers => table::breakers(body, now, width),
        Show::Breaker => table::breaker(body, now, width),
        Show::BreakerChange(id) => table::breaker_change(id, body, now),
        Show::Wabas => table::wabas(body, now, width),
        Show::Waba => table::waba(body, now, width),
        Show::WabaChange(id) => table::waba_change(id, body, width),
        Show::Audit => table::audit(body, now, width),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
