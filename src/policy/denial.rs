//! A denial is a value: each [`Denial`] maps to its status, `error.code`, message and headers in
//! one exhaustive `match`, so a new kind of denial cannot fall through to a generic answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::limits::Exceeded;
use crate::log::{FoldOutcome, Level, LogHandle, Record, Value};
use crate::recent::Recent;

/// Why the shield answered instead of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The request body is larger than `max_body`.
    PayloadTooLarge,
    /// The upstream could not be reached or reset the connection.
    UpstreamUnavailable,
    /// The upstream did not send its response head in time.
    UpstreamTimeout,
    /// The client's request body stalled past `body_timeout`.
    BodyTimeout,
    /// The request itself is malformed (e.g. no or several `Host` headers).
    BadRequest(&'static str),
    /// A rate limit was exceeded.
    RateLimited(Exceeded),
    /// The client (or its network) is banned for token guessing.
    Banned {
        /// The banned network.
        net: ipnet::IpNet,
        /// The ban left.
        retry_after: Duration,
    },
    /// The token does not match `token_pattern`.
    InvalidToken,
    /// The client is on the blocklist.
    Blocked,
    /// The token is on the revoked-tokens list.
    Revoked,
    /// A switch pauses the route class.
    Paused {
        /// The switch's name.
        switch: Arc<str>,
        /// Its message for guests.
        message: Arc<str>,
        /// When to come back.
        retry_after: Duration,
    },
}

impl Denial {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Denial::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Denial::BadRequest(_) => StatusCode::BAD_REQUEST,
            Denial::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Denial::Paused { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Denial::Banned { .. } => StatusCode::TOO_MANY_REQUESTS,
            Denial::InvalidToken => StatusCode::NOT_FOUND,
            Denial::Blocked => StatusCode::FORBIDDEN,
            Denial::Revoked => StatusCode::GONE,
        }
    }

    /// The `error.code` of the JSON body, also the log's `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::PayloadTooLarge => "payload_too_large",
            Denial::UpstreamUnavailable => "upstream_unavailable",
            Denial::UpstreamTimeout => "upstream_timeout",
            Denial::BodyTimeout => "body_timeout",
            Denial::BadRequest(_) => "bad_request",
            Denial::RateLimited(_) => "token_rate_limited",
            Denial::Paused { .. } => "service_paused",
            Denial::Banned { .. } => "ip_banned",
            Denial::InvalidToken => "invalid_token",
            Denial::Blocked => "ip_blocked",
            Denial::Revoked => "token_revoked",
        }
    }

    /// The human sentence of the JSON body.
    pub fn message(&self) -> &str {
        match self {
            Denial::PayloadTooLarge => "The request body is too large.",
            Denial::UpstreamUnavailable => "The service is temporarily unavailable.",
            Denial::UpstreamTimeout => "The service took too long to respond.",
            Denial::BodyTimeout => "The request body arrived too slowly.",
            Denial::BadRequest(why) => why,
            // Laravel's own 429 says this.
            Denial::RateLimited(_) => "Too Many Attempts.",
            Denial::Paused { message, .. } => message,
            Denial::Banned { .. } => "Too Many Attempts.",
            Denial::InvalidToken => "The provided join token is invalid.",
            Denial::Blocked => "Access denied.",
            Denial::Revoked => "This join token has been revoked.",
        }
    }

    /// How long the client should wait, where the answer says so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Denial::PayloadTooLarge
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout
            | Denial::BodyTimeout
            | Denial::BadRequest(_) => None,
            Denial::RateLimited(e) => Some(e.retry_after),
            Denial::Paused { retry_after, .. } => Some(*retry_after),
            Denial::Banned { retry_after, .. } => Some(*retry_after),
            Denial::InvalidToken | Denial::Blocked | Denial::Revoked => None,
        }
    }
}

/// `Retry-After` seconds: whole, rounded up, never 0.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// Writes `s` as a JSON string literal (the messages are ours, but switch messages come from
/// the config file, so they are escaped properly).
pub fn json_string(out: &mut String, s: &str) {
    // The shield's own messages need no escaping: copy them whole.
    if !s
        .bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0xe2)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// Header names of the rate-limit answer, built at compile time: inserting by `&str` would parse
// and hash the name on every denial (a flood is made of denials).
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Headers a shield answer carries at most: the ones below, plus `X-Request-Id`, `Connection`
/// and those hyper adds (`Content-Length`, `Date`). Sized once, the map never grows.
const ANSWER_HEADERS: usize = 12;

/// The JSON answer for `denial`, with its status and headers.
pub fn respond(denial: &Denial) -> Response<Full<Bytes>> {
    let retry = denial.retry_after().map(retry_after_secs);
    let mut body = String::with_capacity(160);
    body.push_str("{\"message\":");
    json_string(&mut body, denial.message());
    body.push_str(",\"error\":{\"code\":\"");
    body.push_str(denial.code());
    body.push('"');
    if let Denial::Paused { switch, .. } = denial {
        body.push_str(",\"switch\":");
        json_string(&mut body, switch);
    }
    if let Some(secs) = retry {
        body.push_str(",\"retry_after\":");
        push_u64(&mut body, secs);
    }
    body.push_str("}}");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = denial.status();
    let h = resp.headers_mut();
    h.reserve(ANSWER_HEADERS);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Denial::RateLimited(e) = denial {
        rate_limit_headers(h, e, retry.unwrap_or(1));
    }
    resp
}

/// Appends `n` in decimal (no formatting machinery, no allocation beyond `out`'s).
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// `X-RateLimit-*` as Laravel sends them, and the IETF draft's `RateLimit-Policy` / `RateLimit`
/// (draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds; `r` remaining, `t`
/// seconds until more).
fn rate_limit_headers(h: &mut http::HeaderMap, e: &Exceeded, retry_secs: u64) {
    let window = e.rate.per.as_secs().max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(e.rate.count));
    h.insert(X_RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    h.insert(X_RATELIMIT_RESET, HeaderValue::from(now + retry_secs));
    // Limit names are letters, digits, '_' and '-' (validated), so they are safe in a quoted string.
    let mut policy = String::with_capacity(e.name.len() + 32);
    policy.push('"');
    policy.push_str(&e.name);
    policy.push_str("\";q=");
    push_u64(&mut policy, u64::from(e.rate.count));
    policy.push_str(";w=");
    push_u64(&mut policy, window);
    let mut current = String::with_capacity(e.name.len() + 24);
    current.push('"');
    current.push_str(&e.name);
    current.push_str("\";r=0;t=");
    push_u64(&mut current, retry_secs);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(policy)) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(current)) {
        h.insert(RATELIMIT, v);
    }
}

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

/// Logs a denial, folding repeats of one client and reason into one line per 10 s, and records
/// every one of them, folded or not, in `recent`. `shadow` marks a shadow limit's would-be
/// denial (the request went through).
pub fn log_denial(
    log: &LogHandle,
    recent: &Recent,
    keep: usize,
    denial: &Denial,
    seen: &Seen<'_>,
    shadow: bool,
) {
    let limit = match denial {
        Denial::RateLimited(e) => Some(e.name.clone()),
        _ => None,
    };
    // The client key is already a keyed hash (a per-process secret): mixing the reason and the
    // limit's name into it needs no second keyed hash, only distinct values for distinct pairs.
    let fold_key = {
        let mut k = seen.client_key ^ fnv1a(denial.code().as_bytes()).rotate_left(17);
        k ^= u64::from(shadow) << 63;
        if let Some(l) = &limit {
            k ^= fnv1a(l.as_bytes()).rotate_left(41);
        }
        k
    };
    let outcome = log.log_folded(fold_key, std::time::Instant::now(), || {
        let mut r = Record::new(Level::Warning, log_message(denial, seen.route.is_some()))
            .with("reason", denial.code())
            .with("ip", seen.ip.to_string());
        if let Some(token) = seen.token {
            r = r.with("token", Value::token(token, keep));
        }
        if let Some(route) = seen.route {
            r = r.with("route", route);
        }
        let mut path = match seen.token {
            Some(t) => crate::log::redact_path(seen.path, t, keep),
            None => seen.path.to_string(),
        };
        if path.len() > MAX_LOGGED_PATH {
            let mut cut = MAX_LOGGED_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
            path.push_str("...");
        }
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
    let now_ms = crate::server::now_ms();
    match outcome {
        FoldOutcome::Folded { repeats } if repeats > crate::recent::LISTED_REPEATS => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(0)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn payload_too_large_is_a_json_413() {
        let r = respond(&Denial::PayloadTooLarge);
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn rate_limited_is_a_429_with_every_rate_limit_header() {
        let e = Exceeded {
            name: "guest-ip".into(),
            retry_after: Duration::from_millis(29_200),
            rate: crate::config::units::Rate {
                count: 300,
                per: Duration::from_secs(60),
            },
            burst: 100,
        };
        let r = respond(&Denial::RateLimited(e));
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "30");
        assert_eq!(h["x-ratelimit-limit"], "300");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert!(
            h["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
        assert_eq!(h["ratelimit-policy"], "\"guest-ip\";q=300;w=60");
        assert_eq!(h["ratelimit"], "\"guest-ip\";r=0;t=30");
    }

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\n\u{1}\u{2028}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\\u2028é\"");
    }
}
