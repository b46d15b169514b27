//! Question: what do the ban check (on every request) and the failed-token count (on every
//! failed guess) cost? Targets: the ban check under 100 ns with no bans and with 10,000 bans;
//! counting a failure under 1 µs with 100,000 clients tracked. Baselines: the obvious first
//! implementations, a linear scan of a `Vec<IpNet>` for the ban check and a
//! `Mutex<HashMap<String, HashSet<String>>>` of raw addresses and raw tokens for the count.

// A benchmark times itself with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ipnet::{IpNet, Ipv4Net};
use joinshield::policy::bans::Bans;
use joinshield::policy::client_ip::ClientKey;
use joinshield::policy::guessing::{EnumerationSettings, FailureCounter, Offence, OffenceKind};

const NOW: i64 = 1_795_802_400;

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// 10,000 bans shaped like an attack's: client /32s, /24s, IPv6 /64s and /48s.
fn ten_thousand_bans() -> (Bans, Vec<IpNet>) {
    let bans = Bans::new();
    let mut nets = Vec::new();
    for n in 0..10_000u32 {
        let net: IpNet = match n % 4 {
            0 => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + n * 7), 32).unwrap()),
            1 => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x6400_0000 + (n << 8)), 24).unwrap()),
            2 => format!("2001:db8:{:x}:{:x}::/64", n >> 4, n)
                .parse()
                .unwrap(),
            _ => format!("2001:db9:{n:x}::/48").parse().unwrap(),
        };
        let offence = Offence {
            net,
            distinct_tokens: 20,
            kind: OffenceKind::Client,
        };
        bans.ban_offence(
            &offence,
            Duration::from_secs(900),
            Duration::from_secs(86_400),
            NOW,
        );
        nets.push(net);
    }
    (bans, nets)
}

fn bench_lookup(c: &mut Criterion) {
    let empty = Bans::new();
    let (full, nets) = ten_thousand_bans();
    let client = v4(0xcb00_7107); // 203.0.113.7: not banned
    let banned = v4(0x0a00_0000 + 700); // one of the /32 bans
    let client6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 1, 0, 0, 0, 1));

    let mut g = c.benchmark_group("ban_lookup");
    g.bench_function("no_bans", |b| {
        b.iter(|| empty.lookup(black_box(client), NOW))
    });
    g.bench_function("10k_bans_miss_v4", |b| {
        b.iter(|| full.lookup(black_box(client), NOW))
    });
    g.bench_function("10k_bans_hit_v4", |b| {
        b.iter(|| full.lookup(black_box(banned), NOW))
    });
    g.bench_function("10k_bans_miss_v6", |b| {
        b.iter(|| full.lookup(black_box(client6), NOW))
    });
    g.bench_function("baseline_scan_10k_miss_v4", |b| {
        b.iter(|| {
            nets.iter()
                .find(|n| n.contains(&black_box(client)))
                .copied()
        })
    });
    g.finish();
}

struct NaiveCounter {
    map: Mutex<HashMap<String, HashSet<String>>>,
}

impl NaiveCounter {
    fn record(&self, client: &str, token: &str) -> bool {
        let mut map = self.map.lock().unwrap();
        let set = map.entry(client.to_owned()).or_default();
        set.insert(token.to_owned());
        set.len() >= 20
    }
}

fn bench_record(c: &mut Criterion) {
    // The shipped thresholds: the distinct-token run fires (and resets) every 20th call, as a
    // guesser's would.
    let settings = EnumerationSettings::default();
    let counter = FailureCounter::new(100_000, 10_000);
    let start = Instant::now();
    let naive = NaiveCounter {
        map: Mutex::new(HashMap::new()),
    };
    // 100,000 clients tracked, one failure each.
    for n in 0..100_000u32 {
        let ip = v4(0x0a00_0000 + n * 3);
        counter.record(
            &settings,
            ClientKey::new(ip, 64),
            ip,
            "warm-up-token",
            start,
            64,
        );
        naive.record(&ip.to_string(), "warm-up-token");
    }
    let tokens: Vec<String> = (0..1024)
        .map(|i| format!("guess-{i:06}-AbCdEfGh"))
        .collect();
    let ip = v4(0x0a00_0000 + 3 * 4242);
    let key = ClientKey::new(ip, 64);
    let ip_text = ip.to_string();

    let mut g = c.benchmark_group("failure_record");
    let mut i = 0usize;
    g.bench_function("distinct_tokens_100k_tracked", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            counter.record(&settings, key, black_box(ip), &tokens[i], start, 64)
        })
    });
    let mut n = 0u32;
    g.bench_function("rotating_clients_100k_tracked", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let ip = v4(0x0a00_0000 + (n % 100_000) * 3);
            counter.record(
                &settings,
                ClientKey::new(ip, 64),
                ip,
                "some-token",
                start,
                64,
            )
        })
    });
    let mut j = 0usize;
    g.bench_function("baseline_mutex_hashmap_strings", |b| {
        b.iter(|| {
            j = (j + 1) % tokens.len();
            naive.record(black_box(&ip_text), &tokens[j])
        })
    });
    g.finish();
}

criterion_group!(benches, bench_lookup, bench_record);
criterion_main!(benches);
