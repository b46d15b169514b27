//! Guessing counted across replicas: each failed token is also added to a sorted set per
//! client and per prefix in Redis (`<prefix>:fail:c:<net>`, `<prefix>:fail:p:<net>`; member:
//! the token's digest; score: the Redis server's time), in one Lua script per key that drops
//! members older than `window`, counts the rest, and, when the count reaches the threshold,
//! deletes the set and reports it, so exactly one replica bans. The set expires `window` after
//! its last failure.
//!
//! The request path only queues the failure ([`Cluster::record_failure`], a `try_send` on a
//! bounded channel); a task counts it. The local counter keeps counting too: it decides alone
//! while the link is in fallback, and whichever count reaches its threshold first bans (a
//! network already banned is not banned again).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Cluster, Parts};
use crate::policy::guessing::{Offence, OffenceKind};
use crate::shutdown::Shutdown;

/// One failed token to count.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The client's network (`ClientKey::net`).
    pub client: IpNet,
    /// The /24 or /48 around it.
    pub prefix: IpNet,
    /// The token's digest ([`Cluster::token_digest`]).
    pub token: String,
}

/// Adds a member at the server's time, drops those older than the window, and returns the count
/// when it reached the threshold (deleting the set), else 0.
const COUNT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return n
end
redis.call('PEXPIRE', KEYS[1], window)
return 0
";

impl Cluster {
    /// Queues a failed token for the shared count; never waits. A full queue drops it (counted
    /// in status; the local counter still has it).
    pub fn record_failure(&self, failed: Failed) {
        if !self.link.is_up() {
            return;
        }
        if self.failures.try_send(failed).is_err() {
            self.failures_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts queued failures in Redis until `stop`; reports what reaches a threshold through the
/// [`super::Guessing`] callback.
pub async fn run(parts: Parts, mut rx: mpsc::Receiver<Failed>, stop: Shutdown) {
    let cluster: Arc<Cluster> = parts.cluster.clone();
    let script = redis::Script::new(COUNT_SCRIPT);
    loop {
        let failed = tokio::select! {
            f = rx.recv() => match f {
                Some(f) => f,
                None => return,
            },
            _ = stop.requested() => return,
        };
        let Some(rules) = parts.guessing.rules() else {
            continue;
        };
        let settings = &rules.settings;
        let window = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        let client_key = cluster.key(&format!("fail:c:{}", failed.client));
        let prefix_key = cluster.key(&format!("fail:p:{}", failed.prefix));
        let (max, prefix_max) = (settings.max_failures, settings.prefix_max_failures);
        let token = failed.token.clone();
        let script_ref = &script;
        let counted = cluster
            .link
            .run(
                super::link::BACKGROUND_TIMEOUT,
                "failed token count",
                |mut c| async move {
                    let client: u32 = script_ref
                        .key(&client_key)
                        .arg(window)
                        .arg(&token)
                        .arg(max)
                        .invoke_async(&mut c)
                        .await?;
                    let prefix: u32 = script_ref
                        .key(&prefix_key)
                        .arg(window)
                        .arg(&token)
                        .arg(prefix_max)
                        .invoke_async(&mut c)
                        .await?;
                    Ok((client, prefix))
                },
            )
            .await;
        let Some((client, prefix)) = counted else {
            continue;
        };
        let now = parts.now_unix();
        for (net, distinct, kind) in [
            (failed.client, client, OffenceKind::Client),
            (failed.prefix, prefix, OffenceKind::Prefix),
        ] {
            if distinct == 0 {
                continue;
            }
            parts.guessing.offence(
                &Offence {
                    net,
                    distinct_tokens: distinct,
                    kind,
                },
                &rules,
                now,
            );
        }
    }
}
