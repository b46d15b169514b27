//! `/metrics` over real sockets: a forwarded, a rate-limited and a shadow-limited request move
//! the right series, the exposition names no client or token, `promtool` accepts it, and a
//! scraper that asks for OpenMetrics gets it.
#![allow(clippy::disallowed_methods)] // bounded waits measure real time

mod support;

use support::promtool::promtool_accepts;
use support::*;

const T: &str = "demo-wedding-2026";
const IP: &str = "203.0.113.77";

const LIMITS: &str = "[[limit]]\nname = \"gallery-ip\"\nroutes = [\"gallery\"]\nkey = \"ip\"\n\
     rate = \"1/h\"\nburst = 1\n\n\
     [[limit]]\nname = \"events-trial\"\nroutes = [\"events\"]\nkey = \"token\"\n\
     rate = \"1/h\"\nburst = 1\nmode = \"shadow\"\n";

/// The value of the sample `series` (name and labels exactly as written), if present.
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

/// `/metrics` in the Prometheus text format, the default.
async fn scrape(h: &Harness) -> String {
    let a = admin(h, "GET", "/metrics", None, "").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    a.text()
}

/// `/metrics` as OpenMetrics, asked for the way Prometheus asks.
async fn scrape_openmetrics(h: &Harness) -> String {
    let raw = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
               Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4\r\n\r\n";
    let a = request(h.shield.admin_addr, raw).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    a.text()
}

async fn guest(h: &Harness, path: &str) -> u16 {
    from(h, IP, path).await.status
}

#[tokio::test]
async fn forwarded_limited_and_shadow_requests_move_their_series_and_name_no_client() {
    let h = spawn_shield("", LIMITS).await;
    let before = scrape(&h).await;
    assert_eq!(
        value(
            &before,
            "joinshield_requests_total{route=\"events\",status_class=\"2xx\"}"
        ),
        Some(0.0)
    );

    // Forwarded, then over the shadow limit: both reach the app.
    assert_eq!(guest(&h, &format!("/api/v1/events/{T}")).await, 200);
    assert_eq!(guest(&h, &format!("/api/v1/events/{T}")).await, 200);
    // Forwarded, then over the enforced limit: a 429 from the shield.
    assert_eq!(guest(&h, &format!("/api/v1/gallery/{T}")).await, 200);
    assert_eq!(guest(&h, &format!("/api/v1/gallery/{T}")).await, 429);
    // Outside every route class.
    assert_eq!(guest(&h, "/").await, 200);
    assert_eq!(h.upstream_requests(), 4);

    let m = scrape(&h).await;
    let expect = [
        ("joinshield_requests_total{route=\"events\",status_class=\"2xx\"}", 2.0),
        ("joinshield_requests_total{route=\"gallery\",status_class=\"2xx\"}", 1.0),
        ("joinshield_requests_total{route=\"gallery\",status_class=\"4xx\"}", 1.0),
        ("joinshield_requests_total{route=\"other\",status_class=\"2xx\"}", 1.0),
        (
            "joinshield_denials_total{route=\"gallery\",reason=\"token_rate_limited\",mode=\"enforce\"}",
            1.0,
        ),
        (
            "joinshield_denials_total{route=\"events\",reason=\"token_rate_limited\",mode=\"shadow\"}",
            1.0,
        ),
        ("joinshield_upstream_latency_seconds_count{route=\"events\"}", 2.0),
        ("joinshield_upstream_latency_seconds_count{route=\"gallery\"}", 1.0),
        ("joinshield_upstream_latency_seconds_bucket{route=\"gallery\",le=\"+Inf\"}", 1.0),
        ("joinshield_upstream_errors_total{kind=\"unavailable\"}", 0.0),
        ("joinshield_limiter_keys{limit=\"gallery-ip\"}", 1.0),
        ("joinshield_limiter_keys{limit=\"events-trial\"}", 1.0),
        ("joinshield_limiter_evictions_total{limit=\"gallery-ip\"}", 0.0),
        // A full table evicts (no shared overflow bucket any more); idle keys are pruned.
        ("joinshield_limiter_pruned_total{limit=\"gallery-ip\"}", 0.0),
        ("joinshield_connections_refused_total{reason=\"per_ip\"}", 0.0),
        ("joinshield_connections_refused_total{reason=\"max\"}", 0.0),
        ("joinshield_bans_active", 0.0),
        ("joinshield_config_version", 1.0),
        ("joinshield_config_reloads_total{result=\"applied\"}", 0.0),
        ("joinshield_list_entries{list=\"blocklist\"}", 0.0),
        ("joinshield_log_records_dropped_total", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&m, series), Some(want), "{series} in\n{m}");
    }
    // The shadow hit was let through: no enforced denial on events.
    assert!(!m.contains("route=\"events\",reason=\"token_rate_limited\",mode=\"enforce\""));
    for secret in [IP, "127.0.0.1", T, "/api/"] {
        assert!(!m.contains(secret), "{secret:?} leaked into\n{m}");
    }

    // A reload is counted, and the route counters survive it.
    let shared = h.shield.reloader();
    tokio::task::spawn_blocking(move || shared.reload_logged())
        .await
        .unwrap();
    let after = scrape(&h).await;
    assert_eq!(value(&after, "joinshield_config_version"), Some(2.0));
    assert_eq!(
        value(
            &after,
            "joinshield_config_reloads_total{result=\"applied\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            "joinshield_requests_total{route=\"events\",status_class=\"2xx\"}"
        ),
        Some(2.0)
    );

    promtool_accepts(&after);

    let om = scrape_openmetrics(&h).await;
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(
        value(
            &om,
            "joinshield_requests_total{route=\"gallery\",status_class=\"4xx\"}"
        ),
        Some(1.0)
    );
    for secret in [IP, "127.0.0.1", T, "/api/"] {
        assert!(!om.contains(secret), "{secret:?} leaked into\n{om}");
    }
}

#[tokio::test]
async fn an_app_that_is_down_counts_as_an_upstream_error_and_a_denial() {
    let h = spawn_shield("", "").await;
    h.app.stop();
    // Wait until the stand-in no longer accepts (no sleep as synchronisation: poll the port).
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(h.app.addr).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(guest(&h, &format!("/api/v1/events/{T}")).await, 502);
    let m = scrape(&h).await;
    for (series, want) in [
        ("joinshield_upstream_errors_total{kind=\"unavailable\"}", 1.0),
        ("joinshield_upstream_errors_total{kind=\"timeout\"}", 0.0),
        (
            "joinshield_denials_total{route=\"events\",reason=\"upstream_unavailable\",mode=\"enforce\"}",
            1.0,
        ),
        ("joinshield_requests_total{route=\"events\",status_class=\"5xx\"}", 1.0),
        ("joinshield_upstream_latency_seconds_count{route=\"events\"}", 0.0),
    ] {
        assert_eq!(value(&m, series), Some(want), "{series} in\n{m}");
    }
    promtool_accepts(&m);
}

#[tokio::test]
async fn requests_hyper_refuses_before_the_checks_are_counted_by_reason() {
    let h = spawn_shield("header_timeout = \"300ms\"", "").await;
    let malformed = exchange(h.addr(), "GET / HTTQ/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(malformed.statuses(), [400]);
    assert_eq!(malformed.end, End::Closed);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let too_large = exchange(h.addr(), big).await;
    assert_eq!(too_large.statuses(), [431]);
    assert_eq!(too_large.end, End::Closed);
    // Half a head, then nothing: the shield closes the connection after header_timeout.
    let slow = exchange(h.addr(), "GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(
        !matches!(slow.status(), Some(200..=299)),
        "{:?}",
        slow.statuses()
    );
    assert_eq!(slow.end, End::Closed);
    // The count lands when the connection's task ends, just after the client saw the close.
    let start = std::time::Instant::now();
    let want = [
        ("joinshield_http_refused_total{reason=\"malformed\"}", 1.0),
        (
            "joinshield_http_refused_total{reason=\"head_too_large\"}",
            1.0,
        ),
        (
            "joinshield_http_refused_total{reason=\"header_timeout\"}",
            1.0,
        ),
    ];
    loop {
        let m = scrape(&h).await;
        if want.iter().all(|(s, v)| value(&m, s) == Some(*v)) {
            promtool_accepts(&m);
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "want {want:?} in\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
