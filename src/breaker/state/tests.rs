//! Tests of the machine: a table of every state against every event,
//! behaviour scenarios, and property tests. Shared helpers live here.

use std::time::Duration;

use crate::breaker::{
    Breaker, BreakerKey, Decision, Event, HealthError, HealthVerdict, Observed, OperatorAction,
    ProbeOutcome, Release, Rules, Settings, Source, State, Transition, UnixMillis, apply,
};

mod props;
mod scenarios;
mod table;
mod timed;

/// 2026-08-14, around the fixtures' timestamps.
const T0: u64 = 1_786_700_000_000;

/// `secs` seconds after `T0`.
fn at(secs: u64) -> UnixMillis {
    UnixMillis(T0 + secs * 1000)
}

fn number() -> BreakerKey {
    BreakerKey::for_number("200000000000001")
}

fn pair() -> BreakerKey {
    BreakerKey::for_pair("200000000000001", "15550009999")
}

/// The defaults without jitter, so deadlines are exact.
fn settings() -> Settings {
    Settings {
        jitter: 0.0,
        ..Settings::default()
    }
}

fn run(current: Option<&Breaker>, key: &BreakerKey, event: &Event, now: UnixMillis) -> Decision {
    apply(current, key, event, now, &Rules::defaults(), &settings())
}

/// The transition `event` makes, failing the test when there is none.
fn transition(current: Option<&Breaker>, key: &BreakerKey, event: &Event, now: u64) -> Transition {
    match run(current, key, event, at(now)) {
        Decision::Transition(t) => *t,
        Decision::Unchanged => panic!("expected a transition for {event:?} at +{now}s"),
    }
}

/// Applies `event` the way a store would: keep the record when unchanged,
/// replace it (or drop it, when closed) on a transition.
fn drive(current: Option<Breaker>, key: &BreakerKey, event: &Event, now: u64) -> Option<Breaker> {
    match run(current.as_ref(), key, event, at(now)) {
        Decision::Unchanged => current,
        Decision::Transition(t) => t.next,
    }
}

/// A Graph error seen in a forwarded response.
fn seen(code: i64) -> Event {
    Event::GraphError(Observed {
        code,
        source: Source::Response,
        fbtrace_id: Some(format!("trace-{code}")),
        details: Some("details".to_owned()),
        wamid: None,
        wait_hint: None,
    })
}

/// The same error arriving in a failed-status webhook.
fn hooked(code: i64) -> Event {
    Event::GraphError(Observed {
        code,
        source: Source::Webhook,
        fbtrace_id: None,
        details: None,
        wamid: None,
        wait_hint: None,
    })
}

fn blocked() -> Event {
    Event::Health(HealthVerdict::Blocked(vec![HealthError {
        code: 131031,
        description: "The business phone number is locked.".to_owned(),
        possible_solution: None,
    }]))
}

fn available() -> Event {
    Event::Health(HealthVerdict::Available)
}

fn probe(ok: bool) -> Event {
    Event::Probe(if ok {
        ProbeOutcome::Accepted
    } else {
        ProbeOutcome::Lost
    })
}

fn reset() -> Event {
    Event::Operator(OperatorAction::reset("appeal granted"))
}

fn hold(reason: &str) -> Event {
    Event::Operator(OperatorAction::trip(reason))
}

fn release() -> Event {
    Event::Operator(OperatorAction::release("verified in WhatsApp Manager"))
}

/// Opened by a 131031 at +0s; `min_open` ends at +300s.
fn open_lock() -> Option<Breaker> {
    drive(None, &number(), &seen(131031), 0)
}

/// Cooling down after a 130429 at +0s, until +60s.
fn cooling() -> Option<Breaker> {
    drive(None, &number(), &seen(130429), 0)
}

/// Held by an operator at +0s.
fn held() -> Option<Breaker> {
    drive(None, &number(), &hold("audit"), 0)
}

/// Health said AVAILABLE at +600s: the probe is out.
fn probing() -> Option<Breaker> {
    drive(open_lock(), &number(), &available(), 600)
}

/// The probe succeeded at +610s (stage 1) and stage 2 began at +670s.
fn ramping_stage_2() -> Option<Breaker> {
    let b = drive(probing(), &number(), &probe(true), 610);
    drive(b, &number(), &Event::Tick, 670)
}

/// A 130429 at +680s paused the stage-2 ramp until +740s.
fn paused() -> Option<Breaker> {
    drive(ramping_stage_2(), &number(), &seen(130429), 680)
}

/// The invariants every stored record keeps.
fn assert_valid(b: &Breaker) {
    assert!(!b.reason.is_empty(), "{b:?}");
    match b.state {
        State::Closed => panic!("closed records are not stored: {b:?}"),
        State::Ramping => {
            let ramp = b.ramp.expect("a ramping record has its progress");
            assert_eq!(b.release, Release::Health, "{b:?}");
            assert_eq!(
                ramp.stage == 0,
                ramp.admit == crate::breaker::Admission::Probe
            );
        }
        State::Open => {
            if b.cause.source != Source::Operator {
                assert!(b.trips >= 1, "an open record tripped by a rule: {b:?}");
            }
            if b.ramp.is_some() {
                assert!(
                    matches!(b.release, Release::At(_)),
                    "only a cool-down pauses a ramp"
                );
            }
        }
        State::Held => assert!(b.ramp.is_none(), "{b:?}"),
    }
}

/// What every transition says about itself, whatever the event.
fn assert_consistent(current: Option<&Breaker>, t: &Transition, now: UnixMillis) {
    let stored = current.filter(|b| b.state != State::Closed);
    assert_eq!(t.from, stored.map_or(State::Closed, |b| b.state));
    assert_eq!(t.to, t.next.as_ref().map_or(State::Closed, |b| b.state));
    assert_eq!(
        (t.record.from, t.record.to, t.record.at),
        (t.from, t.to, now)
    );
    assert!(!t.record.reason.is_empty());
    if let Some(next) = &t.next {
        assert_eq!(next.version, current.map_or(0, |b| b.version) + 1);
        assert_eq!(t.record.trips, next.trips);
        assert_valid(next);
    }
}

#[test]
fn fixtures_are_what_the_tests_assume() {
    // Sanity check of the fixtures the other tests build on.
    let b = open_lock().unwrap();
    assert_eq!(b.min_open_until, at(300));
    assert_eq!(settings().min_open, Duration::from_secs(300));
    assert_eq!(paused().unwrap().release, Release::At(at(740)));
}

#[test]
fn a_restriction_opens_a_class_until_its_end_and_only_a_class() {
    use crate::breaker::{Restriction, TrafficClass};
    let class = BreakerKey::for_class("200000000000001", TrafficClass::Business);
    let restrict = |until: u64| {
        Event::Restrict(Restriction {
            code: 368,
            until: at(until),
            details: "RESTRICTED_BIZ_INITIATED_MESSAGING".to_owned(),
        })
    };
    assert!(matches!(
        run(None, &number(), &restrict(60), at(0)),
        Decision::Unchanged
    ));
    assert!(matches!(
        run(None, &class, &restrict(0), at(0)),
        Decision::Unchanged
    ));
    let open = drive(None, &class, &restrict(60), 0).expect("restricted");
    assert_eq!(
        (open.state, open.release),
        (State::Open, Release::At(at(60)))
    );
    assert!(open.refuses_sends(at(59)));
    // The same end again changes nothing; a later end moves it.
    assert!(matches!(
        run(Some(&open), &class, &restrict(60), at(1)),
        Decision::Unchanged
    ));
    let later = drive(Some(open.clone()), &class, &restrict(90), 1).unwrap();
    assert_eq!(later.release, Release::At(at(90)));
    // A code never opens a class; time closes it.
    assert!(matches!(
        run(None, &class, &seen(131031), at(0)),
        Decision::Unchanged
    ));
    assert_eq!(drive(Some(later), &class, &Event::Tick, 90), None);
}

#[test]
fn a_cool_down_lasts_as_long_as_the_answer_asks() {
    let hinted = |secs: u64| {
        Event::GraphError(Observed {
            code: 130429,
            source: Source::Response,
            fbtrace_id: None,
            details: None,
            wamid: None,
            wait_hint: Some(Duration::from_secs(secs)),
        })
    };
    let open = drive(None, &number(), &hinted(7), 0).expect("cooled down");
    assert_eq!(
        open.release,
        Release::At(at(7)),
        "7 s asked, not the rule's 60 s"
    );
    assert!(!open.refuses_sends(at(7)));
    // Without a hint the rule's cool-down stands.
    let plain = drive(None, &number(), &seen(130429), 0).unwrap();
    assert_eq!(plain.release, Release::At(at(60)));
}
