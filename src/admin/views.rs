//! The admin API's JSON views of what the shield holds: `/admin/status` (what is loaded, what
//! is paused, list sizes, bans, rates), `/admin/denials` (the recent denials as NDJSON),
//! `/admin/offenders` (the heavy hitters) and `/admin/timeline` (the incident's record), with
//! their query parameters.

use serde_json::{json, Value};

use crate::admin::Parts;
use crate::clock::{rfc3339, rfc3339_ms};
use crate::telemetry::meters::REASONS;
use crate::telemetry::recent::{Kind, Recent, MINUTES_KEPT};
use crate::telemetry::timeline::{
    AlertOutcome, Entry, Event, LiftCause, MinuteRow, SwitchCause, Tally, RETENTION,
};

/// The largest `since` of `/admin/denials` (the ring may hold less).
pub const MAX_DENIALS_SINCE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The largest `top` of `/admin/offenders`.
pub const MAX_TOP: usize = 100;

/// `since` from a query string: a duration from 1 s up to `max` (default 15 minutes).
fn since_param(query: &str, max: std::time::Duration) -> Result<std::time::Duration, String> {
    since_param_or(query, max, std::time::Duration::from_secs(15 * 60))
}

/// `since` from a query string: a duration from 1 s up to `max`, else `default`.
fn since_param_or(
    query: &str,
    max: std::time::Duration,
    default: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let Some(text) = crate::admin::listener::query_param(query, "since") else {
        return Ok(default);
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

/// The default `since` of `/admin/timeline`.
pub const TIMELINE_SINCE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// The `reason` indices that are the app failing (502/504), not the shield refusing.
const UPSTREAM_REASONS: [usize; 2] = [1, 2];

/// `/admin/timeline`: what changed when and the traffic per minute since `since` (default 6 h,
/// at most the 48 h kept); or why the query is wrong. Times are RFC 3339 UTC.
pub(crate) fn timeline_json(shared: &Parts, query: &str, now_ms: i64) -> Result<Value, String> {
    let since = since_param_or(query, RETENTION, TIMELINE_SINCE)?;
    let since_ms = now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    let telemetry = &shared.telemetry;
    let view = telemetry
        .timeline
        .view(&telemetry.recent.rates, since_ms, now_ms);
    Ok(json!({
        "since": crate::units::format_duration(since),
        "from": rfc3339_ms(view.from_ms),
        "to": rfc3339_ms(view.to_ms),
        "retention": format!("{}h", RETENTION.as_secs() / 3600),
        "events_dropped": view.dropped,
        "oldest_event": view.oldest_ms.map(rfc3339_ms),
        "events": view.events.iter().map(event_json).collect::<Vec<_>>(),
        "minutes": view.minutes.iter().map(minute_json).collect::<Vec<_>>(),
    }))
}

fn lift_cause(cause: &LiftCause) -> (&'static str, Option<&str>) {
    match cause {
        LiftCause::Manual => ("manual", None),
        LiftCause::Expired => ("expiry", None),
        LiftCause::Replica(r) => ("replica", Some(r.as_str())),
    }
}

fn event_json(entry: &Entry) -> Value {
    let time = rfc3339_ms(entry.at_ms);
    match &entry.event {
        Event::Reloaded {
            version,
            changes,
            warnings,
        } => json!({
            "time": time, "kind": "reload", "version": version,
            "changes": changes, "warnings": warnings,
        }),
        Event::Rejected { kept, errors } => json!({
            "time": time, "kind": "reload_rejected", "version_kept": kept, "errors": errors,
        }),
        Event::Switch {
            name,
            paused,
            until,
            cause,
        } => json!({
            "time": time, "kind": "switch", "name": name, "paused": paused,
            "until": until.map(rfc3339),
            "by": match cause { SwitchCause::Reload => "reload", SwitchCause::Expiry => "expiry" },
        }),
        Event::Banned {
            net,
            automatic,
            replica,
            reason,
            until,
            distinct_tokens,
        } => json!({
            "time": time, "kind": "ban", "net": net.to_string(),
            "source": if *automatic { "automatic" } else { "manual" },
            "replica": replica, "reason": reason, "until": rfc3339(*until),
            "distinct_tokens": distinct_tokens,
        }),
        Event::Lifted { net, cause, reason } => {
            let (by, replica) = lift_cause(cause);
            json!({
                "time": time, "kind": "ban_lifted", "net": net.to_string(), "by": by,
                "replica": replica, "reason": reason,
            })
        }
        Event::Expired { rule, name, reason } => json!({
            "time": time, "kind": "expired", "rule": rule, "name": name, "reason": reason,
        }),
        Event::Alert {
            kind,
            outcome,
            text,
        } => {
            let (sent, status, error) = match outcome {
                AlertOutcome::Sent(status) => (true, Some(*status), None),
                AlertOutcome::Failed(why) => (false, None, Some(why.as_str())),
            };
            json!({
                "time": time, "kind": "alert", "alert": kind, "sent": sent, "status": status,
                "error": error, "text": text,
            })
        }
        Event::Many { tally, count, top } => {
            let top: Vec<Value> = top
                .iter()
                .map(|(net, n)| json!({ "prefix": net.to_string(), "count": n }))
                .collect();
            let minute = rfc3339(entry.at_ms.div_euclid(60_000) * 60);
            match tally {
                Tally::Banned { automatic, replica } => json!({
                    "time": time, "kind": "bans", "minute": minute, "count": count,
                    "source": if *automatic { "automatic" } else { "manual" },
                    "from_replicas": replica, "top_prefixes": top,
                }),
                Tally::Lifted(by) => json!({
                    "time": time, "kind": "bans_lifted", "minute": minute, "count": count,
                    "by": match by { 0 => "manual", 1 => "expiry", _ => "replica" },
                    "top_prefixes": top,
                }),
                Tally::Expired(rule) => json!({
                    "time": time, "kind": "expiries", "minute": minute, "count": count,
                    "rule": rule,
                }),
            }
        }
    }
}

fn minute_json(row: &MinuteRow) -> Value {
    let upstream: u64 = UPSTREAM_REASONS.iter().map(|&i| row.reasons[i]).sum();
    let denials: u64 = row.reasons.iter().sum::<u64>() - upstream;
    let by_reason: serde_json::Map<String, Value> = REASONS
        .iter()
        .enumerate()
        .filter(|(i, _)| !UPSTREAM_REASONS.contains(i) && row.reasons[*i] > 0)
        .map(|(i, r)| (r.to_string(), Value::from(row.reasons[i])))
        .collect();
    json!({
        "minute": rfc3339(row.minute * 60),
        "requests": row.requests,
        "denials": denials,
        "by_reason": by_reason,
        "upstream_errors": upstream,
        "app_errors": row.app_errors,
        "partial": row.partial,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_upstream_reasons_are_the_502_and_the_504() {
        let names = super::UPSTREAM_REASONS.map(|i| super::REASONS[i]);
        assert_eq!(names, ["upstream_unavailable", "upstream_timeout"]);
    }
}
