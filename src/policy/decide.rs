//! The ordered checks that decide whether a request is forwarded: synchronous, no `.await`, no
//! I/O. The order is SPEC §4's: blocklist and bans (every path), then on guest routes switches,
//! revoked and malformed tokens, and rate limits (which allowlisted clients skip).
//!
//! The token checks read the token folded once by the request context
//! ([`crate::policy::tokens::JoinToken`]): revocation first, on the folded token, so no case
//! or trailing-whitespace spelling of a revoked token reaches the app; then `token_pattern`, on
//! the token as sent without its trailing whitespace. Switches and limits apply when they cover
//! any class the request may be routed to (a POST may carry a method override).

use crate::policy::bans::Bans;
use crate::policy::classify::ClassId;
use crate::policy::client_ip::ClientKey;
use crate::policy::denial::Denial;
use crate::policy::limits::{self, Exceeded, LimitKeys, Settled};
use crate::policy::rules::{ClassMask, Rules};
use crate::policy::tokens::JoinToken;

/// What the decision reads about a request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client IP.
    pub ip: std::net::IpAddr,
    /// The route class, when it is a guest route.
    pub class: Option<ClassId>,
    /// Every class the request may be routed to: `class`, and for a POST the classes a method
    /// override could take it to (empty off guest routes).
    pub classes: ClassMask,
    /// The join token, as Laravel would bind it, and folded.
    pub token: Option<&'a JoinToken>,
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
    let classes = facts.classes.with(ClassMask::one(class));
    if let Some(switch) = rules
        .switches
        .iter()
        .find(|s| s.applies_to_any(classes, facts.now_unix))
    {
        return Some(Denial::Paused {
            switch: switch.name.clone(),
            message: switch.message.clone(),
            retry_after: switch.retry_after_at(facts.now_unix),
        });
    }
    if let Some(token) = facts.token {
        if rules.revoked.lookup(token.key(), facts.now_unix).is_some() {
            return Some(Denial::Revoked);
        }
        if let Some(pattern) = &rules.token_pattern {
            if !pattern.is_match(token.spelled()) {
                return Some(Denial::InvalidToken);
            }
        }
    }
    if rules.limits.is_empty() || facts.allowlisted {
        return None;
    }
    // The client's hash is the one the request computed once; the network's and the token's
    // only when a limit needs them.
    let keys = LimitKeys {
        client: facts.client_hash,
        ip: facts.ip,
        token: facts.token.map(JoinToken::key),
    };
    limits::check(
        &rules.limits,
        classes,
        &keys,
        facts.now_unix,
        facts.settled,
        shadowed,
    )
    .map(Denial::RateLimited)
}

#[cfg(test)]
mod tests;
