//! The access log (`[log] access = "json"`) over real sockets: every kind of answer makes one
//! line with its fields, a token never appears whole in any spelling, bytes count what was
//! sent (a client gone mid-answer makes a `complete:false` line), and off means no file and no
//! writer.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http::Method;
use joinshield::policy::classify::{default_specs, RouteTable};
use joinshield::testkit::standin::DOWNLOAD_BYTES;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use support::recorder::{self, Mode};
use support::spellings::{base_path, fronted_targets, method, respell, token};
use support::*;

/// The `[log]` section of an access-logging shield: its denial log and access log side by side.
const ACCESS: &str =
    "[log]\nfile = \"shield.log\"\naccess = \"json\"\naccess_file = \"access.log\"\n";

/// How long waiting for a line may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// Waits until the shield has written `n` access lines (each is written when its answer has
/// ended), then returns every line of the access log, parsed.
async fn access_lines(shield: &joinshield::Running, dir: &std::path::Path, n: u64) -> Vec<Value> {
    let mut written = shield.access_lines().expect("the access log is on");
    tokio::time::timeout(DEADLINE, written.wait_for(|w| *w >= n))
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} access lines written"))
        .unwrap();
    shield.flush_log().await;
    read_lines(&dir.join("access.log"))
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The lines by request id; each id must appear once.
fn by_id(lines: &[Value]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for l in lines {
        let id = l["request_id"].as_str().unwrap().to_string();
        assert!(
            out.insert(id.clone(), l.clone()).is_none(),
            "two lines for {id}"
        );
    }
    out
}

/// Every key of a line, in order.
const KEYS: [&str; 14] = [
    "time",
    "ip",
    "method",
    "route",
    "path",
    "token",
    "status",
    "reason",
    "bytes",
    "complete",
    "upstream_ms",
    "request_id",
    "protocol",
    "tls",
];

fn assert_shape(line: &Value) {
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{line}");
    let time = line["time"].as_str().unwrap();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && time.len() == 29,
        "not RFC 3339 with milliseconds and an offset: {time}"
    );
}

#[tokio::test]
async fn every_kind_of_answer_makes_one_line_with_its_fields() {
    let rest = format!(
        "{ACCESS}\n[lists]\nblocklist = \"block.txt\"\nrevoked_tokens = \"revoked.txt\"\n\n\
         [[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 2\n\n\
         [[switch]]\nname = \"downloads\"\nroutes = [\"gallery_download\"]\npaused = true\n\n\
         [enumeration]\nmax_failures = 1000\n"
    );
    let h = spawn_shield_with_files(
        &rest,
        &[
            ("block.txt", "203.0.113.66\n"),
            ("revoked.txt", "revokedToken0001\n"),
        ],
    )
    .await;
    let addr = h.addr();
    let id = |name: &str, ip: &str| format!("X-Request-Id: {name}\r\nX-Forwarded-For: {ip}\r\n");
    let token = "demo-abc123XYZ789";
    let ok = get(
        addr,
        &format!("/api/v1/events/{token}"),
        &id("ok", "198.51.100.1"),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        get(addr, "/", &id("root", "198.51.100.1")).await.status,
        200
    );
    for i in 0..2 {
        let a = get(
            addr,
            "/api/v1/events/demo-limited01",
            &id(&format!("pass{i}"), "198.51.100.2"),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    let limited = get(
        addr,
        "/api/v1/events/demo-limited01",
        &id("limited", "198.51.100.2"),
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        get(addr, "/api/v1/gallery/x", &id("blocked", "203.0.113.66"))
            .await
            .status,
        403
    );
    assert_eq!(
        get(addr, "/api/v1/gallery/ab", &id("invalid", "198.51.100.3"))
            .await
            .status,
        404
    );
    assert_eq!(
        get(
            addr,
            "/api/v1/gallery/revokedToken0001",
            &id("revoked", "198.51.100.3")
        )
        .await
        .status,
        410
    );
    assert_eq!(
        get(
            addr,
            &format!("/api/v1/gallery/{token}/download"),
            &id("paused", "198.51.100.3")
        )
        .await
        .status,
        503
    );
    let big = get(
        addr,
        &format!("/gallery/{token}"),
        &id("page", "198.51.100.4"),
    )
    .await;
    assert_eq!(big.status, 200);
    let mut conn = Conn::open(addr).await;
    conn.send(format!(
        "HEAD /api/v1/events/{token} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{}\r\n",
        id("head", "198.51.100.5")
    ))
    .await;
    assert_eq!(conn.answer_to_head().await.status, 200);
    conn.closed().await;
    let too_large = request(
        addr,
        format!(
            "POST /api/v1/events/{token}/upload HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{}Content-Length: 999999999\r\n\r\n",
            id("large", "198.51.100.6")
        ),
    )
    .await;
    assert_eq!(too_large.status, 413);
    let no_host = request(
        addr,
        format!(
            "GET /api/v1/events/{token} HTTP/1.1\r\nConnection: close\r\n{}\r\n",
            id("nohost", "198.51.100.7")
        ),
    )
    .await;
    assert_eq!(no_host.status, 400);

    let lines = access_lines(&h.shield, h.dir.path(), 13).await;
    assert_eq!(lines.len(), 13, "one line per answer: {lines:#?}");
    lines.iter().for_each(assert_shape);
    let lines = by_id(&lines);
    let line = |id: &str| lines.get(id).unwrap_or_else(|| panic!("no line for {id}"));

    let l = line("ok");
    assert_eq!(l["ip"], "198.51.100.1");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["route"], "events");
    assert_eq!(l["path"], "/api/v1/events/demo-a...");
    assert_eq!(l["token"], "demo-a...");
    assert_eq!(l["status"], 200);
    assert_eq!(l["reason"], Value::Null);
    assert_eq!(l["bytes"], ok.body.len());
    assert_eq!(l["complete"], true);
    assert!(l["upstream_ms"].as_f64().is_some(), "{l}");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["tls"], false);

    let l = line("root");
    assert_eq!(
        (&l["route"], &l["token"], &l["path"]),
        (&Value::Null, &Value::Null, &Value::from("/"))
    );

    for (id, status, reason) in [
        ("limited", 429, "token_rate_limited"),
        ("blocked", 403, "ip_blocked"),
        ("invalid", 404, "invalid_token"),
        ("revoked", 410, "token_revoked"),
        ("paused", 503, "service_paused"),
        ("large", 413, "payload_too_large"),
        ("nohost", 400, "bad_request"),
    ] {
        let l = line(id);
        assert_eq!(l["status"], status, "{l}");
        assert_eq!(l["reason"], reason, "{l}");
        assert_eq!(l["upstream_ms"], Value::Null, "{l}");
        assert_eq!(l["complete"], true, "{l}");
        assert!(l["bytes"].as_u64().unwrap() > 0, "the JSON body: {l}");
    }
    assert_eq!(line("invalid")["token"], "a...");
    assert_eq!(line("revoked")["path"], "/api/v1/gallery/revoke...");
    assert_eq!(line("large")["method"], "POST");
    assert_eq!(line("page")["route"], "gallery");
    assert_eq!(line("page")["bytes"], big.body.len());
    // HEAD: the app's answer has no body to send, and it went out whole.
    let l = line("head");
    assert_eq!(
        (&l["method"], &l["bytes"], &l["complete"]),
        (&Value::from("HEAD"), &Value::from(0), &Value::from(true))
    );
    h.shield.shutdown().await;
}

#[tokio::test]
async fn a_streamed_download_counts_its_bytes() {
    let h = spawn_shield("", ACCESS).await;
    let a = get(
        h.addr(),
        "/api/v1/gallery/demo-abc123XYZ789/download",
        "X-Request-Id: dl\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), DOWNLOAD_BYTES);
    let lines = access_lines(&h.shield, h.dir.path(), 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["route"], "gallery_download");
    assert_eq!(lines[0]["bytes"], DOWNLOAD_BYTES);
    assert_eq!(lines[0]["complete"], true);
}

#[tokio::test]
async fn upstream_failures_are_lines_with_their_reason_and_upstream_time() {
    let f = spawn_shield_at(closed_port(), "", ACCESS).await;
    let a = get(
        f.addr(),
        "/api/v1/events/abc123XYZ789",
        "X-Request-Id: down\r\n",
    )
    .await;
    assert_eq!(a.status, 502);
    let lines = access_lines(&f.shield, f.dir.path(), 1).await;
    assert_eq!(lines[0]["status"], 502);
    assert_eq!(lines[0]["reason"], "upstream_unavailable");
    assert!(lines[0]["upstream_ms"].as_f64().is_some(), "{}", lines[0]);
    f.shield.shutdown().await;

    let rec = recorder::spawn(Mode::Hold).await;
    let f = spawn_shield_at(rec.addr, "upstream_timeout = \"200ms\"", ACCESS).await;
    let a = get(
        f.addr(),
        "/api/v1/events/abc123XYZ789",
        "X-Request-Id: slow\r\n",
    )
    .await;
    assert_eq!(a.status, 504);
    let lines = access_lines(&f.shield, f.dir.path(), 1).await;
    assert_eq!(lines[0]["reason"], "upstream_timeout");
    // Measured around the exchange, which the timeout ended.
    assert!(
        lines[0]["upstream_ms"].as_f64().unwrap() >= 200.0,
        "{}",
        lines[0]
    );
    rec.release();
    f.shield.shutdown().await;
}

#[tokio::test]
async fn an_answer_cut_short_is_one_line_marked_incomplete() {
    // The client goes away after the head of a 64 MiB answer.
    let rec = recorder::spawn(Mode::Huge).await;
    let f = spawn_shield_at(rec.addr, "", ACCESS).await;
    let mut conn = Conn::open(f.addr()).await;
    conn.send(b"GET /api/v1/gallery/abc123XYZ789/download HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: gone\r\n\r\n")
        .await;
    rec.wait_for(1).await;
    drop(conn);
    let lines = access_lines(&f.shield, f.dir.path(), 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["request_id"], "gone");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["complete"], false);
    assert!(
        lines[0]["bytes"].as_u64().unwrap() < 64 << 20,
        "{}",
        lines[0]
    );
    f.shield.shutdown().await;

    // The app dies 10 bytes into an answer it promised 1 MiB of.
    let rec = recorder::spawn(Mode::DieMidResponse).await;
    let f = spawn_shield_at(rec.addr, "", ACCESS).await;
    let mut conn = Conn::open(f.addr()).await;
    conn.send(
        b"GET /api/v1/events/abc123XYZ789 HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: died\r\n\r\n",
    )
    .await;
    assert!(conn.try_answer().await.is_err(), "the answer is cut short");
    let lines = access_lines(&f.shield, f.dir.path(), 1).await;
    assert_eq!(lines[0]["request_id"], "died");
    assert_eq!(lines[0]["complete"], false);
    assert_eq!(lines[0]["bytes"], 10);
    f.shield.shutdown().await;
}

/// Whether a token is a secret the log must hide: a token of dots only is inside its own
/// preview (`...`), in the token field as in the denial log.
fn secret(token: &str) -> bool {
    token.chars().any(|c| c != '.')
}

#[tokio::test]
async fn a_token_never_appears_whole_in_any_spelling() {
    let rec = recorder::spawn(Mode::Answer).await;
    let f = spawn_shield_at(rec.addr, "", ACCESS).await;
    let table = RouteTable::new(&default_specs()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x6163_6365);
    let mut targets: Vec<(String, Vec<u8>)> = (0..800)
        .map(|_| {
            let t = token(&mut rng);
            let path = base_path(&mut rng, &t);
            (method(&mut rng), respell(&mut rng, &path))
        })
        .collect();
    targets.extend(fronted_targets());
    let mut expected: HashMap<String, (String, String)> = HashMap::new();
    for (i, (m, target)) in targets.iter().enumerate() {
        let Ok(parsed) = Method::from_bytes(m.as_bytes()) else {
            continue;
        };
        let Some(token) = table.classify_target(&parsed, target).token else {
            continue;
        };
        let id = format!("sp-{i}");
        let mut raw = Vec::new();
        raw.extend_from_slice(m.as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(target);
        raw.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nX-Request-Id: {id}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        let mut conn = Conn::open(f.addr()).await;
        conn.send(&raw).await;
        let answered = if m == "HEAD" {
            conn.head_answer_or_end().await
        } else {
            conn.answer_or_end().await
        };
        if answered.is_ok() {
            // The connection closes after the answer, so its line is queued by then.
            let _ = conn.end().await;
            expected.insert(
                id,
                (
                    token.to_string(),
                    String::from_utf8_lossy(target).into_owned(),
                ),
            );
        }
    }
    assert!(
        expected.len() > 500,
        "the generator must carry tokens: {}",
        expected.len()
    );
    f.shield.flush_log().await;
    let lines = by_id(&read_lines(&f.dir.path().join("access.log")));
    let mut checked = 0;
    for (id, (token, target)) in &expected {
        // hyper refuses some targets itself (no line); every answer the shield made has one.
        let Some(line) = lines.get(id) else {
            continue;
        };
        checked += 1;
        if !secret(token) {
            continue;
        }
        for field in ["path", "token"] {
            let v = line[field].as_str().unwrap_or("");
            assert!(
                !v.contains(token.as_str()),
                "{target:?} (token {token:?}): {field} {v}"
            );
        }
        if token.len() >= 8 {
            let text = line.to_string();
            assert!(!text.contains(token.as_str()), "{target:?}: {text}");
        }
    }
    assert!(checked > 500, "lines checked: {checked}");
}

#[tokio::test]
async fn off_means_no_file_and_no_writer() {
    let rest = "[log]\nfile = \"shield.log\"\naccess = \"off\"\naccess_file = \"access.log\"\n";
    let h = spawn_shield("", rest).await;
    assert_eq!(
        get(h.addr(), "/api/v1/events/demo-abc123XYZ789", "")
            .await
            .status,
        200
    );
    h.shield.flush_log().await;
    assert!(h.shield.access_lines().is_none(), "no writer is running");
    assert!(!h.dir.path().join("access.log").exists());
    let metrics = h
        .shield
        .metrics_text(joinshield::admin::scrape::Format::Prometheus);
    assert!(!metrics.contains("joinshield_access_log"), "{metrics}");
    // The default is off too.
    let h = spawn_shield("", "").await;
    assert!(h.shield.access_lines().is_none());
}

#[tokio::test]
async fn the_binary_reopens_the_access_log_on_sigusr1() {
    let app = standin().await;
    let child = spawn_binary(app.addr, "", ACCESS, &[]);
    let path = child.dir.path().join("access.log");
    let lines_in = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for _ in 0..3 {
        assert_eq!(
            get(child.addr, "/api/v1/events/demo-abc123XYZ789", "")
                .await
                .status,
            200
        );
    }
    eventually(15, "three access lines", || async { lines_in(&path) == 3 }).await;
    let rotated = child.dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    child.signal("USR1");
    // Lines written before the writer saw the signal still go to the rotated file: keep asking
    // until one reaches the new file.
    eventually(15, "a line in the reopened file", || async {
        assert_eq!(
            get(child.addr, "/api/v1/events/demo-abc123XYZ789", "")
                .await
                .status,
            200
        );
        lines_in(&path) >= 1
    })
    .await;
    assert!(lines_in(&rotated) >= 3);
    let first_new: Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first_new["status"], 200);
    child.signal("TERM");
    let status = tokio::task::spawn_blocking(move || child.wait_exit())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_dropped_records_counter_is_exported_when_the_access_log_is_on() {
    // The queue is bounded; what overflows is counted, never waited for (the unit tests fill
    // it). With a healthy writer nothing is dropped.
    let h = spawn_shield("", ACCESS).await;
    for _ in 0..20 {
        assert_eq!(get(h.addr(), "/", "").await.status, 200);
    }
    access_lines(&h.shield, h.dir.path(), 20).await;
    let metrics = h
        .shield
        .metrics_text(joinshield::admin::scrape::Format::Prometheus);
    assert!(
        metrics
            .lines()
            .any(|l| l == "joinshield_access_log_records_dropped_total 0"),
        "{metrics}"
    );
}
