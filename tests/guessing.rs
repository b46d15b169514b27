//! Token guessing over real sockets: the stand-in app answers 404 for tokens it does not know,
//! and the shield learns from those answers.

mod support;

use support::*;

fn enumeration(max: u32, prefix_max: u32) -> String {
    format!(
        "[enumeration]\nmax_failures = {max}\nprefix_max_failures = {prefix_max}\nwindow = \"10m\"\nban = \"15m\"\nmax_ban = \"24h\"\n"
    )
}

#[tokio::test]
async fn a_guesser_is_banned_after_exactly_max_failures_distinct_tokens() {
    let h = spawn_shield("", &enumeration(5, 100)).await;
    for i in 0..5 {
        let a = from(&h, "203.0.113.7", &format!("/api/v1/events/guess-{i:06}")).await;
        assert_eq!(a.status, 404, "guess {i}");
    }
    let a = from(&h, "203.0.113.7", "/api/v1/events/demo-wedding-2026").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["code"], "ip_banned");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((890..=900).contains(&retry), "{retry}");
    // Bans hold on every path, and the app saw only the five guesses.
    assert_eq!(from(&h, "203.0.113.7", "/").await.status, 429);
    assert_eq!(h.upstream_requests(), 5);
    // Another client is fine.
    assert_eq!(
        from(&h, "203.0.113.8", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
    let lines = h.log_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("production.WARNING: Join token brute force detected {\"ip\":\"203.0.113.7\",\"distinct_tokens\":5,\"ban_seconds\":900,")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_guest_retrying_one_stale_token_is_not_banned() {
    let h = spawn_shield("", &enumeration(5, 100)).await;
    for _ in 0..50 {
        assert_eq!(
            from(&h, "203.0.113.9", "/api/v1/gallery/stale-token-1/photos")
                .await
                .status,
            404
        );
    }
    assert_eq!(
        from(&h, "203.0.113.9", "/api/v1/gallery/demo-wedding-2026")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn guessing_spread_over_one_slash_24_bans_the_slash_24() {
    let h = spawn_shield("", &enumeration(5, 10)).await;
    for i in 0..10 {
        let ip = format!("198.51.100.{}", 10 + i);
        assert_eq!(
            from(&h, &ip, &format!("/api/v1/events/guess-{i:06}"))
                .await
                .status,
            404
        );
    }
    let a = from(&h, "198.51.100.200", "/api/v1/events/demo-wedding-2026").await;
    assert_eq!(a.status, 429);
    assert_eq!(
        from(&h, "198.51.101.1", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
    let bans = h.shield.bans().list(h.shield.now().unix());
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].net.to_string(), "198.51.100.0/24");
}

#[tokio::test]
async fn an_ipv6_guesser_rotating_through_its_slash_64_is_one_client() {
    let h = spawn_shield("", &enumeration(5, 100)).await;
    for i in 0..5 {
        let ip = format!("2001:db8:7:8::{:x}", i + 1);
        assert_eq!(
            from(&h, &ip, &format!("/api/v1/events/guess-{i:06}"))
                .await
                .status,
            404
        );
    }
    assert_eq!(
        from(
            &h,
            "2001:db8:7:8:ffff::1",
            "/api/v1/events/demo-wedding-2026"
        )
        .await
        .status,
        429
    );
    assert_eq!(
        from(&h, "2001:db8:7:9::1", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn malformed_tokens_are_answered_at_the_edge_and_count_as_failures() {
    let h = spawn_shield("", &enumeration(3, 100)).await;
    for t in ["x", "short", "has%20space"] {
        let a = from(&h, "203.0.113.20", &format!("/api/v1/events/{t}")).await;
        assert_eq!(a.status, 404, "{t}");
        assert_eq!(a.json()["error"]["code"], "invalid_token");
    }
    assert_eq!(h.upstream_requests(), 0);
    assert_eq!(
        from(&h, "203.0.113.20", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn bans_survive_a_restart_and_can_be_lifted() {
    let var = "JOINSHIELD_TEST_TOKEN_GUESSING";
    std::env::set_var(var, "guess-admin");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), &enumeration(2, 100)).await;
    for i in 0..2 {
        from(&h, "203.0.113.30", &format!("/api/v1/events/guess-{i:06}")).await;
    }
    assert_eq!(from(&h, "203.0.113.30", "/").await.status, 429);
    // A manual ban through the admin API, too.
    let made = admin(
        &h,
        "POST",
        "/admin/bans",
        Some("guess-admin"),
        r#"{"cidr":"192.0.2.0/24","for":"2h","reason":"SEV-2 scraping"}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let bad = admin(
        &h,
        "POST",
        "/admin/bans",
        Some("guess-admin"),
        r#"{"cidr":"192.0.2.1/24","for":"2h"}"#,
    )
    .await;
    // SPEC section 6: POST /admin/bans refuses with 400 and the reason.
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("host bits"));

    // Restart: stop (which saves the state file), then start on the same config.
    let h = h.restart().await;
    assert_eq!(from(&h, "203.0.113.30", "/").await.status, 429);
    assert_eq!(from(&h, "192.0.2.77", "/").await.status, 429);
    let listed = admin(&h, "GET", "/admin/bans", Some("guess-admin"), "").await;
    let bans = listed.json()["bans"].as_array().unwrap().clone();
    assert_eq!(bans.len(), 2, "{bans:?}");

    let lifted = admin(
        &h,
        "DELETE",
        "/admin/bans?cidr=203.0.113.30",
        Some("guess-admin"),
        "",
    )
    .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text());
    assert_eq!(from(&h, "203.0.113.30", "/").await.status, 200);
    let again = admin(
        &h,
        "DELETE",
        "/admin/bans?cidr=203.0.113.30",
        Some("guess-admin"),
        "",
    )
    .await;
    assert_eq!(again.status, 404);
}
