//! Work off the request path, each task holding only its parts and the one [`Shutdown`]:
//!
//! - [`reload`]: the single writer of the snapshot (signal, file change, admin API).
//! - [`housekeeping`]: expired temporary rules logged, bans saved ([`state_file`]), idle keys
//!   pruned.
//! - [`alerts`]: the webhook, fed by counters the request path keeps anyway.
//! - [`probe`]: the app's liveness for `/readyz` when no guest traffic flows.
//! - [`timeline`]: the incident record's per-minute rows, copied from the request counters.
//!
//! [`Shutdown`]: crate::shutdown::Shutdown

pub mod alerts;
pub mod housekeeping;
pub mod probe;
pub mod reload;
pub mod state_file;
pub mod timeline;
