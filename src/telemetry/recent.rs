//! What happened lately, in fixed memory, for the incident playbook's first steps ("snapshot
//! logs", "note IP addresses triggering rate limits") and for `/admin/status`:
//!
//! - [`Ring`]: the last [`RING_CAPACITY`] denials, every one of them (log folding hides repeats
//!   from the log, never from the ring). A denial takes a ticket from one atomic counter and
//!   writes its own slot under that slot's own mutex, so two requests only meet on a lock when
//!   the ring has wrapped all the way round between them.
//! - [`Offenders`]: Space-Saving heavy-hitter counters (Metwally et al., 2005) of denials and
//!   failed tokens per client IP, per prefix (IPv4 /24, IPv6 /48) and per token preview, one
//!   set per minute for [`MINUTES_KEPT`] minutes. Each set holds at most [`TOP_COUNTERS`]
//!   keys, split over [`SHARDS`] mutexes by key hash, so memory is the same under a flood of a
//!   million distinct keys as under ten. A key counted more than `n / TOP_COUNTERS` times in a
//!   minute (n: that minute's total) is always held; a held count is over by at most its
//!   `max_overcount`.
//! - [`Rates`]: per-minute atomic counters of requests, denials, guest requests forwarded and
//!   guest errors (the app's 5xx, or 502/504 when it could not be reached in time), and of the
//!   shield's answers by reason and the app's 5xx (what the timeline keeps of each minute).

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use crate::policy::denial::{retry_after_secs, Denial};
use crate::telemetry::denial_line::{log_message, Seen};
use crate::telemetry::meters::REASONS;

/// Denials kept in the ring.
pub const RING_CAPACITY: usize = 100_000;
/// Keys held per table (IPs, prefixes or token previews; of denials or of failed tokens) per
/// minute.
pub const TOP_COUNTERS: usize = 1_000;
/// Minutes of heavy-hitter counters kept (the largest `since` of `/admin/offenders`).
pub const MINUTES_KEPT: usize = 60;
/// Mutexes each heavy-hitter table is split over.
pub const SHARDS: usize = 8;
/// Paths longer than this are cut in the ring (after the token is redacted).
pub const MAX_PATH: usize = 256;
/// Request ids longer than this are cut in the ring (a client may send its own).
pub const MAX_REQUEST_ID: usize = 64;
/// Repeats of one client and reason listed in the ring per log fold window (10 s); the rest are
/// counted for the offenders only, so one flooding client cannot push every other denial out.
pub const LISTED_REPEATS: u64 = 10;
/// Minutes of request counters kept (the status reports up to 15).
const RATE_MINUTES: usize = 16;

/// Recent denials, offenders and rates; shared by every connection.
pub struct Recent {
    /// The last denials.
    pub ring: Ring,
    /// Who was denied or failed tokens, per minute.
    pub offenders: Offenders,
    /// Requests, denials and guest errors per minute.
    pub rates: Rates,
    /// Denials counted for the offenders but not listed in the ring.
    unlisted: AtomicU64,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(RING_CAPACITY, TOP_COUNTERS)
    }
}

impl Recent {
    /// A ring of `capacity` denials and heavy-hitter tables of `counters` keys a minute.
    pub fn new(capacity: usize, counters: usize) -> Self {
        Recent {
            ring: Ring::new(capacity),
            offenders: Offenders::new(counters),
            rates: Rates::default(),
            unlisted: AtomicU64::new(0),
        }
    }

    /// Records one denial at `now_ms` (Unix milliseconds); `logged` says whether it made a log
    /// line of its own (false when folded into a summary).
    pub fn record_denial(
        &self,
        denial: &Denial,
        seen: &Seen<'_>,
        shadow: bool,
        keep: usize,
        logged: bool,
        now_ms: i64,
    ) {
        let entry = Entry::new(denial, seen, shadow, keep, logged, now_ms);
        if blames_client(denial, shadow) {
            self.offenders
                .note(Kind::Denials, seen.ip, entry.token.as_deref(), now_ms);
        }
        self.ring.push(entry);
    }

    /// Counts a denial for the offenders without listing it in the ring: a repeat beyond
    /// [`LISTED_REPEATS`] of one client and reason inside one log fold window.
    pub fn record_unlisted_denial(
        &self,
        denial: &Denial,
        seen: &Seen<'_>,
        shadow: bool,
        keep: usize,
        now_ms: i64,
    ) {
        if blames_client(denial, shadow) {
            let preview = seen
                .token
                .map(|t| crate::telemetry::log::token_preview(t, keep));
            self.offenders
                .note(Kind::Denials, seen.ip, preview.as_deref(), now_ms);
        }
        self.unlisted.fetch_add(1, Ordering::Relaxed);
    }

    /// Denials counted but not listed since the start (see [`Recent::record_unlisted_denial`]).
    pub fn unlisted(&self) -> u64 {
        self.unlisted.load(Ordering::Relaxed)
    }

    /// Records a failed token (a malformed one, or one the app refused) from `ip`.
    pub fn record_failed_token(&self, ip: IpAddr, token: &str, keep: usize, now_ms: i64) {
        let preview = crate::telemetry::log::token_preview(token, keep);
        self.offenders
            .note(Kind::FailedTokens, ip, Some(&preview), now_ms);
    }

    /// Counts an answered request: `guest` when it matched a route class, `forwarded` when it
    /// was sent to the app (else the shield denied it first), the final status, and the
    /// shield's own answer when it made one (a denial, or the 502/504 of a failed exchange).
    pub fn record_answer(
        &self,
        guest: bool,
        forwarded: bool,
        status: u16,
        denial: Option<&Denial>,
        now_ms: i64,
    ) {
        self.rates.note_answer(
            guest,
            forwarded,
            status,
            denial.map(crate::telemetry::meters::reason_index),
            now_ms,
        );
    }
}

/// Whether a denial counts against the client: the app failing is not the client's doing, and
/// a shadow limit denied nothing.
fn blames_client(denial: &Denial, shadow: bool) -> bool {
    !shadow
        && !matches!(
            denial,
            Denial::UpstreamUnavailable | Denial::UpstreamTimeout
        )
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking a cut with `...`.
fn cut(s: &str, max: usize) -> Box<str> {
    let kept = crate::text::utf8_prefix(s, max);
    if kept.len() == s.len() {
        return s.into();
    }
    let mut out = String::with_capacity(kept.len() + 3);
    out.push_str(kept);
    out.push_str("...");
    out.into()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One recorded denial, with what its log line says (the token only as a preview).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Order of recording (grows by one per denial).
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The log line's message.
    pub message: &'static str,
    /// `error.code`, the log's `reason`.
    pub reason: &'static str,
    /// The client IP.
    pub ip: IpAddr,
    /// The token's preview, on a guest route.
    pub token: Option<Box<str>>,
    /// The route class, on a guest route.
    pub route: Option<Box<str>>,
    /// The request method.
    pub method: http::Method,
    /// The path, token redacted, cut at [`MAX_PATH`].
    pub path: String,
    /// The limit exceeded.
    pub limit: Option<Arc<str>>,
    /// The switch that paused the route.
    pub switch: Option<Arc<str>>,
    /// A shadow limit's would-be denial (the request went through).
    pub shadow: bool,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// The request id.
    pub request_id: Box<str>,
    /// Whether it made a log line of its own (else it was folded into a summary).
    pub logged: bool,
}

impl Entry {
    fn new(
        denial: &Denial,
        seen: &Seen<'_>,
        shadow: bool,
        keep: usize,
        logged: bool,
        at_ms: i64,
    ) -> Entry {
        let path = match seen.token {
            Some(t) => crate::text::truncate_marked(
                crate::telemetry::log::redact_path(seen.path, t, keep),
                MAX_PATH,
            ),
            None => cut(seen.path, MAX_PATH).into(),
        };
        Entry {
            seq: 0,
            at_ms,
            message: log_message(denial, seen.route.is_some()),
            reason: denial.code(),
            ip: seen.ip,
            token: seen
                .token
                .map(|t| crate::telemetry::log::token_preview(t, keep).into()),
            route: seen.route.map(Into::into),
            method: seen.method.clone(),
            path,
            limit: match denial {
                Denial::RateLimited(e) => Some(e.name.clone()),
                _ => None,
            },
            switch: match denial {
                Denial::Paused { switch, .. } => Some(switch.clone()),
                _ => None,
            },
            shadow,
            retry_after: denial.retry_after().map(retry_after_secs),
            request_id: cut(
                &String::from_utf8_lossy(seen.request_id.as_bytes()),
                MAX_REQUEST_ID,
            ),
            logged,
        }
    }

    /// The entry as one JSON object (no newline), fields named as in the log line.
    pub fn json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: String,
            unix_ms: i64,
            level: &'static str,
            message: &'static str,
            reason: &'static str,
            ip: IpAddr,
            #[serde(skip_serializing_if = "Option::is_none")]
            token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            route: Option<&'a str>,
            method: &'a str,
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            switch: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mode: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after: Option<u64>,
            request_id: &'a str,
            logged: bool,
        }
        let line = Line {
            time: crate::clock::rfc3339_ms(self.at_ms),
            unix_ms: self.at_ms,
            level: crate::telemetry::log::Level::Warning.name(),
            message: self.message,
            reason: self.reason,
            ip: self.ip,
            token: self.token.as_deref(),
            route: self.route.as_deref(),
            method: self.method.as_str(),
            path: &self.path,
            limit: self.limit.as_deref(),
            switch: self.switch.as_deref(),
            mode: self.shadow.then_some("shadow"),
            retry_after: self.retry_after,
            request_id: &self.request_id,
            logged: self.logged,
        };
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// The last denials, in a ring of slots allocated once. A slot is a pointer (16 bytes with its
/// mutex), so an idle shield holds 1.6 MB for 100,000 slots, not the 23 MB of inline entries;
/// a denial pays one allocation of ~230 bytes for its entry instead.
pub struct Ring {
    slots: Box<[Mutex<Option<Box<Entry>>>]>,
    next: AtomicU64,
}

impl Ring {
    /// A ring of `capacity` slots (at least 1).
    pub fn new(capacity: usize) -> Ring {
        Ring {
            slots: (0..capacity.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicU64::new(0),
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores `entry`, overwriting the oldest.
    pub fn push(&self, entry: Entry) {
        let mut entry = Box::new(entry);
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        entry.seq = seq;
        let len = self.slots.len() as u64;
        let Some(slot) = self.slots.get((seq % len) as usize) else {
            return;
        };
        let old = {
            let mut held = lock(slot);
            // A writer a whole lap behind must not overwrite its successor.
            if held.as_ref().is_some_and(|e| e.seq > seq) {
                return;
            }
            held.replace(entry)
        };
        // The old entry's strings are freed after the lock is let go.
        drop(old);
    }

    /// Every held entry at or after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .slots
            .iter()
            .filter_map(|s| lock(s).as_deref().filter(|e| e.at_ms >= since_ms).cloned())
            .collect();
        out.sort_unstable_by_key(|e| e.seq);
        out
    }

    /// Denials recorded since start (not only those still held).
    pub fn recorded(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// What a heavy-hitter table counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests the shield denied.
    Denials,
    /// Failed tokens (malformed, or refused by the app).
    FailedTokens,
}

/// One minute of Space-Saving counters.
struct SpaceSaving<K> {
    minute: i64,
    index: HashMap<K, usize>,
    keys: Vec<K>,
    counts: Vec<u64>,
    errors: Vec<u64>,
    /// Never above the smallest count (counts only grow), so a slot at or under it is a
    /// smallest one.
    floor: u64,
    /// Where the search for a smallest slot goes on.
    cursor: usize,
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    fn new() -> Self {
        SpaceSaving {
            minute: i64::MIN,
            index: HashMap::new(),
            keys: Vec::new(),
            counts: Vec::new(),
            errors: Vec::new(),
            floor: 0,
            cursor: 0,
        }
    }

    /// Empties it for `minute`, keeping the allocations.
    fn reset(&mut self, minute: i64) {
        self.minute = minute;
        self.index.clear();
        self.keys.clear();
        self.counts.clear();
        self.errors.clear();
        self.floor = 0;
        self.cursor = 0;
    }

    /// A slot with the smallest count. Amortised O(1) under a flood of new keys: the cursor
    /// walks on from the last find, and the floor is recomputed only after a lap finds none.
    fn smallest(&mut self) -> Option<usize> {
        let n = self.counts.len();
        for _ in 0..2 {
            for step in 0..n {
                let i = (self.cursor + step) % n;
                if self.counts.get(i).is_some_and(|&c| c <= self.floor) {
                    self.cursor = (i + 1) % n;
                    return Some(i);
                }
            }
            self.floor = self.counts.iter().copied().min()?;
        }
        None
    }

    fn add<Q>(&mut self, key: &Q, cap: usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(&i) = self.index.get(key) {
            if let Some(c) = self.counts.get_mut(i) {
                *c += 1;
            }
            return;
        }
        if self.keys.len() < cap {
            if self.keys.capacity() == 0 {
                // Twice the keys, so that churn rehashes in place and never grows the table.
                self.index.reserve(cap * 2);
                self.keys.reserve_exact(cap);
                self.counts.reserve_exact(cap);
                self.errors.reserve_exact(cap);
            }
            self.index.insert(key.to_owned(), self.keys.len());
            self.keys.push(key.to_owned());
            self.counts.push(1);
            self.errors.push(0);
            return;
        }
        // Full: the new key takes the place of the least counted one and inherits its count
        // as its possible overcount.
        let Some(i) = self.smallest() else {
            return;
        };
        let min = self.counts[i];
        let owned = key.to_owned();
        let old = std::mem::replace(&mut self.keys[i], owned.clone());
        self.index.remove::<K>(&old);
        self.index.insert(owned, i);
        self.counts[i] = min + 1;
        self.errors[i] = min;
    }
}

/// One kind of key (IPs, prefixes or token previews), [`MINUTES_KEPT`] minutes of it.
struct Table<K> {
    shards: Vec<Mutex<Vec<SpaceSaving<K>>>>,
    hasher: RandomState,
    /// Counters per shard per minute.
    cap: usize,
}

/// A key's estimated count over a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hitter {
    /// The IP, prefix or token preview.
    pub key: String,
    /// Times counted (never under the truth).
    pub count: u64,
    /// How much of `count` may be someone else's (Space-Saving's error bound).
    pub max_overcount: u64,
}

impl<K: Hash + Eq + Clone + ToString> Table<K> {
    fn new(counters: usize) -> Self {
        Table {
            shards: (0..SHARDS)
                .map(|_| Mutex::new((0..MINUTES_KEPT).map(|_| SpaceSaving::new()).collect()))
                .collect(),
            hasher: RandomState::new(),
            cap: counters.div_ceil(SHARDS).max(1),
        }
    }

    fn add<Q>(&self, key: &Q, minute: i64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let shard = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let mut minutes = lock(shard);
        let Some(m) = minutes.get_mut(minute.rem_euclid(MINUTES_KEPT as i64) as usize) else {
            return;
        };
        if m.minute != minute {
            if m.minute > minute {
                // The clock stepped back over a minute: count nothing rather than mix minutes.
                return;
            }
            m.reset(minute);
        }
        m.add(key, self.cap);
    }

    /// The `top` keys over the `minutes` minutes ending with `now_minute`, largest first.
    fn top(&self, now_minute: i64, minutes: i64, top: usize) -> Vec<Hitter> {
        let mut sums: HashMap<K, (u64, u64)> = HashMap::new();
        for shard in &self.shards {
            let held = lock(shard);
            for m in held
                .iter()
                .filter(|m| m.minute <= now_minute && m.minute > now_minute - minutes)
            {
                for (i, k) in m.keys.iter().enumerate() {
                    let s = sums.entry(k.clone()).or_default();
                    s.0 += m.counts.get(i).copied().unwrap_or(0);
                    s.1 += m.errors.get(i).copied().unwrap_or(0);
                }
            }
        }
        let mut out: Vec<Hitter> = sums
            .into_iter()
            .map(|(k, (count, max_overcount))| Hitter {
                key: k.to_string(),
                count,
                max_overcount,
            })
            .collect();
        out.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        out.truncate(top);
        out
    }

    /// Keys held, key slots allocated, and the largest index's capacity, over every minute.
    fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        for s in &self.shards {
            for m in lock(s).iter() {
                f.held += m.keys.len();
                f.slots += m.keys.capacity() + m.counts.capacity() + m.errors.capacity();
                f.largest_index = f.largest_index.max(m.index.capacity());
            }
        }
        f
    }
}

/// What the heavy-hitter tables hold (for the memory bound and its test).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Keys held.
    pub held: usize,
    /// Key, count and error slots allocated.
    pub slots: usize,
    /// The largest capacity of one minute's key index.
    pub largest_index: usize,
}

/// Heavy hitters of denials and of failed tokens, per IP, prefix and token preview.
pub struct Offenders {
    ips: [Table<IpAddr>; 2],
    prefixes: [Table<IpNet>; 2],
    tokens: [Table<String>; 2],
}

/// The top keys of one kind over a window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Top {
    /// Client IPs.
    pub ips: Vec<Hitter>,
    /// IPv4 /24 and IPv6 /48 prefixes.
    pub prefixes: Vec<Hitter>,
    /// Token previews.
    pub tokens: Vec<Hitter>,
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

impl Offenders {
    /// Tables holding at most `counters` keys each per minute.
    pub fn new(counters: usize) -> Self {
        Offenders {
            ips: [Table::new(counters), Table::new(counters)],
            prefixes: [Table::new(counters), Table::new(counters)],
            tokens: [Table::new(counters), Table::new(counters)],
        }
    }

    /// Counts one `kind` event of `ip` (and its prefix) and `token` (a preview) at `now_ms`.
    pub fn note(&self, kind: Kind, ip: IpAddr, token: Option<&str>, now_ms: i64) {
        let k = kind as usize;
        let minute = minute_of(now_ms);
        let ip = crate::policy::client_ip::canonical(ip);
        self.ips[k].add(&ip, minute);
        self.prefixes[k].add(&crate::policy::guessing::prefix_of(ip), minute);
        if let Some(t) = token {
            self.tokens[k].add(t, minute);
        }
    }

    /// The `top` keys of `kind` over the last `minutes` minutes (the current one included).
    pub fn top(&self, kind: Kind, minutes: i64, top: usize, now_ms: i64) -> Top {
        let k = kind as usize;
        let now = minute_of(now_ms);
        let minutes = minutes.clamp(1, MINUTES_KEPT as i64);
        Top {
            ips: self.ips[k].top(now, minutes, top),
            prefixes: self.prefixes[k].top(now, minutes, top),
            tokens: self.tokens[k].top(now, minutes, top),
        }
    }

    /// What every table and minute holds.
    pub fn footprint(&self) -> Footprint {
        let parts = [
            self.ips[0].footprint(),
            self.ips[1].footprint(),
            self.prefixes[0].footprint(),
            self.prefixes[1].footprint(),
            self.tokens[0].footprint(),
            self.tokens[1].footprint(),
        ];
        parts.iter().fold(Footprint::default(), |f, p| Footprint {
            held: f.held + p.held,
            slots: f.slots + p.slots,
            largest_index: f.largest_index.max(p.largest_index),
        })
    }
}

/// One minute of request counters.
#[derive(Default)]
struct Minute {
    minute: AtomicI64,
    requests: AtomicU64,
    denials: AtomicU64,
    guest: AtomicU64,
    guest_errors: AtomicU64,
    /// The shield's own answers by [`REASONS`] index.
    reasons: [AtomicU64; REASONS.len()],
    /// The app's own 5xx answers (any route).
    app_errors: AtomicU64,
}

/// One minute's counts of answers, as [`Rates::minute`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Requests answered.
    pub requests: u64,
    /// The shield's own answers by [`REASONS`] index (denials, and the 502/504 of the app
    /// unreachable or too slow).
    pub reasons: [u64; REASONS.len()],
    /// The app's own 5xx answers.
    pub app_errors: u64,
}

/// Per-minute request counters: a few relaxed atomic adds per request.
pub struct Rates {
    minutes: [Minute; RATE_MINUTES],
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            minutes: std::array::from_fn(|_| Minute {
                minute: AtomicI64::new(i64::MIN),
                ..Minute::default()
            }),
        }
    }
}

/// Counts over a window (estimated, see [`Rates::window`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Requests answered.
    pub requests: f64,
    /// Requests the shield denied before forwarding.
    pub denials: f64,
    /// Guest requests forwarded to the app.
    pub guest: f64,
    /// Of those, the app answered 5xx or could not be reached in time (502/504).
    pub guest_errors: f64,
}

impl Window {
    /// `guest_errors / guest`, or `None` without guest requests.
    pub fn guest_error_rate(&self) -> Option<f64> {
        (self.guest >= 0.5).then(|| (self.guest_errors / self.guest).clamp(0.0, 1.0))
    }
}

impl Rates {
    fn slot(&self, minute: i64) -> &Minute {
        &self.minutes[minute.rem_euclid(RATE_MINUTES as i64) as usize]
    }

    /// Counts one answered request.
    pub fn note(&self, guest: bool, forwarded: bool, status: u16, now_ms: i64) {
        self.note_answer(guest, forwarded, status, None, now_ms);
    }

    /// Counts one answered request; `reason` is the [`REASONS`] index of the shield's own
    /// answer, when it made one.
    pub fn note_answer(
        &self,
        guest: bool,
        forwarded: bool,
        status: u16,
        reason: Option<usize>,
        now_ms: i64,
    ) {
        let minute = minute_of(now_ms);
        let m = self.slot(minute);
        let seen = m.minute.load(Ordering::Acquire);
        if seen != minute {
            if seen > minute {
                return;
            }
            // The first request of a minute empties its slot. A request of the new minute that
            // lands between the swap and the reset may be lost: the counts are estimates.
            if m.minute
                .compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                m.requests.store(0, Ordering::Relaxed);
                m.denials.store(0, Ordering::Relaxed);
                m.guest.store(0, Ordering::Relaxed);
                m.guest_errors.store(0, Ordering::Relaxed);
                for r in &m.reasons {
                    r.store(0, Ordering::Relaxed);
                }
                m.app_errors.store(0, Ordering::Relaxed);
            }
        }
        m.requests.fetch_add(1, Ordering::Relaxed);
        match reason.and_then(|r| m.reasons.get(r)) {
            Some(cell) => {
                cell.fetch_add(1, Ordering::Relaxed);
            }
            None if forwarded && status >= 500 => {
                m.app_errors.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        if !forwarded {
            m.denials.fetch_add(1, Ordering::Relaxed);
        } else if guest {
            m.guest.fetch_add(1, Ordering::Relaxed);
            if status >= 500 {
                m.guest_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Minutes of counts kept: a minute older than this is gone (its slot reused).
    pub const MINUTES: usize = RATE_MINUTES;

    /// The counts of `minute` (Unix milliseconds / 60,000) so far, if its slot still holds it.
    pub fn minute(&self, minute: i64) -> Option<MinuteCounts> {
        let m = self.slot(minute);
        if m.minute.load(Ordering::Acquire) != minute {
            return None;
        }
        let counts = MinuteCounts {
            requests: m.requests.load(Ordering::Relaxed),
            reasons: std::array::from_fn(|i| m.reasons[i].load(Ordering::Relaxed)),
            app_errors: m.app_errors.load(Ordering::Relaxed),
        };
        // Reused meanwhile: the counts read may be a mix of two minutes.
        (m.minute.load(Ordering::Acquire) == minute).then_some(counts)
    }

    /// Estimated counts over the `minutes` minutes (1 to 15) before `now_ms`: the current
    /// minute so far, the full minutes before it, and the share of the oldest minute that
    /// still falls in the window (a sliding-window estimate, as in Cloudflare's rate limiting).
    pub fn window(&self, minutes: u32, now_ms: i64) -> Window {
        let minutes = i64::from(minutes.clamp(1, RATE_MINUTES as u32 - 1));
        let now = minute_of(now_ms);
        let into = now_ms.rem_euclid(60_000) as f64 / 60_000.0;
        let mut w = Window::default();
        for back in 0..=minutes {
            let weight = if back == minutes { 1.0 - into } else { 1.0 };
            let m = self.slot(now - back);
            if m.minute.load(Ordering::Acquire) != now - back {
                continue;
            }
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 * weight;
            w.requests += get(&m.requests);
            w.denials += get(&m.denials);
            w.guest += get(&m.guest);
            w.guest_errors += get(&m.guest_errors);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::net::Ipv4Addr;

    const T0: i64 = 1_795_802_400_000;

    fn seen<'a>(
        ip: IpAddr,
        token: Option<&'a str>,
        path: &'a str,
        id: &'a HeaderValue,
    ) -> Seen<'a> {
        Seen {
            ip,
            client_key: 0,
            route: token.map(|_| "events"),
            token,
            method: &http::Method::GET,
            path,
            request_id: id,
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn an_empty_slot_is_two_words() {
        assert!(std::mem::size_of::<Mutex<Option<Box<Entry>>>>() <= 16);
    }

    #[test]
    fn the_ring_wraps_and_keeps_the_newest_in_order() {
        let r = Recent::new(5, 100);
        let id = HeaderValue::from_static("req-1");
        for i in 0..12u32 {
            let s = seen(v4(i), None, "/", &id);
            r.record_denial(&Denial::Blocked, &s, false, 6, true, T0 + i64::from(i));
        }
        let held = r.ring.since(0);
        assert_eq!(held.len(), 5);
        let ips: Vec<IpAddr> = held.iter().map(|e| e.ip).collect();
        assert_eq!(ips, (7..12).map(v4).collect::<Vec<_>>());
        assert_eq!(r.ring.recorded(), 12);
    }

    #[test]
    fn since_keeps_only_denials_at_or_after_the_cutoff() {
        let r = Recent::new(100, 100);
        let id = HeaderValue::from_static("x");
        for i in 0..10i64 {
            let s = seen(v4(1), None, "/", &id);
            r.record_denial(&Denial::Blocked, &s, false, 6, true, T0 + i * 60_000);
        }
        let held = r.ring.since(T0 + 7 * 60_000);
        assert_eq!(held.len(), 3);
        assert_eq!(held[0].at_ms, T0 + 7 * 60_000);
    }

    #[test]
    fn a_recorded_denial_never_holds_the_whole_token() {
        let r = Recent::new(10, 100);
        let id = HeaderValue::from_static("x");
        let token = "secret-token-abcdef123456";
        let path = format!("/api/v1/events/{token}/photos");
        let s = seen(v4(1), Some(token), &path, &id);
        r.record_denial(&Denial::InvalidToken, &s, false, 6, false, T0);
        let line = r.ring.since(0)[0].json();
        assert!(!line.contains(token), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["token"], "secret...");
        assert_eq!(v["path"], "/api/v1/events/secret.../photos");
        assert_eq!(v["reason"], "invalid_token");
        assert_eq!(v["message"], "Join token access denied");
        assert_eq!(v["logged"], false);
        assert_eq!(v["level"], "WARNING");
    }

    #[test]
    fn long_paths_and_request_ids_are_cut() {
        let r = Recent::new(10, 100);
        let long_id = "i".repeat(500);
        let id = HeaderValue::from_str(&long_id).unwrap();
        let path = format!("/{}", "é".repeat(400));
        let s = seen(v4(1), None, &path, &id);
        r.record_denial(&Denial::Blocked, &s, false, 6, true, T0);
        let e = &r.ring.since(0)[0];
        assert!(e.path.len() <= MAX_PATH + 3);
        assert!(e.request_id.len() <= MAX_REQUEST_ID + 3);
    }

    #[test]
    fn heavy_hitters_find_the_real_top_under_noise() {
        let o = Offenders::new(1_000);
        // 10 noisy clients with 3,000 to 12,000 denials, hidden in 500,000 one-off addresses.
        let heavy: Vec<IpAddr> = (0..10u32).map(|i| v4(0xC633_6400 + i)).collect();
        let mut noise = 0x0a00_0000u32;
        for round in 0..50_000u32 {
            for (i, ip) in heavy.iter().enumerate() {
                // Client i sends on (i + 3) of every 50 rounds... spread evenly.
                if round % 50 < (i as u32 + 3) * 2 {
                    o.note(Kind::Denials, *ip, Some("abcdef..."), T0);
                }
            }
            for _ in 0..10 {
                noise = noise.wrapping_add(257);
                o.note(Kind::Denials, v4(noise), None, T0);
            }
        }
        let top = o.top(Kind::Denials, 15, 10, T0);
        let mut found: Vec<IpAddr> = top.ips.iter().map(|h| h.key.parse().unwrap()).collect();
        assert_eq!(found[0], heavy[9], "{top:?}");
        found.sort();
        assert_eq!(found, heavy, "{top:?}");
        assert_eq!(top.tokens[0].key, "abcdef...");
        // The heaviest's count is never under the truth.
        assert!(top.ips[0].count >= 24_000 * 1_000 / 1_000);
    }

    #[test]
    fn memory_stays_constant_under_a_million_distinct_keys() {
        let o = Offenders::new(1_000);
        let mut first = Footprint::default();
        for i in 0..1_000_000u32 {
            let token = format!("tok{i:08}...");
            o.note(
                Kind::FailedTokens,
                v4(i.wrapping_mul(2_654_435_761)),
                Some(&token),
                T0,
            );
            if i == 99_999 {
                first = o.footprint();
            }
        }
        let after = o.footprint();
        // Three tables (IPs, prefixes, tokens) of one kind were used, in one minute.
        let per_shard = 1_000usize.div_ceil(SHARDS);
        assert_eq!(first.held, 3 * SHARDS * per_shard, "{first:?}");
        assert_eq!((first.held, first.slots), (after.held, after.slots));
        // An index is reserved for twice its keys and rehashes in place; growing would double
        // it past four times its keys.
        assert!(after.largest_index <= 4 * per_shard, "{after:?}");
    }

    #[test]
    fn old_minutes_fall_out_of_since_and_are_reused() {
        let o = Offenders::new(100);
        o.note(Kind::Denials, v4(1), None, T0);
        o.note(Kind::Denials, v4(2), None, T0 + 20 * 60_000);
        let recent = o.top(Kind::Denials, 15, 10, T0 + 20 * 60_000);
        assert_eq!(recent.ips.len(), 1);
        assert_eq!(recent.ips[0].key, "0.0.0.2");
        let hour = o.top(Kind::Denials, 60, 10, T0 + 20 * 60_000);
        assert_eq!(hour.ips.len(), 2);
        // Sixty minutes on, the slot of the first minute is reused.
        o.note(Kind::Denials, v4(3), None, T0 + 60 * 60_000);
        let later = o.top(Kind::Denials, 60, 10, T0 + 60 * 60_000);
        let keys: Vec<&str> = later.ips.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, ["0.0.0.2", "0.0.0.3"]);
    }

    #[test]
    fn guest_error_rate_counts_app_failures_among_forwarded_guest_requests() {
        let r = Rates::default();
        let now = T0 + 30_000;
        for _ in 0..8 {
            r.note(true, true, 200, now);
        }
        r.note(true, true, 500, now);
        r.note(true, true, 504, now);
        r.note(true, false, 429, now); // denied: not the app's error
        r.note(false, true, 502, now); // not a guest route
        let w = r.window(1, now);
        assert_eq!(w.requests, 12.0);
        assert_eq!(w.denials, 1.0);
        assert_eq!(w.guest, 10.0);
        assert_eq!(w.guest_error_rate(), Some(0.2));
        // Sixteen minutes later the slot is reused and the old counts are gone.
        let later = now + 16 * 60_000;
        r.note(true, true, 200, later);
        assert_eq!(r.window(15, later).guest_errors, 0.0);
        assert_eq!(Rates::default().window(5, now).guest_error_rate(), None);
    }

    #[test]
    fn a_minute_counts_the_shields_answers_by_reason_and_the_apps_5xx() {
        let r = Rates::default();
        let now = T0 + 5_000;
        r.note_answer(true, true, 200, None, now);
        r.note_answer(true, true, 503, None, now);
        r.note_answer(true, false, 429, Some(4), now);
        r.note_answer(true, false, 429, Some(4), now);
        r.note_answer(true, true, 502, Some(1), now);
        let m = r.minute(minute_of(now)).unwrap();
        assert_eq!(m.requests, 5);
        assert_eq!(m.reasons[4], 2);
        assert_eq!(m.reasons[1], 1);
        assert_eq!(m.app_errors, 1);
        assert_eq!(r.minute(minute_of(now) - 1), None);
        // Its slot reused sixteen minutes later: the minute is gone, the new one starts at 0.
        let later = now + 16 * 60_000;
        r.note_answer(false, true, 200, None, later);
        assert_eq!(r.minute(minute_of(now)), None);
        assert_eq!(r.minute(minute_of(later)).unwrap().reasons[4], 0);
    }

    #[test]
    fn the_sliding_window_weighs_the_oldest_minute_by_what_is_left_of_it() {
        let r = Rates::default();
        r.note(false, true, 200, T0 + 10_000);
        r.note(false, true, 200, T0 + 10_000);
        // Half a minute into the next minute, half of the previous one is in the window.
        let w = r.window(1, T0 + 90_000);
        assert_eq!(w.requests, 1.0);
    }
}
