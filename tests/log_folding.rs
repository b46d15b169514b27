//! Folding per network (SPEC section 5): a flood from one IPv6 /48 that rotates through its
//! /64s (or one IPv4 /24 through its addresses) writes one line per network and reason per
//! 10 s, not one line per client. Driven through the denial's log path on a manual clock, so a
//! minute of flood takes no minute.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use joinshield::clock::{Clock, ManualClock};
use joinshield::policy::client_ip::ClientKey;
use joinshield::policy::denial::Denial;
use joinshield::policy::limits::client_key_hash;
use joinshield::telemetry::denial_line::{log_denial, Seen};
use joinshield::telemetry::log::{Destination, LogConfig, LogSink, QUEUE_CAPACITY};
use joinshield::telemetry::recent::Recent;

/// 2026-11-27T18:00:00Z
const START_MS: i64 = 1_795_802_400_000;

/// Floods `per_step` denials every 10 ms for `seconds`, the `i`-th from `client(i)`, sweeping
/// the fold windows once a second as the shield does; returns the log's bytes and lines.
fn flood(
    seconds: u64,
    per_step: u64,
    client: impl Fn(u64) -> (IpAddr, ClientKey),
) -> (u64, Vec<String>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shield.log");
    let clock = Arc::new(ManualClock::new(START_MS));
    let sink = LogSink::start_clocked(
        &LogConfig::default(),
        Destination::File(file.clone()),
        QUEUE_CAPACITY,
        clock.clone(),
    )
    .unwrap();
    let log = sink.handle();
    let recent = Recent::default();
    let method = http::Method::GET;
    let request_id = http::HeaderValue::from_static("req-1");
    let mut i = 0u64;
    for step in 0..seconds * 100 {
        for _ in 0..per_step {
            let (ip, key) = client(i);
            let seen = Seen {
                ip,
                client_key: client_key_hash(key),
                route: Some("events"),
                token: Some("guess-000000"),
                method: &method,
                path: "/api/v1/events/guess-000000",
                request_id: &request_id,
            };
            log_denial(
                &log,
                &recent,
                6,
                &Denial::InvalidToken,
                &seen,
                false,
                clock.now(),
            );
            i += 1;
        }
        clock.advance(Duration::from_millis(10));
        if step % 100 == 99 {
            log.sweep_folds(clock.now().instant());
        }
    }
    // A stop writes what is still counted.
    log.flush_folds(clock.now().instant());
    log.flush_blocking();
    assert_eq!(
        log.dropped(),
        0,
        "the log queue dropped lines: the count would lie"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    (text.len() as u64, lines, i)
}

fn context(line: &str) -> serde_json::Value {
    let json = &line[line.find('{').unwrap()..line.rfind('}').unwrap() + 1];
    serde_json::from_str(json).unwrap()
}

/// Every denial is either a line of its own or counted in a later line's `repeated`.
fn accounted(lines: &[String]) -> u64 {
    lines
        .iter()
        .map(|l| {
            let c = context(l);
            // A summary repeats the line that opened the fold; it stands for the repeats.
            c["repeated"].as_u64().unwrap_or(1)
        })
        .sum()
}

#[test]
fn a_rotating_ipv6_48_floods_under_a_megabyte_of_log_a_minute() {
    // 2,000 denials a second for a minute, each from another /64 of 2001:db8:abcd::/48.
    let (bytes, lines, sent) = flood(60, 20, |i| {
        let sub = (i % 65_536) as u128;
        let net = 0x2001_0db8_abcd_u128 << 80 | sub << 64;
        (
            IpAddr::V6(std::net::Ipv6Addr::from(net | 1)),
            ClientKey::V6(net),
        )
    });
    assert_eq!(sent, 120_000);
    println!(
        "{sent} denials in a minute: {bytes} bytes of log in {} lines",
        lines.len()
    );
    assert!(bytes < 1_000_000, "{bytes} bytes in {} lines", lines.len());
    // One line per 10 s window (and the few before the network folds), not one per client.
    assert!(lines.len() < 30, "{} lines: {lines:#?}", lines.len());
    assert_eq!(accounted(&lines), sent, "{lines:#?}");
    let summaries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| context(l))
        .filter(|c| c["repeated"].is_u64())
        .collect();
    assert!(summaries.len() >= 6, "{lines:#?}");
    for s in &summaries {
        assert_eq!(s["net"], "2001:db8:abcd::/48", "{s}");
        assert_eq!(s["reason"], "invalid_token", "{s}");
    }
    // A full window saw 20,000 distinct /64s; IPv6 counts are an estimate (linear counting).
    let clients = summaries[1]["clients"].as_u64().unwrap();
    assert!((16_000..=24_000).contains(&clients), "{clients}");
}

#[test]
fn a_rotating_ipv4_24_folds_with_an_exact_client_count() {
    let (bytes, lines, sent) = flood(30, 5, |i| {
        let host = (i % 250) as u32 + 1;
        let v4 = 0xc633_6400 | host; // 198.51.100.0/24
        (IpAddr::V4(std::net::Ipv4Addr::from(v4)), ClientKey::V4(v4))
    });
    assert!(bytes < 100_000, "{bytes}");
    assert_eq!(accounted(&lines), sent, "{lines:#?}");
    let summary = lines
        .iter()
        .map(|l| context(l))
        .find(|c| c["repeated"].is_u64())
        .unwrap();
    assert_eq!(summary["net"], "198.51.100.0/24");
    assert_eq!(summary["clients"], 250);
}
