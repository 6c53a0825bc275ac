//! `wagate_last_successful_send_timestamp_seconds`: when Meta last answered
//! a send of each number with a 2xx, as seen by this replica.
//!
//! Meta locks a number that has not sent for 30 days, so an alert watches
//! this for numbers going quiet. It is updated on the proxy's path of every
//! successful send, so the common case (a number seen before) is a
//! read-locked lookup by `&str`, one clock read and an atomic load, with no
//! allocation and no store command; the atomic is written at most once a
//! second per number. A number is copied into the map only the first time
//! it is seen. The series are built from the map when `/metrics` is
//! scraped, not kept as one gauge per number.
//!
//! Held in memory only: a restarted replica starts empty, and each replica
//! knows the sends it forwarded. The alert takes the maximum over replicas
//! and over time, so a restart does not hide a quiet number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use tracing::warn;

/// Numbers tracked at most per replica. Only numbers Meta accepted a send
/// for get in (a token of theirs was valid), so this is the business's own
/// senders; the cap bounds the scrape should a misconfigured upstream
/// accept anything. Past it, new numbers are not tracked and a warning is
/// logged once.
pub const MAX_SEND_NUMBERS: usize = 10_000;

type Map = HashMap<Box<str>, AtomicU64, foldhash::fast::RandomState>;

/// The time of the last successful send per number; cheap to clone, and
/// registered on the registry as a collector.
#[derive(Clone)]
pub struct LastSends {
    inner: Arc<Inner>,
}

struct Inner {
    numbers: RwLock<Map>,
    limit: usize,
    warned: AtomicBool,
    // Reused by every scrape; the lock keeps two scrapes from mixing.
    gauge: Mutex<IntGaugeVec>,
    descs: Vec<Desc>,
}

impl LastSends {
    /// An empty map tracking at most [`MAX_SEND_NUMBERS`] numbers.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_limit(MAX_SEND_NUMBERS)
    }

    /// An empty map tracking at most `limit` numbers.
    fn with_limit(limit: usize) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "wagate_last_successful_send_timestamp_seconds",
                "Unix time of the last send of each phone number that Meta answered with a 2xx through this replica (since it started; at most 10,000 numbers).",
            ),
            &["phone_number_id"],
        )?;
        let descs = gauge.desc().into_iter().cloned().collect();
        Ok(Self {
            inner: Arc::new(Inner {
                numbers: RwLock::new(Map::default()),
                limit,
                warned: AtomicBool::new(false),
                gauge: Mutex::new(gauge),
                descs,
            }),
        })
    }

    /// Notes that Meta accepted a send of `number` now.
    pub fn record(&self, number: &str) {
        self.record_at(number, unix_seconds());
    }

    /// Notes that Meta accepted a send of `number` at `seconds` (Unix
    /// time); an earlier time than the one kept changes nothing.
    pub fn record_at(&self, number: &str, seconds: u64) {
        {
            let numbers = self.inner.numbers.read().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = numbers.get(number) {
                // A load first: the cache line is written only when the
                // second changed, not by every send of a busy number.
                if at.load(Ordering::Relaxed) < seconds {
                    at.fetch_max(seconds, Ordering::Relaxed);
                }
                return;
            }
            if numbers.len() >= self.inner.limit {
                if !self.inner.warned.swap(true, Ordering::Relaxed) {
                    warn!(
                        limit = self.inner.limit,
                        "wagate_last_successful_send_timestamp_seconds tracks no more numbers"
                    );
                }
                return;
            }
        }
        let mut numbers = self
            .inner
            .numbers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if numbers.len() < self.inner.limit {
            numbers
                .entry(number.into())
                .or_insert_with(|| AtomicU64::new(0))
                .fetch_max(seconds, Ordering::Relaxed);
        }
    }

    /// The time kept for `number`, if any.
    pub fn get(&self, number: &str) -> Option<u64> {
        let numbers = self.inner.numbers.read().unwrap_or_else(|e| e.into_inner());
        numbers.get(number).map(|at| at.load(Ordering::Relaxed))
    }
}

impl Collector for LastSends {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauge = self.inner.gauge.lock().unwrap_or_else(|e| e.into_inner());
        gauge.reset();
        {
            let numbers = self.inner.numbers.read().unwrap_or_else(|e| e.into_inner());
            for (number, at) in numbers.iter() {
                let seconds = i64::try_from(at.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                gauge.with_label_values(&[&**number]).set(seconds);
            }
        }
        let families = gauge.collect();
        gauge.reset();
        families
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(sends: &LastSends) -> Vec<(String, f64)> {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(sends.clone())).unwrap();
        let mut out: Vec<(String, f64)> = registry
            .gather()
            .iter()
            .flat_map(|family| family.get_metric().to_vec())
            .map(|m| {
                (
                    m.get_label()[0].value().to_owned(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn keeps_the_latest_second_per_number() {
        let sends = LastSends::new().unwrap();
        sends.record_at("1", 100);
        sends.record_at("1", 90);
        sends.record_at("2", 50);
        sends.record_at("1", 120);
        assert_eq!(sends.get("1"), Some(120));
        assert_eq!(
            samples(&sends),
            vec![("1".to_owned(), 120.0), ("2".to_owned(), 50.0)]
        );
        assert_eq!(samples(&sends).len(), 2, "a second scrape shows the same");
    }

    #[test]
    fn records_the_clock() {
        let sends = LastSends::new().unwrap();
        let before = unix_seconds();
        sends.record("1");
        let at = sends.get("1").unwrap();
        assert!(at >= before && at <= unix_seconds(), "{at}");
    }

    #[test]
    fn tracks_no_more_numbers_than_the_limit() {
        let sends = LastSends::with_limit(2).unwrap();
        sends.record_at("1", 10);
        sends.record_at("2", 10);
        sends.record_at("3", 10);
        sends.record_at("1", 20);
        assert_eq!(sends.get("3"), None);
        assert_eq!(sends.get("1"), Some(20), "known numbers still move");
        assert_eq!(samples(&sends).len(), 2);
    }

    #[test]
    fn no_series_before_a_send() {
        let sends = LastSends::new().unwrap();
        assert!(samples(&sends).is_empty());
    }
}
