//! The admin API's JSON views of what the shield holds: `/admin/status` (what is loaded, what
//! is paused, list sizes, bans, rates), `/admin/denials` (the recent denials as NDJSON) and
//! `/admin/offenders` (the heavy hitters), with their query parameters.

use crate::admin::Parts;
use crate::telemetry::recent::{Kind, Recent, MINUTES_KEPT};

/// The largest `since` of `/admin/denials` (the ring may hold less).
pub const MAX_DENIALS_SINCE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The largest `top` of `/admin/offenders`.
pub const MAX_TOP: usize = 100;

/// `since` from a query string: a duration from 1 s up to `max` (default 15 minutes).
fn since_param(query: &str, max: std::time::Duration) -> Result<std::time::Duration, String> {
    let Some(text) = crate::admin::listener::query_param(query, "since") else {
        return Ok(std::time::Duration::from_secs(15 * 60));
    };
    let fix = format!(
        "write since=15m (a duration from 1s to {})",
        crate::units::format_duration(max)
    );
    match crate::units::parse_duration(&text) {
        Ok(d) if d >= std::time::Duration::from_secs(1) && d <= max => Ok(d),
        Ok(_) => Err(format!("since={text} is out of range: {fix}")),
        Err(e) => Err(format!("since={text}: {e}; {fix}")),
    }
}

/// `top` from a query string: 1 to [`MAX_TOP`] (default 20).
fn top_param(query: &str) -> Result<usize, String> {
    let Some(text) = crate::admin::listener::query_param(query, "top") else {
        return Ok(20);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(format!(
            "top={text} is not a whole number from 1 to {MAX_TOP}: write e.g. top=20"
        )),
    }
}

/// `/admin/denials`: the denials since `since` as NDJSON, newest last; or why the query is
/// wrong.
pub(crate) fn denials_ndjson(recent: &Recent, query: &str, now_ms: i64) -> Result<String, String> {
    let since = since_param(query, MAX_DENIALS_SINCE)?;
    let cutoff = now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let mut out = String::new();
    for e in recent.ring.since(cutoff) {
        out.push_str(&e.json());
        out.push('\n');
    }
    Ok(out)
}

/// `/admin/offenders`: the top IPs, prefixes and token previews by denials and by failed
/// tokens; or why the query is wrong. `since` is rounded up to whole minutes.
pub(crate) fn offenders_json(
    recent: &Recent,
    query: &str,
    now_ms: i64,
) -> Result<serde_json::Value, String> {
    let since = since_param(
        query,
        std::time::Duration::from_secs(60 * MINUTES_KEPT as u64),
    )?;
    let top = top_param(query)?;
    let minutes = i64::try_from(since.as_secs().div_ceil(60)).unwrap_or(1);
    Ok(serde_json::json!({
        "since": crate::units::format_duration(since),
        "minutes": minutes,
        "top": top,
        "denials": recent.offenders.top(Kind::Denials, minutes, top, now_ms),
        "failed_tokens": recent.offenders.top(Kind::FailedTokens, minutes, top, now_ms),
    }))
}

/// An estimated count, rounded to a whole number.
fn whole(estimate: f64) -> u64 {
    // Saturating: a negative or NaN estimate is 0.
    estimate.round() as u64
}

/// The limits and switches in force at `now_unix` (for `/admin/status`): a temporary one with
/// its `until` and, when it stands in for a permanent one of its name, that one
/// (`stands_in_for`); a permanent one replaced by a stand-in, or a temporary one whose time is
/// up, is not in force and not listed.
pub(crate) fn in_force_json(
    config: &crate::config::Config,
    now_unix: i64,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    use crate::config::schema::{in_force, stands_in_for};
    let route_names = |classes: &[usize]| -> Vec<&str> {
        classes
            .iter()
            .filter_map(|&c| config.routes.get(c).map(|r| r.name.as_str()))
            .collect()
    };
    let limits = &config.limits;
    let limits = (0..limits.len())
        .filter(|&i| in_force(limits, i, now_unix))
        .map(|i| {
            let l = &limits[i];
            let permanent = stands_in_for(limits, i).map(|p| {
                let p = &limits[p];
                serde_json::json!({
                    "key": p.key.as_str(),
                    "rate": p.rate.to_string(),
                    "burst": p.burst.get(),
                    "mode": mode_name(p.mode),
                    "routes": route_names(&p.classes),
                })
            });
            serde_json::json!({
                "name": l.name,
                "key": l.key.as_str(),
                "rate": l.rate.to_string(),
                "burst": l.burst.get(),
                "mode": mode_name(l.mode),
                "shared": l.shared,
                "routes": route_names(&l.classes),
                "until": l.until.map(crate::clock::rfc3339),
                "stands_in_for": permanent,
            })
        })
        .collect();
    let switches = &config.switches;
    let switches = (0..switches.len())
        .filter(|&i| in_force(switches, i, now_unix))
        .map(|i| {
            let w = &switches[i];
            let permanent = stands_in_for(switches, i).map(|p| {
                let p = &switches[p];
                serde_json::json!({ "paused": p.paused, "routes": route_names(&p.classes) })
            });
            serde_json::json!({
                "name": w.name,
                "paused": w.paused,
                "routes": route_names(&w.classes),
                "until": w.until.map(crate::clock::rfc3339),
                "stands_in_for": permanent,
            })
        })
        .collect();
    (limits, switches)
}

fn mode_name(mode: crate::policy::limits::Mode) -> &'static str {
    match mode {
        crate::policy::limits::Mode::Enforce => "enforce",
        crate::policy::limits::Mode::Shadow => "shadow",
    }
}

/// `/admin/status`: what is loaded, what is paused, how big the lists are, how many bans are
/// active, and how the app and the shield are doing.
/// The guest connections: open now, lingering now, refused and closed to make room since
/// the start.
fn connections_json(c: &crate::telemetry::meters::ConnectionCounts) -> serde_json::Value {
    use crate::telemetry::meters::Refusal;
    use std::sync::atomic::Ordering::Relaxed;
    let refused = crate::telemetry::meters::load(&c.refused);
    serde_json::json!({
        "open": c.open_now(),
        "lingering": c.lingering.load(Relaxed),
        "refused": {
            "per_ip": refused[Refusal::PerIp.index()],
            "max": refused[Refusal::Max.index()],
        },
        "idle_closed": c.idle_closed.load(Relaxed),
    })
}

pub(crate) fn status_json(shared: &Parts, now_ms: i64) -> serde_json::Value {
    let snap = shared.snapshots.load();
    let config = &snap.loaded.config;
    let now_unix = now_ms.div_euclid(1000);
    let (limits, switches) = in_force_json(config, now_unix);
    let lists = &snap.loaded.lists;
    let rate = |minutes: u32| {
        shared
            .telemetry
            .recent
            .rates
            .window(minutes, now_ms)
            .guest_error_rate()
    };
    let last = shared.telemetry.recent.rates.window(1, now_ms);
    serde_json::json!({
        "version": snap.version,
        "sha256": snap.loaded.sha256,
        "loaded_at": crate::clock::rfc3339(snap.loaded_at),
        "limits": limits,
        "switches": switches,
        "last_rejected": shared.reloader.last_rejected().map(|r| serde_json::json!({
            "at": crate::clock::rfc3339(r.at),
            "errors": r.errors,
            "version": r.version,
        })),
        "lists": {
            "blocklist": lists.blocklist.len(),
            "allowlist": lists.allowlist.len(),
            "revoked_tokens": lists.revoked.len(),
        },
        "bans": shared.defence.bans.list(now_unix).len(),
        "guest_error_rate": { "1m": rate(1), "5m": rate(5), "15m": rate(15) },
        "per_minute": {
            "requests": whole(last.requests),
            "denials": whole(last.denials),
            "guest_forwarded": whole(last.guest),
            "guest_errors": whole(last.guest_errors),
        },
        "connections": connections_json(&shared.telemetry.meters.connections),
        "denials_recorded": shared.telemetry.recent.ring.recorded(),
        "ring_capacity": shared.telemetry.recent.ring.capacity(),
        "cluster": shared.cluster.as_ref().map(|c| c.status_json()),
    })
}
