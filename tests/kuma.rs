//! `joinshield kuma-template`: the output is an Uptime Kuma 1.23 import file with the playbook's
//! monitors, and the guest and shield monitors really pass against the stand-in behind a shield.

mod support;

use serde_json::Value;
use support::{get, run_bin};

fn template(args: &[&str]) -> Value {
    let out = run_bin(std::iter::once("kuma-template").chain(args.iter().copied()));
    assert!(out.success(), "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("the template is JSON")
}

fn monitors(v: &Value) -> &Vec<Value> {
    v["monitorList"]
        .as_array()
        .expect("monitorList is an array")
}

#[test]
fn the_template_has_the_shape_kuma_1_23_imports() {
    let v = template(&[
        "--base-url",
        "https://app.test/",
        "--event-token",
        "Syn thetic/01?",
        "-c",
        "config/joinshield.toml",
    ]);
    assert!(v["version"].as_str().unwrap().starts_with("1.23."));
    assert_eq!(v["notificationList"], serde_json::json!([]));
    let list = monitors(&v);
    assert_eq!(list.len(), 9);
    for m in list {
        let name = m["name"].as_str().unwrap();
        // `active === 1` in Kuma's import: a number, not true.
        assert_eq!(m["active"], serde_json::json!(1), "{name}");
        assert!(m["tags"].is_array(), "{name}");
        assert!(m["notificationIDList"].is_object(), "{name}");
        match &m["headers"] {
            Value::Null => {}
            Value::String(h) => {
                let parsed: Value = serde_json::from_str(h).expect("headers hold JSON");
                assert!(parsed.is_object(), "{name}");
            }
            other => panic!("{name}: headers must be a string or null, not {other}"),
        }
        assert_eq!(
            (&m["interval"], &m["timeout"], &m["maxretries"]),
            (
                &serde_json::json!(60),
                &serde_json::json!(10),
                &serde_json::json!(2)
            ),
            "{name}"
        );
        assert_eq!(m["method"], "GET");
        let codes = m["accepted_statuscodes"].as_array().unwrap();
        assert!(codes.iter().all(Value::is_string), "{name}");
        match m["type"].as_str().unwrap() {
            "keyword" => assert!(!m["keyword"].as_str().unwrap().is_empty(), "{name}"),
            "http" => assert!(m["keyword"].is_null(), "{name}"),
            other => panic!("{name}: type {other}"),
        }
    }
    let by_url = |url: &str| {
        list.iter()
            .find(|m| m["url"] == url)
            .unwrap_or_else(|| panic!("no monitor for {url}"))
    };
    let base = by_url("https://app.test/");
    assert_eq!(
        base["accepted_statuscodes"],
        serde_json::json!(["200-299", "300-399"])
    );
    // The token is one URL-encoded path segment.
    let t = "Syn%20thetic%2F01%3F";
    for (path, keyword) in [
        (format!("/api/v1/events/{t}"), "\"slug\""),
        (format!("/api/v1/gallery/{t}"), "\"event\""),
        (format!("/api/v1/gallery/{t}/photos"), "\"data\""),
        (format!("/api/v1/events/{t}/photos"), "\"data\""),
    ] {
        let m = by_url(&format!("https://app.test{path}"));
        assert_eq!(m["keyword"], keyword, "{path}");
    }
    for what in ["tenants", "events", "photos"] {
        let m = by_url(&format!(
            "https://app.test/api/v1/support/{what}?per_page=1"
        ));
        let headers: Value = serde_json::from_str(m["headers"].as_str().unwrap()).unwrap();
        assert_eq!(
            headers["Authorization"],
            format!(
                "Bearer {}",
                joinshield::cli::kuma::SUPPORT_TOKEN_PLACEHOLDER
            )
        );
    }
    // The shipped config's admin listener.
    by_url("http://127.0.0.1:9901/healthz");
}

#[test]
fn a_bad_base_url_is_refused_with_the_fix() {
    let out = run_bin([
        "kuma-template",
        "--base-url",
        "app.test",
        "--event-token",
        "t",
    ]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("https://app.example.com"));
}

/// Whether `status` is in one of Kuma's `accepted_statuscodes` ranges.
fn accepted(status: u16, codes: &Value) -> bool {
    codes.as_array().unwrap().iter().any(|c| {
        let (lo, hi) = c.as_str().unwrap().split_once('-').unwrap();
        (lo.parse::<u16>().unwrap()..=hi.parse::<u16>().unwrap()).contains(&status)
    })
}

#[tokio::test]
async fn the_guest_and_shield_monitors_pass_against_the_stand_in() {
    let h = support::spawn_shield("", "").await;
    let base = format!("http://{}", h.addr());
    let admin = format!("http://{}", h.shield.admin_addr);
    let v = template(&[
        "--base-url",
        &base,
        "--event-token",
        "demo-synthetic01",
        "--admin",
        &admin,
    ]);
    let mut checked = 0;
    for m in monitors(&v) {
        let url = m["url"].as_str().unwrap();
        if url.contains("/api/v1/support/") {
            continue; // the stand-in has no support API
        }
        let (addr, path) = if let Some(p) = url.strip_prefix(&base) {
            (h.addr(), p)
        } else {
            let p = url.strip_prefix(&admin).expect("the shield's own URL");
            (h.shield.admin_addr, p)
        };
        let a = get(addr, path, "").await;
        assert!(
            accepted(a.status, &m["accepted_statuscodes"]),
            "{url}: {}",
            a.status
        );
        if let Some(k) = m["keyword"].as_str() {
            assert!(a.text().contains(k), "{url}: {k} not in {}", a.text());
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}
