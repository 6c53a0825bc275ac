//! `wagate demo`: the breaker's whole life, told in the terminal, with no
//! Meta account.
//!
//! It runs the simulator ([`crate::sim`]) and a gateway ([`crate::run`]) in
//! this process on free loopback ports, with the embedded store in a
//! temporary folder, and drives them over real HTTP like an integration and
//! like Meta would: traffic for three numbers, a lock, a retry storm, a
//! failed-status webhook, the Health Status API saying BLOCKED and then
//! AVAILABLE, the probe and the ramp. Each step waits for what it shows
//! with a deadline, so a gateway that misbehaves fails the demo instead of
//! hanging it. The timings are configured short ([`config`]) so the whole
//! story takes seconds.
//!
//! What lives here: the storyline and its narration. What does not: any
//! behaviour of the gateway; the demo only watches it from outside (sends,
//! the admin API, `/metrics`).

mod client;
mod look;
mod steps;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, Secret};
use crate::sim::SimOptions;
use client::Http;

/// The number Meta locks (error 131031), later released by health.
const LOCKED: &str = "200000000000001";
/// The number a failed-status webhook trips; it stays locked.
const HOOKED: &str = "200000000000002";
/// The number that stays healthy throughout.
const HEALTHY: &str = "200000000000003";

/// Steps in the narration, the metrics summary included.
const STEPS: usize = 7;

/// How long a step may wait for what it shows.
const WITHIN: Duration = Duration::from_secs(15);

/// Pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);

/// Why the demo did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulator or the gateway did not start.
    #[error("could not start: {0}")]
    Start(String),
    /// What a step shows did not happen in time.
    #[error("step {step}/{STEPS} ({name}): {what} did not happen within {}", humantime::format_duration(*within))]
    Deadline {
        /// The step, 1-based.
        step: usize,
        /// The step's name.
        name: &'static str,
        /// What was waited for.
        what: String,
        /// How long.
        within: Duration,
    },
    /// The gateway or the simulator answered something the story does not
    /// allow, or could not be reached.
    #[error("step {step}/{STEPS} ({name}): {what}")]
    Unexpected {
        /// The step, 1-based.
        step: usize,
        /// The step's name.
        name: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The narration could not be written.
    #[error("writing the narration: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the demo, narrating to `out` (`color`: ANSI bold step tags, for a
/// terminal), and returns how long it took.
pub async fn run(out: impl Write, color: bool) -> Result<Duration, DemoError> {
    run_then(out, color, None).await
}

/// [`run`], then, with `linger`, keeps the simulator and the gateway
/// serving until it resolves (Ctrl-C, say), so the status page, the admin
/// API and the metrics can be looked at afterwards.
pub async fn run_then(
    out: impl Write,
    color: bool,
    linger: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
) -> Result<Duration, DemoError> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("wagate-demo-")
        .tempdir()
        .map_err(|e| DemoError::Start(format!("temporary folder: {e}")))?;
    let sim = crate::sim::spawn(SimOptions::default())
        .await
        .map_err(|e| DemoError::Start(format!("simulator: {e}")))?;
    // Made up per run: only the gateway and the demo's webhook know it.
    let app_secret = format!("demo-{:016x}", rand::random::<u64>());
    let config = config(sim.addr, dir.path(), &app_secret)?;
    let mut gateway = Gateway::start(config).await?;
    let mut demo = look::Demo {
        out,
        color,
        http: Http::new(),
        sim,
        proxy: gateway.proxy,
        admin: gateway.admin,
        app_secret,
        step: (0, "start"),
    };
    let result = async {
        demo.ready(&mut gateway).await?;
        demo.story().await
    }
    .await;
    let took = started.elapsed();
    if let (Ok(()), Some(linger)) = (&result, linger) {
        writeln!(
            demo.out,
            "done in {:.1}s; still serving: the status page at http://{}/ (Ctrl-C to stop)",
            took.as_secs_f64(),
            demo.admin
        )?;
        demo.out.flush()?;
        linger.await;
    }
    gateway.stop().await;
    let _ = demo.sim.shutdown().await;
    drop(dir);
    result?;
    writeln!(demo.out, "done in {:.1}s", took.as_secs_f64())?;
    demo.out.flush()?;
    Ok(took)
}

/// The gateway's configuration: defaults, except for timings short enough
/// for a demo of seconds, loopback ports chosen by the system, and the
/// store and webhook key of this run.
fn config(sim: SocketAddr, dir: &Path, app_secret: &str) -> Result<Config, DemoError> {
    let start = |e: &dyn std::fmt::Display| DemoError::Start(format!("configuration: {e}"));
    let mut c = Config::default();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    c.listen.proxy = loopback;
    c.listen.admin = loopback;
    c.upstream.base_url = format!("http://{sim}").parse().map_err(|e| start(&e))?;
    c.store.path = dir.join("breakers.db");
    c.webhook.app_secret = Secret::new(app_secret);
    c.server.drain_timeout = Duration::from_secs(2);
    // Long enough for the retry storm and the webhook to happen while the
    // first trip is fresh; health polls start after it.
    c.breaker.min_open = Duration::from_secs(1);
    c.breaker.max_open = Duration::from_secs(30);
    c.breaker.jitter = 0.0;
    c.breaker.ramp_stage = Duration::from_millis(1500);
    c.breaker.ramp_rates = vec![2, 10];
    c.health.interval = Duration::from_millis(100);
    c.health.max_interval = Duration::from_millis(200);
    c.health.required_available = 2;
    c.health.waba_budget_per_hour = 3_600_000;
    c.health.timeout = Duration::from_secs(2);
    c.health.lease_ttl = Duration::from_secs(1);
    c.validate().map_err(|e| start(&e))
}

/// The gateway running in this process.
struct Gateway {
    proxy: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    /// `None` once it has been awaited.
    task: Option<tokio::task::JoinHandle<Result<(), crate::RunError>>>,
}

impl Gateway {
    async fn start(config: Config) -> Result<Self, DemoError> {
        let bind = |e: std::io::Error| DemoError::Start(format!("binding a loopback port: {e}"));
        let proxy = TcpListener::bind(config.listen.proxy).await.map_err(bind)?;
        let admin = TcpListener::bind(config.listen.admin).await.map_err(bind)?;
        let addrs = (
            proxy.local_addr().map_err(bind)?,
            admin.local_addr().map_err(bind)?,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let listeners = crate::Listeners { proxy, admin };
        let task = tokio::spawn(crate::run(config, listeners, shutdown));
        Ok(Self {
            proxy: addrs.0,
            admin: addrs.1,
            stop,
            task: Some(task),
        })
    }

    /// Why the gateway stopped on its own, if it did.
    async fn exited(&mut self) -> Option<String> {
        let task = self.task.take_if(|task| task.is_finished())?;
        Some(match task.await {
            Ok(Ok(())) => "without an error".to_owned(),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        })
    }

    /// Stops the gateway and waits for it to drain.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
