//! Every state against every kind of event, at concrete times.

use super::*;

const U: Option<State> = None;
const C: Option<State> = Some(State::Closed);
const O: Option<State> = Some(State::Open);
const H: Option<State> = Some(State::Held);
const R: Option<State> = Some(State::Ramping);

const NAMES: [&str; 13] = [
    "trip 131031",
    "cooldown 130429",
    "count 190",
    "pass 100",
    "health AVAILABLE",
    "health LIMITED",
    "health BLOCKED",
    "probe ok",
    "probe lost",
    "operator reset",
    "operator trip",
    "operator release",
    "tick",
];

/// A starting record, the time the events arrive (seconds after `T0`), and
/// the state each event of [`events`] leads to.
type Row = (&'static str, Option<Breaker>, u64, [Option<State>; 13]);

fn events() -> [Event; 13] {
    [
        seen(131031),
        seen(130429),
        seen(190),
        seen(100),
        available(),
        Event::Health(HealthVerdict::Limited),
        blocked(),
        probe(true),
        probe(false),
        reset(),
        hold("maintenance"),
        release(),
        Event::Tick,
    ]
}

/// Which state each event leads to (`U`: unchanged). `from == to` means an
/// update in place.
#[test]
fn every_state_answers_every_event() {
    #[rustfmt::skip]
    let rows: [Row; 11] = [
        //                                    trip cool count pass avail ltd block p.ok p.lost reset hold rel tick
        ("closed", None, 0,                   [O,   O,   U,   U,   U,    U,  O,    U,   U,    U,    H,   U,  U]),
        ("open, before min_open", open_lock(), 60,
                                              [U,   U,   U,   U,   U,    U,  O,    U,   U,    C,    H,   R,  U]),
        ("open, after min_open", open_lock(), 600,
                                              [U,   U,   U,   U,   R,    R,  O,    U,   U,    C,    H,   R,  U]),
        ("cooling down", cooling(), 30,       [O,   U,   U,   U,   U,    U,  O,    U,   U,    C,    H,   R,  U]),
        ("cool-down expired", cooling(), 60,  [O,   O,   C,   C,   C,    C,  O,    C,   C,    C,    H,   C,  C]),
        ("held", held(), 3600,                [U,   U,   U,   U,   U,    U,  H,    U,   U,    C,    H,   R,  U]),
        ("ramping, probe out", probing(), 605,
                                              [O,   O,   U,   U,   U,    U,  O,    R,   O,    C,    H,   U,  U]),
        ("ramping, stage 2 done", ramping_stage_2(), 730,
                                              [O,   O,   U,   U,   U,    U,  O,    U,   U,    C,    H,   U,  R]),
        ("ramping, last stage done", last_stage(), 2000,
                                              [O,   O,   U,   U,   U,    U,  O,    U,   U,    C,    H,   U,  C]),
        ("ramp paused", paused(), 700,        [O,   U,   U,   U,   U,    U,  O,    U,   U,    C,    H,   R,  U]),
        ("ramp pause over", paused(), 740,    [O,   O,   R,   R,   R,    R,  O,    R,   R,    C,    H,   R,  R]),
    ];
    for (name, start, now, want) in rows {
        if let Some(b) = &start {
            assert_valid(b);
        }
        for ((event, event_name), want) in events().iter().zip(NAMES).zip(want) {
            let decision = run(start.as_ref(), &number(), event, at(now));
            let got = match &decision {
                Decision::Unchanged => None,
                Decision::Transition(t) => {
                    assert_consistent(start.as_ref(), t, at(now));
                    Some(t.to)
                }
            };
            assert_eq!(got, want, "{name} + {event_name} at +{now}s");
        }
    }
}

/// Stage 4 (the last of the default four) began at +1900s.
fn last_stage() -> Option<Breaker> {
    let mut b = ramping_stage_2();
    for now in [800, 1900] {
        b = drive(b, &number(), &Event::Tick, now);
    }
    let b = b.expect("still ramping");
    assert_eq!(b.ramp.map(|r| r.stage), Some(4));
    Some(b)
}

/// A pair key answers only to pair rules; health and the number's rules
/// leave it alone.
#[test]
fn pair_keys_answer_only_to_pair_rules() {
    let backing_off = drive(None, &pair(), &seen(131056), 0);
    #[rustfmt::skip]
    let rows: [Row; 2] = [
        //                                      trip cool count pass avail ltd block p.ok p.bad reset hold rel tick
        ("closed pair", None, 0,                [U,   U,   U,   U,   U,    U,  U,    U,   U,    U,    H,   U,  U]),
        ("backing off", backing_off.clone(), 0, [U,   U,   U,   U,   U,    U,  U,    U,   U,    C,    H,   R,  U]),
    ];
    for (name, start, now, want) in rows {
        for ((event, event_name), want) in events().iter().zip(NAMES).zip(want) {
            let decision = run(start.as_ref(), &pair(), event, at(now));
            let got = match &decision {
                Decision::Unchanged => None,
                Decision::Transition(t) => {
                    assert_consistent(start.as_ref(), t, at(now));
                    Some(t.to)
                }
            };
            assert_eq!(got, want, "{name} + {event_name}");
        }
    }
    // And the number's key ignores the pair code.
    assert_eq!(
        run(None, &number(), &seen(131056), at(0)),
        Decision::Unchanged
    );
    assert_eq!(backing_off.unwrap().release, Release::At(at(1)));
}
