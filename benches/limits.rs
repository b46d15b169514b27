//! Question: what does the rate-limit decision add to a request when 100,000 keys are tracked,
//! allowed and denied, and for a fresh key when the table is full (it evicts)? Target: under
//! 1 µs. Baseline: a Mutex<HashMap<String, _>> token bucket keyed by the raw token string, the
//! obvious first implementation.

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use joinshield::policy::client_ip::ClientKey;
use joinshield::policy::limits::{client_key_hash, token_hash, KeyedLimiter};
use joinshield::units::Rate;

struct NaiveBuckets {
    map: Mutex<HashMap<String, (f64, Instant)>>,
    per_sec: f64,
    burst: f64,
}

impl NaiveBuckets {
    fn check(&self, key: &str) -> bool {
        let mut map = self.map.lock().unwrap();
        let now = Instant::now();
        let e = map.entry(key.to_string()).or_insert((self.burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * self.per_sec).min(self.burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..100_000).map(|i| format!("load-{i:06}")).collect();
    let rate = Rate {
        count: 3000,
        per: Duration::from_secs(60),
    };
    let limiter: KeyedLimiter = KeyedLimiter::with_clock(
        rate,
        NonZeroU32::new(600).unwrap(),
        200_000,
        Default::default(),
    );
    let naive = NaiveBuckets {
        map: Mutex::new(HashMap::new()),
        per_sec: 50.0,
        burst: 600.0,
    };
    for k in &keys {
        let _ = limiter.check(token_hash(k));
        naive.check(k);
    }
    let hot: KeyedLimiter = {
        let l = KeyedLimiter::with_clock(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            NonZeroU32::MIN,
            10,
            Default::default(),
        );
        let _ = l.check(1);
        l
    };

    let mut g = c.benchmark_group("limit decision, 100k keys tracked");
    let mut i = 0usize;
    g.bench_function("allowed (hash + check)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(limiter.check(token_hash(black_box(&keys[i]))))
        })
    });
    g.bench_function("denied", |b| b.iter(|| black_box(hot.check(black_box(1)))));
    // A table of 100,000 keys, full: every fresh key pushes one out.
    let full: KeyedLimiter = KeyedLimiter::with_clock(
        rate,
        NonZeroU32::new(600).unwrap(),
        100_000,
        Default::default(),
    );
    for k in &keys {
        let _ = full.check(token_hash(k));
    }
    let mut fresh = 0u32;
    g.bench_function("fresh client, full table (hash + check, evicts)", |b| {
        b.iter(|| {
            fresh = fresh.wrapping_add(1);
            let key = ClientKey::V4(black_box(fresh));
            black_box(full.check(client_key_hash(key)))
        })
    });
    let mut j = 0usize;
    g.bench_function("naive mutex hashmap", |b| {
        b.iter(|| {
            j = (j + 7919) % keys.len();
            black_box(naive.check(black_box(&keys[j])))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
