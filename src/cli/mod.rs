//! The commands' shell: what each command does and prints around the shield, for `main.rs`
//! (which holds only the argument types and the dispatch).
//!
//! - [`check`]: validate a configuration and print what it would run with.
//! - [`run`]: the serving process's signals and messages.
//! - [`demo`]: the shipped configuration in front of the stand-in.
//! - [`ctl`]: the admin API's client and what each action prints (and `healthcheck`).
//! - [`kuma`]: the Uptime Kuma import file.
//! - [`timeline`]: `ctl timeline`'s Markdown for the incident ticket.
//! - [`token_hash`]: the revoked-tokens line of a join token.

pub mod check;
pub mod ctl;
pub mod demo;
pub mod kuma;
pub mod out;
pub mod run;
pub mod timeline;
pub mod token_hash;
