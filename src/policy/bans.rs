//! Bans: which networks are refused with 429 `ip_banned`, until when, and why; kept across
//! restarts.
//!
//! A ban covers a network: an IPv4 address (/32) or /24, an IPv6 client network (/64 by default)
//! or /48, or any CIDR an operator names. Bans come from two sources: automatic ones from an
//! [`Offence`] of the guessing counter ([`crate::policy::guessing`]), and manual ones from the admin
//! API. Both live in one table and are saved alike.
//!
//! **Lookup** ([`Bans::lookup`], on every request): an empty table costs one atomic load. Else
//! the address is masked to each prefix length that some ban uses (a handful: /32, /24, /64, /48
//! in practice) and each network is looked up in a hash map, under a read lock; the covering ban
//! with the most time left wins. Bans whose time is up no longer match even before
//! [`Bans::expire`] removes them.
//!
//! **Repeat offenders.** An automatic ban lasts `base * 2^(earlier offences of the same net)`,
//! capped at `max_ban`. A net's offences are remembered until `max_ban` after its ban ends, so
//! the doubling applies to whoever comes back within a day (by default). Lifting a ban does not
//! forget its offences.
//!
//! **Bounded memory.** At most [`MAX_BANS`] automatic bans are held: a new one past the cap
//! replaces the automatic ban that ends soonest (manual bans are never evicted, and are bounded
//! by what operators type). At most [`MAX_OFFENDERS`] offence histories are held: past the cap,
//! the one forgotten soonest goes first.
//!
//! **Persistence** is not done here (no I/O in the policy): the table hands its whole state to
//! the saver ([`Bans::saved_state`]) and is rebuilt from what was read back ([`Bans::restore`]);
//! a change counter lets a periodic saver write only when something changed
//! ([`Bans::is_dirty`]). The file itself is `background/state_file.rs`'s.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::policy::client_ip::{canonical, canonical_net};
use crate::policy::guessing::{Offence, OffenceKind};

/// The most automatic bans held at once.
pub const MAX_BANS: usize = 100_000;

/// The most offence histories (for doubling) held at once.
pub const MAX_OFFENDERS: usize = 100_000;

/// The reason of an automatic client ban.
pub const REASON_CLIENT: &str = "join token guessing (client)";

/// The reason of an automatic prefix ban.
pub const REASON_PREFIX: &str = "join token guessing (prefix)";

/// Who made a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanSource {
    /// The guessing counter.
    Automatic,
    /// An operator, through the admin API.
    Manual,
}

/// One banned network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned network (canonical: host bits cleared, mapped IPv4 as IPv4).
    #[serde(with = "net_text")]
    pub net: IpNet,
    /// When the ban ends (unix seconds).
    pub until: i64,
    /// Why (free text for manual bans; [`REASON_CLIENT`] or [`REASON_PREFIX`] otherwise).
    pub reason: String,
    /// Who made it.
    pub source: BanSource,
    /// Which offence of this network it punishes (1 for a first; 0 for a manual ban).
    pub offences: u32,
    /// The distinct failed tokens that triggered it (automatic bans only).
    pub distinct_tokens: Option<u32>,
    /// When it was made (unix seconds).
    pub created: i64,
    /// The replica that made it, when the shield runs in a `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A net's offence history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offender {
    offences: u32,
    forget_at: i64,
}

/// A fast keyed hash for ban networks: a folded 64x64->128 multiply per word (the construction
/// of foldhash), keyed from the process's random hash keys. The lookup hashes one or two
/// networks per request, so SipHash's cost would dominate it; the table's keys are networks that
/// had to earn a ban, and the per-process key keeps their buckets unpredictable.
#[derive(Clone)]
struct NetHash {
    seed: u64,
    key: u64,
}

impl Default for NetHash {
    fn default() -> Self {
        let keys = crate::policy::limits::hash_keys();
        NetHash {
            seed: keys.hash_one(0x5eed_u64),
            key: keys.hash_one(0x006b_6579_u64) | 1,
        }
    }
}

impl BuildHasher for NetHash {
    type Hasher = NetHasher;
    fn build_hasher(&self) -> NetHasher {
        NetHasher {
            h: self.seed,
            key: self.key,
        }
    }
}

struct NetHasher {
    h: u64,
    key: u64,
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl NetHasher {
    fn mix(&mut self, word: u64) {
        self.h = folded_multiply(self.h ^ word, self.key);
    }
}

impl Hasher for NetHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    fn finish(&self) -> u64 {
        folded_multiply(self.h, self.key.rotate_left(32))
    }
}

#[derive(Default)]
struct Table {
    bans: HashMap<IpNet, Ban, NetHash>,
    /// Every ban by `(until, net)`: expiry and eviction take from the front.
    by_until: BTreeSet<(i64, IpNet)>,
    automatic: usize,
    offenders: HashMap<IpNet, Offender>,
    by_forget: BTreeSet<(i64, IpNet)>,
    /// How many bans use each prefix length, and the lengths in use, longest first.
    v4_lens: Vec<u32>,
    v6_lens: Vec<u32>,
    v4_in_use: Vec<u8>,
    v6_in_use: Vec<u8>,
}

impl Table {
    fn new() -> Table {
        Table {
            v4_lens: vec![0; 33],
            v6_lens: vec![0; 129],
            ..Table::default()
        }
    }

    fn insert(&mut self, ban: Ban) {
        self.remove(ban.net);
        let net = ban.net;
        if ban.source == BanSource::Automatic {
            self.automatic += 1;
        }
        self.by_until.insert((ban.until, net));
        self.bans.insert(net, ban);
        self.count_len(net, true);
    }

    fn remove(&mut self, net: IpNet) -> Option<Ban> {
        let ban = self.bans.remove(&net)?;
        self.by_until.remove(&(ban.until, net));
        if ban.source == BanSource::Automatic {
            self.automatic -= 1;
        }
        self.count_len(net, false);
        Some(ban)
    }

    fn count_len(&mut self, net: IpNet, add: bool) {
        let (counts, in_use) = match net {
            IpNet::V4(_) => (&mut self.v4_lens[..], &mut self.v4_in_use),
            IpNet::V6(_) => (&mut self.v6_lens[..], &mut self.v6_in_use),
        };
        let Some(count) = counts.get_mut(usize::from(net.prefix_len())) else {
            return;
        };
        let before = *count;
        *count = if add {
            count.saturating_add(1)
        } else {
            count.saturating_sub(1)
        };
        if (before == 0) != (*count == 0) {
            in_use.clear();
            in_use.extend(
                (0..counts.len())
                    .rev()
                    .filter(|&l| counts[l] > 0)
                    .filter_map(|l| u8::try_from(l).ok()),
            );
        }
    }

    /// Makes room for one more automatic ban: the automatic ban ending soonest goes.
    fn evict_for_automatic(&mut self) {
        if self.automatic < MAX_BANS {
            return;
        }
        let victim = self.by_until.iter().map(|&(_, net)| net).find(|net| {
            self.bans
                .get(net)
                .is_some_and(|b| b.source == BanSource::Automatic)
        });
        if let Some(net) = victim {
            self.remove(net);
        }
    }

    fn offender(&self, net: IpNet, now: i64) -> u32 {
        self.offenders
            .get(&net)
            .filter(|o| o.forget_at > now)
            .map_or(0, |o| o.offences)
    }

    fn remember(&mut self, net: IpNet, offender: Offender) {
        if let Some(old) = self.offenders.remove(&net) {
            self.by_forget.remove(&(old.forget_at, net));
        }
        while self.offenders.len() >= MAX_OFFENDERS {
            let Some((_, victim)) = self.by_forget.pop_first() else {
                break;
            };
            self.offenders.remove(&victim);
        }
        self.by_forget.insert((offender.forget_at, net));
        self.offenders.insert(net, offender);
    }

    fn forget_until(&mut self, now: i64) -> bool {
        let mut changed = false;
        while let Some(&(at, net)) = self.by_forget.first() {
            if at > now {
                break;
            }
            self.by_forget.pop_first();
            self.offenders.remove(&net);
            changed = true;
        }
        changed
    }
}

/// The ban table. `Send + Sync`; every method takes `&self`.
pub struct Bans {
    table: RwLock<Table>,
    /// The number of bans, for the empty-table fast path.
    count: AtomicUsize,
    /// Bumped on every change; `saved` is the change last written.
    changes: AtomicU64,
    saved: AtomicU64,
    /// One save at a time (they share the `.tmp` file).
    saving: Mutex<()>,
    /// The replica name new bans carry (set once, when a `[cluster]` is configured).
    origin: std::sync::OnceLock<String>,
}

impl Default for Bans {
    fn default() -> Self {
        Bans::new()
    }
}

impl std::fmt::Debug for Bans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bans").field("len", &self.len()).finish()
    }
}

impl Bans {
    /// An empty table.
    pub fn new() -> Self {
        Bans {
            table: RwLock::new(Table::new()),
            count: AtomicUsize::new(0),
            changes: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            saving: Mutex::new(()),
            origin: std::sync::OnceLock::new(),
        }
    }

    /// Names the replica that new bans come from (the first call wins).
    pub fn set_origin(&self, name: &str) {
        let _ = self.origin.set(name.to_owned());
    }

    /// Takes in a ban another replica made (or one read back from the shared store): it
    /// replaces a ban of the same network unless that one was made later. An automatic ban also
    /// raises the network's offence count, so a repeat offender's next ban doubles on every
    /// replica; the history is kept until `forget_after` past the ban's end. Says whether
    /// anything changed.
    pub fn adopt(&self, ban: Ban, forget_after: Duration, now_unix: i64) -> bool {
        if ban.until <= now_unix {
            return false;
        }
        let mut ban = ban;
        ban.net = canonical_net(ban.net).trunc();
        let mut table = self.write();
        if let Some(old) = table.bans.get(&ban.net) {
            if *old == ban || old.created > ban.created {
                return false;
            }
        }
        if ban.source == BanSource::Automatic {
            let earlier = table.offender(ban.net, now_unix);
            if ban.offences > earlier {
                table.remember(
                    ban.net,
                    Offender {
                        offences: ban.offences,
                        forget_at: ban.until.saturating_add(ceil_secs(forget_after)),
                    },
                );
            }
            if !table.bans.contains_key(&ban.net) {
                table.evict_for_automatic();
            }
        }
        table.insert(ban);
        self.changed(&table);
        true
    }

    /// The ban of exactly `net`, if one is held.
    pub fn get(&self, net: IpNet) -> Option<Ban> {
        self.read().bans.get(&canonical_net(net).trunc()).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self, table: &Table) {
        self.count.store(table.bans.len(), Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The ban covering `ip` (canonicalised; a banned /24 covers its addresses; IPv6 bans cover
    /// their network) at `now_unix`, with the time it has left. Of several covering bans, the
    /// one with the most time left.
    pub fn lookup(&self, ip: IpAddr, now_unix: i64) -> Option<(IpNet, Duration)> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let ip = canonical(ip);
        let table = self.read();
        let mut best: Option<(IpNet, i64)> = None;
        let mut consider = |net: IpNet| {
            if let Some(ban) = table.bans.get(&net) {
                if ban.until > now_unix && best.is_none_or(|(_, until)| ban.until > until) {
                    best = Some((net, ban.until));
                }
            }
        };
        match ip {
            IpAddr::V4(v4) => {
                for &len in &table.v4_in_use {
                    if let Ok(net) = Ipv4Net::new(v4, len) {
                        consider(IpNet::V4(net.trunc()));
                    }
                }
            }
            IpAddr::V6(v6) => {
                for &len in &table.v6_in_use {
                    if let Ok(net) = Ipv6Net::new(v6, len) {
                        consider(IpNet::V6(net.trunc()));
                    }
                }
            }
        }
        best.map(|(net, until)| (net, secs_between(now_unix, until)))
    }

    /// An automatic ban for `offence`: it lasts `base * 2^(earlier offences of this net)`,
    /// capped at `max_ban` (and never ends before a ban already in force on the same net).
    pub fn ban_offence(
        &self,
        offence: &Offence,
        base: Duration,
        max_ban: Duration,
        now_unix: i64,
    ) -> Ban {
        let net = canonical_net(offence.net).trunc();
        let mut table = self.write();
        let earlier = table.offender(net, now_unix);
        let factor = 1u32 << earlier.min(31);
        let length = base.saturating_mul(factor).min(max_ban);
        let mut until = now_unix.saturating_add(ceil_secs(length));
        if let Some(old) = table.bans.get(&net) {
            until = until.max(old.until);
        }
        let offences = earlier.saturating_add(1);
        let ban = Ban {
            net,
            until,
            reason: match offence.kind {
                OffenceKind::Client => REASON_CLIENT,
                OffenceKind::Prefix => REASON_PREFIX,
            }
            .to_owned(),
            source: BanSource::Automatic,
            offences,
            distinct_tokens: Some(offence.distinct_tokens),
            created: now_unix,
            origin: self.origin.get().cloned(),
        };
        let forget_at = until.saturating_add(ceil_secs(max_ban));
        table.remember(
            net,
            Offender {
                offences,
                forget_at,
            },
        );
        if !table.bans.contains_key(&net) {
            table.evict_for_automatic();
        }
        table.insert(ban.clone());
        self.changed(&table);
        ban
    }

    /// An operator's ban of `net` for `duration`, replacing any ban of that exact network.
    pub fn ban_manual(&self, net: IpNet, duration: Duration, reason: &str, now_unix: i64) -> Ban {
        let ban = Ban {
            net: canonical_net(net).trunc(),
            until: now_unix.saturating_add(ceil_secs(duration)),
            reason: reason.to_owned(),
            source: BanSource::Manual,
            offences: 0,
            distinct_tokens: None,
            created: now_unix,
            origin: self.origin.get().cloned(),
        };
        let mut table = self.write();
        table.insert(ban.clone());
        self.changed(&table);
        ban
    }

    /// Lifts the ban of exactly `net` (a lifted /24 does not lift a ban of one of its
    /// addresses). Its offence history stays.
    pub fn lift(&self, net: IpNet) -> Option<Ban> {
        let mut table = self.write();
        let ban = table.remove(canonical_net(net).trunc())?;
        self.changed(&table);
        Some(ban)
    }

    /// The bans in force at `now_unix`, ending soonest first.
    pub fn list(&self, now_unix: i64) -> Vec<Ban> {
        let table = self.read();
        table
            .by_until
            .iter()
            .filter(|(until, _)| *until > now_unix)
            .filter_map(|(_, net)| table.bans.get(net).cloned())
            .collect()
    }

    /// Removes and returns the bans that ended at or before `now_unix` (ending soonest first),
    /// and forgets offence histories whose time is up.
    pub fn expire(&self, now_unix: i64) -> Vec<Ban> {
        let mut ended = Vec::new();
        // Most calls find nothing to do: check under the read lock first.
        {
            let table = self.read();
            let due = |first: Option<&(i64, IpNet)>| first.is_some_and(|(at, _)| *at <= now_unix);
            if !due(table.by_until.first()) && !due(table.by_forget.first()) {
                return ended;
            }
        }
        let mut table = self.write();
        while let Some(&(until, net)) = table.by_until.first() {
            if until > now_unix {
                break;
            }
            match table.remove(net) {
                Some(ban) => ended.push(ban),
                None => {
                    table.by_until.pop_first();
                }
            }
        }
        let forgot = table.forget_until(now_unix);
        if forgot || !ended.is_empty() {
            self.changed(&table);
        }
        ended
    }

    /// How many bans are held (including ended ones not yet expired).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a save writes: every ban (by end, then network) and offence history (by when it
    /// is forgotten) as `(net, offences, forget_at)`, and the change they reflect.
    pub fn saved_state(&self) -> (Vec<Ban>, Vec<(IpNet, u32, i64)>, u64) {
        let table = self.read();
        let change = self.changes.load(Ordering::Acquire);
        let mut bans: Vec<Ban> = table.bans.values().cloned().collect();
        bans.sort_by_key(|b| (b.until, b.net));
        let mut offenders: Vec<(IpNet, u32, i64)> = table
            .offenders
            .iter()
            .map(|(net, o)| (*net, o.offences, o.forget_at))
            .collect();
        offenders.sort_by_key(|&(net, _, forget_at)| (forget_at, net));
        (bans, offenders, change)
    }

    /// Notes that the state of `change` was written.
    pub fn mark_saved(&self, change: u64) {
        self.saved.fetch_max(change, Ordering::AcqRel);
    }

    /// Whether something changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.changes.load(Ordering::Acquire) != self.saved.load(Ordering::Acquire)
    }

    /// Held by whoever saves the table: one save at a time.
    pub fn save_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.saving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A table holding `bans` and the offence histories `(net, offences, forget_at)` read back
    /// from a save, without what ended by `now_unix`; nothing in it is unsaved.
    pub fn restore(bans: Vec<Ban>, offenders: Vec<(IpNet, u32, i64)>, now_unix: i64) -> Bans {
        let restored = Bans::new();
        {
            let mut table = restored.write();
            for (net, offences, forget_at) in offenders {
                if forget_at > now_unix {
                    let net = canonical_net(net).trunc();
                    table.remember(
                        net,
                        Offender {
                            offences,
                            forget_at,
                        },
                    );
                }
            }
            for mut ban in bans {
                if ban.until <= now_unix {
                    continue;
                }
                ban.net = canonical_net(ban.net).trunc();
                if ban.source == BanSource::Automatic && !table.bans.contains_key(&ban.net) {
                    table.evict_for_automatic();
                }
                table.insert(ban);
            }
            restored.count.store(table.bans.len(), Ordering::Release);
        }
        restored
    }
}

fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn secs_between(from: i64, to: i64) -> Duration {
    Duration::from_secs(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

/// A network as its CIDR text in the state file (`198.51.100.0/24`).
pub(crate) mod net_text {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<IpNet>().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
// The tests anchor their instants on the real clock; the code under test reads none.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::policy::client_ip::ClientKey;
    use crate::policy::guessing::{EnumerationSettings, FailureCounter};

    const NOW: i64 = 1_795_802_400; // 2026-11-27T18:00:00Z
    const MIN: i64 = 60;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn offence(n: &str, kind: OffenceKind) -> Offence {
        Offence {
            net: net(n),
            distinct_tokens: 20,
            kind,
        }
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn an_adopted_ban_carries_its_origin_and_its_offences_double_the_next_ban_here() {
        let there = Bans::new();
        there.set_origin("shield-a");
        let ban = there.ban_offence(
            &offence("203.0.113.7/32", OffenceKind::Client),
            minutes(15),
            minutes(24 * 60),
            NOW,
        );
        assert_eq!(ban.origin.as_deref(), Some("shield-a"));
        let here = Bans::new();
        here.set_origin("shield-b");
        assert!(here.adopt(ban.clone(), minutes(24 * 60), NOW));
        // The same record again changes nothing (a full sync after the message).
        assert!(!here.adopt(ban.clone(), minutes(24 * 60), NOW));
        assert_eq!(here.get(net("203.0.113.7/32")), Some(ban.clone()));
        assert!(here.lookup(ip("203.0.113.7"), NOW).is_some());
        // After it ends, the next offence here is the second: twice as long, made by b.
        let later = ban.until + MIN;
        here.expire(later);
        let second = here.ban_offence(
            &offence("203.0.113.7/32", OffenceKind::Client),
            minutes(15),
            minutes(24 * 60),
            later,
        );
        assert_eq!(second.offences, 2);
        assert_eq!(second.until - later, 30 * MIN);
        assert_eq!(second.origin.as_deref(), Some("shield-b"));
    }

    #[test]
    fn an_older_record_does_not_replace_a_newer_ban_and_an_ended_one_is_not_adopted() {
        let bans = Bans::new();
        let newer = bans.ban_manual(net("198.51.100.0/24"), minutes(60), "newer", NOW);
        let mut older = newer.clone();
        older.created = NOW - 10;
        older.reason = "older".into();
        assert!(!bans.adopt(older, minutes(60), NOW));
        assert_eq!(bans.get(net("198.51.100.0/24")).unwrap().reason, "newer");
        let mut ended = newer.clone();
        ended.net = net("192.0.2.0/24");
        ended.until = NOW;
        assert!(!bans.adopt(ended, minutes(60), NOW));
        assert_eq!(bans.len(), 1);
    }

    #[test]
    fn a_repeat_offenders_ban_doubles_up_to_max_ban() {
        let bans = Bans::new();
        let o = offence("203.0.113.7/32", OffenceKind::Client);
        let (base, max) = (minutes(15), minutes(24 * 60));
        let mut now = NOW;
        let mut lengths = Vec::new();
        for _ in 0..9 {
            let ban = bans.ban_offence(&o, base, max, now);
            lengths.push((ban.until - ban.created) / MIN);
            // Comes back right after the ban ends, well within max_ban.
            now = ban.until + 1;
            assert_eq!(bans.expire(now).len(), 1);
        }
        assert_eq!(lengths, vec![15, 30, 60, 120, 240, 480, 960, 1440, 1440]);
    }

    #[test]
    fn offences_are_forgotten_max_ban_after_the_ban_ends() {
        let bans = Bans::new();
        let o = offence("203.0.113.7/32", OffenceKind::Client);
        let (base, max) = (minutes(15), minutes(60));
        let first = bans.ban_offence(&o, base, max, NOW);
        assert_eq!(first.offences, 1);
        let back = first.until + 3600;
        bans.expire(back);
        let again = bans.ban_offence(&o, base, max, back);
        assert_eq!((again.offences, again.until - again.created), (1, 15 * MIN));
    }

    #[test]
    fn a_ban_covers_nested_addresses_and_mapped_ipv4() {
        let bans = Bans::new();
        assert_eq!(bans.lookup(ip("198.51.100.7"), NOW), None);
        bans.ban_offence(
            &offence("198.51.100.0/24", OffenceKind::Prefix),
            minutes(15),
            minutes(60),
            NOW,
        );
        let hit = Some((net("198.51.100.0/24"), Duration::from_secs(15 * 60 - 10)));
        assert_eq!(bans.lookup(ip("198.51.100.7"), NOW + 10), hit);
        assert_eq!(bans.lookup(ip("::ffff:198.51.100.200"), NOW + 10), hit);
        assert_eq!(bans.lookup(ip("198.51.101.7"), NOW + 10), None);

        bans.ban_manual(net("2001:db8:abcd::/48"), minutes(60), "scraping", NOW);
        assert_eq!(
            bans.lookup(ip("2001:db8:abcd:ffff::1"), NOW).map(|b| b.0),
            Some(net("2001:db8:abcd::/48"))
        );
        assert_eq!(bans.lookup(ip("2001:db8:abce::1"), NOW), None);
    }

    #[test]
    fn host_bits_and_mapped_networks_are_canonicalised() {
        let bans = Bans::new();
        let ban = bans.ban_manual(net("::ffff:198.51.100.9/120"), minutes(5), "x", NOW);
        assert_eq!(ban.net, net("198.51.100.0/24"));
        assert!(bans.lookup(ip("198.51.100.1"), NOW).is_some());
        assert!(bans.lift(net("198.51.100.77/24")).is_some());
        assert!(bans.is_empty());
    }

    #[test]
    fn the_covering_ban_with_most_time_left_wins() {
        let bans = Bans::new();
        bans.ban_manual(net("198.51.100.7/32"), minutes(5), "short", NOW);
        bans.ban_manual(net("198.51.100.0/24"), minutes(50), "long", NOW);
        assert_eq!(
            bans.lookup(ip("198.51.100.7"), NOW),
            Some((net("198.51.100.0/24"), minutes(50)))
        );
    }

    #[test]
    fn an_ended_ban_no_longer_matches_and_expire_removes_it() {
        let bans = Bans::new();
        bans.ban_manual(net("203.0.113.7/32"), minutes(15), "a", NOW);
        bans.ban_manual(net("203.0.113.8/32"), minutes(30), "b", NOW);
        let end = NOW + 15 * MIN;
        assert!(bans.lookup(ip("203.0.113.7"), end - 1).is_some());
        assert_eq!(bans.lookup(ip("203.0.113.7"), end), None);
        assert_eq!(bans.len(), 2);
        assert_eq!(bans.list(end).len(), 1);
        let ended = bans.expire(end);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].net, net("203.0.113.7/32"));
        assert_eq!(bans.len(), 1);
        assert!(bans.expire(end).is_empty());
    }

    #[test]
    fn a_manual_ban_can_be_added_listed_and_lifted() {
        let bans = Bans::new();
        let ban = bans.ban_manual(
            net("198.51.100.0/24"),
            minutes(120),
            "SEV-2 token scraping",
            NOW,
        );
        assert_eq!(ban.source, BanSource::Manual);
        assert_eq!(ban.until, NOW + 7200);
        bans.ban_offence(
            &offence("203.0.113.7/32", OffenceKind::Client),
            minutes(15),
            minutes(60),
            NOW,
        );
        let listed: Vec<IpNet> = bans.list(NOW).iter().map(|b| b.net).collect();
        assert_eq!(listed, vec![net("203.0.113.7/32"), net("198.51.100.0/24")]);
        assert_eq!(bans.lift(net("198.51.100.0/24")), Some(ban));
        assert_eq!(bans.lift(net("198.51.100.0/24")), None);
        assert_eq!(bans.lookup(ip("198.51.100.1"), NOW), None);
        assert_eq!(bans.len(), 1);
    }

    #[test]
    fn automatic_bans_past_the_cap_replace_the_one_ending_soonest() {
        let bans = Bans::new();
        let manual = bans.ban_manual(net("192.0.2.0/24"), minutes(1), "operator", NOW);
        let first = Offence {
            net: net("10.0.0.0/32"),
            distinct_tokens: 20,
            kind: OffenceKind::Client,
        };
        bans.ban_offence(&first, minutes(15), minutes(60), NOW - 1);
        for n in 1..MAX_BANS as u32 {
            let o = Offence {
                net: IpNet::V4(
                    Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + n), 32).unwrap(),
                ),
                distinct_tokens: 20,
                kind: OffenceKind::Client,
            };
            bans.ban_offence(&o, minutes(15), minutes(60), NOW);
        }
        assert_eq!(bans.len(), MAX_BANS + 1);
        bans.ban_offence(
            &offence("203.0.113.7/32", OffenceKind::Client),
            minutes(15),
            minutes(60),
            NOW,
        );
        assert_eq!(bans.len(), MAX_BANS + 1);
        assert_eq!(
            bans.lookup(ip("10.0.0.0"), NOW),
            None,
            "the soonest automatic ban went"
        );
        assert!(bans.lookup(ip("203.0.113.7"), NOW).is_some());
        assert_eq!(bans.list(NOW)[0], manual, "manual bans are never evicted");
    }

    /// The target, end to end without sockets: every request is checked against the bans
    /// first; one that gets through reaches the upstream, which answers 404 to a guessed token.
    #[test]
    fn a_guessing_run_from_a_rotating_slash_48_lets_fewer_than_200_reach_the_upstream() {
        let settings = EnumerationSettings::default();
        let counter = FailureCounter::new(100_000, 10_000);
        let bans = Bans::new();
        let start = std::time::Instant::now();
        let mut upstream = 0;
        for n in 0..100_000u32 {
            // 50,000 addresses, each in its own /64 of 2001:db8:abcd::/48, a thousand requests
            // a second: the run takes 100 s, well inside the first ban.
            let host = n % 50_000;
            let addr = IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0x0db8,
                0xabcd,
                host as u16,
                0,
                0,
                (host >> 16) as u16,
                1,
            ));
            let now_unix = NOW + i64::from(n / 1000);
            if bans.lookup(addr, now_unix).is_some() {
                continue;
            }
            upstream += 1;
            let at = start + Duration::from_millis(u64::from(n));
            let key = ClientKey::new(addr, 64);
            for o in counter.record(&settings, key, addr, &format!("guess-{n:06}"), at, 64) {
                bans.ban_offence(&o, settings.ban, settings.max_ban, now_unix);
            }
            bans.expire(now_unix);
        }
        assert!(upstream < 200, "{upstream} guesses reached the upstream");
    }
}
