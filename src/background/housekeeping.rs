//! Background work off the request path: temporary rules that end (`until`) are logged when they
//! end (naming the permanent limit or switch that is back, for a stand-in), bans are saved to the state file when they changed (atomically, see
//! [`super::state_file`]), and idle keys are pruned from the limiters and the guessing counters.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{rfc3339, SharedClock};
use crate::config::schema::stands_in_for;
use crate::defence::Defence;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshots;
use crate::telemetry::log::{Level, LogHandle, Record};
use crate::telemetry::timeline::{LiftCause, SwitchCause, Timeline};

use super::state_file::StateFile;

/// How often expiries are checked and bans saved.
pub const TICK: Duration = Duration::from_secs(1);
/// How often idle keys are pruned.
pub const PRUNE_PERIOD: Duration = Duration::from_secs(10);

/// What housekeeping holds: the snapshots (for the rules and the state file's path), the
/// defences, the log and the clock.
#[derive(Clone)]
pub struct Parts {
    /// The snapshot in force.
    pub snapshots: Arc<Snapshots>,
    /// Bans and failed-token counts.
    pub defence: Arc<Defence>,
    /// Where expiries and save failures are written.
    pub log: LogHandle,
    /// Where expiries are recorded for the incident's record.
    pub timeline: Arc<Timeline>,
    /// The time.
    pub clock: SharedClock,
}

/// Runs until `shutdown`, then saves the bans one last time.
pub async fn run(parts: Parts, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    let start = parts.clock.now();
    let mut last_prune = start.instant();
    let mut last_check = start.unix();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => break,
        }
        let now = parts.clock.now();
        log_expired(&parts, last_check, now.unix());
        last_check = now.unix();
        let worker = parts.clone();
        let failing = failing.clone();
        let prune = now.instant().saturating_duration_since(last_prune) >= PRUNE_PERIOD;
        if prune {
            last_prune = now.instant();
        }
        // File writes and table walks belong on the blocking pool, never on an async worker.
        let _ = tokio::task::spawn_blocking(move || {
            save_bans(&worker, &failing);
            if prune {
                prune_tables(&worker);
            }
        })
        .await;
    }
    let worker = parts.clone();
    let _ = tokio::task::spawn_blocking(move || save_bans(&worker, &failing)).await;
}

/// Writes `Temporary rule expired` for every ban, limit and switch whose `until` fell in
/// `(from, to]`, and records each in the timeline at its `until`; ended bans are removed.
pub fn log_expired(parts: &Parts, from: i64, to: i64) {
    let log = &parts.log;
    let timeline = &parts.timeline;
    for ban in parts.defence.bans.expire(to) {
        timeline.lifted(ban.until.saturating_mul(1000), &ban, LiftCause::Expired);
        log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "ban")
                .with("net", ban.net.to_string())
                .with("reason", ban.reason.as_str())
                .with("until", rfc3339(ban.until)),
        );
    }
    let snap = parts.snapshots.load();
    let config = &snap.loaded.config;
    let ended = |until: Option<i64>| until.is_some_and(|u| from < u && u <= to);
    let lists = &snap.loaded.lists;
    for (kind, list) in [
        ("blocklist", &lists.blocklist),
        ("allowlist", &lists.allowlist),
    ] {
        for (net, entry) in list.expiring_between(from, to) {
            timeline.expired(
                entry.until.unwrap_or(to).saturating_mul(1000),
                kind,
                &net.to_string(),
                entry.reason.as_deref().unwrap_or(""),
            );
            log.log(
                Record::new(Level::Notice, "Temporary rule expired")
                    .with("kind", kind)
                    .with("net", net.to_string())
                    .with("reason", entry.reason.as_deref().unwrap_or(""))
                    .with("until", rfc3339(entry.until.unwrap_or_default())),
            );
        }
    }
    for entry in lists.revoked.expiring_between(from, to) {
        // A revoked token's entry is named by its line, never by the token.
        timeline.expired(
            entry.until.unwrap_or(to).saturating_mul(1000),
            "revoked_token",
            &format!("line {}", entry.line),
            entry.reason.as_deref().unwrap_or(""),
        );
        log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "revoked_token")
                .with("line", entry.line as u64)
                .with("reason", entry.reason.as_deref().unwrap_or(""))
                .with("until", rfc3339(entry.until.unwrap_or_default())),
        );
    }
    let limits = &config.limits;
    for (i, l) in limits.iter().enumerate().filter(|(_, l)| ended(l.until)) {
        timeline.expired(
            l.until.unwrap_or(to).saturating_mul(1000),
            "limit",
            &l.name,
            "",
        );
        let mut record = Record::new(Level::Notice, "Temporary rule expired")
            .with("kind", "limit")
            .with("name", l.name.as_str())
            .with("until", rfc3339(l.until.unwrap_or_default()));
        if let Some(p) = stands_in_for(limits, i).map(|p| &limits[p]) {
            record = record.with(
                "back",
                format!(
                    "the permanent limit {}: {} per {}, burst {}",
                    p.name,
                    p.rate,
                    p.key.as_str(),
                    p.burst
                ),
            );
        }
        log.log(record);
    }
    let switches = &config.switches;
    for (i, w) in switches.iter().enumerate().filter(|(_, w)| ended(w.until)) {
        let permanent = stands_in_for(switches, i).map(|p| &switches[p]);
        if !w.paused && permanent.is_none() {
            // An unpaused temporary switch changed nothing while it lasted.
            continue;
        }
        // The permanent switch of that name, if there is one, applies again.
        timeline.switch(
            w.until.unwrap_or(to).saturating_mul(1000),
            &w.name,
            permanent.is_some_and(|p| p.paused),
            None,
            SwitchCause::Expiry,
        );
        let mut record = Record::new(Level::Notice, "Temporary rule expired")
            .with("kind", "switch")
            .with("name", w.name.as_str())
            .with("until", rfc3339(w.until.unwrap_or_default()));
        if let Some(p) = permanent {
            record = record.with(
                "back",
                format!(
                    "the permanent switch {}: {}",
                    p.name,
                    if p.paused { "paused" } else { "off" }
                ),
            );
        }
        log.log(record);
    }
}

/// Saves the bans if they changed since the last save. A failure is retried every tick and
/// logged once until a save succeeds again (`failing` remembers).
fn save_bans(parts: &Parts, failing: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let path = parts
        .snapshots
        .load()
        .loaded
        .config
        .server
        .state_file
        .clone();
    match parts.defence.bans.save_if_dirty(&path) {
        Ok(_) => failing.store(false, Ordering::Relaxed),
        Err(e) if !failing.swap(true, Ordering::Relaxed) => parts.log.log(
            Record::new(Level::Error, "Shield state file not saved")
                .with("file", path.display().to_string())
                .with("error", e.to_string()),
        ),
        Err(_) => {}
    }
}

fn prune_tables(parts: &Parts) {
    let snap = parts.snapshots.load_full();
    let now = parts.clock.now();
    for (rule, shared) in snap.rules.limits.iter().zip(&snap.shared_limits) {
        rule.limiter.prune();
        if let Some(shared) = shared {
            shared.prune(now.unix_ms());
        }
    }
    if let Some(e) = &snap.loaded.config.enumeration {
        parts.defence.failures.prune(&e.settings, now.instant());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::bans::Bans;
    use crate::snapshot::Snapshot;
    use crate::telemetry::alerts::Alerts;
    use crate::telemetry::log::{Captured, Destination, LogConfig, LogSink};

    /// Housekeeping on the shield's clock, not the machine's: a manual clock moved along with
    /// tokio's paused time ends a temporary blocklist entry, and the task logs it.
    #[tokio::test(start_paused = true)]
    async fn a_temporary_entry_is_logged_when_it_ends_on_the_shields_clock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("block.txt"),
            "203.0.113.5 until=2026-11-27T18:00:05Z reason=\"incident\"\n",
        )
        .unwrap();
        let text =
            "[server]\nupstream = \"http://127.0.0.1:1\"\n[lists]\nblocklist = \"block.txt\"\n";
        let loaded = crate::config::parse(text, &dir.path().join("c.toml")).unwrap();
        // 2026-11-27T18:00:00Z
        let clock = Arc::new(ManualClock::new(1_795_802_400_000));
        let now = crate::clock::Clock::now(&*clock);
        let snapshot = Snapshot::build(Arc::new(loaded), 1, None, now.unix()).unwrap();
        let (snapshots, _publisher) = Snapshots::new(snapshot);
        let captured = Captured::new();
        let sink = LogSink::start_clocked(
            &LogConfig::default(),
            Destination::Memory(captured.clone()),
            64,
            clock.clone(),
        )
        .unwrap();
        let timeline = Arc::new(Timeline::default());
        let defence = Arc::new(Defence::new(
            Arc::new(Bans::new()),
            sink.handle(),
            Arc::new(Alerts::default()),
            timeline.clone(),
            None,
        ));
        let parts = Parts {
            snapshots,
            defence,
            log: sink.handle(),
            timeline: timeline.clone(),
            clock: clock.clone(),
        };
        let (stop, shutdown) = crate::shutdown::pair();
        let task = tokio::spawn(run(parts, shutdown));
        for _ in 0..10 {
            clock.advance(TICK);
            tokio::time::sleep(TICK).await;
        }
        stop.stop();
        task.await.unwrap();
        sink.flush();
        let lines = captured.lines();
        assert!(
            lines.iter().any(|l| l.contains("Temporary rule expired")
                && l.contains("\"net\":\"203.0.113.5/32\"")
                && l.contains("\"until\":\"2026-11-27T18:00:05Z\"")),
            "{lines:?}"
        );
        // The line is stamped by the shield's clock too.
        assert!(
            lines.iter().all(|l| l.starts_with("[2026-11-27 18:00:")),
            "{lines:?}"
        );
        // And the timeline has it at the entry's end.
        let view = timeline.view(
            &crate::telemetry::recent::Rates::default(),
            0,
            1_795_802_410_000,
        );
        assert!(
            matches!(
                &view.events[..],
                [crate::telemetry::timeline::Entry {
                    at_ms: 1_795_802_405_000,
                    event: crate::telemetry::timeline::Event::Expired {
                        rule: "blocklist",
                        ..
                    },
                }]
            ),
            "{view:?}"
        );
    }
}
