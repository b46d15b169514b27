//! The shield's own answers, made in one place: a [`Denial`] (from framing or the decision) or a
//! [`ForwardError`] (from forwarding) becomes its status, JSON body and headers here, and so do
//! the redirect to HTTPS and the headers every answer gets (`X-Request-Id`, HSTS over TLS,
//! `Connection: close` when the request's body was left unread). The app's answers only pass
//! through: hop-by-hop headers out, the request id in.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response};
use http_body_util::{Either, Full};

use crate::policy::denial::{retry_after_secs, Denial};
use crate::policy::limits::Exceeded;
use crate::proxy::forward::{self, ForwardError, ResponseBody, X_REQUEST_ID};
use crate::text::push_decimal_str;

/// The body of every answer: the app's, streamed, or one the shield wrote.
pub type Body = Either<ResponseBody, Full<Bytes>>;

/// How a forwarding failure is answered, counted and logged: the denial of its kind. One
/// exhaustive match, so a new failure cannot go unanswered.
pub(crate) fn failure(error: ForwardError) -> Denial {
    match error {
        ForwardError::Unavailable => Denial::UpstreamUnavailable,
        ForwardError::Timeout => Denial::UpstreamTimeout,
        ForwardError::BodyStalled => Denial::BodyTimeout,
        ForwardError::BodyTooLarge => Denial::PayloadTooLarge,
        ForwardError::BrokenBody => {
            Denial::BadRequest("The request body is malformed or was cut off.")
        }
    }
}

/// The shield's answer `denial` to the request `request_id`, at `now_unix`. When the request's
/// body was left unread, the connection is closed after the answer: the unread bytes are never
/// drained or read as a next request.
pub(crate) fn denial(
    denial: &Denial,
    request_id: &HeaderValue,
    unread_body: bool,
    now_unix: i64,
) -> Response<Body> {
    let mut resp = render(denial, now_unix);
    let headers = resp.headers_mut();
    headers.insert(X_REQUEST_ID, request_id.clone());
    if unread_body {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp.map(Either::Right)
}

/// 308 Permanent Redirect to `location` (the method and body are kept by the client).
pub(crate) fn redirect(
    location: HeaderValue,
    request_id: &HeaderValue,
    unread_body: bool,
) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let headers = resp.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(X_REQUEST_ID, request_id.clone());
    if unread_body {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The app's answer, on its way to the client: hop-by-hop headers out, the request id in.
pub(crate) fn forwarded(
    mut resp: Response<ResponseBody>,
    request_id: &HeaderValue,
) -> Response<Body> {
    forward::prepare_response(&mut resp, request_id);
    resp.map(Either::Left)
}

/// Adds the configured `Strict-Transport-Security` to an answer over HTTPS.
pub(crate) fn with_hsts(mut resp: Response<Body>, hsts: Option<&HeaderValue>) -> Response<Body> {
    if let Some(hsts) = hsts {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    resp
}

/// Writes `s` as a JSON string literal (the messages are ours, but switch messages come from
/// the config file, so they are escaped properly).
pub(crate) fn json_string(out: &mut String, s: &str) {
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

/// The JSON answer for `denial` at `now_unix`, with its status and headers.
pub(crate) fn render(denial: &Denial, now_unix: i64) -> Response<Full<Bytes>> {
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
        push_decimal_str(&mut body, secs);
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
        rate_limit_headers(h, e, retry.unwrap_or(1), now_unix);
    }
    resp
}

/// `X-RateLimit-*` as Laravel sends them, and the IETF draft's `RateLimit-Policy` / `RateLimit`
/// (draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds; `r` remaining, `t`
/// seconds until more).
fn rate_limit_headers(h: &mut http::HeaderMap, e: &Exceeded, retry_secs: u64, now_unix: i64) {
    let window = e.rate.per.as_secs().max(1);
    let now = u64::try_from(now_unix).unwrap_or(0);
    h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(e.rate.count));
    h.insert(X_RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    h.insert(X_RATELIMIT_RESET, HeaderValue::from(now + retry_secs));
    // Limit names are letters, digits, '_' and '-' (validated), so they are safe in a quoted string.
    let mut policy = String::with_capacity(e.name.len() + 32);
    policy.push('"');
    policy.push_str(&e.name);
    policy.push_str("\";q=");
    push_decimal_str(&mut policy, u64::from(e.rate.count));
    policy.push_str(";w=");
    push_decimal_str(&mut policy, window);
    let mut current = String::with_capacity(e.name.len() + 24);
    current.push('"');
    current.push_str(&e.name);
    current.push_str("\";r=0;t=");
    push_decimal_str(&mut current, retry_secs);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(policy)) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(current)) {
        h.insert(RATELIMIT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn payload_too_large_is_a_json_413() {
        let r = render(&Denial::PayloadTooLarge, NOW);
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn rate_limited_is_a_429_with_every_rate_limit_header() {
        let e = Exceeded {
            name: "guest-ip".into(),
            retry_after: Duration::from_millis(29_200),
            rate: crate::units::Rate {
                count: 300,
                per: Duration::from_secs(60),
            },
            burst: 100,
        };
        let r = render(&Denial::RateLimited(e), NOW);
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
