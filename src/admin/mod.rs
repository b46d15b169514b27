//! The admin side, on its own listener: `listener` (health, readiness, the bearer-protected
//! `/admin/*` API), `views` (its JSON views) and [`scrape`] (`/metrics`).

pub(crate) mod listener;
pub mod scrape;
pub mod throttle;
pub(crate) mod views;

use std::sync::Arc;

use crate::background::reload::Reloader;
use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::defence::Defence;
use crate::snapshot::Snapshots;
use crate::telemetry::alerts::Alerts;
use crate::telemetry::Telemetry;

/// What the admin listener holds.
pub(crate) struct Parts {
    /// The snapshot in force.
    pub snapshots: Arc<Snapshots>,
    /// `POST /admin/reload`.
    pub reloader: Reloader,
    /// `/admin/bans`.
    pub defence: Arc<Defence>,
    /// The log, counters and recent denials.
    pub telemetry: Arc<Telemetry>,
    /// What became of the alerts (for `/metrics`).
    pub alerts: Arc<Alerts>,
    /// The cluster, when configured (bans announced, its status).
    pub cluster: Option<Arc<Cluster>>,
    /// The time.
    pub clock: SharedClock,
    /// The HTTPS listener's port, when there is one (its counters are shown then).
    pub tls_port: Option<u16>,
    /// Wrong tokens per peer (a peer that sends too many is answered 429 for a while).
    pub throttle: throttle::Throttle,
}
