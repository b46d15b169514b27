//! Wrong admin tokens, counted per peer: after [`MAX_FAILURES`] wrong tokens from one peer
//! within [`WINDOW`], that peer's `/admin/*` requests answer 429 for [`BLOCK`], whatever token
//! they carry, so a token cannot be guessed at full speed.
//!
//! The table is bounded ([`MAX_PEERS`]): peers whose time is up are forgotten first; when it is
//! still full, every peer not yet in it shares one overflow entry, so a flood of new addresses
//! is throttled as one peer while the peers already tracked keep their own counts (the same
//! choice as the limiters' overflow bucket).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Wrong tokens from one peer that start a block.
pub const MAX_FAILURES: u32 = 10;
/// The window they are counted in (ms).
pub const WINDOW_MS: i64 = 60_000;
/// How long a blocked peer gets 429 (ms).
pub const BLOCK_MS: i64 = 60_000;
/// The most peers tracked at once.
pub const MAX_PEERS: usize = 4096;

/// The window, for documentation and messages.
pub const WINDOW: std::time::Duration = std::time::Duration::from_millis(WINDOW_MS as u64);
/// The block, for documentation and messages.
pub const BLOCK: std::time::Duration = std::time::Duration::from_millis(BLOCK_MS as u64);

#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    /// When the first wrong token of the current window came (Unix ms).
    since_ms: i64,
    failures: u32,
    /// Blocked until then (Unix ms), when blocked.
    blocked_until_ms: Option<i64>,
}

impl Strikes {
    fn spent(&self, now_ms: i64) -> bool {
        match self.blocked_until_ms {
            Some(until) => now_ms >= until,
            None => now_ms - self.since_ms >= WINDOW_MS,
        }
    }
}

/// The wrong-token counts of the admin listener's peers.
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<IpAddr, Strikes>,
    /// Shared by the peers that found the table full.
    overflow: Strikes,
}

impl Table {
    fn entry(&mut self, peer: IpAddr, now_ms: i64) -> &mut Strikes {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.peers.retain(|_, s| !s.spent(now_ms));
        }
        if self.peers.contains_key(&peer) || self.peers.len() < MAX_PEERS {
            self.peers.entry(peer).or_default()
        } else {
            &mut self.overflow
        }
    }
}

impl Throttle {
    /// A table with no peer in it.
    pub fn new() -> Throttle {
        Throttle::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `peer` is still blocked at `now_ms` (ms), if it is.
    pub fn blocked(&self, peer: IpAddr, now_ms: i64) -> Option<i64> {
        let table = self.lock();
        let strikes = match table.peers.get(&peer) {
            Some(s) => s,
            None if table.peers.len() >= MAX_PEERS => &table.overflow,
            None => return None,
        };
        strikes
            .blocked_until_ms
            .filter(|&until| now_ms < until)
            .map(|until| until - now_ms)
    }

    /// Counts a wrong token from `peer` at `now_ms`; returns whether the peer is now blocked.
    pub fn failed(&self, peer: IpAddr, now_ms: i64) -> bool {
        let mut table = self.lock();
        let strikes = table.entry(peer, now_ms);
        if strikes.spent(now_ms) {
            *strikes = Strikes {
                since_ms: now_ms,
                ..Strikes::default()
            };
        }
        strikes.failures = strikes.failures.saturating_add(1);
        if strikes.failures >= MAX_FAILURES && strikes.blocked_until_ms.is_none() {
            strikes.blocked_until_ms = Some(now_ms + BLOCK_MS);
        }
        strikes.blocked_until_ms.is_some()
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.lock().peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn ten_wrong_tokens_within_a_minute_block_the_peer_for_a_minute() {
        let t = Throttle::new();
        for i in 0..9 {
            assert!(!t.failed(ip(1), i * 1000));
        }
        assert_eq!(t.blocked(ip(1), 9_000), None);
        assert!(t.failed(ip(1), 9_000));
        assert_eq!(t.blocked(ip(1), 9_000), Some(BLOCK_MS));
        assert_eq!(t.blocked(ip(1), 9_000 + BLOCK_MS - 1), Some(1));
        // Another peer is not affected.
        assert_eq!(t.blocked(ip(2), 10_000), None);
        // The block ends; the count starts over.
        assert_eq!(t.blocked(ip(1), 9_000 + BLOCK_MS), None);
        assert!(!t.failed(ip(1), 9_000 + BLOCK_MS));
    }

    #[test]
    fn wrong_tokens_spread_over_more_than_a_minute_do_not_block() {
        let t = Throttle::new();
        for i in 0..30 {
            assert!(!t.failed(ip(1), i * 7_000), "failure {i}");
        }
    }

    #[test]
    fn the_table_is_bounded_and_new_peers_share_the_overflow_when_it_is_full() {
        let t = Throttle::new();
        for n in 0..MAX_PEERS as u32 {
            t.failed(ip(n), 0);
        }
        assert_eq!(t.len(), MAX_PEERS);
        // A flood of new peers is throttled as one.
        for n in 0..MAX_FAILURES {
            t.failed(ip(100_000 + n), 1);
        }
        assert!(t.blocked(ip(200_000), 2).is_some());
        assert_eq!(t.len(), MAX_PEERS);
        // A tracked peer keeps its own count.
        assert_eq!(t.blocked(ip(5), 2), None);
        // Spent entries make room again.
        assert!(!t.failed(ip(300_000), WINDOW_MS + BLOCK_MS));
        assert_eq!(t.len(), 1);
        assert_eq!(t.blocked(ip(300_000), WINDOW_MS + BLOCK_MS), None);
    }
}
