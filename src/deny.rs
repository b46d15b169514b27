//! A denial is a value: each [`Denial`] maps to its status, `error.code`, message and headers in
//! one exhaustive `match`, so a new kind of denial cannot fall through to a generic answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
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

/// The JSON answer for `denial`, with its status and headers.
pub fn respond(denial: &Denial) -> Response<Full<Bytes>> {
    let retry = denial.retry_after().map(retry_after_secs);
    let mut body = String::with_capacity(128);
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
        body.push_str(&secs.to_string());
    }
    body.push_str("}}");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = denial.status();
    let h = resp.headers_mut();
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

/// `X-RateLimit-*` as Laravel sends them, and the IETF draft's `RateLimit-Policy` / `RateLimit`
/// (draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds; `r` remaining, `t`
/// seconds until more).
fn rate_limit_headers(h: &mut http::HeaderMap, e: &Exceeded, retry_secs: u64) {
    let window = e.rate.per.as_secs().max(1);
    let reset = chrono::Utc::now().timestamp().max(0) as u64 + retry_secs;
    h.insert("x-ratelimit-limit", HeaderValue::from(e.rate.count));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    // Limit names are letters, digits, '_' and '-' (validated), so they are safe in a quoted string.
    let policy = format!("\"{}\";q={};w={window}", e.name, e.rate.count);
    let current = format!("\"{}\";r=0;t={retry_secs}", e.name);
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&current) {
        h.insert("ratelimit", v);
    }
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
    let fold_key = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = crate::limits::hash_keys().build_hasher();
        h.write_u64(seen.client_key);
        h.write(denial.code().as_bytes());
        h.write_u8(u8::from(shadow));
        if let Some(l) = &limit {
            h.write(l.as_bytes());
        }
        h.finish()
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
    let logged = outcome != FoldOutcome::Folded;
    recent.record_denial(denial, seen, shadow, keep, logged, crate::server::now_ms());
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
