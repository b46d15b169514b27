//! The composition root: builds every part of the shield once, starts each task with only the
//! parts it uses and the one [`Shutdown`], and hands back a [`Running`] shield. Nothing imports
//! this module; it imports everything.
//!
//! What is built, in order: the listeners (bound first, so the addresses are ready on return),
//! the log and the access log (when on), the ban table (read from the state file), the first
//! snapshot and its publisher, the cluster (with `[cluster]`), the telemetry, the defences, the
//! reloader; then the tasks: the guest listener (and the HTTPS one), the admin listener, the
//! upstream probe, the file watch, the timeline's minutes, housekeeping, alerts, the cluster's
//! tasks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::scrape::Format;
use crate::background::reload::{Outcome, Reloader, Watched};
use crate::background::state_file::{self, StateFile};
use crate::background::{alerts, housekeeping, probe, reload, timeline};
use crate::clock::{Now, SharedClock};
use crate::cluster::{Cluster, Guessing, GuessingRules};
use crate::config::Loaded;
use crate::defence::Defence;
use crate::policy::bans::Bans;
use crate::policy::guessing::Offence;
use crate::proxy::forward::{RequestIds, Upstream};
use crate::proxy::listener::{self, Front};
use crate::proxy::tls::TlsFront;
use crate::shutdown::{self, Stop};
use crate::snapshot::{Snapshot, Snapshots};
use crate::telemetry::access::{self, AccessSink};
use crate::telemetry::alerts::Alerts;
use crate::telemetry::log::{self, Destination, LogHandle, LogSink, QUEUE_CAPACITY};
use crate::telemetry::meters::HandshakeCounts;
use crate::telemetry::Telemetry;

/// Why the shield could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    /// The configuration could not be built into a snapshot.
    #[error("{0}")]
    Build(#[from] crate::snapshot::BuildError),
    /// The log could not be opened.
    #[error("{0}")]
    Log(#[from] log::LogError),
    /// The TLS server configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running shield: its bound addresses, the handles to reload and stop it, and read-only
/// accessors to its parts (for the binary, operators' tools and tests).
pub struct Running {
    /// The guest listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The HTTPS listener's address, when `tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    snapshots: Arc<Snapshots>,
    reloader: Reloader,
    defence: Arc<Defence>,
    telemetry: Arc<Telemetry>,
    alerts: Arc<Alerts>,
    cluster: Option<Arc<Cluster>>,
    clock: SharedClock,
    admin: Arc<crate::admin::Parts>,
    log: LogSink,
    access: Option<AccessSink>,
    stop: Stop,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, and returns
    /// once everything logged is written.
    pub async fn shutdown(self) {
        self.stop.stop();
        self.wait().await;
    }

    /// Waits until the shield has stopped (after [`Running::stop_handle`] was used).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        // The counts of fold windows still open are written before the log closes.
        self.telemetry.log.flush_folds(self.clock.now().instant());
        let (log, access) = (self.log, self.access);
        // The access log first: it reports what it dropped in the main log.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(access) = access {
                access.close();
            }
            log.close();
        })
        .await;
    }

    /// Waits until every log record queued so far is written, the access log's too (for
    /// tests and operators).
    pub async fn flush_log(&self) {
        let handle = self.telemetry.log.clone();
        let access = self.telemetry.access.clone();
        // The fold sweep writes summaries of ended windows; then the queues are flushed.
        handle.sweep_folds(self.clock.now().instant());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(access) = access {
                access.flush_blocking();
            }
            handle.flush_blocking();
        })
        .await;
    }

    /// Follows the count of access lines written, when `[log] access` is on (wait for
    /// `*n >= k`: a line is written once its answer has ended).
    pub fn access_lines(&self) -> Option<watch::Receiver<u64>> {
        self.telemetry.access.as_ref().map(|a| a.written())
    }

    /// Writes the counts of every fold window still open now (`"repeated":N`), as a stop
    /// does; the binary does it on SIGHUP before reloading.
    pub fn flush_folds(&self) {
        self.telemetry.log.flush_folds(self.clock.now().instant());
    }

    /// A sender that stops the shield when `true` is sent.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.sender()
    }

    /// The reloader (cheap to clone; `reload` blocks: from async code, in `spawn_blocking`).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Reloads now (see [`Reloader::reload`]).
    pub fn reload(&self) -> Outcome {
        self.reloader.reload()
    }

    /// Reloads now and logs the outcome (see [`Reloader::reload_logged`]).
    pub fn reload_logged(&self) -> Outcome {
        self.reloader.reload_logged()
    }

    /// Follows the configuration version in force (wait for `*v >= n`, never sleep).
    pub fn version(&self) -> watch::Receiver<u64> {
        self.snapshots.version()
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.load_full()
    }

    /// The ban table.
    pub fn bans(&self) -> &Bans {
        &self.defence.bans
    }

    /// The cluster, when `[cluster]` is configured.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The shield's clock, read now.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    /// Follows the alert task's evaluations (each one bumps it).
    pub fn alert_evaluations(&self) -> watch::Receiver<u64> {
        self.alerts.watch_evaluations()
    }

    /// The `/metrics` text, as a scrape would get it.
    pub fn metrics_text(&self, format: Format) -> String {
        crate::admin::scrape::render(&self.admin, format)
    }

    /// The HTTPS listener's handshake counters.
    pub fn tls_handshakes(&self) -> &HandshakeCounts {
        &self.telemetry.meters.tls
    }

    /// Logs the temporary rules (and bans) that ended in `(from, to]`, as housekeeping does
    /// every second.
    pub fn log_expired(&self, from: i64, to: i64) {
        housekeeping::log_expired(&self.housekeeping(), from, to);
    }

    /// Reopens the log file, and the access log's, on every SIGUSR1 (after logrotate moved
    /// them).
    #[cfg(unix)]
    pub fn reopen_log_on_sigusr1(&self) -> std::io::Result<()> {
        log::install_sigusr1_reopen(self.telemetry.log.clone())?;
        if let Some(a) = &self.telemetry.access {
            access::install_sigusr1_reopen(a.clone())?;
        }
        Ok(())
    }

    fn housekeeping(&self) -> housekeeping::Parts {
        housekeeping::Parts {
            snapshots: self.snapshots.clone(),
            defence: self.defence.clone(),
            log: self.telemetry.log.clone(),
            timeline: self.telemetry.timeline.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// Binds the listeners of `loaded` and starts serving on the system clock; returns once the
/// addresses are bound.
pub async fn start(loaded: Loaded) -> Result<Running, StartError> {
    start_with_clock(loaded, crate::clock::system()).await
}

/// As [`start`], with every part reading `clock`.
pub async fn start_with_clock(loaded: Loaded, clock: SharedClock) -> Result<Running, StartError> {
    let config = &loaded.config;
    let guest = listener::bind(config.server.listen).await?;
    let admin_listener = listener::bind(config.admin.listen).await?;
    let tls_listener = match &config.server.tls {
        Some(t) => Some(listener::bind(t.listen).await?),
        None => None,
    };
    let addr = guest.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let tls_port = tls_addr.map(|a| a.port());
    let sink = LogSink::start_clocked(
        &config.log,
        Destination::from_config(&config.log),
        QUEUE_CAPACITY,
        clock.clone(),
    )?;
    let log = sink.handle();
    let access_sink = AccessSink::start(&config.log, log.clone())?;
    let now = clock.now();
    let bans = Arc::new(load_bans(&config.server.state_file, &log, now.unix()));
    let cluster_settings = config.cluster.clone();
    let connect = config.server.upstream_timeout.min(Duration::from_secs(10));
    // Read at start, like the listen addresses.
    let max_connections = config.server.max_connections;
    let snapshot = Snapshot::build(Arc::new(loaded), 1, None, now.unix())?;
    let (snapshots, publisher) = Snapshots::new(snapshot);
    let cluster = cluster_settings.and_then(|settings| {
        bans.set_origin(&settings.name);
        // The URL was validated; a client that still cannot be built leaves the shield
        // single-process, which is what a missing [cluster] means.
        Cluster::new(settings, log.clone(), clock.clone())
            .ok()
            .map(Arc::new)
    });
    let telemetry = Arc::new(Telemetry::new(
        log.clone(),
        access_sink.as_ref().map(AccessSink::handle),
    ));
    let alerts = Arc::new(Alerts::default());
    let defence = Arc::new(Defence::new(
        bans.clone(),
        log.clone(),
        alerts.clone(),
        telemetry.timeline.clone(),
        cluster.clone(),
    ));
    let reloader = Reloader::new(publisher, telemetry.clone(), clock.clone());
    let (stop, shutdown) = shutdown::pair();

    let proxy = Arc::new(crate::proxy::Parts {
        snapshots: snapshots.clone(),
        upstream: Upstream::new(connect),
        request_ids: RequestIds,
        defence: defence.clone(),
        telemetry: telemetry.clone(),
        cluster: cluster.clone(),
        clock: clock.clone(),
        tls_port,
        door: Arc::new(crate::proxy::door::Door::new(
            max_connections,
            telemetry.clone(),
        )),
    });
    let admin = Arc::new(crate::admin::Parts {
        snapshots: snapshots.clone(),
        reloader: reloader.clone(),
        defence: defence.clone(),
        telemetry: telemetry.clone(),
        alerts: alerts.clone(),
        cluster: cluster.clone(),
        clock: clock.clone(),
        tls_port,
        throttle: crate::admin::throttle::Throttle::new(),
    });
    let watched = Watched::now(&snapshots);
    let mut tasks = vec![
        tokio::spawn(listener::serve(
            guest,
            proxy.clone(),
            Front::Plain,
            shutdown.clone(),
        )),
        tokio::spawn(crate::admin::listener::serve(
            admin_listener,
            admin.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(probe::run(
            snapshots.clone(),
            telemetry.clone(),
            clock.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(reload::watch(reloader.clone(), watched, shutdown.clone())),
        tokio::spawn(timeline::run(
            telemetry.clone(),
            clock.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(housekeeping::run(
            housekeeping::Parts {
                snapshots: snapshots.clone(),
                defence: defence.clone(),
                log: log.clone(),
                timeline: telemetry.timeline.clone(),
                clock: clock.clone(),
            },
            shutdown.clone(),
        )),
        tokio::spawn(alerts::run(
            alerts::Parts {
                snapshots: snapshots.clone(),
                telemetry: telemetry.clone(),
                alerts: alerts.clone(),
                clock: clock.clone(),
            },
            shutdown.clone(),
        )),
    ];
    if let Some(cluster) = &cluster {
        let parts = crate::cluster::Parts {
            cluster: cluster.clone(),
            bans: bans.clone(),
            log: log.clone(),
            timeline: telemetry.timeline.clone(),
            guessing: Arc::new(GuessingHost {
                snapshots: snapshots.clone(),
                defence: defence.clone(),
            }),
        };
        tasks.extend(crate::cluster::start(parts, &shutdown));
    }
    if let Some(listener) = tls_listener {
        let front = Arc::new(TlsFront::new(snapshots.clone())?);
        tasks.push(tokio::spawn(listener::serve(
            listener,
            proxy.clone(),
            Front::Tls(front),
            shutdown.clone(),
        )));
    }
    // The sweeper ends with the runtime; it only writes summaries of ended fold windows.
    drop(log.spawn_fold_sweeper());
    Ok(Running {
        addr,
        admin_addr,
        tls_addr,
        snapshots,
        reloader,
        defence,
        telemetry,
        alerts,
        cluster,
        clock,
        admin,
        log: sink,
        access: access_sink,
        stop,
        tasks,
    })
}

/// The cluster's [`Guessing`] callback: the rules of the snapshot in force, and offences banned
/// by the defences as the local count's are.
struct GuessingHost {
    snapshots: Arc<Snapshots>,
    defence: Arc<Defence>,
}

impl Guessing for GuessingHost {
    fn rules(&self) -> Option<GuessingRules> {
        let snap = self.snapshots.load();
        let config = &snap.loaded.config;
        config.enumeration.as_ref().map(|e| GuessingRules {
            settings: e.settings.clone(),
            ipv6_prefix: config.client.ipv6_prefix,
        })
    }

    fn offence(&self, offence: &Offence, rules: &GuessingRules, now_unix: i64) {
        self.defence
            .ban_offence(offence, &rules.settings, rules.ipv6_prefix, now_unix);
    }
}

/// Loads the bans kept across restarts. A missing file is no bans; a corrupt one is set aside
/// (kept as `<file>.corrupt` for inspection), logged, and the shield starts with no bans rather
/// than not at all.
fn load_bans(path: &Path, log: &LogHandle, now_unix: i64) -> Bans {
    match Bans::load(path, now_unix) {
        Ok(b) => b,
        Err(e) => {
            let kept = state_file::set_aside(path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|err| format!("(could not be set aside: {err})"));
            log.log(
                log::Record::new(log::Level::Error, "Shield state file unreadable")
                    .with("error", e.to_string())
                    .with("kept_as", kept),
            );
            Bans::new()
        }
    }
}
