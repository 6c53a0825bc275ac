//! A real headless Chromium driven through ChromeDriver's WebDriver HTTP
//! protocol (W3C), for tests of what a person sees in a browser.
//!
//! ChromeDriver runs as a child process on a free 127.0.0.1 port, in its
//! own process group so that the Chromium it starts is killed with it on
//! `Drop`. The binaries are Debian's (`chromium`, `chromium-driver`);
//! `WAGATE_TEST_CHROMIUM` / `WAGATE_TEST_CHROMEDRIVER` point at others.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long ChromeDriver may take to answer `/status`, and a command to
/// complete (a new session starts Chromium).
const START_DEADLINE: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A ChromeDriver process and one browser session in it.
pub struct Browser {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    dir: TempDir,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile.
    /// Fails, naming `scripts/test.sh`, when either binary is missing.
    pub async fn start() -> Self {
        let chromium = binary("WAGATE_TEST_CHROMIUM", "/usr/bin/chromium");
        let driver = binary("WAGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        for path in [&chromium, &driver] {
            assert!(
                path.exists(),
                "{} is missing: run scripts/test.sh, which installs Debian's chromium and \
                 chromium-driver, or `apt-get install chromium chromium-driver`",
                path.display()
            );
        }
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = File::create(dir.path().join("chromedriver.log")).expect("log file");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own group: Drop kills ChromeDriver and the Chromium it runs.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()
            .expect("http client");
        let mut browser = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            dir,
        };
        browser.wait_ready().await;
        browser.session = browser.new_session(&chromium).await;
        browser
    }

    async fn wait_ready(&self) {
        let url = format!("{}/status", self.base);
        let ready = || async {
            let Ok(response) = self.http.get(&url).send().await else {
                return false;
            };
            let body: Value = response.json().await.unwrap_or_default();
            body["value"]["ready"] == true
        };
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        while !ready().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer within {START_DEADLINE:?}; log:\n{}",
                self.driver_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn new_session(&self, chromium: &Path) -> String {
        let profile = self.dir.path().join("profile");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            "--window-size=1400,900".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // Chromium's own traffic (updates, sync, crash reports) stays off,
            // and no name resolves: the test reaches only 127.0.0.1.
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-breakpad".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let value = self.send("POST", "/session", Some(capabilities)).await;
        value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_owned()
    }

    /// A scratch folder that lives as long as the browser.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// ChromeDriver's log so far, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One WebDriver command: its `value`, or WebDriver's error code and
    /// message.
    async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, String)> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body["value"].clone());
        }
        let text = |key: &str| body["value"][key].as_str().unwrap_or_default().to_owned();
        Err((text("error"), format!("{status}: {}", text("message"))))
    }

    /// One WebDriver command; its `value`. Panics with WebDriver's error.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|(error, message)| {
                panic!("webdriver {method} {path}: {error}: {message}")
            })
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.send(method, &path, body).await
    }

    /// Opens `url` and waits for the document to load.
    pub async fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page
    /// and returns what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The element `css` selects; panics when there is none.
    pub async fn find(&self, css: &str) -> String {
        let value = self
            .command(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {value}"))
            .to_owned()
    }

    /// Clicks the element `css` selects, as a person would. A page that
    /// re-renders itself may replace the element between the look-up and
    /// the click: then it is looked up again, within `START_DEADLINE`.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let element = self.find(css).await;
            let path = format!("/session/{}/element/{element}/click", self.session);
            match self.try_send("POST", &path, None).await {
                Ok(_) => return,
                Err((error, _))
                    if error == "stale element reference"
                        && tokio::time::Instant::now() < deadline => {}
                Err((error, message)) => panic!("click {css}: {error}: {message}"),
            }
        }
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// A PNG of the viewport, written to `path`; its bytes.
    pub async fn screenshot(&self, path: &Path) -> Vec<u8> {
        let value = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("screenshot is base64"))
            .expect("screenshot decodes");
        std::fs::write(path, &png).expect("write the screenshot");
        png
    }
}

impl Browser {
    /// Ends the session (Chromium exits), then ChromeDriver.
    pub async fn quit(self) {
        self.command("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group's id is ChromeDriver's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
