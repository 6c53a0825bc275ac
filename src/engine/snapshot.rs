//! The replica's local copy of every breaker that is not closed.
//!
//! The gate reads it on every send, so a closed number costs one atomic load
//! when nothing is open anywhere, and one uncontended read lock plus a map
//! lookup otherwise; never a store command.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::breaker::{Breaker, BreakerKey, State};
use crate::metrics::BreakerMetrics;
use crate::store::ListedVersion;

/// Non-closed breakers by storage id, with a count of pair records per
/// number so a send only reads its body when the number has pair back-offs.
/// The state gauges follow every insert and removal here, the one place
/// records change, so updating them costs O(1) per change.
pub(crate) struct Snapshot {
    inner: RwLock<Records>,
    /// `inner.records.len()`, readable without the lock.
    len: AtomicUsize,
    /// Bumped whenever the records may change, so a reader that walks them
    /// all (the health poller) can skip a walk when nothing moved.
    generation: std::sync::atomic::AtomicU64,
}

struct Records {
    // Shared so the gate can hold a refused number's record without a copy.
    records: HashMap<String, Arc<Breaker>>,
    /// Records below each number (pairs and traffic classes), by number.
    pairs: HashMap<String, usize>,
    metrics: BreakerMetrics,
}

/// Whether [`Snapshot::offer`] changed the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The record was taken (or a closed record removed its entry).
    Taken,
    /// The snapshot already held the same or a newer version.
    Stale,
}

impl Snapshot {
    /// An empty snapshot reporting to `metrics`.
    pub(crate) fn new(metrics: BreakerMetrics) -> Self {
        Self {
            inner: RwLock::new(Records {
                records: HashMap::new(),
                pairs: HashMap::new(),
                metrics,
            }),
            len: AtomicUsize::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The count of write locks taken so far: unchanged means unchanged
    /// records.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether any breaker is not closed.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// A copy of the record stored under `id`, if not closed.
    pub(crate) fn get(&self, id: &str) -> Option<Breaker> {
        self.read(|r| r.records.get(id).map(|b| Breaker::clone(b)))
    }

    /// The shared record under `id`, if not closed and `keep` says so.
    pub(crate) fn shared_if(
        &self,
        id: &str,
        keep: impl FnOnce(&Breaker) -> bool,
    ) -> Option<Arc<Breaker>> {
        self.read(|r| r.records.get(id).filter(|b| keep(b)).cloned())
    }

    /// The records of numbers (not pairs), shared rather than copied: the
    /// lock is held for one pass.
    fn numbers(&self) -> Vec<Arc<Breaker>> {
        self.read(|r| {
            r.records
                .values()
                .filter(|b| matches!(b.key, BreakerKey::Number(_)))
                .cloned()
                .collect()
        })
    }

    /// Whether `number` has records below it: pair back-offs or a
    /// restricted traffic class, which only the send's body can rule out.
    pub(crate) fn has_pairs(&self, number: &str) -> bool {
        self.read(|r| r.pairs.contains_key(number))
    }

    /// Every record, for listings.
    pub(crate) fn all(&self) -> Vec<Breaker> {
        self.matching(|_| true)
    }

    /// Copies of the records whose storage id is not `known`.
    pub(crate) fn missing_from(&self, known: impl Fn(&str) -> bool) -> Vec<Breaker> {
        self.read(|r| {
            r.records
                .iter()
                .filter(|(id, _)| !known(id))
                .map(|(_, b)| Breaker::clone(b))
                .collect()
        })
    }

    /// Copies of the records `keep` selects; the others are not copied.
    pub(crate) fn matching(&self, keep: impl Fn(&Breaker) -> bool) -> Vec<Breaker> {
        self.read(|r| {
            r.records
                .values()
                .filter(|b| keep(b))
                .map(|b| Breaker::clone(b))
                .collect()
        })
    }

    /// What `pick` takes from each record, for records it takes anything
    /// from; nothing else is copied.
    pub(crate) fn pick<T>(&self, pick: impl Fn(&Breaker) -> Option<T>) -> Vec<T> {
        self.read(|r| r.records.values().filter_map(|b| pick(b)).collect())
    }

    /// Takes `record` when it is newer than what is held. A record from the
    /// store wins a tie (`authoritative`): the store's copy is the truth,
    /// while a local record of the same version is only this replica's
    /// optimistic guess.
    pub(crate) fn offer(&self, record: Breaker, authoritative: bool) -> Offer {
        let id = record.key.storage_id();
        let mut guard = self.write();
        let newer = match guard.records.get(&id) {
            None => true,
            Some(held) if authoritative => record.version >= held.version,
            Some(held) => record.version > held.version,
        };
        if !newer {
            return Offer::Stale;
        }
        if record.state == State::Closed {
            guard.remove(&id);
        } else {
            guard.insert(id, record);
        }
        self.len.store(guard.records.len(), Ordering::Release);
        Offer::Taken
    }

    /// Makes the snapshot hold `record` for `key` (`None`, or a closed
    /// record: nothing), whatever version it holds now: the store's record
    /// after it refused a write, so the local apply of that write does not
    /// stand.
    pub(crate) fn reset_to(&self, key: &BreakerKey, record: Option<Breaker>) {
        let id = key.storage_id();
        let mut guard = self.write();
        match record.filter(|r| r.state != State::Closed) {
            Some(record) => guard.insert(id, record),
            None => guard.remove(&id),
        }
        self.len.store(guard.records.len(), Ordering::Release);
    }

    /// Removes `key` if its held version is at most `version` (a tombstone
    /// written by the store for a closed breaker).
    pub(crate) fn close(&self, key: &BreakerKey, version: u64) {
        let id = key.storage_id();
        let mut guard = self.write();
        if guard.records.get(&id).is_some_and(|b| b.version <= version) {
            guard.remove(&id);
        }
        self.len.store(guard.records.len(), Ordering::Release);
    }

    /// Makes the snapshot hold exactly `records` (a full resync) plus `keep`
    /// (local records not yet written to the store), the newer version
    /// winning; entries that did not change are left as they are.
    ///
    /// O(records), so the engine runs it on the blocking pool. The changes
    /// are worked out under the read lock, which the gate shares; only
    /// applying them takes the write lock, for as long as there are changes
    /// (usually none). An entry a change event moved on in between keeps
    /// that newer version.
    pub(crate) fn replace(&self, records: Vec<Breaker>, keep: Vec<Breaker>) {
        let mut latest: HashMap<String, Breaker> = HashMap::new();
        for record in records.into_iter().chain(keep) {
            if record.state != State::Closed {
                let id = record.key.storage_id();
                if latest.get(&id).is_none_or(|b| record.version >= b.version) {
                    latest.insert(id, record);
                }
            }
        }
        // Each change carries the version held when it was worked out
        // (`None`: absent), and applies only if that is still what is held.
        let (gone, changed) = self.read(|r| {
            let gone: Vec<(String, u64)> = r
                .records
                .iter()
                .filter(|(id, _)| !latest.contains_key(*id))
                .map(|(id, held)| (id.clone(), held.version))
                .collect();
            let changed: Vec<(String, Option<u64>, Breaker)> = latest
                .into_iter()
                .filter_map(|(id, record)| {
                    let held = r.records.get(&id);
                    held.is_none_or(|old| **old != record)
                        .then(|| (id, held.map(|b| b.version), record))
                })
                .collect();
            (gone, changed)
        });
        if gone.is_empty() && changed.is_empty() {
            return;
        }
        let mut guard = self.write();
        for (id, seen) in gone {
            if guard.records.get(&id).map(|b| b.version) == Some(seen) {
                guard.remove(&id);
            }
        }
        for (id, seen, record) in changed {
            if guard.records.get(&id).map(|b| b.version) == seen {
                guard.insert(id, record);
            }
        }
        self.len.store(guard.records.len(), Ordering::Release);
    }

    /// The positions in `listed` (the store's active records, by version)
    /// whose version differs from what is held, or that are not held: the
    /// records a resync must read. Under the read lock, which the gate
    /// shares; O(listed).
    pub(crate) fn differing(&self, listed: &[ListedVersion]) -> Vec<usize> {
        self.read(|r| {
            listed
                .iter()
                .enumerate()
                .filter(|(_, entry)| {
                    r.records
                        .get(&entry.id)
                        .is_none_or(|held| held.version != entry.version)
                })
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// A resync by versions: `listed` is every active record in the store,
    /// `fetched` the records read because [`Snapshot::differing`] named
    /// them, and `keep` local records not yet written. What is held but in
    /// none of them is dropped; `fetched` and `keep` are offered, the newer
    /// version winning (the store's copy on a tie). Entries listed at the
    /// version held are left as they are, without a copy.
    pub(crate) fn reconcile(
        &self,
        listed: &[ListedVersion],
        fetched: Vec<Breaker>,
        keep: Vec<Breaker>,
    ) {
        let present: HashSet<&str> = listed.iter().map(|entry| entry.id.as_str()).collect();
        let kept_ids: HashSet<String> = fetched
            .iter()
            .chain(&keep)
            .map(|b| b.key.storage_id())
            .collect();
        let gone: Vec<(String, u64)> = self.read(|r| {
            r.records
                .iter()
                .filter(|(id, _)| !present.contains(id.as_str()) && !kept_ids.contains(*id))
                .map(|(id, held)| (id.clone(), held.version))
                .collect()
        });
        if !gone.is_empty() {
            let mut guard = self.write();
            for (id, seen) in gone {
                if guard.records.get(&id).map(|b| b.version) == Some(seen) {
                    guard.remove(&id);
                }
            }
            self.len.store(guard.records.len(), Ordering::Release);
        }
        for record in fetched {
            if record.state == State::Closed {
                self.close(&record.key, record.version);
            } else {
                self.offer(record, true);
            }
        }
        for record in keep {
            self.offer(record, false);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Records) -> T) -> T {
        // A poisoned lock means a panic while writing a map insert; the map
        // itself is still consistent, so keep serving from it.
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        let guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }
}

impl Records {
    fn insert(&mut self, id: String, record: Breaker) {
        // The old state's gauges go before the new state's are set: a
        // record replaced in the same state keeps its series.
        match self.records.get(&id) {
            Some(old) => self.metrics.breaker_removed(&old.key, old.state),
            None => {
                if record.key.is_partial() {
                    *self
                        .pairs
                        .entry(record.key.number().to_owned())
                        .or_default() += 1;
                }
            }
        }
        self.metrics.breaker_added(&record.key, record.state);
        self.records.insert(id, Arc::new(record));
    }

    fn remove(&mut self, id: &str) {
        let Some(record) = self.records.remove(id) else {
            return;
        };
        self.metrics.breaker_removed(&record.key, record.state);
        if record.key.is_partial()
            && let Some(count) = self.pairs.get_mut(record.key.number())
        {
            *count -= 1;
            if *count == 0 {
                self.pairs.remove(record.key.number());
            }
        }
    }
}

/// `wagate_breaker_state`: one series per number whose breaker is not
/// closed, built from the snapshot when `/metrics` is scraped instead of
/// kept as a gauge per number, which at 100,000 open numbers would cost
/// more memory than the records themselves. At most `limit` numbers are
/// shown (held first, then open, then ramping, each by id, so the set is
/// stable from scrape to scrape); `wagate_breaker_state_omitted` counts the
/// rest.
pub(crate) struct StateSeries {
    numbers: Box<dyn Fn() -> Vec<Arc<Breaker>> + Send + Sync>,
    limit: usize,
    // Reused by every scrape; the lock keeps two scrapes from mixing.
    gauges: Mutex<(IntGaugeVec, IntGauge, IntGaugeVec)>,
    descs: Vec<Desc>,
}

impl StateSeries {
    /// The series of the snapshot `of` returns (none once it is gone),
    /// showing at most `limit` numbers.
    pub(crate) fn new<T: Send + Sync + 'static>(
        owner: Weak<T>,
        of: fn(&T) -> &Snapshot,
        limit: usize,
    ) -> Result<Self, prometheus::Error> {
        let states = IntGaugeVec::new(
            Opts::new(
                "wagate_breaker_state",
                "1 for the state of each phone number whose breaker is not closed (absent = closed), up to metrics.number_series numbers.",
            ),
            &["phone_number_id", "state"],
        )?;
        let omitted = IntGauge::new(
            "wagate_breaker_state_omitted",
            "Numbers whose breaker is not closed but that wagate_breaker_state leaves out (over metrics.number_series).",
        )?;
        let stages = IntGaugeVec::new(
            Opts::new(
                "wagate_ramp_stage",
                "Ramp stage of each ramping phone number among those wagate_breaker_state shows: 0 while the probe is out, then 1, 2, ... for each breaker.ramp_rates stage.",
            ),
            &["phone_number_id"],
        )?;
        let descs = states
            .desc()
            .into_iter()
            .chain(omitted.desc())
            .chain(stages.desc())
            .cloned()
            .collect();
        Ok(Self {
            numbers: Box::new(move || {
                owner
                    .upgrade()
                    .map(|owner| of(&owner).numbers())
                    .unwrap_or_default()
            }),
            limit,
            gauges: Mutex::new((states, omitted, stages)),
            descs,
        })
    }
}

impl Collector for StateSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut numbers = (self.numbers)();
        let order = |a: &Arc<Breaker>, b: &Arc<Breaker>| {
            (rank(a.state), a.key.number()).cmp(&(rank(b.state), b.key.number()))
        };
        let omitted = numbers.len().saturating_sub(self.limit);
        if omitted > 0 {
            numbers.select_nth_unstable_by(self.limit, order);
            numbers.truncate(self.limit);
        }
        numbers.sort_unstable_by(order);
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let (states, count, stages) = &*gauges;
        states.reset();
        stages.reset();
        for breaker in &numbers {
            states
                .with_label_values(&[breaker.key.number(), breaker.state.as_str()])
                .set(1);
            if let (State::Ramping, Some(ramp)) = (breaker.state, breaker.ramp) {
                stages
                    .with_label_values(&[breaker.key.number()])
                    .set(i64::from(ramp.stage));
            }
        }
        count.set(omitted as i64);
        let mut families = states.collect();
        families.extend(count.collect());
        families.extend(stages.collect());
        states.reset();
        stages.reset();
        families
    }
}

/// The order [`StateSeries`] picks numbers in when it cannot show them all.
fn rank(state: State) -> u8 {
    match state {
        State::Held => 0,
        State::Open => 1,
        State::Ramping => 2,
        State::Closed => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{Decision, Event, Observed, Rules, Settings, Source, UnixMillis, apply};

    fn tripped(number: &str, code: i64) -> Breaker {
        let key = BreakerKey::for_number(number);
        let event = Event::GraphError(Observed {
            code,
            source: Source::Response,
            fbtrace_id: None,
            details: None,
            wamid: None,
            wait_hint: None,
        });
        let now = UnixMillis(1_786_700_000_000);
        match apply(
            None,
            &key,
            &event,
            now,
            &Rules::defaults(),
            &Settings::default(),
        ) {
            Decision::Transition(t) => t.next.expect("tripped"),
            Decision::Unchanged => panic!("131031 trips"),
        }
    }

    fn gauge(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        registry
            .gather()
            .into_iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .find(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| m.get_gauge().get_value())
    }

    #[test]
    fn gauges_follow_every_change() {
        let registry = prometheus::Registry::new();
        let metrics = BreakerMetrics::new(&registry).unwrap();
        let snapshot = Arc::new(Snapshot::new(metrics.clone()));
        let series = StateSeries::new(Arc::downgrade(&snapshot), |s| s, 10).unwrap();
        metrics.register(Box::new(series)).unwrap();
        let open = [("phone_number_id", "1"), ("state", "open")];
        let count = [("state", "open"), ("kind", "number")];
        assert!(snapshot.is_empty());

        let first = tripped("1", 131031);
        assert_eq!(snapshot.offer(first.clone(), false), Offer::Taken);
        assert_eq!(gauge(&registry, "wagate_breaker_state", &open), Some(1.0));
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(1.0));

        // A newer record in the same state keeps one series at 1.
        let mut newer = first.clone();
        newer.version += 1;
        assert_eq!(snapshot.offer(newer, true), Offer::Taken);
        assert_eq!(snapshot.offer(first, false), Offer::Stale);
        assert_eq!(gauge(&registry, "wagate_breaker_state", &open), Some(1.0));
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(1.0));

        snapshot.close(&BreakerKey::for_number("1"), 2);
        assert!(snapshot.is_empty());
        assert_eq!(gauge(&registry, "wagate_breaker_state", &open), None);
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(0.0));

        snapshot.replace(vec![tripped("2", 368), tripped("3", 131031)], vec![]);
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(2.0));
        assert!(!snapshot.has_pairs("2"));

        // A resync keeps what is unchanged, takes what changed and drops
        // what the store no longer has, and the gauges follow.
        let mut changed = tripped("3", 131031);
        changed.version += 1;
        snapshot.replace(vec![tripped("4", 131031), changed.clone()], vec![]);
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(2.0));
        let two = [("phone_number_id", "2"), ("state", "open")];
        assert_eq!(gauge(&registry, "wagate_breaker_state", &two), None);
        for number in ["3", "4"] {
            let labels = [("phone_number_id", number), ("state", "open")];
            assert_eq!(gauge(&registry, "wagate_breaker_state", &labels), Some(1.0));
        }
        assert!(snapshot.get("2").is_none());
        assert_eq!(snapshot.get("3"), Some(changed));
        snapshot.replace(vec![], vec![]);
        assert!(snapshot.is_empty());
        assert_eq!(gauge(&registry, "wagate_breakers", &count), Some(0.0));
    }

    #[test]
    fn state_series_show_at_most_the_limit_held_first() {
        let registry = prometheus::Registry::new();
        let metrics = BreakerMetrics::new(&registry).unwrap();
        let snapshot = Arc::new(Snapshot::new(metrics.clone()));
        metrics
            .register(Box::new(
                StateSeries::new(Arc::downgrade(&snapshot), |s| s, 2).unwrap(),
            ))
            .unwrap();
        for number in ["5", "3", "4"] {
            snapshot.offer(tripped(number, 131031), true);
        }
        let mut held = tripped("9", 131031);
        held.state = State::Held;
        snapshot.offer(held, true);

        let shown = |number: &str, state: &str| {
            gauge(
                &registry,
                "wagate_breaker_state",
                &[("phone_number_id", number), ("state", state)],
            )
        };
        assert_eq!(shown("9", "held"), Some(1.0));
        assert_eq!(shown("3", "open"), Some(1.0));
        assert_eq!(shown("4", "open"), None);
        assert_eq!(shown("5", "open"), None);
        assert_eq!(
            gauge(&registry, "wagate_breaker_state_omitted", &[]),
            Some(2.0)
        );
        assert_eq!(
            gauge(
                &registry,
                "wagate_breakers",
                &[("state", "open"), ("kind", "number")]
            ),
            Some(3.0)
        );

        // Under the limit every number shows, and nothing is omitted.
        snapshot.close(&BreakerKey::for_number("9"), u64::MAX);
        snapshot.close(&BreakerKey::for_number("5"), u64::MAX);
        assert_eq!(shown("3", "open"), Some(1.0));
        assert_eq!(shown("4", "open"), Some(1.0));
        assert_eq!(
            gauge(&registry, "wagate_breaker_state_omitted", &[]),
            Some(0.0)
        );
    }

    fn listed(records: &[&Breaker]) -> Vec<ListedVersion> {
        records
            .iter()
            .map(|b| ListedVersion {
                id: b.key.storage_id(),
                number: b.key.number().to_owned(),
                version: b.version,
            })
            .collect()
    }

    #[test]
    fn a_resync_by_versions_reads_what_moved_and_drops_what_went() {
        let registry = prometheus::Registry::new();
        let snapshot = Snapshot::new(BreakerMetrics::new(&registry).unwrap());
        let (one, two, three) = (
            tripped("1", 131031),
            tripped("2", 131031),
            tripped("3", 131031),
        );
        for b in [&one, &two, &three] {
            snapshot.offer(b.clone(), true);
        }
        let mut moved = two.clone();
        moved.version += 1;
        let new = tripped("4", 131031);
        // "3" is gone from the store; "2" moved on; "4" is new.
        let store = listed(&[&one, &moved, &new]);
        let differing = snapshot.differing(&store);
        assert_eq!(differing, vec![1, 2]);

        let mut local = tripped("5", 131031);
        local.version = 9;
        snapshot.reconcile(
            &store,
            vec![moved.clone(), new.clone()],
            vec![local.clone()],
        );
        assert_eq!(snapshot.get("1"), Some(one));
        assert_eq!(snapshot.get("2"), Some(moved));
        assert_eq!(snapshot.get("3"), None);
        assert_eq!(snapshot.get("4"), Some(new));
        assert_eq!(snapshot.get("5"), Some(local));
        assert_eq!(snapshot.all().len(), 4);
        assert_eq!(
            gauge(
                &registry,
                "wagate_breakers",
                &[("state", "open"), ("kind", "number")]
            ),
            Some(4.0)
        );
    }
}
