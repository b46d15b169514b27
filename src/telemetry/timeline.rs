//! The incident's record (`ctl timeline`, `/admin/timeline`): what changed when, and how the
//! traffic went, minute by minute, for the ticket and the RCA (playbook §5 and §7).
//!
//! Events are told by the part that acts, at the time of its clock: every applied and rejected
//! reload with what changed (and the errors), switches paused and resumed (by a reload or by a
//! temporary entry's end), bans made and lifted (automatic, manual, from another replica; by
//! `ctl unban`, expiry or another replica), alerts sent or failed, and other temporary rules
//! ending. The per-minute rows (requests, the shield's answers by reason, upstream errors, the
//! app's 5xx) are not counted here: the request path already counts each minute in
//! [`Rates`]; [`Timeline::settle`] copies each minute out of its slot once it is over, before
//! the slot is reused, so the request path pays nothing for the timeline.
//!
//! **Memory is bounded**, whatever happens:
//! - everything older than [`RETENTION`] (48 h, the playbook's RCA deadline) is dropped;
//! - at most [`MAX_EVENTS`] events and [`MAX_EVENT_BYTES`] of their text are kept, the oldest
//!   dropped first (and counted: the view says how many);
//! - bans made, bans lifted and rule expiries are listed one by one only up to
//!   [`LISTED_PER_MINUTE`] per kind and minute; past that they are only counted, with the
//!   [`TOP_NETS`] most frequent /24 or /48 prefixes (Space-Saving counts), and the view shows
//!   one line for the minute ("340 automatic bans");
//! - a reload keeps at most [`MAX_LINES`] changes, warnings or errors of [`MAX_TEXT`] bytes each;
//! - one row per minute with traffic, at most [`RETENTION`] of them (2,880).
//!
//! So the record holds at most about 2.5 MiB of events, 2,880 rows of 120 bytes and the
//! per-minute tallies (at most 2,880 minutes × 9 kinds × 8 prefixes).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ipnet::IpNet;

use crate::telemetry::meters::REASONS;
use crate::telemetry::recent::Rates;

/// How long anything is kept: the playbook asks for the RCA within 48 hours.
pub const RETENTION: Duration = Duration::from_secs(48 * 3600);
/// Events kept at most (the oldest are dropped first).
pub const MAX_EVENTS: usize = 10_000;
/// Bytes of event text kept at most (the oldest events are dropped first).
pub const MAX_EVENT_BYTES: usize = 2 << 20;
/// Bans made, bans lifted and expiries listed one by one per kind and minute; the rest are
/// counted.
pub const LISTED_PER_MINUTE: u64 = 10;
/// Prefixes named per kind and minute when bans are counted.
pub const TOP_NETS: usize = 8;
/// Changes, warnings or errors kept per reload.
pub const MAX_LINES: usize = 50;
/// Bytes kept of one text (a change, an error, a reason, an alert).
pub const MAX_TEXT: usize = 500;

const RETENTION_MS: i64 = 48 * 3600 * 1000;
const MINUTE_MS: i64 = 60_000;

/// Why a switch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchCause {
    /// A reload paused or resumed it.
    Reload,
    /// A temporary entry ended (`until`).
    Expiry,
}

/// Why a ban was lifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiftCause {
    /// `ctl unban` (`DELETE /admin/bans`).
    Manual,
    /// Its time was up.
    Expired,
    /// Another replica lifted it (its name, or how it was learnt).
    Replica(String),
}

/// What became of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    /// The webhook answered with this 2xx status.
    Sent(u16),
    /// It did not get through, and why.
    Failed(String),
}

/// A kind of event that can come in floods and is then counted per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Bans made: automatic (token guessing) or manual, here or by another replica.
    Banned {
        /// Token guessing (else manual).
        automatic: bool,
        /// Made by another replica.
        replica: bool,
    },
    /// Bans lifted: 0 manual, 1 expired, 2 by another replica.
    Lifted(u8),
    /// Temporary rules of this kind that ended (`blocklist`, `allowlist`, `revoked_token`,
    /// `limit`).
    Expired(&'static str),
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A configuration was applied.
    Reloaded {
        /// Its version.
        version: u64,
        /// What changed.
        changes: Vec<String>,
        /// Its warnings (e.g. a listen address that needs a restart).
        warnings: Vec<String>,
    },
    /// A configuration was rejected; nothing changed.
    Rejected {
        /// The version still in force.
        kept: u64,
        /// Every error found (at most [`MAX_LINES`]).
        errors: Vec<String>,
    },
    /// A switch was paused or resumed.
    Switch {
        /// Its name.
        name: String,
        /// Paused from now on (else resumed).
        paused: bool,
        /// When a temporary pause ends.
        until: Option<i64>,
        /// What did it.
        cause: SwitchCause,
    },
    /// A ban was made.
    Banned {
        /// The network.
        net: IpNet,
        /// Token guessing (else manual).
        automatic: bool,
        /// The replica that made it, when it was another one.
        replica: Option<String>,
        /// Why.
        reason: String,
        /// When it ends (Unix seconds).
        until: i64,
        /// The distinct failed tokens that triggered it (automatic bans).
        distinct_tokens: Option<u32>,
    },
    /// A ban was lifted.
    Lifted {
        /// The network.
        net: IpNet,
        /// Why.
        cause: LiftCause,
        /// The ban's reason.
        reason: String,
    },
    /// A temporary rule (other than a ban or a switch) ended.
    Expired {
        /// `blocklist`, `allowlist`, `revoked_token` or `limit`.
        rule: &'static str,
        /// Its name, network, or (a revoked token) line.
        name: String,
        /// Its reason, if it had one.
        reason: String,
    },
    /// An alert went to the webhook.
    Alert {
        /// `error_rate`, `denial_rate` or `prefix_ban`.
        kind: &'static str,
        /// Sent or failed.
        outcome: AlertOutcome,
        /// What it said.
        text: String,
    },
    /// More events of one kind in one minute than are listed: their count and the prefixes
    /// they hit most (only in views).
    Many {
        /// The kind.
        tally: Tally,
        /// How many in that minute.
        count: u64,
        /// The most frequent /24 (IPv4) or /48 (IPv6) prefixes, with counts, most first.
        top: Vec<(IpNet, u64)>,
    },
}

impl Event {
    /// The kind this event is counted under, when floods of it are folded.
    fn tally(&self) -> Option<Tally> {
        match self {
            Event::Banned {
                automatic, replica, ..
            } => Some(Tally::Banned {
                automatic: *automatic,
                replica: replica.is_some(),
            }),
            Event::Lifted { cause, .. } => Some(Tally::Lifted(match cause {
                LiftCause::Manual => 0,
                LiftCause::Expired => 1,
                LiftCause::Replica(_) => 2,
            })),
            Event::Expired { rule, .. } => Some(Tally::Expired(rule)),
            _ => None,
        }
    }

    /// The network it is about, for the prefix counts.
    fn net(&self) -> Option<IpNet> {
        match self {
            Event::Banned { net, .. } | Event::Lifted { net, .. } => Some(*net),
            _ => None,
        }
    }

    /// Bytes of memory it holds, roughly (its text and a fixed part).
    fn size(&self) -> usize {
        let texts = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        96 + match self {
            Event::Reloaded {
                changes, warnings, ..
            } => texts(changes) + texts(warnings),
            Event::Rejected { errors, .. } => texts(errors),
            Event::Switch { name, .. } => name.len(),
            Event::Banned {
                replica, reason, ..
            } => reason.len() + replica.as_ref().map_or(0, String::len),
            Event::Lifted { cause, reason, .. } => {
                reason.len()
                    + match cause {
                        LiftCause::Replica(r) => r.len(),
                        _ => 0,
                    }
            }
            Event::Expired { name, reason, .. } => name.len() + reason.len(),
            Event::Alert { outcome, text, .. } => {
                text.len()
                    + match outcome {
                        AlertOutcome::Failed(why) => why.len(),
                        AlertOutcome::Sent(_) => 0,
                    }
            }
            Event::Many { top, .. } => top.len() * 40,
        }
    }
}

/// One event and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub event: Event,
}

/// One minute's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteRow {
    /// The minute (Unix milliseconds / 60,000).
    pub minute: i64,
    /// Requests answered.
    pub requests: u64,
    /// The shield's own answers by [`REASONS`] index: denials, and the 502/504 of the app
    /// unreachable or too slow.
    pub reasons: [u64; REASONS.len()],
    /// The app's own 5xx answers.
    pub app_errors: u64,
    /// Still counting (the minute is not over, or only just).
    pub partial: bool,
}

/// The record between two instants, as the views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// From (Unix milliseconds, inclusive).
    pub from_ms: i64,
    /// To (now).
    pub to_ms: i64,
    /// What happened, in order; floods folded into [`Event::Many`].
    pub events: Vec<Entry>,
    /// The minutes with traffic, in order.
    pub minutes: Vec<MinuteRow>,
    /// Events dropped by the bounds since the start (not by age).
    pub dropped: u64,
    /// The oldest event still kept.
    pub oldest_ms: Option<i64>,
}

struct Stored {
    at_ms: i64,
    event: Event,
    size: usize,
}

/// The counts of one kind in one minute.
struct Count {
    tally: Tally,
    count: u64,
    /// Space-Saving counters of prefixes: at most [`TOP_NETS`].
    top: Vec<(IpNet, u64)>,
}

struct TallyMinute {
    minute: i64,
    counts: Vec<Count>,
}

#[derive(Default)]
struct State {
    events: VecDeque<Stored>,
    bytes: usize,
    dropped: u64,
    tallies: VecDeque<TallyMinute>,
    minutes: VecDeque<MinuteRow>,
    /// The last minute copied out of the rates.
    settled: Option<i64>,
}

/// The record; shared by every part that tells it something.
#[derive(Default)]
pub struct Timeline {
    state: Mutex<State>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline").finish_non_exhaustive()
    }
}

/// `s` cut to [`MAX_TEXT`] bytes on a character boundary, marked `...`.
fn cut(s: &str) -> String {
    crate::text::truncate_marked(s.to_string(), MAX_TEXT)
}

/// At most [`MAX_LINES`] of `lines`, each cut; a last line says how many more there were.
fn cut_lines(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines.iter().take(MAX_LINES).map(|l| cut(l)).collect();
    if lines.len() > MAX_LINES {
        out.push(format!("… and {} more", lines.len() - MAX_LINES));
    }
    out
}

/// The /24 or /48 prefix a network is counted under (itself when it is broader).
fn prefix_of(net: IpNet) -> IpNet {
    let len = match net.addr() {
        IpAddr::V4(_) => 24,
        IpAddr::V6(_) => 48,
    };
    if net.prefix_len() <= len {
        return net;
    }
    IpNet::new(net.addr(), len).map_or(net, |n| n.trunc())
}

impl Timeline {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding it leaves nothing half-done worth losing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `event` at `at_ms` (Unix milliseconds).
    pub fn record(&self, at_ms: i64, event: Event) {
        let mut st = self.lock();
        st.prune(at_ms);
        if let Some(tally) = event.tally() {
            let listed = st.count(at_ms.div_euclid(MINUTE_MS), tally, event.net());
            if listed > LISTED_PER_MINUTE {
                return;
            }
        }
        let size = event.size();
        st.bytes += size;
        st.events.push_back(Stored { at_ms, event, size });
        while st.events.len() > MAX_EVENTS || st.bytes > MAX_EVENT_BYTES {
            let Some(old) = st.events.pop_front() else {
                break;
            };
            st.bytes -= old.size;
            st.dropped += 1;
        }
    }

    /// A configuration applied at `at_ms`.
    pub fn reloaded(&self, at_ms: i64, version: u64, changes: &[String], warnings: &[String]) {
        self.record(
            at_ms,
            Event::Reloaded {
                version,
                changes: cut_lines(changes),
                warnings: cut_lines(warnings),
            },
        );
    }

    /// A configuration rejected at `at_ms`; `kept` stays in force.
    pub fn rejected(&self, at_ms: i64, kept: u64, errors: &[String]) {
        self.record(
            at_ms,
            Event::Rejected {
                kept,
                errors: cut_lines(errors),
            },
        );
    }

    /// A switch paused or resumed at `at_ms`.
    pub fn switch(
        &self,
        at_ms: i64,
        name: &str,
        paused: bool,
        until: Option<i64>,
        cause: SwitchCause,
    ) {
        self.record(
            at_ms,
            Event::Switch {
                name: cut(name),
                paused,
                until,
                cause,
            },
        );
    }

    /// A ban made at `at_ms`: `replica` names the replica it came from, when another one.
    pub fn banned(&self, at_ms: i64, ban: &crate::policy::bans::Ban, replica: Option<&str>) {
        self.record(
            at_ms,
            Event::Banned {
                net: ban.net,
                automatic: ban.source == crate::policy::bans::BanSource::Automatic,
                replica: replica.map(cut),
                reason: cut(&ban.reason),
                until: ban.until,
                distinct_tokens: ban.distinct_tokens,
            },
        );
    }

    /// A ban lifted at `at_ms`.
    pub fn lifted(&self, at_ms: i64, ban: &crate::policy::bans::Ban, cause: LiftCause) {
        let cause = match cause {
            LiftCause::Replica(r) => LiftCause::Replica(cut(&r)),
            other => other,
        };
        self.record(
            at_ms,
            Event::Lifted {
                net: ban.net,
                cause,
                reason: cut(&ban.reason),
            },
        );
    }

    /// A temporary rule of kind `rule` named `name` that ended at `at_ms`.
    pub fn expired(&self, at_ms: i64, rule: &'static str, name: &str, reason: &str) {
        self.record(
            at_ms,
            Event::Expired {
                rule,
                name: cut(name),
                reason: cut(reason),
            },
        );
    }

    /// An alert of `kind` that went (or did not go) to the webhook at `at_ms`.
    pub fn alert(&self, at_ms: i64, kind: &'static str, outcome: AlertOutcome, text: &str) {
        let outcome = match outcome {
            AlertOutcome::Failed(why) => AlertOutcome::Failed(cut(&why)),
            sent => sent,
        };
        self.record(
            at_ms,
            Event::Alert {
                kind,
                outcome,
                text: cut(text),
            },
        );
    }

    /// Copies every minute of `rates` that has been over for a minute (so no late answer of
    /// it is still counting) out of its slot, before the slot is reused. Call it at least once
    /// every [`Rates::MINUTES`] minutes (the background task does, every few seconds); the
    /// views call it too.
    pub fn settle(&self, rates: &Rates, now_ms: i64) {
        let mut st = self.lock();
        st.settle(rates, now_ms);
        st.prune(now_ms);
    }

    /// The record since `since_ms` up to `now_ms`, the minutes still counting included.
    pub fn view(&self, rates: &Rates, since_ms: i64, now_ms: i64) -> View {
        let mut st = self.lock();
        st.settle(rates, now_ms);
        st.prune(now_ms);
        let from_ms = since_ms.max(now_ms.saturating_sub(RETENTION_MS));
        let mut events = Vec::new();
        // The (minute, kind) pairs already shown as one counted line.
        let mut folded: Vec<(i64, Tally)> = Vec::new();
        for stored in st
            .events
            .iter()
            .filter(|e| e.at_ms >= from_ms && e.at_ms <= now_ms)
        {
            let minute = stored.at_ms.div_euclid(MINUTE_MS);
            let many = stored
                .event
                .tally()
                .and_then(|tally| st.counted(minute, tally).map(|c| (tally, c)))
                .filter(|(_, c)| c.count > LISTED_PER_MINUTE);
            match many {
                None => events.push(Entry {
                    at_ms: stored.at_ms,
                    event: stored.event.clone(),
                }),
                Some((tally, c)) => {
                    if !folded.contains(&(minute, tally)) {
                        folded.push((minute, tally));
                        let mut top = c.top.clone();
                        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                        events.push(Entry {
                            at_ms: stored.at_ms,
                            event: Event::Many {
                                tally,
                                count: c.count,
                                top,
                            },
                        });
                    }
                }
            }
        }
        // Each part stamps its events with its own reading (an expiry with the rule's end):
        // in time order, the order of recording where times are equal.
        events.sort_by_key(|e| e.at_ms);
        let from_minute = from_ms.div_euclid(MINUTE_MS);
        let now_minute = now_ms.div_euclid(MINUTE_MS);
        let mut minutes: Vec<MinuteRow> = st
            .minutes
            .iter()
            .filter(|m| m.minute >= from_minute && m.minute <= now_minute)
            .copied()
            .collect();
        let live_from = st.settled.map_or(i64::MIN, |s| s + 1).max(from_minute);
        for minute in live_from..=now_minute {
            if let Some(c) = rates.minute(minute).filter(|c| c.requests > 0) {
                minutes.push(MinuteRow {
                    minute,
                    requests: c.requests,
                    reasons: c.reasons,
                    app_errors: c.app_errors,
                    partial: true,
                });
            }
        }
        View {
            from_ms,
            to_ms: now_ms,
            events,
            minutes,
            dropped: st.dropped,
            oldest_ms: st.events.front().map(|e| e.at_ms),
        }
    }
}

impl State {
    /// Counts one event of `tally` in `minute` (about `net`); returns its count so far.
    fn count(&mut self, minute: i64, tally: Tally, net: Option<IpNet>) -> u64 {
        // Events come in time order, but not strictly (each part reads its own clock): look
        // from the newest minute back.
        let at = self.tallies.iter().rposition(|t| t.minute <= minute);
        let index = match at {
            Some(i) if self.tallies[i].minute == minute => i,
            Some(i) => {
                self.tallies.insert(
                    i + 1,
                    TallyMinute {
                        minute,
                        counts: Vec::new(),
                    },
                );
                i + 1
            }
            None => {
                self.tallies.push_front(TallyMinute {
                    minute,
                    counts: Vec::new(),
                });
                0
            }
        };
        let counts = &mut self.tallies[index].counts;
        let c = match counts.iter().position(|c| c.tally == tally) {
            Some(i) => &mut counts[i],
            None => {
                counts.push(Count {
                    tally,
                    count: 0,
                    top: Vec::new(),
                });
                let last = counts.len() - 1;
                &mut counts[last]
            }
        };
        c.count += 1;
        if let Some(net) = net {
            let p = prefix_of(net);
            if let Some(slot) = c.top.iter_mut().find(|(n, _)| *n == p) {
                slot.1 += 1;
            } else if c.top.len() < TOP_NETS {
                c.top.push((p, 1));
            } else if let Some(min) = c.top.iter_mut().min_by_key(|(_, n)| *n) {
                // Space-Saving: the least counted makes room and passes its count on.
                *min = (p, min.1 + 1);
            }
        }
        c.count
    }

    fn counted(&self, minute: i64, tally: Tally) -> Option<&Count> {
        self.tallies
            .iter()
            .rev()
            .find(|t| t.minute == minute)
            .and_then(|t| t.counts.iter().find(|c| c.tally == tally))
    }

    fn settle(&mut self, rates: &Rates, now_ms: i64) {
        let now_minute = now_ms.div_euclid(MINUTE_MS);
        // Over for a whole minute: an answer of it that took long is counted by then.
        let upto = now_minute - 2;
        let oldest_slot = now_minute - Rates::MINUTES as i64 + 1;
        let from = self.settled.map_or(oldest_slot, |s| s + 1).max(oldest_slot);
        for minute in from..=upto {
            if let Some(c) = rates.minute(minute).filter(|c| c.requests > 0) {
                self.minutes.push_back(MinuteRow {
                    minute,
                    requests: c.requests,
                    reasons: c.reasons,
                    app_errors: c.app_errors,
                    partial: false,
                });
            }
        }
        if upto >= from {
            self.settled = Some(upto);
        }
    }

    /// Drops what is older than [`RETENTION`] before `now_ms`.
    fn prune(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(RETENTION_MS);
        while self.events.front().is_some_and(|e| e.at_ms < cutoff) {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.size;
            }
        }
        let cutoff_minute = cutoff.div_euclid(MINUTE_MS);
        while self
            .tallies
            .front()
            .is_some_and(|t| t.minute < cutoff_minute)
        {
            self.tallies.pop_front();
        }
        while self
            .minutes
            .front()
            .is_some_and(|m| m.minute < cutoff_minute)
        {
            self.minutes.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bans::{Ban, BanSource};

    const T0: i64 = 1_795_802_400_000; // 2026-11-27T18:00:00Z

    fn ban(net: &str, source: BanSource) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            until: T0 / 1000 + 900,
            reason: "token guessing".into(),
            source,
            offences: 1,
            distinct_tokens: Some(20),
            created: T0 / 1000,
            origin: None,
        }
    }

    #[test]
    fn events_come_back_in_order_with_their_times() {
        let t = Timeline::default();
        t.reloaded(
            T0 + 1_000,
            2,
            &["limit guest-ip rate 300/min -> 60/min".into()],
            &[],
        );
        t.rejected(T0 + 2_000, 2, &["c.toml:3: limit.rate: bad".into()]);
        t.banned(T0 + 3_000, &ban("203.0.113.9/32", BanSource::Manual), None);
        t.switch(
            T0 + 4_000,
            "maintenance",
            true,
            Some(T0 / 1000 + 600),
            SwitchCause::Reload,
        );
        let v = t.view(&Rates::default(), T0, T0 + 5_000);
        let times: Vec<i64> = v.events.iter().map(|e| e.at_ms - T0).collect();
        assert_eq!(times, [1_000, 2_000, 3_000, 4_000]);
        assert!(matches!(
            v.events[0].event,
            Event::Reloaded { version: 2, .. }
        ));
        assert!(
            matches!(&v.events[1].event, Event::Rejected { kept: 2, errors } if errors.len() == 1)
        );
        assert!(matches!(
            v.events[2].event,
            Event::Banned {
                automatic: false,
                ..
            }
        ));
        // `since` cuts the older ones off.
        assert_eq!(
            t.view(&Rates::default(), T0 + 2_500, T0 + 5_000)
                .events
                .len(),
            2
        );
    }

    #[test]
    fn a_flood_of_bans_in_one_minute_is_one_counted_line_with_the_top_prefixes() {
        let t = Timeline::default();
        for i in 0..340u32 {
            // 200 addresses of 198.51.100.0/24, 140 spread over 203.0.113.0/24 and others.
            let net = if i < 200 {
                format!("198.51.100.{}/32", i % 250)
            } else {
                format!("203.0.{}.7/32", 113 + (i % 3))
            };
            t.banned(
                T0 + 180_000 + i64::from(i),
                &ban(&net, BanSource::Automatic),
                None,
            );
        }
        // A manual ban in the same minute is listed on its own.
        t.banned(T0 + 181_000, &ban("192.0.2.1/32", BanSource::Manual), None);
        let v = t.view(&Rates::default(), T0, T0 + 240_000);
        assert_eq!(v.events.len(), 2, "{:#?}", v.events);
        match &v.events[0].event {
            Event::Many { tally, count, top } => {
                assert_eq!(
                    *tally,
                    Tally::Banned {
                        automatic: true,
                        replica: false
                    }
                );
                assert_eq!(*count, 340);
                assert_eq!(top[0], ("198.51.100.0/24".parse().unwrap(), 200));
                assert_eq!(top.len(), 4);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            v.events[1].event,
            Event::Banned {
                automatic: false,
                ..
            }
        ));
        // Only the listed ones are held.
        assert_eq!(t.lock().events.len(), LISTED_PER_MINUTE as usize + 1);
        // The next minute starts over: a few bans are listed one by one again.
        t.banned(
            T0 + 250_000,
            &ban("198.51.100.1/32", BanSource::Automatic),
            None,
        );
        let v = t.view(&Rates::default(), T0 + 240_000, T0 + 300_000);
        assert!(matches!(
            v.events[..],
            [Entry {
                event: Event::Banned { .. },
                ..
            }]
        ));
    }

    #[test]
    fn the_bounds_drop_the_oldest_events_and_count_them() {
        let t = Timeline::default();
        for i in 0..(MAX_EVENTS as i64 + 5) {
            t.alert(T0 + i, "denial_rate", AlertOutcome::Sent(200), "denials");
        }
        let v = t.view(&Rates::default(), T0, T0 + 60_000);
        assert_eq!(v.events.len(), MAX_EVENTS);
        assert_eq!(v.dropped, 5);
        assert_eq!(v.oldest_ms, Some(T0 + 5));
        // Long texts are cut, and the bytes bound holds whatever the texts.
        let long = "x".repeat(100_000);
        for i in 0..100 {
            t.rejected(T0 + 70_000 + i, 1, &vec![long.clone(); 200]);
        }
        let st = t.lock();
        assert!(st.bytes <= MAX_EVENT_BYTES, "{}", st.bytes);
        match &st.events.back().unwrap().event {
            Event::Rejected { errors, .. } => {
                assert_eq!(errors.len(), MAX_LINES + 1);
                assert!(errors[0].len() <= MAX_TEXT + 3);
                assert_eq!(errors[MAX_LINES], "… and 150 more");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn everything_older_than_48_hours_is_gone() {
        let t = Timeline::default();
        let rates = Rates::default();
        t.banned(T0, &ban("203.0.113.9/32", BanSource::Manual), None);
        rates.note_answer(true, true, 200, None, T0);
        t.settle(&rates, T0 + 5 * 60_000);
        let later = T0 + RETENTION_MS + 60_000;
        t.alert(
            later,
            "error_rate",
            AlertOutcome::Failed("refused".into()),
            "x",
        );
        let v = t.view(&rates, 0, later);
        assert_eq!(v.events.len(), 1);
        assert!(v.minutes.is_empty());
        assert!(v.from_ms >= later - RETENTION_MS);
        assert!(t.lock().tallies.is_empty());
    }

    #[test]
    fn minutes_are_copied_out_of_the_rates_before_their_slots_are_reused() {
        let t = Timeline::default();
        let rates = Rates::default();
        for m in 0..40i64 {
            let at = T0 + m * 60_000 + 1_000;
            for _ in 0..=m {
                rates.note_answer(true, true, 200, None, at);
            }
            rates.note_answer(true, false, 429, Some(4), at);
            // The background task settles every few seconds.
            t.settle(&rates, at + 30_000);
        }
        let now = T0 + 40 * 60_000 - 1;
        let v = t.view(&rates, T0, now);
        assert_eq!(v.minutes.len(), 40);
        for (m, row) in v.minutes.iter().enumerate() {
            assert_eq!(row.minute, T0 / 60_000 + m as i64);
            assert_eq!(row.requests, m as u64 + 2, "{row:?}");
            assert_eq!(row.reasons[4], 1);
            // Only the last two are still counting.
            assert_eq!(row.partial, m >= 38, "{row:?}");
        }
    }
}
