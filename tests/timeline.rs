//! The incident's record, driven through an incident on the shield's manual clock: a limit
//! tightened by an edit, a rejected edit, a ban through `ctl`, a pause by an edit, an alert to a
//! local webhook receiver, a ban's and a pause's end. `ctl timeline` (through the binary) and
//! `/admin/timeline` must list each step in order with its time, and count each minute's
//! requests and denials exactly. The clock moves only when the test moves it, so every time is
//! known; the background tasks (file watch, housekeeping, alerts) run on their own and are
//! waited for through the record itself.
#![allow(clippy::disallowed_methods)] // bounded waits measure real time

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use joinshield::clock::ManualClock;
use serde_json::Value;
use support::recorder::{self, Mode};
use support::*;

/// 2026-11-27T12:00:00Z.
const T0: i64 = 1_795_780_800_000;
const TOKEN_VAR: &str = "JOINSHIELD_TEST_TOKEN_TIMELINE";
const TOKEN: &str = "timeline-admin";

/// The configuration of each step: the limit, the switches, the alert webhook.
fn config(upstream: &str, webhook: &str, limit: &str, switch: &str) -> String {
    let rest = format!(
        "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\n{limit}\n\n{switch}\n\
         [alerts]\nwebhook = \"{webhook}\"\ndenial_rate = \"5/min\"\ncooldown = \"1h\"\n"
    );
    config_text_admin(upstream, "", &format!("token_env = \"{TOKEN_VAR}\""), &rest)
}

/// Replaces the configuration file as an editor that saves by rename does.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn timeline_json(shield: &joinshield::Running, since: &str) -> Value {
    let a = request(
        shield.admin_addr,
        format!(
            "GET /admin/timeline?since={since} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// Waits until the record holds an event of `kind` matching `also`.
async fn wait_event(shield: &joinshield::Running, what: &str, f: impl Fn(&Value) -> bool) {
    eventually(15, what, || async {
        let v = timeline_json(shield, "1h").await;
        v["events"].as_array().unwrap().iter().any(&f)
    })
    .await;
}

#[tokio::test]
async fn an_incident_is_recorded_step_by_step_with_its_times_and_minutes() {
    std::env::set_var(TOKEN_VAR, TOKEN);
    let app = standin().await;
    let hook = recorder::spawn(Mode::Answer).await;
    let webhook = format!("http://{}/services/T0/B0/secret", hook.addr);
    let upstream = format!("http://{}", app.addr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("joinshield.toml");
    let loose = "rate = \"600/min\"\nburst = 100";
    let tight = "rate = \"1/h\"\nburst = 2";
    std::fs::write(&path, config(&upstream, &webhook, loose, "")).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let loaded = joinshield::config::load(&path).unwrap();
    let shield = joinshield::start_with_clock(loaded, clock.clone())
        .await
        .unwrap();
    let advance_to = |secs: u64| {
        let now = shield.now().unix_ms();
        let target = T0 + i64::try_from(secs).unwrap() * 1000;
        assert!(target >= now, "the clock only moves forward");
        clock.advance(Duration::from_millis((target - now).unsigned_abs()));
    };
    let guest = |ip: &'static str, path: &'static str| {
        let addr = shield.addr;
        async move {
            get(addr, path, &format!("X-Forwarded-For: {ip}\r\n"))
                .await
                .status
        }
    };

    // 12:00:10 — ordinary traffic.
    advance_to(10);
    for _ in 0..3 {
        assert_eq!(
            guest("198.51.100.1", "/api/v1/events/demo-wedding-2026").await,
            200
        );
    }

    // 12:01:00 — the limit is tightened by an edit.
    advance_to(60);
    save(&path, &config(&upstream, &webhook, tight, ""));
    wait_version(&shield, 2, Duration::from_secs(15)).await;

    // 12:01:10 — one client goes over it: 2 pass, 6 are refused, and the denial alert goes out.
    advance_to(70);
    for i in 0..8 {
        let want = if i < 2 { 200 } else { 429 };
        assert_eq!(
            guest("198.51.100.2", "/api/v1/events/demo-wedding-2026").await,
            want
        );
    }
    hook.wait_for(1).await;
    wait_event(&shield, "the alert is recorded", |e| e["kind"] == "alert").await;

    // 12:02:00 — an edit with a mistake is rejected.
    advance_to(120);
    save(
        &path,
        &config(&upstream, &webhook, "rate = \"lots\"\nburst = 2", ""),
    );
    wait_event(&shield, "the rejected reload", |e| {
        e["kind"] == "reload_rejected"
    })
    .await;

    // 12:03:00 — a ban through ctl, for two minutes.
    advance_to(180);
    let out = ctl(
        shield.admin_addr,
        TOKEN,
        &[
            "ban",
            "203.0.113.9",
            "--for",
            "2m",
            "--reason",
            "scraping the gallery",
        ],
    )
    .await;
    assert!(out.success(), "{}", out.text());

    // 12:04:00 — downloads paused by an edit, until 12:06; a download is refused at 12:04:10.
    advance_to(240);
    let pause =
        "[[switch]]\nname = \"downloads\"\nroutes = [\"gallery_download\"]\npaused = true\n\
                 until = \"2026-11-27T12:06:00Z\"\nmessage = \"Downloads are paused.\"\n";
    save(&path, &config(&upstream, &webhook, tight, pause));
    wait_version(&shield, 3, Duration::from_secs(15)).await;
    advance_to(250);
    assert_eq!(
        guest("198.51.100.3", "/api/v1/gallery/demo-wedding-2026/download").await,
        503
    );

    // 12:05:30 — the ban has ended (at 12:05:00); 12:06:30 — so has the pause (at 12:06:00).
    advance_to(330);
    wait_event(&shield, "the ban's end", |e| e["kind"] == "ban_lifted").await;
    advance_to(390);
    wait_event(&shield, "the pause's end", |e| {
        e["kind"] == "switch" && e["by"] == "expiry"
    })
    .await;

    // 12:07:00 — the record.
    advance_to(420);
    let v = timeline_json(&shield, "1h").await;
    let events = v["events"].as_array().unwrap();
    let steps: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["time"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("2026-11-27T12:01:00.000Z", "reload"),
        ("2026-11-27T12:01:10.000Z", "alert"),
        ("2026-11-27T12:02:00.000Z", "reload_rejected"),
        ("2026-11-27T12:03:00.000Z", "ban"),
        ("2026-11-27T12:04:00.000Z", "reload"),
        ("2026-11-27T12:04:00.000Z", "switch"),
        ("2026-11-27T12:05:00.000Z", "ban_lifted"),
        ("2026-11-27T12:06:00.000Z", "switch"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
    assert_eq!(steps, expected, "{v:#}");
    assert_eq!(events[0]["version"], 2);
    let changes = events[0]["changes"].to_string();
    assert!(changes.contains("limit guest-ip rate"), "{changes}");
    assert_eq!(events[1]["alert"], "denial_rate");
    assert_eq!(
        (&events[1]["sent"], &events[1]["status"]),
        (&Value::from(true), &Value::from(200))
    );
    assert_eq!(events[2]["version_kept"], 2);
    assert!(
        events[2]["errors"].to_string().contains("lots"),
        "{}",
        events[2]
    );
    assert_eq!(events[3]["net"], "203.0.113.9/32");
    assert_eq!(events[3]["source"], "manual");
    assert_eq!(events[3]["reason"], "scraping the gallery");
    assert_eq!(events[3]["until"], "2026-11-27T12:05:00Z");
    assert_eq!(events[4]["version"], 3);
    assert_eq!(
        (
            &events[5]["name"],
            &events[5]["paused"],
            &events[5]["by"],
            &events[5]["until"]
        ),
        (
            &Value::from("downloads"),
            &Value::from(true),
            &Value::from("reload"),
            &Value::from("2026-11-27T12:06:00Z")
        )
    );
    assert_eq!(
        (&events[6]["net"], &events[6]["by"]),
        (&Value::from("203.0.113.9/32"), &Value::from("expiry"))
    );
    assert_eq!(
        (&events[7]["paused"], &events[7]["by"]),
        (&Value::from(false), &Value::from("expiry"))
    );

    // Each minute's requests and denials, exactly.
    let minutes: Vec<(String, u64, u64, String)> = v["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["minute"].as_str().unwrap().to_string(),
                m["requests"].as_u64().unwrap(),
                m["denials"].as_u64().unwrap(),
                m["by_reason"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        minutes,
        vec![
            ("2026-11-27T12:00:00Z".to_string(), 3, 0, "{}".to_string()),
            (
                "2026-11-27T12:01:00Z".to_string(),
                8,
                6,
                "{\"token_rate_limited\":6}".to_string()
            ),
            (
                "2026-11-27T12:04:00Z".to_string(),
                1,
                1,
                "{\"service_paused\":1}".to_string()
            ),
        ],
        "{v:#}"
    );
    // Since 12:01:30: the steps from the rejected edit on.
    let later = timeline_json(&shield, "330s").await;
    let kinds: Vec<&str> = later["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "reload_rejected",
            "ban",
            "reload",
            "switch",
            "ban_lifted",
            "switch"
        ],
        "{later:#}"
    );

    // The Markdown for the ticket, through the binary: each step on its row, in order.
    let out = ctl(shield.admin_addr, TOKEN, &["timeline", "--since", "1h"]).await;
    assert!(out.success(), "{}", out.text());
    let md = out.stdout;
    let rows = [
        "| 2026-11-27 12:01:00 | Configuration reloaded, version 2: limit guest-ip rate",
        "| 2026-11-27 12:01:10 | Alert denial_rate sent (the webhook answered 200)",
        "| 2026-11-27 12:02:00 | Configuration rejected, version 2 kept:",
        "| 2026-11-27 12:03:00 | Manual ban of 203.0.113.9/32 until 2026-11-27 12:05:00 UTC: scraping the gallery |",
        "| 2026-11-27 12:04:00 | Configuration reloaded, version 3: switch downloads (temporary, until 2026-11-27T12:06:00Z) paused",
        "| 2026-11-27 12:04:00 | Switch downloads paused by a reload until 2026-11-27 12:06:00 UTC |",
        "| 2026-11-27 12:05:00 | Ban of 203.0.113.9/32 lifted (it ended) |",
        "| 2026-11-27 12:06:00 | Switch downloads resumed: its temporary pause ended |",
        "| 2026-11-27 12:00 | 3 | 0 |  | 0 | 0 |",
        "| 2026-11-27 12:01 | 8 | 6 | token_rate_limited 6 | 0 | 0 |",
        "| 2026-11-27 12:04 | 1 | 1 | service_paused 1 | 0 | 0 |",
        "In all: 12 requests, 7 denied (token_rate_limited 6, service_paused 1), 0 upstream errors, 0 app 5xx.",
    ];
    let mut at = 0;
    for row in rows {
        let found = md[at..]
            .find(row)
            .unwrap_or_else(|| panic!("no {row:?} after byte {at} of\n{md}"));
        at += found + row.len();
    }
    // --json is the API's JSON.
    let out = ctl(
        shield.admin_addr,
        TOKEN,
        &["timeline", "--since", "1h", "--json"],
    )
    .await;
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["events"].as_array().unwrap().len(), 8);
    shield.shutdown().await;
}

#[tokio::test]
async fn a_bad_since_is_refused_with_the_range() {
    std::env::set_var(TOKEN_VAR, TOKEN);
    let h = spawn_shield_admin(&format!("token_env = \"{TOKEN_VAR}\""), "").await;
    for since in ["3d", "0s", "soon"] {
        let a = admin(
            &h,
            "GET",
            &format!("/admin/timeline?since={since}"),
            Some(TOKEN),
            "",
        )
        .await;
        assert_eq!(a.status, 422, "{since}: {}", a.text());
        assert!(a.text().contains("2d"), "{}", a.text());
    }
    let a = admin(&h, "GET", "/admin/timeline", None, "").await;
    assert_eq!(a.status, 401);
    let a = admin(&h, "GET", "/admin/timeline", Some(TOKEN), "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["since"], "6h");
}
