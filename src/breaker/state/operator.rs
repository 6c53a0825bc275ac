//! Operators' commands: reset, hold (trip) and release.

use super::ramp::start_ramp;
use super::{Change, Ctx};
use crate::breaker::event::OperatorAction;
use crate::breaker::record::{Breaker, Cause, Release, Source, State};

pub(super) fn operator(
    b: Option<&Breaker>,
    action: &OperatorAction,
    ctx: &Ctx<'_>,
) -> Option<Change> {
    let mut change = match action {
        OperatorAction::Trip { reason, ttl, .. } => hold(b, reason, *ttl, ctx),
        OperatorAction::Reset { reason, .. } => {
            Some(Change::closed(b?, Source::Operator, reason.clone()))
        }
        OperatorAction::Release { reason, .. } => {
            let b = b?;
            matches!(b.state, State::Open | State::Held)
                .then(|| start_ramp(b, Source::Operator, reason.clone(), ctx))
        }
    }?;
    change.by = action.actor().map(str::to_owned);
    Some(change)
}

/// An operator hold. It keeps the cause, trips and health errors of the
/// record it replaces, so refusals still quote the lock; holding a closed
/// number has no error to quote (code 0, source operator). Holding a held
/// breaker again only replaces a different reason or end. A hold with a
/// `ttl` ends by itself: its release is the instant it closes.
fn hold(
    b: Option<&Breaker>,
    reason: &str,
    ttl: Option<std::time::Duration>,
    ctx: &Ctx<'_>,
) -> Option<Change> {
    let release = ttl.map_or(Release::Health, |ttl| {
        Release::At(ctx.now.saturating_add(ttl))
    });
    let next = match b {
        Some(b) if b.state == State::Held && b.reason == reason && b.release == release => {
            return None;
        }
        Some(b) if b.state == State::Held => Breaker {
            reason: reason.to_owned(),
            release,
            ..b.clone()
        },
        Some(b) => Breaker {
            state: State::Held,
            since: ctx.now,
            release,
            ramp: None,
            reason: reason.to_owned(),
            ..b.clone()
        },
        None => Breaker {
            key: ctx.key.clone(),
            state: State::Held,
            version: 0,
            since: ctx.now,
            cause: Cause {
                code: 0,
                source: Source::Operator,
                fbtrace_id: None,
                details: None,
                wamid: None,
                at: ctx.now,
            },
            trips: 0,
            release,
            min_open_until: ctx.now,
            ramp: None,
            health_errors: Vec::new(),
            reason: reason.to_owned(),
        },
    };
    Some(Change::to(next, Source::Operator))
}
