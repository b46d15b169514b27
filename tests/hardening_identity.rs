//! Identity and routing end to end: who the client is (spoofed and garbage `X-Forwarded-For`,
//! IPv4-mapped addresses, IPv6 rotation inside a /64) and which route a target is (every
//! spelling of the Laravel differential test, replayed over sockets with a kill switch and with
//! maintenance on: none may reach the app), plus Host tricks.

mod support;

use http::Method;
use joinshield::policy::classify::{default_specs, RouteTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::recorder::{self, Mode};
use support::spellings::{base_path, method, random_target, respell, token};
use support::*;

/// One guest limit of 3 per client, and trusted proxies as given.
fn limited(trusted: &str) -> String {
    format!(
        "[client]\ntrusted_proxies = {trusted}\n\n[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 3\n"
    )
}

async fn status_with_xff(addr: std::net::SocketAddr, i: usize, xff: &str) -> u16 {
    let raw = format!(
        "GET /api/v1/events/tok-{i:08} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nX-Forwarded-For: {xff}\r\n\r\n"
    );
    request(addr, raw).await.status
}

/// Sends one request per `xff` value; returns the statuses.
async fn statuses(addr: std::net::SocketAddr, xffs: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for (i, x) in xffs.iter().enumerate() {
        out.push(status_with_xff(addr, i, x).await);
    }
    out
}

fn limited_after_three(got: &[u16]) -> bool {
    got.len() > 3 && got[..3].iter().all(|s| *s == 200) && got[3..].iter().all(|s| *s == 429)
}

#[tokio::test]
async fn an_untrusted_peer_cannot_spread_itself_over_spoofed_addresses() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", &limited("[]")).await;
    let xffs: Vec<String> = (0..8).map(|i| format!("198.51.100.{i}")).collect();
    let got = statuses(shield.addr(), &xffs).await;
    assert!(limited_after_three(&got), "{got:?}");
    for p in rec.parsed() {
        assert_eq!(p.header("x-forwarded-for"), Some("127.0.0.1"));
    }
}

#[tokio::test]
async fn rotating_the_leftmost_entry_or_garbage_never_makes_a_new_client() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", &limited("[\"127.0.0.1/32\"]")).await;
    // Behind a trusted proxy, the client is the rightmost untrusted entry: rotating what is
    // left of it changes nothing.
    let left: Vec<String> = (0..8).map(|i| format!("10.9.8.{i}, 203.0.113.7")).collect();
    assert!(limited_after_three(&statuses(shield.addr(), &left).await));
    // Garbage stops the walk at the last address the shield can vouch for: the peer.
    let garbage: Vec<String> = [
        "garbage",
        "1.2.3.4, nonsense",
        "1.2.3.4,,, ;",
        "999.1.1.1",
        "1.2.3.4:80:90",
        "unknown",
        "\"1.2.3.4\"",
        "_hidden",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = statuses(shield.addr(), &garbage).await;
    assert!(limited_after_three(&got), "{got:?}");
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_the_same_client() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", &limited("[\"127.0.0.1/32\"]")).await;
    let xffs: Vec<String> = [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "[::ffff:203.0.113.7]",
        "::FFFF:cb00:7107",
        "203.0.113.7:4711",
        "::ffff:203.0.113.7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = statuses(shield.addr(), &xffs).await;
    assert!(limited_after_three(&got), "{got:?}");
    for p in rec.parsed() {
        assert_eq!(p.header("x-forwarded-for"), Some("203.0.113.7"));
    }
}

#[tokio::test]
async fn rotating_ipv6_addresses_inside_a_64_is_one_client_and_another_64_is_not() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", &limited("[\"127.0.0.1/32\"]")).await;
    let mut rng = StdRng::seed_from_u64(64);
    let xffs: Vec<String> = (0..8)
        .map(|_| {
            format!(
                "2001:db8:1:2:{:x}:{:x}:{:x}:{:x}",
                rng.random::<u16>(),
                rng.random::<u16>(),
                rng.random::<u16>(),
                rng.random::<u16>()
            )
        })
        .collect();
    let got = statuses(shield.addr(), &xffs).await;
    assert!(limited_after_three(&got), "{got:?}");
    assert_eq!(
        status_with_xff(shield.addr(), 99, "2001:db8:1:3::1").await,
        200
    );
}

/// Replays `n` spellings of the differential test over sockets with `paused` classes; returns
/// how many were guest spellings of those classes. None of those may reach the app.
async fn replay(switch_routes: &str, paused: &[&str], n: usize, seed: u64) -> usize {
    let rest = format!(
        "[[switch]]\nname = \"kill\"\nroutes = {switch_routes}\npaused = true\nmessage = \"off\"\n"
    );
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", &rest).await;
    let table = RouteTable::new(&default_specs()).unwrap();
    let is_paused = |m: &Method, target: &[u8]| {
        table
            .classify_target(m, target)
            .class
            .is_some_and(|c| paused.contains(&table.names()[usize::from(c)].as_str()))
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hits = 0;
    for _ in 0..n {
        let m = method(&mut rng);
        let target = if rng.random_bool(0.1) {
            random_target(&mut rng)
        } else {
            let t = token(&mut rng);
            let path = base_path(&mut rng, &t);
            respell(&mut rng, &path)
        };
        let Ok(parsed_method) = Method::from_bytes(m.as_bytes()) else {
            continue;
        };
        let mut raw = Vec::new();
        raw.extend_from_slice(m.as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(&target);
        raw.extend_from_slice(
            b" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        let mut conn = Conn::open(shield.addr()).await;
        conn.send(&raw).await;
        let answer = if m == "HEAD" {
            conn.head_answer_or_end().await
        } else {
            conn.answer_or_end().await
        };
        // Answered whole (or refused without a word), then closed cleanly, as asked.
        if answer.is_ok() {
            let end = conn.end().await;
            assert_eq!(
                end,
                End::Closed,
                "{m} {:?}",
                String::from_utf8_lossy(&target)
            );
        } else {
            assert_eq!(
                answer.as_ref().err(),
                Some(&End::Closed),
                "{m} {:?}",
                String::from_utf8_lossy(&target)
            );
        }
        if is_paused(&parsed_method, &target) {
            hits += 1;
            let status = answer.ok().map(|a| a.status);
            assert!(
                matches!(status, Some(503) | Some(400) | None),
                "{m} {:?} is a paused guest route but was answered {status:?}",
                String::from_utf8_lossy(&target)
            );
        }
    }
    for p in rec.parsed() {
        let m = Method::from_bytes(p.method.as_bytes()).unwrap();
        assert!(
            !is_paused(&m, p.target.as_bytes()),
            "a paused guest request reached the app: {} {}",
            p.method,
            p.target
        );
    }
    hits
}

#[tokio::test]
async fn no_spelling_of_a_paused_route_reaches_the_app_with_maintenance_on() {
    let hits = replay(
        "[\"*\"]",
        &["events", "gallery", "upload", "gallery_download"],
        2000,
        0x6a6f_696e,
    )
    .await;
    assert!(
        hits > 1000,
        "the generator must mostly hit guest routes: {hits}"
    );
}

#[tokio::test]
async fn no_spelling_of_a_killed_route_reaches_the_app() {
    let hits = replay(
        "[\"gallery_download\"]",
        &["gallery_download"],
        2000,
        0x6b69_6c6c,
    )
    .await;
    assert!(hits > 100, "the generator must hit download routes: {hits}");
}

#[tokio::test]
async fn host_tricks_do_not_change_the_route() {
    let rest = "[[switch]]\nname = \"m\"\nroutes = [\"*\"]\npaused = true\n";
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", rest).await;
    for head in [
        "GET /api/v1/events/tok12345678 HTTP/1.1\r\nHost: localhost\r\n",
        "GET /api/v1/events/tok12345678 HTTP/1.1\r\nHost: app.test:80@evil.test\r\n",
        "GET /api/v1/events/tok12345678 HTTP/1.1\r\nHost: \r\n",
        "GET http://admin.local/api/v1/events/tok12345678 HTTP/1.1\r\nHost: app.test\r\n",
        "GET http://app.test:8080/index.php/api/v1/events/tok12345678 HTTP/1.1\r\nHost: app.test\r\n",
        "GET https://app.test/api/v1/events/tok12345678 HTTP/1.1\r\nHost: app.test\r\n",
        "GET /api/v1/events/tok12345678 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-Host: admin.local\r\nX-Original-URL: /up\r\nX-Rewrite-URL: /up\r\n",
    ] {
        let raw = format!("{head}Connection: close\r\n\r\n");
        let x = exchange(shield.addr(), &raw).await;
        assert!(
            matches!(x.statuses().as_slice(), [503] | [400]),
            "{head:?}: {:?}",
            x.statuses()
        );
        assert_eq!(x.end, End::Closed, "{head:?}");
    }
    assert!(rec.parsed().is_empty(), "{:?}", rec.parsed());
}
