//! A denial is a value: each [`Denial`] maps to its status, `error.code`, message and
//! `Retry-After` in one exhaustive `match`, so a new kind of denial cannot fall through to a
//! generic answer. Turning it into a response is `proxy/respond.rs`'s job, its log line
//! `telemetry/denial_line.rs`'s.
//!
//! Besides the policy's own refusals it names the request path's failures that the shield
//! answers itself (the app unreachable or slow, the client's body too slow, too large or
//! broken): forwarding reports those as its own error, and the answer, the metric label and the
//! log line of every kind come from the matches here.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::policy::limits::Exceeded;

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
}
