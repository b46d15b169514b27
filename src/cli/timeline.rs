//! `joinshield ctl timeline`: the incident's record as Markdown for the ticket (playbook §5:
//! "document timeline, impact, and mitigation in the incident ticket"; §7: the RCA within
//! 48 hours), rendered from `/admin/timeline`'s JSON: a table of what changed when (reloads,
//! rejected reloads, switches, bans, lifts, alerts, expiries), then one row per minute with
//! traffic. `--json` prints the JSON itself. Times are UTC.

use serde_json::Value;

/// The Markdown of a `/admin/timeline` answer.
pub fn markdown(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    out.push_str(&format!(
        "# Incident timeline: {} to {} UTC (last {})\n\n",
        when(&s(&v["from"])),
        when(&s(&v["to"])),
        s(&v["since"])
    ));
    out.push_str(&format!(
        "From the shield's own record (times UTC; it keeps {}: at most 10,000 events, and per \
         minute at most 10 bans, lifts or expiries of a kind one by one, the rest counted).\n",
        s(&v["retention"])
    ));
    if let Some(dropped) = v["events_dropped"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!(
            "\n{dropped} older event{} fell out of the record's bounds; the oldest kept is from {} UTC.\n",
            plural(dropped),
            when(&s(&v["oldest_event"]))
        ));
    }
    out.push_str("\n## What changed\n\n");
    let events = v["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        out.push_str("No reload, switch, ban, alert or expiry in this window.\n");
    } else {
        out.push_str("| time (UTC) | event |\n|---|---|\n");
        for e in &events {
            let time = if e["minute"].is_string() {
                // A counted minute: the minute, not the first event's second.
                when(&s(&e["minute"]))[..16].to_string()
            } else {
                when(&s(&e["time"]))
            };
            out.push_str(&format!("| {time} | {} |\n", cell(&sentence(e))));
        }
    }
    out.push_str("\n## Traffic per minute\n\n");
    let minutes = v["minutes"].as_array().cloned().unwrap_or_default();
    if minutes.is_empty() {
        out.push_str("No request in this window.\n");
        return out;
    }
    out.push_str(
        "| minute (UTC) | requests | denied | denials by reason | upstream errors (502/504) | app 5xx |\n\
         |---|---:|---:|---|---:|---:|\n",
    );
    let mut totals = [0u64; 4];
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for m in &minutes {
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        let mut minute = when(&s(&m["minute"]));
        minute.truncate(16);
        if m["partial"].as_bool().unwrap_or(false) {
            minute.push_str(" (so far)");
        }
        let by: Vec<String> = m["by_reason"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(r, c)| {
                let c = c.as_u64().unwrap_or(0);
                match reasons.iter_mut().find(|(name, _)| name == r) {
                    Some(slot) => slot.1 += c,
                    None => reasons.push((r.clone(), c)),
                }
                format!("{r} {c}")
            })
            .collect();
        for (t, k) in
            totals
                .iter_mut()
                .zip(["requests", "denials", "upstream_errors", "app_errors"])
        {
            *t += n(k);
        }
        out.push_str(&format!(
            "| {minute} | {} | {} | {} | {} | {} |\n",
            n("requests"),
            n("denials"),
            cell(&by.join(", ")),
            n("upstream_errors"),
            n("app_errors")
        ));
    }
    let by: Vec<String> = reasons.iter().map(|(r, c)| format!("{r} {c}")).collect();
    out.push_str(&format!(
        "\nIn all: {} requests, {} denied{}, {} upstream errors, {} app 5xx.\n",
        totals[0],
        totals[1],
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        },
        totals[2],
        totals[3]
    ));
    out
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `2026-11-27T18:03:00.123Z` as `2026-11-27 18:03:00`.
fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => rfc3339.to_string(),
    }
}

/// A table cell: one line, no `|` that would end it, no HTML tag (`<` is written as a
/// character reference; `>` stays, it starts no tag).
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The sentence of one event.
fn sentence(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let list = |k: &str| -> Vec<String> {
        e[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let top = || {
        let top: Vec<String> = e["top_prefixes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{} ×{}", p["prefix"].as_str().unwrap_or(""), p["count"]))
            .collect();
        if top.is_empty() {
            String::new()
        } else {
            format!(" (top prefixes {})", top.join(", "))
        }
    };
    match e["kind"].as_str().unwrap_or("") {
        "reload" => {
            let changes = list("changes");
            let mut text = format!(
                "Configuration reloaded, version {}: {}",
                e["version"],
                if changes.is_empty() {
                    "no effective change".to_string()
                } else {
                    changes.join("; ")
                }
            );
            for w in list("warnings") {
                text.push_str(&format!(" (warning: {w})"));
            }
            text
        }
        "reload_rejected" => format!(
            "Configuration rejected, version {} kept: {}",
            e["version_kept"],
            list("errors").join("; ")
        ),
        "switch" => {
            let name = s("name");
            let paused = e["paused"].as_bool().unwrap_or(false);
            let until = e["until"]
                .as_str()
                .map(|u| format!(" until {} UTC", when(u)))
                .unwrap_or_default();
            match (paused, s("by").as_str()) {
                (true, "expiry") => format!(
                    "Switch {name}: its temporary entry ended, the permanent one pauses it still"
                ),
                (true, _) => format!("Switch {name} paused by a reload{until}"),
                (false, "expiry") => format!("Switch {name} resumed: its temporary pause ended"),
                (false, _) => format!("Switch {name} resumed by a reload"),
            }
        }
        "ban" => {
            let mut text = format!(
                "{} ban of {} until {} UTC",
                if s("source") == "automatic" {
                    "Automatic"
                } else {
                    "Manual"
                },
                s("net"),
                when(&s("until"))
            );
            if let Some(n) = e["distinct_tokens"].as_u64() {
                text.push_str(&format!(" ({n} distinct failed tokens)"));
            }
            if let Some(r) = e["replica"].as_str() {
                text.push_str(&format!(", from replica {r}"));
            }
            let reason = s("reason");
            if !reason.is_empty() {
                text.push_str(&format!(": {reason}"));
            }
            text
        }
        "ban_lifted" => format!(
            "Ban of {} lifted {}",
            s("net"),
            match s("by").as_str() {
                "manual" => "by hand (ctl unban)".to_string(),
                "expiry" => "(it ended)".to_string(),
                _ => format!("by replica {}", s("replica")),
            }
        ),
        "expired" => {
            let reason = s("reason");
            format!(
                "Temporary {} {} ended{}",
                rule_name(&s("rule")),
                s("name"),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            )
        }
        "alert" => {
            if e["sent"].as_bool().unwrap_or(false) {
                format!(
                    "Alert {} sent (the webhook answered {}): {}",
                    s("alert"),
                    e["status"],
                    s("text")
                )
            } else {
                format!(
                    "Alert {} not delivered ({}): {}",
                    s("alert"),
                    s("error"),
                    s("text")
                )
            }
        }
        "bans" => format!(
            "{} {} bans{}{}",
            e["count"],
            s("source"),
            if e["from_replicas"].as_bool().unwrap_or(false) {
                " from other replicas"
            } else {
                ""
            },
            top()
        ),
        "bans_lifted" => format!(
            "{} bans lifted {}{}",
            e["count"],
            match s("by").as_str() {
                "manual" => "by hand",
                "expiry" => "as they ended",
                _ => "by other replicas",
            },
            top()
        ),
        "expiries" => format!(
            "{} temporary {} entries ended",
            e["count"],
            rule_name(&s("rule"))
        ),
        other => format!("{other}: {e}"),
    }
}

fn rule_name(rule: &str) -> &str {
    match rule {
        "blocklist" => "blocklist entry",
        "allowlist" => "allowlist entry",
        "revoked_token" => "revoked-token entry",
        "limit" => "limit",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_a_ticket_table_and_a_minute_table() {
        let v = serde_json::json!({
            "since": "1h", "from": "2026-11-27T12:00:00.000Z", "to": "2026-11-27T13:00:00.000Z",
            "retention": "2d", "events_dropped": 0, "oldest_event": null,
            "events": [
                {"time": "2026-11-27T12:01:00.000Z", "kind": "reload", "version": 2,
                 "changes": ["limit guest-ip rate 300/min -> 5/min"], "warnings": []},
                {"time": "2026-11-27T12:02:00.000Z", "kind": "reload_rejected", "version_kept": 2,
                 "errors": ["c.toml:9: limit.rate: \"x|y\" is not a rate"]},
                {"time": "2026-11-27T12:03:10.000Z", "kind": "bans", "minute": "2026-11-27T12:03:00Z",
                 "count": 340, "source": "automatic", "from_replicas": false,
                 "top_prefixes": [{"prefix": "198.51.100.0/24", "count": 200}]},
            ],
            "minutes": [
                {"minute": "2026-11-27T12:00:00Z", "requests": 5, "denials": 0, "by_reason": {},
                 "upstream_errors": 0, "app_errors": 0, "partial": false},
                {"minute": "2026-11-27T12:01:00Z", "requests": 9, "denials": 6,
                 "by_reason": {"token_rate_limited": 6}, "upstream_errors": 1, "app_errors": 0,
                 "partial": true},
            ],
        });
        let md = markdown(&v);
        for line in [
            "# Incident timeline: 2026-11-27 12:00:00 to 2026-11-27 13:00:00 UTC (last 1h)",
            "| 2026-11-27 12:01:00 | Configuration reloaded, version 2: limit guest-ip rate 300/min -> 5/min |",
            "| 2026-11-27 12:02:00 | Configuration rejected, version 2 kept: c.toml:9: limit.rate: \"x\\|y\" is not a rate |",
            "| 2026-11-27 12:03 | 340 automatic bans (top prefixes 198.51.100.0/24 ×200) |",
            "| 2026-11-27 12:00 | 5 | 0 |  | 0 | 0 |",
            "| 2026-11-27 12:01 (so far) | 9 | 6 | token_rate_limited 6 | 1 | 0 |",
            "In all: 14 requests, 6 denied (token_rate_limited 6), 1 upstream errors, 0 app 5xx.",
        ] {
            assert!(md.lines().any(|l| l == line), "no {line:?} in\n{md}");
        }
    }

    #[test]
    fn an_empty_window_says_so() {
        let v = serde_json::json!({"since": "6h", "from": "2026-11-27T12:00:00.000Z",
            "to": "2026-11-27T18:00:00.000Z", "retention": "2d", "events_dropped": 3,
            "oldest_event": "2026-11-27T11:00:00.000Z", "events": [], "minutes": []});
        let md = markdown(&v);
        assert!(md.contains("No reload, switch, ban, alert or expiry in this window."));
        assert!(md.contains("No request in this window."));
        assert!(md.contains("3 older events fell out of the record's bounds"));
    }
}
