//! Invariants over random event sequences.

use proptest::prelude::*;

use super::*;

/// Codes covering every default action: trip, cooldown, backoff, count, pass.
const CODES: [i64; 11] = [
    131031, 368, 133010, 130429, 131048, 131057, 131056, 190, 0, 250, 100,
];

fn arb_event() -> impl Strategy<Value = Event> {
    let source = prop_oneof![Just(Source::Response), Just(Source::Webhook)];
    let graph = (prop::sample::select(&CODES[..]), source).prop_map(|(code, source)| {
        Event::GraphError(Observed {
            code,
            source,
            fbtrace_id: None,
            details: None,
            wamid: None,
            wait_hint: None,
        })
    });
    let health_error = (
        prop::sample::select(vec![131031i64, 141014]),
        "[a-z ]{0,12}",
    )
        .prop_map(|(code, description)| HealthError {
            code,
            description,
            possible_solution: None,
        });
    let health = prop_oneof![
        Just(HealthVerdict::Available),
        Just(HealthVerdict::Limited),
        prop::collection::vec(health_error, 0..3).prop_map(HealthVerdict::Blocked),
    ];
    let reason = prop::sample::select(vec!["audit", "appeal"]).prop_map(str::to_owned);
    let operator = prop_oneof![
        reason.clone().prop_map(OperatorAction::reset),
        reason.clone().prop_map(OperatorAction::trip),
        reason.prop_map(OperatorAction::release),
    ];
    prop_oneof![
        4 => graph,
        2 => health.prop_map(Event::Health),
        2 => prop_oneof![
            Just(ProbeOutcome::Accepted),
            Just(ProbeOutcome::Failed),
            Just(ProbeOutcome::Lost)
        ]
        .prop_map(Event::Probe),
        1 => operator.prop_map(Event::Operator),
        3 => Just(Event::Tick),
    ]
}

/// Gaps between events: same instant, seconds, minutes, or hours.
fn arb_gap() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0..5_000u64, 0..600_000u64, 0..8 * 3_600_000u64]
}

fn arb_steps() -> impl Strategy<Value = Vec<(Event, u64)>> {
    prop::collection::vec((arb_event(), arb_gap()), 0..40)
}

fn arb_key() -> impl Strategy<Value = BreakerKey> {
    prop_oneof![Just(number()), Just(pair())]
}

fn arb_settings() -> impl Strategy<Value = Settings> {
    (0..3_600u64, 0..12 * 3_600u64, 1.0..4.0f64, 0.0..0.5f64).prop_map(
        |(min_open, extra, backoff_factor, jitter)| Settings {
            min_open: Duration::from_secs(min_open),
            max_open: Duration::from_secs(min_open + extra),
            backoff_factor,
            jitter,
            ..Settings::default()
        },
    )
}

/// Runs `steps` from a closed key the way a store keeping closed tombstones
/// would, checking every transition. Returns the record at the end.
fn replay(key: &BreakerKey, steps: &[(Event, u64)], settings: &Settings) -> Option<Breaker> {
    let rules = Rules::defaults();
    let mut stored: Option<Breaker> = None;
    let mut now = UnixMillis(T0);
    let mut last_version = 0;
    for (event, gap) in steps {
        now = UnixMillis(now.0 + gap);
        let decision = apply(stored.as_ref(), key, event, now, &rules, settings);
        let Decision::Transition(t) = decision else {
            continue;
        };
        assert_consistent(stored.as_ref(), &t, now);
        if t.from == State::Held && t.to != State::Held {
            assert!(
                matches!(
                    event,
                    Event::Operator(OperatorAction::Reset { .. } | OperatorAction::Release { .. })
                ),
                "held left by {event:?}"
            );
        }
        let version = stored.as_ref().map_or(0, |b| b.version) + 1;
        assert!(version > last_version, "versions rise across episodes");
        last_version = version;
        stored = Some(t.next.unwrap_or_else(|| {
            let mut tombstone = stored.clone().expect("only a stored record closes");
            tombstone.state = State::Closed;
            tombstone.version = version;
            tombstone
        }));
        if let Some(b) = stored.as_ref().filter(|b| b.state == State::Open)
            && b.release == Release::Health
        {
            let bound = settings.max_open.mul_f64(1.0 + settings.jitter);
            assert!(b.min_open_until.since(now) <= bound, "{b:?}");
        }
    }
    stored.filter(|b| b.state != State::Closed)
}

proptest! {
    #[test]
    fn any_sequence_leaves_a_valid_record(key in arb_key(), steps in arb_steps()) {
        if let Some(b) = replay(&key, &steps, &settings()) {
            assert_valid(&b);
        }
    }

    #[test]
    fn held_never_leaves_held_but_by_operator_reset_or_release(
        prefix in arb_steps(),
        steps in prop::collection::vec((arb_event(), arb_gap()), 1..40),
    ) {
        let rules = Rules::defaults();
        let start = replay(&number(), &prefix, &settings());
        // Well after the prefix, so time only moves forward.
        let base = 400 * 86_400;
        let mut stored = drive(start, &number(), &hold("hold"), base);
        let mut now = at(base);
        for (event, gap) in &steps {
            now = UnixMillis(now.0 + gap);
            let leaves = matches!(
                event,
                Event::Operator(OperatorAction::Reset { .. } | OperatorAction::Release { .. })
            );
            let b = stored.as_ref().expect("held");
            prop_assert!(b.refuses_sends(now));
            match apply(Some(b), &number(), event, now, &rules, &settings()) {
                Decision::Unchanged => {}
                Decision::Transition(t) => {
                    prop_assert_eq!(t.from, State::Held);
                    if leaves {
                        break;
                    }
                    prop_assert_eq!(t.to, State::Held, "{:?}", event);
                    stored = t.next;
                }
            }
        }
    }

    #[test]
    fn the_same_trip_twice_is_one_transition(
        prefix in arb_steps(),
        code in prop::sample::select(vec![131031i64, 368, 133010]),
        gap in arb_gap(),
    ) {
        let rules = Rules::defaults();
        let start = replay(&number(), &prefix, &settings());
        let now = UnixMillis(T0 + 400 * 86_400_000);
        let event = seen(code);
        let already = start.as_ref().is_some_and(|b| {
            b.state == State::Held || (b.state == State::Open && b.release == Release::Health)
        });
        let first = apply(start.as_ref(), &number(), &event, now, &rules, &settings());
        let after = match first {
            Decision::Unchanged => {
                prop_assert!(already);
                start
            }
            Decision::Transition(t) => {
                prop_assert!(!already);
                t.next
            }
        };
        let second = apply(after.as_ref(), &number(), &event, UnixMillis(now.0 + gap), &rules, &settings());
        prop_assert_eq!(second, Decision::Unchanged);
    }

    #[test]
    fn the_same_throttle_twice_within_its_wait_is_at_most_one_transition(
        prefix in arb_steps(),
        gap in 0..60_000u64,
    ) {
        let rules = Rules::defaults();
        let start = replay(&number(), &prefix, &settings());
        let now = UnixMillis(T0 + 400 * 86_400_000);
        let event = seen(130429);
        let after = match apply(start.as_ref(), &number(), &event, now, &rules, &settings()) {
            Decision::Unchanged => start,
            Decision::Transition(t) => t.next,
        };
        let second = apply(after.as_ref(), &number(), &event, UnixMillis(now.0 + gap), &rules, &settings());
        prop_assert_eq!(second, Decision::Unchanged);
    }

    #[test]
    fn backoff_never_exceeds_max_open_plus_jitter(
        settings in arb_settings(),
        key in arb_key(),
        trips in 1..200u32,
        steps in arb_steps(),
    ) {
        let bound = settings.max_open.mul_f64(1.0 + settings.jitter);
        prop_assert!(settings.min_open_for(&key, trips) <= bound);
        prop_assert!(settings.min_open_for(&key, trips) >= settings.min_open.min(settings.max_open).mul_f64(1.0 - settings.jitter).saturating_sub(Duration::from_millis(1)));
        replay(&number(), &steps, &settings);
    }
}
