//! A real Prometheus server for tests, scraping the gateway every second
//! on a free 127.0.0.1 port with its own temporary storage, killed on
//! `Drop`.
//!
//! The binary defaults to `/usr/bin/prometheus` (Debian's `prometheus`
//! package, which `scripts/test.sh` installs), else `prometheus` on `PATH`;
//! set `WAGATE_TEST_PROMETHEUS` to use another.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// How long Prometheus may take to report ready.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The Prometheus binary to run; panics, saying how to install it, when
/// there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WAGATE_TEST_PROMETHEUS") {
        return path.into();
    }
    let debian = Path::new("/usr/bin/prometheus");
    if debian.exists() {
        return debian.to_owned();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "prometheus is not installed: run scripts/test.sh, which installs Debian's \
                 prometheus package (or set WAGATE_TEST_PROMETHEUS to a prometheus binary)"
            )
        })
}

/// A `prometheus` child process.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` every second as job
    /// `wagate`, evaluating `rule_files` every second, and waits until it
    /// is ready. Panics, with its log, if it is not within 30 seconds.
    pub fn start(target: SocketAddr, rule_files: &[&Path]) -> Self {
        let binary = binary();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let rules: Vec<String> = rule_files
                .iter()
                .map(|p| format!("  - {}\n", p.display()))
                .collect();
            let config = format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n{}\
                 scrape_configs:\n  - job_name: wagate\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.concat()
            );
            std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(&binary)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "start {}: {e}; run scripts/test.sh, which installs Debian's prometheus package",
                        binary.display()
                    )
                });
            let mut server = Self { child, port, dir };
            // Another process may take the port between the check and the
            // bind; Prometheus then exits, and a new port is tried.
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) if attempts < 3 => eprintln!("prometheus did not start, retrying: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// The answer of the HTTP API to an instant query, whatever its status
    /// (a query that does not parse gets `"status": "error"`).
    pub async fn query(&self, expr: &str) -> Value {
        let query: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        self.get(&format!("/api/v1/query?query={query}")).await
    }

    /// The JSON answer of an HTTP API path such as `/api/v1/rules`.
    pub async fn get(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e}\nlog:\n{}", self.log()));
        response.json().await.unwrap()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ready = format!("127.0.0.1:{}", self.port);
        let outcome = super::poll_until(START_DEADLINE, || {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(Err(format!("prometheus exited ({status})")));
            }
            is_ready(&ready).then_some(Ok(()))
        })
        .unwrap_or_else(|| Err(format!("prometheus not ready within {START_DEADLINE:?}")));
        outcome.map_err(|why| format!("{why}; log:\n{}", self.log()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /-/ready` on `addr` answers 200, over a plain socket so
/// that start-up needs no runtime.
fn is_ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /-/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
