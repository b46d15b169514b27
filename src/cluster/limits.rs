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
//! **On the request path.** The decision is synchronous, so the pipeline settles every shared
//! limit of a request first ([`settle`]): a token from the local lease (no await), else it
//! waits for a lease, at most `timeout`; the spent keys of one request (its IP's and its
//! token's) are refilled in one script call. Once half a lease is spent, the next one is
//! fetched in the background, so a steady key rarely waits at all. One request per key refills at a time (an async
//! mutex per key); the others find the refilled lease. A request that cannot get an answer in time,
//! or any request while the link is in fallback, is decided by the limit's local limiter, as a
//! limit without `shared` would be.

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::Cluster;
use crate::policy::decide::Facts;
use crate::policy::limits::{KeyKind, LimitRule, PrehashedKey, Settled};

/// How long leased tokens may be spent. Spending a token late never lets a client past the
/// limit by more than the tokens leased and unspent (about two leases per replica and key,
/// whatever this is), so it can be long: a key seen every second or two then reuses its lease
/// instead of paying a round trip on most requests.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// For each key k of KEYS (emission interval ARGV[2k] µs, burst ARGV[2k+1]) takes up to ARGV[1]
/// tokens (at most the burst); returns {granted, µs until the next token when none was granted}
/// per key, flattened. All keys in one round trip, on the server's clock.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local interval = tonumber(ARGV[2 * k])
  local burst = tonumber(ARGV[2 * k + 1])
  local tat = tonumber(redis.call('GET', KEYS[k]) or '0')
  if tat < now then tat = now end
  local avail = math.floor((now + interval * burst - tat) / interval)
  if avail <= 0 then
    out[2 * k - 1] = 0
    out[2 * k] = tat + interval - interval * burst - now
  else
    local n = math.min(want, burst, avail)
    tat = tat + n * interval
    redis.call('SET', KEYS[k], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    out[2 * k - 1] = n
    out[2 * k] = 0
  end
end
return out
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
    /// A refill ahead of need is in flight.
    prefetching: std::sync::atomic::AtomicBool,
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
        rate: crate::units::Rate,
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

    /// Drops leases with nothing left to spend or remember at `now_ms` (Unix milliseconds).
    pub fn prune(&self, now_ms: i64) {
        let now = now_ms;
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
/// `rules`, `Local` for rules that are not shared; `shared` holds each rule's cluster side, by
/// index; `now_ms` is the request's time). Keys whose lease has a token (or a fresh "no") are settled at once; the others are
/// refilled together in one round trip, waiting at most `timeout` in all.
pub async fn settle(
    cluster: &Arc<Cluster>,
    rules: &[LimitRule],
    shared_limits: &[Option<Arc<SharedLimit>>],
    ipv6_prefix: u8,
    facts: &Facts<'_>,
    now_ms: i64,
) -> Vec<Settled> {
    let mut out = vec![Settled::Local; rules.len()];
    let Some(class) = facts.class else {
        return out;
    };
    let classes = facts
        .classes
        .with(crate::policy::rules::ClassMask::one(class));
    if facts.allowlisted || !cluster.link.is_up() {
        return out;
    }
    let now = now_ms;
    let mut spent: Vec<Refill<'_>> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let Some(Some(shared)) = shared_limits.get(i) else {
            continue;
        };
        if !rule.applies_to_any(classes, facts.now_unix) {
            continue;
        }
        let (hash, token) = match rule.key {
            KeyKind::Ip => (facts.client_hash, Keyed::Client),
            KeyKind::Net => (crate::policy::limits::net_key_hash(facts.ip), Keyed::Net),
            KeyKind::Token => match facts.token {
                Some(t) => (
                    crate::policy::limits::token_hash(t.key()),
                    Keyed::Token(t.key()),
                ),
                None => continue,
            },
        };
        // A full lease table leaves a new key to the local limiter.
        let Some(lease) = shared.lease(hash) else {
            continue;
        };
        // Tokens in hand first: a background refill may have added some after a "no".
        if lease.take(now) {
            out[i] = Settled::Granted;
            if lease.tokens.load(Ordering::Relaxed) < cluster.settings.lease.div_ceil(2) {
                prefetch(
                    cluster,
                    shared,
                    &lease,
                    key_of(cluster, facts, token, ipv6_prefix),
                    now,
                );
            }
        } else if let Some(wait) = lease.blocked(now) {
            out[i] = Settled::Denied(wait);
        } else {
            spent.push(Refill {
                rule: i,
                shared,
                lease,
                token,
            });
        }
    }
    if spent.is_empty() {
        return out;
    }
    let v6 = ipv6_prefix;
    let timeout = cluster.settings.timeout;
    // Past the timeout, whatever is not settled stays Local.
    let _ = tokio::time::timeout(timeout, refill(cluster, facts, v6, &spent, &mut out)).await;
    out
}

/// What a shared limit's key is, for its Redis name.
#[derive(Debug, Clone, Copy)]
enum Keyed<'a> {
    /// The client (an address, or an IPv6 network of `ipv6_prefix`).
    Client,
    /// The client's IPv4 /24 or IPv6 /48.
    Net,
    /// The folded join token.
    Token(&'a str),
}

/// The part of a key's Redis name after the limit's: the client's network, its /24 or /48, or
/// the token's digest.
fn key_of(cluster: &Cluster, facts: &Facts<'_>, token: Keyed<'_>, ipv6_prefix: u8) -> String {
    match token {
        Keyed::Token(token) => cluster.token_digest(token),
        Keyed::Client => facts.client.net(ipv6_prefix).to_string(),
        Keyed::Net => crate::policy::client_ip::network(facts.ip).to_string(),
    }
}

/// Refills a key's lease ahead of need, in the background, once half of it is spent: a hot key
/// then rarely makes a request wait for a round trip. At most one such refill per key is in
/// flight; its tokens are added to what is left, so a key holds at most about two leases.
fn prefetch(
    cluster: &Arc<Cluster>,
    shared: &SharedLimit,
    lease: &Arc<Lease>,
    key: String,
    now: i64,
) {
    if lease.prefetching.swap(true, Ordering::AcqRel) {
        return;
    }
    let (cluster, lease) = (cluster.clone(), lease.clone());
    let (key, interval, burst) = (
        format!("{}{key}", shared.key_base),
        shared.interval_us,
        shared.burst,
    );
    tokio::spawn(async move {
        let mut invocation = gcra_script().prepare_invoke();
        invocation
            .arg(cluster.settings.lease)
            .key(key)
            .arg(interval)
            .arg(burst);
        let answer = cluster
            .link
            .run(
                cluster.settings.timeout,
                "shared limit",
                |mut c| async move { invocation.invoke_async::<Vec<i64>>(&mut c).await },
            )
            .await;
        if let Some(&[granted, _]) = answer.as_deref() {
            if granted > 0 {
                lease
                    .tokens
                    .fetch_add(u32::try_from(granted).unwrap_or(0), Ordering::AcqRel);
                lease.expires_ms.store(
                    cluster.now_ms().max(now)
                        + i64::try_from(LEASE_TTL.as_millis()).unwrap_or(1000),
                    Ordering::Release,
                );
            }
        }
        lease.prefetching.store(false, Ordering::Release);
    });
}

/// A shared limit whose lease for this request's key is spent.
struct Refill<'a> {
    rule: usize,
    shared: &'a SharedLimit,
    lease: Arc<Lease>,
    token: Keyed<'a>,
}

async fn refill(
    cluster: &Cluster,
    facts: &Facts<'_>,
    ipv6_prefix: u8,
    spent: &[Refill<'_>],
    out: &mut [Settled],
) {
    // One refill per key at a time: the others wait here and then find the new lease. Locks
    // are taken in rule order, the same for every request, so two requests cannot deadlock.
    let mut guards = Vec::with_capacity(spent.len());
    for r in spent {
        guards.push(r.lease.refill.lock().await);
    }
    let now = cluster.now_ms();
    let mut ask: Vec<&Refill<'_>> = Vec::with_capacity(spent.len());
    for r in spent {
        if r.lease.take(now) {
            out[r.rule] = Settled::Granted;
        } else if let Some(wait) = r.lease.blocked(now) {
            out[r.rule] = Settled::Denied(wait);
        } else {
            ask.push(r);
        }
    }
    if ask.is_empty() {
        return;
    }
    let mut invocation = gcra_script().prepare_invoke();
    invocation.arg(cluster.settings.lease);
    for r in &ask {
        let key = key_of(cluster, facts, r.token, ipv6_prefix);
        invocation
            .key(format!("{}{key}", r.shared.key_base))
            .arg(r.shared.interval_us)
            .arg(r.shared.burst);
    }
    let answer = cluster
        .link
        .run(
            cluster.settings.timeout,
            "shared limit",
            |mut c| async move { invocation.invoke_async::<Vec<i64>>(&mut c).await },
        )
        .await;
    let Some(answer) = answer else {
        return;
    };
    let now = cluster.now_ms();
    for (r, pair) in ask.iter().zip(answer.chunks(2)) {
        let (granted, wait_us) = match *pair {
            [granted, wait_us] => (granted, wait_us),
            _ => continue,
        };
        if granted > 0 {
            let left = u32::try_from(granted - 1).unwrap_or(0);
            r.lease.tokens.store(left, Ordering::Release);
            r.lease.expires_ms.store(
                now + i64::try_from(LEASE_TTL.as_millis()).unwrap_or(1000),
                Ordering::Release,
            );
            out[r.rule] = Settled::Granted;
        } else {
            // Whole milliseconds, rounded up: never retry before the token exists.
            let wait_ms = (wait_us.max(1) + 999) / 1000;
            r.lease.blocked_ms.store(now + wait_ms, Ordering::Release);
            out[r.rule] = Settled::Denied(Duration::from_millis(wait_ms.unsigned_abs()));
        }
    }
    drop(guards);
}

fn gcra_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA_SCRIPT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_802_400_000;

    #[test]
    fn leased_tokens_are_spent_one_by_one_and_lapse() {
        let lease = Lease::default();
        assert!(!lease.take(NOW), "an empty lease has nothing to spend");
        lease.tokens.store(2, Ordering::Release);
        lease.expires_ms.store(NOW + 1000, Ordering::Release);
        assert!(lease.take(NOW));
        assert!(lease.take(NOW + 999));
        assert!(!lease.take(NOW + 999));
        lease.tokens.store(5, Ordering::Release);
        assert!(!lease.take(NOW + 1000), "a lapsed lease is not spent");
    }

    #[test]
    fn a_no_from_redis_is_remembered_until_the_bucket_has_a_token() {
        let lease = Lease::default();
        assert_eq!(lease.blocked(NOW), None);
        lease.blocked_ms.store(NOW + 1500, Ordering::Release);
        assert_eq!(lease.blocked(NOW), Some(Duration::from_millis(1500)));
        assert_eq!(lease.blocked(NOW + 1500), None);
    }

    #[test]
    fn a_full_lease_table_leaves_new_keys_to_the_local_limiter_and_idle_leases_are_pruned() {
        let rate = crate::units::parse_rate("60/min").unwrap();
        let shared = SharedLimit::new("js", "guest-ip", rate, 10, 2);
        assert_eq!(shared.interval_us, 1_000_000);
        assert_eq!(shared.key_base, "js:limit:guest-ip:");
        let first = shared.lease(1).unwrap();
        assert!(shared.lease(2).is_some());
        assert!(shared.lease(3).is_none(), "the table holds at most its cap");
        assert!(Arc::ptr_eq(&first, &shared.lease(1).unwrap()));
        // A lease with tokens to spend stays; one with nothing left goes.
        first.tokens.store(3, Ordering::Release);
        first.expires_ms.store(NOW + 60_000, Ordering::Release);
        shared.prune(NOW);
        assert_eq!(shared.len(), 1);
        assert!(shared.lease(3).is_some());
    }
}
