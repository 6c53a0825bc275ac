//! The storyline: one method per step, each driving the simulator and the
//! gateway, waiting for what it shows, and narrating it in one line.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, try_join_all};
use serde_json::json;

use super::client::{self, Answer};
use super::look::{Demo, state, str_of};
use super::{DemoError, HEALTHY, HOOKED, LOCKED, WITHIN};
use crate::sim::WebhookRequest;

/// Sends per number in the first step.
const ROUNDS: usize = 5;
/// Sends of the retry storm, and how many run at once.
const STORM: usize = 200;
const STORM_WORKERS: usize = 4;
/// Sends of the healthy number during the storm.
const ALONGSIDE: usize = 20;
/// Sends arriving at once when the ramp starts: only one may go out.
const BURST: usize = 10;
/// The simulator's answer time for the probe, so that it is still out when
/// the rest of the burst arrives.
const PROBE_LATENCY: Duration = Duration::from_millis(400);
/// The client's pace during the ramp: 20 sends per second.
const RAMP_PACE: Duration = Duration::from_millis(50);

impl<W: Write> Demo<W> {
    /// Every step, in order.
    pub(super) async fn story(&mut self) -> Result<(), DemoError> {
        let admin = self.admin;
        writeln!(
            self.out,
            "wagate demo: a simulated Graph API on {}, the gateway on {} (admin {admin})",
            self.sim.addr, self.proxy
        )?;
        writeln!(
            self.out,
            "status page: http://{admin}/  (breakers: http://{admin}/admin/breakers, metrics: http://{admin}/metrics)"
        )?;
        self.out.flush()?;
        let before = client::samples(&self.metrics().await?);
        self.traffic().await?;
        self.trip().await?;
        self.storm().await?;
        self.webhook().await?;
        self.blocked().await?;
        self.release().await?;
        self.summary(&before).await
    }

    async fn traffic(&mut self) -> Result<(), DemoError> {
        self.step = (1, "traffic");
        let numbers = [LOCKED, HOOKED, HEALTHY];
        for _ in 0..ROUNDS {
            for number in numbers {
                let answer = self.send(number).await?;
                if answer.status != 200 {
                    return Err(
                        self.unexpected(format!("a send of {number} got {}", answer.status))
                    );
                }
            }
        }
        let counted: u64 = numbers
            .iter()
            .map(|n| self.sim.sim.counts(n).messages)
            .sum();
        let sent = ROUNDS * numbers.len();
        self.say(format!(
            "{sent} sends for 3 numbers ({}) forwarded and answered 200; Meta (the simulator) counted {counted}",
            numbers.join(", ")
        ))
    }

    async fn trip(&mut self) -> Result<(), DemoError> {
        self.step = (2, "trip");
        self.sim.sim.lock(LOCKED);
        let answer = self.send(LOCKED).await?;
        if answer.status != 403 || answer.error_code() != 131031 {
            return Err(self.unexpected(format!(
                "the first send after the lock got {} with code {}, not Meta's 403 with error 131031",
                answer.status,
                answer.error_code()
            )));
        }
        let view = self
            .wait_view(LOCKED, "the breaker tripping", |v| state(v) == "open")
            .await?;
        self.say(format!(
            "Meta locked {LOCKED}; its next send came back 403 with error 131031 (passed to the client unchanged) and the breaker tripped: open, cause {} seen in a {}",
            view["cause_code"], str_of(&view["source"])
        ))
    }

    async fn storm(&mut self) -> Result<(), DemoError> {
        self.step = (3, "retry storm");
        let reached_before = self.sim.sim.counts(LOCKED).messages;
        let (http, proxy) = (&self.http, self.proxy);
        let worker = || async move {
            let mut refused = Vec::new();
            for _ in 0..STORM / STORM_WORKERS {
                let answer = http.send(proxy, LOCKED).await?;
                if answer.status == 503 && answer.header("x-wagate-breaker") == "open" {
                    refused.push(answer);
                }
            }
            Ok::<_, String>(refused)
        };
        let alongside = async move {
            let mut forwarded = 0;
            for _ in 0..ALONGSIDE {
                if http.send(proxy, HEALTHY).await?.status == 200 {
                    forwarded += 1;
                }
            }
            Ok::<_, String>(forwarded)
        };
        let storm = try_join_all((0..STORM_WORKERS).map(|_| worker()));
        let (refused, healthy) =
            futures_util::try_join!(storm, alongside).map_err(|e| self.unexpected(e))?;
        let refused: Vec<Answer> = refused.into_iter().flatten().collect();
        let reached = self.sim.sim.counts(LOCKED).messages - reached_before;
        let Some(sample) = refused.first() else {
            return Err(self.unexpected("no send of the storm was refused".to_owned()));
        };
        let envelope = sample.json();
        let meta_format = envelope["error"]["code"] == 131031
            && envelope["error"]["type"] == "WagateError"
            && envelope["error"]["fbtrace_id"].is_string();
        if refused.len() != STORM || reached != 0 || !meta_format || healthy != ALONGSIDE {
            return Err(self.unexpected(format!(
                "{} of {STORM} sends refused, {reached} reached Meta, {healthy} of {ALONGSIDE} healthy sends forwarded, refusal {envelope}",
                refused.len()
            )));
        }
        self.say(format!(
            "{STORM} sends refused at the gateway, {reached} reached Meta (503, Retry-After: {}s, X-Wagate-Breaker: open, Meta's error envelope with code 131031); meanwhile {HEALTHY}: {healthy} of {ALONGSIDE} forwarded",
            sample.header("retry-after")
        ))
    }

    async fn webhook(&mut self) -> Result<(), DemoError> {
        self.step = (4, "webhook");
        // Meta's side: the number is locked, but no send of it has failed
        // at the gateway yet; the webhook is how the gateway learns of it.
        self.sim.sim.lock(HOOKED);
        let reached_before = self.sim.sim.counts(HOOKED).messages;
        let url = format!(
            "http://{}{}",
            self.proxy,
            crate::config::Webhook::default().path
        );
        let request: WebhookRequest = serde_json::from_value(json!({
            "url": url,
            "app_secret": self.app_secret,
            "kind": "status_failed",
            "phone_number_id": HOOKED,
            "code": 131031,
        }))
        .map_err(|e| self.unexpected(e.to_string()))?;
        let delivery = crate::sim::send_webhook(&request)
            .await
            .map_err(|e| self.unexpected(format!("webhook delivery: {e}")))?;
        if delivery.status != 200 {
            return Err(self.unexpected(format!(
                "the gateway answered the webhook {}",
                delivery.status
            )));
        }
        let view = self
            .wait_view(HOOKED, "the webhook tripping the breaker", |v| {
                state(v) == "open"
            })
            .await?;
        let answer = self.send(HOOKED).await?;
        let reached = self.sim.sim.counts(HOOKED).messages - reached_before;
        if answer.status != 503 || reached != 0 {
            return Err(self.unexpected(format!(
                "a send of the tripped {HOOKED} got {}, {reached} reached Meta",
                answer.status
            )));
        }
        self.say(format!(
            "a failed-status webhook for {HOOKED} (status failed, error 131031, signed with the app secret) POSTed to {url}: answered 200, the breaker tripped (source {}) before any send of it failed, and its next send was refused",
            str_of(&view["source"])
        ))
    }

    async fn blocked(&mut self) -> Result<(), DemoError> {
        self.step = (5, "health BLOCKED");
        let view = self
            .wait_view(LOCKED, "a BLOCKED health poll", |v| {
                v.is_some_and(|v| v["health_errors"].as_array().is_some_and(|e| !e.is_empty()))
            })
            .await?;
        let error = &view["health_errors"][0];
        let description = str_of(&error["description"]);
        let refusal = self.send(LOCKED).await?;
        let details = refusal.json()["error"]["error_data"]["details"].clone();
        if state(Some(&view)) != "open" || !str_of(&details).contains(description) {
            return Err(self.unexpected(format!(
                "after a BLOCKED poll the breaker is {} and its refusal says {details}",
                state(Some(&view))
            )));
        }
        let polls = self.sim.sim.counts(LOCKED).health;
        self.say(format!(
            "Meta's Health Status API reports {LOCKED} BLOCKED ({polls} {}); the breaker stays open and shows its health errors: {} \"{description}\", which its refusals now quote",
            if polls == 1 { "poll" } else { "polls" },
            error["code"]
        ))
    }

    async fn release(&mut self) -> Result<(), DemoError> {
        self.step = (6, "health AVAILABLE");
        let start = Instant::now();
        self.sim.sim.unlock(LOCKED);
        self.wait_view(LOCKED, "the ramp starting", |v| state(v) == "ramping")
            .await?;
        let (forwarded, refused) = self.probe().await?;
        let stages = self.ramp().await?;
        let mut after = 0;
        for _ in 0..BURST {
            if self.send(LOCKED).await?.status == 200 {
                after += 1;
            }
        }
        if after != BURST {
            return Err(
                self.unexpected(format!("after closing, {after} of {BURST} sends went out"))
            );
        }
        let stages: Vec<String> = stages
            .iter()
            .map(|(stage, rate, sent)| format!("stage {stage} at {rate}/s: {sent} forwarded"))
            .collect();
        self.say(format!(
            "Meta reports {LOCKED} AVAILABLE (twice in a row) -> ramping; of {BURST} sends at once {forwarded} went out as the probe and Meta accepted it ({refused} refused while it was out); the ramp: {} (20 sends/s offered); closed {:.1}s after AVAILABLE: {after} of {BURST} sends forwarded again",
            stages.join(", "),
            start.elapsed().as_secs_f64()
        ))
    }

    /// The first sends of a ramp: the simulator answers slowly, so the
    /// probe is still out while the rest of the burst arrives.
    async fn probe(&mut self) -> Result<(usize, usize), DemoError> {
        let reached_before = self.sim.sim.counts(LOCKED).messages;
        self.sim.sim.set_latency(Some(LOCKED), PROBE_LATENCY);
        let (http, proxy) = (&self.http, self.proxy);
        let answers = join_all((0..BURST).map(|_| http.send(proxy, LOCKED))).await;
        self.sim.sim.set_latency(Some(LOCKED), Duration::ZERO);
        let answers: Vec<Answer> = answers
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| self.unexpected(e))?;
        let forwarded = answers.iter().filter(|a| a.status == 200).count();
        let refused = answers
            .iter()
            .filter(|a| a.status == 503 && a.header("x-wagate-breaker") == "ramping")
            .count();
        let reached = self.sim.sim.counts(LOCKED).messages - reached_before;
        if (forwarded, refused, reached) != (1, BURST - 1, 1) {
            return Err(self.unexpected(format!(
                "of {BURST} sends at the ramp's start {forwarded} went out, {refused} were refused, {reached} reached Meta; expected exactly one probe"
            )));
        }
        Ok((forwarded, refused))
    }

    /// Sends at a steady pace until the breaker closes; returns each rate
    /// stage with the sends it let through.
    async fn ramp(&mut self) -> Result<Vec<(u64, u64, u64)>, DemoError> {
        let deadline = Instant::now() + WITHIN;
        let mut stages: Vec<(u64, u64, u64)> = Vec::new();
        let mut pace = tokio::time::interval(RAMP_PACE);
        loop {
            pace.tick().await;
            if Instant::now() > deadline {
                return Err(self.deadline("the ramp ending with the breaker closed"));
            }
            let Some(view) = self.view(LOCKED).await? else {
                break;
            };
            if state(Some(&view)) != "ramping" {
                return Err(self.unexpected(format!(
                    "the breaker left the ramp for {}: {}",
                    state(Some(&view)),
                    str_of(&view["reason"])
                )));
            }
            let stage = view["ramp_stage"].as_u64().unwrap_or(0);
            let rate = view["ramp_rate"].as_u64().unwrap_or(0);
            if stage > 0 && stages.last().is_none_or(|(s, _, _)| *s != stage) {
                stages.push((stage, rate, 0));
            }
            if self.send(LOCKED).await?.status == 200
                && let Some(current) = stages.last_mut()
            {
                current.2 += 1;
            }
        }
        if stages.is_empty() {
            return Err(self.unexpected("the breaker closed without a rate stage".to_owned()));
        }
        Ok(stages)
    }

    async fn summary(&mut self, before: &BTreeMap<String, f64>) -> Result<(), DemoError> {
        self.step = (7, "metrics");
        let after = client::samples(&self.metrics().await?);
        let moved = client::moved(before, &after);
        let still = state(self.view(HOOKED).await?.as_ref()).to_owned();
        let healthy = state(self.view(HEALTHY).await?.as_ref()).to_owned();
        self.say(format!(
            "{LOCKED} closed, {HOOKED} {still} (Meta still reports it BLOCKED), {HEALTHY} {healthy}; the metrics that moved, from http://{}/metrics:",
            self.admin
        ))?;
        let width = moved.iter().map(|(s, _, _)| s.len()).max().unwrap_or(0);
        for (series, was, now) in &moved {
            writeln!(
                self.out,
                "      {series:<width$}  {} -> {}",
                number(*was),
                number(*now)
            )?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// A metric value: whole numbers without decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}
