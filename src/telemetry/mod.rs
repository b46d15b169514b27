//! What the shield tells about itself: the log ([`log`]), the access log ([`access`]), the
//! hot-path counters ([`meters`]), what happened lately ([`recent`]), the denial's log line
//! ([`denial_line`]), the state the alert task reads ([`alerts`]) and the incident's record
//! ([`timeline`]). The request path only adds to these (atomics, one slot
//! mutex, a bounded queue); everything is read off the request path, by `/metrics`, the admin
//! views and the alert task.

pub mod access;
pub mod alerts;
pub mod denial_line;
pub mod log;
pub mod meters;
pub mod recent;
pub mod timeline;

use std::sync::Arc;

/// The telemetry handles the request path and the admin listener hold.
pub struct Telemetry {
    /// The log (never blocks).
    pub log: log::LogHandle,
    /// Counters that belong to no route (per-route ones live in the snapshot).
    pub meters: meters::Metrics,
    /// Recent denials, offenders and request rates (for the admin API).
    pub recent: recent::Recent,
    /// When the app last showed it is alive (for `/readyz`).
    pub liveness: meters::Liveness,
    /// The access log, when `[log] access` is on (never blocks).
    pub access: Option<access::AccessLog>,
    /// What changed when, and the traffic per minute (for `ctl timeline`).
    pub timeline: Arc<timeline::Timeline>,
}

impl Telemetry {
    /// Fresh counters around `log` and, when it is on, the access log.
    pub fn new(log: log::LogHandle, access: Option<access::AccessLog>) -> Telemetry {
        Telemetry {
            log,
            meters: meters::Metrics::default(),
            recent: recent::Recent::default(),
            liveness: meters::Liveness::default(),
            access,
            timeline: Arc::default(),
        }
    }
}
