//! The bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer, nightly or
//! `RUSTC_BOOTSTRAP`) and by `tests/fuzz_corpus.rs` (stable, over the committed corpus). Each
//! checks a property that must hold for every input, beyond "does not panic".

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use joinshield::policy::classify::{default_specs, RouteTable};
use joinshield::policy::client_ip::{canonical, client_ip as walk, parse_entry, TrustedProxies};
use joinshield::policy::lists::{IpList, TokenList};
use joinshield::policy::tokens::{JoinToken, TokenFolding};
use joinshield::request_head::{host, prepare, ForwardInfo};
use joinshield::telemetry::log::{format::Formatter, redact_path, Format, Level, Record, Value};

fn routes() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| match RouteTable::new(&default_specs()) {
        Ok(t) => t,
        Err(e) => panic!("the default routes do not build: {e:?}"),
    })
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "PROPFIND",
];

/// The path classifier is total, and a canonical path classifies as the target it came from
/// (and is its own canonical form).
pub fn classify(data: &[u8]) {
    let Some((&m, target)) = data.split_first() else {
        return;
    };
    let method = http::Method::from_bytes(METHODS[usize::from(m) % METHODS.len()].as_bytes())
        .unwrap_or(http::Method::GET);
    let table = routes();
    let got = table.classify_target(&method, target);
    if let Ok(text) = std::str::from_utf8(target) {
        let _ = table.classify(&method, text);
    }
    if let Some(canonical) = table.canonical_path(&method, target) {
        let again = table.classify_target(&method, canonical.as_bytes());
        assert_eq!(
            (again.class, again.token.as_deref()),
            (got.class, got.token.as_deref()),
            "canonical {canonical:?} of {:?} classifies differently",
            String::from_utf8_lossy(target)
        );
        assert_eq!(
            table
                .canonical_path(&method, canonical.as_bytes())
                .as_deref(),
            Some(canonical.as_str()),
            "canonicalising is not idempotent"
        );
    } else {
        assert!(
            got.class.is_none(),
            "a classified target has no canonical path"
        );
    }
}

fn trusted() -> &'static TrustedProxies {
    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        let nets: Vec<ipnet::IpNet> = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        TrustedProxies::new(&nets)
    })
}

/// The X-Forwarded-For walk: the client is the peer, or an address written in the header; an
/// untrusted peer always names itself; the walk never passes an untrusted hop.
pub fn client_ip(data: &[u8]) {
    let Some((&p, rest)) = data.split_first() else {
        return;
    };
    let peers: [IpAddr; 4] = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([10, 1, 2, 3]),
        IpAddr::from([203, 0, 113, 9]),
        "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::from([10, 0, 0, 1])),
    ];
    let peer = peers[usize::from(p) % peers.len()];
    // Header values are separated by 0xFF (a byte no header value can hold anyway).
    let values: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
    let got = walk(peer, values.iter().copied(), trusted());
    assert_eq!(got, canonical(got), "not canonical");
    if !trusted().contains(canonical(peer)) {
        assert_eq!(got, canonical(peer), "an untrusted peer named someone else");
        return;
    }
    if got == canonical(peer) {
        return;
    }
    // Every hop right of the client must be a trusted proxy.
    let entries: Vec<&[u8]> = values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .collect();
    let pos = entries
        .iter()
        .rposition(|e| parse_entry(e).map(canonical) == Some(got))
        .unwrap_or_else(|| panic!("{got} is neither the peer nor in the header"));
    for e in &entries[pos + 1..] {
        if let Some(ip) = parse_entry(e) {
            assert!(
                trusted().contains(canonical(ip)),
                "the walk passed the untrusted hop {ip}"
            );
        }
    }
}

/// Any text as a configuration file: parsed and validated without panicking, every error
/// printable with its key. Files it names are not read (no `[lists]`: a list path could name
/// a device).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if text.contains("lists") {
        return;
    }
    if let Err(errors) = joinshield::config::parse(&text, Path::new("fuzz/joinshield.toml")) {
        assert!(!errors.is_empty(), "refused without a reason");
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
}

/// Any text as a list file: every address or network a parsed IP list holds is found by a
/// lookup, and every token a parsed token list holds is found.
pub fn lists(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz.txt");
    if let Ok(list) = IpList::parse(&text, file) {
        for (net, _) in list.iter() {
            assert!(
                list.lookup(net.addr(), i64::MIN).is_some(),
                "{net} is listed but not found"
            );
        }
    }
    // Folded, a plain entry is found by its folded spelling.
    let folding = TokenFolding::default();
    if let Ok(tokens) = TokenList::parse_with(&text, file, folding) {
        let lines = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for line in lines.lines() {
            let word = line.split('#').next().unwrap_or("").trim();
            if !word.is_empty()
                && !word.contains(char::is_whitespace)
                && !word.starts_with("sha256:")
            {
                assert!(
                    tokens.lookup(&folding.fold(word), i64::MIN).is_some(),
                    "{word:?} is listed but its folded spelling is not found"
                );
            }
        }
    }
    if let Ok(tokens) = TokenList::parse(&text, file) {
        // A byte-order mark in front of the file is not part of the first token.
        let lines = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for line in lines.lines() {
            let word = line.split('#').next().unwrap_or("").trim();
            if !word.is_empty()
                && !word.contains(char::is_whitespace)
                && !word.starts_with("sha256:")
            {
                assert!(
                    tokens.lookup(word, i64::MIN).is_some(),
                    "{word:?} is listed but not found"
                );
            }
        }
    }
}

/// A log line of request-borne values is one line, valid JSON where it should be, and never
/// holds the whole join token.
pub fn log(data: &[u8]) {
    let Some((&keep, rest)) = data.split_first() else {
        return;
    };
    let keep = usize::from(keep % 17);
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let token = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let path = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let agent = parts.next().unwrap_or(b"");
    let record = |path: &str| {
        Record::new(Level::Warning, "Join token access denied")
            .with("reason", "token_rate_limited")
            .with("token", Value::token(&token, keep))
            .with("path", Value::request(&redact_path(path, &token, keep)))
            .with("agent", Value::request_bytes(agent))
    };
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default();
    for format in [Format::Laravel, Format::Json] {
        let mut f = Formatter::new(format, "production", jiff::tz::TimeZone::UTC);
        let line = f.line(&record(&path), at);
        assert!(line.ends_with('\n'), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1, "not one line: {line:?}");
        let json = match format {
            Format::Json => line.trim_end(),
            Format::Laravel => {
                let start = line.find('{').unwrap_or(0);
                line[start..].trim_end()
            }
        };
        if let Err(e) = serde_json::from_str::<serde_json::Value>(json) {
            panic!("{format:?} context is not JSON ({e}): {line:?}");
        }
        // The token must not appear whole, unless the line holds it anyway without the
        // request's values (e.g. a token spelled like a key or the message).
        let plausible = token.len() >= 8 && token.bytes().all(|b| b.is_ascii_alphanumeric());
        if plausible && line.contains(&token) {
            let without = f.line(&record(""), at);
            let agent_has = String::from_utf8_lossy(agent).contains(&token);
            assert!(
                without.contains(&token) || agent_has,
                "the whole token {token:?} is in {line:?}"
            );
        }
    }
}

/// The request head as the shield judges and forwards it. The first line is a `Host` value and
/// a join token, the second a request target, the rest `name:value` header lines:
/// - a token folds to a spelling that folding leaves alone, with no upper-case ASCII and no
///   trailing blank, and the pattern's spelling is a prefix of the token as sent;
/// - the Host check never panics and lets through only `host[:port]` bytes;
/// - the forwarded head holds no header a client may not set, and the shield's own once.
pub fn request_head(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let first = parts.next().unwrap_or(b"");
    let target = parts.next().unwrap_or(b"/");
    let rest = parts.next().unwrap_or(b"");

    let text = String::from_utf8_lossy(first);
    for folding in [
        TokenFolding::default(),
        TokenFolding {
            case_sensitive: true,
        },
    ] {
        let token = JoinToken::new(text.as_ref().into(), folding);
        let key = token.key();
        assert_eq!(folding.fold(key), key, "folding {key:?} again changes it");
        assert_eq!(folding.fold(&text), key);
        assert!(token.sent().starts_with(token.spelled()));
        if !folding.case_sensitive {
            assert!(!key.bytes().any(|b| b.is_ascii_uppercase()), "{key:?}");
            assert!(!key.ends_with([' ', '\t']), "{key:?}");
        }
    }

    let authority_bytes = |b: &[u8]| {
        b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._:[]".contains(&c))
    };
    let uri = http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/"));
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(first) {
        headers.insert(http::header::HOST, v);
    }
    for version in [
        http::Version::HTTP_10,
        http::Version::HTTP_11,
        http::Version::HTTP_2,
    ] {
        if host(version, &uri, &headers).is_ok() {
            if let Some(h) = headers.get(http::header::HOST) {
                assert!(authority_bytes(h.as_bytes()), "Host {h:?} passed");
            }
            if let Some(a) = uri.authority() {
                assert!(authority_bytes(a.as_str().as_bytes()), "{a} passed");
            }
        }
    }

    let mut req = http::Request::new(());
    *req.uri_mut() = uri;
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    let upstream = http::Uri::from_static("http://127.0.0.1:8000");
    let id = http::HeaderValue::from_static("fuzz-id");
    let client: IpAddr = "203.0.113.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    prepare(
        &mut req,
        &upstream,
        &ForwardInfo {
            client,
            https: false,
            request_id: &id,
        },
    );
    let h = req.headers();
    for name in h.keys() {
        let n = name.as_str();
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{n} is forwarded"
        );
        assert!(
            !n.starts_with("x-forwarded-")
                || matches!(
                    n,
                    "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
                ),
            "{n} is forwarded"
        );
        assert!(
            !matches!(
                n,
                "forwarded"
                    | "x-real-ip"
                    | "x-original-url"
                    | "x-rewrite-url"
                    | "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "te"
                    | "upgrade"
                    | "proxy-authorization"
                    | "expect"
            ),
            "{n} is forwarded"
        );
    }
    for own in ["x-forwarded-for", "x-forwarded-proto", "x-request-id"] {
        assert_eq!(h.get_all(own).iter().count(), 1, "{own}");
    }
    assert_eq!(
        h.get("x-forwarded-for").map(|v| v.as_bytes()),
        Some(&b"203.0.113.7"[..])
    );
    assert!(h.contains_key(http::header::HOST), "no Host forwarded");
}
