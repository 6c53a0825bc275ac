//! `wagate demo` end to end: the real binary runs the whole story against
//! its in-process simulator and must finish, in time, with every step told.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Past this the demo is killed and the test fails; it is meant to take
/// seconds.
const DEADLINE: Duration = Duration::from_secs(90);

/// The child's exit status, or `None` after killing it (by its pid) at
/// `deadline`.
fn wait_or_kill(child: &mut std::process::Child, deadline: Duration) -> Option<i32> {
    let status = support::poll_until(deadline, || child.try_wait().expect("try_wait"));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.map(|status| status.code().unwrap_or(-1))
}

#[test]
fn the_demo_tells_every_step_and_exits_zero() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("demo")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wagate binary starts");
    // Read both pipes while the demo runs, so a full pipe cannot stall it.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let code = wait_or_kill(&mut child, DEADLINE);
    let took = started.elapsed();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let shown = format!("stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        code,
        Some(0),
        "the demo exits 0 within {DEADLINE:?}; {shown}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}; {shown}");

    // Piped, so plain text.
    assert!(!out.contains('\x1b'), "no colour codes in a pipe; {shown}");
    let page = out
        .lines()
        .find_map(|l| l.strip_prefix("status page: http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("a status page URL; {shown}"));
    let port: String = page.chars().take_while(char::is_ascii_digit).collect();
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{page}");

    // One line per step, in order, each naming what it shows.
    let steps = [
        ("[1/7] traffic:", &["forwarded", "counted 15"][..]),
        ("[2/7] trip:", &["131031", "tripped"][..]),
        (
            "[3/7] retry storm:",
            &["200 sends refused at the gateway, 0 reached Meta"][..],
        ),
        (
            "[4/7] webhook:",
            &["failed-status webhook", "tripped", "refused"][..],
        ),
        (
            "[5/7] health BLOCKED:",
            &["BLOCKED", "health errors", "131031"][..],
        ),
        (
            "[6/7] health AVAILABLE:",
            &[
                "AVAILABLE",
                "1 went out as the probe",
                "ramp",
                "stage 1",
                "stage 2",
                "closed",
            ][..],
        ),
        ("[7/7] metrics:", &["metrics that moved"][..]),
    ];
    let mut rest = out.as_str();
    for (tag, words) in steps {
        let at = rest
            .find(tag)
            .unwrap_or_else(|| panic!("{tag} after the previous step; {shown}"));
        let line = rest[at..].lines().next().unwrap();
        for word in words {
            assert!(line.contains(word), "{tag} names {word:?}: {line}");
        }
        rest = &rest[at + line.len()..];
    }
    // The metrics that moved include the trips, the refusals and the probe.
    for series in [
        r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="response",to="open"}"#,
        r#"wagate_breaker_transitions_total{cause="131031",from="closed",source="webhook",to="open"}"#,
        r#"wagate_refused_sends_total{phone_number_id="200000000000001"}"#,
        r#"wagate_probe_outcomes_total{outcome="accepted"}"#,
        r#"wagate_breaker_transitions_total{cause="131031",from="ramping",source="clock",to="closed"}"#,
    ] {
        assert!(rest.contains(series), "{series} moved; {shown}");
    }
    assert!(rest.contains("done in "), "{shown}");
}

/// With `--keep-running` the gateway stays up after the story: its status
/// page answers with the number still open, and SIGTERM ends it with 0.
#[test]
fn kept_running_the_demo_serves_its_status_page_until_sigterm() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["demo", "--keep-running"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wagate binary starts");
    let stdout = child.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + DEADLINE;
    let url = loop {
        let left = until.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("still serving") => {
                let start = line.find("http://").expect("a URL in the line");
                let url = &line[start..];
                break url[..url.find(' ').unwrap_or(url.len())].to_owned();
            }
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("no 'still serving' line within {DEADLINE:?}: {e}");
            }
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let body = get_over_tcp(&url);
    assert!(
        body.contains("200000000000002"),
        "the open number is on the page"
    );
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert_eq!(
        wait_or_kill(&mut child, DEADLINE),
        Some(0),
        "SIGTERM ends it with 0"
    );
}

fn get_over_tcp(url: &str) -> String {
    use std::io::Write;
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}
