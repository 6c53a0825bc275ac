//! Health verdicts, probes and ticks: what moves an open breaker through
//! its ramp to closed, or back to open.

use super::{Change, Ctx, trip};
use crate::breaker::event::{HealthVerdict, ProbeOutcome};
use crate::breaker::record::{
    Admission, Breaker, Cause, HealthError, RampProgress, Release, Source, State,
};

pub(super) fn health(
    b: Option<&Breaker>,
    verdict: &HealthVerdict,
    ctx: &Ctx<'_>,
) -> Option<Change> {
    // Health knows numbers: pairs and classes end by their own clocks.
    if ctx.key.is_partial() {
        return None;
    }
    let name = match verdict {
        HealthVerdict::Available => "AVAILABLE",
        HealthVerdict::Limited => "LIMITED",
        HealthVerdict::Blocked(errors) => return blocked(b, errors, ctx),
    };
    let b = b?;
    let ready =
        b.state == State::Open && b.release == Release::Health && ctx.now >= b.min_open_until;
    ready.then(|| {
        let reason = format!("health {name}: ramping, one probe first");
        start_ramp(b, Source::Health, reason, ctx)
    })
}

fn blocked(b: Option<&Breaker>, errors: &[HealthError], ctx: &Ctx<'_>) -> Option<Change> {
    let reason = blocked_reason(errors);
    if let Some(b) = b
        && (b.state == State::Held || (b.state == State::Open && b.release == Release::Health))
    {
        if b.health_errors == errors {
            return None;
        }
        let mut next = b.clone();
        next.health_errors = errors.to_vec();
        // A held record keeps its operator's reason.
        if next.state == State::Open {
            next.reason.clone_from(&reason);
        }
        let mut change = Change::to(next, Source::Health);
        change.code = errors.first().map_or(b.cause.code, |e| e.code);
        change.reason = reason;
        return Some(change);
    }
    let first = errors.first();
    let cause = Cause {
        code: first.map_or(0, |e| e.code),
        source: Source::Health,
        fbtrace_id: None,
        details: first.map(|e| e.description.clone()),
        wamid: None,
        at: ctx.now,
    };
    let mut change = trip(b, move || cause, ctx)?;
    if let Some(next) = &mut change.next {
        next.health_errors = errors.to_vec();
        next.reason.clone_from(&reason);
    }
    change.reason = reason;
    Some(change)
}

fn blocked_reason(errors: &[HealthError]) -> String {
    let descriptions: Vec<&str> = errors.iter().map(|e| e.description.as_str()).collect();
    if descriptions.is_empty() {
        "health BLOCKED".to_owned()
    } else {
        format!("health BLOCKED: {}", descriptions.join("; "))
    }
}

pub(super) fn start_ramp(b: &Breaker, source: Source, reason: String, ctx: &Ctx<'_>) -> Change {
    let mut next = b.clone();
    next.state = State::Ramping;
    next.since = ctx.now;
    next.release = Release::Health;
    next.ramp = Some(RampProgress {
        stage: 0,
        stage_since: ctx.now,
        admit: Admission::Probe,
    });
    next.health_errors.clear();
    next.reason = reason;
    Change::to(next, source)
}

pub(super) fn probe(b: &Breaker, outcome: ProbeOutcome, ctx: &Ctx<'_>) -> Option<Change> {
    let ramp = b
        .ramp
        .filter(|ramp| b.state == State::Ramping && ramp.stage == 0)?;
    match outcome {
        ProbeOutcome::Accepted => Some(advance(b, ramp, Source::Response, ctx)),
        ProbeOutcome::Failed => None,
        ProbeOutcome::Lost => {
            let mut next = b.clone();
            next.state = State::Open;
            next.since = ctx.now;
            next.release = Release::Health;
            next.min_open_until = ctx.now;
            next.ramp = None;
            next.reason =
                "the probe got no answer (timeout or reset): waiting for health again".to_owned();
            Some(Change::to(next, Source::Response))
        }
    }
}

/// The next ramp stage, or closed after the last.
fn advance(b: &Breaker, ramp: RampProgress, source: Source, ctx: &Ctx<'_>) -> Change {
    let stage = ramp.stage.saturating_add(1);
    let Some(rate) = ctx.settings.ramp_rate(stage) else {
        return Change::closed(b, source, "ramp complete".to_owned());
    };
    let mut next = b.clone();
    next.ramp = Some(RampProgress {
        stage,
        stage_since: ctx.now,
        admit: Admission::PerSecond(rate),
    });
    next.reason = format!("ramping: stage {stage}, {rate} sends per second");
    Change::to(next, source)
}

/// Ends a ramp stage that has lasted `ramp_stage`. One stage per tick, so a
/// replica that missed ticks never jumps several rates at once.
pub(super) fn tick(b: &Breaker, ctx: &Ctx<'_>) -> Option<Change> {
    let ramp = b.ramp.filter(|_| b.state == State::Ramping)?;
    let done =
        ramp.stage > 0 && ctx.now >= ramp.stage_since.saturating_add(ctx.settings.ramp_stage);
    done.then(|| advance(b, ramp, Source::Clock, ctx))
}
