//! HTTPS at the front door, over real sockets: certificates are made in the test (a CA and leaf
//! certificates signed by it), and a rustls client trusting that CA talks to the shield.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use joinshield::ReloadOutcome as Outcome;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use support::{request, spawn_shield, Answer, Conn, End, Harness};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A strict client connection over TLS.
type Tls = Conn<TlsStream<TcpStream>>;

/// A test certificate authority that issues leaf certificates for `localhost` and 127.0.0.1.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "joinshield test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).unwrap();
        Pki {
            issuer: Issuer::new(params, key),
            root: root.der().clone(),
            root_pem: root.pem(),
        }
    }

    /// A leaf certificate (PEM) and its key (PEM), valid from yesterday for `days` days from now
    /// (negative: already expired).
    fn leaf(&self, serial: u64, days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(if days < 0 { 30 } else { 1 });
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificate files of a shield, in their own folder (named by absolute path).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(cert: &str, key: &str) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.install(cert, key);
        files
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("fullchain.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("privkey.pem")
    }
    /// Replaces both files as a renewal tool does: each written beside, then renamed over.
    fn install(&self, cert: &str, key: &str) {
        for (path, text) in [(self.key(), key), (self.cert(), cert)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
    /// The `[server]` lines for HTTPS with these files.
    fn server_lines(&self, extra: &str) -> String {
        format!(
            "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
            self.cert().display(),
            self.key().display()
        )
    }
}

fn tls_addr(h: &Harness) -> SocketAddr {
    h.shield.tls_addr.expect("the shield serves HTTPS")
}

/// Connects over TLS to `addr` as `localhost`.
async fn connect(pki: &Pki, addr: SocketAddr) -> std::io::Result<Tls> {
    Conn::open_tls(addr, &pki.connector(), "localhost").await
}

/// The serial number (hex) of the certificate the server presented.
fn peer_serial(conn: &Tls) -> String {
    let certs = conn
        .stream()
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
    cert.raw_serial_as_string()
}

/// A new connection, one GET, its answer (whole, then a clean close with `close_notify`) and
/// the serial of the certificate it saw; anything short of that is an error, for the tests
/// that count failed requests.
async fn https_get(pki: &Pki, addr: SocketAddr, path: &str) -> Result<(Answer, String), String> {
    let mut conn = connect(pki, addr).await.map_err(|e| e.to_string())?;
    let serial = peer_serial(&conn);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let answer = conn.try_request(raw).await.map_err(|b| b.to_string())?;
    match conn.end().await {
        End::Closed => Ok((answer, serial)),
        end => Err(format!(
            "answered {}, then the connection ended {end:?}",
            answer.status
        )),
    }
}

/// Waits (at most 10 s) until the shield runs configuration version `n` or later.
async fn wait_version(h: &Harness, n: u64) {
    support::wait_version(&h.shield, n, Duration::from_secs(10)).await;
}

const HSTS: &str = "max-age=31536000; includeSubDomains";

#[tokio::test]
async fn https_reaches_the_app_as_https_with_hsts_and_plain_http_without() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    let h = spawn_shield(&files.server_lines(&format!("hsts = \"{HSTS}\"\n")), "").await;

    let (answer, serial) = https_get(&pki, tls_addr(&h), "/__standin/echo")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(serial, "51");
    let seen = answer.json();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(answer.header("strict-transport-security"), Some(HSTS));

    // A client cannot claim https on the plain listener, and gets no HSTS there.
    let plain = support::get(h.addr(), "/__standin/echo", "X-Forwarded-Proto: https\r\n").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["headers"]["x-forwarded-proto"], "http");
    assert_eq!(plain.header("strict-transport-security"), None);

    // The shield's own answers over HTTPS carry HSTS too (here: no Host header, 400).
    let mut conn = connect(&pki, tls_addr(&h)).await.unwrap();
    let own = conn
        .request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(own.status, 400);
    assert_eq!(own.header("strict-transport-security"), Some(HSTS));
    conn.closed().await;

    // ALPN offers http/1.1 only: a client asking for h2 and http/1.1 gets http/1.1.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn = Conn::open_tls(
        tls_addr(&h),
        &TlsConnector::from(Arc::new(config)),
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(
        conn.stream().get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
    // An answer means the server side of the handshake is done (and counted).
    let raw = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert!(conn.try_request(raw).await.is_ok());
    conn.closed().await;

    let metrics = h
        .shield
        .metrics_text(joinshield::admin::scrape::Format::Prometheus);
    assert!(
        metrics.contains("joinshield_tls_handshakes_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("joinshield_tls_certificate_expiry_timestamp_seconds "));
    h.shield.shutdown().await;
}

#[tokio::test]
async fn rotated_certificate_files_serve_new_handshakes_without_a_failed_request() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf(0x1a, 90);
    let (cert_b, key_b) = pki.leaf(0x2b, 90);
    let files = Files::new(&cert_a, &key_a);
    let h = spawn_shield(&files.server_lines(""), "").await;
    let addr = tls_addr(&h);
    let pki = Arc::new(pki);

    // A connection established before the rotation, kept alive across it.
    let mut kept = connect(&pki, addr).await.unwrap();
    assert_eq!(peer_serial(&kept), "1a");
    let keep_alive = "GET /__standin/echo HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(kept.request(keep_alive).await.status, 200);

    // A continuous stream of new connections (one handshake each) while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (serial_tx, mut serial_rx) = tokio::sync::watch::channel(String::new());
    let load = {
        let (pki, stop, ok, failed) = (pki.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match https_get(&pki, addr, "/__standin/echo").await {
                    Ok((a, serial)) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        serial_tx.send_replace(serial);
                    }
                    Ok((a, _)) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("status {}", a.status));
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(e);
                    }
                }
            }
            errors
        })
    };
    tokio::time::timeout(Duration::from_secs(10), serial_rx.wait_for(|s| s == "1a"))
        .await
        .expect("the load saw the first certificate")
        .unwrap();

    files.install(&cert_b, &key_b);
    // The file watch applies it (a reload that caught the key renamed but not yet the
    // certificate is refused, and the next look applies both).
    wait_version(&h, 2).await;
    tokio::time::timeout(Duration::from_secs(10), serial_rx.wait_for(|s| s == "2b"))
        .await
        .expect("new handshakes see the new certificate")
        .unwrap();
    let before = ok.load(Ordering::SeqCst);
    // Some more requests after the switch, then stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::SeqCst) < before + 20 && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(Duration::from_millis(50), serial_rx.changed()).await;
    }
    stop.store(true, Ordering::SeqCst);
    let errors = load.await.unwrap();
    assert!(
        errors.is_empty(),
        "failed requests during rotation: {errors:?}"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) >= before + 20);

    // The connection established before the rotation is untouched: same session, still served.
    assert_eq!(kept.request(keep_alive).await.status, 200);
    assert_eq!(peer_serial(&kept), "1a");
    let (_, serial) = https_get(&pki, addr, "/").await.unwrap();
    assert_eq!(serial, "2b");

    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Shield configuration reloaded")
                && l.contains("tls certificate 1a -> serial 2b")),
        "{lines:#?}"
    );
    h.shield.shutdown().await;
}

#[tokio::test]
async fn a_mismatched_expired_or_garbage_pair_is_refused_and_the_old_one_keeps_serving() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf(0x1a, 90);
    let (cert_b, _key_b) = pki.leaf(0x2b, 90);
    let (expired, expired_key) = pki.leaf(0x3e, -1);
    let files = Files::new(&cert_a, &key_a);
    let h = spawn_shield(&files.server_lines(""), "").await;
    let addr = tls_addr(&h);
    let ca_first = format!("{}{cert_a}", pki.root_pem);

    for (what, cert, key, expect) in [
        (
            "chain in the wrong order",
            ca_first.as_str(),
            key_a.as_str(),
            "server's own certificate comes first",
        ),
        (
            "mismatched key",
            cert_b.as_str(),
            key_a.as_str(),
            "does not belong to the certificate",
        ),
        (
            "expired",
            expired.as_str(),
            expired_key.as_str(),
            "expired on",
        ),
        (
            "garbage cert",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
            key_a.as_str(),
            "not a PEM certificate chain",
        ),
        (
            "no cert",
            "hello",
            key_a.as_str(),
            "no -----BEGIN CERTIFICATE----- block",
        ),
        ("garbage key", cert_a.as_str(), "junk", "no private key"),
    ] {
        files.install(cert, key);
        let outcome = tokio::task::spawn_blocking({
            let shared = h.shield.reloader();
            move || shared.reload_logged()
        })
        .await
        .unwrap();
        match outcome {
            Outcome::Rejected { errors, kept } => {
                assert_eq!(kept, 1, "{what}");
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert!(text.iter().any(|e| e.contains(expect)), "{what}: {text:?}");
            }
            Outcome::Applied { .. } => panic!("{what}: applied"),
        }
        let (answer, serial) = https_get(&pki, addr, "/__standin/echo").await.unwrap();
        assert_eq!(answer.status, 200, "{what}");
        assert_eq!(serial, "1a", "{what}: the old pair serves");
    }
    let lines = h.log_lines().await;
    let rejected: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ERROR: Shield configuration rejected"))
        .collect();
    assert!(rejected.len() >= 6, "{lines:#?}");
    assert!(rejected
        .iter()
        .any(|l| l.contains("server.tls_key") && l.contains("does not belong")));
    // The good pair back: applied.
    files.install(&cert_a, &key_a);
    let outcome = h.shield.reload();
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    h.shield.shutdown().await;
}

/// How a plain TCP connection on which `raw` was sent ends without any answer (at most 30 s).
async fn ended_unanswered(addr: SocketAddr, raw: &[u8]) -> End {
    let mut conn = Conn::open(addr).await.bound(Duration::from_secs(30));
    conn.send(raw).await;
    let end = conn.answer_or_end().await;
    let end = end.expect_err("nothing is answered");
    assert!(conn.received().is_empty(), "{:?}", conn.received());
    end
}

#[tokio::test]
async fn plain_http_and_garbage_on_the_tls_port_are_closed_at_once_and_counted() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    // A long handshake timeout: a close within the bound below is not the timeout's doing.
    let h = spawn_shield(
        &files.server_lines("tls_handshake_timeout = \"120s\"\n"),
        "",
    )
    .await;
    let addr = tls_addr(&h);

    let plain = ended_unanswered(
        addr,
        b"GET /api/v1/events/abc HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    // The bytes are refused unread (the first one is only peeked at), so the kernel resets the
    // connection: no answer is given, so none can be lost; only "still open" would be wrong.
    assert!(
        matches!(plain, End::Closed | End::Reset),
        "plain HTTP on the TLS port is closed: {plain:?}"
    );

    // A TLS record type with garbage after it: rustls refuses it.
    let garbage = ended_unanswered(
        addr,
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00],
    )
    .await;
    assert_eq!(garbage, End::Closed, "garbage on the TLS port is closed");

    let tls = h.shield.tls_handshakes();
    let failed = |i: usize| tls.failed[i].load(Ordering::SeqCst);
    // The connection task counts right after closing: wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (failed(0) < 1 || failed(3) < 1) && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert_eq!(failed(0), 1, "not_tls");
    assert_eq!(failed(3), 1, "protocol");
    assert_eq!(h.upstream_requests(), 0);
    let lines = h.log_lines().await;
    assert!(
        lines.is_empty(),
        "handshake failures are not logged: {lines:#?}"
    );
    h.shield.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    let h = spawn_shield(&files.server_lines("tls_handshake_timeout = \"1s\"\n"), "").await;
    let silent = ended_unanswered(tls_addr(&h), b"").await;
    assert_eq!(silent, End::Closed, "a silent connection is closed");
    let timeouts = &h.shield.tls_handshakes().failed[1];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while timeouts.load(Ordering::SeqCst) < 1 && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
    // HTTPS still works for others.
    let (answer, _) = https_get(&pki, tls_addr(&h), "/__standin/echo")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    h.shield.shutdown().await;
}

#[tokio::test]
async fn redirect_https_sends_plain_requests_to_the_https_port_with_their_query() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    let h = spawn_shield(
        &files.server_lines("redirect_https = true\nhsts = \"max-age=60\"\n"),
        "",
    )
    .await;
    let port = tls_addr(&h).port();

    let send = |raw: String| request(h.addr(), raw);
    let a = send("GET /api/v1/gallery/abc123/photos?page=2&sort=new HTTP/1.1\r\nHost: app.test:8080\r\nConnection: close\r\n\r\n".into()).await;
    assert_eq!(a.status, 308);
    assert_eq!(
        a.header("location"),
        Some(
            format!("https://app.test:{port}/api/v1/gallery/abc123/photos?page=2&sort=new")
                .as_str()
        )
    );
    assert_eq!(
        a.header("strict-transport-security"),
        None,
        "HSTS only over HTTPS"
    );

    // A POST keeps its method under 308; its unread body closes the connection.
    let a = send("POST /api/v1/events/abc123/photos HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello".into()).await;
    assert_eq!(a.status, 308);
    assert_eq!(a.header("connection"), Some("close"));
    assert_eq!(
        a.header("location"),
        Some(format!("https://app.test:{port}/api/v1/events/abc123/photos").as_str())
    );

    // An IPv6 literal host; an absolute-form target's authority wins over Host.
    let a = send("GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n".into()).await;
    assert_eq!(
        a.header("location"),
        Some(format!("https://[::1]:{port}/").as_str())
    );
    let a = send(
        "GET http://app.test/x?y=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
            .into(),
    )
    .await;
    assert_eq!(
        a.header("location"),
        Some(format!("https://app.test:{port}/x?y=1").as_str())
    );

    // Hosts that are not a plain name or address are refused, not redirected.
    for host in [
        "evil.test@app.test",
        "app.test/evil",
        "app_test:80x",
        "[::zz]",
        "",
    ] {
        let a = send(format!(
            "GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
        .await;
        assert_eq!(a.status, 400, "{host:?}: {:?}", a.header("location"));
        assert_eq!(a.header("location"), None, "{host:?}");
    }
    assert_eq!(h.upstream_requests(), 0, "nothing plain is forwarded");

    // HTTPS is served, not redirected.
    let (answer, _) = https_get(&pki, tls_addr(&h), "/__standin/echo")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("strict-transport-security"),
        Some("max-age=60")
    );
    h.shield.shutdown().await;
}

/// The `check` command of the built binary on `config`: exit code and output.
fn check(config: &Path) -> (i32, String) {
    let out = support::check(config);
    (out.code.unwrap_or(-1), out.text())
}

#[test]
fn check_validates_the_certificate_pair() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf(0x1a, 90);
    let (_cert_b, key_b) = pki.leaf(0x2b, 90);
    let (soon, soon_key) = pki.leaf(0x4c, 3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let config = dir.path().join("joinshield.toml");
    std::fs::write(
        &config,
        "[server]\nupstream = \"http://127.0.0.1:8000\"\ntls_listen = \"127.0.0.1:8443\"\n\
         tls_cert = \"certs/fullchain.pem\"\ntls_key = \"certs/privkey.pem\"\nredirect_https = true\n",
    )
    .unwrap();
    let write = |cert: &str, key: &str| {
        std::fs::write(dir.path().join("certs/fullchain.pem"), cert).unwrap();
        std::fs::write(dir.path().join("certs/privkey.pem"), key).unwrap();
    };

    write(&cert_a, &key_a);
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("https       127.0.0.1:8443"), "{out}");
    assert!(
        out.contains("certificate serial 1a for localhost, 127.0.0.1 valid until"),
        "{out}"
    );
    assert!(out.contains("certs/fullchain.pem"), "{out}");

    write(&cert_a, &key_b);
    let (code, out) = check(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("privkey.pem: server.tls_key: this key does not belong"),
        "{out}"
    );

    std::fs::remove_file(dir.path().join("certs/privkey.pem")).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("server.tls_key: cannot read the key file"),
        "{out}"
    );

    write(&soon, &soon_key);
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: the TLS certificate (serial 4c) expires on"),
        "{out}"
    );
}

#[tokio::test]
async fn demo_serves_https_with_a_certificate_made_at_start() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_joinshield"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The banner names the copied configuration's folder and the HTTPS curl line; reading stops
    // at "Press Ctrl-C" (or when the process ends).
    let banner = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.starts_with("Press Ctrl-C");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("the demo prints its banner")
        .unwrap();
    let dir = banner
        .iter()
        .find_map(|l| l.strip_prefix("Configuration copied to "))
        .and_then(|l| l.split(" (").next())
        .map(|p| Path::new(p).parent().unwrap().to_path_buf())
        .unwrap_or_else(|| panic!("no configuration line in {banner:#?}"));
    let curl = banner
        .iter()
        .find(|l| l.contains("curl -k -i https://localhost:"))
        .unwrap_or_else(|| panic!("no HTTPS curl line in {banner:#?}"));
    let port: u16 = curl
        .split("https://localhost:")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();

    // Trust exactly the certificate the demo made.
    let pem = std::fs::read(dir.join("demo-cert.pem")).unwrap();
    let cert = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let pki = Pki {
        issuer: Issuer::new(
            CertificateParams::new(Vec::<String>::new()).unwrap(),
            KeyPair::generate().unwrap(),
        ),
        root: cert,
        root_pem: String::new(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let path = format!(
        "/api/v1/events/{}",
        joinshield::testkit::standin::DEMO_TOKENS[0]
    );
    let result = https_get(&pki, addr, &path).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let (answer, _) = result.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_reload_that_drops_tls_listen_warns_and_the_https_listener_keeps_its_pair() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    let h = spawn_shield(&files.server_lines(""), "").await;
    let addr = tls_addr(&h);
    let text = support::config_text(&format!("http://{}", h.app.addr), "", "");
    std::fs::write(h.config_path(), text).unwrap();
    match h.shield.reload() {
        Outcome::Applied { warnings, .. } => {
            // The configured address is named, as for `listen`.
            let expected = "server.tls_listen changed to off but stays 127.0.0.1:0 until restart";
            assert!(warnings.iter().any(|w| w == expected), "{warnings:?}");
        }
        other => panic!("{other:?}"),
    }
    let (answer, serial) = https_get(&pki, addr, "/__standin/echo").await.unwrap();
    assert_eq!((answer.status, serial.as_str()), (200, "51"));
    h.shield.shutdown().await;
}

#[tokio::test]
async fn the_access_log_has_a_line_for_a_redirect_and_marks_answers_over_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(0x51, 90);
    let files = Files::new(&cert, &key);
    let h = spawn_shield(
        &files.server_lines("redirect_https = true\n"),
        "[log]\nfile = \"shield.log\"\naccess = \"json\"\naccess_file = \"access.log\"\n",
    )
    .await;
    let a = request(
        h.addr(),
        "GET /api/v1/gallery/demo-wedding-2026?page=2 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 308);
    let (answer, _) = https_get(&pki, tls_addr(&h), "/api/v1/gallery/demo-wedding-2026")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let mut written = h.shield.access_lines().expect("the access log is on");
    tokio::time::timeout(Duration::from_secs(15), written.wait_for(|n| *n >= 2))
        .await
        .expect("two access lines")
        .unwrap();
    h.shield.flush_log().await;
    let text = std::fs::read_to_string(h.dir.path().join("access.log")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let redirect = lines.iter().find(|l| l["status"] == 308).expect("the 308");
    assert_eq!(redirect["reason"], "https_redirect");
    assert_eq!(redirect["tls"], false);
    assert_eq!(
        redirect["path"], "/api/v1/gallery/demo-w...",
        "no query: {redirect}"
    );
    let https = lines.iter().find(|l| l["status"] == 200).expect("the 200");
    assert_eq!(https["tls"], true);
    assert_eq!(https["reason"], serde_json::Value::Null);
    h.shield.shutdown().await;
}
