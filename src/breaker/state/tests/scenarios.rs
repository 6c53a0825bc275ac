//! Behaviours of trips, health, holds and ramps, one per test, with the
//! fields each transition must set.

use super::*;
use crate::breaker::{Admission, Cause};

#[test]
fn trip_opens_until_health_with_min_open() {
    let t = transition(None, &number(), &seen(131031), 0);
    let b = t.next.expect("open record");
    assert_eq!(
        (t.from, t.to, b.state, b.version, b.trips),
        (State::Closed, State::Open, State::Open, 1, 1)
    );
    assert_eq!(b.release, Release::Health);
    assert_eq!(b.min_open_until, at(300));
    assert_eq!(b.since, at(0));
    assert_eq!(
        b.cause,
        Cause {
            code: 131031,
            source: Source::Response,
            fbtrace_id: Some("trace-131031".to_owned()),
            details: Some("details".to_owned()),
            wamid: None,
            at: at(0),
        }
    );
    assert_eq!(t.record.code, 131031);
    assert_eq!(t.record.source, Source::Response);
    assert_eq!(t.record.fbtrace_id.as_deref(), Some("trace-131031"));
    assert!(b.reason.contains("131031"), "{}", b.reason);
    assert!(b.refuses_sends(at(1)));
    assert_eq!(b.retry_after(at(100)), Duration::from_secs(200));
    assert_eq!(
        b.retry_after(at(400)),
        Duration::from_secs(1),
        "floor after min_open"
    );
}

#[test]
fn duplicate_trip_is_one_transition() {
    // Three replicas and a webhook see the same lock.
    let mut stored = None;
    let mut transitions = 0;
    for (event, now) in [
        (seen(131031), 0),
        (seen(131031), 1),
        (seen(368), 2),
        (hooked(131031), 5),
    ] {
        if let Decision::Transition(t) = run(stored.as_ref(), &number(), &event, at(now)) {
            transitions += 1;
            stored = t.next;
        }
    }
    assert_eq!(transitions, 1);
    let b = stored.unwrap();
    assert_eq!(
        (b.version, b.trips, b.min_open_until),
        (1, 1, at(300)),
        "not extended"
    );
}

#[test]
fn health_before_min_open_changes_nothing() {
    let b = open_lock();
    assert_eq!(
        run(b.as_ref(), &number(), &available(), at(299)),
        Decision::Unchanged
    );
    assert_eq!(
        transition(b.as_ref(), &number(), &available(), 300).to,
        State::Ramping
    );
}

#[test]
fn health_limited_counts_as_available() {
    let t = transition(
        open_lock().as_ref(),
        &number(),
        &Event::Health(HealthVerdict::Limited),
        300,
    );
    assert_eq!(t.to, State::Ramping);
    assert_eq!(t.record.source, Source::Health);
}

#[test]
fn health_blocked_refreshes_the_reason_once() {
    let t = transition(open_lock().as_ref(), &number(), &blocked(), 60);
    assert_eq!(
        (t.from, t.to),
        (State::Open, State::Open),
        "an update in place"
    );
    let b = t.next.unwrap();
    assert_eq!(b.health_errors.len(), 1);
    assert_eq!(
        b.reason,
        "health BLOCKED: The business phone number is locked."
    );
    assert_eq!(
        (b.version, b.trips, b.since),
        (2, 1, at(0)),
        "same episode, same state"
    );
    assert_eq!(
        run(Some(&b), &number(), &blocked(), at(120)),
        Decision::Unchanged
    );
    // The errors are the reason until the ramp starts.
    let ramping = transition(Some(&b), &number(), &available(), 600)
        .next
        .unwrap();
    assert!(ramping.health_errors.is_empty());
}

#[test]
fn held_ignores_health_available() {
    for now in [0, 300, 86_400] {
        assert_eq!(
            run(held().as_ref(), &number(), &available(), at(now)),
            Decision::Unchanged
        );
    }
}

#[test]
fn held_ignores_trips_ticks_and_probes() {
    let b = held();
    for event in [
        seen(131031),
        seen(130429),
        seen(131056),
        probe(false),
        probe(true),
        Event::Tick,
    ] {
        assert_eq!(
            run(b.as_ref(), &number(), &event, at(7 * 86_400)),
            Decision::Unchanged,
            "{event:?}"
        );
    }
    assert_eq!(
        b.as_ref().unwrap().retry_after(at(10)),
        Duration::from_secs(60)
    );
    assert!(b.unwrap().refuses_sends(at(10 * 86_400)));
}

#[test]
fn holding_a_lock_keeps_its_cause_and_trips() {
    let t = transition(open_lock().as_ref(), &number(), &hold("fraud review"), 60);
    let b = t.next.unwrap();
    assert_eq!((b.state, b.trips, b.cause.code), (State::Held, 1, 131031));
    assert_eq!(b.reason, "fraud review");
    assert_eq!(t.record.source, Source::Operator);
    // Holding a closed number has no error to quote.
    let fresh = transition(None, &number(), &hold("audit"), 0).next.unwrap();
    assert_eq!(
        (fresh.cause.code, fresh.cause.source, fresh.trips),
        (0, Source::Operator, 0)
    );
    // The same hold again is nothing; a new reason replaces the old.
    assert_eq!(
        run(Some(&fresh), &number(), &hold("audit"), at(5)),
        Decision::Unchanged
    );
    let again = transition(Some(&fresh), &number(), &hold("audit, ticket 42"), 5);
    assert_eq!((again.from, again.to), (State::Held, State::Held));
    assert_eq!(again.next.unwrap().since, at(0));
}

#[test]
fn a_timed_hold_refuses_until_its_ttl_then_closes() {
    let timed = Event::Operator(OperatorAction::Trip {
        reason: "maintenance".to_owned(),
        by: Some("alice".to_owned()),
        ttl: Some(Duration::from_secs(600)),
    });
    let t = transition(open_lock().as_ref(), &number(), &timed, 60);
    assert_eq!(t.record.by.as_deref(), Some("alice"));
    let b = t.next.unwrap();
    assert_eq!((b.state, b.cause.code), (State::Held, 131031));
    assert!(b.refuses_sends(at(659)));
    assert_eq!(b.retry_after(at(640)), Duration::from_secs(20));
    assert_eq!(
        b.retry_after(at(100)),
        Duration::from_secs(60),
        "at most a minute"
    );
    // Health does not release a hold, timed or not.
    assert_eq!(
        run(Some(&b), &number(), &available(), at(400)),
        Decision::Unchanged
    );
    assert!(!b.refuses_sends(at(660)), "sends flow once the ttl is over");
    let over = transition(Some(&b), &number(), &Event::Tick, 660);
    assert_eq!((over.from, over.to), (State::Held, State::Closed));
    assert_eq!(over.record.source, Source::Clock);
    // The same hold with another end is a change; a hold with no end
    // replaces a timed one.
    let longer = Event::Operator(OperatorAction::Trip {
        reason: "maintenance".to_owned(),
        by: None,
        ttl: Some(Duration::from_secs(1200)),
    });
    let t = transition(Some(&b), &number(), &longer, 60);
    assert_eq!(t.next.unwrap().release, Release::At(at(1260)));
    let t = transition(Some(&b), &number(), &hold("maintenance"), 70);
    assert_eq!(t.next.unwrap().release, Release::Health);
}

#[test]
fn ramping_admits_one_probe_first() {
    let b = probing().unwrap();
    assert_eq!(b.state, State::Ramping);
    assert_eq!(b.admitted_rate(), Some(Admission::Probe));
    assert!(!b.refuses_sends(at(600)), "the ramp budget decides");
    assert_eq!(b.retry_after(at(600)), Duration::ZERO);
    // A tick does not replace the probe with a rate.
    assert_eq!(
        run(Some(&b), &number(), &Event::Tick, at(6000)),
        Decision::Unchanged
    );
    let t = transition(Some(&b), &number(), &probe(true), 610);
    assert_eq!((t.from, t.to), (State::Ramping, State::Ramping));
    assert_eq!(
        t.next.unwrap().admitted_rate(),
        Some(Admission::PerSecond(1))
    );
}

#[test]
fn ramp_climbs_stage_by_stage_then_closes() {
    let mut b = drive(probing(), &number(), &probe(true), 610);
    let mut now = 610;
    for rate in [5, 20, 80] {
        assert_eq!(
            run(b.as_ref(), &number(), &Event::Tick, at(now + 59)),
            Decision::Unchanged
        );
        now += 60;
        b = drive(b, &number(), &Event::Tick, now);
        assert_eq!(
            b.as_ref().unwrap().admitted_rate(),
            Some(Admission::PerSecond(rate))
        );
    }
    // A late tick still advances one stage only.
    let last = b.unwrap();
    let t = transition(Some(&last), &number(), &Event::Tick, now + 3600);
    assert_eq!(
        (t.from, t.to, t.next),
        (State::Ramping, State::Closed, None)
    );
    assert_eq!(
        (t.record.source, t.record.reason.as_str()),
        (Source::Clock, "ramp complete")
    );
    assert_eq!(t.record.code, 131031, "the episode's code");
}

#[test]
fn empty_ramp_closes_on_the_first_good_probe() {
    let settings = Settings {
        ramp_rates: Vec::new(),
        ..settings()
    };
    let decision = apply(
        probing().as_ref(),
        &number(),
        &probe(true),
        at(610),
        &Rules::defaults(),
        &settings,
    );
    let Decision::Transition(t) = decision else {
        panic!("closes")
    };
    assert_eq!(t.to, State::Closed);
}

#[test]
fn retrip_lengthens_min_open() {
    let t = transition(ramping_stage_2().as_ref(), &number(), &seen(131031), 700);
    let b = t.next.unwrap();
    assert_eq!(
        (t.from, b.state, b.trips, b.release),
        (State::Ramping, State::Open, 2, Release::Health)
    );
    assert_eq!(b.min_open_until, at(700 + 600), "min_open doubled");
    assert!(b.ramp.is_none());
    // A probe refused by a trip rule is a failed ramp too.
    let ramping = drive(Some(b), &number(), &available(), 1300);
    let b = transition(ramping.as_ref(), &number(), &seen(131031), 1310)
        .next
        .unwrap();
    assert_eq!((b.trips, b.min_open_until), (3, at(1310 + 1200)));
    assert_eq!(b.cause.code, 131031);
}

#[test]
fn a_lost_probe_waits_for_health_again_without_a_trip() {
    let ramping = probing();
    let trips = ramping.as_ref().unwrap().trips;
    let t = transition(ramping.as_ref(), &number(), &probe(false), 700);
    let b = t.next.unwrap();
    assert_eq!(
        (t.from, b.state, b.release, b.trips),
        (State::Ramping, State::Open, Release::Health, trips)
    );
    assert_eq!(
        b.min_open_until,
        at(700),
        "no longer wait than health takes"
    );
    assert!(b.ramp.is_none());
    // The next AVAILABLE starts the ramp again, with a new probe.
    let again = transition(Some(&b), &number(), &available(), 730);
    assert_eq!(again.to, State::Ramping);
    assert_eq!(again.next.unwrap().admitted_rate(), Some(Admission::Probe));
}

#[test]
fn a_failed_probe_changes_nothing_and_later_sends_are_no_probes() {
    let failed = Event::Probe(ProbeOutcome::Failed);
    assert_eq!(
        run(probing().as_ref(), &number(), &failed, at(700)),
        Decision::Unchanged
    );
    for outcome in [
        ProbeOutcome::Accepted,
        ProbeOutcome::Failed,
        ProbeOutcome::Lost,
    ] {
        assert_eq!(
            run(
                ramping_stage_2().as_ref(),
                &number(),
                &Event::Probe(outcome),
                at(700)
            ),
            Decision::Unchanged,
            "{outcome:?}"
        );
    }
}

#[test]
fn min_open_stops_growing_at_max_open() {
    let mut b = open_lock();
    let mut now = 0;
    for _ in 0..12 {
        let ready = b.as_ref().unwrap().min_open_until;
        now = (ready.0 - T0) / 1000;
        b = drive(b, &number(), &available(), now);
        b = drive(b, &number(), &seen(131031), now);
    }
    let b = b.unwrap();
    assert_eq!(b.trips, 13);
    assert_eq!(b.min_open_until, at(now + 6 * 3600));
}

#[test]
fn operator_release_skips_min_open() {
    let t = transition(open_lock().as_ref(), &number(), &release(), 10);
    assert_eq!((t.to, t.record.source), (State::Ramping, Source::Operator));
    assert_eq!(t.next.unwrap().admitted_rate(), Some(Admission::Probe));
    assert_eq!(
        run(probing().as_ref(), &number(), &release(), at(700)),
        Decision::Unchanged
    );
    assert_eq!(run(None, &number(), &release(), at(0)), Decision::Unchanged);
}

#[test]
fn operator_reset_forgets_the_episode() {
    let ramping = drive(ramping_stage_2(), &number(), &seen(131031), 700);
    assert_eq!(ramping.as_ref().unwrap().trips, 2);
    let t = transition(ramping.as_ref(), &number(), &reset(), 710);
    assert_eq!(
        (t.to, t.next, t.record.reason.as_str()),
        (State::Closed, None, "appeal granted")
    );
    assert_eq!(run(None, &number(), &reset(), at(0)), Decision::Unchanged);
    let again = transition(None, &number(), &seen(131031), 720)
        .next
        .unwrap();
    assert_eq!((again.trips, again.min_open_until), (1, at(1020)));
}

#[test]
fn versions_continue_from_a_closed_tombstone() {
    let mut tombstone = open_lock().unwrap();
    tombstone.state = State::Closed;
    tombstone.version = 7;
    let t = transition(Some(&tombstone), &number(), &seen(131031), 1000);
    assert_eq!((t.from, t.next.unwrap().version), (State::Closed, 8));
    assert_eq!(
        run(Some(&tombstone), &number(), &reset(), at(1000)),
        Decision::Unchanged
    );
}

#[test]
fn records_and_transitions_round_trip_through_json() {
    for b in [open_lock(), cooling(), held(), probing(), paused()]
        .into_iter()
        .flatten()
    {
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Breaker>(&json).unwrap(), b, "{json}");
    }
    let t = transition(None, &number(), &seen(131031), 0);
    let json = serde_json::to_value(&t.record).unwrap();
    assert_eq!(json["key"], "200000000000001");
    assert_eq!(
        (json["from"].as_str(), json["to"].as_str()),
        (Some("closed"), Some("open"))
    );
    assert_eq!(json["source"], "response");
    let b = serde_json::to_value(paused().unwrap()).unwrap();
    assert_eq!(b["release"]["at"], at(740).0);
    assert_eq!(b["ramp"]["admit"]["per_second"], 5);
    // A field added by a newer replica is ignored, not an error.
    let mut newer = serde_json::to_value(open_lock().unwrap()).unwrap();
    newer["added_later"] = serde_json::json!(true);
    assert!(serde_json::from_value::<Breaker>(newer).is_ok());
}

#[test]
fn jitter_is_the_same_on_every_replica() {
    let jittered = Settings::default();
    let one = || {
        apply(
            None,
            &number(),
            &seen(131031),
            at(0),
            &Rules::defaults(),
            &jittered,
        )
    };
    assert_eq!(one(), one());
    let Decision::Transition(t) = one() else {
        panic!("trips")
    };
    let wait = t.next.unwrap().min_open_until.since(at(0));
    assert!(
        wait >= Duration::from_secs(270) && wait <= Duration::from_secs(330),
        "{wait:?}"
    );
}
