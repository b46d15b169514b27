//! Question: what do the metrics add to a forwarded request (answer by status class plus one
//! upstream latency observation) and to a denial, single-threaded and with 8 threads on one
//! route? Target: well under 100 ns uncontended. Baseline: prometheus-client's own families,
//! `Family::get_or_create` plus `Histogram::observe` and `Counter::inc`, the obvious first
//! implementation (a read lock per lookup and a lock per observation).

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use joinshield::policy::denial::Denial;
use joinshield::telemetry::meters::RouteMeters;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

type Labels = Vec<(&'static str, &'static str)>;

fn baseline() -> (Family<Labels, Counter>, Family<Labels, Histogram>) {
    let requests = Family::<Labels, Counter>::default();
    let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.005, 2.5, 11))
    });
    (requests, latency)
}

fn bench(c: &mut Criterion) {
    let meters = RouteMeters::new(&["events".into(), "gallery".into()], None);
    let d = Duration::from_millis(12);
    c.bench_function("atomics: forwarded", |b| {
        b.iter(|| meters.get(black_box(Some(1))).forwarded(200, black_box(d)))
    });
    c.bench_function("atomics: refused", |b| {
        b.iter(|| {
            meters
                .get(black_box(Some(1)))
                .refused(black_box(&Denial::Blocked))
        })
    });
    let (requests, latency) = baseline();
    c.bench_function("prometheus-client families: forwarded", |b| {
        b.iter(|| {
            requests
                .get_or_create(&vec![("route", "gallery"), ("status_class", "2xx")])
                .inc();
            latency
                .get_or_create(&vec![("route", "gallery")])
                .observe(black_box(d).as_secs_f64());
        })
    });

    // Eight threads hammering one route: the contended case under a flood.
    const THREADS: usize = 8;
    let meters = Arc::new(meters);
    c.bench_function("atomics: forwarded, 8 threads, per call", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let m = meters.clone();
                    s.spawn(move || {
                        for _ in 0..iters {
                            m.get(Some(1)).forwarded(200, d);
                        }
                    });
                }
            });
            start.elapsed() / THREADS as u32
        })
    });
    let base = Arc::new(baseline());
    c.bench_function(
        "prometheus-client families: forwarded, 8 threads, per call",
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..THREADS {
                        let base = base.clone();
                        s.spawn(move || {
                            for _ in 0..iters {
                                base.0
                                    .get_or_create(&vec![
                                        ("route", "gallery"),
                                        ("status_class", "2xx"),
                                    ])
                                    .inc();
                                base.1
                                    .get_or_create(&vec![("route", "gallery")])
                                    .observe(d.as_secs_f64());
                            }
                        });
                    }
                });
                start.elapsed() / THREADS as u32
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
