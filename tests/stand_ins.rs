//! Temporary limits and switches that stand in for a permanent one of their name: the natural
//! incident edit ("tighten guest-ip for an hour") reverts by itself, and the permanent limit
//! comes back with the buckets it had. The shield runs on a manual clock: `until` is reached
//! by moving the clock, never by waiting.

mod support;

use std::sync::Arc;
use std::time::Duration;

use joinshield::clock::ManualClock;
use joinshield::Running;
use support::*;

const T: &str = "demo-wedding-2026";
/// 2026-11-27T18:00:00Z
const START_MS: i64 = 1_795_802_400_000;

const PERMANENT: &str =
    "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 5\n";
const TIGHTER: &str = "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\nuntil = \"2026-11-27T18:00:02Z\"\n";

async fn guest(shield: &Running, ip: &str) -> u16 {
    get(
        shield.addr,
        &format!("/api/v1/events/{T}"),
        &format!("X-Forwarded-For: {ip}\r\n"),
    )
    .await
    .status
}

async fn statuses(shield: &Running, ip: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(guest(shield, ip).await);
    }
    out
}

async fn admin_status(shield: &Running, token: &str) -> serde_json::Value {
    let a = request(
        shield.admin_addr,
        format!(
            "GET /admin/status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// Starts a shield on `rest` in `dir` on a manual clock standing at [`START_MS`].
async fn start_clocked(
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    extra_admin: &str,
    rest: &str,
) -> (Running, Arc<ManualClock>) {
    let path = dir.join("joinshield.toml");
    std::fs::write(
        &path,
        config_text_admin(&format!("http://{upstream}"), "", extra_admin, rest),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let loaded = joinshield::config::load(&path).unwrap();
    let shield = joinshield::start_with_clock(loaded, clock.clone())
        .await
        .unwrap();
    (shield, clock)
}

fn rewrite(dir: &std::path::Path, upstream: std::net::SocketAddr, extra_admin: &str, rest: &str) {
    std::fs::write(
        dir.join("joinshield.toml"),
        config_text_admin(&format!("http://{upstream}"), "", extra_admin, rest),
    )
    .unwrap();
}

#[tokio::test]
async fn a_stand_in_tightens_a_limit_for_two_seconds_then_the_permanent_one_is_back_with_its_buckets(
) {
    let var = "JOINSHIELD_TEST_TOKEN_STAND_INS";
    std::env::set_var(var, "stand-in-admin-token");
    let extra_admin = format!("token_env = \"{var}\"");
    let app = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let (shield, clock) = start_clocked(dir.path(), app.addr, &extra_admin, PERMANENT).await;

    // Client A uses 3 of the permanent limit's 5 cells (1/h: none come back during the test).
    assert_eq!(statuses(&shield, "203.0.113.1", 3).await, [200, 200, 200]);

    // The incident edit: the same name with until, tighter, for two seconds.
    rewrite(
        dir.path(),
        app.addr,
        &extra_admin,
        &format!("{PERMANENT}\n{TIGHTER}"),
    );
    reload_applied(&shield).await;
    assert_eq!(shield.snapshot().version, 2);
    // The stand-in decides now: one cell for everyone, A included (its own table).
    assert_eq!(statuses(&shield, "203.0.113.1", 2).await, [200, 429]);
    assert_eq!(statuses(&shield, "203.0.113.2", 2).await, [200, 429]);
    let denied = get(
        shield.addr,
        &format!("/api/v1/events/{T}"),
        "X-Forwarded-For: 203.0.113.2\r\n",
    )
    .await;
    assert_eq!(denied.json()["error"]["code"], "token_rate_limited");

    // Status lists the stand-in with its until and the permanent limit it stands in for.
    let status = admin_status(&shield, "stand-in-admin-token").await;
    let limits = status["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 1, "{status}");
    assert_eq!(limits[0]["name"], "guest-ip");
    assert_eq!(limits[0]["burst"], 1);
    assert_eq!(limits[0]["until"], "2026-11-27T18:00:02Z");
    assert_eq!(limits[0]["stands_in_for"]["burst"], 5, "{status}");
    assert_eq!(limits[0]["stands_in_for"]["rate"], "1/h", "{status}");

    // Two seconds later (and one more) the stand-in is over.
    let before = shield.now().unix();
    clock.advance(Duration::from_secs(3));
    shield.log_expired(before, shield.now().unix());
    let lines = log_lines(&shield, dir.path()).await;
    assert!(
        lines.iter().any(|l| l.contains("production.NOTICE: Temporary rule expired {\"kind\":\"limit\",\"name\":\"guest-ip\",\"until\":\"2026-11-27T18:00:02Z\",\"back\":\"the permanent limit guest-ip: 1/h per ip, burst 5\"}")),
        "{lines:?}"
    );
    // A has exactly the 2 cells it left in the permanent bucket: neither refilled nor lost.
    assert_eq!(statuses(&shield, "203.0.113.1", 3).await, [200, 200, 429]);
    // B never used the permanent limit: its full burst.
    assert_eq!(
        statuses(&shield, "203.0.113.2", 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    let status = admin_status(&shield, "stand-in-admin-token").await;
    let limits = status["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 1, "{status}");
    assert_eq!(limits[0]["burst"], 5);
    assert!(limits[0]["until"].is_null() && limits[0]["stands_in_for"].is_null());

    // Removing the spent stand-in from the file keeps the permanent buckets too.
    rewrite(dir.path(), app.addr, &extra_admin, PERMANENT);
    reload_applied(&shield).await;
    assert_eq!(guest(&shield, "203.0.113.1").await, 429);
    shield.shutdown().await;
}

#[tokio::test]
async fn a_temporary_switch_stands_in_for_the_permanent_one_both_ways() {
    let app = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let switch = |paused: bool, until: &str| {
        format!(
            "[[switch]]\nname = \"maintenance\"\nroutes = [\"*\"]\npaused = {paused}\nmessage = \"Back soon.\"\n{until}\n"
        )
    };
    // Paused for two seconds over a permanent "off".
    let rest = format!(
        "{}{}",
        switch(false, ""),
        switch(true, "until = \"2026-11-27T18:00:02Z\"")
    );
    let (shield, clock) = start_clocked(dir.path(), app.addr, "", &rest).await;
    let a = get(shield.addr, &format!("/api/v1/events/{T}"), "").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("2"));
    clock.advance(Duration::from_secs(2));
    assert_eq!(guest(&shield, "203.0.113.9").await, 200);
    let before = shield.now().unix() - 2;
    shield.log_expired(before, shield.now().unix());
    let lines = log_lines(&shield, dir.path()).await;
    assert!(
        lines.iter().any(|l| l.contains("Temporary rule expired {\"kind\":\"switch\",\"name\":\"maintenance\",\"until\":\"2026-11-27T18:00:02Z\",\"back\":\"the permanent switch maintenance: off\"}")),
        "{lines:?}"
    );

    // Resumed for two seconds under a permanent pause.
    let rest = format!(
        "{}{}",
        switch(true, ""),
        switch(false, "until = \"2026-11-27T18:00:04Z\"")
    );
    rewrite(dir.path(), app.addr, "", &rest);
    reload_applied(&shield).await;
    assert_eq!(guest(&shield, "203.0.113.9").await, 200);
    clock.advance(Duration::from_secs(2));
    assert_eq!(guest(&shield, "203.0.113.9").await, 503);
    shield.shutdown().await;
}
