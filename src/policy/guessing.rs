//! Join-token guessing: counts the distinct tokens that failed per client and per network
//! prefix, and says when one of them has guessed enough to be banned.
//!
//! The caller reports every failed token on a guest route (an upstream answer whose status is in
//! [`EnumerationSettings::statuses`], or a token the edge refused as malformed) with
//! [`FailureCounter::record`]. Two tables count them: one per client ([`ClientKey`]: an IPv4
//! address or an IPv6 `/ipv6_prefix` network) and one per prefix (the IPv4 /24 or IPv6 /48 around
//! the address), so a guesser rotating addresses inside its allocation is still caught whole.
//!
//! **Distinct counting.** Each tracked key holds a short list of keyed 64-bit hashes of the tokens
//! that failed, with the time each last failed; the token itself is never stored. A token already
//! in the list only refreshes its time, so a guest retrying one stale link counts once. Entries
//! older than `window` are dropped before counting. When the list reaches the threshold the key
//! is reported as an [`Offence`] and its list is emptied, so it does not fire again on every
//! further failure. A list therefore never holds more than the threshold (and never more than
//! [`MAX_DISTINCT`]) hashes: 16 bytes each.
//!
//! **Bounded tables.** Each table is a fixed array of slots allocated up front (`cap_clients`,
//! `cap_prefixes`), organised as sets of [`WAYS`] slots; a key may only live in the set its keyed
//! hash selects, so nobody outside the process can aim keys at one set. When a new key finds its
//! set full, it takes the slot of the *weakest* key of that set: one whose failures are all older
//! than `window` if there is one, else the one with the fewest distinct failed tokens, the least
//! recently failed among equals. A flood of fresh addresses (one or two failures each) thus
//! evicts its own kind and leaves a persistent guesser that is close to its threshold in place;
//! and when per-client entries do churn, the prefix table still sees every failure of a rotation
//! inside one /24 or /48. The slot count never exceeds the cap, whatever arrives.
//!
//! Cost: one keyed hash of the token and of each key, and two short critical sections (one per
//! table, each on one of [`SHARDS`] mutexes) that scan at most [`WAYS`] slots and one list.
//! Nothing here awaits.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::policy::client_ip::ClientKey;
use crate::policy::limits::hash_keys;

/// Slots per set: a new key may displace one of this many.
pub const WAYS: usize = 8;

/// Mutexes per table.
pub const SHARDS: usize = 64;

/// The most distinct tokens one key ever holds; thresholds above it act as this value (the
/// configuration should reject them).
pub const MAX_DISTINCT: u32 = 4096;

/// The prefix length of an IPv4 client's network prefix.
pub const IPV4_PREFIX: u8 = crate::policy::client_ip::NETWORK_V4_PREFIX;

/// The prefix length of an IPv6 client's network prefix.
pub const IPV6_PREFIX: u8 = crate::policy::client_ip::NETWORK_V6_PREFIX;

/// The validated `[enumeration]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumerationSettings {
    /// Upstream statuses on guest routes that count as a failed token.
    pub statuses: Vec<u16>,
    /// Distinct failed tokens within `window` that get a client banned.
    pub max_failures: u32,
    /// Distinct failed tokens within `window` that get a /24 or /48 banned.
    pub prefix_max_failures: u32,
    /// How long a failed token counts.
    pub window: Duration,
    /// The first ban's length.
    pub ban: Duration,
    /// The longest ban a repeat offender gets.
    pub max_ban: Duration,
}

impl Default for EnumerationSettings {
    /// The defaults of SPEC section 2.
    fn default() -> Self {
        EnumerationSettings {
            statuses: vec![403, 404, 410],
            max_failures: 20,
            prefix_max_failures: 100,
            window: Duration::from_secs(10 * 60),
            ban: Duration::from_secs(15 * 60),
            max_ban: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl EnumerationSettings {
    /// Whether an upstream answer with `status` counts as a failed token.
    pub fn counts(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// What reached its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenceKind {
    /// One client (an IPv4 address or an IPv6 `/ipv6_prefix` network).
    Client,
    /// The IPv4 /24 or IPv6 /48 around a client.
    Prefix,
}

/// A client or prefix that reached its threshold and should be banned now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
    /// The network to ban.
    pub net: IpNet,
    /// The distinct failed tokens counted within the window.
    pub distinct_tokens: u32,
    /// Whether a client or a prefix offended.
    pub kind: OffenceKind,
}

/// One tracked key: its hash (0 marks a free slot), when it last failed, and its recent tokens.
#[derive(Default)]
struct Slot {
    key: u64,
    last: u64,
    tokens: Vec<(u64, u64)>,
}

/// A fixed-size, set-associative table of failure lists.
struct Table {
    shards: Box<[Mutex<Vec<Slot>>]>,
    sets: usize,
    ways: usize,
    used: AtomicUsize,
}

impl Table {
    fn new(cap: usize) -> Table {
        let cap = cap.max(1);
        let ways = WAYS.min(cap);
        let sets = cap / ways;
        let nshards = SHARDS.min(sets);
        let shards = (0..nshards)
            .map(|s| {
                // Set `i` lives in shard `i % nshards`, at local index `i / nshards`.
                let local_sets = (sets - s).div_ceil(nshards);
                Mutex::new((0..local_sets * ways).map(|_| Slot::default()).collect())
            })
            .collect();
        Table {
            shards,
            sets,
            ways,
            used: AtomicUsize::new(0),
        }
    }

    fn slots(&self) -> usize {
        self.sets * self.ways
    }

    /// Counts `token` for `key` at `now` (milliseconds); returns the distinct count when it
    /// reached `threshold` (and empties the key's list), else `None`.
    fn record(&self, key: u64, token: u64, now: u64, window: u64, threshold: u32) -> Option<u32> {
        // 0 marks a free slot; a key hashing to 0 shares slot identity with 1 (harmless).
        let key = key.max(1);
        let threshold = threshold.clamp(1, MAX_DISTINCT) as usize;
        // Lemire's range reduction: the high bits pick the set, uniformly.
        let set = ((u128::from(key) * self.sets as u128) >> 64) as usize;
        let nshards = self.shards.len();
        let shard = &self.shards[set % nshards];
        let base = (set / nshards) * self.ways;
        let mut slots = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let ways = slots.get_mut(base..base + self.ways)?;
        let cutoff = now.saturating_sub(window);
        let index = match ways.iter().position(|s| s.key == key) {
            Some(i) => i,
            None => {
                let i = weakest(ways, cutoff);
                let slot = &mut ways[i];
                if slot.key == 0 {
                    self.used.fetch_add(1, Ordering::Relaxed);
                }
                slot.key = key;
                slot.tokens.clear();
                i
            }
        };
        let slot = &mut ways[index];
        slot.last = now;
        slot.tokens.retain(|&(_, at)| at > cutoff);
        if let Some(seen) = slot.tokens.iter_mut().find(|(t, _)| *t == token) {
            seen.1 = now;
            return None;
        }
        slot.tokens.push((token, now));
        if slot.tokens.len() >= threshold {
            let distinct = slot.tokens.len() as u32;
            slot.tokens.clear();
            return Some(distinct);
        }
        None
    }

    /// Frees every slot whose last failure is at or before `cutoff`.
    fn prune(&self, cutoff: u64) {
        for shard in self.shards.iter() {
            let mut slots = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let mut freed = 0;
            for slot in slots.iter_mut() {
                if slot.key != 0 && slot.last <= cutoff {
                    // Release the list's memory too: an idle slot costs only its header.
                    *slot = Slot::default();
                    freed += 1;
                }
            }
            drop(slots);
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
    }
}

/// The slot a new key takes: a free one, else one with nothing inside the window, else the one
/// with the fewest distinct failures, least recently failed among equals.
fn weakest(ways: &[Slot], cutoff: u64) -> usize {
    let mut best = 0;
    let mut best_score = (usize::MAX, u64::MAX);
    for (i, slot) in ways.iter().enumerate() {
        if slot.key == 0 {
            return i;
        }
        let live = if slot.last <= cutoff {
            0
        } else {
            slot.tokens.len()
        };
        let score = (live, slot.last);
        if score < best_score {
            best_score = score;
            best = i;
        }
    }
    best
}

/// Counts distinct failed tokens per client and per prefix, in bounded memory.
///
/// Shared by all connections (`Send + Sync`); every method takes `&self`.
pub struct FailureCounter {
    clients: Table,
    prefixes: Table,
    /// Times are kept as milliseconds since this instant: a day before the first instant the
    /// counter is given, so instants a little older than that still order correctly. (Set on
    /// first use: the counter reads no clock.)
    epoch: std::sync::OnceLock<Instant>,
}

impl FailureCounter {
    /// A counter tracking at most `cap_clients` clients and `cap_prefixes` prefixes (each at
    /// least 1). The slots are allocated now: about 40 bytes each, plus 16 bytes per token held.
    pub fn new(cap_clients: usize, cap_prefixes: usize) -> Self {
        FailureCounter {
            clients: Table::new(cap_clients),
            prefixes: Table::new(cap_prefixes),
            epoch: std::sync::OnceLock::new(),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        let epoch = *self
            .epoch
            .get_or_init(|| at.checked_sub(Duration::from_secs(86_400)).unwrap_or(at));
        // Saturates after 584 million years.
        u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A failed token from `client` (its [`ClientKey`]; IPv6 already grouped by the
    /// `ipv6_prefix`), whose address is `ip`, at monotonic `now`.
    ///
    /// Returns what should be banned now, if anything: the client (its network,
    /// `client.net(ipv6_prefix)`) and/or its prefix (the /24 or /48 of `ip`). A key that offends
    /// starts counting afresh.
    pub fn record(
        &self,
        settings: &EnumerationSettings,
        client: ClientKey,
        ip: IpAddr,
        token: &str,
        now: Instant,
        ipv6_prefix: u8,
    ) -> Vec<Offence> {
        let now = self.millis(now);
        let window = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        let token = token_key(token);
        let mut offences = Vec::new();
        if let Some(distinct) = self.clients.record(
            client_key(client),
            token,
            now,
            window,
            settings.max_failures,
        ) {
            offences.push(Offence {
                net: client.net(ipv6_prefix),
                distinct_tokens: distinct,
                kind: OffenceKind::Client,
            });
        }
        let prefix = prefix_of(ip);
        if let Some(distinct) = self.prefixes.record(
            net_key(prefix),
            token,
            now,
            window,
            settings.prefix_max_failures,
        ) {
            offences.push(Offence {
                net: prefix,
                distinct_tokens: distinct,
                kind: OffenceKind::Prefix,
            });
        }
        offences
    }

    /// How many clients and prefixes are tracked now (for metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (
            self.clients.used.load(Ordering::Relaxed),
            self.prefixes.used.load(Ordering::Relaxed),
        )
    }

    /// The slot capacity of the client and prefix tables (at most the caps given to `new`).
    pub fn capacity(&self) -> (usize, usize) {
        (self.clients.slots(), self.prefixes.slots())
    }

    /// The janitor: frees every key that has not failed within `window` of `now`.
    pub fn prune(&self, settings: &EnumerationSettings, now: Instant) {
        let window = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.millis(now).saturating_sub(window);
        self.clients.prune(cutoff);
        self.prefixes.prune(cutoff);
    }
}

/// The IPv4 /24 or IPv6 /48 around `ip` (canonicalised first): [`crate::policy::client_ip::network`].
pub fn prefix_of(ip: IpAddr) -> IpNet {
    crate::policy::client_ip::network(ip)
}

fn token_key(token: &str) -> u64 {
    let mut h = hash_keys().build_hasher();
    h.write_u8(b'f');
    h.write(token.as_bytes());
    h.finish()
}

fn client_key(client: ClientKey) -> u64 {
    let mut h = hash_keys().build_hasher();
    match client {
        ClientKey::V4(v) => {
            h.write_u8(b'c');
            h.write_u32(v);
        }
        ClientKey::V6(v) => {
            h.write_u8(b'C');
            h.write_u128(v);
        }
    }
    h.finish()
}

fn net_key(net: IpNet) -> u64 {
    let mut h = hash_keys().build_hasher();
    match net {
        IpNet::V4(n) => {
            h.write_u8(b'p');
            h.write_u32(u32::from(n.network()));
        }
        IpNet::V6(n) => {
            h.write_u8(b'P');
            h.write_u128(u128::from(n.network()));
        }
    }
    h.finish()
}

#[cfg(test)]
// The tests anchor their instants on the real clock; the code under test reads none.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn settings() -> EnumerationSettings {
        EnumerationSettings::default()
    }

    /// Records `token` from address `addr` (IPv6 grouped per /64).
    fn fail(
        c: &FailureCounter,
        s: &EnumerationSettings,
        addr: &str,
        token: &str,
        at: Instant,
    ) -> Vec<Offence> {
        let a = ip(addr);
        c.record(s, ClientKey::new(a, 64), a, token, at, 64)
    }

    fn kinds(o: &[Offence]) -> Vec<OffenceKind> {
        o.iter().map(|o| o.kind).collect()
    }

    #[test]
    fn exactly_max_failures_distinct_tokens_ban_a_client() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        for i in 0..19 {
            assert!(fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0).is_empty());
        }
        let o = fail(&c, &s, "203.0.113.7", "tok19", t0);
        assert_eq!(
            o,
            vec![Offence {
                net: "203.0.113.7/32".parse().unwrap(),
                distinct_tokens: 20,
                kind: OffenceKind::Client
            }]
        );
    }

    #[test]
    fn one_fewer_than_max_failures_does_not_ban() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        for i in 0..19 {
            assert!(fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0).is_empty());
        }
        // Retrying known tokens adds nothing.
        for i in 0..19 {
            assert!(fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0).is_empty());
        }
    }

    #[test]
    fn the_same_token_fifty_times_counts_once() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        for i in 0..50 {
            let at = t0 + Duration::from_secs(i);
            assert!(fail(&c, &s, "203.0.113.7", "stale-link-token", at).is_empty());
        }
        // 19 more distinct tokens reach 20 only because the stale one counted once.
        let mut last = Vec::new();
        for i in 0..19 {
            last = fail(
                &c,
                &s,
                "203.0.113.7",
                &format!("tok{i}"),
                t0 + Duration::from_secs(60),
            );
        }
        assert_eq!(kinds(&last), vec![OffenceKind::Client]);
        assert_eq!(last[0].distinct_tokens, 20);
    }

    #[test]
    fn an_offending_client_starts_counting_afresh() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        for i in 0..20 {
            fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0);
        }
        for i in 20..39 {
            assert!(fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0).is_empty());
        }
        assert_eq!(
            kinds(&fail(&c, &s, "203.0.113.7", "tok39", t0)),
            vec![OffenceKind::Client]
        );
    }

    #[test]
    fn ten_addresses_of_one_slash_24_below_the_client_threshold_ban_the_slash_24() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        let mut offences = Vec::new();
        for host in 1..=10 {
            for i in 0..10 {
                let token = format!("h{host}-t{i}");
                offences.extend(fail(&c, &s, &format!("198.51.100.{host}"), &token, t0));
            }
        }
        assert_eq!(
            offences,
            vec![Offence {
                net: "198.51.100.0/24".parse().unwrap(),
                distinct_tokens: 100,
                kind: OffenceKind::Prefix
            }]
        );
    }

    #[test]
    fn ipv6_addresses_rotating_through_one_slash_64_are_one_client() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        let mut offences = Vec::new();
        for i in 0..20u32 {
            let addr = format!("2001:db8:1:2:{:x}::{:x}", i * 7 + 1, i + 3);
            offences.extend(fail(&c, &s, &addr, &format!("tok{i}"), t0));
        }
        assert_eq!(
            offences,
            vec![Offence {
                net: "2001:db8:1:2::/64".parse().unwrap(),
                distinct_tokens: 20,
                kind: OffenceKind::Client
            }]
        );
        assert_eq!(c.tracked(), (1, 1));
    }

    #[test]
    fn mapped_ipv4_counts_as_the_ipv4_prefix() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        fail(&c, &s, "::ffff:198.51.100.9", "a-token", t0);
        fail(&c, &s, "198.51.100.9", "b-token", t0);
        assert_eq!(c.tracked(), (1, 1));
        assert_eq!(
            prefix_of(ip("::ffff:198.51.100.9")),
            "198.51.100.0/24".parse().unwrap()
        );
    }

    #[test]
    fn fifty_thousand_rotating_addresses_in_one_slash_48_are_banned_within_prefix_max_failures() {
        let (c, s, t0) = (
            FailureCounter::new(10_000, 1000),
            settings(),
            Instant::now(),
        );
        let mut first = None;
        for n in 0..50_000u32 {
            // Each address in its own /64 of 2001:db8:abcd::/48.
            let a = IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0x0db8,
                0xabcd,
                (n % 65_536) as u16,
                0,
                0,
                0,
                (n % 7 + 1) as u16,
            ));
            let o = c.record(&s, ClientKey::new(a, 64), a, &format!("guess-{n}"), t0, 64);
            if let Some(hit) = o.iter().find(|o| o.kind == OffenceKind::Prefix) {
                assert_eq!(hit.net, "2001:db8:abcd::/48".parse().unwrap());
                first = Some(n + 1);
                break;
            }
        }
        assert_eq!(first, Some(s.prefix_max_failures));
    }

    #[test]
    fn failures_older_than_window_stop_counting() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        for i in 0..19 {
            fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0);
        }
        let later = t0 + s.window + Duration::from_secs(1);
        assert!(fail(&c, &s, "203.0.113.7", "tok19", later).is_empty());
        // The 19 old tokens expired: 1 + 18 fresh ones are below the threshold, the next reaches it.
        for i in 20..38 {
            assert!(fail(&c, &s, "203.0.113.7", &format!("tok{i}"), later).is_empty());
        }
        assert_eq!(
            kinds(&fail(&c, &s, "203.0.113.7", "tok38", later)),
            vec![OffenceKind::Client]
        );
    }

    #[test]
    fn a_flood_of_a_million_client_keys_stays_within_the_caps() {
        let c = FailureCounter::new(10_000, 1_000);
        let s = settings();
        let t0 = Instant::now();
        for n in 0..1_000_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            c.record(&s, ClientKey::new(a, 64), a, "t", t0, 64);
            if n % 100_000 == 0 {
                let (clients, prefixes) = c.tracked();
                assert!(clients <= 10_000 && prefixes <= 1_000);
            }
        }
        let (clients, prefixes) = c.tracked();
        assert!(clients <= 10_000, "{clients}");
        assert!(prefixes <= 1_000, "{prefixes}");
        assert!(c.capacity().0 <= 10_000 && c.capacity().1 <= 1_000);
    }

    #[test]
    fn a_guesser_close_to_its_threshold_survives_a_flood_of_fresh_keys() {
        let c = FailureCounter::new(1_000, 100);
        let s = settings();
        let t0 = Instant::now();
        for i in 0..19 {
            fail(&c, &s, "203.0.113.7", &format!("tok{i}"), t0);
        }
        for n in 0..100_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n * 256));
            c.record(&s, ClientKey::new(a, 64), a, &format!("x{n}"), t0, 64);
        }
        let o = fail(&c, &s, "203.0.113.7", "tok19", t0);
        assert!(o.iter().any(|o| o.kind == OffenceKind::Client), "{o:?}");
    }

    #[test]
    fn prune_frees_keys_idle_for_a_window() {
        let (c, s, t0) = (FailureCounter::new(1000, 1000), settings(), Instant::now());
        fail(&c, &s, "203.0.113.7", "a-token", t0);
        fail(
            &c,
            &s,
            "2001:db8::1",
            "a-token",
            t0 + Duration::from_secs(300),
        );
        assert_eq!(c.tracked(), (2, 2));
        c.prune(&s, t0 + s.window + Duration::from_secs(1));
        assert_eq!(c.tracked(), (1, 1));
        c.prune(&s, t0 + s.window * 2);
        assert_eq!(c.tracked(), (0, 0));
    }

    #[test]
    fn tiny_caps_are_still_honoured() {
        let c = FailureCounter::new(3, 0);
        assert_eq!(c.capacity(), (3, 1));
        let s = settings();
        for n in 0..100u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(n << 8));
            c.record(&s, ClientKey::new(a, 64), a, "t", Instant::now(), 64);
        }
        assert_eq!(c.tracked(), (3, 1));
    }
}
