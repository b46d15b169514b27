//! The front door against the real binary (`joinshield run`): answers given before the body was
//! read reach a client that writes its whole upload first (as browsers' `fetch` does), over
//! HTTP and HTTPS, followed by a clean close; a blocklisted or banned client loses its
//! connection after one answer; one address flooding connections cannot keep another out; a
//! full door makes room by closing idle connections; a full limiter table lets fresh clients
//! through. The headless-browser version of the uploads is in `tests/browser.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::client::{Conn, End};
use support::recorder::{self, Mode};
use support::*;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

const MIB: usize = 1 << 20;

/// Requests the stand-in answered.
fn answered(app: &joinshield::testkit::standin::StandIn) -> u64 {
    app.state.requests.load(std::sync::atomic::Ordering::SeqCst)
}

/// The targets of the requests the stand-in saw.
fn seen_targets(app: &joinshield::testkit::standin::StandIn) -> Vec<String> {
    app.state.seen().into_iter().map(|s| s.target).collect()
}

/// A bound for uploads: 20 MiB through a debug build's TLS takes a while on a busy machine.
const UPLOAD_BOUND: Duration = Duration::from_secs(30);

/// A test CA and a certificate for localhost signed by it, and a client trusting the CA.
struct Tls {
    cert_pem: String,
    key_pem: String,
    connector: TlsConnector,
}

impl Tls {
    fn new() -> Tls {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let root = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Tls {
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    fn files(&self) -> [(&str, &str); 2] {
        [("cert.pem", &self.cert_pem), ("key.pem", &self.key_pem)]
    }
}

/// `[server]` lines for the HTTPS listener on the certificate of [`Tls::files`].
const TLS_SERVER: &str =
    "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";

/// Which listener a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    Https,
}

/// The admin listener of `child`.
fn admin_addr(child: &Child) -> SocketAddr {
    child.admin.parse().unwrap()
}

/// The value of the series `series` (exact, labels included) in `child`'s `/metrics`.
async fn metric(child: &Child, series: &str) -> Option<f64> {
    let text = get(admin_addr(child), "/metrics", "").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `child`'s log lines so far.
fn log_lines(child: &Child) -> Vec<String> {
    std::fs::read_to_string(child.dir.path().join("shield.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `body` in chunked transfer coding, 64 KiB a chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8192 + 16);
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// One upload: its size, framing and whether it asks `Expect: 100-continue`.
#[derive(Debug, Clone, Copy)]
struct Upload {
    via: Via,
    mib: usize,
    expect: bool,
    chunked: bool,
}

/// Every combination of listener, 8 and 20 MiB, with and without `Expect`, chunked or not.
fn uploads() -> Vec<Upload> {
    let mut all = Vec::new();
    for via in [Via::Http, Via::Https] {
        for mib in [8, 20] {
            for expect in [false, true] {
                for chunked in [false, true] {
                    all.push(Upload {
                        via,
                        mib,
                        expect,
                        chunked,
                    });
                }
            }
        }
    }
    all
}

/// Writes the request `head_lines` (request line and headers, without the framing headers or
/// the blank line) with `up`'s body whole before reading, as a browser does; returns the
/// answer, failing unless the body was taken whole, the answer came whole and says
/// `Connection: close`, and the connection then closed cleanly (over TLS with `close_notify`).
async fn upload(child: &Child, tls: &Tls, head_lines: &str, up: Upload) -> Answer {
    let body = vec![b'j'; up.mib * MIB];
    let (framing, body) = if up.chunked {
        ("Transfer-Encoding: chunked\r\n".to_string(), chunked(&body))
    } else {
        (format!("Content-Length: {}\r\n", body.len()), body)
    };
    let expect = if up.expect {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    let head = format!("{head_lines}{framing}{expect}\r\n");
    match up.via {
        Via::Http => {
            let conn = Conn::open(child.addr).await.bound(UPLOAD_BOUND);
            whole_then_closed(conn, &head, &body, up).await
        }
        Via::Https => {
            let addr = child.tls_addr.expect("the shield has an HTTPS listener");
            let conn = Conn::open_tls(addr, &tls.connector, "localhost")
                .await
                .unwrap()
                .bound(UPLOAD_BOUND);
            whole_then_closed(conn, &head, &body, up).await
        }
    }
}

async fn whole_then_closed<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    head: &str,
    body: &[u8],
    up: Upload,
) -> Answer {
    let uploaded = conn.upload(head, body).await;
    let a = match uploaded.answer {
        Ok(a) => a,
        Err(b) => panic!("{up:?}: no whole answer (sent: {:?}): {b}", uploaded.sent),
    };
    assert_eq!(
        uploaded.sent,
        support::client::Sent::Whole,
        "{up:?}: answered {} but the body was refused on the way",
        a.status
    );
    assert!(
        a.says_close(),
        "{up:?}: {} without Connection: close",
        a.status
    );
    assert_eq!(a.header("content-type"), Some("application/json"), "{up:?}");
    let end = conn.end().await;
    assert_eq!(end, End::Closed, "{up:?}: after its {} answer", a.status);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_upload_gets_its_429_whole_then_a_clean_close_over_http_and_https() {
    let app = standin().await;
    let tls = Tls::new();
    // One request per client and hour on guest routes: a client's first GET uses it up.
    let limit =
        "[[limit]]\nname = \"upload-ip\"\nroutes = [\"events\", \"upload\"]\nkey = \"ip\"\n\
                 rate = \"1/h\"\nburst = 1\n";
    let child = spawn_binary_with_files(app.addr, TLS_SERVER, limit, &[], &tls.files(), &[]);
    for (i, up) in uploads().into_iter().enumerate() {
        let ip = format!("198.51.100.{}", i + 1);
        let first = get(
            child.addr,
            "/api/v1/events/demo-wedding-2026",
            &format!("X-Forwarded-For: {ip}\r\n"),
        )
        .await;
        assert_eq!(first.status, 200);
        let head = format!(
            "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n\
             X-Forwarded-For: {ip}\r\nContent-Type: image/jpeg\r\n"
        );
        let a = upload(&child, &tls, &head, up).await;
        assert_eq!(a.status, 429, "{up:?}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "token_rate_limited", "{up:?}");
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 0, "{up:?}");
        assert_eq!(a.header("x-ratelimit-remaining"), Some("0"), "{up:?}");
        assert!(
            a.interim.is_empty(),
            "{up:?}: a 100 Continue before a refusal"
        );
    }
    // Every refused upload stayed at the shield.
    assert!(
        seen_targets(&app).iter().all(|t| !t.ends_with("/upload")),
        "{:?}",
        seen_targets(&app)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocklisted_upload_gets_its_403_whole_then_a_clean_close_over_http_and_https() {
    let app = standin().await;
    let tls = Tls::new();
    let mut files = tls.files().to_vec();
    files.push(("blocklist.txt", "203.0.113.0/24\n"));
    let child = spawn_binary_with_files(
        app.addr,
        TLS_SERVER,
        "[lists]\nblocklist = \"blocklist.txt\"\n",
        &[],
        &files,
        &[],
    );
    for up in uploads() {
        let head = "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n\
                    X-Forwarded-For: 203.0.113.7\r\nContent-Type: image/jpeg\r\n";
        let a = upload(&child, &tls, head, up).await;
        assert_eq!(a.status, 403, "{up:?}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "ip_blocked", "{up:?}");
    }
    assert_eq!(answered(&app), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_max_body_gets_its_413_whole_then_a_clean_close_over_http_and_https() {
    let app = standin().await;
    let tls = Tls::new();
    let server = format!("{TLS_SERVER}max_body = \"4MiB\"\n");
    let child = spawn_binary_with_files(app.addr, &server, "", &[], &tls.files(), &[]);
    for up in uploads() {
        let head = "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n\
                    Content-Type: image/jpeg\r\n";
        let a = upload(&child, &tls, head, up).await;
        assert_eq!(a.status, 413, "{up:?}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "payload_too_large", "{up:?}");
    }
}

/// Every other answer the shield gives before reading the body is delivered whole to a client
/// that writes its whole 8 MiB upload first, and the connection then closes cleanly: 410, 404,
/// 503, 400, 431, 408 (for a body that stalled, the rest sent after the answer) and the 308
/// redirect, over HTTP and (but the redirect) HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_early_answer_lingers_until_the_body_is_read() {
    let app = standin().await;
    let tls = Tls::new();
    let mut files = tls.files().to_vec();
    files.push(("revoked.txt", "revoked-token-1\n"));
    // [enumeration] makes malformed tokens the shield's 404 (token_pattern).
    let rest = "[enumeration]\nmax_failures = 1000\n[lists]\nrevoked_tokens = \"revoked.txt\"\n\
                [[switch]]\nname = \"gallery-off\"\nroutes = [\"gallery\"]\npaused = true\nmessage = \"Paused.\"\n";
    let child = spawn_binary_with_files(app.addr, TLS_SERVER, rest, &[], &files, &[]);
    let big_header = format!("X-Padding: {}\r\n", "p".repeat(80 * 1024));
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "revoked",
            "POST /api/v1/events/revoked-token-1/upload HTTP/1.1\r\nHost: app.test\r\n".into(),
            410,
        ),
        (
            "malformed token",
            "POST /api/v1/events/short/upload HTTP/1.1\r\nHost: app.test\r\n".into(),
            404,
        ),
        (
            "paused",
            "POST /api/v1/gallery/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\n".into(),
            503,
        ),
        (
            "no Host",
            "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\n".into(),
            400,
        ),
        (
            "head too large",
            format!("POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n{big_header}"),
            431,
        ),
    ];
    for (what, head, status) in &cases {
        for via in [Via::Http, Via::Https] {
            let up = Upload {
                via,
                mib: 8,
                expect: false,
                chunked: false,
            };
            let a = upload_any(&child, &tls, head, up).await;
            assert_eq!(a.status, *status, "{what} {via:?}: {}", a.text());
        }
    }
    assert_eq!(answered(&app), 0, "a refused upload reached the app");

    // A body that stalls past body_timeout: 408 while the client is mid-upload; the client
    // reads it, sends the rest, and the connection then closes cleanly.
    let child408 = spawn_binary_with_files(
        app.addr,
        &format!("{TLS_SERVER}body_timeout = \"1s\"\n"),
        "",
        &[],
        &tls.files(),
        &[],
    );
    for via in [Via::Http, Via::Https] {
        let head = format!(
            "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n\
             Content-Length: {}\r\n\r\n",
            8 * MIB
        );
        let body = vec![b's'; 8 * MIB];
        async fn stalled<S: AsyncRead + AsyncWrite + Unpin>(
            mut conn: Conn<S>,
            head: &str,
            body: &[u8],
            via: Via,
        ) {
            conn.send(head).await;
            conn.send(&body[..MIB]).await;
            let a = conn.answer().await;
            assert_eq!(a.status, 408, "{via:?}: {}", a.text());
            assert!(a.says_close(), "{via:?}");
            assert_eq!(
                conn.write(&body[MIB..]).await,
                support::client::Sent::Whole,
                "{via:?}: the rest of the body was refused after the 408"
            );
            conn.finish_sending().await;
            assert_eq!(conn.end().await, End::Closed, "{via:?}");
        }
        match via {
            Via::Http => {
                let conn = Conn::open(child408.addr).await.bound(UPLOAD_BOUND);
                stalled(conn, &head, &body, via).await;
            }
            Via::Https => {
                let addr = child408.tls_addr.unwrap();
                let conn = Conn::open_tls(addr, &tls.connector, "localhost")
                    .await
                    .unwrap()
                    .bound(UPLOAD_BOUND);
                stalled(conn, &head, &body, via).await;
            }
        }
    }

    // The plain listener redirecting to HTTPS, with an upload pending.
    let server = format!("{TLS_SERVER}redirect_https = true\n");
    let child = spawn_binary_with_files(app.addr, &server, "", &[], &tls.files(), &[]);
    let up = Upload {
        via: Via::Http,
        mib: 8,
        expect: false,
        chunked: false,
    };
    let head = "POST /api/v1/events/demo-wedding-2026/upload HTTP/1.1\r\nHost: app.test\r\n";
    let a = upload_any(&child, &tls, head, up).await;
    assert_eq!(a.status, 308);
    assert!(a
        .header("location")
        .is_some_and(|l| l.starts_with("https://app.test:")));
}

/// As [`upload`], for answers that need not be JSON (hyper's 431, the redirect).
async fn upload_any(child: &Child, tls: &Tls, head_lines: &str, up: Upload) -> Answer {
    let body = vec![b'j'; up.mib * MIB];
    let head = format!("{head_lines}Content-Length: {}\r\n\r\n", body.len());
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut conn: Conn<S>,
        head: &str,
        body: &[u8],
        up: Upload,
    ) -> Answer {
        let uploaded = conn.upload(head, body).await;
        let a = match uploaded.answer {
            Ok(a) => a,
            Err(b) => panic!("{up:?}: no whole answer (sent: {:?}): {b}", uploaded.sent),
        };
        assert_eq!(
            uploaded.sent,
            support::client::Sent::Whole,
            "{up:?}: answered {} but the body was refused on the way",
            a.status
        );
        assert_eq!(conn.end().await, End::Closed, "{up:?}: after {}", a.status);
        a
    }
    match up.via {
        Via::Http => {
            let conn = Conn::open(child.addr).await.bound(UPLOAD_BOUND);
            run(conn, &head, &body, up).await
        }
        Via::Https => {
            let addr = child.tls_addr.expect("an HTTPS listener");
            let conn = Conn::open_tls(addr, &tls.connector, "localhost")
                .await
                .unwrap()
                .bound(UPLOAD_BOUND);
            run(conn, &head, &body, up).await
        }
    }
}

/// Three requests on one connection, written at once (the last asks to close).
fn pipelined(ip: &str) -> String {
    (1..=3)
        .map(|i| {
            let close = if i == 3 { "Connection: close\r\n" } else { "" };
            format!(
                "GET /api/v1/events/demo-wedding-2026?n={i} HTTP/1.1\r\nHost: app.test\r\n\
                 X-Forwarded-For: {ip}\r\n{close}\r\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn a_banned_or_blocklisted_client_loses_its_connection_after_one_answer() {
    let app = standin().await;
    let token = "door-test-admin-token-0123456789";
    let child = spawn_binary_with_files(
        app.addr,
        "",
        "[lists]\nblocklist = \"blocklist.txt\"\n",
        &[],
        &[("blocklist.txt", "203.0.113.0/24\n")],
        &[("JOINSHIELD_ADMIN_TOKEN", token)],
    );
    let body = r#"{"cidr":"198.51.100.0/24","for":"2h","reason":"door test"}"#;
    let banned = request(
        admin_addr(&child),
        format!(
            "POST /admin/bans HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!((200..300).contains(&banned.status), "{}", banned.text());
    for (ip, status, code) in [
        ("198.51.100.9", 429, "ip_banned"),
        ("203.0.113.9", 403, "ip_blocked"),
    ] {
        let x = exchange(child.addr, pipelined(ip)).await;
        assert_eq!(x.sent, support::client::Sent::Whole);
        assert_eq!(x.statuses(), [status], "{ip}: one answer, then the end");
        assert_eq!(x.answers[0].json()["error"]["code"], code);
        assert!(x.answers[0].says_close(), "{ip}");
        assert_eq!(x.end, End::Closed, "{ip}");
    }
    assert_eq!(answered(&app), 0, "a pipelined request was forwarded");
    // A client in good standing keeps its keep-alive connection for all three.
    let x = exchange(child.addr, pipelined("192.0.2.1")).await;
    assert_eq!(x.statuses(), [200, 200, 200]);
    assert_eq!(x.end, End::Closed);
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .expect("connecting took over 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_connections_cannot_keep_another_out() {
    let app = standin().await;
    let child = spawn_binary_with_files(
        app.addr,
        "header_timeout = \"60s\"\nmax_connections = 400\nmax_connections_per_ip = 32",
        "[lists]\nallowlist = \"allowlist.txt\"\n",
        &[],
        &[("allowlist.txt", "127.0.0.4\n")],
        &[],
    );
    // 127.0.0.2 opens 300 idle connections: 32 are kept, the rest closed at once.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(connect_from("127.0.0.2", child.addr).await);
    }
    eventually(
        20,
        "every flood connection was seen at the door",
        || async {
            metric(
                &child,
                "joinshield_connections_refused_total{reason=\"per_ip\"}",
            )
            .await
                == Some(268.0)
        },
    )
    .await;
    // Another address is served at once, within a second (a bound: it would wait forever if
    // the flood held the door).
    let mut other =
        Conn::over(connect_from("127.0.0.3", child.addr).await).bound(Duration::from_secs(1));
    let a = other
        .request("GET /api/v1/events/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(a.status, 200);
    // A further connection of the flooder is closed without an answer.
    let mut more = Conn::over(connect_from("127.0.0.2", child.addr).await);
    let _ = more
        .write("GET /api/v1/events/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let end = more.answer_or_end().await.map(|a| a.status);
    assert!(
        matches!(end, Err(End::Closed | End::Reset)),
        "the flooder's next connection got {end:?}"
    );
    // A trusted proxy (127.0.0.1) is exempt: 40 connections, each served.
    let mut proxied = Vec::new();
    for _ in 0..40 {
        let mut c = Conn::open(child.addr).await;
        let a = c
            .request("GET /api/v1/events/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        assert_eq!(a.status, 200);
        proxied.push(c);
    }
    // So is an allowlisted address (exempt from limits, as on every request).
    for _ in 0..40 {
        let mut c = Conn::over(connect_from("127.0.0.4", child.addr).await);
        let a = c
            .request("GET /api/v1/events/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        assert_eq!(a.status, 200);
        proxied.push(c);
    }
    // Logged like a denial, folded: one line for the flood's first 10 s.
    eventually(10, "the refusal was logged", || async {
        log_lines(&child)
            .iter()
            .any(|l| l.contains("\"reason\":\"too_many_connections\""))
    })
    .await;
    let lines: Vec<String> = log_lines(&child)
        .into_iter()
        .filter(|l| l.contains("too_many_connections"))
        .collect();
    assert!(lines.len() <= 2, "not folded: {lines:#?}");
    assert!(
        lines[0].contains("production.WARNING: Access denied {\"reason\":\"too_many_connections\",\"ip\":\"127.0.0.2\",\"max_connections_per_ip\":32"),
        "{}",
        lines[0]
    );
    // The flood's 32, the proxy's and the allowlisted address's 40 each (the others closed;
    // /metrics is the admin listener).
    eventually(10, "112 guest connections open", || async {
        metric(
            &child,
            "joinshield_connections_open{listener=\"http\",protocol=\"http1\"}",
        )
        .await
            == Some(112.0)
    })
    .await;
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_door_closes_the_longest_idle_connection_and_refuses_only_when_all_are_busy() {
    let rec = recorder::spawn(Mode::Answer).await;
    let child = spawn_binary(
        rec.addr,
        "header_timeout = \"60s\"\nmax_connections = 20",
        "",
        &[],
    );
    let keep_alive = "GET /up HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = Conn::open(child.addr).await;
        assert_eq!(c.request(keep_alive).await.status, 200);
        idle.push(c);
    }
    // The door is full of idle connections: a new one is served at once ...
    let mut new = Conn::open(child.addr).await.bound(Duration::from_secs(2));
    assert_eq!(new.request(keep_alive).await.status, 200);
    // ... and the one idle longest was closed cleanly to make room.
    idle.remove(0).closed().await;
    idle.push(new);
    // Now every connection has a request in flight: none is closed, a new one is refused.
    rec.set_mode(Mode::Hold);
    for c in &mut idle {
        c.send(keep_alive).await;
    }
    // 20 first requests, the new connection's, and the 20 held now.
    rec.wait_for(41).await;
    let refused = exchange(child.addr, keep_alive).await;
    assert!(refused.answers.is_empty(), "served past max_connections");
    rec.release();
    for c in &mut idle {
        assert_eq!(c.answer().await.status, 200, "a request in flight was cut");
    }
    // The admin listener is not a guest listener: its /metrics request needs no room.
    assert_eq!(
        metric(&child, "joinshield_connections_idle_closed_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &child,
            "joinshield_connections_refused_total{reason=\"max\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_full_limiter_table_lets_every_fresh_client_through_on_its_own_bucket() {
    let app = standin().await;
    let limit =
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\n\
                 burst = 1\nmax_keys = 50\n";
    let child = spawn_binary(app.addr, "", limit, &[]);
    let path = "/api/v1/events/demo-wedding-2026";
    let status = |ip: String| async move {
        get(child.addr, path, &format!("X-Forwarded-For: {ip}\r\n"))
            .await
            .status
    };
    // 200 clients fill the 50-key table four times over.
    for i in 0..200u32 {
        assert_eq!(status(format!("10.1.{}.{}", i / 250, i % 250)).await, 200);
    }
    // Each of 100 fresh clients passes its first request and is limited on its second: its own
    // bucket, shared with nobody.
    for i in 0..100u32 {
        let ip = format!("10.2.0.{i}");
        assert_eq!(
            status(ip.clone()).await,
            200,
            "fresh client {ip} was refused"
        );
        assert_eq!(
            status(ip.clone()).await,
            429,
            "{ip} did not get its own bucket"
        );
    }
    let keys = metric(&child, "joinshield_limiter_keys{limit=\"guest-ip\"}")
        .await
        .unwrap();
    assert!(keys <= 50.0, "{keys} keys in a 50-key table");
    let evicted = metric(
        &child,
        "joinshield_limiter_evictions_total{limit=\"guest-ip\"}",
    )
    .await
    .unwrap();
    assert!(evicted >= 250.0 - 50.0, "{evicted} evictions");
}
