//! Identity that cannot be dodged, end to end (issue 17): every spelling of a join token is one
//! token (revocation, per-token limits), a rotating /48 is one network (`key = "net"`), the
//! forwarded request carries no header the client may not set (underscore spellings, every
//! `X-Forwarded-*`, URL rewrites), `X-Request-Id` is the shield's unless a trusted proxy sent a
//! sane one, HTTP/1.0 without `Host` gets the upstream's, a bad `Host` is 400, a POST is judged
//! by every class a method override could take it to, and `joinshield token-hash` prints the
//! line that revokes every spelling.

mod support;

use joinshield::admin::scrape::Format;
use support::recorder::{self, Mode, Recorder};
use support::*;

/// Guessing detection on (its default token pattern), lists beside the configuration.
const ENUMERATION: &str = "[enumeration]\n";

/// A shield in front of a fresh recorder with `rest` after `[server]` and `files` beside its
/// configuration.
async fn fronted(rest: &str, files: &[(&str, &str)]) -> (Fronted, Recorder) {
    let rec = recorder::spawn(Mode::Answer).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let shield = start_in(dir.path(), rec.addr, "", "", rest).await;
    (Fronted { shield, dir }, rec)
}

fn guest_get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_revoked_token_in_five_case_and_whitespace_spellings_is_410_and_never_reaches_the_app() {
    // One token revoked in plain text, one by the line `joinshield token-hash` prints.
    let hashed = joinshield::policy::lists::revoked_entry(
        "Second-Leaked-Token",
        joinshield::policy::tokens::TokenFolding::default(),
    );
    let rest = format!("{ENUMERATION}\n[lists]\nrevoked_tokens = \"revoked.txt\"\n");
    let list = format!("Revoked-Join-Token-42\n{hashed}\n");
    let (shield, rec) = fronted(&rest, &[("revoked.txt", &list)]).await;
    let mut conn = Conn::open(shield.addr()).await;
    for spelling in [
        "REVOKED-JOIN-TOKEN-42",
        "revoked-join-token-42",
        "Revoked-Join-Token-42%20",
        "rEvOkEd-JoIn-ToKeN-42%09",
        "REVOKED-join-TOKEN-42%20%09%20",
        "second-leaked-token",
        "SECOND-LEAKED-TOKEN%20",
    ] {
        let a = conn
            .request(guest_get(&format!("/api/v1/events/{spelling}/photos"), ""))
            .await;
        assert_eq!(a.status, 410, "{spelling}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "token_revoked", "{spelling}");
    }
    assert!(
        rec.parsed().is_empty(),
        "reached the app: {:?}",
        rec.parsed()
    );
    // A token that is not revoked goes through, in any spelling.
    let a = conn
        .request(guest_get("/api/v1/events/Other-Token-4242%20", ""))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(rec.parsed().len(), 1);
    // The log (one line: repeats of a client and reason fold) shows the token's preview as
    // sent, and no spelling of it whole.
    let lines = shield.log_lines().await;
    let revoked: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"reason\":\"token_revoked\""))
        .collect();
    assert!(
        revoked
            .iter()
            .any(|l| l.contains("\"token\":\"REVOKE...\"")),
        "{lines:#?}"
    );
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        assert!(!lower.contains("revoked-join-token-42"), "{line}");
        assert!(!lower.contains("second-leaked-token"), "{line}");
    }
}

#[tokio::test]
async fn thirty_requests_for_one_token_in_five_spellings_share_one_bucket() {
    let rest = "[[limit]]\nname = \"guest-token\"\nroutes = [\"*\"]\nkey = \"token\"\n\
                rate = \"1/h\"\nburst = 30\n";
    let (shield, rec) = fronted(rest, &[]).await;
    let spellings = [
        "Shared-Bucket-Token",
        "shared-bucket-token",
        "SHARED-BUCKET-TOKEN",
        "Shared-Bucket-Token%20",
        "sHARED-bUCKET-tOKEN%09",
    ];
    let mut conn = Conn::open(shield.addr()).await;
    for i in 0..30 {
        let s = spellings[i % spellings.len()];
        let a = conn
            .request(guest_get(&format!("/api/v1/gallery/{s}"), ""))
            .await;
        assert_eq!(a.status, 200, "request {i} ({s}): {}", a.text());
    }
    // The bucket is spent, whatever the spelling; another token has its own.
    for s in spellings {
        let a = conn
            .request(guest_get(&format!("/api/v1/gallery/{s}"), ""))
            .await;
        assert_eq!(a.status, 429, "{s}");
        assert_eq!(a.json()["error"]["code"], "token_rate_limited");
    }
    let a = conn
        .request(guest_get("/api/v1/gallery/Another-Token-123", ""))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(rec.parsed().len(), 31);
    // The app got each spelling as it was sent: folding is the shield's view only.
    let targets: Vec<String> = rec.parsed().into_iter().map(|p| p.target).collect();
    assert!(targets.contains(&"/api/v1/gallery/sHARED-bUCKET-tOKEN%09".to_string()));
}

#[tokio::test]
async fn a_thousand_rotating_64s_of_one_48_are_limited_by_net() {
    // Each /64 is its own client for guest-ip (and never reaches its burst of 2 here); the /48
    // they share is one key of guest-net.
    let rest = "[client]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
                [[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 2\n\n\
                [[limit]]\nname = \"guest-net\"\nroutes = [\"*\"]\nkey = \"net\"\nrate = \"1/h\"\nburst = 50\n";
    let (shield, rec) = fronted(rest, &[]).await;
    let mut conn = Conn::open(shield.addr()).await;
    let (mut passed, mut limited) = (0, 0);
    for i in 0..1000u32 {
        let xff = format!("X-Forwarded-For: 2001:db8:abcd:{i:x}::{:x}\r\n", i + 1);
        let a = conn
            .request(guest_get("/api/v1/events/rotating-token", &xff))
            .await;
        match a.status {
            200 => passed += 1,
            429 => limited += 1,
            other => panic!("request {i}: {other} {}", a.text()),
        }
    }
    assert_eq!((passed, limited), (50, 950));
    assert_eq!(rec.parsed().len(), 50);
    // Another /48, and an IPv4 client, have their own network.
    for xff in ["2001:db8:abce::1", "203.0.113.7"] {
        let a = conn
            .request(guest_get(
                "/api/v1/events/rotating-token",
                &format!("X-Forwarded-For: {xff}\r\n"),
            ))
            .await;
        assert_eq!(a.status, 200, "{xff}");
    }
    let lines = shield.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"reason\":\"token_rate_limited\"")
                && l.contains("\"limit\":\"guest-net\"")),
        "{:#?}",
        &lines[..lines.len().min(5)]
    );
    let metrics = shield.shield.metrics_text(Format::Prometheus);
    assert!(
        metrics
            .contains("joinshield_limit_info{limit=\"guest-net\",key=\"net\",mode=\"enforce\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("joinshield_limiter_keys{limit=\"guest-net\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn underscore_and_client_forwarding_headers_never_reach_the_app() {
    let (shield, rec) = fronted("", &[]).await;
    let extra = "X_Real_Ip: 6.6.6.6\r\nClient_Ip: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\n\
                 X.Real.Ip: 6.6.6.6\r\nX-FORWARDED-SERVER: evil.test\r\nx-original-url: /admin\r\n\
                 X-Rewrite-Url: /admin\r\nX-Forwarded-Prefix: /evil\r\nx-forwarded-PORT: 1\r\n\
                 X-Forwarded-Ssl: on\r\nFORWARDED: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                 X-App-Header: kept\r\n";
    let a = request(
        shield.addr(),
        format!("GET /api/v1/events/some-token HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{extra}\r\n"),
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1);
    let names: Vec<String> = seen[0]
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    for name in &names {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name} reached the app: {names:?}"
        );
        assert!(
            !matches!(
                name.as_str(),
                "x-forwarded-server"
                    | "x-original-url"
                    | "x-rewrite-url"
                    | "x-forwarded-prefix"
                    | "x-forwarded-port"
                    | "x-forwarded-ssl"
                    | "forwarded"
                    | "x-real-ip"
            ),
            "{name} reached the app: {names:?}"
        );
    }
    assert_eq!(seen[0].header("x-app-header"), Some("kept"));
    // The shield's own: the peer (no X-Forwarded-For came in the dashed spelling).
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-forwarded-host"), Some("app.test"));
    assert!(!seen[0].headers.iter().any(|(_, v)| v.contains("6.6.6.6")));
    let metrics = shield.shield.metrics_text(Format::Prometheus);
    for line in [
        "joinshield_request_headers_dropped_total{reason=\"underscore\"} 3",
        "joinshield_request_headers_dropped_total{reason=\"invalid_name\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_clients_request_id_is_replaced_and_a_trusted_proxys_kept_only_when_well_formed() {
    // An untrusted peer: whatever it sends is replaced.
    let (untrusted, rec) = fronted("[client]\ntrusted_proxies = []\n", &[]).await;
    let a = get(untrusted.addr(), "/x", "X-Request-Id: trace-42\r\n").await;
    let sent_up = rec.parsed()[0].header("x-request-id").unwrap().to_string();
    assert_ne!(sent_up, "trace-42");
    assert_eq!(sent_up.len(), 32, "{sent_up}");
    assert!(sent_up.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.header("x-request-id"), Some(sent_up.as_str()));

    // A trusted proxy (the loopback peer): a short token is kept, anything else replaced.
    let (trusted, rec) = fronted("", &[]).await;
    for (i, (id, kept)) in [
        ("trace-42", true),
        ("123e4567-e89b-12d3-a456-426614174000", true),
        ("svc.a:b_c-1", true),
        ("has space", false),
        ("semi;colon", false),
        ("Root=1-5f84c7a9-1", false),
        (&*"a".repeat(65), false),
    ]
    .into_iter()
    .enumerate()
    {
        let a = get(trusted.addr(), "/x", &format!("X-Request-Id: {id}\r\n")).await;
        let up = rec.parsed()[i].header("x-request-id").unwrap().to_string();
        assert_eq!(up == id, kept, "{id:?} -> {up:?}");
        assert_eq!(a.header("x-request-id"), Some(up.as_str()), "{id:?}");
    }
    // Two ids from the proxy: neither is believed.
    get(
        trusted.addr(),
        "/x",
        "X-Request-Id: one-1\r\nX-Request-Id: two-2\r\n",
    )
    .await;
    let up = rec.parsed()[7].header("x-request-id").unwrap().to_string();
    assert!(up != "one-1" && up != "two-2", "{up}");
    // Generated ids share nothing a counter would: not even their first 16 digits.
    let (x, y) = (
        get(trusted.addr(), "/x", "").await,
        get(trusted.addr(), "/x", "").await,
    );
    let (x, y) = (
        x.header("x-request-id").unwrap().to_string(),
        y.header("x-request-id").unwrap().to_string(),
    );
    assert_ne!(x[..16], y[..16], "{x} {y}");
}

/// The status of the one answer to an HTTP/1.0 request `raw` (the strict client reads only
/// HTTP/1.1 answers; the shield answers an HTTP/1.0 request in HTTP/1.0) and its head, read
/// until the shield closes.
async fn http_1_0(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the shield closes after an HTTP/1.0 answer")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.0 answer: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn http_1_0_without_host_is_forwarded_with_the_upstreams_host() {
    let (shield, rec) = fronted("", &[]).await;
    let (status, _) = http_1_0(
        shield.addr(),
        "GET /api/v1/events/some-token HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let seen = rec.parsed();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("host"),
        Some(rec.addr.to_string().as_str()),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].header("x-forwarded-host"), None);
    // With a Host, HTTP/1.0 keeps it.
    let (status, _) = http_1_0(
        shield.addr(),
        "GET /api/v1/events/some-token HTTP/1.0\r\nHost: guests.example\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rec.parsed()[1].header("host"), Some("guests.example"));
}

#[tokio::test]
async fn a_host_that_is_not_a_host_name_or_address_is_400_with_the_json_body() {
    let (shield, rec) = fronted("", &[]).await;
    for head in [
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: app.test:80@evil.test\r\n",
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: evil.test/x\r\n",
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: a b\r\n",
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: \r\n",
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: app.test:99999\r\n",
        "GET /api/v1/events/some-token HTTP/1.1\r\nHost: app..test\r\n",
        "GET http://user@app.test/api/v1/events/some-token HTTP/1.1\r\nHost: app.test\r\n",
        "GET http://app.test/api/v1/events/some-token HTTP/1.1\r\nHost: %61pp.test\r\n",
    ] {
        let x = exchange(shield.addr(), format!("{head}\r\n")).await;
        assert_eq!(x.statuses(), [400], "{head:?}");
        let a = &x.answers[0];
        assert_eq!(
            a.header("content-type"),
            Some("application/json"),
            "{head:?}"
        );
        assert_eq!(a.json()["error"]["code"], "bad_request", "{head:?}");
        assert!(
            a.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("Host") || m.contains("host name")),
            "{head:?}: {}",
            a.text()
        );
    }
    // HTTP/1.0 too.
    let (status, head) = http_1_0(
        shield.addr(),
        "GET /api/v1/events/some-token HTTP/1.0\r\nHost: app..test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    assert!(head.contains("\"code\":\"bad_request\""), "{head}");
    assert!(rec.parsed().is_empty(), "{:?}", rec.parsed());
    // An absolute-form target names the host: a different Host is replaced (RFC 9112 §3.2.2).
    let x = exchange(
        shield.addr(),
        "GET http://guests.example/api/v1/events/some-token HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(x.statuses(), [200]);
    assert_eq!(rec.parsed()[0].header("host"), Some("guests.example"));
}

#[tokio::test]
async fn a_post_is_judged_by_every_class_a_method_override_could_route_it_to() {
    // Downloads are GET-only and paused; uploads are POST-only and open. Laravel routes a POST
    // carrying X-HTTP-Method-Override: GET (or _method=GET in its query or body) as a GET.
    let rest = "[[route]]\nname = \"download\"\nmethods = [\"GET\"]\npaths = [\"/d/{token}\"]\n\n\
                [[route]]\nname = \"upload\"\nmethods = [\"POST\"]\npaths = [\"/u/{token}\"]\n\n\
                [[switch]]\nname = \"downloads\"\nroutes = [\"download\"]\npaused = true\n";
    let (shield, rec) = fronted(rest, &[]).await;
    for head in [
        "GET /d/some-token HTTP/1.1\r\n",
        "POST /d/some-token HTTP/1.1\r\nX-HTTP-Method-Override: GET\r\n",
        "post /d/some-token HTTP/1.1\r\nx-http-method-override: get\r\n",
        "POST /d/some-token?_method=GET HTTP/1.1\r\n",
        // The body may carry _method=GET: the shield does not read it before deciding.
        "POST /d/some-token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n",
    ] {
        let raw = format!("{head}Host: app.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let x = exchange(shield.addr(), raw).await;
        assert_eq!(x.statuses(), [503], "{head:?}");
        assert_eq!(x.answers[0].json()["error"]["code"], "service_paused");
    }
    assert!(rec.parsed().is_empty(), "{:?}", rec.parsed());
    // An upload reaches no paused class, with or without an override.
    for head in [
        "POST /u/some-token HTTP/1.1\r\n",
        "POST /u/some-token HTTP/1.1\r\nX-HTTP-Method-Override: PUT\r\n",
    ] {
        let raw = format!("{head}Host: app.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let x = exchange(shield.addr(), raw).await;
        assert_eq!(x.statuses(), [200], "{head:?}");
    }
    assert_eq!(rec.parsed().len(), 2);
}

#[test]
fn token_hash_prints_the_line_that_revokes_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("folded.toml");
    std::fs::write(
        &folded,
        "[server]\nupstream = \"http://127.0.0.1:8000\"\n\n[tokens]\ncase_sensitive = false\n",
    )
    .unwrap();
    let exact = dir.path().join("exact.toml");
    std::fs::write(
        &exact,
        "[server]\nupstream = \"http://127.0.0.1:8000\"\n\n[tokens]\ncase_sensitive = true\n",
    )
    .unwrap();
    let sha = |t: &str| {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(t.as_bytes())))
    };
    let ran = run_bin(["token-hash", "-c", folded.to_str().unwrap(), "ABC123xyz "]);
    assert!(ran.success(), "{}", ran.text());
    assert_eq!(ran.stdout, format!("{}\n", sha("abc123xyz")));
    assert!(ran.stderr.contains("letter case"), "{}", ran.stderr);
    // Every spelling prints the same line; a token may begin with '-'.
    let again = run_bin(["token-hash", "abc123XYZ\t", "-c", folded.to_str().unwrap()]);
    assert_eq!(again.stdout, ran.stdout);
    let dash = run_bin(["token-hash", "-c", folded.to_str().unwrap(), "-Lead-Dash"]);
    assert_eq!(
        dash.stdout,
        format!("{}\n", sha("-lead-dash")),
        "{}",
        dash.text()
    );
    // Case-sensitive: the token exactly as given.
    let ran = run_bin(["token-hash", "-c", exact.to_str().unwrap(), "ABC123xyz "]);
    assert_eq!(ran.stdout, format!("{}\n", sha("ABC123xyz ")));
    // The rest of the file may be mid-edit; [tokens] itself may not.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nupstream = 12\nlisten = \"nope\"\n\n[tokens]\ncase_sensitive = false\n",
    )
    .unwrap();
    let ran = run_bin(["token-hash", "-c", broken.to_str().unwrap(), "ABC123xyz"]);
    assert_eq!(
        ran.stdout,
        format!("{}\n", sha("abc123xyz")),
        "{}",
        ran.text()
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[tokens]\ncase_sensitive = \"no\"\nfold = 1\n").unwrap();
    let ran = run_bin(["token-hash", "-c", bad.to_str().unwrap(), "ABC123xyz"]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stdout.is_empty());
    assert!(
        ran.stderr.contains("tokens.case_sensitive"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("tokens.fold"), "{}", ran.stderr);
    let absent = dir.path().join("absent.toml");
    let missing = run_bin(["token-hash", "-c", absent.to_str().unwrap(), "x"]);
    assert_eq!(missing.code, Some(1));
    let empty = run_bin(["token-hash", "-c", folded.to_str().unwrap(), "  "]);
    assert_eq!(empty.code, Some(1));
}
