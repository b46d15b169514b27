//! Several shields sharing one Redis (a private redis-server per test): bans made on one replica
//! hold on the others, guessing spread over replicas is caught, a shared limit holds across
//! replicas within its burst, and Redis dying under load fails no guest request.
#![allow(clippy::disallowed_methods)] // bounded waits measure real time

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::redis::RedisServer;
use support::*;

const TOKEN_VAR: &str = "JS_CLUSTER_TEST_TOKEN";
const TOKEN: &str = "cluster-admin";

fn cluster(redis: &RedisServer, name: &str, extra: &str) -> String {
    // A generous timeout: the test machine is shared and busy, and these tests are about what
    // is shared, not about how fast Redis answers.
    format!(
        "[cluster]\nredis = \"{}\"\nname = \"{name}\"\ntimeout = \"1s\"\nsync_interval = \"5s\"\n{extra}\n",
        redis.url()
    )
}

async fn replica(redis: &RedisServer, name: &str, rest: &str) -> Harness {
    std::env::set_var(TOKEN_VAR, TOKEN);
    let rest = format!("{rest}\n{}", cluster(redis, name, "lease = 3"));
    let h = spawn_shield_admin(&format!("token_env = \"{TOKEN_VAR}\""), &rest).await;
    wait_link(&h, true).await;
    h
}

/// Waits (bounded) until the replica's link is up (`true`) or in fallback (`false`).
async fn wait_link(h: &Harness, up: bool) {
    let cluster = h.shield.cluster().cloned().expect("a cluster");
    let mut watch = cluster.link.watch();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|u| *u == up))
        .await
        .unwrap_or_else(|_| panic!("link never became {}", if up { "up" } else { "down" }))
        .unwrap();
}

fn banned(h: &Harness, ip: &str) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    h.shield.bans().lookup(ip, h.shield.now().unix()).is_some()
}

/// Runs `joinshield ctl ARGS` against `h`; returns its output (it must succeed).
async fn ctl(h: &Harness, args: &[&str]) -> String {
    let ran = support::ctl(h.shield.admin_addr, TOKEN, args).await;
    assert!(ran.success(), "{:?}: {}", ran.code, ran.text());
    ran.stdout
}

#[tokio::test]
async fn a_ban_made_on_one_replica_is_enforced_by_the_others_and_so_is_its_lifting() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = replica(&redis, "shield-a", "").await;
    let b = replica(&redis, "shield-b", "").await;
    let c = replica(&redis, "shield-c", "").await;
    let made = admin(
        &a,
        "POST",
        "/admin/bans",
        Some(TOKEN),
        r#"{"cidr":"203.0.113.0/24","for":"2h","reason":"SEV-2 scraping"}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let took = eventually(10, "the ban reaches b and c", || async {
        banned(&b, "203.0.113.9") && banned(&c, "203.0.113.9")
    })
    .await;
    eprintln!("ban propagated in {took:?}");
    let answer = from(&b, "203.0.113.9", "/api/v1/events/demo-wedding-2026").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"]["code"], "ip_banned");
    // b lists it with its origin and reason.
    let listed = admin(&b, "GET", "/admin/bans", Some(TOKEN), "")
        .await
        .json();
    let ban = &listed["bans"][0];
    assert_eq!(ban["net"], "203.0.113.0/24");
    assert_eq!(ban["origin"], "shield-a");
    assert_eq!(ban["source"], "manual");
    assert_eq!(ban["reason"], "SEV-2 scraping");
    // Every replica sees the others alive.
    eventually(10, "three replicas alive", || async {
        a.shield.cluster().unwrap().replicas().len() == 3
    })
    .await;
    let status = admin(&c, "GET", "/admin/status", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(status["cluster"]["state"], "connected");
    assert_eq!(status["cluster"]["name"], "shield-c");
    let out = ctl(&c, &["status"]).await;
    assert!(
        out.contains("cluster       replica shield-c via redis://127.0.0.1:")
            && out.contains(": connected since ")
            && out.contains("3 alive: shield-a, shield-b, shield-c"),
        "{out}"
    );
    let out = ctl(&b, &["bans"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with("203.0.113.0/24"))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..3],
        ["203.0.113.0/24", "manual", "shield-a"],
        "{out}"
    );
    // Lifted on c: lifted on a and b.
    let lifted = admin(
        &c,
        "DELETE",
        "/admin/bans?cidr=203.0.113.0/24",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text());
    eventually(10, "the unban reaches a and b", || async {
        !banned(&a, "203.0.113.9") && !banned(&b, "203.0.113.9")
    })
    .await;
}

#[tokio::test]
async fn guessing_spread_over_replicas_is_banned_as_fast_as_against_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let guessing = "[enumeration]\nmax_failures = 6\nprefix_max_failures = 100\n";
    let a = replica(&redis, "shield-a", guessing).await;
    let b = replica(&redis, "shield-b", guessing).await;
    // Three distinct failed tokens on each replica: neither reaches 6 alone.
    for i in 0..6 {
        let h = if i % 2 == 0 { &a } else { &b };
        let answer = from(h, "198.51.100.77", &format!("/api/v1/events/guess-{i:06}")).await;
        assert_eq!(answer.status, 404, "guess {i}");
    }
    eventually(10, "the guesser is banned on both", || async {
        banned(&a, "198.51.100.77") && banned(&b, "198.51.100.77")
    })
    .await;
    let (ban_a, ban_b) = (
        a.shield.bans().list(a.shield.now().unix()),
        b.shield.bans().list(b.shield.now().unix()),
    );
    assert_eq!(ban_a.len(), 1, "{ban_a:?}");
    assert_eq!(ban_a[0].distinct_tokens, Some(6));
    assert_eq!(ban_a[0].offences, 1);
    // One ban, made once: both hold the same record.
    assert_eq!(ban_a, ban_b);
    // Exactly one replica logged the brute force line.
    let lines = a.log_lines().await.into_iter().chain(b.log_lines().await);
    let detected = lines
        .filter(|l| l.contains("Join token brute force detected"))
        .count();
    assert_eq!(detected, 1);
}

#[tokio::test]
async fn a_shared_per_ip_limit_holds_across_replicas_within_its_burst() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = |shared: bool| {
        format!(
            "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 10\nshared = {shared}\n"
        )
    };
    let a = replica(&redis, "shield-a", &limits(true)).await;
    let b = replica(&redis, "shield-b", &limits(true)).await;
    let c = replica(&redis, "shield-c", &limits(true)).await;
    let mut passed = 0;
    let mut denied = 0;
    for i in 0..45 {
        let h = [&a, &b, &c][i % 3];
        let answer = from(h, "192.0.2.44", "/api/v1/events/demo-wedding-2026").await;
        match answer.status {
            200 => passed += 1,
            429 => {
                denied += 1;
                assert_eq!(answer.json()["error"]["code"], "token_rate_limited");
                assert!(answer.header("retry-after").is_some());
            }
            s => panic!("unexpected {s}"),
        }
    }
    // Leases are taken from the one bucket: the cluster admits the burst, never more.
    assert_eq!(passed, 10, "denied {denied}");
    // Another client has its own bucket.
    assert_eq!(
        from(&b, "192.0.2.45", "/api/v1/events/demo-wedding-2026")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_limit_without_shared_holds_per_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 4\n";
    let a = replica(&redis, "shield-a", limit).await;
    let b = replica(&redis, "shield-b", limit).await;
    let mut passed = 0;
    for i in 0..20 {
        let h = [&a, &b][i % 2];
        if from(h, "192.0.2.50", "/api/v1/events/demo-wedding-2026")
            .await
            .status
            == 200
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 8);
}

/// Keep-alive load of `n` requests from as many addresses against `h`; returns the statuses.
async fn load(h: &Harness, n: usize, offset: usize) -> Vec<u16> {
    let mut conn = Conn::open(h.addr()).await;
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let raw = format!(
            "GET /api/v1/events/demo-wedding-2026 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 10.1.{}.{}\r\n\r\n",
            (i + offset) / 200 % 250,
            (i + offset) % 200 + 1
        );
        let answer = conn.request(&raw).await;
        statuses.push(answer.status);
    }
    statuses
}

#[tokio::test]
async fn redis_dying_under_load_fails_no_guest_request_and_the_cluster_converges_when_it_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let rest = "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"100/s\"\nburst = 100\nshared = true\n\
                [enumeration]\nmax_failures = 20\n";
    let a = replica(&redis, "shield-a", rest).await;
    let b = replica(&redis, "shield-b", rest).await;
    let before = admin(
        &a,
        "POST",
        "/admin/bans",
        Some(TOKEN),
        r#"{"cidr":"203.0.113.5","for":"1h","reason":"before"}"#,
    )
    .await;
    assert_eq!(before.status, 201);
    eventually(10, "b has the first ban", || async {
        banned(&b, "203.0.113.5")
    })
    .await;

    // Load on both replicas; Redis is killed while it runs.
    let (la, lb) = (load(&a, 300, 0), load(&b, 300, 1000));
    let killer = async {
        // Kill once both replicas have answered some of the load (an event, not a sleep).
        eventually(10, "load under way", || async {
            a.upstream_requests() >= 50 && b.upstream_requests() >= 50
        })
        .await;
        redis.kill();
    };
    let (sa, sb, ()) = tokio::join!(la, lb, killer);
    let failed: Vec<&u16> = sa.iter().chain(&sb).filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "failed guest requests: {failed:?}");
    wait_link(&a, false).await;
    wait_link(&b, false).await;
    // More load while Redis is gone: local state decides, nothing fails.
    let after = load(&a, 100, 5000).await;
    assert!(after.iter().all(|s| *s == 200), "{after:?}");
    // The bans held before stay; a ban made during the outage is local for now.
    assert!(banned(&a, "203.0.113.5") && banned(&b, "203.0.113.5"));
    let during = admin(
        &a,
        "POST",
        "/admin/bans",
        Some(TOKEN),
        r#"{"cidr":"203.0.113.6","for":"1h","reason":"during"}"#,
    )
    .await;
    assert_eq!(during.status, 201);
    assert!(!banned(&b, "203.0.113.6"));
    let metrics = get(a.shield.admin_addr, "/metrics", "").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "joinshield_cluster_fallback 1"),
        "{metrics}"
    );
    let status = admin(&a, "GET", "/admin/status", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(status["cluster"]["state"], "fallback");

    // Redis comes back empty: the replicas write their bans back and converge.
    redis.restart();
    wait_link(&a, true).await;
    wait_link(&b, true).await;
    eventually(10, "b learns the ban made during the outage", || async {
        banned(&b, "203.0.113.6")
    })
    .await;
    assert!(banned(&a, "203.0.113.5") && banned(&b, "203.0.113.5"));
    for h in [&a, &b] {
        let lines = h.log_lines().await;
        let lost = lines
            .iter()
            .filter(|l| l.contains("WARNING: Cluster link lost"))
            .count();
        assert_eq!(lost, 1, "one WARNING per outage: {lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("NOTICE: Cluster link restored")),
            "{lines:#?}"
        );
    }
    let metrics = get(a.shield.admin_addr, "/metrics", "").await.text();
    assert!(metrics
        .lines()
        .any(|l| l == "joinshield_cluster_fallback 0"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("joinshield_cluster_errors_total{kind=\"connection\"} ")),
        "{metrics}"
    );
    support::promtool::promtool_accepts(&metrics);
}

#[tokio::test]
async fn a_replica_whose_redis_is_unreachable_serves_from_local_state_and_says_so_once() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::env::set_var(TOKEN_VAR, TOKEN);
    let rest = format!(
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 3\nshared = true\n\
         [cluster]\nredis = \"redis://127.0.0.1:{port}/0\"\nname = \"alone\"\ntimeout = \"5ms\"\n"
    );
    let h = spawn_shield_admin(&format!("token_env = \"{TOKEN_VAR}\""), &rest).await;
    // The shared limit holds per replica meanwhile.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            from(&h, "192.0.2.60", "/api/v1/events/demo-wedding-2026")
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let status = admin(&h, "GET", "/admin/status", Some(TOKEN), "")
        .await
        .json();
    assert_eq!(status["cluster"]["state"], "fallback");
    // Wait for a few reconnection attempts: they are counted, and warned about once.
    let cluster = h.shield.cluster().cloned().unwrap();
    eventually(10, "three failed connection attempts", || async {
        cluster.link.errors()[1] + cluster.link.errors()[0] >= 3
    })
    .await;
    let lines = h.log_lines().await;
    let down = lines
        .iter()
        .filter(|l| l.contains("WARNING: Cluster link down, deciding on local state"))
        .count();
    assert_eq!(down, 1, "{lines:#?}");
    // A reload that changes [cluster] applies the rest and warns that the link keeps its settings.
    let text = std::fs::read_to_string(h.config_path())
        .unwrap()
        .replace("timeout = \"5ms\"", "timeout = \"10ms\"");
    std::fs::write(h.config_path(), text).unwrap();
    // Whoever applies it (the file watch or this request), the warning is logged.
    let reloaded = admin(&h, "POST", "/admin/reload", Some(TOKEN), "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Shield configuration warning")
                && l.contains("[cluster] changed")
                && l.contains("until restart")),
        "{lines:#?}"
    );
}
