//! Everything a request reads, in one immutable value: the configuration and what is built from
//! it (route table, trusted proxies). A reload builds a new [`Snapshot`] and swaps it in whole, so
//! a request never sees half of one configuration and half of another.

use std::sync::Arc;

use crate::classify::RouteTable;
use crate::client_ip::TrustedProxies;
use crate::config::Loaded;
use crate::limits::{KeyedLimiter, LimitRule};

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
    /// `[[limit]]`, in order, with their limiters.
    pub limits: Vec<LimitRule>,
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
    /// Builds the snapshot for `loaded` as `version`. Limiters of `previous` are carried over for
    /// every limit whose name, key, quota and cap are unchanged, so a reload refills no bucket.
    pub fn build(
        loaded: Arc<Loaded>,
        version: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
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
        let limits = config
            .limits
            .iter()
            .map(|spec| {
                let carried = previous.and_then(|p| {
                    let old_spec = p
                        .loaded
                        .config
                        .limits
                        .iter()
                        .find(|o| o.name == spec.name)?;
                    let same = old_spec.key == spec.key
                        && old_spec.rate == spec.rate
                        && old_spec.burst == spec.burst
                        && old_spec.max_keys == spec.max_keys;
                    let rule = p.limits.iter().find(|r| *r.name == spec.name)?;
                    same.then(|| rule.limiter.clone())
                });
                let limiter = carried.unwrap_or_else(|| {
                    Arc::new(KeyedLimiter::with_clock(
                        spec.rate,
                        spec.burst,
                        spec.max_keys,
                        governor::clock::QuantaClock::default(),
                    ))
                });
                LimitRule {
                    name: spec.name.as_str().into(),
                    classes: spec
                        .classes
                        .iter()
                        .fold(0u64, |m, &c| m | (1u64 << (c & 63))),
                    key: spec.key,
                    mode: spec.mode,
                    until: spec.until,
                    limiter,
                }
            })
            .collect();
        Ok(Snapshot {
            version,
            routes,
            trusted,
            limits,
            loaded_at: chrono::Utc::now().timestamp(),
            loaded,
        })
    }
}
