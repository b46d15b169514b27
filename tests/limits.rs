//! Rate limits over real sockets: per client, per token, IPv6 networks, mapped IPv4, spoofed
//! headers, shadow mode, and reloads that must not refill buckets.

mod support;

use support::*;

fn limit(name: &str, key: &str, rate: &str, burst: u32, extra: &str) -> String {
    format!(
        "[[limit]]\nname = \"{name}\"\nroutes = [\"events\", \"gallery\", \"upload\", \"gallery_download\"]\n\
         key = \"{key}\"\nrate = \"{rate}\"\nburst = {burst}\n{extra}\n"
    )
}

/// The status of a guest request from `xff` (or from the loopback peer itself when empty).
async fn status(h: &Harness, path: &str, xff: &str) -> u16 {
    if xff.is_empty() {
        get(h.addr(), path, "").await.status
    } else {
        from(h, xff, path).await.status
    }
}

#[tokio::test]
async fn client_over_its_limit_gets_429_with_headers_and_the_app_never_sees_it() {
    let h = spawn_shield("", &limit("guest-ip", "ip", "1/h", 3, "")).await;
    for _ in 0..3 {
        assert_eq!(
            status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
            200
        );
    }
    let a = from(&h, "203.0.113.7", "/api/v1/events/demo-wedding-2026").await;
    assert_eq!(a.status, 429);
    let body = a.json();
    assert_eq!(body["message"], "Too Many Attempts.");
    assert_eq!(body["error"]["code"], "token_rate_limited");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    // One cell an hour: the next frees an hour after the burst began.
    assert!(retry > 3500 && retry <= 3600, "{retry}");
    assert_eq!(body["error"]["retry_after"], retry);
    assert_eq!(a.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
    assert!(a.header("x-ratelimit-reset").is_some());
    assert_eq!(
        a.header("ratelimit-policy"),
        Some("\"guest-ip\";q=1;w=3600")
    );
    assert_eq!(h.upstream_requests(), 3);
    // Another client is unaffected; non-guest routes are not limited.
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.8").await,
        200
    );
    assert_eq!(status(&h, "/", "203.0.113.7").await, 200);
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit() {
    let h = spawn_shield(
        "",
        &format!(
            "[client]\ntrusted_proxies = []\n{}",
            limit("guest-ip", "ip", "1/h", 2, "")
        ),
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            status(&h, "/api/v1/gallery/demo-a1", &format!("10.9.9.{i}")).await,
            200
        );
    }
    assert_eq!(
        status(&h, "/api/v1/gallery/demo-a1", "10.9.9.77").await,
        429
    );
}

#[tokio::test]
async fn ipv6_clients_share_their_network_and_mapped_ipv4_is_the_ipv4_client() {
    let h = spawn_shield("", &limit("guest-ip", "ip", "1/h", 2, "")).await;
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "2001:db8:1:2::1").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "2001:db8:1:2:ffff::9").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "2001:db8:1:2:abcd::5").await,
        429
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "2001:db8:1:3::1").await,
        200
    );

    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "198.51.100.9").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "::ffff:198.51.100.9").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-x1", "198.51.100.9").await,
        429
    );
}

#[tokio::test]
async fn a_token_is_limited_across_clients() {
    let h = spawn_shield("", &limit("guest-token", "token", "1/h", 2, "")).await;
    assert_eq!(
        status(&h, "/api/v1/gallery/demo-shared-1/photos", "203.0.113.1").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/gallery/demo-shared-1", "203.0.113.2").await,
        200
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-shared-1", "203.0.113.3").await,
        429
    );
    assert_eq!(
        status(&h, "/api/v1/events/demo-other-22", "203.0.113.3").await,
        200
    );
}

#[tokio::test]
async fn shadow_limits_let_requests_through() {
    let h = spawn_shield("", &limit("trial", "ip", "1/h", 1, "mode = \"shadow\"")).await;
    for _ in 0..5 {
        assert_eq!(
            status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
            200
        );
    }
    assert_eq!(h.upstream_requests(), 5);
}

#[tokio::test]
async fn a_limit_past_its_until_no_longer_applies() {
    let h = spawn_shield(
        "",
        &limit(
            "incident",
            "ip",
            "1/h",
            1,
            "until = \"2001-01-01T00:00:00Z\"",
        ),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
            200
        );
    }
}

#[tokio::test]
async fn denied_upload_body_is_never_forwarded_nor_read_as_a_request() {
    let h = spawn_shield("", &limit("guest-ip", "ip", "1/h", 1, "")).await;
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "").await,
        200
    );
    let smuggled = "GET /api/v1/events/demo-smuggled-1 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let raw = format!(
        "POST /api/v1/events/demo-wedding-2026/photos HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let x = exchange(h.addr(), raw).await;
    assert_eq!(x.statuses(), [429]);
    assert_eq!(x.end, End::Closed);
    assert_eq!(
        String::from_utf8_lossy(&x.received)
            .matches("HTTP/1.1 ")
            .count(),
        1
    );
    assert_eq!(h.upstream_requests(), 1);
}

#[tokio::test]
async fn reload_keeps_buckets_of_unchanged_limits_and_resets_changed_ones() {
    let limits = format!(
        "{}{}",
        limit("guest-ip", "ip", "1/h", 2, ""),
        limit("guest-token", "token", "1/h", 100, "")
    );
    let h = spawn_shield("", &limits).await;
    for _ in 0..2 {
        assert_eq!(
            status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
            200
        );
    }
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
        429
    );
    // Same guest-ip, a changed guest-token: guest-ip's bucket stays empty.
    let text = std::fs::read_to_string(h.config_path())
        .unwrap()
        .replace("burst = 100", "burst = 50");
    std::fs::write(h.config_path(), text).unwrap();
    match h.shield.reload() {
        joinshield::ReloadOutcome::Applied {
            version, changes, ..
        } => {
            assert_eq!(version, 2);
            assert_eq!(
                changes,
                vec!["limit guest-token burst 100 -> 50".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
        429
    );
    // Changing guest-ip's quota starts it afresh.
    let text =
        std::fs::read_to_string(h.config_path())
            .unwrap()
            .replacen("burst = 2", "burst = 3", 1);
    std::fs::write(h.config_path(), text).unwrap();
    assert!(matches!(
        h.shield.reload(),
        joinshield::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
        200
    );
}

#[tokio::test]
async fn a_broken_reload_keeps_the_running_limits() {
    let h = spawn_shield("", &limit("guest-ip", "ip", "1/h", 1, "")).await;
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
        200
    );
    let text = std::fs::read_to_string(h.config_path())
        .unwrap()
        .replace("rate = \"1/h\"", "rate = \"lots\"");
    std::fs::write(h.config_path(), text).unwrap();
    match h.shield.reload() {
        joinshield::ReloadOutcome::Rejected { errors, kept } => {
            assert_eq!(kept, 1);
            // The entry is named by its name (issue 18), not by its index.
            assert_eq!(errors[0].key, "limit \"guest-ip\" rate");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        status(&h, "/api/v1/events/demo-wedding-2026", "203.0.113.7").await,
        429
    );
}
