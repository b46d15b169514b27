//! Live incident levers over real sockets: switches, reload by file watch and by the admin API.

mod support;

use std::time::Duration;

use support::*;

const T: &str = "demo-wedding-2026";

fn switches(downloads: bool, maintenance: bool) -> String {
    format!(
        "[[switch]]\nname = \"gallery-downloads\"\nroutes = [\"gallery_download\"]\npaused = {downloads}\n\
         message = \"Gallery downloads are paused. Please try again later.\"\n\n\
         [[switch]]\nname = \"maintenance\"\nroutes = [\"*\"]\npaused = {maintenance}\n\
         message = \"The event gallery is under maintenance.\"\n"
    )
}

async fn wait_version(h: &Harness, v: u64) {
    support::wait_version(&h.shield, v, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn paused_downloads_answer_503_with_the_switch_and_never_reach_the_app() {
    let h = spawn_shield("", &switches(true, false)).await;
    for path in [
        format!("/api/v1/gallery/{T}/download"),
        format!("/api/v1/gallery%2F{T}%2Fdownload"),
        format!("/index.php/api/v1/gallery/{T}/download/"),
        format!("/api/v1/events/{T}/photos/7/download"),
    ] {
        let a = get(h.addr(), &path, "").await;
        assert_eq!(a.status, 503, "{path}");
        let body = a.json();
        assert_eq!(body["error"]["code"], "service_paused");
        assert_eq!(body["error"]["switch"], "gallery-downloads");
        assert_eq!(
            body["message"],
            "Gallery downloads are paused. Please try again later."
        );
        assert_eq!(a.header("retry-after"), Some("300"));
    }
    assert_eq!(h.upstream_requests(), 0);
    // Other guest routes still work.
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}"), "")
            .await
            .status,
        200
    );
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"reason\":\"service_paused\"")
                && l.contains("\"switch\":\"gallery-downloads\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn maintenance_pauses_every_guest_route_but_not_the_rest_of_the_app() {
    let h = spawn_shield("", &switches(false, true)).await;
    for path in [
        format!("/api/v1/events/{T}"),
        format!("/gallery/{T}"),
        format!("/api/v1/gallery/{T}/photos"),
    ] {
        assert_eq!(get(h.addr(), &path, "").await.status, 503, "{path}");
    }
    assert_eq!(get(h.addr(), "/", "").await.status, 200);
}

#[tokio::test]
async fn a_saved_edit_is_applied_without_a_signal() {
    let h = spawn_shield("", &switches(false, false)).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        200
    );
    // An atomic rename, as editors and config management do.
    let text = std::fs::read_to_string(h.config_path()).unwrap().replacen(
        "paused = false",
        "paused = true",
        1,
    );
    let tmp = h.dir.path().join("joinshield.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, h.config_path()).unwrap();
    wait_version(&h, 2).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        503
    );
    // Written in place.
    let text = std::fs::read_to_string(h.config_path()).unwrap().replacen(
        "paused = true",
        "paused = false",
        1,
    );
    std::fs::write(h.config_path(), text).unwrap();
    wait_version(&h, 3).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        200
    );
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("switch gallery-downloads paused")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("switch gallery-downloads resumed")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_paused_switch_with_until_in_the_past_no_longer_applies() {
    let rest = "[[switch]]\nname = \"night\"\nroutes = [\"*\"]\npaused = true\nuntil = \"2001-01-01T00:00:00Z\"\n";
    let h = spawn_shield("", rest).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/events/{T}"), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admin_reload_needs_the_bearer_token_and_reports_errors() {
    let var = "JOINSHIELD_TEST_TOKEN_LEVERS";
    std::env::set_var(var, "s3cret-for-tests");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), &switches(false, false)).await;
    assert_eq!(
        admin(&h, "POST", "/admin/reload", None, "").await.status,
        401
    );
    assert_eq!(
        admin(&h, "POST", "/admin/reload", Some("wrong"), "")
            .await
            .status,
        401
    );
    let ok = admin(&h, "POST", "/admin/reload", Some("s3cret-for-tests"), "").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["version"], 2);
    std::fs::write(h.config_path(), "[server]\nupstream = 7\n").unwrap();
    let bad = admin(&h, "POST", "/admin/reload", Some("s3cret-for-tests"), "").await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["version"], 2);
    assert!(bad.json()["errors"][0]
        .as_str()
        .unwrap()
        .contains("server.upstream"));
    // The old configuration keeps serving.
    assert_eq!(
        get(h.addr(), &format!("/api/v1/events/{T}"), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admin_actions_are_off_without_the_token_variable() {
    let h = spawn_shield_admin("token_env = \"JOINSHIELD_TEST_TOKEN_NEVER_SET\"", "").await;
    assert_eq!(
        admin(&h, "POST", "/admin/reload", Some("anything"), "")
            .await
            .status,
        403
    );
}

fn lists_config() -> String {
    "[lists]\nblocklist = \"block.txt\"\nallowlist = \"allow.txt\"\nrevoked_tokens = \"revoked.txt\"\n\n\
     [[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n\n\
     [enumeration]\nmax_failures = 2\n"
        .to_string()
}

/// A shield whose list files are written before it starts.
async fn with_lists(block: &str, allow: &str, revoked: &str) -> Harness {
    spawn_shield_with_files(
        &lists_config(),
        &[
            ("block.txt", block),
            ("allow.txt", allow),
            ("revoked.txt", revoked),
        ],
    )
    .await
}

#[tokio::test]
async fn blocklisted_clients_get_403_on_every_path_even_when_also_allowed() {
    let h = with_lists(
        "203.0.113.7\n198.51.100.0/24 reason=\"SEV-2\"\n2001:db8:abcd::/48\n",
        "198.51.100.9\n",
        "",
    )
    .await;
    for (ip, path) in [
        ("203.0.113.7", "/"),
        ("::ffff:203.0.113.7", "/api/v1/events/demo-wedding-2026"),
        ("198.51.100.9", "/contact"),
        ("2001:db8:abcd:1::5", "/gallery/demo-wedding-2026"),
    ] {
        let a = from(&h, ip, path).await;
        assert_eq!(a.status, 403, "{ip} {path}");
        assert_eq!(a.json()["error"]["code"], "ip_blocked");
    }
    assert_eq!(h.upstream_requests(), 0);
    assert_eq!(from(&h, "203.0.113.8", "/").await.status, 200);
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("production.WARNING: Access denied {\"reason\":\"ip_blocked\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn allowlisted_clients_skip_limits_and_are_never_banned() {
    let h = with_lists("", "192.0.2.10 reason=\"uptime monitor\"\n", "").await;
    for i in 0..10 {
        assert_eq!(
            from(&h, "192.0.2.10", "/api/v1/events/demo-wedding-2026")
                .await
                .status,
            200,
            "{i}"
        );
        from(&h, "192.0.2.10", &format!("/api/v1/events/guess-{i:06}")).await;
    }
    assert_eq!(
        from(&h, "192.0.2.10", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
    assert!(h.shield.bans().is_empty());
    // Others are still limited.
    assert_eq!(
        from(&h, "192.0.2.11", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
    assert_eq!(
        from(&h, "192.0.2.11", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn revoked_tokens_are_answered_410_in_plain_and_sha256_form() {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(b"demo-leaked-token-2"));
    let h = with_lists(
        "",
        "",
        &format!("demo-leaked-token-1\nsha256:{digest} reason=\"posted publicly\"\n"),
    )
    .await;
    for (i, path) in [
        "/api/v1/events/demo-leaked-token-1",
        "/api/v1/gallery/demo-leaked-token-2/photos",
        "/api/v1/gallery%2Fdemo-leaked-token-2%2Fdownload",
    ]
    .iter()
    .enumerate()
    {
        let a = from(&h, &format!("203.0.113.{}", 40 + i), path).await;
        assert_eq!(a.status, 410, "{path}");
        assert_eq!(a.json()["error"]["code"], "token_revoked");
    }
    assert_eq!(h.upstream_requests(), 0);
    let lines = h.log_lines().await;
    assert!(
        lines.iter().all(|l| !l.contains("demo-leaked-token")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_list_edit_applies_live_and_a_broken_one_keeps_the_old_list() {
    let h = with_lists("", "", "").await;
    assert_eq!(from(&h, "203.0.113.99", "/").await.status, 200);
    std::fs::write(
        h.dir.path().join("block.txt"),
        "203.0.113.99 reason=\"incident\"\n",
    )
    .unwrap();
    wait_version(&h, 2).await;
    assert_eq!(from(&h, "203.0.113.99", "/").await.status, 403);
    std::fs::write(
        h.dir.path().join("block.txt"),
        "203.0.113.99\n203.0.113.300\n",
    )
    .unwrap();
    match h.shield.reload_logged() {
        joinshield::ReloadOutcome::Rejected { errors, kept } => {
            assert_eq!(kept, 2);
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].line, Some(2));
            assert!(errors[0].file.ends_with("block.txt"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(from(&h, "203.0.113.99", "/").await.status, 403);
    let lines = h.log_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("blocklist +1 -0")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Shield configuration rejected") && l.contains("block.txt:2")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn temporary_entries_stop_applying_at_their_instant_and_say_so() {
    let h = with_lists(
        "203.0.113.5 until=2001-01-01T00:00:00Z reason=\"old incident\"\n",
        "",
        "",
    )
    .await;
    assert_eq!(from(&h, "203.0.113.5", "/").await.status, 200);
    let until = joinshield::units::parse_instant("2001-01-01T00:00:00Z").unwrap();
    h.shield.log_expired(until - 1, until);
    let lines = h.log_lines().await;
    assert!(
        lines.iter().any(|l| l.contains("production.NOTICE: Temporary rule expired {\"kind\":\"blocklist\",\"net\":\"203.0.113.5/32\",\"reason\":\"old incident\",\"until\":\"2001-01-01T00:00:00Z\"}")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_concurrent_keep_alive_traffic_fail_nothing_and_drop_nothing() {
    let rest = "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"100000/min\"\nburst = 100000\n";
    let h = spawn_shield("", rest).await;
    let addr = h.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let raw =
                format!("GET /api/v1/events/demo-load-{c:03} HTTP/1.1\r\nHost: app.test\r\n\r\n");
            let mut done = 0u32;
            // Bounded: at most 2,000 requests a connection, and it stops when the reloads are over.
            while done < 2000 && !(stop.load(std::sync::atomic::Ordering::Relaxed) && done > 50) {
                let a = conn
                    .try_request(&raw)
                    .await
                    .unwrap_or_else(|b| panic!("a connection failed during reloads: {b}"));
                assert_eq!(a.status, 200, "{}", a.text());
                done += 1;
            }
            done
        }));
    }
    for i in 0..20 {
        let rate = if i % 2 == 0 {
            "90000/min"
        } else {
            "100000/min"
        };
        let text = std::fs::read_to_string(h.config_path()).unwrap();
        let text = text.replace("100000/min", rate).replace("90000/min", rate);
        std::fs::write(h.config_path(), text).unwrap();
        reload_applied(&h.shield).await;
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total >= 8 * 50);
    assert_eq!(*h.shield.version().borrow(), 21);
}

#[tokio::test]
async fn a_reload_shares_an_unchanged_list_and_rereads_a_changed_one() {
    let h = with_lists("203.0.113.1\n", "192.0.2.1\n", "").await;
    let before = h.shield.snapshot().loaded.lists.blocklist.clone();
    // Only the configuration changes: the blocklist is the very same list afterwards.
    let text = std::fs::read_to_string(h.config_path())
        .unwrap()
        .replace("rate = \"1/h\"", "rate = \"2/h\"");
    std::fs::write(h.config_path(), text).unwrap();
    assert!(matches!(
        h.shield.reload(),
        joinshield::ReloadOutcome::Applied { .. }
    ));
    let after = h.shield.snapshot().loaded.lists.blocklist.clone();
    assert!(std::sync::Arc::ptr_eq(&before, &after));
    // The file changes (same size, in place): it is read again.
    std::fs::write(h.dir.path().join("block.txt"), "203.0.113.2\n").unwrap();
    assert!(matches!(
        h.shield.reload(),
        joinshield::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(from(&h, "203.0.113.2", "/").await.status, 403);
    assert_eq!(from(&h, "203.0.113.1", "/").await.status, 200);
}
