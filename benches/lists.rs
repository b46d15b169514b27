//! Question: can the shield load a 1,000,000-line blocklist fast enough for a reload (target:
//! well under 2 s), and does a lookup in it stay under 200 ns, hit or miss? And what does a
//! revoked-token check cost, given that the request's token is hashed with SHA-256?
//! Baseline: a naive linear scan over 10,000 entries (what a first draft does: test each network
//! in turn, keep the most specific unexpired match), and for tokens the empty list (no hashing).
//!
//! Second question (`cidr_table`): would a CIDR crate serve as fast as the hand-written table?
//! The crate (`prefix-trie`, a longest-prefix-match trie) is measured doing less than the list
//! does: its build takes networks already parsed, and its lookup ignores expiry (the list finds
//! the most specific entry *in force*, which a trie would have to walk the covering prefixes
//! for). So its figures are a floor for a list built on it.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipnet::IpNet;
use joinshield::policy::lists::{Entry, IpList, TokenList};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: i64 = 1_780_000_000;

/// A blocklist file of `n` lines: mostly IPv4 /32 and /24, some IPv6 /48 and /64, a few
/// temporary entries with reasons, and some comments.
fn list_text(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::with_capacity(n * 32);
    text.push_str("# generated blocklist\n");
    for _ in 0..n {
        let kind = rng.random_range(0..100);
        let line = if kind < 70 {
            format!("{}", Ipv4Addr::from(rng.random::<u32>()))
        } else if kind < 95 {
            format!("{}/24", Ipv4Addr::from(rng.random::<u32>() & 0xffff_ff00))
        } else if kind < 98 {
            let a = rng.random::<u128>() & !((1u128 << 80) - 1);
            format!("{}/48", Ipv6Addr::from(a))
        } else {
            let a = rng.random::<u128>() & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(a))
        };
        text.push_str(&line);
        if rng.random_range(0..100) < 5 {
            text.push_str("  until=2026-11-28T06:00:00Z  reason=\"SEV-2 token scraping\"");
        }
        text.push('\n');
    }
    text
}

/// The baseline: test every entry, keep the most specific one in force.
fn naive(entries: &[(IpNet, Entry)], ip: IpAddr, now: i64) -> Option<(IpNet, &Entry)> {
    let ip = joinshield::policy::client_ip::canonical(ip);
    entries
        .iter()
        .filter(|(n, e)| n.contains(&ip) && e.until.is_none_or(|u| u > now))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(n, e)| (*n, e))
}

/// An address inside `net` (a random host part).
fn inside(net: IpNet, rng: &mut StdRng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = rng.random::<u32>() & !u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
        }
        IpNet::V6(n) => {
            let host = rng.random::<u128>() & !u128::from(n.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
        }
    }
}

/// `count` addresses that hit (inside listed networks) and `count` that miss.
fn probes(list: &IpList, count: usize, seed: u64) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let nets: Vec<IpNet> = list.iter().map(|(n, _)| n).collect();
    let mut hits = Vec::with_capacity(count);
    while hits.len() < count {
        let net = nets[rng.random_range(0..nets.len())];
        let ip = inside(net, &mut rng);
        if list.lookup(ip, NOW).is_some() {
            hits.push(ip);
        }
    }
    let mut misses = Vec::with_capacity(count);
    while misses.len() < count {
        let ip = if rng.random_range(0..10) == 0 {
            IpAddr::V6(Ipv6Addr::from(rng.random::<u128>()))
        } else {
            IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
        };
        if list.lookup(ip, NOW).is_none() {
            misses.push(ip);
        }
    }
    (hits, misses)
}

fn bench_ip(c: &mut Criterion) {
    let big_text = list_text(1_000_000, 7);
    let file = Path::new("blocklist.txt");

    let mut build = c.benchmark_group("ip_list_build");
    build.sample_size(10);
    build.bench_function("parse_1m_lines", |b| {
        b.iter(|| IpList::parse(black_box(&big_text), file).map(|l| l.len()))
    });
    build.finish();

    let Ok(big) = IpList::parse(&big_text, file) else {
        panic!("the generated list parses");
    };
    let Ok(small) = IpList::parse(&list_text(10_000, 8), file) else {
        panic!("the generated list parses");
    };
    let small_entries: Vec<(IpNet, Entry)> = small.iter().map(|(n, e)| (n, e.clone())).collect();

    let mut group = c.benchmark_group("ip_lookup");
    for (name, list) in [("1m", &big), ("10k", &small)] {
        let (hits, misses) = probes(list, 4096, 9);
        for (kind, addrs) in [("hit", &hits), ("miss", &misses)] {
            let mut i = 0;
            group.bench_function(format!("indexed_{name}_{kind}"), |b| {
                b.iter(|| {
                    i = (i + 1) % addrs.len();
                    list.lookup(black_box(addrs[i]), NOW).map(|(n, _)| n)
                })
            });
        }
    }
    let (hits, misses) = probes(&small, 4096, 10);
    for (kind, addrs) in [("hit", &hits), ("miss", &misses)] {
        let mut i = 0;
        group.bench_function(format!("naive_scan_10k_{kind}"), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                naive(&small_entries, black_box(addrs[i]), NOW).map(|(n, _)| n)
            })
        });
    }
    group.finish();
}

/// Both address families' tries, valued by entry index: what a list on `prefix-trie` would hold.
struct Tries {
    v4: prefix_trie::PrefixMap<ipnet::Ipv4Net, u32>,
    v6: prefix_trie::PrefixMap<ipnet::Ipv6Net, u32>,
}

fn tries(nets: &[IpNet]) -> Tries {
    let mut t = Tries {
        v4: prefix_trie::PrefixMap::new(),
        v6: prefix_trie::PrefixMap::new(),
    };
    for (i, net) in nets.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        match net {
            IpNet::V4(n) => {
                t.v4.insert(*n, i);
            }
            IpNet::V6(n) => {
                t.v6.insert(*n, i);
            }
        }
    }
    t
}

fn trie_lookup(t: &Tries, ip: IpAddr) -> Option<u32> {
    match joinshield::policy::client_ip::canonical(ip) {
        IpAddr::V4(a) => t.v4.get_lpm(&ipnet::Ipv4Net::from(a)).map(|(_, &i)| i),
        IpAddr::V6(a) => t.v6.get_lpm(&ipnet::Ipv6Net::from(a)).map(|(_, &i)| i),
    }
}

fn bench_cidr_crate(c: &mut Criterion) {
    let Ok(big) = IpList::parse(&list_text(1_000_000, 7), Path::new("blocklist.txt")) else {
        panic!("the generated list parses");
    };
    let entries: Vec<(IpNet, Entry)> = big.iter().map(|(n, e)| (n, e.clone())).collect();
    let nets: Vec<IpNet> = entries.iter().map(|(n, _)| *n).collect();
    let trie = tries(&nets);
    let (hits, misses) = probes(&big, 4096, 9);

    let mut build = c.benchmark_group("cidr_table_build_1m");
    build.sample_size(10);
    build.bench_function("hand_written", |b| {
        b.iter_batched(
            || entries.clone(),
            |e| IpList::from_entries(e).map(|l| l.networks()),
            BatchSize::LargeInput,
        )
    });
    build.bench_function("prefix_trie", |b| {
        b.iter(|| {
            let t = tries(black_box(&nets));
            t.v4.len() + t.v6.len()
        })
    });
    build.finish();

    let mut group = c.benchmark_group("cidr_table_lookup_1m");
    for (kind, addrs) in [("hit", &hits), ("miss", &misses)] {
        let mut i = 0;
        group.bench_function(format!("hand_written_{kind}"), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                big.lookup(black_box(addrs[i]), NOW).map(|(n, _)| n)
            })
        });
        let mut i = 0;
        group.bench_function(format!("prefix_trie_{kind}"), |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                trie_lookup(&trie, black_box(addrs[i]))
            })
        });
    }
    group.finish();
}

fn bench_tokens(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(11);
    let tokens: Vec<String> = (0..10_000)
        .map(|_| {
            (0..32)
                .map(|_| {
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                })
                .collect()
        })
        .collect();
    let text = tokens.join("\n");
    let Ok(list) = TokenList::parse(&text, Path::new("revoked-tokens.txt")) else {
        panic!("the generated list parses");
    };
    let empty = TokenList::empty();
    let miss = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
    let hit = tokens[1234].as_str();
    let mut group = c.benchmark_group("token_lookup");
    group.bench_function("empty_list", |b| {
        b.iter(|| empty.lookup(black_box(hit), NOW).is_some())
    });
    group.bench_function("10k_hit", |b| {
        b.iter(|| list.lookup(black_box(hit), NOW).is_some())
    });
    group.bench_function("10k_miss", |b| {
        b.iter(|| list.lookup(black_box(miss), NOW).is_some())
    });
    group.finish();
}

criterion_group!(benches, bench_ip, bench_cidr_crate, bench_tokens);
criterion_main!(benches);
