//! The `/metrics` scrape: everything is read here, at scrape time, into one value (`Sample`):
//! the per-route cells of the snapshot, the counters that belong to no route, limiter tables,
//! bans, the version, list sizes, the alerts, TLS and the cluster. It goes to one of
//! prometheus-client's text encoders as a custom collector: the Prometheus text format 0.0.4 by
//! default, OpenMetrics 1.0 when the scraper's `Accept` asks.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::admin::Parts;
use crate::telemetry::meters::{
    load, CONNECTION_REFUSALS, DROPPED_HEADERS, LATENCY_BOUNDS_US, LISTENERS, MODES, PROTOCOLS,
    REASONS, REFUSED_BY_HTTP, RELOAD_RESULTS, STATUS_CLASSES, UPSTREAM_ERRORS,
};

/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    /// What it counts by (`ip`, `net`, `token`).
    key: &'static str,
    /// `enforce` or `shadow`.
    mode: &'static str,
    stats: crate::policy::limits::LimiterStats,
}

/// Everything `/metrics` shows, read at one scrape (each value atomically, not all together).
#[derive(Debug)]
struct Sample {
    routes: Vec<RouteSample>,
    limits: Vec<LimitSample>,
    upstream_errors: [u64; 2],
    reloads: [u64; 2],
    refused_by_http: [u64; 3],
    connections: ConnectionSample,
    headers_dropped: [u64; 2],
    bans: usize,
    version: u64,
    lists: [(&'static str, usize); 3],
    log_dropped: u64,
    /// With the access log on: its records dropped.
    access_dropped: Option<u64>,
    alerts: [[u64; 3]; 3],
    tls: Option<TlsSample>,
    /// With `[cluster]`: fallback on, errors by kind, replicas alive.
    cluster: Option<(bool, [u64; 3], usize)>,
}

/// The guest connections' counts, read at scrape time.
#[derive(Debug)]
struct ConnectionSample {
    open: [[u64; PROTOCOLS.len()]; LISTENERS.len()],
    refused: [u64; CONNECTION_REFUSALS.len()],
    idle_closed: u64,
    lingering: u64,
    linger_skipped: u64,
}

/// The HTTPS listener's counts and the certificate in force, read at scrape time.
#[derive(Debug)]
struct TlsSample {
    done: u64,
    failed: [u64; 4],
    not_after: Option<i64>,
}

impl Sample {
    fn read(shared: &Parts) -> Sample {
        let snap = shared.snapshots.load();
        let meters = &shared.telemetry.meters;
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
            .rules
            .limits
            .iter()
            .map(|l| LimitSample {
                // A temporary stand-in and the permanent limit it replaces share a name; their
                // tables are two series.
                limit: if l.stands_in {
                    format!("{}:temporary", l.name)
                } else {
                    l.name.to_string()
                },
                key: l.key.as_str(),
                mode: match l.mode {
                    crate::policy::limits::Mode::Enforce => MODES[0],
                    crate::policy::limits::Mode::Shadow => MODES[1],
                },
                stats: l.limiter.stats(),
            })
            .collect();
        let lists = &snap.loaded.lists;
        Sample {
            routes,
            limits,
            upstream_errors: load(&meters.upstream_errors),
            reloads: load(&meters.reloads),
            refused_by_http: load(&meters.refused_by_http),
            connections: {
                let c = &meters.connections;
                ConnectionSample {
                    open: std::array::from_fn(|i| load(&c.open[i])),
                    refused: load(&c.refused),
                    idle_closed: c.idle_closed.load(Ordering::Relaxed),
                    lingering: c.lingering.load(Ordering::Relaxed),
                    linger_skipped: c.linger_skipped.load(Ordering::Relaxed),
                }
            },
            headers_dropped: load(&meters.headers_dropped),
            bans: shared.defence.bans.len(),
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
            log_dropped: shared.telemetry.log.dropped(),
            access_dropped: shared.telemetry.access.as_ref().map(|a| a.dropped()),
            alerts: shared.alerts.outcomes(),
            tls: shared.tls_port.map(|_| TlsSample {
                done: meters.tls.done.load(Ordering::Relaxed),
                failed: load(&meters.tls.failed),
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
        counters(
            e,
            "joinshield_request_headers_dropped",
            "Request headers not forwarded for their name: underscore (PHP would read X_Real_Ip as X-Real-IP), invalid_name (another byte that is not a letter, digit or '-').",
            DROPPED_HEADERS
                .iter()
                .zip(self.headers_dropped)
                .map(|(reason, n)| (vec![("reason", *reason)], n)),
        )?;
        gauges(
            e,
            "joinshield_limit_info",
            "Each limit in force (always 1): what it counts by (ip, net, token) and its mode.",
            self.limits.iter().map(|l| {
                (
                    vec![
                        ("limit", l.limit.as_str()),
                        ("key", l.key),
                        ("mode", l.mode),
                    ],
                    1,
                )
            }),
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
            "Keys pushed out of each limit's full table (max_keys) to make room for new ones while their bucket was still refilling.",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.evicted)),
        )?;
        counters(
            e,
            "joinshield_limiter_pruned",
            "Idle keys (bucket refilled) dropped from each limit's table by the janitor.",
            self.limits
                .iter()
                .map(|l| (vec![("limit", l.limit.as_str())], l.stats.pruned)),
        )?;
        gauges(
            e,
            "joinshield_connections_open",
            "Guest connections open, by listener (http, https) and protocol (handshake: TLS not yet done; http1).",
            LISTENERS.iter().zip(&self.connections.open).flat_map(|(listener, row)| {
                PROTOCOLS
                    .iter()
                    .zip(row)
                    // The plain listener has no handshake.
                    .filter(move |(protocol, _)| !(*listener == "http" && **protocol == "handshake"))
                    .map(move |(protocol, n)| (vec![("listener", *listener), ("protocol", *protocol)], *n))
            }),
        )?;
        counters(
            e,
            "joinshield_connections_refused",
            "New guest connections closed at once: per_ip (the client had max_connections_per_ip open), max (max_connections open, none idle to close).",
            CONNECTION_REFUSALS
                .iter()
                .zip(self.connections.refused)
                .map(|(reason, n)| (vec![("reason", *reason)], n)),
        )?;
        counters(
            e,
            "joinshield_connections_idle_closed",
            "Idle keep-alive connections closed to make room for new ones at max_connections.",
            [(vec![], self.connections.idle_closed)],
        )?;
        gauges(
            e,
            "joinshield_connections_lingering",
            "Connections reading and discarding an unread request body after an early answer, before they close.",
            [(vec![], self.connections.lingering)],
        )?;
        counters(
            e,
            "joinshield_connections_linger_skipped",
            "Connections closed without lingering because the lingering bound (a quarter of max_connections) was reached.",
            [(vec![], self.connections.linger_skipped)],
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
        if let Some(dropped) = self.access_dropped {
            counters(
                e,
                "joinshield_access_log_records_dropped",
                "Access log records dropped because the access log queue was full.",
                [(vec![], dropped)],
            )?;
        }
        counters(
            e,
            "joinshield_alerts",
            "Alerts raised, by kind and what became of them (sent: the webhook answered 2xx; failed: it did not, or not in time; dropped: the queue to it was full).",
            crate::telemetry::alerts::KINDS.iter().flat_map(|kind| {
                crate::telemetry::alerts::RESULTS
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
                crate::telemetry::meters::FAILURE_REASONS
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

/// The text exposition of the shield's metrics in `format`.
pub(crate) fn render(shared: &Parts, format: Format) -> String {
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
pub(crate) fn respond(shared: &Parts, accept: Option<&HeaderValue>) -> Response<Full<Bytes>> {
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
    use crate::telemetry::meters::RouteCells;
    use std::time::Duration;

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
            access_dropped: Some(2),
            alerts: [[0; 3]; 3],
            refused_by_http: [0; 3],
            connections: ConnectionSample {
                open: [[0, 2], [1, 3]],
                refused: [5, 6],
                idle_closed: 7,
                lingering: 1,
                linger_skipped: 0,
            },
            headers_dropped: [2, 0],
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
            "joinshield_access_log_records_dropped_total 2",
            "joinshield_tls_handshakes_total 7",
            "joinshield_tls_handshake_failures_total{reason=\"not_tls\"} 1",
            "joinshield_tls_handshake_failures_total{reason=\"protocol\"} 4",
            "joinshield_tls_certificate_expiry_timestamp_seconds 1800000000",
            "joinshield_connections_open{listener=\"http\",protocol=\"http1\"} 2",
            "joinshield_connections_open{listener=\"https\",protocol=\"handshake\"} 1",
            "joinshield_connections_open{listener=\"https\",protocol=\"http1\"} 3",
            "joinshield_connections_refused_total{reason=\"per_ip\"} 5",
            "joinshield_connections_refused_total{reason=\"max\"} 6",
            "joinshield_connections_idle_closed_total 7",
            "joinshield_connections_lingering 1",
            "joinshield_request_headers_dropped_total{reason=\"underscore\"} 2",
            "joinshield_request_headers_dropped_total{reason=\"invalid_name\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // No denial happened: no denial series, only the family's header.
        assert!(!text.contains("joinshield_denials_total{"));
    }

    #[test]
    fn each_limit_is_named_with_its_key_kind_and_mode() {
        let stats = crate::policy::key_table::TableStats {
            keys: 3,
            cap: 10,
            evicted: 0,
            pruned: 0,
        };
        let limit = |limit: &str, key, mode| LimitSample {
            limit: limit.into(),
            key,
            mode,
            stats,
        };
        let text = encode(
            Sample {
                limits: vec![
                    limit("guest-net", "net", "enforce"),
                    limit("trial", "token", "shadow"),
                ],
                ..sample()
            },
            Format::Prometheus,
        );
        for line in [
            "joinshield_limit_info{limit=\"guest-net\",key=\"net\",mode=\"enforce\"} 1",
            "joinshield_limit_info{limit=\"trial\",key=\"token\",mode=\"shadow\"} 1",
            "joinshield_limiter_keys{limit=\"guest-net\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
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
