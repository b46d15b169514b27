//! Open connections per client, for `max_connections_per_ip`: counted when a connection is
//! accepted, from its TCP peer's [`ClientKey`] (IPv4 address, or IPv6 network of
//! `ipv6_prefix`), given back when it closes.
//!
//! A client is in the table only while it has a connection open, so the table never holds more
//! entries than there are open connections (at most `max_connections`): it is bounded by the
//! connection cap, whatever addresses connect. Opening and closing cost one lock of one of
//! [`SHARDS`] small maps and one keyed hash; the hash is keyed per process, so nobody outside
//! can aim keys at one shard.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::policy::client_ip::ClientKey;
use crate::policy::limits::{client_key_hash, PrehashedKey};

/// Shards of the table: connections of different clients rarely meet on one lock.
pub const SHARDS: usize = 32;

/// Open connections by client, keyed by the (keyed) hash of its [`ClientKey`].
type Shard = HashMap<u64, u32, BuildHasherDefault<PrehashedKey>>;

/// Open connections per client (by the keyed hash of its [`ClientKey`]).
pub struct PerClient {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for PerClient {
    fn default() -> Self {
        PerClient {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// A client's place in the table, taken by [`PerClient::open`]; hand it back to
/// [`PerClient::close`] when the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted(u64);

impl PerClient {
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The high bits pick the shard; the map uses the whole hash.
        let i = (hash >> 58) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection of `client` unless it already has `limit` open: `None` then,
    /// and nothing changes.
    pub fn open(&self, client: ClientKey, limit: usize) -> Option<Counted> {
        let hash = client_key_hash(client);
        let mut shard = self.shard(hash);
        let open = shard.entry(hash).or_insert(0);
        if *open as usize >= limit {
            if *open == 0 {
                shard.remove(&hash);
            }
            return None;
        }
        *open += 1;
        Some(Counted(hash))
    }

    /// Gives back a connection counted by [`PerClient::open`].
    pub fn close(&self, counted: Counted) {
        let mut shard = self.shard(counted.0);
        if let Some(open) = shard.get_mut(&counted.0) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&counted.0);
            }
        }
    }

    /// Connections `client` has open.
    pub fn open_of(&self, client: ClientKey) -> usize {
        let hash = client_key_hash(client);
        self.shard(hash).get(&hash).map_or(0, |n| *n as usize)
    }

    /// Clients with at least one connection open.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn key(ip: &str) -> ClientKey {
        ClientKey::new(ip.parse::<IpAddr>().unwrap(), 64)
    }

    #[test]
    fn a_client_at_its_limit_is_refused_until_one_closes() {
        let t = PerClient::default();
        let held: Vec<Counted> = (0..3)
            .map(|_| t.open(key("192.0.2.1"), 3).unwrap())
            .collect();
        assert_eq!(t.open(key("192.0.2.1"), 3), None);
        // Another client is not affected.
        assert!(t.open(key("192.0.2.2"), 3).is_some());
        t.close(held[0]);
        assert!(t.open(key("192.0.2.1"), 3).is_some());
        assert_eq!(t.open_of(key("192.0.2.1")), 3);
    }

    #[test]
    fn ipv6_clients_are_counted_per_network_and_mapped_ipv4_is_the_ipv4_client() {
        let t = PerClient::default();
        assert!(t.open(key("2001:db8:1:2::1"), 2).is_some());
        assert!(t.open(key("2001:db8:1:2:ffff::9"), 2).is_some());
        assert_eq!(t.open(key("2001:db8:1:2::77"), 2), None, "same /64");
        assert!(t.open(key("2001:db8:1:3::1"), 2).is_some(), "another /64");
        assert!(t.open(key("198.51.100.4"), 2).is_some());
        assert!(t.open(key("::ffff:198.51.100.4"), 2).is_some());
        assert_eq!(t.open(key("198.51.100.4"), 2), None);
    }

    #[test]
    fn the_table_holds_only_clients_with_a_connection_open() {
        let t = PerClient::default();
        let mut held = Vec::new();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            held.push(t.open(ClientKey::new(ip, 64), 1).unwrap());
        }
        assert_eq!(t.clients(), 1000);
        // A refusal adds nothing.
        assert_eq!(t.open(key("10.0.0.0"), 1), None);
        assert_eq!(t.open(key("203.0.113.1"), 0), None);
        assert_eq!(t.clients(), 1000);
        for c in held {
            t.close(c);
        }
        assert_eq!(t.clients(), 0);
    }
}
