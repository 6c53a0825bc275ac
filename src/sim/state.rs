//! The simulator's shared state: per-number scripting and counters, the
//! global latency and the request log.
//!
//! The send path is the load benchmark's upstream, so what it reads on every
//! request is atomic: a read-locked map lookup, a counter increment and a few
//! loads. Mutexes guard only what is scripted rarely (the injected error and
//! the explicit health), and the error mutex is not touched unless a flag
//! says an error is armed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use super::{ErrorInjection, Health, LogEntry, RequestCounts};

/// How many requests the log keeps.
const LOG_CAPACITY: usize = 1000;

/// `latency_ns` value meaning "no per-number setting".
const UNSET: u64 = u64::MAX;

/// Takes a lock even if a panicking thread poisoned it: the guarded values
/// are plain data that stay consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which counter a Graph-surface request bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Messages,
    MarketingMessages,
    Media,
    Health,
    Registration,
    Other,
}

impl Kind {
    const COUNT: usize = 6;

    fn index(self) -> usize {
        match self {
            Kind::Messages => 0,
            Kind::MarketingMessages => 1,
            Kind::Media => 2,
            Kind::Health => 3,
            Kind::Registration => 4,
            Kind::Other => 5,
        }
    }
}

/// Everything scripted or counted for one phone number id.
pub(crate) struct Number {
    counts: [AtomicU64; Kind::COUNT],
    locked: AtomicBool,
    latency_ns: AtomicU64,
    error_armed: AtomicBool,
    error: Mutex<Option<ErrorInjection>>,
    health: Mutex<Option<Health>>,
    health_error: Mutex<Option<ErrorInjection>>,
}

impl Number {
    pub(crate) fn new() -> Self {
        Self {
            counts: Default::default(),
            locked: AtomicBool::new(false),
            latency_ns: AtomicU64::new(UNSET),
            error_armed: AtomicBool::new(false),
            error: Mutex::new(None),
            health: Mutex::new(None),
            health_error: Mutex::new(None),
        }
    }

    pub(crate) fn bump(&self, kind: Kind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_locked(&self, locked: bool) {
        self.locked.store(locked, Ordering::Relaxed);
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    pub(crate) fn set_health(&self, health: Health) {
        *lock(&self.health) = Some(health);
    }

    /// The health to report: the explicit setting, else BLOCKED while locked.
    pub(crate) fn health(&self) -> Health {
        match *lock(&self.health) {
            Some(h) => h,
            None if self.is_locked() => Health::Blocked,
            None => Health::Available,
        }
    }

    pub(crate) fn inject_health_error(&self, injection: Option<ErrorInjection>) {
        *lock(&self.health_error) = injection.filter(|i| i.times != Some(0));
    }

    /// The error to answer for this health read, counting down `times`.
    pub(crate) fn take_health_error(&self) -> Option<ErrorInjection> {
        let mut slot = lock(&self.health_error);
        let armed = slot.as_mut()?;
        let answer = armed.clone();
        if let Some(left) = armed.times.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                *slot = None;
            }
        }
        Some(answer)
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.latency_ns
            .store(duration_to_ns(latency).min(UNSET - 1), Ordering::Relaxed);
    }

    fn latency(&self) -> Option<Duration> {
        match self.latency_ns.load(Ordering::Relaxed) {
            UNSET => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub(crate) fn inject_error(&self, injection: Option<ErrorInjection>) {
        let injection = injection.filter(|i| i.times != Some(0));
        let mut slot = lock(&self.error);
        self.error_armed
            .store(injection.is_some(), Ordering::Release);
        *slot = injection;
    }

    /// The error to answer for this send, counting down `times`.
    pub(crate) fn take_error(&self) -> Option<ErrorInjection> {
        if !self.error_armed.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = lock(&self.error);
        let armed = slot.as_mut()?;
        let answer = armed.clone();
        if let Some(left) = armed.times.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                *slot = None;
                self.error_armed.store(false, Ordering::Release);
            }
        }
        Some(answer)
    }

    fn counts(&self) -> RequestCounts {
        let get = |k: Kind| self.counts[k.index()].load(Ordering::Relaxed);
        let mut c = RequestCounts {
            messages: get(Kind::Messages),
            marketing_messages: get(Kind::MarketingMessages),
            media: get(Kind::Media),
            health: get(Kind::Health),
            registration: get(Kind::Registration),
            other: get(Kind::Other),
            total: 0,
        };
        c.total = c.messages + c.marketing_messages + c.media + c.health + c.registration + c.other;
        c
    }
}

fn duration_to_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The state behind [`super::Sim`].
pub(crate) struct Inner {
    pub(crate) record: bool,
    numbers: RwLock<HashMap<Box<str>, Arc<Number>>>,
    global_latency_ns: AtomicU64,
    log: Mutex<VecDeque<LogEntry>>,
}

impl Inner {
    pub(crate) fn new(record: bool) -> Self {
        Self {
            record,
            numbers: RwLock::new(HashMap::new()),
            global_latency_ns: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// The number's state, created on first sight.
    pub(crate) fn number(&self, id: &str) -> Arc<Number> {
        {
            let map = self.numbers.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get(id) {
                return Arc::clone(n);
            }
        }
        let mut map = self.numbers.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(id.into())
                .or_insert_with(|| Arc::new(Number::new())),
        )
    }

    pub(crate) fn set_global_latency(&self, latency: Duration) {
        self.global_latency_ns
            .store(duration_to_ns(latency), Ordering::Relaxed);
    }

    /// The delay for a request: the number's own setting, else the global one.
    pub(crate) fn latency(&self, number: Option<&Number>) -> Duration {
        number
            .and_then(Number::latency)
            .unwrap_or_else(|| Duration::from_nanos(self.global_latency_ns.load(Ordering::Relaxed)))
    }

    pub(crate) fn counts(&self, id: &str) -> RequestCounts {
        let map = self.numbers.read().unwrap_or_else(PoisonError::into_inner);
        map.get(id).map(|n| n.counts()).unwrap_or_default()
    }

    pub(crate) fn all_counts(&self) -> BTreeMap<String, RequestCounts> {
        let map = self.numbers.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(id, n)| (id.to_string(), n.counts()))
            .collect()
    }

    pub(crate) fn push_log(&self, entry: LogEntry) {
        let mut log = lock(&self.log);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub(crate) fn log(&self) -> Vec<LogEntry> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn reset(&self) {
        self.numbers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.global_latency_ns.store(0, Ordering::Relaxed);
        lock(&self.log).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injection(code: i64, times: Option<u32>) -> ErrorInjection {
        ErrorInjection {
            code,
            times,
            ..ErrorInjection::default()
        }
    }

    #[test]
    fn injected_error_counts_down_then_stops() {
        let n = Number::new();
        n.inject_error(Some(injection(130429, Some(2))));
        assert_eq!(n.take_error().map(|e| e.code), Some(130429));
        assert_eq!(n.take_error().map(|e| e.code), Some(130429));
        assert_eq!(n.take_error(), None);
    }

    #[test]
    fn injected_error_without_times_stays_until_cleared() {
        let n = Number::new();
        n.inject_error(Some(injection(2, None)));
        for _ in 0..5 {
            assert!(n.take_error().is_some());
        }
        n.inject_error(None);
        assert_eq!(n.take_error(), None);
        n.inject_error(Some(injection(2, Some(0))));
        assert_eq!(n.take_error(), None);
    }

    #[test]
    fn lock_reports_blocked_unless_health_was_set() {
        let n = Number::new();
        assert_eq!(n.health(), Health::Available);
        n.set_locked(true);
        assert_eq!(n.health(), Health::Blocked);
        n.set_health(Health::Limited);
        assert_eq!(n.health(), Health::Limited);
        n.set_locked(false);
        assert_eq!(n.health(), Health::Limited);
    }

    #[test]
    fn per_number_latency_overrides_global() {
        let inner = Inner::new(true);
        inner.set_global_latency(Duration::from_millis(50));
        let n = inner.number("1");
        assert_eq!(inner.latency(Some(&n)), Duration::from_millis(50));
        n.set_latency(Duration::ZERO);
        assert_eq!(inner.latency(Some(&n)), Duration::ZERO);
        assert_eq!(inner.latency(None), Duration::from_millis(50));
    }

    #[test]
    fn counts_sum_into_total_and_reset_clears_them() {
        let inner = Inner::new(true);
        let n = inner.number("7");
        n.bump(Kind::Messages);
        n.bump(Kind::Messages);
        n.bump(Kind::Health);
        let c = inner.counts("7");
        assert_eq!((c.messages, c.health, c.total), (2, 1, 3));
        inner.reset();
        assert_eq!(inner.counts("7"), RequestCounts::default());
    }

    #[test]
    fn log_keeps_the_newest_entries() {
        let inner = Inner::new(true);
        for i in 0..(LOG_CAPACITY + 5) {
            inner.push_log(LogEntry {
                method: "GET".into(),
                path: format!("/{i}"),
                query: String::new(),
                headers: Vec::new(),
                body_len: 0,
                body_sha256: String::new(),
                status: 200,
                response_body: String::new(),
                at_ms: 0,
            });
        }
        let log = inner.log();
        assert_eq!(log.len(), LOG_CAPACITY);
        assert_eq!(log[0].path, "/5");
    }
}
