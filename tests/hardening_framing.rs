//! Framing and smuggling over raw sockets. Each attack is sent byte for byte to a shield whose
//! maintenance switch pauses every guest route, in front of a recording upstream that parses
//! what it receives strictly. The smuggled request always targets a paused guest route, so the
//! shield answers it 503 whenever it decides on it: if the upstream ever parses it, the shield
//! let through a request it never decided on.
//!
//! The shield speaks HTTP/1.1 only (no HTTP/2, no h2c, no upgrades, no CONNECT tunnels).

mod support;

use support::recorder::{self, Mode, Recorder};
use support::*;

/// A request the shield must never pass on undecided: a paused guest route.
const SMUGGLED: &str = "GET /api/v1/events/SMUGGLEDtoken1 HTTP/1.1\r\nHost: app.test\r\n\r\n";
const NEEDLE: &str = "SMUGGLED";

const MAINTENANCE: &str = "[[switch]]\nname = \"maintenance\"\nroutes = [\"*\"]\npaused = true\n\
                           message = \"maintenance\"\n";

async fn setup() -> (Recorder, Fronted) {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "max_body = \"1MiB\"", MAINTENANCE).await;
    (rec, shield)
}

/// Sends `raw`, expects the first answer's status in `allowed`, every later one refused, and
/// the connection closed cleanly after them; then checks the upstream never saw the smuggled
/// request.
async fn refused(case: &str, raw: &[u8], allowed: &[u16]) {
    let (rec, shield) = setup().await;
    let x = exchange(shield.addr(), raw).await;
    assert!(
        !x.answers.is_empty(),
        "{case}: no answer at all (the client must learn why)"
    );
    assert!(
        allowed.contains(&x.answers[0].status),
        "{case}: answered {:?}, expected one of {allowed:?}: {}",
        x.statuses(),
        x.answers[0].text()
    );
    assert!(
        x.answers.iter().skip(1).all(|a| a.status >= 400),
        "{case}: a later answer was forwarded: {:?}",
        x.statuses()
    );
    assert_eq!(
        x.end,
        End::Closed,
        "{case}: the connection did not close cleanly after {:?}",
        x.answers
    );
    rec.assert_never_saw(NEEDLE);
}

#[tokio::test]
async fn content_length_and_transfer_encoding_together_are_never_both_trusted() {
    for (case, head) in [
        (
            "CL then TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
        ),
    ] {
        // CL.TE: a front end trusting Content-Length would leave "G..." as the next request.
        let raw = format!("POST /up HTTP/1.1\r\nHost: app.test\r\n{head}\r\n0\r\n\r\n{SMUGGLED}");
        let (rec, shield) = setup().await;
        let x = exchange(shield.addr(), &raw).await;
        // Normalised (chunked wins, the connection closes after) or refused.
        assert!(
            matches!(x.statuses().as_slice(), [200] | [400]),
            "{case}: {:?}",
            x.statuses()
        );
        assert_eq!(
            x.end,
            End::Closed,
            "{case}: a connection with both framings must close"
        );
        rec.assert_never_saw(NEEDLE);
        for p in rec.parsed() {
            assert!(p.header("content-length").is_none_or(|v| v == "0"));
        }
    }
}

#[tokio::test]
async fn transfer_encodings_other_than_final_chunked_are_refused() {
    for te in [
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding : chunked\r\n",
    ] {
        let raw = format!(
            "POST /up HTTP/1.1\r\nHost: app.test\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        refused(te, raw.as_bytes(), &[400]).await;
    }
}

#[tokio::test]
async fn malformed_or_conflicting_content_lengths_are_refused() {
    for cl in [
        "Content-Length: +5\r\n",
        "Content-Length: 5,5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 99999999999999999999999\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length:\r\n",
    ] {
        let raw = format!("POST /up HTTP/1.1\r\nHost: app.test\r\n{cl}\r\nhello{SMUGGLED}");
        refused(cl, raw.as_bytes(), &[400]).await;
    }
}

#[tokio::test]
async fn a_huge_declared_length_is_413_and_the_body_is_never_read_as_requests() {
    let raw = format!(
        "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000000000\r\n\r\n{SMUGGLED}"
    );
    refused("huge", raw.as_bytes(), &[413]).await;
}

#[tokio::test]
async fn duplicate_equal_content_lengths_are_one_length() {
    let (rec, shield) = setup().await;
    let raw = "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let x = exchange(shield.addr(), raw).await;
    assert_eq!(x.statuses(), [200]);
    assert_eq!(x.end, End::Closed);
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(
        seen[0]
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .count(),
        1
    );
}

#[tokio::test]
async fn folded_headers_and_bare_carriage_returns_are_refused() {
    for (case, raw) in [
        (
            "obs-fold",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n b\r\n\r\n{SMUGGLED}"),
        ),
        (
            "obs-fold of Transfer-Encoding",
            format!("POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "bare CR in a value",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\n\r\n{SMUGGLED}"),
        ),
        (
            "bare CR as a line end",
            format!("GET /up HTTP/1.1\rHost: app.test\r\r{SMUGGLED}"),
        ),
        (
            "NUL in a value",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\nX-A: a\0b\r\n\r\n{SMUGGLED}"),
        ),
        (
            "space before the colon",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\nContent-Length : 5\r\n\r\nhello{SMUGGLED}"),
        ),
        (
            "HTTP/2 preface",
            format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{SMUGGLED}"),
        ),
        (
            "unknown version",
            format!("GET /up HTTP/1.2\r\nHost: app.test\r\n\r\n{SMUGGLED}"),
        ),
    ] {
        let (rec, shield) = setup().await;
        let x = exchange(shield.addr(), &raw).await;
        assert!(
            x.statuses().iter().all(|s| *s >= 400),
            "{case}: {:?}",
            x.statuses()
        );
        assert_eq!(x.end, End::Closed, "{case}: connection not closed cleanly");
        rec.assert_never_saw(NEEDLE);
        assert!(rec.parsed().is_empty(), "{case}: forwarded {:?}", rec.parsed());
    }
}

#[tokio::test]
async fn bare_line_feeds_are_normalised_to_one_clean_request() {
    let (rec, shield) = setup().await;
    let raw = "GET /up HTTP/1.1\nHost: app.test\nConnection: close\n\n";
    let x = exchange(shield.addr(), raw).await;
    assert_eq!(x.end, End::Closed);
    // Accepted as RFC 9112 §2.2 allows, and re-sent with CRLF; or refused.
    match x.statuses().as_slice() {
        [200] => assert_eq!(rec.parsed().len(), 1),
        [400] => assert!(rec.parsed().is_empty()),
        other => panic!("{other:?}"),
    }
    rec.assert_never_saw(NEEDLE);
}

#[tokio::test]
async fn http10_with_transfer_encoding_is_refused() {
    let raw = format!(
        "POST /up HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    refused("1.0 + TE", raw.as_bytes(), &[400]).await;
}

#[tokio::test]
async fn duplicate_or_missing_host_is_400_and_the_body_is_not_read() {
    let body = SMUGGLED;
    for hosts in [
        "Host: app.test\r\nHost: evil.test\r\n",
        "Host: app.test\r\nhost: app.test\r\n",
        "",
    ] {
        let raw = format!(
            "POST /up HTTP/1.1\r\n{hosts}Content-Length: {}\r\n\r\n{body}{SMUGGLED}",
            body.len()
        );
        refused(hosts, raw.as_bytes(), &[400]).await;
    }
}

#[tokio::test]
async fn an_early_denial_never_reads_the_unread_body_as_a_request() {
    // Paused upload route: the shield answers 503 without reading the body, which is a request.
    let path = "/api/v1/events/tok12345678/upload";
    let sized = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    refused("503, sized body", sized.as_bytes(), &[503]).await;
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    refused("503, chunked body", chunked.as_bytes(), &[503]).await;
    // A declared length over max_body: 413, and the body must not be taken for requests.
    let big = format!(
        "POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000000\r\n\r\n{SMUGGLED}{SMUGGLED}"
    );
    refused("413", big.as_bytes(), &[413]).await;
}

#[tokio::test]
async fn an_early_denial_with_a_short_body_that_ends_cleanly_is_still_closed() {
    // Even a body the shield could have drained: the answer says close, and the connection ends.
    let (_rec, shield) = setup().await;
    let raw = "POST /api/v1/events/tok12345678/upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi";
    let x = exchange(shield.addr(), raw).await;
    assert_eq!(x.statuses(), [503]);
    assert_eq!(x.answers[0].header("connection"), Some("close"));
    assert_eq!(x.end, End::Closed);
}

#[tokio::test]
async fn a_chunk_size_overflow_or_huge_chunk_extension_never_reaches_the_app_as_requests() {
    for (case, body) in [
        (
            "overflowing chunk size",
            format!("FFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "negative chunk size",
            format!("-5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "chunk size with junk",
            format!("5 x\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "huge chunk extension",
            format!(
                "5;{}\r\nhello\r\n0\r\n\r\n{SMUGGLED}",
                "a=b;".repeat(40 * 1024 / 4)
            ),
        ),
        (
            "huge trailers",
            format!(
                "5\r\nhello\r\n0\r\n{}\r\n{SMUGGLED}",
                "X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(20_000)
            ),
        ),
    ] {
        let raw = format!(
            "POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let (rec, shield) = setup().await;
        let x = exchange(shield.addr(), &raw).await;
        // The head may have gone upstream before the body broke; the answer must blame the
        // client (4xx), not the app, and the connection must end.
        assert!(
            !x.answers.is_empty() && x.answers.iter().all(|a| (400..500).contains(&a.status)),
            "{case}: {:?} {:?}",
            x.statuses(),
            x.answers.first().map(Answer::text)
        );
        assert_eq!(x.end, End::Closed, "{case}: connection not closed cleanly");
        rec.assert_never_saw(NEEDLE);
        let line = shield
            .log_lines()
            .await
            .into_iter()
            .find(|l| l.contains("upstream_unavailable"));
        assert!(line.is_none(), "{case}: blamed on the app: {line:?}");
    }
}

#[tokio::test]
async fn trailers_are_not_forwarded() {
    let (rec, shield) = setup().await;
    let raw = "POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Evil\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Evil: 1\r\nContent-Length: 50\r\n\r\n";
    let x = exchange(shield.addr(), raw).await;
    assert_eq!(x.statuses(), [200]);
    assert_eq!(x.end, End::Closed);
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1, "{}", rec.raw_text());
    assert_eq!(seen[0].body, b"hello");
    assert!(!rec.raw_text().contains("X-Evil: 1"));
}

#[tokio::test]
async fn a_get_with_a_chunked_body_is_forwarded_with_its_body_framed() {
    // hyper's client sends GET with an unknown-length body as Content-Length 0 unless told
    // otherwise: the body must never follow unframed.
    let (rec, shield) = setup().await;
    let raw = format!(
        "GET /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    let x = exchange(shield.addr(), &raw).await;
    assert_eq!(
        x.statuses(),
        [200],
        "{:?}",
        x.answers.first().map(Answer::text)
    );
    assert_eq!(x.end, End::Closed);
    rec.assert_never_saw(NEEDLE);
    assert_eq!(rec.parsed().len(), 1, "{}", rec.raw_text());
}

#[tokio::test]
async fn upgrades_are_not_passed_on_and_a_pipelined_request_is_decided_on() {
    for (case, upgrade) in [
        ("websocket", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
        ("h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ] {
        let (rec, shield) = setup().await;
        let raw = format!("GET /up HTTP/1.1\r\nHost: app.test\r\n{upgrade}\r\n{SMUGGLED}");
        let mut conn = Conn::open(shield.addr()).await;
        conn.send(&raw).await;
        // The upgrade is not performed: the first request is answered as a plain GET, the
        // pipelined one is decided on (503: paused) and never forwarded.
        let statuses = [conn.answer().await.status, conn.answer().await.status];
        assert_eq!(statuses, [200, 503], "{case}");
        rec.assert_never_saw(NEEDLE);
        let seen = rec.parsed();
        assert_eq!(seen.len(), 1, "{case}");
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(seen[0].header(gone).is_none(), "{case}: {gone} forwarded");
        }
    }
}

#[tokio::test]
async fn connect_is_refused_and_never_tunnels() {
    let (rec, shield) = setup().await;
    let raw = format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n{SMUGGLED}",
        rec.addr, rec.addr
    );
    let x = exchange(shield.addr(), &raw).await;
    assert!(
        !x.answers.is_empty() && x.answers.iter().all(|a| a.status >= 400),
        "{:?}",
        x.statuses()
    );
    assert_eq!(x.end, End::Closed);
    assert!(rec.parsed().is_empty(), "forwarded {:?}", rec.parsed());
    rec.assert_never_saw(NEEDLE);
}

#[tokio::test]
async fn expect_100_continue_with_a_denial_gets_no_100_and_a_close() {
    let (rec, shield) = setup().await;
    let mut conn = Conn::open(shield.addr()).await;
    // Only the head: a client waiting for 100 Continue before it sends the body.
    conn.send(
        "POST /api/v1/events/tok12345678/upload HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 62\r\n\r\n",
    )
    .await;
    let a = conn.answer().await;
    assert_eq!(
        (a.status, a.interim.as_slice()),
        (503, &[][..]),
        "no 100 before a denial"
    );
    assert_eq!(a.header("connection"), Some("close"));
    // The client sends the body anyway (it is a request): it must not be read as one.
    let _ = conn.write(SMUGGLED).await;
    let more = conn.answer_or_end().await.map(|a| a.status);
    assert_eq!(more, Err(End::Closed));
    rec.assert_never_saw(NEEDLE);
}

#[tokio::test]
async fn expect_100_continue_on_an_allowed_route_gets_100_then_the_answer() {
    let (rec, shield) = setup().await;
    let mut conn = Conn::open(shield.addr()).await;
    conn.send(
        "POST /up HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    // Reads the interim answer before sending the body: exactly what a careful client does.
    let interim = conn.interim().await;
    assert_eq!(interim.status, 100);
    assert!(interim.headers.is_empty(), "{:?}", interim.headers);
    conn.send("hello").await;
    assert_eq!(conn.answer().await.status, 200);
    assert_eq!(rec.parsed()[0].body, b"hello");
    // Expect is hop-by-hop in effect: the shield already answered it.
    assert!(rec.parsed()[0].header("expect").is_none());
}

#[tokio::test]
async fn absolute_form_targets_are_judged_by_their_path_and_host() {
    let (rec, shield) = setup().await;
    let raw = format!(
        "GET http://evil.test/api/v1/events/{NEEDLE}token1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    );
    let x = exchange(shield.addr(), &raw).await;
    assert_eq!((x.statuses(), x.end), (vec![503], End::Closed));
    let raw =
        "GET http://other.test/up?x=1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let x = exchange(shield.addr(), raw).await;
    assert_eq!((x.statuses(), x.end), (vec![200], End::Closed));
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1);
    // Origin-form upstream, Host from the target (RFC 9112 §3.2.2).
    assert_eq!(seen[0].target, "/up?x=1");
    assert_eq!(seen[0].header("host"), Some("other.test"));
    rec.assert_never_saw(NEEDLE);
}

#[tokio::test]
async fn pipelined_requests_are_each_decided_on() {
    let (rec, shield) = setup().await;
    let raw = format!(
        "GET /up HTTP/1.1\r\nHost: app.test\r\n\r\n{SMUGGLED}GET /up2 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    );
    let x = exchange(shield.addr(), &raw).await;
    assert_eq!(x.statuses(), [200, 503, 200]);
    assert_eq!(x.end, End::Closed);
    rec.assert_never_saw(NEEDLE);
    let targets: Vec<String> = rec.parsed().into_iter().map(|p| p.target).collect();
    assert_eq!(targets, ["/up", "/up2"]);
}

#[tokio::test]
async fn an_early_429_never_reads_the_unread_body_as_a_request() {
    let rec = recorder::spawn(Mode::Answer).await;
    let limit =
        "[[limit]]\nname = \"one\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n";
    let shield = spawn_shield_at(rec.addr, "", limit).await;
    let path = "/api/v1/events/tok12345678/upload";
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    // The first uses the burst (its body is a body, forwarded as one); the second is refused.
    assert_eq!(
        Conn::open(shield.addr()).await.request(&raw).await.status,
        200
    );
    let x = exchange(shield.addr(), &raw).await;
    assert_eq!(x.statuses(), [429]);
    assert_eq!(x.end, End::Closed);
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, SMUGGLED.as_bytes());
    rec.assert_never_saw(NEEDLE);
}
