//! Question: what does finding the client IP cost per request, and does the bounded right-to-left
//! walk stay flat when a client sends a huge `X-Forwarded-For`?
//! Baseline: a naive implementation that splits the whole header into a Vec of parsed addresses
//! first and then walks it (what a first draft typically does).

use std::net::IpAddr;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use joinshield::policy::client_ip::{client_ip, parse_entry, TrustedProxies};

fn naive(peer: IpAddr, header: &str, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = header
        .split(',')
        .map(|e| parse_entry(e.as_bytes()))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(*ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

fn bench(c: &mut Criterion) {
    let trusted = TrustedProxies::new(&[
        "127.0.0.1/32".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ]);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let untrusted_peer: IpAddr = "203.0.113.9".parse().unwrap();
    let short = "198.51.100.7, 10.0.0.2";
    let long = format!(
        "{}, 198.51.100.7, 10.0.0.2",
        vec!["6.6.6.6"; 5000].join(", ")
    );

    let mut g = c.benchmark_group("client_ip");
    g.bench_function("untrusted peer", |b| {
        b.iter(|| {
            client_ip(
                black_box(untrusted_peer),
                [short.as_bytes()].into_iter(),
                &trusted,
            )
        })
    });
    g.bench_function("two hops", |b| {
        b.iter(|| client_ip(black_box(peer), [short.as_bytes()].into_iter(), &trusted))
    });
    g.bench_function("two hops, naive", |b| {
        b.iter(|| naive(black_box(peer), black_box(short), &trusted))
    });
    g.bench_function("5000 hops", |b| {
        b.iter(|| client_ip(black_box(peer), [long.as_bytes()].into_iter(), &trusted))
    });
    g.bench_function("5000 hops, naive", |b| {
        b.iter(|| naive(black_box(peer), black_box(&long), &trusted))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
