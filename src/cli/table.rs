//! The admin API's answers as people read them: tables whose last column
//! (the reason, usually) is cut to fit the terminal, `key: value` lines for
//! one breaker or WABA, and times as "12m ago" next to the timestamp.
//!
//! Everything here reads the JSON loosely: a field the admin API drops or
//! adds later shows as `-` or as one more line, never as a failure.

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{ColumnConstraint, ContentArrangement, Row, Table};
use serde_json::{Map, Value};

/// The width tables must fit: the terminal's when stdout is one, else
/// `COLUMNS` when set, else none (piped output keeps whole reasons).
pub(super) fn width() -> Option<u16> {
    terminal_size::terminal_size_of(std::io::stdout())
        .map(|(width, _)| width.0)
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .filter(|&w| w > 0)
}

/// `at` relative to `now` (both unix ms): "12m ago", "in 2h", "now".
pub(super) fn relative(at: u64, now: u64) -> String {
    if at.abs_diff(now) < 1000 {
        return "now".to_owned();
    }
    let span = short(Duration::from_millis(at.abs_diff(now)));
    if at < now {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A span in at most its two largest units, rounded down: "45s", "12m",
/// "1h59m", "3d4h".
fn short(span: Duration) -> String {
    let s = span.as_secs();
    let two = |big: u64, unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86_400, "d", s % 86_400 / 3600, "h"),
    }
}

/// `GET /admin/breakers`.
pub(super) fn breakers(body: &Value, now: u64, width: Option<u16>) -> String {
    let rows: Vec<Vec<String>> = items(body, "breakers")
        .iter()
        .map(|b| {
            let number = b.get("key").or_else(|| b.get("phone_number_id"));
            vec![
                text(b.get("state")),
                text(number),
                text(b.get("cause_code")),
                time(b.get("since_unix_ms"), now),
                text(b.get("waba")),
                text(b.get("reason")),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no open, held or ramping breakers\n".to_owned();
    }
    table(
        &["STATE", "NUMBER", "CAUSE", "SINCE", "WABA", "REASON"],
        rows,
        width,
    )
}

/// Field order of one breaker: what an operator looks for first.
const BREAKER_FIELDS: &[&str] = &[
    "phone_number_id",
    "display_phone_number",
    "state",
    "cause_code",
    "source",
    "since",
    "trips",
    "reason",
    "held_until",
    "retry_after_seconds",
    "min_open_until",
    "ramp_stage",
    "ramp_rate",
    "waba",
    "waba_gate",
    "health",
    "health_errors",
    "refused_sends",
    "fbtrace_id",
    "wamid",
    "details",
];

/// `GET /admin/breakers/{id}`: its fields, then its last transitions.
pub(super) fn breaker(body: &Value, now: u64, width: Option<u16>) -> String {
    let mut out = fields(body, BREAKER_FIELDS, &["transitions"], now);
    out.push('\n');
    match body.get("transitions") {
        Some(Value::Array(entries)) if !entries.is_empty() => {
            out.push_str("transitions (newest first):\n");
            out.push_str(&audit_table(entries, now, width));
        }
        Some(Value::Array(_)) => out.push_str("transitions: none recorded\n"),
        _ => out.push_str("transitions: unavailable (the breaker store could not be read)\n"),
    }
    out
}

/// `POST /admin/breakers/{id}/{action}`.
pub(super) fn breaker_change(id: &str, body: &Value, now: u64) -> String {
    let outcome = text(body.get("outcome"));
    let breaker = body.get("breaker").filter(|b| b.is_object());
    let mut out = match breaker {
        None => format!("{id}: {outcome}, now closed\n"),
        Some(b) => {
            let mut line = format!("{id}: {outcome}, now {}", text(b.get("state")));
            if let Some(Value::String(until)) = b.get("held_until") {
                line.push_str(&format!(" until {}", stamp(until, now)));
            }
            line.push('\n');
            line.push_str(&format!("reason: {}\n", text(b.get("reason"))));
            line
        }
    };
    if outcome == "pending" {
        out.push_str(PENDING);
    }
    out
}

const PENDING: &str = "pending: applied by the gateway that answered; the breaker store \
                       gets it once it is reachable again\n";

/// `GET /admin/wabas`.
pub(super) fn wabas(body: &Value, now: u64, width: Option<u16>) -> String {
    let rows: Vec<Vec<String>> = items(body, "wabas")
        .iter()
        .map(|w| {
            vec![
                text(w.get("waba")),
                text(w.get("numbers")),
                text(w.get("not_closed")),
                gate(w.get("gate"), now),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no WABA is known yet\n".to_owned();
    }
    table(&["WABA", "NUMBERS", "NOT CLOSED", "GATE"], rows, width)
}

/// `GET /admin/wabas/{id}`: its gate, restrictions and events, then its
/// numbers.
pub(super) fn waba(body: &Value, now: u64, width: Option<u16>) -> String {
    let mut out = fields(
        body,
        &["waba", "gate", "restrictions", "events"],
        &["numbers"],
        now,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = items(body, "numbers")
        .iter()
        .map(|n| {
            vec![
                text(n.get("phone_number_id")),
                text(n.get("display_phone_number")),
                text(n.get("state")),
                text(n.get("cause_code")),
                match n.get("since") {
                    Some(Value::String(since)) => {
                        rfc3339_ms(since).map_or_else(|| since.clone(), |at| relative(at, now))
                    }
                    _ => "-".to_owned(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("numbers: none known\n");
    } else {
        out.push_str("numbers:\n");
        out.push_str(&table(
            &["NUMBER", "DISPLAY", "STATE", "CAUSE", "SINCE"],
            rows,
            width,
        ));
    }
    out
}

/// `POST /admin/wabas/{id}/{action}`: the outcome for each number.
pub(super) fn waba_change(id: &str, body: &Value, width: Option<u16>) -> String {
    let numbers = items(body, "numbers");
    let mut out = format!("WABA {id}: {}\n", text(body.get("outcome")));
    if numbers.is_empty() {
        out.push_str("numbers: none known\n");
        return out;
    }
    let pending = numbers.iter().any(|n| n["outcome"] == "pending");
    let rows = numbers
        .iter()
        .map(|n| {
            vec![
                text(n.get("phone_number_id")),
                text(n.get("outcome")),
                n.get("error").map_or_else(String::new, |e| text(Some(e))),
            ]
        })
        .collect();
    out.push_str(&table(&["NUMBER", "OUTCOME", "ERROR"], rows, width));
    if pending {
        out.push_str(PENDING);
    }
    out
}

/// `GET /admin/audit`.
pub(super) fn audit(body: &Value, now: u64, width: Option<u16>) -> String {
    let entries = items(body, "entries");
    if entries.is_empty() {
        return "no transitions recorded\n".to_owned();
    }
    audit_table(entries, now, width)
}

fn audit_table(entries: &[Value], now: u64, width: Option<u16>) -> String {
    let rows = entries
        .iter()
        .map(|e| match e.get("raw") {
            // A line the admin API could not parse, shown as it is.
            Some(raw) => {
                let mut row = vec!["-".to_owned(); 5];
                row.push(text(Some(raw)));
                row
            }
            None => vec![
                time(e.get("at"), now),
                text(e.get("key")),
                format!("{}→{}", text(e.get("from")), text(e.get("to"))),
                text(e.get("source")),
                text(e.get("by")),
                text(e.get("reason")),
            ],
        })
        .collect();
    table(
        &["AT", "NUMBER", "FROM→TO", "SOURCE", "BY", "REASON"],
        rows,
        width,
    )
}

/// A table without borders, kubectl-like; with a `width`, rows stay one
/// line each and the last column is cut to fit.
fn table(header: &[&str], rows: Vec<Vec<String>>, width: Option<u16>) -> String {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_truncation_indicator("…");
    let mut head = Row::from(header.to_vec());
    head.max_height(1);
    table.set_header(head);
    for cells in rows {
        let mut row = Row::from(cells.iter().map(|c| one_line(c)).collect::<Vec<_>>());
        row.max_height(1);
        table.add_row(row);
    }
    match width {
        Some(width) => {
            table.set_width(width);
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    let last = header.len().saturating_sub(1);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        // Ids, states and times are never cut; the last column gives way.
        if column.index < last {
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// `key: value` lines of `body`: `first` in that order, then the other
/// fields alphabetically, except `skip`. Nested objects are flattened
/// (`health.last_poll`); nulls and empty lists are left out.
fn fields(body: &Value, first: &[&str], skip: &[&str], now: u64) -> String {
    let mut lines = Vec::new();
    if let Value::Object(map) = body {
        for (key, value) in ordered(map, first) {
            if !skip.contains(&key) {
                flatten(key, key, value, now, &mut lines);
            }
        }
    }
    let pad = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<pad$} {v}\n", format!("{k}:")))
        .collect()
}

fn ordered<'a>(map: &'a Map<String, Value>, first: &[&str]) -> Vec<(&'a str, &'a Value)> {
    let mut out: Vec<(&str, &Value)> = first
        .iter()
        .filter_map(|k| map.get_key_value(*k))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    out.extend(
        map.iter()
            .filter(|(k, _)| !first.contains(&k.as_str()))
            // Shown with the timestamp beside them.
            .filter(|(k, _)| !k.ends_with("_unix_ms"))
            .map(|(k, v)| (k.as_str(), v)),
    );
    out
}

/// Fields holding unix milliseconds as numbers (not RFC 3339 strings).
const MILLIS_FIELDS: &[&str] = &["at", "since", "until", "next_poll", "last_poll"];

fn flatten(name: &str, field: &str, value: &Value, now: u64, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, value) in ordered(map, &[]) {
                flatten(&format!("{name}.{key}"), key, value, now, out);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            if !items.is_empty() {
                let joined: Vec<String> = items.iter().map(|v| text(Some(v))).collect();
                out.push((name.to_owned(), joined.join(", ")));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{name}[{i}]"), field, item, now, out);
            }
        }
        Value::Number(n) if MILLIS_FIELDS.contains(&field) => {
            let shown = n
                .as_u64()
                .map_or_else(|| n.to_string(), |ms| millis(ms, now));
            out.push((name.to_owned(), shown));
        }
        Value::String(s) => out.push((name.to_owned(), stamp(s, now))),
        other => out.push((name.to_owned(), text(Some(other)))),
    }
}

/// An RFC 3339 timestamp with its relative time; any other string as it is.
fn stamp(s: &str, now: u64) -> String {
    match rfc3339_ms(s) {
        Some(at) => format!("{s} ({})", relative(at, now)),
        None => one_line(s),
    }
}

fn millis(ms: u64, now: u64) -> String {
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
        Some(t) => format!(
            "{} ({})",
            humantime::format_rfc3339_millis(t),
            relative(ms, now)
        ),
        None => ms.to_string(),
    }
}

fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// A time column: unix ms as "12m ago".
fn time(value: Option<&Value>, now: u64) -> String {
    value
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |ms| relative(ms, now))
}

/// The array at `body[key]`, or none.
fn items<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A cell: strings as they are, numbers and booleans written out, null or
/// absent as `-`, anything else as compact JSON.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => one_line(s),
        Some(other) => other.to_string(),
    }
}

/// A reason can hold line breaks; a row stays one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn gate(value: Option<&Value>, now: u64) -> String {
    let Some(gate) = value.filter(|g| g.is_object()) else {
        return "-".to_owned();
    };
    let mut out = match gate.get("hold") {
        Some(Value::String(hold)) => format!("held: {}", one_line(hold)),
        _ => format!(
            "{} ({}) since {}",
            text(gate.get("event")),
            text(gate.get("code")),
            time(gate.get("since"), now)
        ),
    };
    if let Some(until) = gate.get("until").and_then(Value::as_u64) {
        out.push_str(&format!(", ends {}", relative(until, now)));
    }
    out
}

#[cfg(test)]
mod tests;
