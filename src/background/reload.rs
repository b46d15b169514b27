//! The single writer of the snapshot: a reload parses and validates the configuration file (and
//! reads its lists and TLS certificate pair), builds a new [`Snapshot`] and swaps it in whole. On
//! any error nothing changes and the running configuration (and certificate) keeps serving.
//! Listen addresses change only on restart.

use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::SharedClock;
use crate::config::{self, ConfigError, FileStamp};
use crate::shutdown::Shutdown;
use crate::snapshot::{Publisher, Snapshot, Snapshots};
use crate::telemetry::log::{Level, Record, Value};
use crate::telemetry::timeline::SwitchCause;
use crate::telemetry::Telemetry;

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// A new snapshot is in force.
    Applied {
        /// Its version.
        version: u64,
        /// Readable lines saying what changed.
        changes: Vec<String>,
        /// Warnings (e.g. a listen address that needs a restart).
        warnings: Vec<String>,
    },
    /// Nothing changed; these are the reasons.
    Rejected {
        /// Every error found.
        errors: Vec<ConfigError>,
        /// The version still in force.
        kept: u64,
    },
}

/// The last reload that was rejected: when, why, and the version that stayed in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When (Unix seconds).
    pub at: i64,
    /// Every error, as `file:line: key: message`.
    pub errors: Vec<String>,
    /// The version that stayed in force.
    pub version: u64,
}

/// The one writer of the snapshot: reloads on a signal, a file change or the admin API, one at
/// a time. Cheap to clone; every clone shares the one [`Publisher`].
#[derive(Clone)]
pub struct Reloader(Arc<Inner>);

struct Inner {
    /// Held (synchronously, never across an await) while a reload builds and swaps a snapshot.
    publisher: Mutex<Publisher>,
    snapshots: Arc<Snapshots>,
    telemetry: Arc<Telemetry>,
    clock: SharedClock,
    /// The last rejected reload, for `/admin/status` (held only to copy in or out).
    last_rejected: Mutex<Option<Rejection>>,
}

impl Reloader {
    /// The reloader owning `publisher`, counting and logging into `telemetry`.
    pub fn new(publisher: Publisher, telemetry: Arc<Telemetry>, clock: SharedClock) -> Reloader {
        let snapshots = publisher.snapshots().clone();
        Reloader(Arc::new(Inner {
            publisher: Mutex::new(publisher),
            snapshots,
            telemetry,
            clock,
            last_rejected: Mutex::new(None),
        }))
    }

    /// The last reload that was rejected, if any since the start (a later applied reload does
    /// not clear it: compare its time with the version's load time).
    pub fn last_rejected(&self) -> Option<Rejection> {
        self.0
            .last_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The snapshots it writes.
    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.0.snapshots
    }

    /// Reloads from the file the current snapshot was loaded from.
    pub fn reload(&self) -> Outcome {
        reload(&self.0)
    }

    /// Reloads and writes the outcome to the log: NOTICE or ERROR with what changed or why not.
    pub fn reload_logged(&self) -> Outcome {
        reload_logged(&self.0)
    }
}

fn reload(inner: &Inner) -> Outcome {
    let outcome = reload_unrecorded(inner);
    if let Outcome::Rejected { errors, kept } = &outcome {
        let rejection = Rejection {
            at: inner.clock.now().unix(),
            errors: errors.iter().map(ToString::to_string).collect(),
            version: *kept,
        };
        *inner
            .last_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(rejection);
    }
    outcome
}

fn reload_unrecorded(inner: &Inner) -> Outcome {
    // One reload at a time, whoever triggered it (signal, file watch, admin). The guard is
    // synchronous and never crosses an await; the publish below is the only write of the
    // snapshot.
    let publisher = inner
        .publisher
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let current = inner.snapshots.load_full();
    let at = inner.clock.now();
    let now = at.unix();
    let path = current.loaded.path.clone();
    let timeline = &inner.telemetry.timeline;
    let rejected = |errors: Vec<ConfigError>| {
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        timeline.rejected(at.unix_ms(), current.version, &texts);
        Outcome::Rejected {
            errors,
            kept: current.version,
        }
    };
    let mut loaded = match config::load_with(&path, Some(&current.loaded.lists), now) {
        Ok(l) => l,
        Err(errors) => return rejected(errors),
    };
    if loaded.tls.is_none() {
        // The HTTPS listener stays until restart (a WARNING below says so): it keeps its pair.
        loaded.tls = current.loaded.tls.clone();
    }
    let old = &current.loaded.config;
    let new = &loaded.config;
    let mut warnings = Vec::new();
    if old.server.listen != new.server.listen {
        warnings.push(format!(
            "server.listen changed to {} but stays {} until restart",
            new.server.listen, old.server.listen
        ));
    }
    let tls_listen = |c: &config::Config| c.server.tls.as_ref().map(|t| t.listen);
    if tls_listen(old) != tls_listen(new) {
        let shown =
            |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        warnings.push(format!(
            "server.tls_listen changed to {} but stays {} until restart",
            shown(tls_listen(new)),
            shown(tls_listen(old))
        ));
    }
    if old.admin.listen != new.admin.listen {
        warnings.push(format!(
            "admin.listen changed to {} but stays {} until restart",
            new.admin.listen, old.admin.listen
        ));
    }
    let mut changes = Vec::new();
    if old.server.upstream != new.server.upstream {
        changes.push(format!(
            "upstream {} -> {}",
            old.server.upstream.uri, new.server.upstream.uri
        ));
    }
    if old.routes != new.routes {
        changes.push("route classes changed".to_string());
    }
    changes.extend(limit_changes(&old.limits, &new.limits));
    if let (Some(o), Some(n)) = (&current.loaded.tls, &loaded.tls) {
        if o.serial != n.serial || o.not_after != n.not_after || o.names != n.names {
            changes.push(format!("tls certificate {} -> {}", o.serial, n.describe()));
        }
    }
    if old.server.redirect_https != new.server.redirect_https {
        changes.push(format!("redirect_https {}", new.server.redirect_https));
    }
    if old.server.hsts != new.server.hsts {
        let shown = |h: &Option<http::HeaderValue>| {
            h.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("off")
                .to_string()
        };
        changes.push(format!(
            "hsts {} -> {}",
            shown(&old.server.hsts),
            shown(&new.server.hsts)
        ));
    }
    let (old_lists, new_lists) = (&current.loaded.lists, &loaded.lists);
    for (name, (added, removed)) in [
        (
            "blocklist",
            crate::policy::lists::ip_diff(&old_lists.blocklist, &new_lists.blocklist),
        ),
        (
            "allowlist",
            crate::policy::lists::ip_diff(&old_lists.allowlist, &new_lists.allowlist),
        ),
        (
            "revoked_tokens",
            crate::policy::lists::token_diff(&old_lists.revoked, &new_lists.revoked),
        ),
    ] {
        if added + removed > 0 {
            changes.push(format!("{name} +{added} -{removed}"));
        }
    }
    warnings.extend(loaded.warnings.iter().cloned());
    changes.extend(switch_changes(&old.switches, &new.switches));
    if old.enumeration != new.enumeration {
        changes.push(match (&old.enumeration, &new.enumeration) {
            (None, Some(_)) => "enumeration on".to_string(),
            (Some(_), None) => "enumeration off".to_string(),
            _ => "enumeration settings changed".to_string(),
        });
    }
    if old.alerts != new.alerts {
        changes.push(match (&old.alerts, &new.alerts) {
            (None, Some(_)) => "alerts on".to_string(),
            (Some(_), None) => "alerts off".to_string(),
            (Some(o), Some(n)) if o.webhook != n.webhook => {
                format!("alerts webhook now http://{}/…", n.webhook.authority)
            }
            _ => "alert settings changed".to_string(),
        });
    }
    for (name, o, n) in [
        ("log.file", &old.log.file, &new.log.file),
        ("log.channel", &old.log.channel, &new.log.channel),
        (
            "log.access_file",
            &old.log.access_file,
            &new.log.access_file,
        ),
    ] {
        if o != n {
            warnings.push(format!(
                "{name} changed to {n:?} but stays {o:?} until restart"
            ));
        }
    }
    if old.log.format != new.log.format || old.log.timezone != new.log.timezone {
        warnings.push("log.format and log.timezone changes apply on restart".to_string());
    }
    if old.log.access != new.log.access {
        warnings.push(format!(
            "log.access changed to {} but stays {} until restart",
            access_word(new.log.access),
            access_word(old.log.access)
        ));
    }
    if old.cluster != new.cluster {
        warnings.push(match &new.cluster {
            Some(c) => format!(
                "[cluster] changed (replica {}, redis {}) but the running link keeps its settings until restart",
                c.name,
                c.redis_shown()
            ),
            None => "[cluster] removed but the running link stays until restart".to_string(),
        });
    }
    if old.client != new.client {
        changes.push("client settings changed".to_string());
    }
    if old.tokens != new.tokens {
        changes.push(format!(
            "tokens case_sensitive {} -> {}",
            old.tokens.case_sensitive, new.tokens.case_sensitive
        ));
    }
    let flips = switch_flips(&old.switches, &new.switches);
    // Serialise reloads: whoever triggered it (signal, file watch, admin), one at a time.
    let version = current.version + 1;
    let snapshot = match Snapshot::build(Arc::new(loaded), version, Some(&current), now) {
        Ok(s) => s,
        Err(e) => {
            return rejected(vec![ConfigError {
                file: path,
                line: None,
                key: String::new(),
                message: e.to_string(),
            }])
        }
    };
    publisher.publish(snapshot);
    timeline.reloaded(at.unix_ms(), version, &changes, &warnings);
    for (name, paused, until) in flips {
        timeline.switch(at.unix_ms(), &name, paused, until, SwitchCause::Reload);
    }
    Outcome::Applied {
        version,
        changes,
        warnings,
    }
}

/// `[log] access` as written.
fn access_word(a: crate::telemetry::access::AccessFormat) -> &'static str {
    match a {
        crate::telemetry::access::AccessFormat::Off => "\"off\"",
        crate::telemetry::access::AccessFormat::Json => "\"json\"",
    }
}

/// Readable lines for what a reload changes in the limits.
fn limit_changes(
    old: &[crate::config::schema::LimitSpec],
    new: &[crate::config::schema::LimitSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    // A temporary limit may share its name with a permanent one: they are told apart.
    let same = |o: &crate::config::schema::LimitSpec, n: &crate::config::schema::LimitSpec| {
        o.name == n.name && o.until.is_some() == n.until.is_some()
    };
    let label = |l: &crate::config::schema::LimitSpec| match l.until {
        Some(u) => format!("{} (temporary, until {})", l.name, crate::clock::rfc3339(u)),
        None => l.name.clone(),
    };
    for n in new {
        let name = label(n);
        match old.iter().find(|o| same(o, n)) {
            None => out.push(format!(
                "limit {} added ({} burst {})",
                name, n.rate, n.burst
            )),
            Some(o) => {
                if o.rate != n.rate {
                    out.push(format!("limit {} rate {} -> {}", name, o.rate, n.rate));
                }
                if o.burst != n.burst {
                    out.push(format!("limit {} burst {} -> {}", name, o.burst, n.burst));
                }
                if o.key != n.key {
                    out.push(format!(
                        "limit {} key {} -> {}",
                        name,
                        o.key.as_str(),
                        n.key.as_str()
                    ));
                }
                if o.mode != n.mode {
                    out.push(
                        format!("limit {} mode {:?} -> {:?}", name, o.mode, n.mode).to_lowercase(),
                    );
                }
                if o.shared != n.shared {
                    out.push(format!(
                        "limit {} {}",
                        name,
                        if n.shared {
                            "now shared"
                        } else {
                            "now per replica"
                        }
                    ));
                }
                if o.classes != n.classes || o.until != n.until || o.max_keys != n.max_keys {
                    out.push(format!("limit {} routes, until or max_keys changed", name));
                }
            }
        }
    }
    for o in old {
        if !new.iter().any(|n| same(o, n)) {
            out.push(format!("limit {} removed", label(o)));
        }
    }
    out
}

/// Reloads and writes the outcome to the log: NOTICE `Shield configuration reloaded` with the
/// version, sha256 and what changed, or ERROR `Shield configuration rejected` with every error
/// and the version kept. Warnings (e.g. listen addresses) are WARNING lines.
fn reload_logged(inner: &Inner) -> Outcome {
    let outcome = reload(inner);
    let telemetry = &inner.telemetry;
    telemetry
        .meters
        .reloaded(matches!(outcome, Outcome::Applied { .. }));
    match &outcome {
        Outcome::Applied {
            version,
            changes,
            warnings,
        } => {
            let sha = inner.snapshots.load().loaded.sha256.clone();
            let changes = if changes.is_empty() {
                vec!["no effective change".to_string()]
            } else {
                changes.clone()
            };
            telemetry.log.log(
                Record::new(Level::Notice, "Shield configuration reloaded")
                    .with("version", *version)
                    .with("sha256", sha)
                    .with(
                        "changes",
                        Value::List(changes.into_iter().map(Value::from).collect()),
                    ),
            );
            for w in warnings {
                telemetry.log.log(
                    Record::new(Level::Warning, "Shield configuration warning")
                        .with("warning", w.as_str()),
                );
            }
        }
        Outcome::Rejected { errors, kept } => {
            telemetry.log.log(
                Record::new(Level::Error, "Shield configuration rejected")
                    .with(
                        "errors",
                        Value::List(errors.iter().map(|e| Value::from(e.to_string())).collect()),
                    )
                    .with("version", *kept),
            );
        }
    }
    outcome
}

/// The switches a reload pauses or resumes, as [`switch_changes`] words them: name, paused
/// from now on, and until when (a temporary pause).
fn switch_flips(
    old: &[crate::config::schema::SwitchSpec],
    new: &[crate::config::schema::SwitchSpec],
) -> Vec<(String, bool, Option<i64>)> {
    let mut out = Vec::new();
    for n in new {
        let was_paused = old
            .iter()
            .find(|o| o.name == n.name)
            .is_some_and(|o| o.paused);
        if was_paused != n.paused {
            out.push((n.name.clone(), n.paused, n.until.filter(|_| n.paused)));
        }
    }
    for o in old {
        if o.paused && !new.iter().any(|n| n.name == o.name) {
            out.push((o.name.clone(), false, None));
        }
    }
    out
}

fn switch_changes(
    old: &[crate::config::schema::SwitchSpec],
    new: &[crate::config::schema::SwitchSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    // A temporary switch may share its name with a permanent one: they are told apart.
    let same = |o: &crate::config::schema::SwitchSpec, n: &crate::config::schema::SwitchSpec| {
        o.name == n.name && o.until.is_some() == n.until.is_some()
    };
    let label = |w: &crate::config::schema::SwitchSpec| match w.until {
        Some(u) => format!("{} (temporary, until {})", w.name, crate::clock::rfc3339(u)),
        None => w.name.clone(),
    };
    for n in new {
        let was = old.iter().find(|o| same(o, n));
        let name = label(n);
        let was_paused = was.is_some_and(|o| o.paused);
        match (was_paused, n.paused) {
            (false, true) => out.push(format!("switch {name} paused")),
            (true, false) => out.push(format!("switch {name} resumed")),
            _ => {
                if was.is_some_and(|o| o != n) {
                    out.push(format!("switch {name} changed"));
                }
            }
        }
    }
    for o in old {
        if !new.iter().any(|n| same(o, n)) {
            out.push(format!(
                "switch {} removed{}",
                label(o),
                if o.paused { " (resumed)" } else { "" }
            ));
        }
    }
    out
}

/// How often watched files are looked at.
pub const WATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// The files a snapshot was built from: the configuration, every list and the certificate pair
/// it names.
fn watched_files(snapshots: &Snapshots) -> Vec<std::path::PathBuf> {
    let snap = snapshots.load();
    let lists = &snap.loaded.config.lists;
    let mut files = vec![snap.loaded.path.clone()];
    files.extend(
        [&lists.blocklist, &lists.allowlist, &lists.revoked_tokens]
            .into_iter()
            .flatten()
            .cloned(),
    );
    if let Some(t) = &snap.loaded.config.server.tls {
        files.extend([t.cert.clone(), t.key.clone()]);
    }
    files
}

/// The files to watch and how they looked when the running snapshot was built.
pub struct Watched(Vec<(std::path::PathBuf, FileStamp)>);

impl Watched {
    /// Stamps the files of the snapshot in force now (call before serving, so no edit made
    /// after start-up can be missed).
    pub fn now(snapshots: &Snapshots) -> Watched {
        Watched(
            watched_files(snapshots)
                .into_iter()
                .map(|f| {
                    let s = FileStamp::of(&f);
                    (f, s)
                })
                .collect(),
        )
    }
}

/// File-system events about the watched files, when the platform gives them (inotify, …): they
/// only wake the watch early; the periodic look stays, for filesystems without events (network
/// mounts, some container overlays) and for events that were missed.
struct FileEvents {
    _watcher: Option<notify::RecommendedWatcher>,
}

impl FileEvents {
    /// Watches the folders of `files` (a file replaced by a rename is seen only through its
    /// folder) and sends a wake-up on `wake` for every event naming one of them.
    fn start(files: &Watched, wake: &tokio::sync::mpsc::Sender<()>) -> FileEvents {
        use notify::Watcher as _;
        let names: Vec<std::ffi::OsString> = files
            .0
            .iter()
            .filter_map(|(f, _)| f.file_name().map(ToOwned::to_owned))
            .collect();
        let wake = wake.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let ours = event.is_ok_and(|e| {
                e.paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
            });
            if ours {
                // A full queue already holds a wake-up.
                let _ = wake.try_send(());
            }
        };
        let Ok(mut watcher) = notify::recommended_watcher(handler) else {
            return FileEvents { _watcher: None };
        };
        let mut folders: Vec<std::path::PathBuf> = files
            .0
            .iter()
            .filter_map(|(f, _)| f.parent())
            .map(|p| {
                if p.as_os_str().is_empty() {
                    std::path::PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .collect();
        folders.sort();
        folders.dedup();
        for folder in folders {
            // A folder that cannot be watched is still looked at every period.
            let _ = watcher.watch(&folder, notify::RecursiveMode::NonRecursive);
        }
        FileEvents {
            _watcher: Some(watcher),
        }
    }
}

impl FileEvents {
    /// Watches the folders of `files` instead (after a reload named other files).
    fn restart(&mut self, files: &Watched, wake: &tokio::sync::mpsc::Sender<()>) {
        *self = FileEvents::start(files, wake);
    }
}

/// Resolves at `at`, or never.
async fn settled(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches the configuration file and every file it names (lists, certificate and key): a
/// change (written in place or renamed over) is reloaded once the files have been stable for
/// one [`WATCH_PERIOD`], so a reload never reads a half-written file. File-system events wake
/// the watch at once; a look every [`WATCH_PERIOD`] catches what no event reports. A change
/// applies within about a second either way.
pub async fn watch(reloader: Reloader, mut files: Watched, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(WATCH_PERIOD);
    let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
    let mut events = FileEvents::start(&files, &wake);
    // The stamps last seen changed, and since when they have looked so.
    let mut pending: Option<(Vec<FileStamp>, tokio::time::Instant)> = None;
    loop {
        let settle = pending.as_ref().map(|(_, since)| *since + WATCH_PERIOD);
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = woken.recv() => {}
            _ = settled(settle) => {}
            _ = shutdown.requested() => return,
        }
        let now: Vec<FileStamp> = files.0.iter().map(|(f, _)| FileStamp::of(f)).collect();
        let applied = files.0.iter().map(|(_, s)| s);
        if now.iter().eq(applied) {
            pending = None;
            continue;
        }
        let looked = tokio::time::Instant::now();
        match &pending {
            Some((seen, since)) if *seen == now => {
                if looked.saturating_duration_since(*since) < WATCH_PERIOD {
                    // Unchanged, but not yet for a whole period.
                    continue;
                }
            }
            _ => {
                // Changed since the last look: wait one period for it to settle.
                pending = Some((now, looked));
                continue;
            }
        }
        pending = None;
        // What is reloaded is at least as new as `now`: remember `now`, not a later look, so an
        // edit made while the reload runs is seen at the next look.
        for ((_, old), new) in files.0.iter_mut().zip(now) {
            *old = new;
        }
        let worker = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || worker.reload_logged()).await;
        // A reload may name other list files; files already watched keep their stamps.
        let mut next = Vec::new();
        for f in watched_files(reloader.snapshots()) {
            let s = match files.0.iter().find(|(p, _)| *p == f) {
                Some((_, s)) => s.clone(),
                None => FileStamp::of(&f),
            };
            next.push((f, s));
        }
        files = Watched(next);
        events.restart(&files, &wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watch reacts to a file-system event well before its next periodic look would: with
    /// a look every 500 ms, a change is at least 500 ms old when it is reloaded either way, but
    /// the event starts the settling at once (the fallback would start it at the next look).
    #[tokio::test]
    async fn a_file_event_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        std::fs::write(&file, "a\n").unwrap();
        let watched = Watched(vec![(file.clone(), FileStamp::of(&file))]);
        let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
        let _events = FileEvents::start(&watched, &wake);
        // A write to another file of the folder is not ours.
        std::fs::write(dir.path().join("other.log"), "x").unwrap();
        std::fs::write(&file, "b\n").unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), woken.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(()),
            "no event for the watched file"
        );
    }
}
