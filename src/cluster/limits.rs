//! Limits marked `shared = true`: one GCRA bucket per key for the whole cluster, kept in Redis
//! and taken from in leases.
//!
//! **Server-side GCRA.** The bucket of a key is one Redis string, `<prefix>:limit:<name>:<key>`,
//! holding its theoretical arrival time in microseconds of the Redis server's clock (so
//! replicas' clocks do not matter). A Lua script (EVALSHA, one round trip) takes up to `want`
//! tokens at once: as many as the bucket holds, or none and the time until one is free. The
//! key expires when its bucket is full again, so idle keys cost Redis nothing.
//!
//! **Leases.** A replica asks for [`Cluster`]`.settings.lease` tokens at a time (at most the
//! burst) and spends them locally: a hot key costs one round trip per `lease` requests. Tokens
//! are taken from the shared bucket before they are spent, so the cluster as a whole never
//! admits more than the limit; a lease left unspent only makes it stricter, and it lapses after
//! [`LEASE_TTL`] so old tokens are not spent long after they were granted. A "no" from Redis is
//! remembered until the bucket has a token again, so a client over a shared limit is refused
//! here without a round trip.
//!
//! **On the request path.** The decision is synchronous, so the handler settles every shared
//! limit of a request first ([`settle`]): a token from the local lease (no await), else it
//! waits for a lease, at most `timeout`. One request per key refills at a time (an async mutex
//! per key); the others find the refilled lease. A request that cannot get an answer in time,
//! or any request while the link is in fallback, is decided by the limit's local limiter, as a
//! limit without `shared` would be.

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::Cluster;
use crate::decide::Facts;
use crate::limits::{KeyKind, LimitRule, PrehashedKey};
use crate::server::now_ms;
use crate::snapshot::Snapshot;

/// How long leased tokens may be spent.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// How one shared limit was settled for a request, before the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Not settled through the cluster: the local limiter decides.
    Local,
    /// A token of the shared bucket was taken for this request.
    Granted,
    /// The shared bucket is empty; this long until it has a token.
    Denied(Duration),
}

/// Takes up to ARGV[3] tokens from the bucket at KEYS[1] (emission interval ARGV[1] µs, burst
/// ARGV[2]); returns {granted, µs until the next token when none was granted}.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local avail = math.floor((now + interval * burst - tat) / interval)
if avail <= 0 then
  return {0, tat + interval - interval * burst - now}
end
local n = math.min(want, avail)
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {n, 0}
";

/// One key's lease on this replica.
#[derive(Debug, Default)]
pub struct Lease {
    tokens: AtomicU32,
    /// Unix ms after which unspent tokens lapse.
    expires_ms: AtomicI64,
    /// Unix ms until which the shared bucket said no.
    blocked_ms: AtomicI64,
    refill: tokio::sync::Mutex<()>,
}

impl Lease {
    fn take(&self, now: i64) -> bool {
        self.expires_ms.load(Ordering::Acquire) > now
            && self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
                .is_ok()
    }

    fn blocked(&self, now: i64) -> Option<Duration> {
        let until = self.blocked_ms.load(Ordering::Acquire);
        (until > now).then(|| Duration::from_millis((until - now).unsigned_abs()))
    }

    fn idle(&self, now: i64) -> bool {
        (self.tokens.load(Ordering::Relaxed) == 0 || self.expires_ms.load(Ordering::Relaxed) <= now)
            && self.blocked_ms.load(Ordering::Relaxed) <= now
            && self.refill.try_lock().is_ok()
    }
}

/// The leases of one shared limit on this replica, bounded like its local table.
pub struct SharedLimit {
    leases: DashMap<u64, Arc<Lease>, BuildHasherDefault<PrehashedKey>>,
    cap: usize,
    /// `<prefix>:limit:<name>:`
    key_base: String,
    interval_us: u64,
    burst: u32,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedLimit({}, {} leases)",
            self.key_base,
            self.leases.len()
        )
    }
}

impl SharedLimit {
    /// The shared side of a limit named `name` with this quota, keys under `key_prefix`.
    pub fn new(
        key_prefix: &str,
        name: &str,
        rate: crate::config::units::Rate,
        burst: u32,
        cap: usize,
    ) -> SharedLimit {
        let interval_us = u64::try_from(rate.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        SharedLimit {
            leases: DashMap::default(),
            cap: cap.max(1),
            key_base: format!("{key_prefix}:limit:{name}:"),
            interval_us,
            burst: burst.max(1),
        }
    }

    /// Leases held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Drops leases with nothing left to spend or remember.
    pub fn prune(&self) {
        let now = now_ms();
        self.leases.retain(|_, lease| !lease.idle(now));
    }

    fn lease(&self, key: u64) -> Option<Arc<Lease>> {
        if let Some(l) = self.leases.get(&key) {
            return Some(l.clone());
        }
        if self.leases.len() >= self.cap {
            return None;
        }
        Some(self.leases.entry(key).or_default().clone())
    }
}

/// Settles every shared limit that applies to the request of `facts` (one entry per rule of
/// `snap.limits`, `Local` for rules that are not shared). Waits on Redis at most `timeout`,
/// and only when a key's lease is spent.
pub async fn settle(cluster: &Cluster, snap: &Snapshot, facts: &Facts<'_>) -> Vec<Settled> {
    let mut out = vec![Settled::Local; snap.limits.len()];
    let Some(class) = facts.class else {
        return out;
    };
    if facts.allowlisted || !cluster.link.is_up() {
        return out;
    }
    for (i, rule) in snap.limits.iter().enumerate() {
        let Some(shared) = &rule.shared else { continue };
        if !rule.applies(class, facts.now_unix) {
            continue;
        }
        let v6 = snap.loaded.config.client.ipv6_prefix;
        out[i] = settle_one(cluster, rule, shared, facts, v6).await;
    }
    out
}

async fn settle_one(
    cluster: &Cluster,
    rule: &LimitRule,
    shared: &SharedLimit,
    facts: &Facts<'_>,
    ipv6_prefix: u8,
) -> Settled {
    let (hash, redis_key) = match rule.key {
        KeyKind::Ip => (facts.client_hash, None),
        KeyKind::Token => match facts.token {
            Some(t) => (crate::limits::token_hash(t), Some(t)),
            None => return Settled::Local,
        },
    };
    let Some(lease) = shared.lease(hash) else {
        return Settled::Local;
    };
    let now = now_ms();
    if let Some(wait) = lease.blocked(now) {
        return Settled::Denied(wait);
    }
    if lease.take(now) {
        return Settled::Granted;
    }
    let key = format!(
        "{}{}",
        shared.key_base,
        match redis_key {
            Some(token) => cluster.token_digest(token),
            None => facts.client.net(ipv6_prefix).to_string(),
        }
    );
    let timeout = cluster.settings.timeout;
    let want = cluster.settings.lease.min(shared.burst);
    let refill = async {
        let _one_refill_at_a_time = lease.refill.lock().await;
        let now = now_ms();
        if let Some(wait) = lease.blocked(now) {
            return Settled::Denied(wait);
        }
        if lease.take(now) {
            return Settled::Granted;
        }
        let script = gcra_script();
        let (interval, burst) = (shared.interval_us, shared.burst);
        let answer = cluster
            .link
            .run(timeout, "shared limit", |mut c| async move {
                script
                    .key(&key)
                    .arg(interval)
                    .arg(burst)
                    .arg(want)
                    .invoke_async::<(u32, i64)>(&mut c)
                    .await
            })
            .await;
        let now = now_ms();
        match answer {
            Some((granted, _)) if granted > 0 => {
                lease.tokens.store(granted - 1, Ordering::Release);
                lease.expires_ms.store(
                    now + i64::try_from(LEASE_TTL.as_millis()).unwrap_or(1000),
                    Ordering::Release,
                );
                Settled::Granted
            }
            Some((_, wait_us)) => {
                // Whole milliseconds, rounded up: never retry before the token exists.
                let wait_ms = (wait_us.max(1) + 999) / 1000;
                lease.blocked_ms.store(now + wait_ms, Ordering::Release);
                Settled::Denied(Duration::from_millis(wait_ms.unsigned_abs()))
            }
            None => Settled::Local,
        }
    };
    tokio::time::timeout(timeout, refill)
        .await
        .unwrap_or(Settled::Local)
}

fn gcra_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA_SCRIPT))
}
