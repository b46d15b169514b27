//! Everything a request reads, in one immutable value: the configuration and what is built from
//! it (route table, trusted proxies, the rules of the decision, the shared limits' handles, the
//! per-route meters). A reload builds a new [`Snapshot`] and swaps it in whole, so a request
//! never sees half of one configuration and half of another.
//!
//! [`Snapshots`] is the handle every part holds to read the one in force; only the
//! [`Publisher`], which exists once and belongs to the reload, can swap a new one in.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::cluster::limits::SharedLimit;
use crate::config::schema::{checking_order, stand_in_of, stands_in_for, LimitSpec};
use crate::config::Loaded;
use crate::policy::classify::RouteTable;
use crate::policy::client_ip::TrustedProxies;
use crate::policy::limits::{KeyedLimiter, LimitRule};
use crate::policy::rules::{ClassMask, Rules, SwitchRule};
use crate::telemetry::meters::RouteMeters;

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
    /// What the decision reads: lists, paused switches, token pattern, limits.
    pub rules: Rules,
    /// The cluster-wide side of each limit of `rules.limits`, by index (`None`: not shared, or
    /// no `[cluster]`).
    pub shared_limits: Vec<Option<Arc<SharedLimit>>>,
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
    /// Builds the snapshot for `loaded` as `version`, applied at `now_unix`. Limiters of
    /// `previous` are carried over for every limit whose name, key, quota and cap are unchanged,
    /// so a reload refills no bucket. A temporary limit or switch with the name of a permanent
    /// one is checked in its place until its `until`; the permanent one (and its limiter) stays
    /// in the snapshot, replaced until then.
    pub fn build(
        loaded: Arc<Loaded>,
        version: u64,
        previous: Option<&Snapshot>,
        now_unix: i64,
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
        let mut shared_limits = Vec::with_capacity(config.limits.len());
        let specs = &config.limits;
        let limits: Vec<LimitRule> = checking_order(specs)
            .into_iter()
            .map(|i| {
                let spec = &specs[i];
                let stands_in = stands_in_for(specs, i).is_some();
                let carried = previous.and_then(|p| carry(p, spec, stands_in));
                let (carried, carried_shared) = match carried {
                    Some((l, s)) => (Some(l), s),
                    None => (None, None),
                };
                let shared = match (&config.cluster, spec.shared) {
                    (Some(cluster), true) => Some(carried_shared.unwrap_or_else(|| {
                        Arc::new(SharedLimit::new(
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
                let is_shared = shared.is_some();
                shared_limits.push(shared);
                LimitRule {
                    name: spec.name.as_str().into(),
                    classes: ClassMask::of(&spec.classes),
                    key: spec.key,
                    mode: spec.mode,
                    until: spec.until,
                    replaced_until: stand_in_of(specs, i).and_then(|t| specs[t].until),
                    stands_in,
                    limiter,
                    shared: is_shared,
                }
            })
            .collect();
        let switch_specs = &config.switches;
        let switches = checking_order(switch_specs)
            .into_iter()
            .filter(|&i| switch_specs[i].paused)
            .map(|i| {
                let s = &switch_specs[i];
                SwitchRule {
                    name: s.name.as_str().into(),
                    message: s.message.as_str().into(),
                    classes: ClassMask::of(&s.classes),
                    until: s.until,
                    replaced_until: stand_in_of(switch_specs, i)
                        .and_then(|t| switch_specs[t].until),
                    retry_after: s.retry_after,
                }
            })
            .collect();
        let meters = RouteMeters::new(routes.names(), previous.map(|p| &p.meters));
        let has_shared_limits = shared_limits.iter().any(Option::is_some);
        let rules = Rules {
            blocklist: loaded.lists.blocklist.clone(),
            allowlist: loaded.lists.allowlist.clone(),
            revoked: loaded.lists.revoked.clone(),
            switches,
            token_pattern: config.enumeration.as_ref().map(|e| e.token_pattern.clone()),
            limits,
        };
        Ok(Snapshot {
            has_shared_limits,
            version,
            meters,
            routes,
            trusted,
            rules,
            shared_limits,
            loaded_at: now_unix,
            loaded,
        })
    }
}

/// The limiter (and cluster-wide side) of `previous` to carry into a new snapshot for `spec`:
/// the rule of the same name and the same role (a temporary stand-in, or the entry that owns
/// the name), when its key, quota and cap are unchanged. A permanent limit keeps its limiter
/// while a stand-in replaces it, so when the stand-in ends its buckets are as it left them.
fn carry(
    previous: &Snapshot,
    spec: &LimitSpec,
    stands_in: bool,
) -> Option<(Arc<KeyedLimiter>, Option<Arc<SharedLimit>>)> {
    let old_specs = &previous.loaded.config.limits;
    let old_spec = (0..old_specs.len())
        .find(|&j| {
            old_specs[j].name == spec.name && stands_in_for(old_specs, j).is_some() == stands_in
        })
        .map(|j| &old_specs[j])?;
    let same = old_spec.key == spec.key
        && old_spec.rate == spec.rate
        && old_spec.burst == spec.burst
        && old_spec.max_keys == spec.max_keys;
    if !same {
        return None;
    }
    let i = previous
        .rules
        .limits
        .iter()
        .position(|r| *r.name == spec.name && r.stands_in == stands_in)?;
    let rule = previous.rules.limits.get(i)?;
    let shared = previous.shared_limits.get(i).cloned().flatten();
    Some((rule.limiter.clone(), shared))
}

/// The handle to the snapshot in force: every part reads it, one load per use.
#[derive(Debug)]
pub struct Snapshots {
    current: ArcSwap<Snapshot>,
    /// The version in force, for whoever waits for a reload ("version >= n", never a sleep).
    version: watch::Sender<u64>,
}

/// The one writer of the snapshot: swaps a new one in and announces its version.
#[derive(Debug)]
pub struct Publisher {
    snapshots: Arc<Snapshots>,
}

impl Snapshots {
    /// The handle around a first snapshot, and its only publisher.
    pub fn new(first: Snapshot) -> (Arc<Snapshots>, Publisher) {
        let version = watch::Sender::new(first.version);
        let snapshots = Arc::new(Snapshots {
            current: ArcSwap::from_pointee(first),
            version,
        });
        let publisher = Publisher {
            snapshots: snapshots.clone(),
        };
        (snapshots, publisher)
    }

    /// The snapshot in force (a guard: never hold it across an `.await`).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, owned (may be held across an `.await`).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Follows the version in force (`wait_for(|v| *v >= n)` waits for a reload).
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

impl Publisher {
    /// The snapshots it writes.
    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// Swaps `snapshot` in and announces its version.
    pub fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        self.snapshots.current.store(Arc::new(snapshot));
        self.snapshots.version.send_replace(version);
    }
}
