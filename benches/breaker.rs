//! Cost of the breaker's pure core: `apply` for a trip on a closed key and
//! for the same trip on an already open key (the common case during a lock
//! storm), and `classify` for a trip code and for a code no rule matches.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wagate::breaker::{
    BreakerKey, Decision, Event, Observed, Rules, Settings, Source, UnixMillis, apply,
};

fn lock() -> Event {
    Event::GraphError(Observed {
        code: 131031,
        source: Source::Response,
        fbtrace_id: Some("AqZ3nY1x0bKdT7m2pQe9sLw".to_owned()),
        details: Some("Business account has been locked.".to_owned()),
        wamid: None,
        wait_hint: None,
    })
}

fn bench_apply(c: &mut Criterion) {
    let rules = Rules::defaults();
    let settings = Settings::default();
    let key = BreakerKey::for_number("200000000000001");
    let event = lock();
    let now = UnixMillis(1_786_700_000_000);
    let Decision::Transition(opened) = apply(None, &key, &event, now, &rules, &settings) else {
        panic!("a lock trips a closed key");
    };
    let open = opened.next.expect("an open record");

    c.bench_function("apply/trip_closed_key", |b| {
        b.iter(|| {
            apply(
                None,
                black_box(&key),
                black_box(&event),
                now,
                &rules,
                &settings,
            )
        });
    });
    c.bench_function("apply/duplicate_trip_open_key", |b| {
        b.iter(|| {
            apply(
                Some(black_box(&open)),
                &key,
                black_box(&event),
                now,
                &rules,
                &settings,
            )
        });
    });
}

fn bench_classify(c: &mut Criterion) {
    let rules = Rules::defaults();
    c.bench_function("classify/trip_code", |b| {
        b.iter(|| rules.classify(black_box(131031)))
    });
    c.bench_function("classify/unmatched_code", |b| {
        b.iter(|| rules.classify(black_box(131026)))
    });
}

criterion_group!(benches, bench_apply, bench_classify);
criterion_main!(benches);
