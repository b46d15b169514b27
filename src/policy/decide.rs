//! The ordered checks that decide whether a request is forwarded: synchronous, no `.await`, no
//! I/O. The order is SPEC §4's: blocklist and bans (every path), then on guest routes switches,
//! revoked and malformed tokens, and rate limits (which allowlisted clients skip).

use crate::bans::Bans;
use crate::classify::ClassId;
use crate::client_ip::ClientKey;
use crate::deny::Denial;
use crate::limits::{self, Exceeded};
use crate::snapshot::Snapshot;

/// What the decision reads about a request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client IP.
    pub ip: std::net::IpAddr,
    /// The route class, when it is a guest route.
    pub class: Option<ClassId>,
    /// The join token, as Laravel would bind it.
    pub token: Option<&'a str>,
    /// The client's key (IPv4 address or IPv6 network).
    pub client: ClientKey,
    /// Its limiter hash (computed once per request).
    pub client_hash: u64,
    /// Unix seconds now (for temporary rules).
    pub now_unix: i64,
    /// Whether the client is on the allowlist (exempt from limits and automatic bans).
    pub allowlisted: bool,
    /// How the cluster settled each shared limit, by rule index (empty: every limit local).
    pub settled: &'a [crate::cluster::limits::Settled],
}

/// Decides one request: `Some(denial)` to answer it, `None` to forward it. Shadow limits that
/// the request exceeded are appended to `shadowed` (it goes through all the same).
pub fn decide(
    snap: &Snapshot,
    bans: &Bans,
    facts: &Facts<'_>,
    shadowed: &mut Vec<Exceeded>,
) -> Option<Denial> {
    // The blocklist and bans apply on every path: such a client does not reach the app at all.
    // A client both allowed and blocked is blocked.
    let lists = &snap.loaded.lists;
    if !lists.blocklist.is_empty() && lists.blocklist.lookup(facts.ip, facts.now_unix).is_some() {
        return Some(Denial::Blocked);
    }
    if let Some((net, retry_after)) = bans.lookup(facts.ip, facts.now_unix) {
        return Some(Denial::Banned { net, retry_after });
    }
    let class = facts.class?;
    if let Some(switch) = snap
        .switches
        .iter()
        .find(|s| s.applies(class, facts.now_unix))
    {
        return Some(Denial::Paused {
            switch: switch.name.clone(),
            message: switch.message.clone(),
            retry_after: switch.retry_after_at(facts.now_unix),
        });
    }
    if let Some(token) = facts.token {
        if lists.revoked.lookup(token, facts.now_unix).is_some() {
            return Some(Denial::Revoked);
        }
        if let Some(e) = &snap.loaded.config.enumeration {
            if !e.token_pattern.is_match(token) {
                return Some(Denial::InvalidToken);
            }
        }
    }
    if snap.limits.is_empty() || facts.allowlisted {
        return None;
    }
    let client = limits::client_key_hash(facts.client);
    let token = facts.token.map(limits::token_hash);
    limits::check(
        &snap.limits,
        class,
        client,
        token,
        facts.now_unix,
        facts.settled,
        shadowed,
    )
    .map(Denial::RateLimited)
}
