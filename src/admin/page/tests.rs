use super::*;
use crate::breaker::HealthError;

/// 2026-01-01T00:00:00Z.
const NOW: UnixMillis = UnixMillis(1_767_225_600_000);

fn view(key: &str, state: &'static str, code: i64, ago: Duration) -> View {
    let since = UnixMillis(NOW.0 - u64::try_from(ago.as_millis()).unwrap());
    View {
        phone_number_id: key.split(':').next().unwrap().to_owned(),
        key: key.to_owned(),
        state,
        cause_code: code,
        source: "response",
        since: since.to_string(),
        since_unix_ms: since.0,
        trips: 1,
        min_open_until: since.to_string(),
        min_open_until_unix_ms: since.0,
        fbtrace_id: None,
        wamid: None,
        details: None,
        reason: "locked".to_owned(),
        retry_after_seconds: 1,
        version: 1,
        health_errors: Vec::new(),
        ramp_stage: None,
        ramp_rate: None,
        held_until: None,
        waba: Some("100000000000009".to_owned()),
        refused_sends: 0,
    }
}

fn ready() -> Summary {
    Summary {
        status: "ready",
        store: "embedded",
        degraded: false,
    }
}

/// The `<tr>` of `key`.
fn row<'a>(html: &'a str, key: &str) -> &'a str {
    let start = html
        .find(&format!("<tr data-id=\"{key}\""))
        .unwrap_or_else(|| panic!("no row {key} in {html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn escape_turns_markup_into_text() {
    let text = r#"<script>alert('x')</script> & "q""#;
    assert_eq!(
        Esc(text).to_string(),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
    );
    assert_eq!(Esc("plain 131031 é").to_string(), "plain 131031 é");
    assert_eq!(Esc("").to_string(), "");
}

#[test]
fn markup_in_any_text_from_meta_or_an_operator_is_shown_as_text() {
    let mut v = view("200000000000001", "open", 131031, Duration::from_secs(5));
    v.reason = "<script>alert(1)</script>".to_owned();
    v.details = Some("<img src=x onerror=alert(2)>".to_owned());
    v.waba = Some("\"><svg onload=alert(3)>".to_owned());
    v.health_errors = vec![HealthError {
        code: 141000,
        description: "<b>blocked</b>".to_owned(),
        possible_solution: Some("</td><script>x</script>".to_owned()),
    }];
    let html = render(&ready(), &[v], NOW);
    assert_eq!(html.matches("<script").count(), 1, "only the page's own");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<svg"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&quot;&gt;&lt;svg onload=alert(3)&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;/td&gt;&lt;script&gt;x&lt;/script&gt;"),
        "{html}"
    );
}

#[test]
fn a_row_shows_the_number_cause_since_waba_reason_and_buttons() {
    let mut v = view(
        "200000000000001",
        "open",
        131031,
        Duration::from_secs(12 * 60 + 7),
    );
    v.details = Some("Business account has been locked.".to_owned());
    v.refused_sends = 42;
    v.health_errors = vec![HealthError {
        code: 141006,
        description: "The number is locked".to_owned(),
        possible_solution: Some("Appeal in Business Support".to_owned()),
    }];
    let since = v.since.clone();
    let html = render(&ready(), &[v], NOW);
    let row = row(&html, "200000000000001");
    assert!(row.contains("data-state=\"open\""), "{row}");
    assert!(
        row.contains("<code>131031</code> <span class=\"meaning\">Account has been locked</span>"),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "<time datetime=\"{since}\" title=\"{since}\">12m ago</time>"
        )),
        "{row}"
    );
    assert!(since.starts_with("2025-12-31T23:47:53"), "{since}");
    assert!(row.contains("<td>100000000000009</td>"), "{row}");
    assert!(
        row.contains("<p>locked</p><p>Business account has been locked.</p>"),
        "{row}"
    );
    assert!(
        row.contains(
            "<code>141006</code> The number is locked<br><em>Appeal in Business Support</em>"
        ),
        "{row}"
    );
    assert!(row.contains("<td class=\"num\">42</td>"), "{row}");
    for action in ["reset", "release", "trip"] {
        assert!(
            row.contains(&format!(
                "data-action=\"{action}\" data-number=\"200000000000001\""
            )),
            "{row}"
        );
    }
}

#[test]
fn the_summary_counts_states_and_each_numbers_refusals_once() {
    let mut open = view("200000000000001", "open", 131031, Duration::from_secs(60));
    open.refused_sends = 10;
    let mut pair = view(
        "200000000000001:pair:0123456789abcdef",
        "open",
        131056,
        Duration::from_secs(30),
    );
    pair.refused_sends = 10;
    let mut held = view("200000000000002", "held", 0, Duration::from_secs(90));
    held.source = "operator";
    held.refused_sends = 5;
    held.held_until = Some("2026-01-01T02:00:30.000Z".to_owned());
    let ramping = view(
        "200000000000003",
        "ramping",
        368,
        Duration::from_secs(3 * 3600),
    );
    let html = render(&ready(), &[open, pair, held, ramping], NOW);
    assert!(
        html.contains("<strong>2 open, 1 held, 1 ramping</strong> · 15 sends refused"),
        "{html}"
    );
    assert!(html.contains("store embedded · ready</p>"), "{html}");
    assert!(!html.contains("unreachable"), "{html}");

    let held = row(&html, "200000000000002");
    assert!(held.contains("held by an operator"), "{held}");
    assert!(!held.contains("<code>0</code>"), "{held}");
    assert!(
        held.contains(
            "ends <time datetime=\"2026-01-01T02:00:30.000Z\" \
             title=\"2026-01-01T02:00:30.000Z\">in 2h</time>"
        ),
        "{held}"
    );
    assert!(row(&html, "200000000000003").contains("3h ago"));

    // The admin API acts on numbers, so a pair's row has no buttons.
    let pair = row(&html, "200000000000001:pair:0123456789abcdef");
    assert!(
        pair.contains("<small>pair:0123456789abcdef</small>"),
        "{pair}"
    );
    assert!(!pair.contains("<button"), "{pair}");
}

#[test]
fn a_degraded_store_and_no_breakers_are_said_in_words() {
    let summary = Summary {
        status: "degraded",
        store: "redis",
        degraded: true,
    };
    let html = render(&summary, &[], NOW);
    assert!(
        html.contains("<strong>0 open, 0 held, 0 ramping</strong>"),
        "{html}"
    );
    assert!(html.contains("store redis · degraded"), "{html}");
    assert!(html.contains("the store is unreachable"), "{html}");
    assert!(html.contains("Every breaker is closed."), "{html}");
    assert!(!html.contains("<table>"), "{html}");
}

#[test]
fn the_page_is_self_contained_and_its_policy_names_its_own_script_and_style() {
    let html = render(
        &ready(),
        &[view("200000000000001", "open", 131031, Duration::ZERO)],
        NOW,
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains(" src="), "nothing loaded: {html}");
    assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
    assert!(html.contains(&format!("<style>{STYLE}</style>")));
    // No inline handlers: the policy allows the script by hash only.
    assert!(!html.contains("onclick"), "{html}");
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
    assert!(
        CSP.contains(&format!("script-src 'sha256-{}'", b64(SCRIPT))),
        "{}",
        *CSP
    );
    assert!(
        CSP.contains(&format!("style-src 'sha256-{}'", b64(STYLE))),
        "{}",
        *CSP
    );
    assert!(CSP.contains("default-src 'none'"), "{}", *CSP);
    assert!(CSP.contains("frame-ancestors 'none'"), "{}", *CSP);
    assert!(!CSP.contains("unsafe"), "{}", *CSP);
}

#[test]
fn ago_reads_at_a_glance() {
    let cases = [
        (0, "0s ago"),
        (59, "59s ago"),
        (60, "1m ago"),
        (12 * 60 + 59, "12m ago"),
        (3600, "1h ago"),
        (3600 + 59, "1h ago"),
        (2 * 3600 - 1, "1h59m ago"),
        (47 * 3600, "47h ago"),
        (48 * 3600, "2d ago"),
    ];
    for (seconds, text) in cases {
        assert_eq!(ago(Duration::from_secs(seconds)), text, "{seconds}s");
    }
}

#[test]
fn meaning_knows_the_codes_that_open_breakers() {
    for rule in crate::breaker::Rules::defaults().as_slice() {
        if matches!(rule.action, crate::breaker::Action::Count) {
            continue;
        }
        let code: i64 = rule.codes.to_string().parse().unwrap();
        assert!(meaning(code).is_some(), "no meaning for {code}");
    }
    assert_eq!(meaning(131031), Some("Account has been locked"));
    assert_eq!(meaning(100), None);
}
