//! joinshield: an abuse shield for token-based guest APIs.
//!
//! A reverse proxy in front of the fotospiel Laravel app. Each request goes
//! `accept → client IP → classify → decide → forward → observe → log`; `docs/request-path.md`
//! is the picture with the file of each step, `docs/architecture.md` the layout:
//!
//! - leaves: [`units`], [`clock`], `shutdown`, `text`;
//! - [`policy`]: the pure decision; [`config`]: reading and validating the files;
//!   [`telemetry`]: log, meters, recent denials;
//! - [`cluster`]: Redis sharing; [`snapshot`]: what a request reads, swapped whole;
//!   `defence`: bans and failure counts, and banning;
//! - `proxy`: the request path; [`admin`]: its listener; `background`: reload, housekeeping,
//!   alerts, probe; [`cli`]: the commands' shell; [`testkit`]: the stand-in;
//! - `app`: the composition root that builds all of it ([`start`]).
//!
//! The library exposes what the binary, the tests, the benches and the fuzz targets use; the
//! request path, the background tasks and the defences are the crate's own.

pub mod admin;
mod app;
mod background;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
mod defence;
pub mod policy;
mod proxy;
mod shutdown;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod testkit;
mod text;
pub mod units;

pub use app::{start, start_with_clock, Running, StartError};

/// The request path's head work, for `benches/request_head.rs` and the `request_head` fuzz
/// target only: not an API.
#[doc(hidden)]
pub mod request_head {
    pub use crate::proxy::forward::{prepare, DroppedNames, ForwardInfo, RequestIds};
    pub use crate::proxy::framing::host;
}
pub use background::reload::{Outcome as ReloadOutcome, Reloader};
