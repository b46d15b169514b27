//! `joinshield kuma-template`: the incident playbook's synthetic monitors (section 1.1) as an
//! Uptime Kuma 1.23 backup file, ready for Settings → Backup → Import, plus one monitor for the
//! shield's own `/healthz`.
//!
//! The shape is what Kuma 1.23's `uploadBackup` handler reads: a top-level `version` (1.7.0 or
//! later, or tags and retry intervals are ignored), `notificationList`, `monitorList`. In each
//! monitor `active` must be the number 1 (compared with `===`), `tags` must be an array (it is
//! iterated), `headers` is a JSON *string* (Kuma parses it when it checks), `timeout` is in
//! seconds, and `accepted_statuscodes` is a list of ranges.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// The Kuma version the file claims to come from (the last 1.23 release).
pub const KUMA_VERSION: &str = "1.23.16";

/// What replaces the support API's bearer token until the operator sets it in Kuma (the
/// playbook: bearer tokens are never stored in the repo).
pub const SUPPORT_TOKEN_PLACEHOLDER: &str = "REPLACE_WITH_SUPPORT_READ_ONLY_TOKEN";

/// The playbook's defaults: interval 60 s, timeout 10 s, 2 retries before alerting.
const INTERVAL: u64 = 60;
const TIMEOUT: u64 = 10;
const RETRIES: u64 = 2;

/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why the template cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `--base-url` is not an http(s) URL.
    #[error("--base-url {0:?} is not a URL: write e.g. https://app.example.com")]
    BaseUrl(String),
    /// `--event-token` is empty.
    #[error("--event-token is empty: give the token of the dedicated synthetic event")]
    EmptyToken,
}

/// One monitor of the template.
struct Monitor<'a> {
    name: &'a str,
    url: String,
    keyword: Option<&'a str>,
    accepted: &'a [&'a str],
    headers: Option<String>,
    group: &'a str,
    description: &'a str,
}

/// The Kuma 1.23 import file for `base_url` (the app's public URL), the synthetic event's
/// `event_token`, and the shield's admin listener `admin_url` (`http://host:port`).
pub fn template(
    base_url: &str,
    event_token: &str,
    admin_url: &str,
) -> Result<Value, TemplateError> {
    let base = base(base_url)?;
    if event_token.is_empty() {
        return Err(TemplateError::EmptyToken);
    }
    let token = utf8_percent_encode(event_token, SEGMENT).to_string();
    let support_headers =
        Some(json!({ "Authorization": format!("Bearer {SUPPORT_TOKEN_PLACEHOLDER}") }).to_string());
    let ok = &["200-299"][..];
    let mut monitors = vec![Monitor {
        name: "Public uptime",
        url: format!("{base}/"),
        keyword: None,
        accepted: &["200-299", "300-399"],
        headers: None,
        group: "uptime",
        description: "Incident playbook 1.1: the base domain answers 200-399.",
    }];
    for (name, path, keyword) in [
        (
            "Guest API: event",
            format!("/api/v1/events/{token}"),
            "\"slug\"",
        ),
        (
            "Guest API: gallery",
            format!("/api/v1/gallery/{token}"),
            "\"event\"",
        ),
        (
            "Guest API: gallery photos",
            format!("/api/v1/gallery/{token}/photos"),
            "\"data\"",
        ),
        (
            "Guest API: event photos",
            format!("/api/v1/events/{token}/photos"),
            "\"data\"",
        ),
    ] {
        monitors.push(Monitor {
            name,
            url: format!("{base}{path}"),
            keyword: Some(keyword),
            accepted: ok,
            headers: None,
            group: "guest-api",
            description: "Incident playbook 1.1: a stable synthetic event token; the JSON must hold the keyword.",
        });
    }
    for (name, what) in [
        ("Support API: tenants", "tenants"),
        ("Support API: events", "events"),
        ("Support API: photos", "photos"),
    ] {
        monitors.push(Monitor {
            name,
            url: format!("{base}/api/v1/support/{what}?per_page=1"),
            keyword: None,
            accepted: ok,
            headers: support_headers.clone(),
            group: "support-api",
            description:
                "Incident playbook 1.1: replace the bearer token placeholder in Kuma after import.",
        });
    }
    monitors.push(Monitor {
        name: "joinshield /healthz",
        url: format!("{}/healthz", admin_url.trim_end_matches('/')),
        keyword: Some("ok"),
        accepted: ok,
        headers: None,
        group: "shield",
        description: "The shield in front of the app serves (its admin listener).",
    });
    let list: Vec<Value> = monitors
        .iter()
        .enumerate()
        .map(|(i, m)| monitor_json(i + 1, m))
        .collect();
    Ok(json!({
        "version": KUMA_VERSION,
        "notificationList": [],
        "monitorList": list,
    }))
}

/// `base_url` without a trailing slash, if it is an http(s) URL with a host.
fn base(base_url: &str) -> Result<String, TemplateError> {
    let bad = || TemplateError::BaseUrl(base_url.to_string());
    let uri: http::Uri = base_url.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.authority().is_none()
        || uri.query().is_some()
    {
        return Err(bad());
    }
    Ok(base_url.trim_end_matches('/').to_string())
}

fn monitor_json(id: usize, m: &Monitor<'_>) -> Value {
    json!({
        "id": id,
        "name": m.name,
        "description": m.description,
        "type": if m.keyword.is_some() { "keyword" } else { "http" },
        "url": m.url,
        "method": "GET",
        "body": null,
        "headers": m.headers,
        "authMethod": null,
        "basic_auth_user": null,
        "basic_auth_pass": null,
        "authWorkstation": null,
        "authDomain": null,
        "timeout": TIMEOUT,
        "interval": INTERVAL,
        "retryInterval": INTERVAL,
        "resendInterval": 0,
        "hostname": null,
        "port": null,
        "maxretries": RETRIES,
        "keyword": m.keyword,
        "invertKeyword": false,
        "ignoreTls": false,
        "upsideDown": false,
        "expiryNotification": false,
        "maxredirects": 10,
        "accepted_statuscodes": m.accepted,
        "dns_resolve_type": "A",
        "dns_resolve_server": "1.1.1.1",
        "proxy_id": null,
        "notificationIDList": {},
        "active": 1,
        "tags": [{ "name": "joinshield", "color": "#2563EB", "value": m.group }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_base_url_or_empty_token_is_refused() {
        for url in ["app.example.com", "ftp://x", "https://", "https://a/?q=1"] {
            assert!(
                template(url, "t", "http://127.0.0.1:9901").is_err(),
                "{url}"
            );
        }
        assert_eq!(
            template("https://a", "", "http://127.0.0.1:9901"),
            Err(TemplateError::EmptyToken)
        );
    }

    #[test]
    fn a_trailing_slash_does_not_double() {
        let v = template("https://app.test/", "t", "http://127.0.0.1:9901/").unwrap();
        let urls: Vec<&str> = v["monitorList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls[0], "https://app.test/");
        assert_eq!(urls[1], "https://app.test/api/v1/events/t");
        assert_eq!(urls[8], "http://127.0.0.1:9901/healthz");
    }
}
