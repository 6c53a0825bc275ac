//! The demo's eyes and voice: its state, the narration line, and the
//! looks at the gateway (sends, the admin view, `/metrics`) that the steps
//! make, each turned into a [`DemoError`] naming the step when it fails.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use serde_json::Value;

use super::client::{Answer, Http};
use super::{DemoError, POLL, STEPS, WITHIN};
use crate::sim::SimHandle;

/// The demo's state: where everything listens, and the step under way.
pub(super) struct Demo<W> {
    pub(super) out: W,
    pub(super) color: bool,
    pub(super) http: Http,
    pub(super) sim: SimHandle,
    pub(super) proxy: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) app_secret: String,
    /// The step under way (1-based) and its name, for errors.
    pub(super) step: (usize, &'static str),
}

impl<W: Write> Demo<W> {
    /// Prints the current step's line.
    pub(super) fn say(&mut self, text: String) -> Result<(), DemoError> {
        let (step, name) = self.step;
        let tag = format!("[{step}/{STEPS}]");
        if self.color {
            writeln!(self.out, "\x1b[1m{tag} {name}:\x1b[0m {text}")?;
        } else {
            writeln!(self.out, "{tag} {name}: {text}")?;
        }
        self.out.flush()?;
        Ok(())
    }

    pub(super) fn unexpected(&self, what: String) -> DemoError {
        DemoError::Unexpected {
            step: self.step.0,
            name: self.step.1,
            what,
        }
    }

    pub(super) fn deadline(&self, what: &str) -> DemoError {
        DemoError::Deadline {
            step: self.step.0,
            name: self.step.1,
            what: what.to_owned(),
            within: WITHIN,
        }
    }

    pub(super) async fn send(&self, number: &str) -> Result<Answer, DemoError> {
        self.http
            .send(self.proxy, number)
            .await
            .map_err(|e| self.unexpected(format!("a send of {number}: {e}")))
    }

    pub(super) async fn metrics(&self) -> Result<String, DemoError> {
        let url = format!("http://{}/metrics", self.admin);
        let answer = self.http.get(&url).await.map_err(|e| self.unexpected(e))?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// The admin view of `number`'s breaker; `None` when it is closed.
    pub(super) async fn view(&self, number: &str) -> Result<Option<Value>, DemoError> {
        let url = format!("http://{}/admin/breakers/{number}", self.admin);
        let answer = self.http.get(&url).await.map_err(|e| self.unexpected(e))?;
        match answer.status {
            200 => Ok(Some(answer.json())),
            404 => Ok(None),
            status => Err(self.unexpected(format!("{url} answered {status}"))),
        }
    }

    /// Looks at `number`'s breaker until `done` holds, within [`WITHIN`].
    pub(super) async fn wait_view(
        &self,
        number: &str,
        what: &str,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Value, DemoError> {
        let found = within_deadline(|| async {
            let view = self.view(number).await?;
            Ok(done(view.as_ref()).then(|| view.unwrap_or(Value::Null)))
        })
        .await?;
        found.ok_or_else(|| self.deadline(&format!("{what} ({number})")))
    }

    /// Waits until the gateway answers `/readyz`, or stops on its own.
    pub(super) async fn ready(&mut self, gateway: &mut super::Gateway) -> Result<(), DemoError> {
        self.step = (0, "start");
        let url = format!("http://{}/readyz", self.admin);
        // Shared by each look; only one runs at a time.
        let gateway = &tokio::sync::Mutex::new(gateway);
        let ready = within_deadline(|| async {
            if let Some(error) = gateway.lock().await.exited().await {
                return Err(DemoError::Start(format!("the gateway stopped: {error}")));
            }
            Ok(self
                .http
                .get(&url)
                .await
                .is_ok_and(|a| a.status == 200)
                .then_some(()))
        })
        .await?;
        ready
            .ok_or_else(|| DemoError::Start(format!("the gateway was not ready within {WITHIN:?}")))
    }
}

/// The `state` of an admin view, `closed` when there is none.
pub(super) fn state(view: Option<&Value>) -> &str {
    view.map_or("closed", |v| str_of(&v["state"]))
}

pub(super) fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Checks `condition` every [`POLL`] until it finds something or fails;
/// `None` once [`WITHIN`] has passed without it.
async fn within_deadline<T, F, Fut>(mut condition: F) -> Result<Option<T>, DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, DemoError>>,
{
    let deadline = Instant::now() + WITHIN;
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(found) = condition().await? {
            return Ok(Some(found));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
    }
}
