//! One access line: a JSON object with the same keys in the same order on every line (a value
//! that does not apply is `null`), so a pipeline can map it once:
//!
//! ```text
//! {"time":"2026-11-27T18:00:00.123+00:00","ip":"203.0.113.7","method":"GET","route":"gallery",
//!  "path":"/api/v1/gallery/abc123.../photos","token":"abc123...","status":200,"reason":null,
//!  "bytes":5120,"complete":true,"upstream_ms":12.345,"request_id":"…","protocol":"HTTP/1.1",
//!  "tls":false}
//! ```
//!
//! (one line; wrapped here). `time` is when the request arrived, RFC 3339 with milliseconds in
//! `[log] timezone` and its offset (the main log's zone, so the two logs read side by side);
//! `path` is the path as sent, without the query, the token redacted exactly as the denial log
//! does it and cut at [`MAX_PATH`] bytes; `token` is its preview. Strings are escaped as the
//! main log's JSON is ([`write_str`]), so no value can break a line.

use jiff::Timestamp;

use super::AccessRecord;
use crate::telemetry::log::format::{php_lossy_utf8, put_digits, write_str};
use crate::telemetry::log::{redact_path, Stamper};
use crate::text::{push_decimal, utf8_prefix};

/// Paths longer than this are cut (after the token is redacted), marked with `...`.
pub const MAX_PATH: usize = 2048;

/// Appends the line for `record` to `out` (newline included), with times from `stamper`.
pub fn write_line(out: &mut Vec<u8>, stamper: &mut Stamper, record: &AccessRecord) {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, stamper, record.at_us);
    out.extend_from_slice(b"\",\"ip\":\"");
    {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}", record.ip);
    }
    out.extend_from_slice(b"\",\"method\":");
    write_str(out, record.method.as_str());
    out.extend_from_slice(b",\"route\":");
    match &record.route {
        Some(route) => write_str(out, route),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"path\":");
    let keep = usize::from(record.keep);
    match &record.token {
        Some(token) => write_cut(out, &redact_path(record.uri.path(), token, keep)),
        None => write_cut(out, record.uri.path()),
    }
    out.extend_from_slice(b",\"token\":");
    match &record.token {
        Some(token) => write_preview(out, token, keep),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(record.status));
    out.extend_from_slice(b",\"reason\":");
    match record.reason {
        Some(reason) => write_str(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes\":");
    push_decimal(out, record.bytes);
    out.extend_from_slice(if record.complete {
        b",\"complete\":true,\"upstream_ms\":"
    } else {
        b",\"complete\":false,\"upstream_ms\":"
    });
    match record.upstream_us {
        Some(us) => write_millis(out, us),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    write_str(out, &php_lossy_utf8(record.request_id.as_bytes()));
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(record.version).as_bytes());
    out.extend_from_slice(if record.tls {
        b"\",\"tls\":true}\n"
    } else {
        b"\",\"tls\":false}\n"
    });
}

/// `2026-11-27T19:00:00.123+01:00` for Unix microseconds `at_us`.
fn write_time(out: &mut Vec<u8>, stamper: &mut Stamper, at_us: i64) {
    let at = Timestamp::from_microsecond(at_us).unwrap_or_default();
    let (mut text, offset) = stamper.stamp(at);
    text[10] = b'T';
    out.extend_from_slice(&text);
    let mut millis = [b'.', 0, 0, 0];
    let sub = at.as_millisecond().rem_euclid(1000);
    put_digits(&mut millis[1..], u32::try_from(sub).unwrap_or(0));
    out.extend_from_slice(&millis);
    out.extend_from_slice(&offset);
}

/// `s` as a JSON string, cut at [`MAX_PATH`] bytes on a character boundary and marked `...`.
fn write_cut(out: &mut Vec<u8>, s: &str) {
    let kept = utf8_prefix(s, MAX_PATH);
    write_str(out, kept);
    if kept.len() < s.len() {
        // Reopen the string to mark the cut.
        out.pop();
        out.extend_from_slice(b"...\"");
    }
}

/// The token's preview as a JSON string, exactly [`crate::telemetry::log::token_preview`]'s
/// text, without building it.
fn write_preview(out: &mut Vec<u8>, token: &str, keep: usize) {
    let shown = keep.min(token.chars().count() / 2);
    let end = token
        .char_indices()
        .nth(shown)
        .map_or(token.len(), |(i, _)| i);
    write_str(out, &token[..end]);
    out.pop();
    out.extend_from_slice(b"...\"");
}

/// Microseconds as milliseconds with three decimals (`12.345`): a JSON number, exact.
fn write_millis(out: &mut Vec<u8>, us: u64) {
    push_decimal(out, us / 1000);
    let mut frac = [b'.', 0, 0, 0];
    put_digits(&mut frac[1..], u32::try_from(us % 1000).unwrap_or(0));
    out.extend_from_slice(&frac);
}

/// The version as a request line names it.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method, Uri, Version};
    use std::sync::Arc;

    fn record() -> AccessRecord {
        AccessRecord {
            at_us: 1_795_802_400_123_456, // 2026-11-27T18:00:00.123456Z
            ip: "203.0.113.7".parse().unwrap(),
            method: Method::GET,
            uri: Uri::from_static("/api/v1/gallery/abc123XYZ789/photos?sig=secret"),
            route: Some(Arc::from("gallery")),
            token: Some("abc123XYZ789".into()),
            keep: 6,
            request_id: HeaderValue::from_static("0f3a-17"),
            version: Version::HTTP_11,
            tls: false,
            status: 200,
            reason: None,
            upstream_us: Some(12_345),
            bytes: 5120,
            complete: true,
        }
    }

    fn line(r: &AccessRecord, zone: &str) -> String {
        let mut out = Vec::new();
        let mut stamper = Stamper::new(jiff::tz::TimeZone::get(zone).unwrap());
        write_line(&mut out, &mut stamper, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_forwarded_answer_is_one_line_with_every_key_in_order() {
        assert_eq!(
            line(&record(), "UTC"),
            "{\"time\":\"2026-11-27T18:00:00.123+00:00\",\"ip\":\"203.0.113.7\",\"method\":\"GET\",\
             \"route\":\"gallery\",\"path\":\"/api/v1/gallery/abc123.../photos\",\"token\":\"abc123...\",\
             \"status\":200,\"reason\":null,\"bytes\":5120,\"complete\":true,\"upstream_ms\":12.345,\
             \"request_id\":\"0f3a-17\",\"protocol\":\"HTTP/1.1\",\"tls\":false}\n"
        );
    }

    #[test]
    fn the_time_is_in_the_log_zone_with_its_offset() {
        let l = line(&record(), "Europe/Berlin");
        assert!(
            l.starts_with("{\"time\":\"2026-11-27T19:00:00.123+01:00\""),
            "{l}"
        );
    }

    #[test]
    fn a_shield_answer_off_the_guest_routes_has_nulls_and_its_reason() {
        let r = AccessRecord {
            route: None,
            token: None,
            uri: Uri::from_static("/wp-login.php"),
            status: 403,
            reason: Some("ip_blocked"),
            upstream_us: None,
            bytes: 62,
            complete: false,
            version: Version::HTTP_2,
            tls: true,
            ..record()
        };
        let l = line(&r, "UTC");
        assert!(
            l.contains(
                "\"route\":null,\"path\":\"/wp-login.php\",\"token\":null,\"status\":403,\
                 \"reason\":\"ip_blocked\",\"bytes\":62,\"complete\":false,\"upstream_ms\":null,"
            ),
            "{l}"
        );
        assert!(
            l.ends_with("\"protocol\":\"HTTP/2.0\",\"tls\":true}\n"),
            "{l}"
        );
    }

    #[test]
    fn the_token_never_appears_whole_in_any_spelling() {
        for (target, token) in [
            ("/api/v1/events/%61bc123XYZ78%39/x", "abc123XYZ789"),
            ("/api/v1/events/abcd", "abcd"),
            ("/api/v1/events/abcdefgh%abcdefgh", "abcdefgh"),
            ("/e/.x.x.", ".x."),
        ] {
            let r = AccessRecord {
                uri: Uri::try_from(target).unwrap(),
                token: Some(token.into()),
                ..record()
            };
            let l = line(&r, "UTC");
            assert!(!l.contains(token), "{target}: {l}");
        }
    }

    #[test]
    fn a_long_path_is_cut_and_marked_and_values_cannot_break_the_line() {
        let long = format!("/x/{}", "a".repeat(5000));
        let r = AccessRecord {
            uri: Uri::try_from(long.as_str()).unwrap(),
            token: None,
            request_id: HeaderValue::from_bytes(b"id\"\\x").unwrap(),
            ..record()
        };
        let l = line(&r, "UTC");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        let path = v["path"].as_str().unwrap();
        assert_eq!(path.len(), MAX_PATH + 3);
        assert!(path.ends_with("..."));
        assert_eq!(v["request_id"], "id\"\\x");
        assert_eq!(l.matches('\n').count(), 1);
    }

    #[test]
    fn upstream_time_is_exact_milliseconds() {
        let mut out = Vec::new();
        write_millis(&mut out, 7);
        write_millis(&mut out, 60_000_001);
        assert_eq!(out, b"0.00760000.001");
    }
}
