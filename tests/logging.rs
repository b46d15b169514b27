//! Denials, reloads and folding as they appear in the log, over real sockets.

mod support;

use support::*;

const LIMIT: &str =
    "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n";

#[tokio::test]
async fn a_rate_limit_denial_is_one_laravel_line_with_the_token_preview_only() {
    let h = spawn_shield("", LIMIT).await;
    let token = "demoSecretToken1234";
    let path = format!("/api/v1/gallery/{token}/photos");
    assert_eq!(
        get(h.addr(), &path, "X-Forwarded-For: 203.0.113.7\r\n")
            .await
            .status,
        404
    );
    assert_eq!(
        get(
            h.addr(),
            &path,
            "X-Forwarded-For: 203.0.113.7\r\nX-Request-Id: req-1\r\n"
        )
        .await
        .status,
        429
    );
    let lines = h.log_lines().await;
    let denied: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Join token access denied"))
        .collect();
    assert_eq!(denied.len(), 1, "{lines:?}");
    let line = denied[0];
    assert!(!line.contains(token), "whole token logged: {line}");
    let expected_tail =
        "production.WARNING: Join token access denied {\"reason\":\"token_rate_limited\",\
        \"ip\":\"203.0.113.7\",\"token\":\"demoSe...\",\"route\":\"gallery\",\"method\":\"GET\",\
        \"path\":\"/api/v1/gallery/demoSe.../photos\",\"limit\":\"guest-ip\",\"retry_after\":3600,\
        \"request_id\":\"req-1\"} ";
    assert!(line.ends_with(expected_tail), "{line}");
    // `[Y-m-d H:i:s] ` prefix.
    let stamp = &line[..22];
    assert!(
        stamp.starts_with('[') && stamp.ends_with("] ") && stamp.as_bytes()[11] == b' ',
        "{line}"
    );
}

#[tokio::test]
async fn a_flood_of_one_client_is_folded_into_one_line() {
    let h = spawn_shield("", LIMIT).await;
    for _ in 0..50 {
        get(
            h.addr(),
            "/api/v1/events/demo-wedding-2026",
            "X-Forwarded-For: 203.0.113.9\r\n",
        )
        .await;
    }
    let lines = h.log_lines().await;
    let denied = lines
        .iter()
        .filter(|l| l.contains("Join token access denied"))
        .count();
    assert_eq!(denied, 1, "{lines:?}");
}

#[tokio::test]
async fn a_denial_off_the_guest_routes_is_access_denied() {
    let h = spawn_shield("max_body = \"10\"", "").await;
    let raw = "POST /contact HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
    assert_eq!(request(h.addr(), raw).await.status, 413);
    let lines = h.log_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("production.WARNING: Access denied {\"reason\":\"payload_too_large\",\"ip\":\"127.0.0.1\",\"method\":\"POST\",\"path\":\"/contact\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn request_values_cannot_break_a_line() {
    let h = spawn_shield("", LIMIT).await;
    let path = "/api/v1/events/demo-x%0d%0aINJECTED";
    get(h.addr(), path, "").await;
    get(h.addr(), path, "").await;
    let lines = h.log_lines().await;
    assert!(lines.iter().all(|l| l.starts_with('[')), "{lines:?}");
}

#[tokio::test]
async fn reloads_are_logged_with_what_changed_and_rejections_with_every_error() {
    let h = spawn_shield("", LIMIT).await;
    let text = std::fs::read_to_string(h.config_path())
        .unwrap()
        .replace("rate = \"1/h\"", "rate = \"60/min\"");
    std::fs::write(h.config_path(), text).unwrap();
    h.shield.reload_logged();
    std::fs::write(h.config_path(), "[server]\nlisten = 5\n").unwrap();
    h.shield.reload_logged();
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(
                "production.NOTICE: Shield configuration reloaded {\"version\":2,\"sha256\":\""
            ) && l.contains("\"changes\":[\"limit guest-ip rate 1/h -> 60/min\"]")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l
            .contains("production.ERROR: Shield configuration rejected {\"errors\":[")
            && l.contains("server.listen")
            && l.contains("server.upstream: missing")
            && l.ends_with("\"version\":2} ")),
        "{lines:?}"
    );
}
