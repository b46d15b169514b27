//! Everything a request reads, in one immutable value: the configuration and what is built from
//! it (route table, trusted proxies). A reload builds a new [`Snapshot`] and swaps it in whole, so
//! a request never sees half of one configuration and half of another.

use std::sync::Arc;

use crate::classify::RouteTable;
use crate::client_ip::TrustedProxies;
use crate::config::Loaded;

/// One applied configuration and what the request path derives from it.
#[derive(Debug)]
pub struct Snapshot {
    /// Grows by one with every applied reload; the first configuration is version 1.
    pub version: u64,
    /// The configuration as loaded.
    pub loaded: Arc<Loaded>,
    /// The compiled route classes.
    pub routes: RouteTable,
    /// Who may name the client in `X-Forwarded-For`.
    pub trusted: TrustedProxies,
    /// When it was applied (Unix seconds).
    pub loaded_at: i64,
}

/// Why a snapshot could not be built from a validated configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route pattern did not compile (validation normally catches this first).
    #[error("route patterns do not compile: {0}")]
    Routes(String),
}

impl Snapshot {
    /// Builds the snapshot for `loaded` as `version`.
    pub fn build(loaded: Arc<Loaded>, version: u64) -> Result<Snapshot, BuildError> {
        let config = &loaded.config;
        let routes = RouteTable::new(&config.routes).map_err(|errs| {
            BuildError::Routes(
                errs.iter()
                    .map(|(r, p, e)| format!("route[{r}].paths[{p}]: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let trusted = TrustedProxies::new(&config.client.trusted_proxies);
        Ok(Snapshot {
            version,
            routes,
            trusted,
            loaded_at: chrono::Utc::now().timestamp(),
            loaded,
        })
    }
}
