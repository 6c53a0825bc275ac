//! When each open number is polled: a per-number interval that backs off
//! with jitter, and a per-WABA budget that spaces polls evenly and never
//! bursts. Pure bookkeeping over `tokio::time::Instant`, so the schedule is
//! tested on tokio's paused clock.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The budget's window.
const HOUR: Duration = Duration::from_secs(3600);

/// One number's place in the schedule.
#[derive(Debug)]
struct Entry {
    scope: String,
    due: Instant,
    wait: Duration,
    streak: u32,
    in_flight: bool,
}

/// Spaces the polls of one WABA: one every hour / budget, the first at
/// once; a window of the last hour's polls feeds the gauge of what is left.
#[derive(Debug)]
struct Budget {
    spacing: Duration,
    per_hour: u32,
    next: Instant,
    spent: VecDeque<Instant>,
}

impl Budget {
    fn new(per_hour: u32, now: Instant) -> Self {
        Self {
            spacing: HOUR / per_hour.max(1),
            per_hour,
            next: now,
            spent: VecDeque::new(),
        }
    }

    fn allows(&self, now: Instant) -> bool {
        now >= self.next
    }

    fn spend(&mut self, now: Instant) {
        self.next = now.max(self.next) + self.spacing;
        self.spent.push_back(now);
        self.left(now);
    }

    fn left(&mut self, now: Instant) -> u32 {
        while self
            .spent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.spent.pop_front();
        }
        let spent = u32::try_from(self.spent.len()).unwrap_or(u32::MAX);
        self.per_hour.saturating_sub(spent)
    }
}

/// What a poll (or a poll that could not be made) did for its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// AVAILABLE (or a LIMITED that releases): the streak grows and the
    /// next poll comes after the first interval again.
    Counts,
    /// Anything that does not count towards release (BLOCKED, LIMITED that
    /// does not release, any failure): the streak restarts and the wait
    /// grows.
    Resets,
}

/// Every tracked number and every WABA's budget.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    max_interval: Duration,
    per_hour: u32,
    entries: HashMap<String, Entry>,
    budgets: HashMap<String, Budget>,
}

impl Schedule {
    /// A schedule polling every `interval` at first, backing off up to
    /// `max_interval`, within `per_hour` polls per WABA.
    pub fn new(interval: Duration, max_interval: Duration, per_hour: u32) -> Self {
        Self {
            interval,
            max_interval,
            per_hour,
            entries: HashMap::new(),
            budgets: HashMap::new(),
        }
    }

    /// Whether `number` is tracked.
    pub fn contains(&self, number: &str) -> bool {
        self.entries.contains_key(number)
    }

    /// Tracks `number` of WABA `scope`, first due at `due` (when its
    /// `min_open` ends).
    pub fn track(&mut self, number: &str, scope: &str, due: Instant) {
        self.entries
            .entry(number.to_owned())
            .or_insert_with(|| Entry {
                scope: scope.to_owned(),
                due,
                wait: self.interval,
                streak: 0,
                in_flight: false,
            });
    }

    /// Stops tracking the numbers `keep` rejects at `now`; returns them. A
    /// WABA's budget outlives its numbers while it still paces, so numbers
    /// leaving and coming back cannot reset it.
    pub fn retain(&mut self, now: Instant, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.entries.keys().filter(|n| !keep(n)).cloned().collect();
        for number in &gone {
            self.entries.remove(number);
        }
        let scopes: std::collections::HashSet<&str> =
            self.entries.values().map(|e| e.scope.as_str()).collect();
        self.budgets
            .retain(|scope, budget| scopes.contains(scope.as_str()) || budget.next > now);
        gone
    }

    /// The WABAs with a number due at `now`.
    pub fn scopes_due(&self, now: Instant) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .entries
            .values()
            .filter(|e| !e.in_flight && e.due <= now)
            .map(|e| e.scope.clone())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The numbers tracked in `scope`.
    pub fn numbers_of(&self, scope: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.scope == scope)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The WABAs tracked at all.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.entries.values().map(|e| e.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The most overdue number due at `now` in a WABA that `polls` (this
    /// replica holds its lease) and whose budget has room.
    pub fn next_due(&self, now: Instant, polls: impl Fn(&str) -> bool) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.in_flight && e.due <= now && polls(&e.scope))
            .filter(|(_, e)| self.budgets.get(&e.scope).is_none_or(|b| b.allows(now)))
            .min_by_key(|(number, e)| (e.due, number.as_str()))
            .map(|(number, _)| number.clone())
    }

    /// A poll of `number` starts at `now`: it spends its WABA's budget.
    /// Returns what is left of that budget for the last hour.
    pub fn start(&mut self, number: &str, now: Instant) -> u32 {
        let Some(entry) = self.entries.get_mut(number) else {
            return self.per_hour;
        };
        entry.in_flight = true;
        let per_hour = self.per_hour;
        let budget = self
            .budgets
            .entry(entry.scope.clone())
            .or_insert_with(|| Budget::new(per_hour, now));
        budget.spend(now);
        budget.left(now)
    }

    /// The poll of `number` (or the attempt, when none could be made) ended
    /// at `now` with `outcome`; `jitter` in [0, 1) spreads the next wait by
    /// up to a fifth either way. Returns the streak of counting polls and
    /// when the next poll is due.
    pub fn done(
        &mut self,
        number: &str,
        outcome: Outcome,
        now: Instant,
        jitter: f64,
    ) -> Option<(u32, Instant)> {
        let entry = self.entries.get_mut(number)?;
        entry.in_flight = false;
        match outcome {
            Outcome::Counts => {
                entry.streak = entry.streak.saturating_add(1);
                entry.wait = self.interval;
            }
            Outcome::Resets => {
                entry.streak = 0;
                entry.wait = (entry.wait * 2).min(self.max_interval);
            }
        }
        let spread = 1.0 + (jitter.clamp(0.0, 1.0) * 2.0 - 1.0) * 0.2;
        let wait = entry.wait.mul_f64(spread).min(self.max_interval);
        entry.due = now + wait;
        Some((entry.streak, entry.due))
    }

    /// When something next becomes due: the earliest number, or a WABA's
    /// budget freeing up for one that is due already.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| {
                let budget = self.budgets.get(&e.scope).map_or(now, |b| b.next);
                e.due.max(budget)
            })
            .min()
    }

    /// The number's scope, streak and next due time.
    pub fn entry(&self, number: &str) -> Option<(&str, u32, Instant)> {
        self.entries
            .get(number)
            .map(|e| (e.scope.as_str(), e.streak, e.due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("1000000000{i:04}")).collect()
    }

    /// Runs the schedule over `span` of paused time, polling whatever is
    /// due, with every poll answering `outcome`; returns each poll's time
    /// and number.
    async fn drive(
        schedule: &mut Schedule,
        span: Duration,
        outcome: Outcome,
    ) -> Vec<(Instant, String)> {
        let end = Instant::now() + span;
        let mut polls = Vec::new();
        while Instant::now() < end {
            let now = Instant::now();
            while let Some(number) = schedule.next_due(now, |_| true) {
                schedule.start(&number, now);
                schedule.done(&number, outcome, now, 0.5);
                polls.push((now, number));
            }
            let wake = schedule.next_wake(now).unwrap_or(end).min(end);
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(1))).await;
        }
        polls
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_numbers_of_one_waba_stay_within_the_budget_and_all_get_polled() {
        let mut schedule = Schedule::new(Duration::from_secs(30), Duration::from_secs(300), 200);
        let start = Instant::now();
        for number in numbers(50) {
            schedule.track(&number, "waba-1", start);
        }
        let polls = drive(
            &mut schedule,
            Duration::from_secs(3 * 3600),
            Outcome::Resets,
        )
        .await;
        // Never more than the budget in any hour, and evenly spaced.
        for (i, (at, _)) in polls.iter().enumerate() {
            let in_hour = polls[i..]
                .iter()
                .take_while(|(t, _)| t.duration_since(*at) < HOUR)
                .count();
            assert!(in_hour <= 200, "{in_hour} polls in the hour from poll {i}");
        }
        for pair in polls.windows(2) {
            assert!(
                pair[1].0.duration_since(pair[0].0) >= Duration::from_secs(18),
                "no burst"
            );
        }
        // Every number was polled, in the first hour already.
        let first_hour: std::collections::HashSet<&str> = polls
            .iter()
            .filter(|(t, _)| t.duration_since(start) < HOUR)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(first_hour.len(), 50);
        assert!(
            polls.len() >= 3 * 190,
            "the budget is used: {}",
            polls.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_backs_off_to_its_cap_and_resets_on_a_counting_poll() {
        let mut schedule = Schedule::new(Duration::from_secs(30), Duration::from_secs(300), 200);
        let now = Instant::now();
        schedule.track("1", "-", now);
        let mut waits = Vec::new();
        for _ in 0..6 {
            schedule.start("1", now);
            let (_, due) = schedule.done("1", Outcome::Resets, now, 0.5).unwrap();
            waits.push(due.duration_since(now).as_secs());
        }
        assert_eq!(waits, [60, 120, 240, 300, 300, 300]);
        let (streak, due) = schedule.done("1", Outcome::Counts, now, 0.5).unwrap();
        assert_eq!((streak, due.duration_since(now).as_secs()), (1, 30));
        // Jitter spreads by at most a fifth and never passes the cap.
        for jitter in [0.0, 0.999] {
            let (_, due) = schedule.done("1", Outcome::Resets, now, jitter).unwrap();
            let secs = due.duration_since(now).as_secs_f64();
            assert!((48.0..=72.0).contains(&secs), "{secs}");
            schedule.done("1", Outcome::Counts, now, 0.5);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn numbers_without_a_waba_share_one_budget_and_other_wabas_do_not_wait() {
        let mut schedule = Schedule::new(Duration::from_secs(30), Duration::from_secs(300), 2);
        let now = Instant::now();
        for number in ["1", "2"] {
            schedule.track(number, "-", now);
        }
        schedule.track("3", "waba-9", now);
        let first = schedule.next_due(now, |_| true).unwrap();
        assert_eq!(schedule.start(&first, now), 1);
        let second = schedule.next_due(now, |_| true).unwrap();
        assert_eq!(
            second, "3",
            "the shared budget waits 30 min; another WABA does not"
        );
        schedule.start(&second, now);
        assert_eq!(schedule.next_due(now, |_| true), None);
        let wake = schedule.next_wake(now).unwrap();
        assert_eq!(wake.duration_since(now), Duration::from_secs(1800));
        // Not this replica's lease: nothing is due for it.
        tokio::time::advance(Duration::from_secs(1800)).await;
        assert_eq!(
            schedule.next_due(Instant::now(), |scope| scope != "-"),
            None
        );
        assert!(schedule.next_due(Instant::now(), |_| true).is_some());
    }
}
