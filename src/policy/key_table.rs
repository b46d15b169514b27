//! A limit's key table: the GCRA state (one theoretical arrival time) of at most `max_keys`
//! keys, in constant memory, with eviction when it is full.
//!
//! The table is set-associative, like a CPU cache: a key (already a keyed 64-bit hash) belongs
//! to one set of at most [`WAYS`] slots, picked by its high bits, and lives in any free slot of
//! that set. A lookup locks one small set and compares at most [`WAYS`] keys: no rehash, no
//! allocation on the request path, and no key an attacker can aim at a set (the hash is keyed
//! per process).
//!
//! When a new key finds its set full, the set gives up the key whose bucket is nearest to full
//! (the smallest theoretical arrival time), which is sampled eviction as Redis does it, with the
//! set as the sample: for keys of one request each it is the least recently seen, and a key
//! that has used up its burst is the last to go, so a flood of fresh keys cannot buy a limited
//! client a fresh bucket. Two keys never share a slot. A key whose bucket had already refilled
//! decides exactly as a new key would, so making room with it loses nothing and is not counted;
//! every other key pushed out is an eviction.
//!
//! Memory is allocated in chunks of sets as keys first land in them, and never exceeds about
//! 17 bytes per key of `max_keys`; it is not given back (the bound is the point).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use governor::state::StateStore;

/// Slots per set: the sample a full set picks its victim from.
pub const WAYS: usize = 8;

/// Sets per chunk of memory (a chunk is allocated when its first key arrives).
const CHUNK_SETS: usize = 512;

/// One key's state; `tat == 0` marks a free slot (a stored arrival time is never 0: it is
/// always at least one emission interval after the limiter's start).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    tat: u64,
}

type Set = Mutex<[Slot; WAYS]>;

/// The key table of one limit; `C` is the limiter's clock (read only to tell an eviction from
/// the reuse of a refilled key, off the common path).
pub struct KeyTable<C: Clock> {
    chunks: Box<[OnceLock<Box<[Set]>>]>,
    sets: usize,
    /// Every set holds `ways` keys, the first `extra` sets one more (so the total is `cap`).
    ways: usize,
    extra: usize,
    cap: usize,
    len: AtomicUsize,
    evicted: AtomicU64,
    pruned: AtomicU64,
    clock: C,
    /// Set by [`KeyTable::anchor`] just after governor's own start, so never earlier: arrival
    /// times are relative to governor's start, and "now" read against this one is never ahead
    /// of governor's.
    start: OnceLock<C::Instant>,
}

/// A table's counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Keys tracked now.
    pub keys: usize,
    /// The most keys it holds (`max_keys`).
    pub cap: usize,
    /// Keys pushed out to make room while their bucket was still refilling.
    pub evicted: u64,
    /// Keys whose bucket had refilled, dropped by the janitor.
    pub pruned: u64,
}

fn lock(set: &Set) -> MutexGuard<'_, [Slot; WAYS]> {
    // No code that can panic runs under a set's lock; if one ever did, the slots are still
    // whole values.
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Clock> KeyTable<C> {
    /// A table of at most `cap` keys (at least 1), reading `clock`.
    pub fn new(cap: usize, clock: C) -> Self {
        let cap = cap.max(1);
        let sets = cap.div_ceil(WAYS);
        KeyTable {
            chunks: (0..sets.div_ceil(CHUNK_SETS))
                .map(|_| OnceLock::new())
                .collect(),
            sets,
            ways: cap / sets,
            extra: cap % sets,
            cap,
            len: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            clock,
            start: OnceLock::new(),
        }
    }

    /// Takes the clock's reading as the start that arrival times count from: call it right
    /// after the rate limiter holding this table was built (governor reads its start then).
    pub fn anchor(&self) {
        let _ = self.start.set(self.clock.now());
    }

    /// The set index of `key`: the high bits of the key, mixed (keys are keyed hashes already;
    /// the mix only spreads keys that are not, as in tests), scaled to the number of sets.
    fn set_of(&self, key: u64) -> usize {
        let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(mixed) * self.sets as u128) >> 64) as usize
    }

    /// The set `index`, allocating its chunk on first use.
    fn set(&self, index: usize) -> &Set {
        let chunk = index / CHUNK_SETS;
        let sets = self.sets;
        let chunk = self.chunks[chunk].get_or_init(|| {
            let first = chunk * CHUNK_SETS;
            let n = CHUNK_SETS.min(sets - first);
            (0..n)
                .map(|_| Mutex::new([Slot::default(); WAYS]))
                .collect()
        });
        &chunk[index % CHUNK_SETS]
    }

    /// Nanoseconds since the limiter's start, as governor measures arrival times (0 before
    /// [`KeyTable::anchor`]: nothing has refilled yet).
    fn now(&self) -> u64 {
        self.start
            .get()
            .map_or(0, |start| self.clock.now().duration_since(*start).as_u64())
    }

    /// Updates `key`'s state through governor's GCRA step `f` (given the old arrival time,
    /// `None` for a new key, it returns the verdict and the new arrival time, or a refusal that
    /// changes nothing). A new key that passes takes a free slot of its set, or the slot of the
    /// set's key nearest to a full bucket.
    pub fn measure_and_replace<T, E>(
        &self,
        key: u64,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        let index = self.set_of(key);
        let mut set = lock(self.set(index));
        if let Some(slot) = set.iter_mut().find(|s| s.tat != 0 && s.key == key) {
            let (verdict, next) = f(Some(Nanos::new(slot.tat)))?;
            slot.tat = next.as_u64().max(1);
            return Ok(verdict);
        }
        let (verdict, next) = f(None)?;
        let usable = self.ways + usize::from(index < self.extra);
        let slots = &mut set[..usable];
        let place = match slots.iter().position(|s| s.tat == 0) {
            Some(free) => {
                self.len.fetch_add(1, Ordering::Relaxed);
                free
            }
            None => {
                let (victim, tat) = slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i, s.tat))
                    .min_by_key(|&(_, tat)| tat)
                    .unwrap_or((0, 0));
                // A refilled key decides as a new one does: reusing its slot is no loss.
                if tat > self.now() {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                victim
            }
        };
        slots[place] = Slot {
            key,
            tat: next.as_u64().max(1),
        };
        Ok(verdict)
    }

    /// Drops every key whose bucket has refilled (its arrival time has passed): it would decide
    /// exactly as a new key does.
    pub fn prune(&self) {
        let now = self.now();
        let mut removed = 0usize;
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for set in chunk.iter() {
                for slot in lock(set).iter_mut() {
                    if slot.tat != 0 && slot.tat <= now {
                        slot.tat = 0;
                        removed += 1;
                    }
                }
            }
        }
        self.len.fetch_sub(
            removed.min(self.len.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.pruned.fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters.
    pub fn stats(&self) -> TableStats {
        TableStats {
            keys: self.len(),
            cap: self.cap,
            evicted: self.evicted.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
        }
    }
}

/// The table as governor holds it (governor owns its store; the limiter keeps a second handle
/// for prune and the counters).
pub struct SharedTable<C: Clock>(pub std::sync::Arc<KeyTable<C>>);

impl<C: Clock> StateStore for SharedTable<C> {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(*key, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    /// A GCRA step with one cell of `interval` ns and no burst beyond it, at `now` ns: passes
    /// when the old arrival time is not after `now`.
    fn step(now: u64, interval: u64) -> impl Fn(Option<Nanos>) -> Result<((), Nanos), ()> {
        move |prev| {
            let tat = prev.map_or(now, Nanos::as_u64).max(now);
            if prev.is_some_and(|p| p.as_u64() > now) {
                return Err(());
            }
            Ok(((), Nanos::new(tat + interval)))
        }
    }

    fn table(cap: usize) -> (KeyTable<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let t = KeyTable::new(cap, clock.clone());
        t.anchor();
        (t, clock)
    }

    /// `n` distinct keys (a table of one set holds them all in that set).
    fn same_set_keys(n: usize) -> Vec<u64> {
        (0..n as u64).map(|i| i * 7 + 3).collect()
    }

    #[test]
    fn a_table_holds_exactly_its_cap_spread_over_its_sets() {
        for cap in [1, 3, 8, 9, 17, 1000, 200_000] {
            let (t, _) = table(cap);
            let total: usize = (0..t.sets).map(|i| t.ways + usize::from(i < t.extra)).sum();
            assert_eq!(total, cap, "cap {cap}");
            assert!(t.ways + usize::from(t.extra > 0) <= WAYS);
        }
    }

    #[test]
    fn a_full_set_evicts_the_key_nearest_a_full_bucket_and_never_shares_a_slot() {
        let (t, _) = table(WAYS);
        let keys = same_set_keys(WAYS + 1);
        // Key i has used i + 1 cells: key 0's bucket is the fullest.
        for (i, &k) in keys[..WAYS].iter().enumerate() {
            for _ in 0..=i {
                t.measure_and_replace(k, |prev| {
                    let tat = prev.map_or(1_000, Nanos::as_u64);
                    Ok::<_, ()>(((), Nanos::new(tat + 1_000)))
                })
                .unwrap();
            }
        }
        assert_eq!(t.len(), WAYS);
        // A new key takes key 0's slot; that bucket was still refilling: an eviction.
        t.measure_and_replace(keys[WAYS], step(0, 1_000)).unwrap();
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.len(), WAYS);
        // Key 0 is new again (no old state), the others kept theirs.
        let old_state = |key: u64| {
            let seen = std::cell::Cell::new(None);
            t.measure_and_replace(key, |prev| {
                seen.set(Some(prev.map(Nanos::as_u64)));
                Ok::<_, ()>(((), prev.unwrap_or(Nanos::new(5))))
            })
            .unwrap();
            seen.get()
        };
        assert_eq!(old_state(keys[0]), Some(None));
        assert_eq!(
            old_state(keys[WAYS - 1]),
            Some(Some(1_000 + 1_000 * WAYS as u64))
        );
    }

    #[test]
    fn reusing_a_refilled_slot_is_not_an_eviction() {
        let (t, clock) = table(WAYS);
        let keys = same_set_keys(WAYS + 1);
        for &k in &keys[..WAYS] {
            t.measure_and_replace(k, step(0, 1_000)).unwrap();
        }
        clock.advance(Duration::from_micros(2));
        t.measure_and_replace(keys[WAYS], step(2_000, 1_000))
            .unwrap();
        assert_eq!(t.stats().evicted, 0);
        assert_eq!(t.len(), WAYS);
    }

    #[test]
    fn a_refused_new_key_takes_no_slot() {
        let (t, _) = table(WAYS);
        let keys = same_set_keys(WAYS + 1);
        for &k in &keys[..WAYS] {
            t.measure_and_replace(k, step(0, 1_000)).unwrap();
        }
        assert!(t
            .measure_and_replace(keys[WAYS], |_| Err::<((), Nanos), ()>(()))
            .is_err());
        assert_eq!(t.stats().evicted, 0);
    }

    #[test]
    fn prune_frees_refilled_keys_only() {
        let (t, clock) = table(1000);
        for k in 0..100u64 {
            t.measure_and_replace(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), step(0, 1_000))
                .unwrap();
        }
        t.measure_and_replace(42, step(0, 1_000_000)).unwrap();
        clock.advance(Duration::from_micros(10));
        t.prune();
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().pruned, 100);
    }

    #[test]
    fn memory_is_allocated_only_for_chunks_that_hold_keys() {
        let (t, _) = table(10_000_000);
        t.measure_and_replace(1, step(0, 1)).unwrap();
        let allocated = t.chunks.iter().filter(|c| c.get().is_some()).count();
        assert_eq!(allocated, 1);
        assert!(t.chunks.len() > 100);
    }
}
