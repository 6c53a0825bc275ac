//! Starting the gateway for tests: in process on port 0 (fast, most tests),
//! or as the real `wagate` binary (for logs, memory, signals and exit codes).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wagate::config::Config;

/// A gateway running inside the test process.
pub(crate) struct InProcess {
    /// The proxy listener.
    pub(crate) proxy: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts a gateway in front of `upstream` (for example the simulator's
    /// address), after `configure` has adjusted the defaults.
    pub(crate) async fn start(upstream: SocketAddr, configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        // Every gateway its own embedded store, unless `configure` says else.
        config.store.path = dir.path().join("breakers.db");
        config.upstream.base_url = format!("http://{upstream}").parse().unwrap();
        config.listen.proxy = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listen.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        configure(&mut config);
        let proxy = TcpListener::bind(config.listen.proxy).await.unwrap();
        let admin = TcpListener::bind(config.listen.admin).await.unwrap();
        let addrs = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            wagate::run(config, wagate::Listeners { proxy, admin }, shutdown)
                .await
                .expect("gateway runs");
        });
        Self {
            proxy: addrs.0,
            admin: addrs.1,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// Stops the gateway and waits for it to drain.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The real `wagate` binary, with its stderr captured line by line.
pub(crate) struct Process {
    child: Child,
    /// The proxy listener, read from the start-up log line.
    pub(crate) proxy: SocketAddr,
    /// The admin listener, read from the start-up log line.
    pub(crate) admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Runs `wagate serve` with JSON logs and `env` (configuration
    /// overrides), both listeners on free loopback ports, and waits until it
    /// logs that it is serving.
    pub(crate) fn spawn(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wagate"));
        command
            .env("WAGATE_STORE__PATH", dir.path().join("breakers.db"))
            .arg("serve")
            .arg("--config")
            .arg("/dev/null")
            .env("WAGATE_LISTEN__PROXY", "127.0.0.1:0")
            .env("WAGATE_LISTEN__ADMIN", "127.0.0.1:0")
            .env("WAGATE_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("wagate binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let started = wait_for_line(&lines, Duration::from_secs(20), |l| {
            l.contains("wagate serving")
        })
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "wagate did not start; log:\n{}",
                lines.lock().unwrap().join("\n")
            )
        });
        let event: serde_json::Value = serde_json::from_str(&started).unwrap();
        let addr = |field: &str| -> SocketAddr {
            event[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} in {started}"))
                .parse()
                .unwrap()
        };
        Self {
            proxy: addr("proxy"),
            admin: addr("admin"),
            child,
            lines,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits up to `deadline` for the process to exit and returns its code.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        super::poll_until(deadline, || self.child.try_wait().unwrap()).and_then(|s| s.code())
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_line(
    lines: &Mutex<Vec<String>>,
    deadline: Duration,
    matches: impl Fn(&str) -> bool,
) -> Option<String> {
    super::poll_until(deadline, || {
        lines.lock().unwrap().iter().find(|l| matches(l)).cloned()
    })
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Reads one sample from the gateway's `/metrics`, e.g.
/// `wagate_requests_total{route="send",outcome="ok"}`; 0 when absent.
pub(crate) async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The simulator in process on a free loopback port.
pub(crate) async fn sim() -> wagate::sim::SimHandle {
    wagate::sim::spawn(wagate::sim::SimOptions::default())
        .await
        .unwrap()
}

/// An HTTP client whose requests cannot hang a test.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET http://{admin}{path}`: the status and the JSON body.
pub(crate) async fn admin_get(
    admin: SocketAddr,
    path: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = http()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// `POST http://{admin}{path}` with `body` and, when given, the bearer
/// `token`: the status and the JSON body.
pub(crate) async fn admin_post(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = http()
        .post(format!("http://{admin}{path}"))
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A text send for `number` through the gateway at `base`, with an
/// integration's bearer token.
pub(crate) async fn send_text(base: &str, number: &str) -> reqwest::Response {
    http()
        .post(format!("{base}/v24.0/{number}/messages"))
        .bearer_auth("integration-token")
        .json(
            &serde_json::json!({"messaging_product": "whatsapp", "to": "+15550009999",
                                  "type": "text", "text": {"body": "hi"}}),
        )
        .send()
        .await
        .unwrap()
}
