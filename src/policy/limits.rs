//! Keyed GCRA rate limits (governor) with bounded memory.
//!
//! Keys are 64-bit keyed hashes (SipHash with a per-process random key) of the client key or the
//! join token, so every key costs the same few bytes whatever an attacker sends, and nobody
//! outside the process can craft colliding keys. Each limit's table is capped (`max_keys`):
//!
//! - a janitor prunes idle keys (a key whose bucket has refilled is indistinguishable from a new
//!   one, so dropping it changes no decision);
//! - when the table is full, a new key takes the place of a key whose bucket is nearest to full
//!   ([`crate::policy::key_table`]: sampled eviction, counted per limit). Two clients never share
//!   a bucket, so a flood of fresh keys cannot turn the limit against every new client, and a
//!   client that used up its burst is the last key to go.
//!
//! A limiter's state lives outside the configuration: a reload that leaves a limit's key and
//! quota alone carries the same [`KeyedLimiter`] into the new snapshot, so no bucket refills.
//!
//! A limit shared across a cluster is settled before the decision (by the cluster, which knows
//! Redis); the decision only reads how it was settled ([`Settled`]). This module knows nothing
//! of the cluster.

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use governor::{Quota, RateLimiter};

use crate::policy::classify::ClassId;
use crate::policy::client_ip::ClientKey;
use crate::policy::key_table::{KeyTable, SharedTable};
use crate::policy::rules::ClassMask;
use crate::units::Rate;

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The client key (IPv4 address or IPv6 network).
    Ip,
    /// The join token.
    Token,
}

impl KeyKind {
    /// The word used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ip => "ip",
            KeyKind::Token => "token",
        }
    }
}

/// Whether a limit denies or only reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exceeding it is a 429.
    Enforce,
    /// Exceeding it is counted and logged; the request goes through.
    Shadow,
}

/// How one shared limit was settled for a request, before the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Not settled through the cluster: the local limiter decides.
    Local,
    /// A token of the shared bucket was taken for this request.
    Granted,
    /// The shared bucket is empty; this long until it has a token.
    Denied(Duration),
}

/// The per-process key for hashing limiter keys (and other keys an attacker must not predict).
pub(crate) fn hash_keys() -> &'static std::collections::hash_map::RandomState {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
}

/// The limiter key of a client.
pub fn client_key_hash(client: ClientKey) -> u64 {
    let mut h = hash_keys().build_hasher();
    match client {
        ClientKey::V4(v) => {
            h.write_u8(4);
            h.write_u32(v);
        }
        ClientKey::V6(v) => {
            h.write_u8(6);
            h.write_u128(v);
        }
    }
    h.finish()
}

/// The limiter key of a join token.
pub fn token_hash(token: &str) -> u64 {
    let mut h = hash_keys().build_hasher();
    h.write_u8(b't');
    h.write(token.as_bytes());
    h.finish()
}

/// Keys are already keyed hashes: a map of them needs no second hash.
#[derive(Default)]
pub struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A keyed limiter: the quota, its state and its clock.
pub struct KeyedLimiter<C: Clock = QuantaClock> {
    limiter: RateLimiter<u64, SharedTable<C>, C, governor::middleware::NoOpMiddleware<C::Instant>>,
    table: Arc<KeyTable<C>>,
    clock: C,
    /// Sustained rate.
    pub rate: Rate,
    /// Burst.
    pub burst: NonZeroU32,
}

impl<C: Clock + Clone> KeyedLimiter<C> {
    /// A limiter allowing `rate` sustained and `burst` at once, tracking at most `cap` keys.
    pub fn with_clock(rate: Rate, burst: NonZeroU32, cap: usize, clock: C) -> Self {
        let period = rate.interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let table = Arc::new(KeyTable::new(cap, clock.clone()));
        let limiter = RateLimiter::new(quota, SharedTable(table.clone()), clock.clone());
        // After governor read its start inside `new`: the table's "now" is never ahead of it.
        table.anchor();
        KeyedLimiter {
            limiter,
            table,
            clock,
            rate,
            burst,
        }
    }

    /// Takes one cell for `key`; `Err` is how long until one is free.
    pub fn check(&self, key: u64) -> Result<(), Duration> {
        self.limiter
            .check_key(&key)
            .map(|_| ())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops keys whose bucket has refilled (they would decide exactly as a new key does).
    pub fn prune(&self) {
        self.table.prune();
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> LimiterStats {
        self.table.stats()
    }
}

impl<C: Clock> std::fmt::Debug for KeyedLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyedLimiter({} burst {}, {} keys)",
            self.rate,
            self.burst,
            self.table.len()
        )
    }
}

/// A limiter's table size, evictions and prunes.
pub type LimiterStats = crate::policy::key_table::TableStats;

/// One configured `[[limit]]`, ready for the request path.
#[derive(Debug)]
pub struct LimitRule {
    /// The limit's name (reported in answers and logs).
    pub name: Arc<str>,
    /// The route classes it applies to.
    pub classes: ClassMask,
    /// What it counts by.
    pub key: KeyKind,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Unix seconds after which it no longer applies.
    pub until: Option<i64>,
    /// For a permanent limit a temporary one stands in for: Unix seconds until which it is
    /// replaced (it applies again from then, with the state its limiter kept).
    pub replaced_until: Option<i64>,
    /// Whether it is a temporary limit standing in for a permanent one of its name.
    pub stands_in: bool,
    /// The limiter (carried across reloads when key and quota are unchanged). For a shared
    /// limit it decides while the cluster link is in fallback.
    pub limiter: Arc<KeyedLimiter>,
    /// Whether the limit is shared across a `[cluster]` (settled before the decision).
    pub shared: bool,
}

impl LimitRule {
    /// Whether the limit applies to a request of `class` at `now_unix`.
    pub fn applies(&self, class: ClassId, now_unix: i64) -> bool {
        self.classes.contains(class)
            && self.until.is_none_or(|u| now_unix < u)
            && self.replaced_until.is_none_or(|r| now_unix >= r)
    }
}

/// A limit exceeded by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Which limit.
    pub name: Arc<str>,
    /// How long until the next request would pass.
    pub retry_after: Duration,
    /// Its sustained rate.
    pub rate: Rate,
    /// Its burst.
    pub burst: u32,
}

/// Checks `rules` in order for one request; returns the first enforced limit exceeded, and
/// appends every shadow limit exceeded before it to `shadowed`.
///
/// `settled` holds, by rule index, how the cluster settled each shared limit for this request
/// (empty without shared limits): granted passes, denied is exceeded, and local (or missing)
/// asks the rule's own limiter.
pub fn check(
    rules: &[LimitRule],
    class: ClassId,
    client: u64,
    token: Option<u64>,
    now_unix: i64,
    settled: &[Settled],
    shadowed: &mut Vec<Exceeded>,
) -> Option<Exceeded> {
    for (i, rule) in rules.iter().enumerate() {
        if !rule.applies(class, now_unix) {
            continue;
        }
        let key = match rule.key {
            KeyKind::Ip => client,
            KeyKind::Token => match token {
                Some(t) => t,
                None => continue,
            },
        };
        let verdict = match settled.get(i) {
            Some(Settled::Granted) => {
                // Keep the local bucket warm, so a fallback starts from this replica's share
                // of the traffic rather than from a full bucket; the cluster decided.
                let _ = rule.limiter.check(key);
                Ok(())
            }
            Some(Settled::Denied(wait)) => Err(*wait),
            Some(Settled::Local) | None => rule.limiter.check(key),
        };
        if let Err(wait) = verdict {
            let hit = Exceeded {
                name: rule.name.clone(),
                retry_after: wait,
                rate: rule.limiter.rate,
                burst: rule.limiter.burst.get(),
            };
            match rule.mode {
                Mode::Enforce => return Some(hit),
                Mode::Shadow => shadowed.push(hit),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        count: u32,
        per_secs: u64,
        burst: u32,
        cap: usize,
    ) -> (KeyedLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rate = Rate {
            count,
            per: Duration::from_secs(per_secs),
        };
        (
            KeyedLimiter::with_clock(rate, NonZeroU32::new(burst).unwrap(), cap, clock.clone()),
            clock,
        )
    }

    #[test]
    fn burst_passes_then_the_next_is_denied_until_a_cell_refills() {
        let (l, clock) = limiter(60, 60, 3, 100);
        for _ in 0..3 {
            assert!(l.check(1).is_ok());
        }
        let wait = l.check(1).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert!(l.check(1).is_ok());
        assert!(l.check(1).is_err());
    }

    #[test]
    fn keys_are_limited_separately() {
        let (l, _) = limiter(60, 60, 1, 100);
        assert!(l.check(1).is_ok());
        assert!(l.check(2).is_ok());
        assert!(l.check(1).is_err());
    }

    #[test]
    fn a_full_table_evicts_and_every_new_key_gets_its_own_bucket() {
        let (l, _) = limiter(60, 60, 2, 3);
        for k in 0..3 {
            assert!(l.check(k).is_ok());
        }
        // A flood of new keys: each gets its own burst, none shares another's bucket.
        let passed = (100..1100).filter(|k| l.check(*k).is_ok()).count();
        assert_eq!(passed, 1000);
        assert_eq!(l.stats().keys, 3, "the table holds its cap, no more");
        assert_eq!(l.stats().evicted, 1000);
        // The last key in has its own bucket: one more cell, then denied.
        assert!(l.check(1099).is_ok());
        assert!(l.check(1099).is_err());
    }

    #[test]
    fn a_client_that_used_its_burst_outlasts_a_flood_of_fresh_keys() {
        // One set of 8 slots: the limited client and 7 others, then a flood.
        let (l, _) = limiter(60, 60, 5, 8);
        for _ in 0..5 {
            assert!(l.check(7).is_ok());
        }
        assert!(l.check(7).is_err());
        for k in 1000..2000 {
            let _ = l.check(k);
        }
        // Its bucket is still the emptiest of the set: still limited.
        assert!(l.check(7).is_err());
    }

    #[test]
    fn idle_keys_are_pruned_and_pruning_changes_no_decision() {
        let (l, clock) = limiter(60, 60, 2, 10_000);
        for k in 0..500 {
            assert!(l.check(k).is_ok());
        }
        assert!(l.check(7).is_ok());
        assert!(l.check(7).is_err());
        clock.advance(Duration::from_secs(1));
        l.prune();
        // Key 7 is still mid-refill (it used both cells); the others refilled and are gone.
        assert_eq!(l.stats().keys, 1);
        assert!(l.check(7).is_ok());
        assert!(l.check(7).is_err());
        clock.advance(Duration::from_secs(10));
        l.prune();
        assert_eq!(l.stats().keys, 0);
        assert_eq!(l.stats().pruned, 500);
        assert_eq!(l.stats().evicted, 0);
    }

    #[test]
    fn client_and_token_hashes_differ_for_the_same_bits() {
        assert_ne!(
            client_key_hash(ClientKey::V4(1)),
            client_key_hash(ClientKey::V6(1))
        );
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }
}
