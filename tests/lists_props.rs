//! Properties of the list index that must hold for every list and address: a lookup equals a
//! naive scan (most specific network in force), IPv4 and IPv6, mapped forms included; and
//! parsing the text the list was written from gives the same lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use joinshield::policy::client_ip::canonical;
use joinshield::policy::lists::{ip_diff, Entry, IpList};
use proptest::prelude::*;

/// The baseline: every entry in force containing the address; the longest prefix wins.
fn naive(entries: &[(IpNet, Option<i64>)], ip: IpAddr, now: i64) -> Option<u8> {
    let ip = canonical(ip);
    entries
        .iter()
        .filter(|(n, until)| n.contains(&ip) && until.is_none_or(|u| u > now))
        .map(|(n, _)| n.prefix_len())
        .max()
}

/// IPv4 addresses drawn from a small space (10.0.0.0/20 and a few extremes) so that networks
/// nest and collide often.
fn v4_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => (0u32..4096).prop_map(|x| 0x0a00_0000 | x),
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        8 => (0u128..4096).prop_map(|x| (0x2001_0db8u128 << 96) | (x & 0x3f) | ((x >> 6) << 64)),
        1 => Just(0u128),
        1 => Just(u128::MAX),
        1 => any::<u128>(),
    ]
}

/// A network and how it is written (plain, CIDR, or IPv4-mapped IPv6).
fn network() -> impl Strategy<Value = (IpNet, String)> {
    prop_oneof![
        (v4_addr(), prop_oneof![20u8..=32, 0u8..=32], any::<bool>()).prop_map(|(a, p, mapped)| {
            let n = IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), p)
                .map(|n| n.trunc())
                .unwrap_or_default();
            let text = match n {
                IpNet::V4(v4) if mapped => {
                    format!(
                        "::ffff:{}/{}",
                        v4.network(),
                        u16::from(v4.prefix_len()) + 96
                    )
                }
                IpNet::V4(v4) if v4.prefix_len() == 32 && a % 2 == 0 => v4.network().to_string(),
                other => other.to_string(),
            };
            (n, text)
        }),
        (v6_addr(), prop_oneof![60u8..=128, 0u8..=128]).prop_map(|(a, p)| {
            let n = IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p)
                .map(|n| n.trunc())
                .unwrap_or_default();
            (n, n.to_string())
        }),
    ]
}

fn until() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![2 => Just(None), 3 => (0i64..10).prop_map(Some)]
}

fn probe() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4_addr().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        v4_addr().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        v6_addr().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn instant(t: i64) -> String {
    // 2026-11-28T06:00:00Z plus t seconds, written as RFC 3339.
    format!("2026-11-28T06:00:{t:02}Z")
}
const BASE: i64 = 1_795_845_600;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lookup_equals_a_naive_scan(
        nets in prop::collection::vec((network(), until()), 0..40),
        probes in prop::collection::vec(probe(), 1..20),
        now in -1i64..11,
    ) {
        let text: String = nets
            .iter()
            .map(|((_, written), u)| match u {
                Some(t) => format!("{written} until={}\n", instant(*t)),
                None => format!("{written}\n"),
            })
            .collect();
        let list = match IpList::parse(&text, Path::new("list.txt")) {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        prop_assert_eq!(list.len(), nets.len());
        let expected: Vec<(IpNet, Option<i64>)> =
            nets.iter().map(|((n, _), u)| (*n, u.map(|t| BASE + t))).collect();
        for ip in probes.iter().copied().chain(expected.iter().map(|(n, _)| n.network())) {
            let got = list.lookup(ip, BASE + now);
            prop_assert_eq!(got.map(|(n, _)| n.prefix_len()), naive(&expected, ip, BASE + now));
            if let Some((n, e)) = got {
                let e: &Entry = e;
                prop_assert!(n.contains(&canonical(ip)));
                prop_assert!(e.until.is_none_or(|u| u > BASE + now));
                // The entry returned is one written for that network.
                let line = e.line;
                prop_assert_eq!(expected.get(line.wrapping_sub(1)).map(|x| x.0), Some(n));
            }
        }
        prop_assert_eq!(ip_diff(&list, &list), (0, 0));
    }

    #[test]
    fn overlapping_equals_a_naive_pairwise_check(
        a in prop::collection::vec(network(), 0..20),
        b in prop::collection::vec(network(), 0..20),
    ) {
        let build = |v: &[(IpNet, String)]| {
            let text: String = v.iter().map(|(_, w)| format!("{w}\n")).collect();
            IpList::parse(&text, Path::new("list.txt"))
        };
        let (Ok(la), Ok(lb)) = (build(&a), build(&b)) else {
            return Err(TestCaseError::fail("generated lists parse"));
        };
        let mut got = la.overlapping(&lb);
        got.sort();
        let distinct = |v: &[(IpNet, String)]| {
            let mut n: Vec<IpNet> = v.iter().map(|(n, _)| *n).collect();
            n.sort();
            n.dedup();
            n
        };
        let (da, db) = (distinct(&a), distinct(&b));
        let mut want = Vec::new();
        for x in &da {
            for y in &db {
                if x.contains(y) || y.contains(x) {
                    want.push((*x, *y));
                }
            }
        }
        want.sort();
        prop_assert_eq!(got, want);
    }
}

/// A large list exercises the full-width radix index that small generated lists never reach.
#[test]
fn lookup_in_a_large_list_equals_a_naive_scan() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(42);
    let mut expected = Vec::new();
    let mut text = String::new();
    for _ in 0..20_000 {
        let net = if rng.random_range(0..4) == 0 {
            let a = (0x2001_0db8u128 << 96) | (u128::from(rng.random::<u32>()) << 64);
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), rng.random_range(32..=128))
        } else {
            let a = 0x0a00_0000 | (rng.random::<u32>() & 0x00ff_ffff);
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), rng.random_range(8..=32))
        }
        .map(|n| n.trunc())
        .unwrap_or_default();
        let until = (rng.random_range(0..3) == 0).then(|| rng.random_range(0..10));
        match until {
            Some(t) => text.push_str(&format!("{net} until={}\n", instant(t))),
            None => text.push_str(&format!("{net}\n")),
        }
        expected.push((net, until.map(|t| BASE + t)));
    }
    let list = match IpList::parse(&text, Path::new("list.txt")) {
        Ok(l) => l,
        Err(e) => panic!("{e:?}"),
    };
    for i in 0..3_000u32 {
        let ip = match i % 3 {
            0 => IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000 | (rng.random::<u32>() & 0x00ff_ffff),
            )),
            1 => IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())),
            _ => IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (u128::from(rng.random::<u64>()) << 32),
            )),
        };
        let now = BASE + i64::from(i % 11);
        assert_eq!(
            list.lookup(ip, now).map(|(n, _)| n.prefix_len()),
            naive(&expected, ip, now),
            "{ip} at {now}"
        );
    }
}
