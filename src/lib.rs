//! joinshield: an abuse shield for token-based guest APIs.
//!
//! A reverse proxy in front of the fotospiel Laravel app. Each request goes
//! `accept → client IP → classify → decide → forward → observe → log`; see
//! `docs/request-path.md` for the picture and the module of each step.

pub mod admin;
pub mod alerts;
pub mod bans;
pub mod classify;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod decide;
pub mod deny;
pub mod enumeration;
pub mod forward;
pub mod housekeeping;
pub mod kuma;
pub mod limits;
pub mod lists;
pub mod log;
pub mod metrics;
pub mod recent;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod stall;
pub mod standin;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Loaded;
use crate::server::Shared;
use crate::snapshot::Snapshot;

/// Why the shield could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    /// The configuration could not be built into a snapshot.
    #[error("{0}")]
    Build(#[from] snapshot::BuildError),
    /// The log could not be opened.
    #[error("{0}")]
    Log(#[from] log::LogError),
    /// The TLS server configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running shield: its bound addresses, and the handle to stop it.
pub struct Running {
    /// The guest listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The HTTPS listener's address, when `tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// Shared state (for tests and the admin API).
    pub shared: Arc<Shared>,
    log: log::LogSink,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, and returns
    /// once everything logged is written.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Waits until the shield has stopped (after [`Running::stop_handle`] was used).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        let log = self.log;
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }

    /// Waits until every log record queued so far is written (for tests and operators).
    pub async fn flush_log(&self) {
        let handle = self.shared.log.clone();
        // The fold sweep writes summaries of ended windows; then the queue is flushed.
        handle.sweep_folds(std::time::Instant::now());
        let _ = tokio::task::spawn_blocking(move || handle.flush_blocking()).await;
    }

    /// A sender that stops the shield when `true` is sent.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds the listeners of `loaded` and starts serving; returns once the addresses are bound.
pub async fn start(loaded: Loaded) -> Result<Running, StartError> {
    let config = &loaded.config;
    let guest = server::bind(config.server.listen).await?;
    let admin_listener = server::bind(config.admin.listen).await?;
    let tls_listener = match &config.server.tls {
        Some(t) => Some(server::bind(t.listen).await?),
        None => None,
    };
    let addr = guest.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let log = log::LogSink::start(&config.log)?;
    let state_file = config.server.state_file.clone();
    let bans = load_bans(&state_file, &log.handle());
    let snapshot = Snapshot::build(Arc::new(loaded), 1, None)?;
    let mut shared = Shared::new(snapshot, log.handle(), bans);
    shared.tls_port = tls_addr.map(|a| a.port());
    let shared = Arc::new(shared);
    let (stop, stopped) = watch::channel(false);
    let watched = reload::Watched::now(&shared);
    let mut tasks = vec![
        tokio::spawn(server::serve(
            guest,
            shared.clone(),
            server::Front::Plain,
            stopped.clone(),
        )),
        tokio::spawn(admin::serve(
            admin_listener,
            shared.clone(),
            stopped.clone(),
        )),
        tokio::spawn(admin::probe_upstream(shared.clone(), stopped.clone())),
        tokio::spawn(reload::watch(shared.clone(), watched, stopped.clone())),
        tokio::spawn(housekeeping::run(shared.clone(), stopped.clone())),
        tokio::spawn(alerts::run(shared.clone(), stopped.clone())),
    ];
    tasks.extend(cluster::start(&shared, &stopped));
    if let Some(listener) = tls_listener {
        let front = Arc::new(tls::TlsFront::new(shared.snapshot.clone())?);
        tasks.push(tokio::spawn(server::serve(
            listener,
            shared.clone(),
            server::Front::Tls(front),
            stopped.clone(),
        )));
    }
    // The sweeper ends with the runtime; it only writes summaries of ended fold windows.
    drop(log.handle().spawn_fold_sweeper());
    Ok(Running {
        addr,
        admin_addr,
        tls_addr,
        shared,
        log,
        stop,
        tasks,
    })
}

/// Loads the bans kept across restarts. A missing file is no bans; a corrupt one is set aside
/// (kept as `<file>.corrupt` for inspection), logged, and the shield starts with no bans rather
/// than not at all.
fn load_bans(path: &std::path::Path, log: &log::LogHandle) -> bans::Bans {
    match bans::Bans::load(path, chrono::Utc::now().timestamp()) {
        Ok(b) => b,
        Err(e) => {
            let kept = bans::set_aside(path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|err| format!("(could not be set aside: {err})"));
            log.log(
                log::Record::new(log::Level::Error, "Shield state file unreadable")
                    .with("error", e.to_string())
                    .with("kept_as", kept),
            );
            bans::Bans::new()
        }
    }
}
