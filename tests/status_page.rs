//! The status page at the admin listener's `/`, as an operator uses it: a
//! real headless Chromium (through ChromeDriver) in front of the gateway
//! and the simulator, over real HTTP on 127.0.0.1.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::browser::Browser;
use support::gateway::{InProcess, admin_get, http, sim};
use support::wait_until_async;

const LOCKED: &str = "200000000000001";
const HOSTILE: &str = "200000000000002";
const LATER: &str = "200000000000003";
const TOKEN: &str = "status-page-token-for-tests";
/// A reason that would run a script, or load something, if it were not
/// escaped: the image points back at the admin listener, so even a failure
/// stays on 127.0.0.1.
const HOSTILE_REASON: &str = r#"<script>window.__pwned = 1</script><img src="/pwned.png">"#;
const WAIT: Duration = Duration::from_secs(20);

async fn send(gateway: &InProcess, number: &str) -> StatusCode {
    http()
        .post(format!("{}/v24.0/{number}/messages", gateway.url()))
        .bearer_auth("integration-token")
        .json(&json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text", "text": {"body": "hi"}}))
        .send()
        .await
        .unwrap()
        .status()
}

/// A number locked at Meta and tripped through the gateway (with `refused`
/// retries refused), and a number held by hand with a hostile reason.
async fn gateway_with_breakers(refused: usize) -> (wagate::sim::SimHandle, InProcess) {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let gateway = InProcess::start(sim.addr, |c| {
        c.admin.token = wagate::config::Secret::new(TOKEN);
    })
    .await;
    assert_eq!(send(&gateway, LOCKED).await, StatusCode::FORBIDDEN);
    for _ in 0..refused {
        assert_eq!(
            send(&gateway, LOCKED).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let held = http()
        .post(format!(
            "http://{}/admin/breakers/{HOSTILE}/trip",
            gateway.admin
        ))
        .bearer_auth(TOKEN)
        .json(&json!({ "reason": HOSTILE_REASON }))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    (sim, gateway)
}

/// `document.querySelector(css)`'s text, or null when nothing matches.
async fn text_of(browser: &Browser, css: &str) -> Value {
    browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e && e.textContent;",
            json!([css]),
        )
        .await
}

async fn wait_for_script(browser: &Browser, what: &str, script: &str, args: Value) {
    wait_until_async(WAIT, what, || async {
        browser.execute(script, args.clone()).await == true
    })
    .await;
}

/// Writes a screenshot into the browser's scratch folder and a copy under
/// the target directory for a person to look at; checks it is a PNG.
async fn screenshot(browser: &Browser, name: &str) {
    let path = browser.dir().join(name);
    let png = browser.screenshot(&path).await;
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG of the page ({} bytes)",
        path.display(),
        png.len()
    );
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&path, keep.join(name)).unwrap();
    println!(
        "screenshot: {} (copy: {})",
        path.display(),
        keep.join(name).display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_holds_and_resets_a_tripped_number_from_the_page() {
    let (_sim, gateway) = gateway_with_breakers(3).await;
    let browser = Browser::start().await;
    let origin = format!("http://{}", gateway.admin);
    browser.navigate(&format!("{origin}/")).await;

    // First paint, rendered by the server: the tripped number and its cause.
    let row = format!("tr[data-id=\"{LOCKED}\"]");
    let text = text_of(&browser, &row).await;
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("no row for {LOCKED}"));
    for expected in ["open", "131031", "Account has been locked", "from response"] {
        assert!(text.contains(expected), "{expected:?} in {text:?}");
    }
    assert_eq!(
        text_of(&browser, &format!("{row} td.num")).await,
        "3",
        "refused sends"
    );
    let summary = text_of(&browser, ".summary").await;
    let summary = summary.as_str().unwrap();
    assert!(
        summary.contains("1 open, 1 held, 0 ramping") && summary.contains("store embedded"),
        "{summary}"
    );

    // The hostile reason is shown as text: no script ran, nothing loaded.
    let hostile = format!("tr[data-id=\"{HOSTILE}\"]");
    assert_eq!(
        text_of(&browser, &format!("{hostile} td.reason p")).await,
        HOSTILE_REASON
    );
    let injected = browser
        .execute(
            "return [typeof window.__pwned, document.querySelectorAll('td img, td script').length];",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!(["undefined", 0]));
    screenshot(&browser, "status-page-tripped.png").await;

    // Hold for 2h: the first click asks for the token; a wrong one shows
    // the API's error and is asked for again.
    browser
        .click(&format!("{row} button[data-action=\"trip\"]"))
        .await;
    wait_for_script(
        &browser,
        "the dialog opens asking for the token",
        "return document.getElementById('act').open && !document.getElementById('token-field').hidden;",
        json!([]),
    )
    .await;
    browser.type_into("#ttl", "2h").await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("#act-submit").await;
    wait_for_script(
        &browser,
        "the API's 401 message is shown",
        "return document.getElementById('act-error').textContent === 'missing or wrong bearer token';",
        json!([]),
    )
    .await;
    screenshot(&browser, "status-page-wrong-token.png").await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#act-submit").await;
    wait_until_async(WAIT, "the API reports the number held", || async {
        let (status, body) = admin_get(gateway.admin, &format!("/admin/breakers/{LOCKED}")).await;
        status == StatusCode::OK && body["state"] == "held" && body["held_until"].is_string()
    })
    .await;
    wait_for_script(
        &browser,
        "the page shows the number held",
        "const r = document.querySelector(arguments[0]); return !document.getElementById('act').open && r !== null && r.dataset.state === 'held';",
        json!([row]),
    )
    .await;
    let held = text_of(&browser, &row).await;
    let held = held.as_str().unwrap();
    assert!(
        held.contains("ends in 1h59m") || held.contains("ends in 2h"),
        "{held}"
    );
    screenshot(&browser, "status-page-held.png").await;

    // Reset: the token is remembered, so the dialog does not ask again.
    browser
        .click(&format!("{row} button[data-action=\"reset\"]"))
        .await;
    wait_for_script(
        &browser,
        "the dialog opens without asking for the token",
        "return document.getElementById('act').open && document.getElementById('token-field').hidden;",
        json!([]),
    )
    .await;
    browser.click("#act-submit").await;
    wait_until_async(
        WAIT,
        "the API reports no breaker for the number",
        || async {
            admin_get(gateway.admin, &format!("/admin/breakers/{LOCKED}"))
                .await
                .0
                == StatusCode::NOT_FOUND
        },
    )
    .await;
    wait_for_script(
        &browser,
        "the page no longer lists the number",
        "return document.querySelector(arguments[0]) === null && document.querySelector(arguments[1]) !== null;",
        json!([row, hostile]),
    )
    .await;
    let notice = text_of(&browser, "#notice").await;
    assert_eq!(notice, format!("Reset {LOCKED}: changed, now closed"));
    screenshot(&browser, "status-page-reset.png").await;

    // A change made elsewhere shows up by itself: the page refreshes.
    let elsewhere = http()
        .post(format!(
            "http://{}/admin/breakers/{LATER}/trip",
            gateway.admin
        ))
        .bearer_auth(TOKEN)
        .json(&json!({ "reason": "held from the command line" }))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK);
    wait_for_script(
        &browser,
        "the page shows a hold made through the API",
        "return document.querySelector(arguments[0]) !== null;",
        json!([format!("tr[data-id=\"{LATER}\"]")]),
    )
    .await;

    // Everything the page loaded or names is on this listener.
    let loaded = browser
        .execute(
            "return [document.documentElement.outerHTML, \
             performance.getEntriesByType('resource').map(e => e.name)];",
            json!([]),
        )
        .await;
    let html = loaded[0].as_str().unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "absolute URLs in the page: {html}"
    );
    let requests = loaded[1].as_array().unwrap();
    assert!(!requests.is_empty(), "the page refreshed itself");
    for url in requests {
        let url = url.as_str().unwrap();
        assert!(url.starts_with(&format!("{origin}/")), "request to {url}");
        assert!(!url.contains("pwned"), "the hostile image loaded: {url}");
    }
    browser.quit().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_no_caching() {
    let (_sim, gateway) = gateway_with_breakers(0).await;
    let response = http()
        .get(format!("http://{}/", gateway.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains(&format!("<tr data-id=\"{LOCKED}\"")),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;"),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "{html}");
}
