//! Everything a request reads, in one immutable value: the configuration and what is built from
//! it (route table, trusted proxies). A reload builds a new [`Snapshot`] and swaps it in whole, so
//! a request never sees half of one configuration and half of another.

use std::sync::Arc;

use crate::classify::RouteTable;
use crate::client_ip::TrustedProxies;
use crate::config::Loaded;
use crate::limits::{KeyedLimiter, LimitRule};
use crate::metrics::RouteMeters;

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
    /// `[[switch]]`es that are paused, in order.
    pub switches: Vec<SwitchRule>,
    /// When it was applied (Unix seconds).
    pub loaded_at: i64,
    /// Per-route counters, index = class id (carried over by class name on reload).
    pub meters: RouteMeters,
    /// Whether some limit is shared across the cluster (else the request path skips the
    /// cluster entirely).
    pub has_shared_limits: bool,
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
        let limits: Vec<LimitRule> = config
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
                    same.then(|| (rule.limiter.clone(), rule.shared.clone()))
                });
                let (carried, carried_shared) = match carried {
                    Some((l, s)) => (Some(l), s),
                    None => (None, None),
                };
                let shared = match (&config.cluster, spec.shared) {
                    (Some(cluster), true) => Some(carried_shared.unwrap_or_else(|| {
                        Arc::new(crate::cluster::limits::SharedLimit::new(
                            &cluster.key_prefix,
                            &spec.name,
                            spec.rate,
                            spec.burst.get(),
                            spec.max_keys,
                        ))
                    })),
                    _ => None,
                };
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
                    shared,
                }
            })
            .collect();
        let switches = config
            .switches
            .iter()
            .filter(|s| s.paused)
            .map(|s| SwitchRule {
                name: s.name.as_str().into(),
                message: s.message.as_str().into(),
                classes: class_mask(&s.classes),
                until: s.until,
                retry_after: s.retry_after,
            })
            .collect();
        let meters = RouteMeters::new(routes.names(), previous.map(|p| &p.meters));
        let has_shared_limits = limits.iter().any(|l: &LimitRule| l.shared.is_some());
        Ok(Snapshot {
            has_shared_limits,
            version,
            meters,
            routes,
            trusted,
            limits,
            switches,
            loaded_at: chrono::Utc::now().timestamp(),
            loaded,
        })
    }
}

/// Bit `i` set for each route class index `i` (at most 64 classes, validated).
pub fn class_mask(classes: &[usize]) -> u64 {
    classes.iter().fold(0u64, |m, &c| m | (1u64 << (c & 63)))
}

/// A paused switch, ready for the request path.
#[derive(Debug)]
pub struct SwitchRule {
    /// Its name.
    pub name: std::sync::Arc<str>,
    /// The sentence guests get.
    pub message: std::sync::Arc<str>,
    /// The route classes it pauses (bit i = class i).
    pub classes: u64,
    /// Unix seconds after which it no longer applies.
    pub until: Option<i64>,
    /// `Retry-After` when no `until` is closer.
    pub retry_after: std::time::Duration,
}

impl SwitchRule {
    /// Whether it pauses a request of `class` at `now_unix`.
    pub fn applies(&self, class: crate::classify::ClassId, now_unix: i64) -> bool {
        self.classes & (1u64 << (class & 63)) != 0 && self.until.is_none_or(|u| now_unix < u)
    }

    /// How long until guests should come back: the time left to `until` (the pause ends
    /// then), or `retry_after` for an open-ended pause.
    pub fn retry_after_at(&self, now_unix: i64) -> std::time::Duration {
        match self.until {
            Some(u) => {
                std::time::Duration::from_secs(u.saturating_sub(now_unix).max(1).unsigned_abs())
            }
            None => self.retry_after,
        }
    }
}
