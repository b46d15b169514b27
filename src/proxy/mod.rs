//! The request path, in the order one request takes it (`docs/request-path.md` is the map):
//!
//! ```text
//! listener ─ door ─ connection ─ tls ─ request ─ framing ─ redirect ─ settle ─ decide ─ forward ─ finish
//!  accept   admit   its task     HTTPS  RequestCtx  400/413   308     cluster   policy   the app   meter, record,
//!          (per IP,  (HTTP/1.1,         (once)                                                     log, observe,
//!           max)      close, linger)                                                               respond
//! ```
//!
//! [`listener`] accepts; [`door`] admits or refuses each connection (per client, at the cap,
//! making room by closing idle ones); [`connection`] serves it (HTTP/1.1) and closes it,
//! lingering ([`linger`]) after an answer that left bytes unread; [`pipeline`] runs the phases over one
//! [`request::RequestCtx`], built once per request; every answer, the app's or the shield's,
//! leaves through [`finish::finish`], which meters, records and logs it exactly once and has
//! [`respond`] make the shield's own answers. Nothing here is imported from below: the proxy
//! reads the snapshot, asks the policy, tells the telemetry and, with `[cluster]`, the cluster.

pub(crate) mod connection;
pub(crate) mod door;
pub(crate) mod finish;
pub(crate) mod forward;
pub(crate) mod framing;
pub(crate) mod linger;
pub(crate) mod listener;
pub(crate) mod observe;
pub(crate) mod pipeline;
pub(crate) mod redirect;
pub(crate) mod request;
pub(crate) mod respond;
pub(crate) mod sent;
pub(crate) mod stall;
pub(crate) mod tls;

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::defence::Defence;
use crate::snapshot::Snapshots;
use crate::telemetry::Telemetry;

/// What the request path holds: the snapshot handle, the upstream client, the defences, the
/// telemetry, the cluster (when configured), the clock, and where HTTPS listens.
pub(crate) struct Parts {
    /// The snapshot in force (read only: the reload is its one writer).
    pub snapshots: Arc<Snapshots>,
    /// The pooled client to the app.
    pub upstream: forward::Upstream,
    /// Request id source.
    pub request_ids: forward::RequestIds,
    /// Bans and failed-token counts.
    pub defence: Arc<Defence>,
    /// Log, counters, recent denials, the app's liveness.
    pub telemetry: Arc<Telemetry>,
    /// Shared limits and failure counts across replicas, when `[cluster]` is configured.
    pub cluster: Option<Arc<Cluster>>,
    /// The time.
    pub clock: SharedClock,
    /// The HTTPS listener's bound port, when there is one (where `redirect_https` points).
    pub tls_port: Option<u16>,
    /// Admission of guest connections, shared by both listeners.
    pub door: Arc<door::Door>,
}
