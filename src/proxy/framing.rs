//! Framing: requests the shield refuses whatever the route, before any other check. hyper has
//! already refused conflicting or malformed lengths and transfer codings; this is what is left:
//! `CONNECT`, the `Host` ([`host`], one function for HTTP/1 and HTTP/2) and a declared body over
//! `max_body`.

use std::net::Ipv6Addr;

use http::{header, HeaderMap, Request, Uri, Version};
use hyper::body::Incoming;

use crate::policy::denial::Denial;

/// `CONNECT` (the shield is no tunnel), a missing, repeated or malformed `Host` ([`host`]), or
/// a declared body over `max_body`: the denial, else `None`.
pub(crate) fn check(req: &Request<Incoming>, max_body: u64) -> Option<Denial> {
    if req.method() == http::Method::CONNECT {
        return Some(Denial::BadRequest(
            "CONNECT is not served: this is not a forward proxy.",
        ));
    }
    let headers = req.headers();
    if let Err(denial) = host(req.version(), req.uri(), headers) {
        return Some(denial);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Some(Denial::PayloadTooLarge);
    }
    None
}

/// Whether the host a request names is one the shield forwards (RFC 9112 §3.2, RFC 9113
/// §8.3.1), for HTTP/1.x and HTTP/2 alike (`:authority` is the URI's authority there):
///
/// - at most one `Host`, and when there is one it is a valid authority ([`valid_authority`]),
///   absolute-form or not (RFC 9112 §3.2: 400 to "a Host header field with an invalid field
///   value");
/// - the target's authority (absolute-form, `:authority`), when there is one, is a valid
///   authority too: no userinfo (RFC 9110 §4.2.4), a host name or address, a port;
/// - HTTP/2 with both: they name the same host (letter case aside) and, when both carry one,
///   the same port (RFC 9113 §8.3.1). HTTP/1.1 absolute-form with a different `Host` is not
///   refused: the target's authority wins and is what the app gets (RFC 9112 §3.2.2);
/// - no host at all: HTTP/1.1 and HTTP/2 are refused, HTTP/1.0 is forwarded with the
///   upstream's authority (`forward::prepare`).
pub fn host(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), Denial> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let sent = hosts.next();
    if hosts.next().is_some() {
        return Err(Denial::BadRequest(
            "A request must carry exactly one Host header.",
        ));
    }
    if let Some(h) = sent {
        if !valid_authority(h.as_bytes()) {
            return Err(Denial::BadRequest(
                "The Host header must be a host name or address, with an optional port.",
            ));
        }
    }
    match (uri.authority(), sent) {
        (Some(target), _) if !valid_authority(target.as_str().as_bytes()) => {
            Err(Denial::BadRequest(
                "The request target must name a host name or address, with an optional port.",
            ))
        }
        (Some(target), Some(h))
            if version == Version::HTTP_2
                && !same_host(target.as_str().as_bytes(), h.as_bytes()) =>
        {
            Err(Denial::BadRequest(
                "The Host header must name the host of the request's :authority.",
            ))
        }
        (Some(_), _) | (None, Some(_)) => Ok(()),
        (None, None) if matches!(version, Version::HTTP_10 | Version::HTTP_09) => Ok(()),
        (None, None) => Err(Denial::BadRequest(
            "A request must carry exactly one Host header.",
        )),
    }
}

/// Whether `a` is `host[:port]` as the shield forwards it: `host` a DNS name or IPv4 address
/// (dot-separated labels of letters, digits, `-` and `_`, 1 to 63 bytes each, at most 253 in
/// all, one trailing dot allowed; what Symfony's `Request::getHost` accepts) or a bracketed
/// IPv6 address, and `port` 1 to 5 digits up to 65535. No userinfo, no percent-encoding, no
/// path, no blanks: anything else is not an authority an app should be handed.
pub(crate) fn valid_authority(a: &[u8]) -> bool {
    let (host, port) = split_authority(a);
    let host_ok = match host {
        Host::V6(inside) => std::str::from_utf8(inside)
            .ok()
            .is_some_and(|t| t.parse::<Ipv6Addr>().is_ok()),
        Host::Name(name) => valid_host_name(name),
        Host::Invalid => false,
    };
    host_ok && port.is_none_or(valid_port)
}

/// The host part of an authority.
enum Host<'a> {
    /// What is inside `[...]`.
    V6(&'a [u8]),
    /// A name or an IPv4 address.
    Name(&'a [u8]),
    /// A `[` without its `]`, or something after `]` that is not a port.
    Invalid,
}

/// `host[:port]` split at the port's colon (after `]` for an IPv6 literal).
fn split_authority(a: &[u8]) -> (Host<'_>, Option<&[u8]>) {
    if let Some(rest) = a.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return (Host::Invalid, None);
        };
        let (inside, after) = rest.split_at(end);
        return match after.get(1..) {
            Some([]) => (Host::V6(inside), None),
            Some([b':', port @ ..]) => (Host::V6(inside), Some(port)),
            _ => (Host::Invalid, None),
        };
    }
    match a.iter().position(|&b| b == b':') {
        Some(i) => {
            let (host, port) = a.split_at(i);
            (Host::Name(host), port.get(1..))
        }
        None => (Host::Name(a), None),
    }
}

fn valid_host_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    !name.is_empty()
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn valid_port(port: &[u8]) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// Whether two valid authorities name the same host (ASCII case-insensitively) and, where both
/// name a port, the same port.
fn same_host(a: &[u8], b: &[u8]) -> bool {
    let ((ha, pa), (hb, pb)) = (split_authority(a), split_authority(b));
    let hosts = match (ha, hb) {
        (Host::V6(x), Host::V6(y)) | (Host::Name(x), Host::Name(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    };
    let ports = match (pa, pb) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    hosts && ports
}

/// Whether the request carries a body the shield has not read.
pub(crate) fn has_body(req: &Request<Incoming>) -> bool {
    use hyper::body::Body as _;
    !req.body().is_end_stream()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(version: Version, target: &str, hosts: &[&str]) -> Result<(), &'static str> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, http::HeaderValue::from_str(h).unwrap());
        }
        host(version, &uri, &headers).map_err(|d| match d {
            Denial::BadRequest(why) => why,
            _ => "not a bad request",
        })
    }

    #[test]
    fn names_addresses_and_ports_are_valid_authorities() {
        for a in [
            "app.test",
            "App.Test",
            "app.test.",
            "localhost",
            "127.0.0.1:8080",
            "a-b_c.example:1",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "x:65535",
        ] {
            assert!(valid_authority(a.as_bytes()), "{a:?}");
        }
    }

    #[test]
    fn anything_else_is_not_a_valid_authority() {
        let long_label = format!("{}.test", "a".repeat(64));
        let long_name = format!("{}a", "a.".repeat(127));
        for a in [
            "",
            "app.test:80@evil.test",
            "user@app.test",
            "app.test/x",
            "app.test\\x",
            "a b",
            "app.test:",
            "app.test:65536",
            "app.test:123456",
            "app.test:80:90",
            "app..test",
            ".app.test",
            ".",
            "%61pp.test",
            "[::1",
            "[::1]x",
            "[nope]",
            "[v1.x]",
            "app.test,evil.test",
            "app.test;x",
            "app~test",
            &long_label,
            &long_name,
        ] {
            assert!(!valid_authority(a.as_bytes()), "{a:?}");
        }
    }

    #[test]
    fn a_missing_host_is_refused_except_for_http_1_0() {
        assert!(judged(Version::HTTP_11, "/x", &[]).is_err());
        assert!(judged(Version::HTTP_2, "/x", &[]).is_err());
        assert_eq!(judged(Version::HTTP_10, "/x", &[]), Ok(()));
        assert_eq!(judged(Version::HTTP_11, "/x", &["app.test"]), Ok(()));
        assert!(judged(Version::HTTP_10, "/x", &["app.test", "app.test"]).is_err());
    }

    #[test]
    fn a_malformed_host_is_refused_in_every_version_and_form() {
        for v in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert!(
                judged(v, "/x", &["app.test:80@evil.test"]).is_err(),
                "{v:?}"
            );
            assert!(judged(v, "/x", &[""]).is_err(), "{v:?}");
            // RFC 9112: a Host with an invalid value is refused even beside an absolute target.
            assert!(judged(v, "http://app.test/x", &["a b"]).is_err(), "{v:?}");
            assert!(
                judged(v, "http://user@app.test/x", &["app.test"]).is_err(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn an_absolute_target_wins_over_a_different_host_but_http_2_must_agree() {
        // RFC 9112 §3.2.2: the target's authority replaces the Host.
        assert_eq!(
            judged(
                Version::HTTP_11,
                "http://guests.example/x",
                &["other.example"]
            ),
            Ok(())
        );
        assert_eq!(
            judged(Version::HTTP_11, "http://guests.example/x", &[]),
            Ok(())
        );
        // RFC 9113 §8.3.1: a Host beside :authority names the same host.
        assert_eq!(
            judged(Version::HTTP_2, "https://app.test/x", &["APP.test"]),
            Ok(())
        );
        assert_eq!(
            judged(Version::HTTP_2, "https://app.test:8443/x", &["app.test"]),
            Ok(())
        );
        assert!(judged(Version::HTTP_2, "https://app.test/x", &["evil.test"]).is_err());
        assert!(judged(
            Version::HTTP_2,
            "https://app.test:8443/x",
            &["app.test:443"]
        )
        .is_err());
        assert_eq!(judged(Version::HTTP_2, "https://app.test/x", &[]), Ok(()));
    }
}
