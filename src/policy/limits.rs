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
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

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
    /// The client's network: its IPv4 /24 or IPv6 /48 (the prefix tiers of `[enumeration]`),
    /// so a client rotating addresses inside its allocation is one key.
    Net,
    /// The join token (folded as `[tokens]` says).
    Token,
}

impl KeyKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [KeyKind; 3] = [KeyKind::Ip, KeyKind::Net, KeyKind::Token];

    /// The word used in the config file (and in metrics' `key` label).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ip => "ip",
            KeyKind::Net => "net",
            KeyKind::Token => "token",
        }
    }

    /// The kind a config word names.
    pub fn parse(word: &str) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.as_str() == word)
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

/// The limiter key of a client's network (`key = "net"`): its IPv4 /24 or IPv6 /48, an
/// IPv4-mapped address counting as its IPv4 address.
pub fn net_key_hash(ip: IpAddr) -> u64 {
    let mut h = hash_keys().build_hasher();
    match crate::policy::client_ip::network(ip) {
        IpNet::V4(n) => {
            h.write_u8(b'n');
            h.write_u32(u32::from(n.network()));
        }
        IpNet::V6(n) => {
            h.write_u8(b'N');
            h.write_u128(u128::from(n.network()));
        }
    }
    h.finish()
}

/// The limiter key of a join token (give it folded: [`crate::policy::tokens::JoinToken::key`]).
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
        self.applies_to_any(ClassMask::one(class), now_unix)
    }

    /// Whether the limit applies at `now_unix` to a request that may be routed to any of
    /// `classes` (a POST whose method Laravel may override: see
    /// [`crate::policy::classify::RouteTable::override_classes`]).
    pub fn applies_to_any(&self, classes: ClassMask, now_unix: i64) -> bool {
        self.classes.intersects(classes)
            && self.until.is_none_or(|u| now_unix < u)
            && self.replaced_until.is_none_or(|r| now_unix >= r)
    }
}

/// What the limits of one request count by: its client key's hash (computed once per
/// request), its address (for `net`) and its folded token. The `net` and `token` hashes are
/// only computed when a limit that applies needs them, at most once each.
#[derive(Debug, Clone, Copy)]
pub struct LimitKeys<'a> {
    /// [`client_key_hash`] of the client key.
    pub client: u64,
    /// The client IP (canonical).
    pub ip: IpAddr,
    /// The folded join token, on a route with one.
    pub token: Option<&'a str>,
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
    classes: ClassMask,
    keys: &LimitKeys<'_>,
    now_unix: i64,
    settled: &[Settled],
    shadowed: &mut Vec<Exceeded>,
) -> Option<Exceeded> {
    let (mut net, mut token) = (None, None);
    for (i, rule) in rules.iter().enumerate() {
        if !rule.applies_to_any(classes, now_unix) {
            continue;
        }
        let key = match rule.key {
            KeyKind::Ip => keys.client,
            KeyKind::Net => *net.get_or_insert_with(|| net_key_hash(keys.ip)),
            KeyKind::Token => match keys.token {
                Some(t) => *token.get_or_insert_with(|| token_hash(t)),
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
    fn a_net_key_is_the_24_or_the_48_and_a_mapped_address_is_its_ipv4() {
        let h = |s: &str| net_key_hash(s.parse().unwrap());
        assert_eq!(h("198.51.100.1"), h("198.51.100.254"));
        assert_ne!(h("198.51.100.1"), h("198.51.101.1"));
        assert_eq!(h("::ffff:198.51.100.9"), h("198.51.100.1"));
        assert_eq!(h("2001:db8:abcd:1::1"), h("2001:db8:abcd:ffff:1:2:3:4"));
        assert_ne!(h("2001:db8:abcd::1"), h("2001:db8:abce::1"));
        // A /24 and the /48 with the same leading bits are different networks.
        assert_ne!(h("32.1.13.1"), h("2001:db8::1"));
    }

    fn rule(key: KeyKind, burst: u32) -> LimitRule {
        LimitRule {
            name: "r".into(),
            classes: ClassMask::of(&[0]),
            key,
            mode: Mode::Enforce,
            until: None,
            replaced_until: None,
            stands_in: false,
            limiter: Arc::new(KeyedLimiter::with_clock(
                Rate {
                    count: 1,
                    per: Duration::from_secs(3600),
                },
                NonZeroU32::new(burst).unwrap(),
                100_000,
                QuantaClock::default(),
            )),
            shared: false,
        }
    }

    #[test]
    fn a_net_limit_counts_every_64_of_a_48_as_one_key_and_an_ip_limit_does_not() {
        let ip_rules = [rule(KeyKind::Ip, 5)];
        let net_rules = [rule(KeyKind::Net, 5)];
        let (mut ip_passed, mut net_passed) = (0, 0);
        for i in 0..1000u128 {
            // A fresh /64 of 2001:db8:abcd::/48 each time.
            let addr =
                std::net::Ipv6Addr::from(0x2001_0db8_abcd_0000_0000_0000_0000_0001 | (i << 64));
            let ip = IpAddr::V6(addr);
            let client = client_key_hash(ClientKey::new(ip, 64));
            let keys = LimitKeys {
                client,
                ip,
                token: None,
            };
            let check = |rules: &[LimitRule]| {
                check(rules, ClassMask::one(0), &keys, 0, &[], &mut Vec::new()).is_none()
            };
            ip_passed += usize::from(check(&ip_rules));
            net_passed += usize::from(check(&net_rules));
        }
        assert_eq!(ip_passed, 1000);
        assert_eq!(net_passed, 5);
    }

    #[test]
    fn a_token_limit_skips_requests_without_a_token() {
        let rules = [rule(KeyKind::Token, 1)];
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let keys = |token| LimitKeys {
            client: 1,
            ip,
            token,
        };
        let run = |k: &LimitKeys<'_>| check(&rules, ClassMask::one(0), k, 0, &[], &mut Vec::new());
        assert!(run(&keys(None)).is_none());
        assert!(run(&keys(None)).is_none());
        assert!(run(&keys(Some("abc"))).is_none());
        assert!(run(&keys(Some("abc"))).is_some());
        assert!(run(&keys(Some("abd"))).is_none());
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
