//! The denial's log line and its record: what the shield writes and keeps about one of its own
//! answers, folded per client and reason, and per network (IPv4 /24, IPv6 /48) and reason when
//! one network denies from many addresses, so a flood makes one line per window.

use http::HeaderValue;

use crate::clock::Now;
use crate::policy::denial::{retry_after_secs, Denial};
use crate::telemetry::log::{FoldOutcome, Level, LogHandle, Network, Record, Value};
use crate::telemetry::recent::{Recent, LISTED_REPEATS};

/// FNV-1a: a short, fixed string (a reason code, a limit name) to 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a denial's log line says about the request.
pub struct Seen<'a> {
    /// The client IP the shield decided on.
    pub ip: std::net::IpAddr,
    /// The limiter key of the client (for folding repeats).
    pub client_key: u64,
    /// The route class name, on a guest route.
    pub route: Option<&'a str>,
    /// The join token, on a guest route.
    pub token: Option<&'a str>,
    /// The request method.
    pub method: &'a http::Method,
    /// The raw request path (no query: it may carry signatures).
    pub path: &'a str,
    /// The request id.
    pub request_id: &'a HeaderValue,
}

/// Paths longer than this are cut in log lines (after the token is redacted).
const MAX_LOGGED_PATH: usize = 512;

/// The message of a denial's log line; `guest` when the request matched a route class.
pub fn log_message(denial: &Denial, guest: bool) -> &'static str {
    match denial {
        // Not a denial of the guest but a failure of the app: its own words, so that
        // `grep "Join token"` counts only what the shield refused.
        Denial::UpstreamUnavailable | Denial::UpstreamTimeout => "Upstream request failed",
        _ if guest => "Join token access denied",
        _ => "Access denied",
    }
}

/// Logs a denial at `now`, folding repeats of one client and reason into one line per 10 s
/// (and those of one network's many clients into one line per network and reason),
/// and records every one of them, folded or not, in `recent`. `shadow` marks a shadow limit's
/// would-be denial (the request went through).
pub fn log_denial(
    log: &LogHandle,
    recent: &Recent,
    keep: usize,
    denial: &Denial,
    seen: &Seen<'_>,
    shadow: bool,
    now: Now,
) {
    let limit = match denial {
        Denial::RateLimited(e) => Some(e.name.clone()),
        _ => None,
    };
    // The client key is already a keyed hash (a per-process secret): mixing the reason and the
    // limit's name into it needs no second keyed hash, only distinct values for distinct pairs.
    let same = {
        let mut k = fnv1a(denial.code().as_bytes()).rotate_left(17);
        k ^= u64::from(shadow) << 63;
        if let Some(l) = &limit {
            k ^= fnv1a(l.as_bytes()).rotate_left(41);
        }
        k
    };
    // Folded per client, and per network when one network denies from many addresses.
    let network = Network::of(seen.ip, seen.client_key);
    let fold_key = seen.client_key ^ same;
    let net_key = network.key() ^ same.rotate_left(7);
    let outcome = log.log_folded_from(fold_key, network, net_key, now.instant(), || {
        let mut r = Record::new(Level::Warning, log_message(denial, seen.route.is_some()))
            .with("reason", denial.code())
            .with("ip", seen.ip.to_string());
        if let Some(token) = seen.token {
            r = r.with("token", Value::token(token, keep));
        }
        if let Some(route) = seen.route {
            r = r.with("route", route);
        }
        let path = match seen.token {
            Some(t) => crate::telemetry::log::redact_path(seen.path, t, keep),
            None => seen.path.to_string(),
        };
        let path = crate::text::truncate_marked(path, MAX_LOGGED_PATH);
        r = r
            .with("method", Value::request(seen.method.as_str()))
            .with("path", Value::request(&path));
        if let Some(l) = &limit {
            r = r.with("limit", &**l);
        }
        if let Denial::Paused { switch, .. } = denial {
            r = r.with("switch", &**switch);
        }
        if shadow {
            r = r.with("mode", "shadow");
        }
        if let Some(d) = denial.retry_after() {
            r = r.with("retry_after", retry_after_secs(d));
        }
        r.with(
            "request_id",
            Value::request_bytes(seen.request_id.as_bytes()),
        )
    });
    let now_ms = now.unix_ms();
    match outcome {
        FoldOutcome::Folded { repeats } if repeats > LISTED_REPEATS => {
            // A flood of one client and reason: counted for the offenders, not listed. One
            // flooding client would otherwise push everything else out of the ring in seconds.
            recent.record_unlisted_denial(denial, seen, shadow, keep, now_ms);
        }
        FoldOutcome::Folded { .. } => {
            recent.record_denial(denial, seen, shadow, keep, false, now_ms)
        }
        FoldOutcome::Written | FoldOutcome::Unfolded => {
            recent.record_denial(denial, seen, shadow, keep, true, now_ms)
        }
    }
}

/// The `reason` of a connection refused because its client had `max_connections_per_ip` open.
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// Logs a new connection of `ip` (limiter key `client_key`) closed at once because the client
/// already had `limit` open: a WARNING `Access denied` with `"reason":"too_many_connections"`,
/// folded per client like a denial (one line per 10 s, `"repeated":N`). There was no request,
/// so there is no route, path or request id.
pub fn log_connection_refused(
    log: &LogHandle,
    ip: std::net::IpAddr,
    client_key: u64,
    limit: usize,
    now: std::time::Instant,
) {
    let key = client_key ^ fnv1a(TOO_MANY_CONNECTIONS.as_bytes()).rotate_left(17);
    log.log_folded(key, now, || {
        // Not on a guest route (there was no request): SPEC's "a denial elsewhere".
        Record::new(Level::Warning, "Access denied")
            .with("reason", TOO_MANY_CONNECTIONS)
            .with("ip", ip.to_string())
            .with("max_connections_per_ip", limit as u64)
    });
}

/// Logs that `max_connections` were open with none idle to close for a new one (which was
/// closed at once): a WARNING `Connection limit reached`, one line per 10 s at most with
/// `"repeated":N`.
pub fn log_connections_full(log: &LogHandle, max: usize, now: std::time::Instant) {
    log.log_folded(fnv1a(b"max_connections"), now, || {
        Record::new(Level::Warning, "Connection limit reached").with("max_connections", max as u64)
    });
}
