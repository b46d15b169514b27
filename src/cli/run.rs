//! `joinshield run`: what the serving process prints and which signals it obeys (SIGHUP
//! reloads, SIGTERM and SIGINT stop; SIGUSR1 reopens the log, see [`crate::Running`]).

use crate::{complain, note};
use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks of the running shield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGHUP: reload the configuration (the outcome is in the log).
    Reload,
    /// SIGTERM or SIGINT: stop, letting in-flight requests finish.
    Stop,
}

/// The signals a serving shield obeys, watched from before it starts.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Starts watching SIGHUP, SIGTERM and SIGINT.
    pub fn watch() -> Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    /// The next thing asked.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.hup.recv() => Asked::Reload,
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
        }
    }
}

/// The line that says where the shield serves, and the banner (the demo's) after it.
pub fn announce(
    guests: SocketAddr,
    https: Option<SocketAddr>,
    admin: SocketAddr,
    banner: Option<&str>,
) {
    complain!(
        "joinshield: serving guests on http://{guests}{}, admin on http://{admin}",
        https
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default(),
    );
    if let Some(b) = banner {
        // The addresses really bound (a taken port moved to a free one).
        let https = https.map(|a| format!("localhost:{}", a.port()));
        let b = b
            .replace("{shield}", &guests.to_string())
            .replace("{https}", https.as_deref().unwrap_or("(no https)"))
            .replace("{admin}", &admin.to_string());
        note!("{b}");
    }
}

/// The line printed when a stop was asked.
pub fn stopping() {
    complain!("joinshield: stopping; in-flight requests may finish");
}
