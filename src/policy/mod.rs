//! The decision, pure and synchronous: what the shield concludes about a request from its bytes,
//! the rules in force and the state of the defences, with no I/O, no `.await` and no clock read
//! (every instant is passed in; a limiter is built with its own clock, governor's, injected).
//!
//! - [`classify`]: the path as Laravel's router sees it → route class and join token.
//! - [`client_ip`]: the client behind the trusted proxies, and its key.
//! - [`tokens`]: join tokens as the app's database compares them (folded once per request).
//! - [`lists`]: the blocklist, allowlist and revoked tokens (parsed from text; reading the
//!   files is the configuration's job).
//! - [`bans`]: the ban table (saving it is the background's job).
//! - [`guessing`]: distinct failed tokens per client and prefix; when to ban.
//! - [`limits`]: keyed GCRA limits with bounded memory.
//! - [`key_table`]: a limit's key table (set-associative, evicting when full).
//! - [`connections`]: open connections per client, for `max_connections_per_ip`.
//! - [`rules`]: what a snapshot holds for the decision ([`rules::Rules`]).
//! - [`denial`]: the answer value, [`denial::Denial`].
//! - [`decide`]: the ordered checks over [`rules::Rules`].
//!
//! It imports nothing of the shield above it: only [`crate::units`].

pub mod bans;
pub mod classify;
pub mod client_ip;
pub mod connections;
pub mod decide;
pub mod denial;
pub mod guessing;
pub mod key_table;
pub mod limits;
pub mod lists;
pub mod rules;
pub mod tokens;
