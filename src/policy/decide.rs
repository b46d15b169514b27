//! The ordered checks that decide whether a request is forwarded: synchronous, no `.await`, no
//! I/O. The order is SPEC §4's: blocklist and bans (every path), then on guest routes switches,
//! revoked and malformed tokens, and rate limits (which allowlisted clients skip).

use crate::policy::bans::Bans;
use crate::policy::classify::ClassId;
use crate::policy::client_ip::ClientKey;
use crate::policy::denial::Denial;
use crate::policy::limits::{self, Exceeded, Settled};
use crate::policy::rules::Rules;

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
    pub settled: &'a [Settled],
}

/// Decides one request: `Some(denial)` to answer it, `None` to forward it. Shadow limits that
/// the request exceeded are appended to `shadowed` (it goes through all the same).
pub fn decide(
    rules: &Rules,
    bans: &Bans,
    facts: &Facts<'_>,
    shadowed: &mut Vec<Exceeded>,
) -> Option<Denial> {
    // The blocklist and bans apply on every path: such a client does not reach the app at all.
    // A client both allowed and blocked is blocked.
    if !rules.blocklist.is_empty() && rules.blocklist.lookup(facts.ip, facts.now_unix).is_some() {
        return Some(Denial::Blocked);
    }
    if let Some((net, retry_after)) = bans.lookup(facts.ip, facts.now_unix) {
        return Some(Denial::Banned { net, retry_after });
    }
    let class = facts.class?;
    if let Some(switch) = rules
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
        if rules.revoked.lookup(token, facts.now_unix).is_some() {
            return Some(Denial::Revoked);
        }
        if let Some(pattern) = &rules.token_pattern {
            if !pattern.is_match(token) {
                return Some(Denial::InvalidToken);
            }
        }
    }
    if rules.limits.is_empty() || facts.allowlisted {
        return None;
    }
    // The client's hash is the one the request computed once; the token's only now, when a
    // limit may need it.
    let token = facts.token.map(limits::token_hash);
    limits::check(
        &rules.limits,
        class,
        facts.client_hash,
        token,
        facts.now_unix,
        facts.settled,
        shadowed,
    )
    .map(Denial::RateLimited)
}

#[cfg(test)]
mod tests;
