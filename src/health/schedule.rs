//! When each open number is polled: a per-number interval that backs off
//! with jitter, and a per-WABA budget that spaces polls evenly and never
//! bursts. Pure bookkeeping over `tokio::time::Instant`, so the schedule is
//! tested on tokio's paused clock.

use std::collections::{BTreeSet, HashMap, VecDeque};
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

/// One WABA: its waiting numbers in the order they fall due, how many it
/// has in all (waiting or being polled), and its budget.
#[derive(Debug)]
struct Scope {
    queue: BTreeSet<(Instant, String)>,
    members: usize,
    budget: Budget,
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

/// Every tracked number and every WABA's queue and budget. Picking the next
/// poll looks at the head of each WABA's queue only, so its cost grows with
/// the number of WABAs, not of numbers.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    max_interval: Duration,
    per_hour: u32,
    entries: HashMap<String, Entry>,
    scopes: HashMap<String, Scope>,
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
            scopes: HashMap::new(),
        }
    }

    /// Whether `number` is tracked.
    pub fn contains(&self, number: &str) -> bool {
        self.entries.contains_key(number)
    }

    /// Tracks `number` of WABA `scope`, first due at `due` (when its
    /// `min_open` ends); `now` starts a new WABA's budget.
    pub fn track(&mut self, number: &str, scope: &str, due: Instant, now: Instant) {
        if self.entries.contains_key(number) {
            return;
        }
        self.entries.insert(
            number.to_owned(),
            Entry {
                scope: scope.to_owned(),
                due,
                wait: self.interval,
                streak: 0,
                in_flight: false,
            },
        );
        let per_hour = self.per_hour;
        let scope = self
            .scopes
            .entry(scope.to_owned())
            .or_insert_with(|| Scope {
                queue: BTreeSet::new(),
                members: 0,
                budget: Budget::new(per_hour, now),
            });
        scope.members += 1;
        scope.queue.insert((due, number.to_owned()));
    }

    /// Stops tracking the numbers `keep` rejects at `now`; returns them. A
    /// WABA's budget outlives its numbers while it still paces, so numbers
    /// leaving and coming back cannot reset it.
    pub fn retain(&mut self, now: Instant, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.entries.keys().filter(|n| !keep(n)).cloned().collect();
        for number in &gone {
            let Some(entry) = self.entries.remove(number) else {
                continue;
            };
            if let Some(scope) = self.scopes.get_mut(&entry.scope) {
                scope.members -= 1;
                scope.queue.remove(&(entry.due, number.clone()));
            }
        }
        self.scopes
            .retain(|_, scope| scope.members > 0 || scope.budget.next > now);
        gone
    }

    /// The WABAs with any number tracked.
    pub fn scopes(&self) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|(_, s)| s.members > 0)
            .map(|(scope, _)| scope.clone())
            .collect()
    }

    /// The numbers tracked in `scope` and not being polled.
    pub fn numbers_of(&self, scope: &str) -> Vec<String> {
        self.scopes.get(scope).map_or_else(Vec::new, |s| {
            s.queue.iter().map(|(_, number)| number.clone()).collect()
        })
    }

    /// Whether `scope` has any number tracked.
    pub fn tracks_scope(&self, scope: &str) -> bool {
        self.scopes.get(scope).is_some_and(|s| s.members > 0)
    }

    /// The most overdue number due at `now` in a WABA that `polls` (this
    /// replica holds its lease) and whose budget has room.
    pub fn next_due(&self, now: Instant, polls: impl Fn(&str) -> bool) -> Option<String> {
        self.scopes
            .iter()
            .filter(|(scope, s)| s.budget.allows(now) && polls(scope))
            .filter_map(|(_, s)| s.queue.first().filter(|(due, _)| *due <= now))
            .min()
            .map(|(_, number)| number.clone())
    }

    /// A poll of `number` starts at `now`: it spends its WABA's budget.
    /// Returns what is left of that budget for the last hour.
    pub fn start(&mut self, number: &str, now: Instant) -> u32 {
        let Some(entry) = self.entries.get_mut(number) else {
            return self.per_hour;
        };
        entry.in_flight = true;
        let Some(scope) = self.scopes.get_mut(&entry.scope) else {
            return self.per_hour;
        };
        scope.queue.remove(&(entry.due, number.to_owned()));
        scope.budget.spend(now);
        scope.budget.left(now)
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
        let scope = self.scopes.get_mut(&entry.scope)?;
        // An attempt that never started (no token) is still queued.
        scope.queue.remove(&(entry.due, number.to_owned()));
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
        scope.queue.insert((entry.due, number.to_owned()));
        Some((entry.streak, entry.due))
    }

    /// When something next becomes due: the head of a WABA's queue, or its
    /// budget freeing up when the head is due already.
    pub fn next_wake(&self) -> Option<Instant> {
        self.scopes
            .values()
            .filter_map(|s| s.queue.first().map(|(due, _)| (*due).max(s.budget.next)))
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
            let wake = schedule.next_wake().unwrap_or(end).min(end);
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(1))).await;
        }
        polls
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_numbers_of_one_waba_stay_within_the_budget_and_all_get_polled() {
        let mut schedule = Schedule::new(Duration::from_secs(30), Duration::from_secs(300), 200);
        let start = Instant::now();
        for number in numbers(50) {
            schedule.track(&number, "waba-1", start, start);
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
        schedule.track("1", "-", now, now);
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
            schedule.track(number, "-", now, now);
        }
        schedule.track("3", "waba-9", now, now);
        let first = schedule.next_due(now, |_| true).unwrap();
        assert_eq!(schedule.start(&first, now), 1);
        let second = schedule.next_due(now, |_| true).unwrap();
        assert_eq!(
            second, "3",
            "the shared budget waits 30 min; another WABA does not"
        );
        schedule.start(&second, now);
        assert_eq!(schedule.next_due(now, |_| true), None);
        let wake = schedule.next_wake().unwrap();
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
