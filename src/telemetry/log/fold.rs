//! Folding repeats: one line per key and [`FOLD_WINDOW`], carrying `"repeated":N`.
//!
//! A key is the caller's 64-bit hash of what makes records "the same" (client and reason). The
//! first record of a key is written at once and opens a window; further records of the key
//! inside the window are only counted: one hash lookup under a shard lock, no record built, no
//! allocation. When the window is over, one line says how many were folded:
//! - if the key comes again, its new record is written with `"repeated":N` appended and opens
//!   the next window;
//! - if it went quiet, [`FoldTable::sweep`] (run about once a second) writes the last line
//!   written for the key again with `"repeated":N` appended, and keeps the key for one more
//!   window so that a steady flood still makes one line per window. A key whose window ended
//!   without repeats is forgotten.
//!
//! Memory is bounded: at most [`FOLD_TABLE_CAP`] keys (each holds a copy of its last record).
//! When the table is full, a record of a new key is written unfolded and counted as an
//! overflow: nothing is lost, only the folding, and the bounded log queue still caps the cost.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Record, Value};

/// How long the repeats of one key are folded into one line (SPEC section 5).
pub const FOLD_WINDOW: Duration = Duration::from_secs(10);

/// The most keys the fold table holds at once.
pub const FOLD_TABLE_CAP: usize = 8192;

/// Shards, so that request threads folding different keys rarely meet on one lock.
const SHARDS: usize = 16;

/// What [`super::LogHandle::log_folded`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldOutcome {
    /// Built and queued for writing (the first of its window, or the first after one).
    Written,
    /// Only counted; the record was never built. `repeats` is how many records of the key
    /// the current window has folded so far, this one included.
    Folded {
        /// Records folded in this window so far.
        repeats: u64,
    },
    /// Built and queued without folding, because the fold table was full.
    Unfolded,
}

struct Entry {
    opened: Instant,
    repeats: u64,
    last: Record,
}

/// The keys are already hashes: mix them cheaply instead of hashing them again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = mix(key);
    }
}

fn mix(key: u64) -> u64 {
    (key ^ (key >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>;

/// The fold windows of the keys seen recently.
pub(crate) struct FoldTable {
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
}

impl FoldTable {
    pub(crate) fn new(cap: usize) -> FoldTable {
        FoldTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: cap.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // High bits pick the shard, low bits the bucket inside it.
        let idx = (mix(key) >> 60) as usize % SHARDS;
        // A panic while holding a shard cannot leave an entry half-written; keep going.
        self.shards[idx]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about one record of `key` at `now`; returns the record to write, if any.
    /// `build` runs under the shard lock and must not log.
    pub(crate) fn admit(
        &self,
        key: u64,
        now: Instant,
        build: impl FnOnce() -> Record,
    ) -> (FoldOutcome, Option<Record>) {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(&key) {
            if now.saturating_duration_since(entry.opened) < FOLD_WINDOW {
                entry.repeats = entry.repeats.saturating_add(1);
                return (
                    FoldOutcome::Folded {
                        repeats: entry.repeats,
                    },
                    None,
                );
            }
            let mut record = build();
            let repeats = std::mem::take(&mut entry.repeats);
            entry.opened = now;
            entry.last = record.clone();
            if repeats > 0 {
                record.context.push(("repeated", Value::UInt(repeats)));
            }
            return (FoldOutcome::Written, Some(record));
        }
        let record = build();
        if shard.len() >= self.cap_per_shard {
            return (FoldOutcome::Unfolded, Some(record));
        }
        shard.insert(
            key,
            Entry {
                opened: now,
                repeats: 0,
                last: record.clone(),
            },
        );
        (FoldOutcome::Written, Some(record))
    }

    /// Closes the windows that ended by `now`: returns the summary lines to write and forgets
    /// the keys that stayed quiet.
    pub(crate) fn sweep(&self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, entry| {
                if now.saturating_duration_since(entry.opened) < FOLD_WINDOW {
                    return true;
                }
                if entry.repeats == 0 {
                    return false;
                }
                let mut record = entry.last.clone();
                record
                    .context
                    .push(("repeated", Value::UInt(std::mem::take(&mut entry.repeats))));
                out.push(record);
                entry.opened = now;
                true
            });
        }
        out
    }

    /// How many keys are held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
// The tests anchor their instants on the real clock; the code under test reads none.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::telemetry::log::Level;

    fn denial(ip: &str) -> Record {
        Record::new(Level::Warning, "Join token access denied")
            .with("reason", "token_rate_limited")
            .with("ip", ip)
    }

    #[test]
    fn the_first_record_of_a_key_is_written_at_once() {
        let table = FoldTable::new(64);
        let (outcome, record) = table.admit(1, Instant::now(), || denial("a"));
        assert_eq!(outcome, FoldOutcome::Written);
        assert_eq!(record, Some(denial("a")));
    }

    #[test]
    fn repeats_inside_the_window_are_counted_without_building_the_record() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        table.admit(1, t0, || denial("a"));
        for i in 1..=5 {
            let (outcome, record) = table.admit(1, t0 + Duration::from_secs(i), || {
                panic!("a folded record must not be built")
            });
            assert_eq!(outcome, FoldOutcome::Folded { repeats: i });
            assert!(record.is_none());
        }
    }

    #[test]
    fn the_first_record_after_the_window_carries_the_repeat_count() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        table.admit(1, t0, || denial("a"));
        table.admit(1, t0 + Duration::from_secs(3), || denial("a"));
        table.admit(1, t0 + Duration::from_secs(4), || denial("a"));
        let (outcome, record) = table.admit(1, t0 + FOLD_WINDOW, || denial("b"));
        assert_eq!(outcome, FoldOutcome::Written);
        assert_eq!(record, Some(denial("b").with("repeated", 2u64)));
        // The next window starts with no repeats.
        let (_, record) = table.admit(1, t0 + FOLD_WINDOW * 2, || denial("c"));
        assert_eq!(record, Some(denial("c")));
    }

    #[test]
    fn a_sweep_summarises_a_quiet_key_and_later_forgets_it() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        table.admit(1, t0, || denial("a"));
        table.admit(1, t0 + Duration::from_secs(1), || denial("x"));
        table.admit(2, t0, || denial("b"));
        assert!(table.sweep(t0 + Duration::from_secs(9)).is_empty());
        let lines = table.sweep(t0 + FOLD_WINDOW);
        assert_eq!(lines, vec![denial("a").with("repeated", 1u64)]);
        // Key 2 had no repeats and is gone; key 1 is kept for one more window.
        assert_eq!(table.len(), 1);
        assert!(table.sweep(t0 + FOLD_WINDOW * 2).is_empty());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_steady_flood_makes_one_line_per_window() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        let mut written = 0;
        for ms in (0..60_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            if table.admit(7, now, || denial("a")).1.is_some() {
                written += 1;
            }
            if ms % 1000 == 0 {
                written += table.sweep(now).len();
            }
        }
        assert_eq!(written, 6);
    }

    #[test]
    fn a_full_table_writes_new_keys_unfolded() {
        let table = FoldTable::new(SHARDS);
        let t0 = Instant::now();
        let mut unfolded = 0;
        for key in 0..10_000u64 {
            if table.admit(key, t0, || denial("a")).0 == FoldOutcome::Unfolded {
                unfolded += 1;
            }
        }
        assert!(table.len() <= SHARDS);
        assert_eq!(unfolded, 10_000 - table.len());
    }
}
