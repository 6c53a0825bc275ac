//! The pure state machine: [`apply`] takes the stored record, an event and
//! `now`, and says what the record becomes. No I/O and no clock, so every
//! transition is tested with plain values.
//!
//! Choices the transition table leaves open, made here:
//! - **Time first.** A cool-down whose time has passed is over whatever
//!   event arrives: the event applies to the key as if closed (or, for a
//!   paused ramp, as ramping again), and when the event itself changes
//!   nothing the expiry alone is the transition.
//! - **Idempotent.** A trip on an open or held record, and a cool-down on
//!   any open or held record, change nothing: neither trips nor deadlines
//!   grow when three replicas and a webhook see the same lock.
//! - **A lock outranks a cool-down.** A trip rule (or health BLOCKED) on a
//!   number that is only cooling down makes it wait for health, since the
//!   cool-down would otherwise let sends through a lock.
//! - **Throttling pauses a ramp.** A cool-down or back-off code while
//!   ramping opens the breaker until the wait ends and keeps its trips and
//!   ramp stage; it then ramps on from that stage. Only a trip rule or
//!   health BLOCKED count as a failed ramp (a longer `min_open`); a probe
//!   that got no answer only sends the breaker back to wait for health.
//! - **Back-offs linger.** A back-off (Meta's 4^X pair waits) lets sends
//!   through when it ends but stays stored for as long again, so a new hit
//!   in that time waits four times longer; a tick after that forgets it.
//! - **Updates in place.** Some events change a record but not its state:
//!   health BLOCKED refreshing the errors of an open or held record, a ramp
//!   stage advancing, a lock replacing a cool-down, a longer back-off, an
//!   operator re-holding with a new reason. They are transitions with
//!   `from == to`, so stores still check-and-set them and the audit log
//!   records them.
//! - **Health is per number.** Health events change nothing on pair keys.
//!   On a closed number, health BLOCKED opens it like a trip rule.

use std::time::Duration;

use super::event::{Event, Observed};
use super::key::{BreakerKey, UnixMillis};
use super::record::{Breaker, Cause, RampProgress, Release, Source, State};
use super::rules::{Action, Rules, Scope};
use super::settings::Settings;
use super::transition::{Decision, Transition, TransitionRecord};

mod operator;
mod ramp;

/// Applies `event` to the breaker of `key`, whose stored record is
/// `current` (`None`, or a closed tombstone, when closed), at `now`.
///
/// The returned record's `version` is one above `current`'s (1 for a new
/// record), so a store that keeps closed tombstones keeps versions rising
/// across episodes. Pure: replicas applying the same event to the same
/// record compute the same result, jitter included.
pub fn apply(
    current: Option<&Breaker>,
    key: &BreakerKey,
    event: &Event,
    now: UnixMillis,
    rules: &Rules,
    settings: &Settings,
) -> Decision {
    let ctx = Ctx {
        key,
        now,
        rules,
        settings,
    };
    let version = current.map_or(0, |b| b.version);
    let stored = current.filter(|b| b.state != State::Closed);
    let from = stored.map_or(State::Closed, |b| b.state);
    let settled = stored.and_then(|b| settle(b, &ctx));
    let effective = match &settled {
        Some(change) => change.next.as_ref(),
        None => stored,
    };
    match step(effective, event, &ctx).or(settled) {
        Some(change) => finish(change, from, version, &ctx),
        None => Decision::Unchanged,
    }
}

/// What one call works with.
struct Ctx<'a> {
    key: &'a BreakerKey,
    now: UnixMillis,
    rules: &'a Rules,
    settings: &'a Settings,
}

/// A transition before its version and states are filled in.
struct Change {
    next: Option<Breaker>,
    source: Source,
    code: i64,
    fbtrace_id: Option<String>,
    wamid: Option<String>,
    trips: u32,
    reason: String,
    /// The operator behind the change, when one is.
    by: Option<String>,
}

impl Change {
    /// To `next`, caused by an event without an error code of its own.
    fn to(next: Breaker, source: Source) -> Self {
        Self {
            source,
            code: next.cause.code,
            fbtrace_id: None,
            wamid: None,
            trips: next.trips,
            reason: next.reason.clone(),
            by: None,
            next: Some(next),
        }
    }

    /// To `next`, caused by `cause`.
    fn by(next: Breaker, cause: &Cause, reason: String) -> Self {
        Self {
            source: cause.source,
            code: cause.code,
            fbtrace_id: cause.fbtrace_id.clone(),
            wamid: cause.wamid.clone(),
            trips: next.trips,
            reason,
            by: None,
            next: Some(next),
        }
    }

    /// From `b` to closed.
    fn closed(b: &Breaker, source: Source, reason: String) -> Self {
        Self {
            next: None,
            source,
            code: b.cause.code,
            fbtrace_id: None,
            wamid: None,
            trips: b.trips,
            reason,
            by: None,
        }
    }
}

fn finish(change: Change, from: State, version: u64, ctx: &Ctx<'_>) -> Decision {
    let to = change.next.as_ref().map_or(State::Closed, |b| b.state);
    if from == State::Closed && to == State::Closed {
        return Decision::Unchanged;
    }
    let next = change.next.map(|mut b| {
        b.version = version.saturating_add(1);
        b
    });
    Decision::Transition(Box::new(Transition {
        from,
        to,
        next,
        record: TransitionRecord {
            key: ctx.key.clone(),
            from,
            to,
            code: change.code,
            source: change.source,
            fbtrace_id: change.fbtrace_id,
            wamid: change.wamid,
            at: ctx.now,
            trips: change.trips,
            reason: change.reason,
            by: change.by,
        },
    }))
}

/// Ends a cool-down or a timed hold whose time has passed, whatever the
/// event.
fn settle(b: &Breaker, ctx: &Ctx<'_>) -> Option<Change> {
    let Release::At(until) = b.release else {
        return None;
    };
    if ctx.now < until {
        return None;
    }
    if b.state == State::Held {
        // The operator chose the end: the hold's reason stays theirs.
        return Some(Change::closed(
            b,
            Source::Clock,
            "hold's ttl over".to_owned(),
        ));
    }
    if b.state != State::Open {
        return None;
    }
    if let Some(ramp) = b.ramp {
        let mut next = b.clone();
        next.state = State::Ramping;
        next.since = ctx.now;
        next.release = Release::Health;
        next.ramp = Some(RampProgress {
            stage_since: ctx.now,
            ..ramp
        });
        next.reason = format!("cool-down over; ramping on at stage {}", ramp.stage);
        return Some(Change::to(next, Source::Clock));
    }
    let lingers = ctx.rules.classify(b.cause.code).action == Action::Backoff
        && ctx.now < until.saturating_add(until.since(b.since));
    (!lingers).then(|| Change::closed(b, Source::Clock, "cool-down over".to_owned()))
}

fn step(b: Option<&Breaker>, event: &Event, ctx: &Ctx<'_>) -> Option<Change> {
    match event {
        Event::GraphError(seen) => observed(b, seen, ctx),
        Event::Health(verdict) => ramp::health(b, verdict, ctx),
        Event::Probe(outcome) => ramp::probe(b?, *outcome, ctx),
        Event::Operator(action) => operator::operator(b, action, ctx),
        Event::Tick => ramp::tick(b?, ctx),
        Event::Restrict(restriction) => restrict(b, restriction, ctx),
    }
}

/// A traffic class restricted until a time: open until then, without
/// health (Meta names the end), and later ends only move it later.
fn restrict(
    b: Option<&Breaker>,
    restriction: &crate::breaker::Restriction,
    ctx: &Ctx<'_>,
) -> Option<Change> {
    if !matches!(ctx.key, BreakerKey::Class { .. }) || restriction.until <= ctx.now {
        return None;
    }
    if let Some(b) = b
        && b.state != State::Closed
        && matches!(b.release, Release::At(until) if until >= restriction.until)
    {
        return None;
    }
    let cause = Cause {
        code: restriction.code,
        source: Source::Webhook,
        fbtrace_id: None,
        details: Some(restriction.details.clone()),
        wamid: None,
        at: ctx.now,
    };
    let reason = format!(
        "restricted by Meta ({}) until {}",
        restriction.details, restriction.until
    );
    let next = Breaker {
        key: ctx.key.clone(),
        state: State::Open,
        version: 0,
        since: b
            .filter(|b| b.state != State::Closed)
            .map_or(ctx.now, |b| b.since),
        cause: cause.clone(),
        trips: 1,
        release: Release::At(restriction.until),
        min_open_until: restriction.until,
        ramp: None,
        health_errors: Vec::new(),
        reason: reason.clone(),
    };
    Some(Change::by(next, &cause, reason))
}

fn observed(b: Option<&Breaker>, seen: &Observed, ctx: &Ctx<'_>) -> Option<Change> {
    let verdict = ctx.rules.classify(seen.code);
    // The caller passes the pair key for a pair-scope code and the number
    // key otherwise; each key answers only to its own rules.
    let applies = match ctx.key {
        BreakerKey::Number(_) => verdict.scope != Scope::Pair,
        BreakerKey::Pair { .. } => verdict.scope == Scope::Pair,
        // Opened by restrictions only, never by a code.
        BreakerKey::Class { .. } => false,
    };
    if !applies {
        return None;
    }
    // Built only when the event changes something: a duplicate of a lock
    // already open costs no allocation.
    let cause = || Cause {
        code: seen.code,
        source: seen.source,
        fbtrace_id: seen.fbtrace_id.clone(),
        details: seen.details.clone(),
        wamid: seen.wamid.clone(),
        at: ctx.now,
    };
    // `Rules::try_new` guarantees a cooldown on cooldown and backoff rules.
    let timer = match verdict.action {
        Action::Trip => return trip(b, cause, ctx),
        // The answer's own hint wins over the rule's time: Meta knows when
        // the throttle lifts.
        Action::Cooldown => Timer::Fixed(seen.wait_hint.or(verdict.cooldown)?),
        Action::Backoff => Timer::Backoff {
            cap: verdict.cooldown?,
        },
        Action::Count | Action::Pass => return None,
    };
    timed(b, cause, timer, ctx)
}

/// A trip rule matched (or health said BLOCKED): wait for health.
fn trip(b: Option<&Breaker>, cause: impl FnOnce() -> Cause, ctx: &Ctx<'_>) -> Option<Change> {
    let trips = match b.map(|b| (b, b.state, b.release)) {
        None | Some((_, State::Closed, _)) => 1,
        // Already refusing until health or an operator lets go: the same
        // lock seen again, by another replica or by a webhook.
        Some((_, State::Open, Release::Health) | (_, State::Held, _)) => return None,
        // A failed ramp, paused or not, waits longer than the last time.
        Some((b, State::Ramping, _)) => b.trips.saturating_add(1),
        Some((b, State::Open, Release::At(_))) if b.ramp.is_some() => b.trips.saturating_add(1),
        // A lock during a plain cool-down starts the episode.
        Some((_, State::Open, Release::At(_))) => 1,
    };
    let cause = cause();
    let min_open = ctx.settings.min_open_for(ctx.key, trips);
    let until = ctx.now.saturating_add(min_open);
    let reason = format!(
        "error {} ({}): refusing sends until health is AVAILABLE, not before {until}",
        cause.code, cause.source
    );
    let next = Breaker {
        key: ctx.key.clone(),
        state: State::Open,
        version: 0,
        since: ctx.now,
        cause: cause.clone(),
        trips,
        release: Release::Health,
        min_open_until: until,
        ramp: None,
        health_errors: Vec::new(),
        reason: reason.clone(),
    };
    Some(Change::by(next, &cause, reason))
}

/// How long a cool-down or back-off lasts.
#[derive(Clone, Copy)]
enum Timer {
    Fixed(Duration),
    /// 4^(trips - 1) seconds, at most `cap`.
    Backoff {
        cap: Duration,
    },
}

impl Timer {
    fn wait(self, trips: u32) -> Duration {
        match self {
            Self::Fixed(wait) => wait,
            Self::Backoff { cap } => 4u64
                .checked_pow(trips.saturating_sub(1))
                .map_or(cap, |secs| Duration::from_secs(secs).min(cap)),
        }
    }
}

/// A cool-down or back-off rule matched.
fn timed(
    b: Option<&Breaker>,
    cause: impl FnOnce() -> Cause,
    timer: Timer,
    ctx: &Ctx<'_>,
) -> Option<Change> {
    let trips = match b.map(|b| (b, b.state)) {
        None | Some((_, State::Closed)) => 1,
        Some((b, State::Ramping)) => return Some(pause_ramp(b, cause(), timer.wait(1), ctx)),
        // Only a lingering back-off is still stored once expired: a new hit
        // now waits longer.
        Some((b, State::Open)) if b.is_expired(ctx.now) => match timer {
            Timer::Backoff { .. } => b.trips.saturating_add(1),
            Timer::Fixed(_) => 1,
        },
        // Already refusing: the same throttle seen again does not extend it.
        Some((_, State::Open | State::Held)) => return None,
    };
    let cause = cause();
    let wait = timer.wait(trips);
    let until = ctx.now.saturating_add(wait);
    let reason = format!(
        "error {} ({}): refusing sends for {}, until {until}",
        cause.code,
        cause.source,
        humantime::format_duration(wait)
    );
    let next = Breaker {
        key: ctx.key.clone(),
        state: State::Open,
        version: 0,
        since: ctx.now,
        cause: cause.clone(),
        trips,
        release: Release::At(until),
        min_open_until: until,
        ramp: None,
        health_errors: Vec::new(),
        reason: reason.clone(),
    };
    Some(Change::by(next, &cause, reason))
}

/// Throttling while ramping: refuse until the wait ends, then ramp on.
fn pause_ramp(b: &Breaker, cause: Cause, wait: Duration, ctx: &Ctx<'_>) -> Change {
    let until = ctx.now.saturating_add(wait);
    let mut next = b.clone();
    next.state = State::Open;
    next.since = ctx.now;
    next.release = Release::At(until);
    next.reason = format!(
        "ramp paused by error {} ({}) until {until}",
        cause.code, cause.source
    );
    let reason = next.reason.clone();
    Change::by(next, &cause, reason)
}

#[cfg(test)]
mod tests;
