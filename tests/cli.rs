//! The `wagate breakers`, `wabas` and `audit` commands: the real binary
//! against a gateway running in this process in front of the simulator.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::gateway::{InProcess, http, metric, sim};

const LOCKED: &str = "200000000000001";
const OTHER: &str = "200000000000002";
const WABA: &str = "100000000000009";
const TOKEN: &str = "t0ken-for-cli-tests";
const WRONG: &str = "wr0ng-token-for-cli-tests";

/// What one run of the command gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `wagate ARGS` against the admin listener at `admin`, with `token`
/// in `WAGATE_ADMIN_TOKEN`, and checks that no token is in its output.
async fn wagate(admin: &str, token: Option<&str>, args: &[&str]) -> Run {
    wagate_with(admin, token, args, &[]).await
}

async fn wagate_with(admin: &str, token: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
    command
        .args(args)
        .env("WAGATE_ADMIN_URL", admin)
        .env_remove("WAGATE_ADMIN_TOKEN")
        .env_remove("COLUMNS")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("WAGATE_ADMIN_TOKEN", token);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("wagate {args:?} did not finish"))
        .expect("wagate runs");
    let run = Run {
        code: output.status.code().expect("wagate exits"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    for secret in [TOKEN, WRONG] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a token is in the output of {args:?}:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

impl Run {
    #[track_caller]
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The table row naming `what`.
    #[track_caller]
    fn row(&self, what: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.contains(what))
            .unwrap_or_else(|| panic!("no row with {what} in:\n{}", self.stdout))
    }
}

/// A gateway in front of a simulator that has `LOCKED` locked, with
/// `LOCKED`'s breaker opened by a send Meta answered with 131031.
async fn locked_gateway() -> (wagate::sim::SimHandle, InProcess, String) {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let gateway = InProcess::start(sim.addr, |c| {
        c.admin.token = wagate::config::Secret::new(TOKEN);
    })
    .await;
    let sent = http()
        .post(format!("{}/v24.0/{LOCKED}/messages", gateway.url()))
        .bearer_auth("integration-token")
        .json(&json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text", "text": {"body": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::FORBIDDEN);
    // The snapshot refuses at once; the trip and its audit line reach the
    // store just after. `breakers show` reads the trail from the store.
    let stored = r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="response",to="open"}"#;
    support::wait_until_async(Duration::from_secs(10), "the trip is stored", || async {
        metric(gateway.admin, stored).await == 1.0
    })
    .await;
    let admin = format!("http://{}", gateway.admin);
    (sim, gateway, admin)
}

#[tokio::test]
async fn a_locked_number_is_listed_shown_held_and_reset_from_the_command_line() {
    let (_sim, _gateway, admin) = locked_gateway().await;

    let list = wagate(&admin, None, &["breakers", "list"]).await.expect(0);
    let header = list.stdout.lines().next().unwrap();
    for column in ["STATE", "NUMBER", "CAUSE", "SINCE", "WABA", "REASON"] {
        assert!(header.contains(column), "{column} in {header}");
    }
    let row = list.row(LOCKED);
    assert!(row.starts_with("open"), "{row}");
    assert!(row.contains("131031"), "{row}");
    // SINCE: "now" for the first second, then "3s ago".
    assert!(row.contains(" now ") || row.contains(" ago "), "{row}");

    let json = wagate(&admin, None, &["breakers", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["breakers"][0]["phone_number_id"], LOCKED);
    assert_eq!(json["breakers"][0]["cause_code"], 131031);

    let show = wagate(&admin, None, &["breakers", "show", LOCKED])
        .await
        .expect(0);
    assert!(
        show.stdout.starts_with("phone_number_id:"),
        "{}",
        show.stdout
    );
    assert!(show.row("state:").ends_with("open"), "{}", show.stdout);
    assert!(show.row("cause_code:").ends_with("131031"));
    assert!(show.stdout.contains("transitions (newest first):"));
    assert!(show.row("closed→open").contains("response"));

    let reason = "campaign bug: template 42 went to every customer twice, see OPS-1234";
    let trip = ["breakers", "trip", OTHER, "--reason", reason, "--ttl", "2h"];
    let tripped = wagate(&admin, Some(TOKEN), &trip).await.expect(0);
    assert!(
        tripped
            .stdout
            .starts_with(&format!("{OTHER}: changed, now held until ")),
        "{}",
        tripped.stdout
    );
    assert!(tripped.stdout.contains("(in 1h59m)"), "{}", tripped.stdout);

    let held = wagate(&admin, None, &["breakers", "list", "--state", "held"])
        .await
        .expect(0);
    assert!(held.row(OTHER).starts_with("held"), "{}", held.stdout);
    assert!(held.row(OTHER).ends_with(reason), "{}", held.stdout);
    assert!(!held.stdout.contains(LOCKED), "{}", held.stdout);
    // For people at a narrow terminal, the reason is cut to fit.
    let narrow = wagate_with(
        &admin,
        None,
        &["breakers", "list", "--state", "held"],
        &[("COLUMNS", "60")],
    )
    .await
    .expect(0);
    assert!(narrow.row(OTHER).ends_with('…'), "{}", narrow.stdout);
    for line in narrow.stdout.lines() {
        assert!(line.chars().count() <= 60, "{line:?}");
    }

    let reset = ["breakers", "reset", LOCKED, "--reason", "appeal won"];
    let reset = wagate(&admin, Some(TOKEN), &reset).await.expect(0);
    assert_eq!(reset.stdout, format!("{LOCKED}: changed, now closed\n"));
    wagate(&admin, None, &["breakers", "show", LOCKED])
        .await
        .expect(2);

    let audit = wagate(&admin, None, &["audit", "--number", LOCKED])
        .await
        .expect(0);
    let row = audit.row("open→closed");
    for word in [LOCKED, "operator", "admin", "appeal won"] {
        assert!(row.contains(word), "{word} in {row}");
    }
    let json = wagate(&admin, None, &["audit", "--limit", "1", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["entries"][0]["by"], "admin");
    assert_eq!(json["entries"][0]["to"], "closed");
}

#[tokio::test]
async fn a_wabas_numbers_are_held_and_shown_from_the_command_line() {
    let (_sim, _gateway, admin) = locked_gateway().await;
    wagate(&admin, None, &["wabas", "show", WABA])
        .await
        .expect(2);
    let trip = ["wabas", "trip", WABA, "--reason", "fraud review"];
    let tripped = wagate(&admin, Some(TOKEN), &trip).await.expect(0);
    assert!(
        tripped.stdout.starts_with(&format!("WABA {WABA}: ")),
        "{}",
        tripped.stdout
    );
    let shown = wagate(&admin, None, &["wabas", "show", WABA])
        .await
        .expect(0);
    assert!(
        shown.row("gate.hold:").ends_with("fraud review"),
        "{}",
        shown.stdout
    );
    let json = wagate(&admin, None, &["wabas", "show", WABA, "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["gate"]["hold"], "fraud review");
    let reset = wagate(&admin, Some(TOKEN), &["wabas", "reset", WABA])
        .await
        .expect(0);
    assert!(reset.stdout.contains(WABA), "{}", reset.stdout);
    wagate(&admin, None, &["wabas", "list"]).await.expect(0);
}

#[tokio::test]
async fn refusals_exit_with_codes_a_script_can_use() {
    let (_sim, _gateway, admin) = locked_gateway().await;

    let wrong = ["breakers", "reset", LOCKED, "--token", WRONG];
    let wrong = wagate(&admin, None, &wrong).await.expect(3);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    let missing = wagate(&admin, None, &["breakers", "reset", LOCKED])
        .await
        .expect(3);
    assert!(
        missing.stderr.contains("WAGATE_ADMIN_TOKEN"),
        "{}",
        missing.stderr
    );
    // The number stayed open.
    wagate(&admin, None, &["breakers", "show", LOCKED])
        .await
        .expect(0);

    let unknown = wagate(&admin, None, &["breakers", "show", OTHER])
        .await
        .expect(2);
    assert!(unknown.stderr.contains("404"), "{}", unknown.stderr);
    assert!(unknown.stdout.is_empty());
    wagate(&admin, Some(TOKEN), &["breakers", "release", OTHER])
        .await
        .expect(2);
    // --json gives a script the admin API's error too.
    let json = wagate(&admin, None, &["breakers", "show", OTHER, "--json"])
        .await
        .expect(2)
        .json();
    assert!(json["error"].is_string(), "{json}");

    let bad = wagate(&admin, None, &["audit", "--limit", "5000"])
        .await
        .expect(1);
    assert!(bad.stderr.contains("400"), "{}", bad.stderr);
    // Usage errors are 1 too (clap's own code, 2, means not found here).
    wagate(&admin, None, &["breakers", "show", "not-a-number"])
        .await
        .expect(1);
    let ttl = ["breakers", "reset", LOCKED, "--ttl", "2h"];
    wagate(&admin, Some(TOKEN), &ttl).await.expect(1);
}

#[tokio::test]
async fn an_unreachable_admin_listener_exits_4_and_says_what_to_check() {
    let closed: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let run = wagate(
        "http://127.0.0.1:9",
        Some(TOKEN),
        &["breakers", "list", "--admin-url", &url],
    )
    .await
    .expect(4);
    assert!(
        run.stderr
            .contains(&format!("cannot reach the admin listener at {url}: ")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("is wagate running? set --admin-url or WAGATE_ADMIN_URL"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

#[tokio::test]
async fn an_admin_listener_that_never_answers_exits_4_after_the_timeout() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let run = wagate(&url, None, &["audit", "--timeout", "300ms"])
        .await
        .expect(4);
    assert!(
        run.stderr.contains(&format!(
            "no answer from the admin listener at {url} within 300ms"
        )),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}
