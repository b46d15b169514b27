//! The Prometheus metrics (SPEC §7): what is counted, where, and how `/metrics` writes it.
//!
//! **The request path only adds to atomics.** Each route class has one [`RouteCells`] (answers
//! by status class, denials by reason and mode, an upstream latency histogram with fixed
//! buckets), all plain `AtomicU64`s bumped with relaxed `fetch_add`. The cells hang off the
//! [`Snapshot`](crate::snapshot::Snapshot) as [`RouteMeters`], indexed by class id, so a request
//! finds its cells with one bounds-checked index into the snapshot it already holds: no map
//! lookup, no lock (prometheus-client's `Family::get_or_create` and `Histogram::observe` both
//! take one). A reload carries each class's cells over by name, like limiters, so renaming or
//! reordering classes never moves counts from one label to another; a class that is removed
//! takes its series with it.
//!
//! **Everything else is read at scrape time** (`admin/scrape.rs`): limiter tables, bans, the
//! version and list sizes come from the snapshot and the shield's parts, gathered with the
//! counters here into one value for one of prometheus-client's text encoders.
//!
//! Label values come only from fixed sets: route class names of the configuration (or `other`),
//! [`Denial::code`], `1xx`..`5xx`, limit and list names, and a few fixed words. Never an IP, a
//! token or a raw path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::policy::classify::ClassId;
use crate::policy::denial::Denial;

/// The route label of requests outside every route class.
pub const OTHER_ROUTE: &str = "other";

/// Upper bounds of the upstream latency buckets, in microseconds (5 ms to 10 s); a last
/// bucket, `+Inf`, takes the rest.
pub const LATENCY_BOUNDS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Every `reason` label: [`Denial::code`] of each kind of denial, indexed by [`reason_index`].
pub const REASONS: [&str; 11] = [
    "payload_too_large",
    "upstream_unavailable",
    "upstream_timeout",
    "bad_request",
    "token_rate_limited",
    "service_paused",
    "ip_banned",
    "invalid_token",
    "ip_blocked",
    "token_revoked",
    "body_timeout",
];

/// The [`REASONS`] indices of denials answered 429 or 403 (rate limited, banned, blocked).
pub const ALERTED_REASONS: [usize; 3] = [4, 6, 8];

/// The `status_class` labels, indexed by the status's first digit minus one.
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `mode` labels: index 0 enforced (the guest got the denial), 1 shadow (logged only).
pub(crate) const MODES: [&str; 2] = ["enforce", "shadow"];

/// The `kind` labels of upstream errors.
pub(crate) const UPSTREAM_ERRORS: [&str; 2] = ["unavailable", "timeout"];

/// The `reason` labels of requests hyper refused before the shield saw them, by
/// [`Metrics::connection_failed`] index.
pub const REFUSED_BY_HTTP: [&str; 3] = ["malformed", "head_too_large", "header_timeout"];

/// The `listener` labels of connection metrics, by [`Listener::index`].
pub const LISTENERS: [&str; 2] = ["http", "https"];

/// The `protocol` labels of open connections, by [`Protocol::index`]: still in the TLS
/// handshake, or speaking HTTP/1.1.
pub const PROTOCOLS: [&str; 2] = ["handshake", "http1"];

/// The `reason` labels of refused connections, by [`Refusal::index`].
pub const CONNECTION_REFUSALS: [&str; 2] = ["per_ip", "max"];

/// The guest listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `listen`, plain HTTP.
    Http,
    /// `tls_listen`, HTTPS.
    Https,
}

impl Listener {
    /// Index into [`LISTENERS`].
    pub fn index(self) -> usize {
        match self {
            Listener::Http => 0,
            Listener::Https => 1,
        }
    }
}

/// What an open connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Not yet: the TLS handshake is under way.
    Handshake,
    /// HTTP/1.1.
    Http1,
}

impl Protocol {
    /// Index into [`PROTOCOLS`].
    pub fn index(self) -> usize {
        match self {
            Protocol::Handshake => 0,
            Protocol::Http1 => 1,
        }
    }
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already had `max_connections_per_ip` open.
    PerIp,
    /// `max_connections` were open and none was idle to make room.
    Max,
}

impl Refusal {
    /// Index into [`CONNECTION_REFUSALS`].
    pub fn index(self) -> usize {
        match self {
            Refusal::PerIp => 0,
            Refusal::Max => 1,
        }
    }
}

/// The guest connections, kept for the life of the process: open ones by listener and
/// protocol, refusals by reason, idle ones closed to make room, and lingering ones.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Open now, by [`Listener::index`] and [`Protocol::index`].
    pub(crate) open: [[AtomicU64; PROTOCOLS.len()]; LISTENERS.len()],
    /// Closed at once when accepted, by [`Refusal::index`].
    pub(crate) refused: [AtomicU64; CONNECTION_REFUSALS.len()],
    /// Idle keep-alive connections closed to make room at `max_connections`.
    pub(crate) idle_closed: AtomicU64,
    /// Reading and discarding an unread body after an early answer, now.
    pub(crate) lingering: AtomicU64,
    /// Closed without lingering because the lingering bound was reached.
    pub(crate) linger_skipped: AtomicU64,
}

impl ConnectionCounts {
    /// Counts a connection opened on `listener`, speaking `protocol`.
    pub fn opened(&self, listener: Listener, protocol: Protocol) {
        self.open[listener.index()][protocol.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection of `listener` that spoke `protocol` as closed.
    pub fn closed(&self, listener: Listener, protocol: Protocol) {
        self.open[listener.index()][protocol.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a new connection closed at once.
    pub fn refused(&self, refusal: Refusal) {
        self.refused[refusal.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now, over every listener and protocol.
    pub fn open_now(&self) -> u64 {
        self.open
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}
/// The `reason` labels of request headers dropped for their name, by
/// [`Metrics::headers_dropped`] index.
pub const DROPPED_HEADERS: [&str; 2] = ["underscore", "invalid_name"];

/// The `result` labels of reloads.
pub(crate) const RELOAD_RESULTS: [&str; 2] = ["applied", "rejected"];

/// The index of `denial`'s code in [`REASONS`]; one exhaustive match, so a new kind of denial
/// cannot go uncounted.
pub fn reason_index(denial: &Denial) -> usize {
    match denial {
        Denial::PayloadTooLarge => 0,
        Denial::UpstreamUnavailable => 1,
        Denial::UpstreamTimeout => 2,
        Denial::BadRequest(_) => 3,
        Denial::RateLimited(_) => 4,
        Denial::Paused { .. } => 5,
        Denial::Banned { .. } => 6,
        Denial::InvalidToken => 7,
        Denial::Blocked => 8,
        Denial::Revoked => 9,
        Denial::BodyTimeout => 10,
    }
}

/// The counters of one route class (or of requests outside every class).
#[derive(Debug, Default)]
pub struct RouteCells {
    /// Answers by status class.
    pub(crate) status: [AtomicU64; 5],
    /// Denials by [`REASONS`] index and [`MODES`] index.
    pub(crate) denials: [[AtomicU64; 2]; REASONS.len()],
    /// Upstream latency: per-bucket (not cumulative) counts, the last one `+Inf`.
    pub(crate) latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of the observed latencies in microseconds.
    pub(crate) latency_sum_us: AtomicU64,
}

impl RouteCells {
    /// Counts an answer with `status`; statuses outside 100..=599 are not counted.
    pub fn answered(&self, status: u16) {
        if let Some(cell) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|i| self.status.get(i))
        {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the shield's own answer `denial` (the guest got it): a denial and an answer.
    pub fn refused(&self, denial: &Denial) {
        self.denials[reason_index(denial)][0].fetch_add(1, Ordering::Relaxed);
        self.answered(denial.status().as_u16());
    }

    /// Counts a shadow denial: logged and counted, but the request goes on.
    pub fn shadowed(&self, denial: &Denial) {
        self.denials[reason_index(denial)][1].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer from the app with `status` that took `latency` to arrive.
    pub fn forwarded(&self, status: u16, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.answered(status);
    }
}

/// The per-route cells of one snapshot, indexed by class id.
#[derive(Debug)]
pub struct RouteMeters {
    /// Class names, index = class id.
    names: Vec<Arc<str>>,
    /// Their cells, index = class id.
    cells: Vec<Arc<RouteCells>>,
    /// Requests outside every class.
    other: Arc<RouteCells>,
}

impl RouteMeters {
    /// Cells for the classes `names`, carried over by name from `previous` (a reload must not
    /// reset or relabel counts). A class named `other` shares the cells of unclassified requests,
    /// so the exposition never holds two series with one label set.
    pub fn new(names: &[String], previous: Option<&RouteMeters>) -> RouteMeters {
        let other = previous.map_or_else(Arc::default, |p| p.other.clone());
        let cells = names
            .iter()
            .map(|name| {
                if name == OTHER_ROUTE {
                    return other.clone();
                }
                previous
                    .and_then(|p| p.names.iter().position(|n| **n == **name))
                    .and_then(|i| previous.and_then(|p| p.cells.get(i)).cloned())
                    .unwrap_or_default()
            })
            .collect();
        RouteMeters {
            names: names.iter().map(|n| n.as_str().into()).collect(),
            cells,
            other,
        }
    }

    /// The cells of a request of `class` (`None`: outside every class).
    pub fn get(&self, class: Option<ClassId>) -> &Arc<RouteCells> {
        class
            .and_then(|c| self.cells.get(usize::from(c)))
            .unwrap_or(&self.other)
    }

    /// The name of `class` (`None` outside every class), shared: cloning it is one count.
    pub fn name(&self, class: Option<ClassId>) -> Option<&Arc<str>> {
        class.and_then(|c| self.names.get(usize::from(c)))
    }

    /// Enforced denials answered 429 or 403 ([`ALERTED_REASONS`]) over every route since the
    /// start: what the `denial_rate` alert watches. Read once a second, off the request path.
    pub fn denied_429_403(&self) -> u64 {
        self.rows()
            .flat_map(|(_, cells)| {
                ALERTED_REASONS
                    .iter()
                    .map(move |&r| cells.denials[r][0].load(Ordering::Relaxed))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Each route label once, with its cells.
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, &RouteCells)> {
        self.names
            .iter()
            .zip(&self.cells)
            .filter(|(name, _)| &***name != OTHER_ROUTE)
            .map(|(name, cells)| (&**name, &**cells))
            .chain(std::iter::once((OTHER_ROUTE, &*self.other)))
    }
}

/// Counters that belong to no route: kept for the life of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Upstream errors by [`UPSTREAM_ERRORS`] index.
    pub(crate) upstream_errors: [AtomicU64; 2],
    /// Reloads by [`RELOAD_RESULTS`] index.
    pub(crate) reloads: [AtomicU64; 2],
    /// Requests hyper refused, by [`REFUSED_BY_HTTP`] index.
    pub(crate) refused_by_http: [AtomicU64; 3],
    /// Request headers dropped for their name, by [`DROPPED_HEADERS`] index.
    pub(crate) headers_dropped: [AtomicU64; 2],
    /// TLS handshakes, completed and failed.
    pub tls: HandshakeCounts,
    /// Guest connections: open, refused, closed to make room, lingering.
    pub connections: ConnectionCounts,
}

impl Metrics {
    /// Counts `denial` if it is an upstream failure (other denials are not upstream errors).
    pub fn upstream_failed(&self, denial: &Denial) {
        let kind = match denial {
            Denial::UpstreamUnavailable => 0,
            Denial::UpstreamTimeout => 1,
            _ => return,
        };
        self.upstream_errors[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a guest connection that ended with `error`, if hyper refused its request before
    /// the shield's handler saw it: a malformed head (hyper answered 400), a head over the cap
    /// (431, or 414 for a URI alone), or a head that did not arrive within `header_timeout`
    /// (closed without an answer). Other connection errors (a client gone mid-answer) are not
    /// refusals and are not counted.
    pub fn connection_failed(&self, error: &hyper::Error) {
        let reason = if error.is_parse_too_large() {
            1
        } else if error.is_parse() {
            0
        } else if error.is_timeout() {
            2
        } else {
            return;
        };
        self.refused_by_http[reason].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the request headers a forwarded request lost for their name: `underscore` named
    /// with `_`, `invalid` with another byte that is not a letter, digit or `-`.
    pub fn headers_dropped(&self, underscore: u32, invalid: u32) {
        for (cell, n) in self.headers_dropped.iter().zip([underscore, invalid]) {
            if n > 0 {
                cell.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }

    /// Counts a reload, applied or rejected.
    pub fn reloaded(&self, applied: bool) {
        self.reloads[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every cell of `cells`, each read atomically (not all together).
pub(crate) fn load<const N: usize>(cells: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| cells[i].load(Ordering::Relaxed))
}

/// Why a TLS handshake did not complete; each is one value of the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The first byte was not a TLS handshake record (plain HTTP, garbage).
    NotTls,
    /// Not done within the handshake timeout (including the wait for a slot).
    Timeout,
    /// The client closed or reset the connection first.
    Closed,
    /// A TLS error: no common protocol version, cipher suite or ALPN protocol, a bad message.
    Protocol,
}

/// The metric's `reason` label of each [`HandshakeFailure`], in index order.
pub const FAILURE_REASONS: [&str; 4] = ["not_tls", "timeout", "closed", "protocol"];

impl HandshakeFailure {
    /// Index into [`FAILURE_REASONS`].
    pub fn index(self) -> usize {
        match self {
            HandshakeFailure::NotTls => 0,
            HandshakeFailure::Timeout => 1,
            HandshakeFailure::Closed => 2,
            HandshakeFailure::Protocol => 3,
        }
    }
}

/// Handshake counters, kept for the life of the process.
#[derive(Debug, Default)]
pub struct HandshakeCounts {
    /// Handshakes completed.
    pub done: AtomicU64,
    /// Handshakes failed, by [`HandshakeFailure::index`].
    pub failed: [AtomicU64; 4],
}

impl HandshakeCounts {
    /// Counts one handshake's outcome.
    pub fn count(&self, outcome: Result<(), HandshakeFailure>) {
        match outcome {
            Ok(()) => self.done.fetch_add(1, Ordering::Relaxed),
            Err(f) => self.failed[f.index()].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// When the app last showed it is alive (answered, or accepted a probe's connection), for
/// `/readyz`.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Unix milliseconds of the last sign of life (0: none yet).
    ok_at_ms: std::sync::atomic::AtomicI64,
}

impl Liveness {
    /// Notes that the app answered at `now_ms` (cheap: one relaxed load, a store at most once
    /// a second).
    pub fn note(&self, now_ms: i64) {
        if now_ms - self.ok_at_ms.load(Ordering::Relaxed) > 1000 {
            self.ok_at_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Notes a sign of life at `now_ms`, however recent the last one.
    pub fn set(&self, now_ms: i64) {
        self.ok_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// How long before `now_ms` the app was last seen alive.
    pub fn silent_for_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.ok_at_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::limits::Exceeded;

    fn every_denial() -> Vec<Denial> {
        vec![
            Denial::PayloadTooLarge,
            Denial::UpstreamUnavailable,
            Denial::UpstreamTimeout,
            Denial::BodyTimeout,
            Denial::BadRequest("x"),
            Denial::RateLimited(Exceeded {
                name: "l".into(),
                retry_after: Duration::from_secs(1),
                rate: crate::units::parse_rate("1/s").unwrap(),
                burst: 1,
            }),
            Denial::Paused {
                switch: "s".into(),
                message: "m".into(),
                retry_after: Duration::from_secs(1),
            },
            Denial::Banned {
                net: "198.51.100.0/24".parse().unwrap(),
                retry_after: Duration::from_secs(1),
            },
            Denial::InvalidToken,
            Denial::Blocked,
            Denial::Revoked,
        ]
    }

    #[test]
    fn the_alerted_reasons_are_exactly_the_429_and_403_denials() {
        let mut found: Vec<usize> = every_denial()
            .iter()
            .filter(|d| matches!(d.status().as_u16(), 429 | 403))
            .map(reason_index)
            .collect();
        found.sort_unstable();
        found.dedup();
        assert_eq!(found, ALERTED_REASONS);
    }

    #[test]
    fn every_reason_label_is_the_denials_own_code() {
        let all = every_denial();
        assert_eq!(all.len(), REASONS.len());
        for d in &all {
            assert_eq!(REASONS[reason_index(d)], d.code());
        }
    }

    #[test]
    fn answers_are_counted_by_status_class_and_odd_statuses_are_ignored() {
        let c = RouteCells::default();
        for s in [101, 200, 204, 302, 404, 429, 503, 599, 0, 99, 600, 999] {
            c.answered(s);
        }
        assert_eq!(load(&c.status), [1, 2, 1, 2, 2]);
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let c = RouteCells::default();
        c.forwarded(200, Duration::from_millis(5));
        c.forwarded(200, Duration::from_micros(5_001));
        c.forwarded(200, Duration::from_secs(10));
        c.forwarded(200, Duration::from_secs(11));
        let b = load(&c.latency);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 1);
        assert_eq!(b[LATENCY_BOUNDS_US.len() - 1], 1);
        assert_eq!(b[LATENCY_BOUNDS_US.len()], 1);
        assert_eq!(b.iter().sum::<u64>(), 4);
        assert_eq!(
            c.latency_sum_us.load(Ordering::Relaxed),
            5_000 + 5_001 + 10_000_000 + 11_000_000
        );
        assert_eq!(load(&c.status), [0, 4, 0, 0, 0]);
    }

    #[test]
    fn refused_counts_an_answer_and_shadowed_does_not() {
        let c = RouteCells::default();
        c.refused(&Denial::Blocked);
        c.shadowed(&Denial::InvalidToken);
        assert_eq!(
            c.denials[reason_index(&Denial::Blocked)][0].load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            c.denials[reason_index(&Denial::InvalidToken)][1].load(Ordering::Relaxed),
            1
        );
        assert_eq!(load(&c.status), [0, 0, 0, 1, 0]);
    }

    #[test]
    fn a_reload_carries_cells_by_name_not_by_position() {
        let first = RouteMeters::new(&["events".into(), "gallery".into()], None);
        first.get(Some(1)).answered(200);
        first.get(None).answered(404);
        let second = RouteMeters::new(&["gallery".into(), "upload".into()], Some(&first));
        assert!(Arc::ptr_eq(second.get(Some(0)), first.get(Some(1))));
        assert!(!Arc::ptr_eq(second.get(Some(1)), first.get(Some(0))));
        assert!(Arc::ptr_eq(second.get(None), first.get(None)));
        // An id the table does not know falls to `other`, never out of bounds.
        assert!(Arc::ptr_eq(second.get(Some(7)), second.get(None)));
    }

    #[test]
    fn a_class_named_other_shares_the_other_series() {
        let m = RouteMeters::new(&["other".into(), "events".into()], None);
        assert!(Arc::ptr_eq(m.get(Some(0)), m.get(None)));
        let labels: Vec<&str> = m.rows().map(|(n, _)| n).collect();
        assert_eq!(labels, ["events", "other"]);
    }

    #[test]
    fn upstream_errors_count_only_upstream_failures() {
        let m = Metrics::default();
        m.upstream_failed(&Denial::UpstreamUnavailable);
        m.upstream_failed(&Denial::UpstreamTimeout);
        m.upstream_failed(&Denial::UpstreamTimeout);
        m.upstream_failed(&Denial::PayloadTooLarge);
        assert_eq!(load(&m.upstream_errors), [1, 2]);
        m.reloaded(true);
        m.reloaded(false);
        m.reloaded(false);
        assert_eq!(load(&m.reloads), [1, 2]);
    }
}
