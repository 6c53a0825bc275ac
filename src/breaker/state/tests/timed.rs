//! Cool-downs, back-offs and the ramps they pause.

use super::*;
use crate::breaker::{Admission, RampProgress};

#[test]
fn cooldown_closes_after_its_time() {
    let b = cooling().unwrap();
    assert_eq!(
        (b.state, b.release, b.trips),
        (State::Open, Release::At(at(60)), 1)
    );
    assert!(b.refuses_sends(at(59)));
    assert_eq!(b.retry_after(at(45)), Duration::from_secs(15));
    assert!(!b.refuses_sends(at(60)) && b.is_expired(at(60)));
    assert_eq!(
        run(Some(&b), &number(), &Event::Tick, at(59)),
        Decision::Unchanged
    );
    let t = transition(Some(&b), &number(), &Event::Tick, 60);
    assert_eq!((t.from, t.to, t.next), (State::Open, State::Closed, None));
    assert_eq!((t.record.source, t.record.code), (Source::Clock, 130429));
}

#[test]
fn cooldowns_follow_their_rules() {
    for (code, secs) in [(130429, 60), (131048, 900), (131057, 90)] {
        let b = transition(None, &number(), &seen(code), 0).next.unwrap();
        assert_eq!(b.release, Release::At(at(secs)), "{code}");
    }
}

#[test]
fn repeated_throttling_does_not_extend_a_cooldown() {
    let b = cooling();
    for (code, now) in [(130429, 30), (131048, 40), (131057, 59)] {
        assert_eq!(
            run(b.as_ref(), &number(), &seen(code), at(now)),
            Decision::Unchanged
        );
    }
}

#[test]
fn lock_during_cooldown_waits_for_health() {
    let t = transition(cooling().as_ref(), &number(), &hooked(131031), 30);
    assert_eq!((t.from, t.to), (State::Open, State::Open));
    let b = t.next.unwrap();
    assert_eq!(
        (b.release, b.trips, b.min_open_until),
        (Release::Health, 1, at(330))
    );
    assert!(
        b.refuses_sends(at(61)),
        "the cool-down's end no longer releases it"
    );
    assert_eq!(
        run(Some(&b), &number(), &Event::Tick, at(61)),
        Decision::Unchanged
    );
}

#[test]
fn expired_cooldown_is_closed_for_any_event() {
    let b = cooling();
    let t = transition(b.as_ref(), &number(), &seen(131031), 61);
    let next = t.next.unwrap();
    assert_eq!(
        (t.from, next.release, next.trips, next.version),
        (State::Open, Release::Health, 1, 2)
    );
    let t = transition(b.as_ref(), &number(), &available(), 61);
    assert_eq!((t.to, t.record.source), (State::Closed, Source::Clock));
}

#[test]
fn throttling_pauses_a_ramp_and_keeps_its_trips() {
    let before = ramping_stage_2().unwrap();
    let t = transition(Some(&before), &number(), &seen(130429), 680);
    let b = t.next.unwrap();
    assert_eq!(
        (t.from, b.state, b.release, b.trips),
        (State::Ramping, State::Open, Release::At(at(740)), 1)
    );
    assert_eq!(b.ramp, before.ramp, "the ramp is kept");
    assert_eq!(b.cause, before.cause, "refusals still quote the lock");
    assert_eq!((t.record.code, t.record.source), (130429, Source::Response));
    assert!(b.refuses_sends(at(700)));
    // When the pause ends it ramps on at the same stage.
    let t = transition(Some(&b), &number(), &Event::Tick, 740);
    let b = t.next.unwrap();
    assert_eq!((t.to, t.record.source), (State::Ramping, Source::Clock));
    assert_eq!(
        b.ramp,
        Some(RampProgress {
            stage: 2,
            stage_since: at(740),
            admit: Admission::PerSecond(5)
        })
    );
}

#[test]
fn lock_during_a_paused_ramp_is_a_failed_ramp() {
    let b = transition(paused().as_ref(), &number(), &seen(131031), 700)
        .next
        .unwrap();
    assert_eq!((b.release, b.trips, b.ramp), (Release::Health, 2, None));
}

#[test]
fn pair_backoff_grows_by_powers_of_four() {
    // Each 131056 right after the last wait ended waits four times longer.
    let mut b = None;
    let mut now = 0;
    for wait in [1, 4, 16, 64, 256, 1024, 3600, 3600] {
        let t = transition(b.as_ref(), &pair(), &seen(131056), now);
        let next = t.next.unwrap();
        assert_eq!(next.release, Release::At(at(now + wait)), "after {now}s");
        assert!(next.refuses_sends(at(now)));
        // More 131056 during the wait come from sends already in flight.
        assert_eq!(
            run(Some(&next), &pair(), &seen(131056), at(now)),
            Decision::Unchanged
        );
        now += wait;
        b = Some(next);
    }
    assert_eq!(b.unwrap().trips, 8);
}

#[test]
fn pair_backoff_is_forgotten_after_a_quiet_period() {
    let b = drive(None, &pair(), &seen(131056), 0);
    let b = drive(b, &pair(), &seen(131056), 1);
    let b = b.unwrap();
    assert_eq!(b.release, Release::At(at(5)));
    // Sends flow again at +5s, but the record stays for another 4s.
    assert!(!b.refuses_sends(at(5)));
    assert_eq!(
        run(Some(&b), &pair(), &Event::Tick, at(8)),
        Decision::Unchanged
    );
    let t = transition(Some(&b), &pair(), &Event::Tick, 9);
    assert_eq!((t.to, t.record.trips), (State::Closed, 2));
    // A hit after that starts again at 4^0.
    assert_eq!(
        transition(None, &pair(), &seen(131056), 9)
            .next
            .unwrap()
            .release,
        Release::At(at(10))
    );
}

#[test]
fn waba_scope_acts_on_the_number() {
    let rules = Rules::with_overrides(vec![crate::breaker::Rule::new(
        crate::breaker::CodeMatch::one(131042),
        crate::breaker::Action::Trip,
        crate::breaker::Scope::Waba,
    )])
    .unwrap();
    let decision = apply(None, &number(), &seen(131042), at(0), &rules, &settings());
    let Decision::Transition(t) = decision else {
        panic!("trips")
    };
    assert_eq!(t.to, State::Open);
}
