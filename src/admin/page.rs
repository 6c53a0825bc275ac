//! The status page at `/`: every breaker that is not closed, rendered on the
//! server, with buttons that reset, release or hold a number through the
//! admin API.
//!
//! The page is one self-contained document: its style and script
//! (`page.css`, `page.js`) are inlined and allowed by their hashes in the
//! Content-Security-Policy, so it loads nothing from anywhere and works
//! offline. The script keeps the admin token in a variable only and
//! refreshes by fetching `/` again and swapping in its `#status` element,
//! so there is one renderer, this one.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::AdminState;
use super::breakers::{View, newest_first, views};
use crate::breaker::UnixMillis;
use crate::engine::now;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The policy: nothing but this document's own style and script, requests
/// back to this listener only, and never inside a frame (an operator's
/// click must not be borrowed by another site).
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        hash(SCRIPT),
        hash(STYLE)
    )
});

/// What the summary line shows besides the breakers.
pub(super) struct Summary {
    /// `/readyz`'s word: starting, ready, degraded or draining.
    pub(super) status: &'static str,
    /// `embedded` or `redis`.
    pub(super) store: &'static str,
    /// The store is unreachable and the gateway serves from its snapshot.
    pub(super) degraded: bool,
}

/// `GET /`.
pub(super) async fn page(State(state): State<AdminState>) -> Response {
    let mut breakers = state.breakers.list();
    newest_first(&mut breakers);
    let views = views(&state, &breakers).await;
    let (_, status) = state.readiness.status();
    let degraded = state.breakers.is_degraded();
    let summary = Summary {
        status: if degraded && status == "ready" {
            "degraded"
        } else {
            status
        },
        store: state.breakers.store_kind(),
        degraded,
    };
    let html = render(&summary, &views, now());
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The page shows live state and is fetched again every few seconds.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The whole document.
pub(super) fn render(summary: &Summary, views: &[View], now: UnixMillis) -> String {
    let mut html = String::with_capacity(8 * 1024 + views.len() * 1024);
    html.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>wagate status</title>\n<style>",
    );
    html.push_str(STYLE);
    html.push_str(
        "</style>\n</head>\n<body>\n<header><h1>wagate</h1>\
         <p>Breakers that are not closed, as this replica sees them. Refreshes every 5 s.</p>\
         </header>\n",
    );
    render_status(&mut html, summary, views, now);
    html.push_str(DIALOG);
    html.push_str("<script>");
    html.push_str(SCRIPT);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

/// The confirmation dialog the buttons open: the only place the token is
/// typed, and the place the API's errors are shown.
const DIALOG: &str = r#"<p id="notice" role="status" aria-live="polite"></p>
<dialog id="act">
<form id="act-form">
<h2 id="act-title"></h2>
<p id="act-about"></p>
<label id="ttl-field">Hold for (e.g. 2h; empty: until released)<input id="ttl" autocomplete="off" spellcheck="false"></label>
<label>Reason (optional)<input id="reason" maxlength="1000" autocomplete="off"></label>
<label id="token-field">Admin token<input id="token" type="password" autocomplete="off"></label>
<p id="act-error" class="error" role="alert"></p>
<div class="buttons"><button type="button" id="act-cancel">Cancel</button><button type="submit" id="act-submit">Go</button></div>
</form>
</dialog>
"#;

/// The `#status` element: the summary line and the table, which the
/// script swaps in from a fresh copy of the page.
fn render_status(html: &mut String, summary: &Summary, views: &[View], now: UnixMillis) {
    let count = |state: &str| views.iter().filter(|v| v.state == state).count();
    // A number's pair and class breakers share its counter: count it once.
    let mut numbers: Vec<(&str, u64)> = views
        .iter()
        .map(|v| (v.phone_number_id.as_str(), v.refused_sends))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let refused: u64 = numbers.iter().map(|(_, n)| n).sum();
    let _ = write!(
        html,
        "<main id=\"status\" data-rendered=\"{}\">\n<p class=\"summary\"><strong>{} open, {} held, \
         {} ramping</strong> · {} sends refused for these numbers since this replica started · \
         store {} · {}",
        now.0,
        count("open"),
        count("held"),
        count("ramping"),
        refused,
        Esc(summary.store),
        Esc(summary.status),
    );
    if summary.degraded {
        html.push_str(
            " <span class=\"warn\">the store is unreachable: serving from the last snapshot</span>",
        );
    }
    html.push_str("</p>\n");
    if views.is_empty() {
        html.push_str("<p class=\"empty\">Every breaker is closed.</p>\n</main>\n");
        return;
    }
    html.push_str(
        "<table>\n<thead><tr><th>Number</th><th>State</th><th>Cause</th><th>Since</th>\
         <th>WABA</th><th>Reason</th><th class=\"num\">Refused</th><th>Actions</th></tr></thead>\n<tbody>\n",
    );
    for view in views {
        render_row(html, view, now);
    }
    html.push_str("</tbody>\n</table>\n</main>\n");
}

fn render_row(html: &mut String, v: &View, now: UnixMillis) {
    let partial = v.key != v.phone_number_id;
    let _ = write!(
        html,
        "<tr data-id=\"{}\" data-state=\"{}\">\n<td class=\"number\">{}",
        Esc(&v.key),
        Esc(v.state),
        Esc(&v.phone_number_id)
    );
    if let Some((_, below)) = v.key.split_once(':') {
        let _ = write!(html, "<small>{}</small>", Esc(below));
    }
    let _ = write!(
        html,
        "</td>\n<td><span class=\"state state-{0}\">{0}</span>",
        Esc(v.state)
    );
    if let Some(until) = &v.held_until {
        // The view carries the end as RFC 3339 only; shown as "in 2h" with
        // the instant in the title, like `since`.
        let left = humantime::parse_rfc3339(until)
            .map(|t| UnixMillis::from_system_time(t).since(now))
            .map_or_else(|_| until.clone(), |left| format!("in {}", span(left)));
        let _ = write!(
            html,
            "<small>ends <time datetime=\"{0}\" title=\"{0}\">{1}</time></small>",
            Esc(until),
            Esc(&left)
        );
    }
    if let Some(stage) = v.ramp_stage {
        match v.ramp_rate {
            Some(rate) => {
                let _ = write!(html, "<small>stage {stage}, {rate}/s</small>");
            }
            None => {
                let _ = write!(html, "<small>stage {stage}: the probe</small>");
            }
        }
    }
    if v.trips > 1 {
        let _ = write!(html, "<small>{} trips</small>", v.trips);
    }
    html.push_str("</td>\n<td>");
    if v.cause_code == 0 && v.source == "operator" {
        html.push_str("<span class=\"meaning\">held by an operator</span>");
    } else {
        let _ = write!(html, "<code>{}</code>", v.cause_code);
        if let Some(meaning) = meaning(v.cause_code) {
            let _ = write!(html, " <span class=\"meaning\">{meaning}</span>");
        }
    }
    let _ = write!(html, "<small>from {}</small>", Esc(v.source));
    let _ = write!(
        html,
        "</td>\n<td><time datetime=\"{0}\" title=\"{0}\">{1}</time></td>\n<td>{2}</td>\n<td class=\"reason\">",
        Esc(&v.since),
        ago(now.since(UnixMillis(v.since_unix_ms))),
        v.waba.as_deref().map_or(Esc("unknown"), Esc),
    );
    let _ = write!(html, "<p>{}</p>", Esc(&v.reason));
    if let Some(details) = &v.details {
        let _ = write!(html, "<p>{}</p>", Esc(details));
    }
    if !v.health_errors.is_empty() {
        html.push_str("<ul>");
        for e in &v.health_errors {
            let _ = write!(html, "<li><code>{}</code> {}", e.code, Esc(&e.description));
            if let Some(solution) = &e.possible_solution {
                let _ = write!(html, "<br><em>{}</em>", Esc(solution));
            }
            html.push_str("</li>");
        }
        html.push_str("</ul>");
    }
    let _ = write!(
        html,
        "</td>\n<td class=\"num\">{}</td>\n<td class=\"actions\">",
        v.refused_sends
    );
    if partial {
        // The admin API acts on a number's own breaker; a pair or class
        // breaker ends with its cool-down or with the number's release.
        html.push_str("<small>ends by itself</small>");
    } else {
        for (action, label) in [("reset", "Reset"), ("release", "Release"), ("trip", "Hold")] {
            let _ = write!(
                html,
                "<button type=\"button\" data-action=\"{action}\" data-number=\"{}\">{label}</button>",
                Esc(&v.phone_number_id)
            );
        }
    }
    html.push_str("</td>\n</tr>\n");
}

/// Meta's title for the codes that open breakers, in Meta's words.
fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        368 => "Temporarily blocked for policies violations",
        130429 => "Rate limit hit (throughput)",
        130497 => "Business account restricted from messaging users in this country",
        131031 => "Account has been locked",
        131042 => "Business eligibility payment issue",
        131048 => "Spam rate limit hit",
        131056 => "(Business Account, Consumer Account) pair rate limit hit",
        131057 => "Account in maintenance mode",
        133010 => "Phone number not registered",
        _ => return None,
    })
}

/// `elapsed` as an operator reads it at a glance: "12m ago".
fn ago(elapsed: Duration) -> String {
    format!("{} ago", span(elapsed))
}

/// `d` in its largest whole unit, with minutes under two days since "1h"
/// would hide most of an hour: "45s", "12m", "1h59m", "3h", "4d".
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 if s % 3600 < 60 => format!("{}h", s / 3600),
        3600..172_800 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86_400),
    }
}

/// Text made safe for HTML, in element content and in quoted attributes.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests;
