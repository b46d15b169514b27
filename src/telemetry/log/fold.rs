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
//!
//! Per network as well ([`Network`], SPEC section 5): a flood that rotates through the
//! addresses of one IPv4 /24 or the /64s of one IPv6 /48 would make one line per client. The
//! records of a network and reason are counted in a second table, with a bitmap of the clients
//! seen; once [`NET_FOLD_CLIENTS`] distinct clients of it were folded in one window, the record
//! that crossed the line is written with `"net"` and `"clients":N`, and every further record
//! of the network and reason is only counted until the window ends: then one line carries
//! `"net"`, `"clients":N` and `"repeated":N` (the network keeps folding while it floods). The
//! bitmap has [`NET_BITS`] bits: `clients` is exact for IPv4 (a /24 has 256 addresses) and an
//! estimate for IPv6 (linear counting; within a few per cent up to about 20,000 clients in a
//! window). At most [`NET_TABLE_CAP`] networks are held (about 600 bytes each); a network that
//! finds the table full is folded per client only.
//!
//! [`FoldTable::flush`] writes every pending count at once (on SIGTERM before exit, on SIGHUP
//! before the reload), so a stop or a reload loses no `"repeated":N`.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Record, Value};

/// How long the repeats of one key are folded into one line (SPEC section 5).
pub const FOLD_WINDOW: Duration = Duration::from_secs(10);

/// The most keys the fold table holds at once.
pub const FOLD_TABLE_CAP: usize = 8192;

/// Shards, so that request threads folding different keys rarely meet on one lock.
const SHARDS: usize = 16;

/// Distinct clients of one network and reason, within one window, from which their records
/// fold into one line for the network.
pub const NET_FOLD_CLIENTS: u32 = 8;

/// The most networks the network table holds at once.
pub const NET_TABLE_CAP: usize = 2048;

/// Bits of a network's client bitmap.
pub const NET_BITS: usize = 4096;

/// Where a record came from, for folding per network: the client's IPv4 /24 or IPv6 /48, and
/// the client's bit in that network's bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    net: IpNet,
    member: u16,
    hash: u64,
}

impl Network {
    /// The network of `ip` (an IPv4 /24, an IPv6 /48; IPv4-mapped addresses are IPv4), and the
    /// client's place in it: its last octet for IPv4 (exact), bits of `client_key` (the keyed
    /// hash of the client as the limits count it) for IPv6.
    pub fn of(ip: IpAddr, client_key: u64) -> Network {
        let (net, member) = match crate::policy::client_ip::canonical(ip) {
            IpAddr::V4(v4) => (
                IpNet::new_assert(IpAddr::V4(v4), 24).trunc(),
                u16::from(v4.octets()[3]),
            ),
            IpAddr::V6(v6) => (
                IpNet::new_assert(IpAddr::V6(v6), 48).trunc(),
                (mix(client_key) >> 52) as u16,
            ),
        };
        // Keyed like the limiter keys: nobody outside the process can make two networks share
        // one line.
        let hash = crate::policy::limits::hash_keys().hash_one(net);
        Network { net, member, hash }
    }

    /// The network's 64-bit key (combine it with the reason to fold by).
    pub fn key(&self) -> u64 {
        self.hash
    }

    /// The network.
    pub fn net(&self) -> IpNet {
        self.net
    }
}

/// The clients of one network seen in a window.
struct Clients {
    bits: Box<[u64; NET_BITS / 64]>,
    ones: u32,
    exact: bool,
}

impl Clients {
    fn new(exact: bool) -> Clients {
        Clients {
            bits: Box::new([0; NET_BITS / 64]),
            ones: 0,
            exact,
        }
    }

    fn insert(&mut self, member: u16) {
        let i = usize::from(member) % NET_BITS;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.ones += 1;
        }
    }

    /// How many distinct clients: the bits set (exact), or the linear-counting estimate.
    fn count(&self) -> u64 {
        if self.exact {
            return u64::from(self.ones);
        }
        let m = NET_BITS as f64;
        // All bits set: at least the estimate for one bit left.
        let zeros = (m - f64::from(self.ones)).max(1.0);
        (m * (m / zeros).ln()).round() as u64
    }

    fn clear(&mut self) {
        self.bits.fill(0);
        self.ones = 0;
    }
}

struct NetEntry {
    opened: Instant,
    net: IpNet,
    clients: Clients,
    /// Records counted and not written in this window.
    repeats: u64,
    /// Whether the network's records fold into its own line.
    folding: bool,
    /// The line written when folding began (the summaries repeat it).
    last: Option<Record>,
}

type NetShard = HashMap<u64, NetEntry, BuildHasherDefault<KeyHasher>>;

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

/// The fold windows of the keys seen recently, and of the networks flooding.
pub(crate) struct FoldTable {
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
    nets: Box<[Mutex<NetShard>]>,
    net_cap_per_shard: usize,
}

/// `record` with `"net"`, `"clients"` (and `"repeated"`, when given) in place of any it had.
fn with_net(mut record: Record, net: IpNet, clients: u64, repeated: Option<u64>) -> Record {
    record
        .context
        .retain(|(k, _)| !matches!(*k, "net" | "clients" | "repeated"));
    record
        .context
        .push(("net", Value::Str(net.to_string().into())));
    record.context.push(("clients", Value::UInt(clients)));
    if let Some(n) = repeated {
        record.context.push(("repeated", Value::UInt(n)));
    }
    record
}

impl FoldTable {
    pub(crate) fn new(cap: usize) -> FoldTable {
        FoldTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: cap.div_ceil(SHARDS).max(1),
            nets: (0..SHARDS)
                .map(|_| Mutex::new(NetShard::default()))
                .collect(),
            net_cap_per_shard: NET_TABLE_CAP.div_ceil(SHARDS).max(1),
        }
    }

    fn net_shard(&self, key: u64) -> MutexGuard<'_, NetShard> {
        let idx = (mix(key) >> 60) as usize % SHARDS;
        self.nets[idx]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// As [`FoldTable::admit`] for a record of `key` from `network`: the network's table is
    /// asked first (`net_key` is the network's key combined with what else makes records the
    /// same: reason, limit). While the network is folding, the record is only counted there;
    /// the record that makes it fold is written with `"net"` and `"clients"`; otherwise the
    /// record folds per key as usual.
    pub(crate) fn admit_from(
        &self,
        key: u64,
        network: Network,
        net_key: u64,
        now: Instant,
        build: impl FnOnce() -> Record,
    ) -> (FoldOutcome, Option<Record>) {
        {
            let mut nets = self.net_shard(net_key);
            let full = nets.len() >= self.net_cap_per_shard;
            let entry = match nets.get_mut(&net_key) {
                Some(e) => Some(e),
                None if full => None,
                None => Some(nets.entry(net_key).or_insert_with(|| NetEntry {
                    opened: now,
                    net: network.net,
                    clients: Clients::new(network.net.addr().is_ipv4()),
                    repeats: 0,
                    folding: false,
                    last: None,
                })),
            };
            if let Some(entry) = entry {
                entry.clients.insert(network.member);
                if entry.folding {
                    entry.repeats = entry.repeats.saturating_add(1);
                    return (
                        FoldOutcome::Folded {
                            repeats: entry.repeats,
                        },
                        None,
                    );
                }
                if entry.clients.ones >= NET_FOLD_CLIENTS {
                    entry.folding = true;
                    entry.repeats = 0;
                    let record = with_net(build(), entry.net, entry.clients.count(), None);
                    entry.last = Some(record.clone());
                    return (FoldOutcome::Written, Some(record));
                }
            }
        }
        self.admit(key, now, build)
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
        for shard in self.nets.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, entry| {
                if now.saturating_duration_since(entry.opened) < FOLD_WINDOW {
                    return true;
                }
                if !entry.folding || entry.repeats == 0 {
                    return false;
                }
                out.extend(net_summary(entry, now));
                true
            });
        }
        out
    }

    /// Writes every pending count now, whatever its window (before the process exits or
    /// reloads): one summary per key and per folding network that folded records since its
    /// last line. The windows start again at `now`.
    pub(crate) fn flush(&self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in shard.values_mut().filter(|e| e.repeats > 0) {
                let mut record = entry.last.clone();
                record
                    .context
                    .push(("repeated", Value::UInt(std::mem::take(&mut entry.repeats))));
                out.push(record);
                entry.opened = now;
            }
        }
        for shard in self.nets.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in shard.values_mut().filter(|e| e.folding && e.repeats > 0) {
                out.extend(net_summary(entry, now));
            }
        }
        out
    }

    /// How many networks are held now.
    pub(crate) fn networks(&self) -> usize {
        self.nets
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// How many keys are held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The summary line of a folding network's window, which then starts again at `now`.
fn net_summary(entry: &mut NetEntry, now: Instant) -> Option<Record> {
    let record = entry
        .last
        .clone()
        .map(|last| with_net(last, entry.net, entry.clients.count(), Some(entry.repeats)));
    entry.repeats = 0;
    entry.clients.clear();
    entry.opened = now;
    record
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

    fn context<'a>(r: &'a Record, key: &str) -> Option<&'a Value> {
        r.context.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn many_addresses_of_one_network_fold_into_one_line_per_window() {
        let table = FoldTable::new(FOLD_TABLE_CAP);
        let t0 = Instant::now();
        let mut written = Vec::new();
        // 200 addresses of 198.51.100.0/24, 5 denials each, within one window.
        for round in 0..5u64 {
            for host in 0..200u8 {
                let ip = IpAddr::from([198, 51, 100, host]);
                let network = Network::of(ip, u64::from(host));
                let now = t0 + Duration::from_millis(round * 1000 + u64::from(host));
                let (_, record) =
                    table.admit_from(u64::from(host), network, network.key(), now, || {
                        denial(&ip.to_string())
                    });
                written.extend(record);
            }
        }
        // Seven clients are written one by one; the eighth makes the network fold.
        assert_eq!(written.len(), NET_FOLD_CLIENTS as usize, "{written:?}");
        let first = written.last().unwrap();
        assert_eq!(
            context(first, "net"),
            Some(&Value::Str("198.51.100.0/24".into()))
        );
        assert_eq!(
            context(first, "clients"),
            Some(&Value::UInt(u64::from(NET_FOLD_CLIENTS)))
        );
        assert!(table.sweep(t0 + Duration::from_secs(9)).is_empty());
        let summary = table.sweep(t0 + FOLD_WINDOW);
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert_eq!(context(&summary[0], "clients"), Some(&Value::UInt(200)));
        assert_eq!(
            context(&summary[0], "repeated"),
            Some(&Value::UInt(1000 - u64::from(NET_FOLD_CLIENTS)))
        );
        assert_eq!(table.networks(), 1);
        // A quiet window later the network is forgotten.
        assert!(table.sweep(t0 + FOLD_WINDOW * 2).is_empty());
        assert_eq!(table.networks(), 0);
    }

    #[test]
    fn a_few_clients_of_one_network_still_fold_per_client() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        let mut written = 0;
        for host in [1u8, 2, 3] {
            for _ in 0..50 {
                let ip = IpAddr::from([203, 0, 113, host]);
                let network = Network::of(ip, u64::from(host));
                if table
                    .admit_from(u64::from(host), network, network.key(), t0, || denial("a"))
                    .1
                    .is_some()
                {
                    written += 1;
                }
            }
        }
        assert_eq!(written, 3);
        assert_eq!(table.sweep(t0 + FOLD_WINDOW).len(), 3);
    }

    #[test]
    fn an_ipv6_network_is_a_48_and_its_clients_are_estimated() {
        let network = Network::of("2001:db8:abcd:12::1".parse().unwrap(), 7);
        assert_eq!(network.net().to_string(), "2001:db8:abcd::/48");
        let mapped = Network::of("::ffff:198.51.100.7".parse().unwrap(), 7);
        assert_eq!(mapped.net().to_string(), "198.51.100.0/24");
        let mut clients = Clients::new(false);
        for i in 0..1000u64 {
            clients.insert((mix(i.wrapping_mul(0x9e37_79b9)) >> 52) as u16);
        }
        let n = clients.count();
        assert!((900..=1100).contains(&n), "{n}");
    }

    #[test]
    fn a_flush_writes_every_pending_count_at_once() {
        let table = FoldTable::new(64);
        let t0 = Instant::now();
        table.admit(1, t0, || denial("a"));
        table.admit(1, t0, || denial("a"));
        table.admit(2, t0, || denial("b"));
        for host in 0..20u8 {
            let ip = IpAddr::from([192, 0, 2, host]);
            let network = Network::of(ip, 100 + u64::from(host));
            table.admit_from(100 + u64::from(host), network, network.key(), t0, || {
                denial("n")
            });
        }
        let lines = table.flush(t0 + Duration::from_secs(1));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.contains(&denial("a").with("repeated", 1u64)));
        let net = lines.iter().find(|r| context(r, "net").is_some()).unwrap();
        assert_eq!(context(net, "clients"), Some(&Value::UInt(20)));
        assert_eq!(
            context(net, "repeated"),
            Some(&Value::UInt(20 - u64::from(NET_FOLD_CLIENTS)))
        );
        // Nothing is written twice.
        assert!(table.flush(t0 + Duration::from_secs(2)).is_empty());
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
