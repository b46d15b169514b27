//! What the alerts are fed and what became of them: the prefix bans the guessing counter made
//! (noted where the ban is made, read by the alert task once a second) and the outcome of each
//! alert (counted by the alert task, read by `/metrics`). The task itself is
//! `background/alerts.rs`; this is only the shared state, so the request path never imports it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ipnet::IpNet;
use tokio::sync::watch;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Guest requests failing (5xx).
    ErrorRate,
    /// Denials (429/403) over `denial_rate`.
    DenialRate,
    /// A /24 or /48 banned for token guessing.
    PrefixBan,
}

/// Every kind, in the order of [`Kind::index`].
pub const KINDS: [Kind; 3] = [Kind::ErrorRate, Kind::DenialRate, Kind::PrefixBan];

/// The `result` labels of `joinshield_alerts_total`, by [`Outcome`] index.
pub const RESULTS: [&str; 3] = ["sent", "failed", "dropped"];

impl Kind {
    /// Its label in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ErrorRate => "error_rate",
            Kind::DenialRate => "denial_rate",
            Kind::PrefixBan => "prefix_ban",
        }
    }

    /// Its index in [`KINDS`].
    pub fn index(self) -> usize {
        match self {
            Kind::ErrorRate => 0,
            Kind::DenialRate => 1,
            Kind::PrefixBan => 2,
        }
    }
}

/// What became of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered 2xx.
    Sent,
    /// The webhook could not be reached, answered otherwise, or not in time.
    Failed,
    /// The queue to the sender was full.
    Dropped,
}

impl Outcome {
    /// Its index in [`RESULTS`].
    pub fn index(self) -> usize {
        match self {
            Outcome::Sent => 0,
            Outcome::Failed => 1,
            Outcome::Dropped => 2,
        }
    }
}

/// The last prefix banned for guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixBan {
    /// The banned network.
    pub net: IpNet,
    /// The distinct failed tokens that got it banned.
    pub distinct_tokens: Option<u32>,
    /// How long it is banned.
    pub ban_seconds: i64,
}

/// State shared with the request path and `/metrics`: prefix bans to report, and what became
/// of the alerts.
#[derive(Debug, Default)]
pub struct Alerts {
    prefix_bans: AtomicU64,
    last_prefix: Mutex<Option<PrefixBan>>,
    outcomes: [[AtomicU64; 3]; 3],
    /// How many times the counters were evaluated: a channel, so that whoever waits for the
    /// next evaluation (tests) is woken by it instead of polling.
    evaluations: watch::Sender<u64>,
}

impl Alerts {
    /// Notes a prefix banned for guessing (called where the ban is made; rare).
    pub fn prefix_banned(&self, ban: PrefixBan) {
        *self
            .last_prefix
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ban);
        self.prefix_bans.fetch_add(1, Ordering::Release);
    }

    /// Prefix bans noted since the start, and the latest of them.
    pub fn prefix_bans(&self) -> (u64, Option<PrefixBan>) {
        let count = self.prefix_bans.load(Ordering::Acquire);
        let last = self
            .last_prefix
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (count, last)
    }

    /// Notes that the counters were evaluated once more (wakes whoever waits for it).
    pub fn evaluated(&self) {
        self.evaluations.send_modify(|n| *n += 1);
    }

    /// Counts what became of an alert of `kind`.
    pub fn counted(&self, kind: Kind, outcome: Outcome) {
        self.outcomes[kind.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Alerts by kind (index of [`KINDS`]) and result (index of [`RESULTS`]), since the start.
    pub fn outcomes(&self) -> [[u64; 3]; 3] {
        std::array::from_fn(|k| {
            std::array::from_fn(|r| self.outcomes[k][r].load(Ordering::Relaxed))
        })
    }

    /// How many times the counters were evaluated.
    pub fn evaluations(&self) -> u64 {
        *self.evaluations.borrow()
    }

    /// Follows [`Alerts::evaluations`]: `wait_for` on it resolves when an evaluation happens.
    pub fn watch_evaluations(&self) -> watch::Receiver<u64> {
        self.evaluations.subscribe()
    }
}
