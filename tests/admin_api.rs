//! The incident-snapshot parts of the admin API over real sockets: `/admin/denials`,
//! `/admin/offenders` and `/admin/status`.

mod support;

use support::{admin, from, spawn_shield_admin, Harness};

const NOISY: &str = "203.0.113.50";
const QUIET: &str = "198.51.100.7";

/// A per-token limit of one request (repeating a token is denied) and guessing detection that
/// counts failed tokens without banning anyone in this test.
const REST: &str = "[[limit]]\nname = \"guest-token\"\nroutes = [\"*\"]\nkey = \"token\"\n\
    rate = \"1/h\"\nburst = 1\n\n\
    [enumeration]\nmax_failures = 100\nprefix_max_failures = 100\nwindow = \"10m\"\n\
    ban = \"15m\"\nmax_ban = \"24h\"\n";

/// The noisy client guesses 8 tokens (8 failed tokens) and repeats one 6 times (6 denials);
/// the quiet one guesses once and repeats once; a good token is forwarded once.
async fn make_noise(h: &Harness) {
    for i in 0..8 {
        let a = from(h, NOISY, &format!("/api/v1/events/guess-{i:06}")).await;
        assert_eq!(a.status, 404, "{}", a.text());
    }
    for _ in 0..6 {
        let a = from(h, NOISY, "/api/v1/events/guess-000000").await;
        assert_eq!(a.status, 429, "{}", a.text());
    }
    assert_eq!(
        from(h, QUIET, "/api/v1/events/other-123456").await.status,
        404
    );
    assert_eq!(
        from(h, QUIET, "/api/v1/events/other-123456").await.status,
        429
    );
    assert_eq!(
        from(h, QUIET, "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn denials_offenders_and_status_tell_the_incident_story() {
    let var = "JOINSHIELD_TEST_TOKEN_ADMIN_API_STORY";
    std::env::set_var(var, "story-admin");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), REST).await;
    make_noise(&h).await;
    let token = Some("story-admin");

    // Snapshot logs: every denial, newest last, the token only as a preview.
    let d = admin(&h, "GET", "/admin/denials?since=15m", token, "").await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.header("content-type"), Some("application/x-ndjson"));
    let body = d.text();
    for i in 0..8 {
        assert!(!body.contains(&format!("guess-{i:06}")), "{body}");
    }
    assert!(!body.contains("other-123456"), "{body}");
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 7, "{body}");
    let times: Vec<i64> = lines
        .iter()
        .map(|l| l["unix_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let noisy: Vec<&serde_json::Value> = lines.iter().filter(|l| l["ip"] == NOISY).collect();
    assert_eq!(noisy.len(), 6);
    for l in &noisy {
        assert_eq!(l["reason"], "token_rate_limited");
        assert_eq!(l["limit"], "guest-token");
        assert_eq!(l["token"], "guess-...");
        assert_eq!(l["path"], "/api/v1/events/guess-...");
        assert_eq!(l["route"], "events");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["message"], "Join token access denied");
        assert!(l["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // Log folding writes one line for the noisy client's repeats; the ring keeps them all.
    assert!(noisy.iter().any(|l| l["logged"] == false), "{body}");
    assert_eq!(lines.last().unwrap()["ip"], QUIET);

    // Note IP addresses triggering rate limits.
    let o = admin(&h, "GET", "/admin/offenders?since=15m&top=5", token, "").await;
    assert_eq!(o.status, 200, "{}", o.text());
    assert!(!o.text().contains("guess-000000"), "{}", o.text());
    let v = o.json();
    assert_eq!(v["denials"]["ips"][0]["key"], NOISY, "{v}");
    assert_eq!(v["denials"]["ips"][0]["count"], 6, "{v}");
    assert_eq!(v["denials"]["ips"][1]["key"], QUIET, "{v}");
    assert_eq!(v["denials"]["prefixes"][0]["key"], "203.0.113.0/24", "{v}");
    assert_eq!(v["denials"]["tokens"][0]["key"], "guess-...", "{v}");
    assert_eq!(v["failed_tokens"]["ips"][0]["key"], NOISY, "{v}");
    assert_eq!(v["failed_tokens"]["ips"][0]["count"], 8, "{v}");
    assert_eq!(v["failed_tokens"]["ips"][1]["count"], 1, "{v}");
    assert_eq!(v["minutes"], 15);

    let s = admin(&h, "GET", "/admin/status", token, "").await;
    assert_eq!(s.status, 200, "{}", s.text());
    let v = s.json();
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64, "{v}");
    assert!(v["loaded_at"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(v["switches"].is_array(), "{v}");
    assert_eq!(v["lists"]["blocklist"], 0, "{v}");
    assert_eq!(v["bans"], 0, "{v}");
    // 17 requests: 7 denied, 10 guest requests forwarded (9 answered 404, 1 answered 200).
    assert_eq!(v["per_minute"]["requests"], 17, "{v}");
    assert_eq!(v["per_minute"]["denials"], 7, "{v}");
    assert_eq!(v["per_minute"]["guest_forwarded"], 10, "{v}");
    for w in ["1m", "5m", "15m"] {
        assert_eq!(v["guest_error_rate"][w], 0.0, "{v}");
    }
    assert_eq!(v["denials_recorded"], 7, "{v}");
}

#[tokio::test]
async fn bad_queries_are_422_with_the_fix_and_no_token_is_401() {
    let var = "JOINSHIELD_TEST_TOKEN_ADMIN_API_QUERIES";
    std::env::set_var(var, "query-admin");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), REST).await;
    let token = Some("query-admin");
    for path in ["/admin/denials", "/admin/offenders", "/admin/status"] {
        let a = admin(&h, "GET", path, None, "").await;
        assert_eq!(a.status, 401, "{path}");
        let a = admin(&h, "GET", path, Some("wrong"), "").await;
        assert_eq!(a.status, 401, "{path}");
        let a = admin(&h, "POST", path, token, "").await;
        assert_eq!(a.status, 405, "{path}");
    }
    for (path, fix) in [
        ("/admin/denials?since=abc", "since=15m"),
        ("/admin/denials?since=0s", "since=15m"),
        ("/admin/denials?since=2d", "since=15m"),
        ("/admin/offenders?since=2h", "since=15m"),
        ("/admin/offenders?top=0", "top=20"),
        ("/admin/offenders?top=many", "top=20"),
        ("/admin/offenders?top=101", "top=20"),
    ] {
        let a = admin(&h, "GET", path, token, "").await;
        assert_eq!(a.status, 422, "{path}: {}", a.text());
        let message = a.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(fix), "{path}: {message}");
    }
    // Defaults, and nothing to report yet.
    let d = admin(&h, "GET", "/admin/denials", token, "").await;
    assert_eq!((d.status, d.text().as_str()), (200, ""));
    let o = admin(&h, "GET", "/admin/offenders", token, "").await;
    assert_eq!(o.status, 200);
    assert_eq!(o.json()["top"], 20);
    assert_eq!(o.json()["denials"]["ips"], serde_json::json!([]));
    let s = admin(&h, "GET", "/admin/status", token, "").await;
    assert_eq!(s.json()["guest_error_rate"]["1m"], serde_json::Value::Null);
}

/// Runs `joinshield ctl ARGS` against `h` with `token`; returns success and stdout.
async fn ctl(h: &Harness, token: &str, args: &[&str]) -> (bool, String) {
    let ran = support::ctl(h.shield.admin_addr, token, args).await;
    (ran.success(), ran.stdout)
}

#[tokio::test]
async fn ctl_prints_status_denials_and_offenders_as_tables() {
    let var = "JOINSHIELD_TEST_TOKEN_ADMIN_API_CTL";
    std::env::set_var(var, "ctl-admin");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), REST).await;
    make_noise(&h).await;

    let (ok, out) = ctl(&h, "ctl-admin", &["status"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("version       1 (sha256 "), "{out}");
    assert!(out.contains("bans          0 active"), "{out}");
    assert!(out.contains("guest errors  0.0% (1m)"), "{out}");

    let (ok, out) = ctl(&h, "ctl-admin", &["denials", "--since", "15m"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("token_rate_limited guest-token"), "{out}");
    assert!(out.contains("7 denials in the last 15m"), "{out}");
    assert!(!out.contains("guess-000000"), "{out}");

    let (ok, out) = ctl(
        &h,
        "ctl-admin",
        &["offenders", "--since", "15m", "--top", "3"],
    )
    .await;
    assert!(ok, "{out}");
    let after = out.split("client IP by denials").nth(1).unwrap_or_default();
    assert!(
        after.trim_start().starts_with(&format!("1. {NOISY}")),
        "{out}"
    );

    let (ok, out) = ctl(&h, "ctl-admin", &["--json", "denials"]).await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 7, "{out}");

    let (ok, out) = ctl(&h, "wrong", &["offenders", "--since", "2h"]).await;
    assert!(!ok, "{out}");
}

/// A flood of one client for one reason is listed only up to the first repeats of each log fold
/// window, so it cannot push every other denial out of the ring; the offenders still count all.
#[tokio::test]
async fn a_flooding_client_is_counted_in_full_but_listed_only_in_part() {
    let var = "JOINSHIELD_TEST_TOKEN_ADMIN_API_FLOOD";
    std::env::set_var(var, "flood-admin");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), REST).await;
    let token = Some("flood-admin");
    assert_eq!(
        from(&h, QUIET, "/api/v1/events/other-123456").await.status,
        404
    );
    assert_eq!(
        from(&h, QUIET, "/api/v1/events/other-123456").await.status,
        429
    );
    assert_eq!(
        from(&h, NOISY, "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
    let flood = 40;
    for _ in 0..flood {
        let a = from(&h, NOISY, "/api/v1/events/demo-wedding-2026").await;
        assert_eq!(a.status, 429, "{}", a.text());
    }

    let d = admin(&h, "GET", "/admin/denials?since=15m", token, "").await;
    assert_eq!(d.status, 200, "{}", d.text());
    let lines: Vec<serde_json::Value> = d
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let noisy = lines.iter().filter(|l| l["ip"] == NOISY).count() as u64;
    // The written line and the first LISTED_REPEATS folded ones (all inside one 10 s window
    // unless the test machine stalls for that long, which only lists more).
    assert!(
        noisy > joinshield::telemetry::recent::LISTED_REPEATS && noisy < flood,
        "{noisy} of {flood} listed"
    );
    // The quiet client's denial is still there.
    assert!(lines.iter().any(|l| l["ip"] == QUIET), "{lines:?}");

    let o = admin(&h, "GET", "/admin/offenders?since=15m&top=5", token, "").await;
    let v = o.json();
    assert_eq!(v["denials"]["ips"][0]["key"], NOISY, "{v}");
    assert_eq!(v["denials"]["ips"][0]["count"], flood, "{v}");
}
