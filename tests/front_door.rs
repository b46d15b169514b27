//! The front door over real sockets: forwarding, headers, bodies, failures, shutdown.

mod support;

use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

const T: &str = "demo-wedding-2026";

fn echo_headers(a: &Answer) -> serde_json::Map<String, serde_json::Value> {
    a.json()["headers"].as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn guest_request_is_forwarded_with_the_apps_answer() {
    let h = spawn_shield("", "").await;
    let a = get(h.addr(), &format!("/api/v1/events/{T}"), "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["slug"], T);
    assert_eq!(h.upstream_requests(), 1);
    assert!(a.header("x-request-id").is_some());
}

#[tokio::test]
async fn untrusted_peer_cannot_set_client_ip() {
    let h = spawn_shield("", "[client]\ntrusted_proxies = []\n").await;
    let a = get(
        h.addr(),
        "/__standin/echo",
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\n",
    )
    .await;
    let headers = echo_headers(&a);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "app.test");
    assert!(!headers.contains_key("x-real-ip"));
    assert!(!headers.contains_key("forwarded"));
}

#[tokio::test]
async fn trusted_peer_names_the_client_from_the_right() {
    let h = spawn_shield("", "").await;
    let a = get(
        h.addr(),
        "/__standin/echo",
        "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n",
    )
    .await;
    assert_eq!(echo_headers(&a)["x-forwarded-for"], "203.0.113.7");
    let a = get(
        h.addr(),
        "/__standin/echo",
        "X-Forwarded-For: ::ffff:198.51.100.4\r\n",
    )
    .await;
    assert_eq!(echo_headers(&a)["x-forwarded-for"], "198.51.100.4");
}

#[tokio::test]
async fn hop_by_hop_headers_and_connection_named_headers_are_not_forwarded() {
    let h = spawn_shield("", "").await;
    let raw = "GET /__standin/echo HTTP/1.1\r\nHost: app.test\r\nConnection: close, x-private\r\n\
               x-private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
               TE: trailers\r\nX-Request-Id: trace-42\r\nX-Other: kept\r\n\r\n";
    let a = request(h.addr(), raw).await;
    let headers = echo_headers(&a);
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "te",
        "connection",
    ] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(headers["x-other"], "kept");
    assert_eq!(headers["x-request-id"], "trace-42");
    assert_eq!(headers["host"], "app.test");
    assert_eq!(a.header("x-request-id"), Some("trace-42"));
}

#[tokio::test]
async fn absolute_form_target_is_forwarded_by_its_path_with_its_host() {
    let h = spawn_shield("", "").await;
    let raw = "GET http://guests.example/__standin/echo?x=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n";
    let a = request(h.addr(), raw).await;
    let body = a.json();
    assert_eq!(body["target"], "/__standin/echo?x=1");
    assert_eq!(body["headers"]["host"], "guests.example");
}

#[tokio::test]
async fn a_request_without_host_is_refused() {
    let h = spawn_shield("", "").await;
    let a = request(h.addr(), "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(a.status, 400);
    let a = request(
        h.addr(),
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(h.upstream_requests(), 0);
}

#[tokio::test]
async fn upload_body_streams_through_whole() {
    let h = spawn_shield("", "").await;
    let size = 8 * 1024 * 1024;
    let head = format!(
        "POST /api/v1/events/{T}/photos HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    // Written whole before anything is read, as a browser's fetch does.
    let mut conn = Conn::open(h.addr()).await.bound(Duration::from_secs(20));
    let a = conn.upload(&head, &vec![b'p'; size]).await.whole();
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json()["data"]["bytes"], size as u64);
    conn.closed().await;
}

#[tokio::test]
async fn declared_body_over_max_body_is_413_and_never_forwarded() {
    let h = spawn_shield("max_body = \"1KiB\"", "").await;
    // The unread body embeds a request: it must not be read as a second request.
    let smuggled = "GET /api/v1/events/demo-smuggled-1 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let raw = format!(
        "POST /api/v1/events/{T}/photos HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2048\r\n\r\n{smuggled}{}",
        "x".repeat(2048 - smuggled.len())
    );
    let x = exchange(h.addr(), raw).await;
    assert_eq!(x.statuses(), [413]);
    assert_eq!(x.end, End::Closed);
    let a = &x.answers[0];
    assert_eq!(a.json()["error"]["code"], "payload_too_large");
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&x.received)
            .matches("HTTP/1.1")
            .count(),
        1
    );
    assert_eq!(h.upstream_requests(), 0);
}

#[tokio::test]
async fn chunked_body_running_past_max_body_is_413() {
    let h = spawn_shield("max_body = \"1KiB\"", "").await;
    let mut raw = format!("POST /api/v1/events/{T}/photos HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..4 {
        raw.push_str(&format!("400\r\n{}\r\n", "y".repeat(1024)));
    }
    raw.push_str("0\r\n\r\n");
    let a = request(h.addr(), raw).await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(
        h.app
            .state
            .upload_bytes
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_json() {
    let f = spawn_shield_at(closed_port(), "", "").await;
    let a = get(f.addr(), &format!("/api/v1/events/{T}"), "").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["error"]["code"], "upstream_unavailable");
    let ready = get(f.shield.admin_addr, "/readyz", "").await;
    assert_eq!(ready.status, 503);
}

#[tokio::test]
async fn slow_upstream_is_504_json() {
    let h = spawn_shield("upstream_timeout = \"200ms\"", "").await;
    let a = get(h.addr(), "/__standin/slow?ms=3000", "").await;
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn slow_request_head_is_cut_off_after_header_timeout() {
    let h = spawn_shield("header_timeout = \"300ms\"", "").await;
    let mut conn = Conn::open(h.addr()).await.bound(Duration::from_secs(5));
    conn.send("GET / HTTP/1.1\r\nHost: app.test\r\n").await;
    // Closed cleanly, without an answer (hyper ends a slow head silently).
    assert_eq!(
        conn.answer_or_end().await.map(|a| a.status),
        Err(End::Closed)
    );
    assert_eq!(h.upstream_requests(), 0);
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let h = spawn_shield("", "").await;
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let a = request(h.addr(), raw).await;
    assert_eq!(a.status, 431);
    assert_eq!(h.upstream_requests(), 0);
}

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_listener() {
    let h = spawn_shield("", "").await;
    assert_eq!(get(h.shield.admin_addr, "/healthz", "").await.status, 200);
    // The app answered a request: ready.
    get(h.addr(), "/", "").await;
    assert_eq!(get(h.shield.admin_addr, "/readyz", "").await.status, 200);
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    let h = spawn_shield("", "").await;
    let one = format!("GET /api/v1/events/{T} HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let last =
        format!("GET /api/v1/events/{T} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    // Pipelined on one connection: three whole answers, then the close the last one asked for.
    let mut conn = Conn::open(h.addr()).await;
    conn.send(format!("{one}{one}{last}")).await;
    for i in 0..3 {
        assert_eq!(conn.answer().await.status, 200, "answer {i}");
    }
    conn.closed().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let h = spawn_shield("", "").await;
    let addr = h.addr();
    let in_flight = tokio::spawn(async move { get(addr, "/__standin/slow?ms=500", "").await });
    // Wait until the slow request reached the app, then stop.
    tokio::time::timeout(Duration::from_secs(10), h.app.state.arrived.notified())
        .await
        .unwrap();
    let stop = h.shield.stop_handle();
    stop.send(true).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, 200);
    h.shield.wait().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
