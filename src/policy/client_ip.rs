//! Who the client is: the TCP peer, unless the peer is a trusted proxy; then `X-Forwarded-For`
//! is read from the right and the first address that is not a trusted proxy is the client.
//!
//! Only the right end of the header can be trusted: each trusted proxy appends the address it saw,
//! and everything to the left of the first untrusted hop was written by the client. An entry that
//! is not an address (garbage, `unknown`, an obfuscated node) ends the walk: the shield cannot see
//! past it, so the last address it could vouch for is the client. The walk is bounded, so a header
//! of thousands of entries costs no more than a short one. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is
//! the IPv4 client everywhere, and IPv6 clients are keyed by their network (`ipv6_prefix`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// At most this many `X-Forwarded-For` entries are examined, right to left.
pub const MAX_HOPS: usize = 32;

/// `::ffff:a.b.c.d` becomes `a.b.c.d`; every other address is unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A network inside `::ffff:0:0/96` becomes the IPv4 network it maps.
pub fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.network().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// The peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the given networks (canonicalised).
    pub fn new(nets: &[IpNet]) -> Self {
        TrustedProxies {
            nets: nets.iter().map(|n| canonical_net(*n)).collect(),
        }
    }

    /// Whether `ip` (already canonical) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // Trusted proxies are a handful of networks: a scan beats any index.
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether no proxy is trusted (headers are then never read).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:567`, with surrounding blanks. Anything else is `None`.
pub fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = trim(entry);
    // Longest textual address: an IPv6 with an embedded IPv4, bracketed, with a port.
    if entry.is_empty() || entry.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(entry).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // `a.b.c.d:port` (one colon only: a bare IPv6 never carries a port without brackets).
    let (host, port) = text.split_once(':')?;
    if port.contains(':') || !valid_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The client IP for a connection from `peer` carrying the given `X-Forwarded-For` header values
/// (in the order they appeared). The result is canonical.
pub fn client_ip<'a, I>(peer: IpAddr, xff_values: I, trusted: &TrustedProxies) -> IpAddr
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let mut client = canonical(peer);
    if !trusted.contains(client) {
        return client;
    }
    let mut seen = 0;
    for value in xff_values.rev() {
        for entry in value.rsplit(|&b| b == b',') {
            if trim(entry).is_empty() {
                continue;
            }
            seen += 1;
            if seen > MAX_HOPS {
                return client;
            }
            match parse_entry(entry) {
                Some(ip) => {
                    client = canonical(ip);
                    if !trusted.contains(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
    }
    client
}

/// The prefix length of an IPv4 client's network ([`network`]).
pub const NETWORK_V4_PREFIX: u8 = 24;

/// The prefix length of an IPv6 client's network ([`network`]).
pub const NETWORK_V6_PREFIX: u8 = 48;

/// The network around a client: its IPv4 /24 or IPv6 /48 (what one customer of a hosting
/// provider or a carrier-grade NAT pool typically holds), `::ffff:a.b.c.d` counting as
/// `a.b.c.d`. The prefix tier of the guessing counts and bans, and the key of `net` limits.
pub fn network(ip: IpAddr) -> IpNet {
    match canonical(ip) {
        IpAddr::V4(v4) => IpNet::V4(
            Ipv4Net::new(v4, NETWORK_V4_PREFIX)
                .unwrap_or_default()
                .trunc(),
        ),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, NETWORK_V6_PREFIX)
                .unwrap_or_default()
                .trunc(),
        ),
    }
}

/// The identity a client is limited, counted and banned by: an IPv4 address, or an IPv6 network
/// of `ipv6_prefix` bits. Packed in 17 bytes' worth so it hashes fast and needs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(u32),
    /// The masked IPv6 network.
    V6(u128),
}

impl ClientKey {
    /// The key of canonical client `ip` when IPv6 clients are grouped by `/ipv6_prefix`.
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6(u128::from(v6) & mask(ipv6_prefix)),
        }
    }

    /// The network this key stands for (`a.b.c.d/32` or the IPv6 prefix).
    pub fn net(&self, ipv6_prefix: u8) -> IpNet {
        match *self {
            ClientKey::V4(v) => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(v), 32).unwrap_or_default()),
            ClientKey::V6(v) => {
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(v), ipv6_prefix.min(128)).unwrap_or_default())
            }
        }
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(&[
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ])
    }

    fn walk(peer: &str, headers: &[&str]) -> IpAddr {
        client_ip(ip(peer), headers.iter().map(|h| h.as_bytes()), &proxies())
    }

    #[test]
    fn untrusted_peer_cannot_set_client_ip() {
        assert_eq!(walk("203.0.113.7", &["1.1.1.1"]), ip("203.0.113.7"));
    }

    #[test]
    fn trusted_peer_names_the_rightmost_untrusted_hop() {
        assert_eq!(
            walk("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.1.1"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(
            walk("127.0.0.1", &["6.6.6.6", "203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            walk("127.0.0.1", &["203.0.113.7", "10.0.0.2"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn garbage_entry_stops_the_walk_at_the_last_trusted_hop() {
        assert_eq!(walk("127.0.0.1", &["6.6.6.6, unknown"]), ip("127.0.0.1"));
        assert_eq!(
            walk("127.0.0.1", &["6.6.6.6, unknown, 10.0.0.9"]),
            ip("10.0.0.9")
        );
        assert_eq!(walk("127.0.0.1", &["1.2.3.4\r\nX: y"]), ip("127.0.0.1"));
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        assert_eq!(parse_entry(b" 203.0.113.7:4711 "), Some(ip("203.0.113.7")));
        assert_eq!(parse_entry(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"2001:db8::1:80:x"), None);
        assert_eq!(parse_entry(b"[2001:db8::1]:x"), None);
        assert_eq!(parse_entry(b"1.2.3.4:"), None);
        assert_eq!(parse_entry(b"unknown"), None);
        assert_eq!(parse_entry(b"_hidden"), None);
    }

    #[test]
    fn mapped_ipv4_is_the_ipv4_client() {
        assert_eq!(
            walk("::ffff:127.0.0.1", &["::ffff:203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            ClientKey::new(ip("::ffff:203.0.113.7"), 64),
            ClientKey::new(ip("203.0.113.7"), 64)
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let a = ClientKey::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ClientKey::new(ip("2001:db8:1:2:ffff::9"), 64);
        let c = ClientKey::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.net(64).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn thousands_of_trusted_hops_stop_after_the_bound() {
        let header = vec!["10.0.0.1"; 5000].join(",");
        assert_eq!(walk("127.0.0.1", &[&header]), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_trusted_networks_match_ipv4_peers() {
        let t = TrustedProxies::new(&["::ffff:192.0.2.0/120".parse().unwrap()]);
        assert!(t.contains(ip("192.0.2.9")));
    }

    proptest! {
        #[test]
        fn client_is_never_left_of_an_untrusted_hop(
            hops in proptest::collection::vec(
                prop_oneof![
                    Just("10.0.0.5".to_string()),
                    Just("203.0.113.7".to_string()),
                    Just("198.51.100.1".to_string()),
                    Just("unknown".to_string()),
                    "[ -~]{0,12}",
                ],
                0..12,
            )
        ) {
            let header = hops.join(",");
            let got = walk("127.0.0.1", &[&header]);
            // Walk right to left by hand: stop at the first untrusted or unparseable entry.
            let mut expect = ip("127.0.0.1");
            for h in header.split(',').rev() {
                if h.trim_matches([' ', '\t']).is_empty() { continue; }
                match parse_entry(h.as_bytes()) {
                    Some(a) => { expect = canonical(a); if !proxies().contains(expect) { break; } }
                    None => break,
                }
            }
            prop_assert_eq!(got, expect);
        }

        #[test]
        fn parse_entry_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_entry(&bytes);
        }
    }
}
