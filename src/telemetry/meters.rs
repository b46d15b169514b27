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
//! **Everything else is read at scrape time**: limiter tables, bans, the version and list sizes
//! come from the snapshot and [`Shared`]; [`render`] gathers them with the counters into one
//! value and hands it to one of prometheus-client's text encoders as a custom collector: the
//! Prometheus text format 0.0.4 by default, OpenMetrics 1.0 when the scraper's `Accept` asks.
//!
//! Label values come only from fixed sets: route class names of the configuration (or `other`),
//! [`Denial::code`], `1xx`..`5xx`, limit and list names, and a few fixed words. Never an IP, a
//! token or a raw path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::classify::ClassId;
use crate::deny::Denial;
use crate::server::Shared;

/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `mode` labels: index 0 enforced (the guest got the denial), 1 shadow (logged only).
const MODES: [&str; 2] = ["enforce", "shadow"];

/// The `kind` labels of upstream errors.
const UPSTREAM_ERRORS: [&str; 2] = ["unavailable", "timeout"];

/// The `reason` labels of requests hyper refused before the shield saw them, by
/// [`Metrics::connection_failed`] index.
pub const REFUSED_BY_HTTP: [&str; 3] = ["malformed", "head_too_large", "header_timeout"];

/// The `result` labels of reloads.
const RELOAD_RESULTS: [&str; 2] = ["applied", "rejected"];

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
    status: [AtomicU64; 5],
    /// Denials by [`REASONS`] index and [`MODES`] index.
    denials: [[AtomicU64; 2]; REASONS.len()],
    /// Upstream latency: per-bucket (not cumulative) counts, the last one `+Inf`.
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of the observed latencies in microseconds.
    latency_sum_us: AtomicU64,
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
    fn rows(&self) -> impl Iterator<Item = (&str, &RouteCells)> {
        self.names
            .iter()
            .zip(&self.cells)
            .filter(|(name, _)| &***name != OTHER_ROUTE)
            .map(|(name, cells)| (&**name, &**cells))
            .chain(std::iter::once((OTHER_ROUTE, &*self.other)))
    }
}

/// Counters that belong to no route: kept in [`Shared`] for the life of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Upstream errors by [`UPSTREAM_ERRORS`] index.
    upstream_errors: [AtomicU64; 2],
    /// Reloads by [`RELOAD_RESULTS`] index.
    reloads: [AtomicU64; 2],
    /// Requests hyper refused, by [`REFUSED_BY_HTTP`] index.
    refused_by_http: [AtomicU64; 3],
    /// TLS handshakes, completed and failed.
    pub tls: crate::tls::HandshakeCounts,
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

    /// Counts a reload, applied or rejected.
    pub fn reloaded(&self, applied: bool) {
        self.reloads[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }
}

/// One route's counts, read at scrape time.
#[derive(Debug)]
struct RouteSample {
    route: String,
    status: [u64; 5],
    denials: [[u64; 2]; REASONS.len()],
    latency: [u64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_us: u64,
}

/// One limit's table, read at scrape time.
#[derive(Debug)]
struct LimitSample {
    limit: String,
    stats: crate::limits::LimiterStats,
}

/// Everything `/metrics` shows, read at one scrape (each value atomically, not all together).
#[derive(Debug)]
struct Sample {
    routes: Vec<RouteSample>,
    limits: Vec<LimitSample>,
    upstream_errors: [u64; 2],
    reloads: [u64; 2],
    refused_by_http: [u64; 3],
    bans: usize,
    version: u64,
    lists: [(&'static str, usize); 3],
    log_dropped: u64,
    alerts: [[u64; 3]; 3],
    tls: Option<TlsSample>,
    /// With `[cluster]`: fallback on, errors by kind, replicas alive.
    cluster: Option<(bool, [u64; 3], usize)>,
}

/// The HTTPS listener's counts and the certificate in force, read at scrape time.
#[derive(Debug)]
struct TlsSample {
    done: u64,
    failed: [u64; 4],
    not_after: Option<i64>,
}

fn load<const N: usize>(cells: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| cells[i].load(Ordering::Relaxed))
}

impl Sample {
    fn read(shared: &Shared) -> Sample {
        let snap = shared.snapshot.load();
        let routes = snap
            .meters
            .rows()
            .map(|(route, c)| RouteSample {
                route: route.to_string(),
                status: load(&c.status),
                denials: std::array::from_fn(|i| load(&c.denials[i])),
                latency: load(&c.latency),
                latency_sum_us: c.latency_sum_us.load(Ordering::Relaxed),
            })
            .collect();
        let limits = snap
            .limits
            .iter()
            .map(|l| LimitSample {
                limit: l.name.to_string(),
                stats: l.limiter.stats(),
            })
            .collect();
        let lists = &snap.loaded.lists;
        Sample {
            routes,
            limits,
            upstream_errors: load(&shared.metrics.upstream_errors),
            reloads: load(&shared.metrics.reloads),
            refused_by_http: load(&shared.metrics.refused_by_http),
            bans: shared.bans.len(),
            cluster: shared
                .cluster
                .as_ref()
                .map(|c| (!c.link.is_up(), c.link.errors(), c.replicas().len())),
            version: snap.version,
            lists: [
                ("blocklist", lists.blocklist.len()),
                ("allowlist", lists.allowlist.len()),
                ("revoked_tokens", lists.revoked.len()),
            ],
            log_dropped: shared.log.dropped(),
            alerts: shared.alerts.outcomes(),
            tls: shared.tls_port.map(|_| TlsSample {
                done: shared.metrics.tls.done.load(Ordering::Relaxed),
                failed: load(&shared.metrics.tls.failed),
                not_after: snap.loaded.tls.as_ref().map(|t| t.not_after),
            }),
        }
    }
}

/// Writes one counter family with a label per value.
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// Writes one gauge family with a label per value.
fn gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

impl Collector for Sample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        counters(
            e,
            "joinshield_requests",
            "Requests answered, by route class and status class.",
            self.routes.iter().flat_map(|r| {
                STATUS_CLASSES.iter().zip(r.status).map(|(class, n)| {
                    (
                        vec![("route", r.route.as_str()), ("status_class", *class)],
                        n,
                    )
                })
            }),
        )?;
        counters(
            e,
            "joinshield_denials",
            "Shield answers instead of the app (enforce) and would-be denials (shadow), by route class, reason and mode.",
            self.routes.iter().flat_map(|r| {
                REASONS.iter().zip(&r.denials).flat_map(move |(reason, modes)| {
                    MODES
                        .iter()
                        .zip(modes)
                        .filter(|(_, n)| **n > 0)
                        .map(move |(mode, n)| {
                            (
                                vec![
                                    ("route", r.route.as_str()),
                                    ("reason", *reason),
                                    ("mode", *mode),
                                ],
                                *n,
                            )
                        })
                })
            }),
        )?;
        {
            let mut family = e.encode_descriptor(
                "joinshield_upstream_latency",
                "Time from sending a request to the app to its response head, by route class.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for r in &self.routes {
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
                    .iter()
                    .map(|&us| us as f64 / 1e6)
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(r.latency)
                    .collect();
                let count = r.latency.iter().sum();
                let labels = [("route", r.route.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        r.latency_sum_us as f64 / 1e6,
                        count,
                        &buckets,
                        None,
                    )?;
            }
        }
        counters(
            e,
            "joinshield_upstream_errors",
            "Requests the app did not answer, by kind.",
            UPSTREAM_ERRORS
                .iter()
                .zip(self.upstream_errors)
                .map(|(kind, n)| (vec![("kind", *kind)], n)),
        )?;
        counters(
            e,
            "joinshield_http_refused",
            "Requests the HTTP layer refused before the shield's checks: malformed (400), head_too_large (431/414), header_timeout (closed).",
            REFUSED_BY_HTTP
                .iter()
                .zip(self.refused_by_http)
                .map(|(reason, n)| (vec![("reason", *reason)], n)),
        )?;
        gauges(
            e,
            "joinshield_limiter_keys",
            "Keys tracked by each limit's table.",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.keys as u64)),
        )?;
        gauges(
            e,
            "joinshield_limiter_key_capacity",
            "Most keys each limit's table holds (max_keys).",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.cap as u64)),
        )?;
        counters(
            e,
            "joinshield_limiter_evictions",
            "Idle keys pruned from each limit's table.",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.evicted)),
        )?;
        counters(
            e,
            "joinshield_limiter_overflow_hits",
            "Requests of untracked keys that found the limit's table full and shared its overflow bucket.",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.overflow_hits)),
        )?;
        gauges(
            e,
            "joinshield_bans_active",
            "Bans held (automatic and manual; ended ones until the janitor removes them).",
            [(vec![], self.bans as u64)],
        )?;
        counters(
            e,
            "joinshield_config_reloads",
            "Configuration reloads, by result.",
            RELOAD_RESULTS
                .iter()
                .zip(self.reloads)
                .map(|(result, n)| (vec![("result", *result)], n)),
        )?;
        gauges(
            e,
            "joinshield_config_version",
            "Version of the configuration in force (1 at start, +1 per applied reload).",
            [(vec![], self.version)],
        )?;
        gauges(
            e,
            "joinshield_list_entries",
            "Entries of each list in force.",
            self.lists
                .iter()
                .map(|(list, n)| (vec![("list", *list)], *n as u64)),
        )?;
        counters(
            e,
            "joinshield_log_records_dropped",
            "Log records dropped because the log queue was full.",
            [(vec![], self.log_dropped)],
        )?;
        counters(
            e,
            "joinshield_alerts",
            "Alerts raised, by kind and what became of them (sent: the webhook answered 2xx; failed: it did not, or not in time; dropped: the queue to it was full).",
            crate::alerts::KINDS.iter().flat_map(|kind| {
                crate::alerts::RESULTS
                    .iter()
                    .zip(self.alerts[kind.index()])
                    .map(|(result, n)| (vec![("kind", kind.name()), ("result", *result)], n))
            }),
        )?;
        if let Some(tls) = &self.tls {
            counters(
                e,
                "joinshield_tls_handshakes",
                "TLS handshakes completed on the HTTPS listener.",
                [(vec![], tls.done)],
            )?;
            counters(
                e,
                "joinshield_tls_handshake_failures",
                "TLS handshakes that did not complete, by reason (not_tls, timeout, closed, protocol).",
                crate::tls::FAILURE_REASONS
                    .iter()
                    .zip(tls.failed)
                    .map(|(reason, n)| (vec![("reason", *reason)], n)),
            )?;
            if let Some(not_after) = tls.not_after {
                let mut family = e.encode_descriptor(
                    "joinshield_tls_certificate_expiry_timestamp",
                    "When the certificate in force stops being valid (Unix time).",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?;
                let none: [(&str, &str); 0] = [];
                family.encode_family(&none)?.encode_gauge(&not_after)?;
            }
        }
        if let Some((fallback, errors, replicas)) = self.cluster {
            gauges(
                e,
                "joinshield_cluster_fallback",
                "1 while this replica decides on local state because Redis is unreachable, else 0.",
                [(vec![], u64::from(fallback))],
            )?;
            counters(
                e,
                "joinshield_cluster_errors",
                "Failed exchanges with Redis, by kind.",
                crate::cluster::ERROR_KINDS
                    .iter()
                    .zip(errors)
                    .map(|(kind, n)| (vec![("kind", *kind)], n)),
            )?;
            gauges(
                e,
                "joinshield_cluster_replicas",
                "Replicas alive at the last heartbeat (this one included).",
                [(vec![], replicas as u64)],
            )?;
        }
        Ok(())
    }
}

/// The text formats `/metrics` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4, the default (what `promtool check metrics` reads).
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format a scraper asks for with `accept` (Prometheus sends
    /// `application/openmetrics-text` first when it can read it).
    pub fn negotiate(accept: Option<&HeaderValue>) -> Format {
        let wants_openmetrics = accept
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/openmetrics-text"));
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The text exposition of `shared`'s metrics in `format`.
pub fn render(shared: &Shared, format: Format) -> String {
    encode(Sample::read(shared), format)
}

fn encode(sample: Sample, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sample));
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail, and the collector returns no errors of its own.
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    out
}

/// The `/metrics` answer, in the format `accept` asks for.
pub fn respond(shared: &Shared, accept: Option<&HeaderValue>) -> Response<Full<Bytes>> {
    let format = Format::negotiate(accept);
    let mut r = Response::new(Full::new(Bytes::from(render(shared, format))));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Exceeded;

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
                rate: crate::config::units::parse_rate("1/s").unwrap(),
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

    fn sample() -> Sample {
        let c = RouteCells::default();
        c.forwarded(200, Duration::from_millis(3));
        c.forwarded(200, Duration::from_millis(30));
        Sample {
            routes: vec![RouteSample {
                route: "events".into(),
                status: load(&c.status),
                denials: std::array::from_fn(|i| load(&c.denials[i])),
                latency: load(&c.latency),
                latency_sum_us: c.latency_sum_us.load(Ordering::Relaxed),
            }],
            limits: vec![],
            upstream_errors: [0, 1],
            reloads: [2, 0],
            bans: 3,
            version: 4,
            lists: [("blocklist", 5), ("allowlist", 0), ("revoked_tokens", 1)],
            log_dropped: 0,
            alerts: [[0; 3]; 3],
            refused_by_http: [0; 3],
            tls: Some(TlsSample {
                done: 7,
                failed: [1, 2, 3, 4],
                not_after: Some(1_800_000_000),
            }),
            cluster: None,
        }
    }

    #[test]
    fn cluster_families_appear_only_with_a_cluster() {
        assert!(!encode(sample(), Format::Prometheus).contains("joinshield_cluster"));
        let text = encode(
            Sample {
                cluster: Some((true, [4, 1, 0], 2)),
                ..sample()
            },
            Format::Prometheus,
        );
        for line in [
            "joinshield_cluster_fallback 1",
            "joinshield_cluster_errors_total{kind=\"timeout\"} 4",
            "joinshield_cluster_errors_total{kind=\"connection\"} 1",
            "joinshield_cluster_errors_total{kind=\"reply\"} 0",
            "joinshield_cluster_replicas 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_exposition_has_every_family_with_cumulative_buckets() {
        let text = encode(sample(), Format::OpenMetrics);
        for line in [
            "joinshield_requests_total{route=\"events\",status_class=\"2xx\"} 2",
            "joinshield_upstream_latency_seconds_bucket{le=\"0.005\",route=\"events\"} 1",
            "joinshield_upstream_latency_seconds_bucket{le=\"0.05\",route=\"events\"} 2",
            "joinshield_upstream_latency_seconds_bucket{le=\"+Inf\",route=\"events\"} 2",
            "joinshield_upstream_latency_seconds_count{route=\"events\"} 2",
            "joinshield_upstream_latency_seconds_sum{route=\"events\"} 0.033",
            "joinshield_upstream_errors_total{kind=\"timeout\"} 1",
            "joinshield_config_reloads_total{result=\"applied\"} 2",
            "joinshield_bans_active 3",
            "joinshield_config_version 4",
            "joinshield_list_entries{list=\"blocklist\"} 5",
            "joinshield_log_records_dropped_total 0",
            "joinshield_tls_handshakes_total 7",
            "joinshield_tls_handshake_failures_total{reason=\"not_tls\"} 1",
            "joinshield_tls_handshake_failures_total{reason=\"protocol\"} 4",
            "joinshield_tls_certificate_expiry_timestamp_seconds 1800000000",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // No denial happened: no denial series, only the family's header.
        assert!(!text.contains("joinshield_denials_total{"));
    }

    #[test]
    fn the_prometheus_format_names_counter_families_by_their_samples() {
        let text = encode(sample(), Format::Prometheus);
        assert!(text.contains("# TYPE joinshield_requests_total counter\n"));
        assert!(
            text.contains("joinshield_requests_total{route=\"events\",status_class=\"2xx\"} 2\n")
        );
        assert!(text.contains("# TYPE joinshield_upstream_latency_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_is_served_only_to_a_scraper_that_asks_for_it() {
        let prom = HeaderValue::from_static(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
        );
        assert_eq!(Format::negotiate(Some(&prom)), Format::OpenMetrics);
        let plain = HeaderValue::from_static("text/plain");
        assert_eq!(Format::negotiate(Some(&plain)), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::Prometheus.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
