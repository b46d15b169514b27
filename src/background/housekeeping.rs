//! Background work off the request path: temporary rules that end (`until`) are logged when they
//! end, bans are saved to the state file when they changed (atomically, see [`crate::bans`]), and
//! idle keys are pruned from the limiters and the guessing counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::log::{Level, Record};
use crate::server::{self, Shared};

/// How often expiries are checked and bans saved.
pub const TICK: Duration = Duration::from_secs(1);
/// How often idle keys are pruned.
pub const PRUNE_PERIOD: Duration = Duration::from_secs(10);

/// Runs until `stopped`, then saves the bans one last time.
pub async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_prune = Instant::now();
    let mut last_check = chrono::Utc::now().timestamp();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = server::stopped(&mut stopped) => break,
        }
        let now = chrono::Utc::now().timestamp();
        log_expired(&shared, last_check, now);
        last_check = now;
        let worker = shared.clone();
        let failing = failing.clone();
        let prune = last_prune.elapsed() >= PRUNE_PERIOD;
        if prune {
            last_prune = Instant::now();
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
    let worker = shared.clone();
    let _ = tokio::task::spawn_blocking(move || save_bans(&worker, &failing)).await;
}

/// Writes `Temporary rule expired` for every ban, limit and switch whose `until` fell in
/// `(from, to]`; ended bans are removed.
pub fn log_expired(shared: &Shared, from: i64, to: i64) {
    for ban in shared.bans.expire(to) {
        shared.log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "ban")
                .with("net", ban.net.to_string())
                .with("reason", ban.reason.as_str())
                .with("until", rfc3339(ban.until)),
        );
    }
    let snap = shared.snapshot.load();
    let config = &snap.loaded.config;
    let ended = |until: Option<i64>| until.is_some_and(|u| from < u && u <= to);
    let lists = &snap.loaded.lists;
    for (kind, list) in [
        ("blocklist", &lists.blocklist),
        ("allowlist", &lists.allowlist),
    ] {
        for (net, entry) in list.expiring_between(from, to) {
            shared.log.log(
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
        shared.log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "revoked_token")
                .with("line", entry.line as u64)
                .with("reason", entry.reason.as_deref().unwrap_or(""))
                .with("until", rfc3339(entry.until.unwrap_or_default())),
        );
    }
    for l in config.limits.iter().filter(|l| ended(l.until)) {
        shared.log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "limit")
                .with("name", l.name.as_str())
                .with("until", rfc3339(l.until.unwrap_or_default())),
        );
    }
    for w in config
        .switches
        .iter()
        .filter(|w| w.paused && ended(w.until))
    {
        shared.log.log(
            Record::new(Level::Notice, "Temporary rule expired")
                .with("kind", "switch")
                .with("name", w.name.as_str())
                .with("until", rfc3339(w.until.unwrap_or_default())),
        );
    }
}

/// Saves the bans if they changed since the last save. A failure is retried every tick and
/// logged once until a save succeeds again (`failing` remembers).
fn save_bans(shared: &Shared, failing: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let path = shared
        .snapshot
        .load()
        .loaded
        .config
        .server
        .state_file
        .clone();
    match shared.bans.save_if_dirty(&path) {
        Ok(_) => failing.store(false, Ordering::Relaxed),
        Err(e) if !failing.swap(true, Ordering::Relaxed) => shared.log.log(
            Record::new(Level::Error, "Shield state file not saved")
                .with("file", path.display().to_string())
                .with("error", e.to_string()),
        ),
        Err(_) => {}
    }
}

fn prune_tables(shared: &Shared) {
    let snap = shared.snapshot.load_full();
    for rule in &snap.limits {
        rule.limiter.prune();
        if let Some(shared) = &rule.shared {
            shared.prune();
        }
    }
    if let Some(e) = &snap.loaded.config.enumeration {
        shared.failures.prune(&e.settings, Instant::now());
    }
}

/// Unix seconds as `2026-11-28T06:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}
