//! Question: what does recording a denial in the recent-denials ring and the offender counters
//! cost the request path, alone and with 8 threads denying at once, and what does counting an
//! answered request cost? Target: under 1 µs a denial, also when every denial comes from a new
//! address (a flood that keeps evicting heavy-hitter counters), and a few nanoseconds a request.
//! Baseline: the obvious first implementation, one `Mutex<VecDeque<String>>` of serialized lines
//! capped at the same size plus one `Mutex<HashMap<IpAddr, u64>>` of unbounded counts.

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Method};
use joinshield::policy::denial::Denial;
use joinshield::policy::limits::Exceeded;
use joinshield::telemetry::denial_line::Seen;
use joinshield::telemetry::recent::{Recent, RING_CAPACITY, TOP_COUNTERS};
use joinshield::units::Rate;

const TOKEN: &str = "abc123XYZ789def456";
const PATH: &str = "/api/v1/gallery/abc123XYZ789def456/photos";
const NOW_MS: i64 = 1_795_802_400_000;
const THREADS: usize = 8;

fn denial() -> Denial {
    Denial::RateLimited(Exceeded {
        name: "guest-ip".into(),
        retry_after: Duration::from_millis(29_200),
        rate: Rate {
            count: 300,
            per: Duration::from_secs(60),
        },
        burst: 100,
    })
}

fn seen<'a>(ip: IpAddr, id: &'a HeaderValue) -> Seen<'a> {
    Seen {
        ip,
        client_key: 7,
        route: Some("gallery"),
        token: Some(TOKEN),
        method: &Method::GET,
        path: PATH,
        request_id: id,
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// The baseline: one lock for the ring, one for the counts.
#[derive(Default)]
struct Naive {
    lines: Mutex<VecDeque<String>>,
    counts: Mutex<HashMap<IpAddr, u64>>,
}

impl Naive {
    fn record(&self, ip: IpAddr, id: &HeaderValue) {
        let line = serde_json::json!({
            "reason": "token_rate_limited", "ip": ip, "token": "abc123...",
            "route": "gallery", "method": "GET",
            "path": joinshield::telemetry::log::redact_path(PATH, TOKEN, 6),
            "limit": "guest-ip", "retry_after": 30,
            "request_id": String::from_utf8_lossy(id.as_bytes()),
        })
        .to_string();
        {
            let mut lines = self.lines.lock().unwrap();
            if lines.len() == RING_CAPACITY {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        *self.counts.lock().unwrap().entry(ip).or_default() += 1;
    }
}

fn bench(c: &mut Criterion) {
    let id = HeaderValue::from_static("0f6c1f6e-4a1e-4d6e-9d57-0d1f5a9c2b11");
    let d = denial();
    let mut g = c.benchmark_group("recent");
    g.measurement_time(Duration::from_secs(3));

    let recent = Recent::new(RING_CAPACITY, TOP_COUNTERS);
    let mut n = 0u32;
    g.bench_function("denial_from_100_clients", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let s = seen(v4(0xC633_6400 + n % 100), &id);
            recent.record_denial(black_box(&d), &s, false, 6, false, NOW_MS);
        })
    });
    let flood = Recent::new(RING_CAPACITY, TOP_COUNTERS);
    g.bench_function("denial_flood_of_new_addresses", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let s = seen(v4(n.wrapping_mul(2_654_435_761)), &id);
            flood.record_denial(black_box(&d), &s, false, 6, false, NOW_MS);
        })
    });
    let naive = Naive::default();
    g.bench_function("baseline_denial_from_100_clients", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            naive.record(v4(0xC633_6400 + n % 100), &id);
        })
    });
    g.bench_function("request_answered", |b| {
        b.iter(|| recent.record_answer(black_box(true), true, 200, None, NOW_MS))
    });

    // Eight threads denying at once: the time per denial, all threads together.
    let shared = Arc::new(Recent::new(RING_CAPACITY, TOP_COUNTERS));
    g.bench_function("denial_8_threads_per_denial", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(THREADS as u64);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..THREADS {
                    let r = shared.clone();
                    let d = d.clone();
                    let id = id.clone();
                    scope.spawn(move || {
                        for i in 0..per {
                            let ip = v4(0x0a00_0000 + (t as u32) * 1_000_000 + (i % 1000) as u32);
                            r.record_denial(&d, &seen(ip, &id), false, 6, false, NOW_MS);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let naive = Arc::new(Naive::default());
    g.bench_function("baseline_8_threads_per_denial", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(THREADS as u64);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..THREADS {
                    let r = naive.clone();
                    let id = id.clone();
                    scope.spawn(move || {
                        for i in 0..per {
                            let ip = v4(0x0a00_0000 + (t as u32) * 1_000_000 + (i % 1000) as u32);
                            r.record(ip, &id);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
