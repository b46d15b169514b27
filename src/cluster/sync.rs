//! Bans across replicas.
//!
//! **Writing.** A ban made here (automatic or manual) or lifted here goes into the cluster's
//! outbox (the last change per network). The writer stores it in the hash `<prefix>:bans`
//! (field: the network; value: the ban as JSON, with its origin replica) and publishes it on
//! `<prefix>:events` in one atomic pipeline. A write that fails stays in the outbox and is
//! retried when the link is back.
//!
//! **Hearing.** Every replica subscribes to `<prefix>:events` and adopts another replica's ban
//! (or lifts a ban) as soon as the message arrives: well within a second.
//!
//! **Full sync**, every `sync_interval`: the hash is read whole; bans missing here are adopted,
//! ended ones are deleted from the hash, and a ban held here that the hash no longer has was
//! lifted elsewhere while this replica missed the message, so it is lifted here too. After the
//! link comes back (or at start), every ban held here is first written back where the hash has
//! none: bans made during an outage reach the others, and a Redis that restarted empty learns
//! the cluster's bans again from the replicas. (The price: a ban lifted elsewhere while this
//! replica was cut off comes back, and must be lifted again; keeping a ban is the safe side.)
//!
//! **Heartbeat**, with the full sync: each replica writes its name with the time into the sorted
//! set `<prefix>:replicas`; names silent for three intervals are dropped from it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::link::BACKGROUND_TIMEOUT;
use super::{Cluster, Op, Parts, Replica};
use crate::policy::bans::Ban;
use crate::shutdown::Shutdown;
use crate::telemetry::log::{Level, Record};
use futures_util::StreamExt;
use ipnet::IpNet;

/// A message on `<prefix>:events`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Event {
    /// A ban was made or replaced.
    Ban {
        /// The ban, with its origin.
        ban: Ban,
    },
    /// The ban of exactly `net` was lifted.
    Unban {
        /// The network, as CIDR text.
        net: String,
        /// The replica that lifted it.
        origin: String,
    },
}

/// Writes the outbox and runs the full sync and heartbeat every `sync_interval`, until `stop`.
pub async fn run(parts: Parts, stop: Shutdown) {
    let cluster: Arc<Cluster> = parts.cluster.clone();
    let mut up = cluster.link.watch();
    let mut tick = tokio::time::interval(cluster.settings.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether local bans must be written back before the next full sync (at start and after
    // every outage).
    let mut write_back = true;
    loop {
        tokio::select! {
            _ = cluster.wake_writer.notified() => {
                write_outbox(&cluster).await;
                continue;
            }
            _ = tick.tick() => {}
            _ = cluster.resync.notified() => {}
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*up.borrow_and_update() {
                    write_back = true;
                    continue;
                }
            }
            _ = stop.requested() => return,
        }
        if !cluster.link.is_up() {
            continue;
        }
        if write_back {
            write_back = !push_local(&parts, &cluster).await;
        }
        write_outbox(&cluster).await;
        full_sync(&parts, &cluster).await;
        heartbeat(&cluster).await;
    }
}

/// Writes every queued ban change; what fails stays queued (unless a newer change replaced it).
async fn write_outbox(cluster: &Cluster) {
    if !cluster.link.is_up() {
        return;
    }
    let ops: Vec<(IpNet, Op)> = cluster
        .outbox
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    if ops.is_empty() {
        return;
    }
    let bans_key = cluster.key("bans");
    let channel = cluster.key("events");
    let name = cluster.settings.name.clone();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (net, op) in &ops {
        let (event, field) = match op {
            Op::Ban(ban) => {
                let value = serde_json::to_string(ban).unwrap_or_default();
                pipe.hset(&bans_key, net.to_string(), value).ignore();
                (Event::Ban { ban: ban.clone() }, net.to_string())
            }
            Op::Unban(net) => {
                pipe.hdel(&bans_key, net.to_string()).ignore();
                (
                    Event::Unban {
                        net: net.to_string(),
                        origin: name.clone(),
                    },
                    net.to_string(),
                )
            }
        };
        let _ = field;
        pipe.publish(&channel, serde_json::to_string(&event).unwrap_or_default())
            .ignore();
    }
    let written = cluster
        .link
        .run(BACKGROUND_TIMEOUT, "ban write", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await;
    cluster.generation.fetch_add(1, Ordering::AcqRel);
    if written.is_none() {
        let mut outbox = cluster
            .outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (net, op) in ops {
            outbox.entry(net).or_insert(op);
        }
    }
}

/// Writes every ban held here that the hash lacks (HSETNX: never replaces another's record).
/// Says whether it got through.
async fn push_local(parts: &Parts, cluster: &Cluster) -> bool {
    let now = parts.now_unix();
    let mut bans = parts.bans.list(now);
    if bans.is_empty() {
        return true;
    }
    let bans_key = cluster.key("bans");
    let mut pipe = redis::pipe();
    for ban in &mut bans {
        if ban.origin.is_none() {
            ban.origin = Some(cluster.settings.name.clone());
        }
        let value = serde_json::to_string(&ban).unwrap_or_default();
        pipe.hset_nx(&bans_key, ban.net.to_string(), value).ignore();
    }
    cluster.generation.fetch_add(1, Ordering::AcqRel);
    cluster
        .link
        .run(BACKGROUND_TIMEOUT, "ban write-back", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .is_some()
}

/// Reads the hash whole: adopts what is missing here, deletes ended records, lifts what was
/// lifted elsewhere.
async fn full_sync(parts: &Parts, cluster: &Cluster) {
    let generation = cluster.generation.load(Ordering::Acquire);
    let bans_key = cluster.key("bans");
    let key = bans_key.clone();
    let Some(stored) = cluster
        .link
        .run(BACKGROUND_TIMEOUT, "ban sync", |mut c| async move {
            redis::cmd("HGETALL")
                .arg(&key)
                .query_async::<HashMap<String, String>>(&mut c)
                .await
        })
        .await
    else {
        return;
    };
    let now = parts.now_unix();
    let forget = parts.forget_after();
    let mut ended = Vec::new();
    let mut present = std::collections::HashSet::new();
    for (field, value) in &stored {
        let Ok(ban) = serde_json::from_str::<Ban>(value) else {
            // Not ours to read (a newer version, or damage): leave it and count it.
            cluster
                .link
                .failed(super::ErrorKind::Reply, "ban record unreadable");
            continue;
        };
        if ban.until <= now {
            ended.push(field.clone());
            continue;
        }
        present.insert(crate::policy::client_ip::canonical_net(ban.net).trunc());
        let kept = ban.clone();
        // Adopted: made elsewhere (or before a restart here) and new to this replica.
        if parts.bans.adopt(ban, forget, now) {
            let from = kept
                .origin
                .as_deref()
                .filter(|o| *o != cluster.settings.name)
                .unwrap_or("cluster sync");
            parts
                .timeline
                .banned(now.saturating_mul(1000), &kept, Some(from));
        }
    }
    if !ended.is_empty() {
        let _ = cluster
            .link
            .run(BACKGROUND_TIMEOUT, "ban cleanup", |mut c| async move {
                redis::cmd("HDEL")
                    .arg(&bans_key)
                    .arg(&ended)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }
    // Only when nothing was written or heard meanwhile is the absence of a ban meaningful.
    if cluster.generation.load(Ordering::Acquire) != generation {
        return;
    }
    let pending: std::collections::HashSet<IpNet> = cluster
        .outbox
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .copied()
        .collect();
    for ban in parts.bans.list(now) {
        if present.contains(&ban.net) || pending.contains(&ban.net) {
            continue;
        }
        if parts.bans.lift(ban.net).is_some() {
            parts.timeline.lifted(
                now.saturating_mul(1000),
                &ban,
                crate::telemetry::timeline::LiftCause::Replica("cluster sync".to_string()),
            );
            parts.log.log(
                Record::new(Level::Notice, "Ban lifted")
                    .with("net", ban.net.to_string())
                    .with("reason", ban.reason.as_str())
                    .with("by", "cluster sync"),
            );
        }
    }
}

/// Writes this replica's heartbeat and reads who else is alive.
async fn heartbeat(cluster: &Cluster) {
    let key = cluster.key("replicas");
    let name = cluster.settings.name.clone();
    let now = cluster.now_ms();
    let stale = now - 3 * i64::try_from(cluster.settings.sync_interval.as_millis()).unwrap_or(3000);
    let alive = cluster
        .link
        .run(BACKGROUND_TIMEOUT, "heartbeat", |mut c| async move {
            redis::pipe()
                .atomic()
                .zadd(&key, &name, now)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(stale)
                .ignore()
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async::<(Vec<(String, i64)>,)>(&mut c)
                .await
        })
        .await;
    if let Some((alive,)) = alive {
        *cluster
            .replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = alive
            .into_iter()
            .map(|(name, seen_ms)| Replica { name, seen_ms })
            .collect();
    }
}

/// Listens on `<prefix>:events` while the link is up, applying the other replicas' changes.
pub async fn listen(parts: Parts, stop: Shutdown) {
    let cluster: Arc<Cluster> = parts.cluster.clone();
    let mut up = cluster.link.watch();
    loop {
        // Wait for the link (the supervisor does the backoff).
        tokio::select! {
            r = up.wait_for(|u| *u) => if r.is_err() { return },
            _ = stop.requested() => return,
        }
        let mut pubsub = match cluster.link.pubsub().await {
            Ok(p) => p,
            Err(kind) => {
                cluster.link.failed(kind, "subscribe");
                tokio::select! {
                    _ = tokio::time::sleep(super::link::BACKOFF.0) => continue,
                    _ = stop.requested() => return,
                }
            }
        };
        if let Err(e) = pubsub.subscribe(cluster.key("events")).await {
            cluster.link.failed(super::ErrorKind::of(&e), "subscribe");
            continue;
        }
        // Whatever was announced before the subscription took hold is in the hash: read it now
        // rather than at the next tick.
        cluster.resync.notify_one();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(msg) => {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        apply(&parts, &cluster, &payload);
                    }
                    None => {
                        cluster.link.failed(super::ErrorKind::Connection, "subscription");
                        break;
                    }
                },
                r = up.wait_for(|u| !*u) => {
                    if r.is_err() { return }
                    break;
                }
                _ = stop.requested() => return,
            }
        }
    }
}

/// Applies one event from another replica (this replica's own are ignored).
pub fn apply(parts: &Parts, cluster: &Cluster, payload: &str) {
    let Ok(event) = serde_json::from_str::<Event>(payload) else {
        cluster
            .link
            .failed(super::ErrorKind::Reply, "event unreadable");
        return;
    };
    let now = parts.now_unix();
    match event {
        Event::Ban { ban } => {
            if ban.origin.as_deref() == Some(cluster.settings.name.as_str()) {
                return;
            }
            let origin = ban.origin.clone();
            let kept = ban.clone();
            if parts.bans.adopt(ban, parts.forget_after(), now) {
                parts.timeline.banned(
                    now.saturating_mul(1000),
                    &kept,
                    origin.as_deref().or(Some("another replica")),
                );
            }
        }
        Event::Unban { net, origin } => {
            if origin == cluster.settings.name {
                return;
            }
            let Ok(net) = net.parse::<IpNet>() else {
                return;
            };
            if let Some(ban) = parts.bans.lift(net) {
                parts.timeline.lifted(
                    now.saturating_mul(1000),
                    &ban,
                    crate::telemetry::timeline::LiftCause::Replica(origin.clone()),
                );
                parts.log.log(
                    Record::new(Level::Notice, "Ban lifted")
                        .with("net", net.to_string())
                        .with("reason", ban.reason.as_str())
                        .with("by", origin.as_str()),
                );
            }
        }
    }
    cluster.generation.fetch_add(1, Ordering::AcqRel);
}
