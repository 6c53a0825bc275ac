//! Identifiers the simulator hands out: wamids, `fbtrace_id`s and media ids.
//!
//! Each comes from one process-wide counter mixed with a process-wide random
//! salt through a bijective mixer, so ids never repeat within the process,
//! differ between runs, and cost one atomic increment and a short string.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(1);
static SALT: OnceLock<u64> = OnceLock::new();

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn salt() -> u64 {
    *SALT.get_or_init(rand::random::<u64>)
}

fn next() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct inputs stay distinct.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends `v` as exactly 11 base-62 digits (62^11 > 2^64).
fn push_base62(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 11];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out.extend(digits.iter().map(|&b| b as char));
}

/// Two 11-digit blocks; the first alone is unique per counter value.
fn token(prefix: &str) -> String {
    let n = next();
    let s = salt();
    let mut out = String::with_capacity(prefix.len() + 22);
    out.push_str(prefix);
    push_base62(&mut out, mix(n.wrapping_add(s)));
    push_base62(&mut out, mix(n ^ s.rotate_left(32)));
    out
}

/// A message id like Meta's: `wamid.` and an opaque token.
pub(crate) fn wamid() -> String {
    token("wamid.HBgL")
}

/// A 23-character `fbtrace_id`, unique per response.
pub(crate) fn fbtrace_id() -> String {
    token("A")
}

/// A numeric media id: a 4-digit run prefix and a 12-digit counter.
pub(crate) fn media_id() -> String {
    format!("{}{:012}", 1000 + salt() % 9000, next() % 1_000_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_shaped() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let w = wamid();
            assert!(w.starts_with("wamid."));
            assert!(seen.insert(w));
            let t = fbtrace_id();
            assert_eq!(t.len(), 23);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(seen.insert(t));
            let m = media_id();
            assert_eq!(m.len(), 16);
            assert!(m.bytes().all(|b| b.is_ascii_digit()));
            assert!(seen.insert(m));
        }
    }
}
