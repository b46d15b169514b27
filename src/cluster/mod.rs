//! Several shields, one policy: replicas that share one Redis share their bans, their counts of
//! failed join tokens, and the limits marked `shared = true`. Without `[cluster]` none of this
//! exists: no connection, no task, and the request path is exactly the single-process one.
//!
//! - [`link`]: the connection, the fallback switch, reconnection with backoff.
//! - [`sync`]: bans written to a Redis hash and announced on a channel; every replica adopts
//!   the others' bans at once (pub/sub) and re-reads the hash every `sync_interval` (for
//!   messages missed while down or starting); the heartbeat that lists the replicas alive.
//! - [`failures`]: each failed token is also counted in a per-client and per-prefix sorted set
//!   in Redis (off the request path, through a bounded queue), so guessing spread over replicas
//!   reaches the threshold as fast as against one.
//! - [`limits`]: shared limits: GCRA in a Lua script on the Redis server, leased a few tokens
//!   per round trip so a hot key does not cost a round trip per request.
//!
//! **Redis failing never takes guest traffic down.** No request waits on Redis longer than
//! `timeout`; while the link is in fallback, shared limits are enforced per replica by their
//! local limiter, bans and guessing counts stay local, and nothing on the request path touches
//! Redis. When Redis returns, local bans are written back and the others' read in.
//!
//! The cluster knows nothing of the request path: the handler calls into it (settling shared
//! limits, queueing failed tokens, announcing bans), and what it finds itself (a threshold
//! reached by the shared guessing count) it reports through the [`Guessing`] callback the
//! composition root hands it.
//!
//! Redis holds client addresses and networks (in keys and ban records) but never a join token:
//! a token is stored as a 64-bit digest salted with the key prefix.

pub mod failures;
pub mod limits;
pub mod link;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::schema::ClusterConfig;
use crate::policy::bans::{Ban, Bans};
use crate::policy::guessing::{EnumerationSettings, Offence};
use crate::shutdown::Shutdown;
use crate::telemetry::log::LogHandle;

pub use link::{ErrorKind, Link, ERROR_KINDS};

/// Most failed tokens waiting to be counted in Redis; past it they are counted locally only.
pub const FAILURE_QUEUE: usize = 10_000;

/// A replica seen alive through its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replica {
    /// Its `[cluster] name`.
    pub name: String,
    /// Unix ms of its last heartbeat.
    pub seen_ms: i64,
}

/// A change of a ban waiting to be written to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write (or replace) this ban.
    Ban(Ban),
    /// Lift the ban of this network.
    Unban(IpNet),
}

/// The cluster state of one replica.
pub struct Cluster {
    /// `[cluster]` as it was at start (a change applies on restart).
    pub settings: ClusterConfig,
    /// The connection.
    pub link: Arc<Link>,
    /// Ban changes not yet written, the last one per network.
    outbox: Mutex<HashMap<IpNet, Op>>,
    wake_writer: Notify,
    /// Asks for a full sync now (after a (re)subscription).
    resync: Notify,
    /// Bumped whenever bans change through the cluster (written or heard), so a full sync
    /// that raced with such a change does not lift what it did not see.
    generation: AtomicU64,
    replicas: Mutex<Vec<Replica>>,
    failures: mpsc::Sender<failures::Failed>,
    failures_rx: Mutex<Option<mpsc::Receiver<failures::Failed>>>,
    /// Failed tokens dropped because the queue was full.
    pub failures_dropped: AtomicU64,
    /// The time, for leases and heartbeats.
    clock: SharedClock,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.settings.name)
            .field("link", &self.link)
            .finish()
    }
}

impl Cluster {
    /// The cluster state for `settings`; nothing connects until [`start`] runs its tasks.
    pub fn new(
        settings: ClusterConfig,
        log: LogHandle,
        clock: SharedClock,
    ) -> Result<Cluster, redis::RedisError> {
        let client = redis::Client::open(settings.redis.as_str())?;
        let link = Arc::new(Link::new(
            client,
            settings.redis_shown(),
            log,
            clock.clone(),
        ));
        let (tx, rx) = mpsc::channel(FAILURE_QUEUE);
        Ok(Cluster {
            settings,
            link,
            outbox: Mutex::new(HashMap::new()),
            wake_writer: Notify::new(),
            resync: Notify::new(),
            generation: AtomicU64::new(0),
            replicas: Mutex::new(Vec::new()),
            failures: tx,
            failures_rx: Mutex::new(Some(rx)),
            failures_dropped: AtomicU64::new(0),
            clock,
        })
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().unix_ms()
    }

    /// The Redis key `<prefix>:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.settings.key_prefix)
    }

    /// The digest of a join token as Redis stores it (never the token itself).
    pub fn token_digest(&self, token: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.settings.key_prefix.as_bytes());
        h.update([0u8]);
        h.update(token.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// Queues a ban made on this replica for every other one.
    pub fn announce_ban(&self, ban: &Ban) {
        self.queue(ban.net, Op::Ban(ban.clone()));
    }

    /// Queues the lifting of a ban for every other replica.
    pub fn announce_unban(&self, net: IpNet) {
        self.queue(net, Op::Unban(net));
    }

    fn queue(&self, net: IpNet, op: Op) {
        self.outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(net, op);
        self.wake_writer.notify_one();
    }

    /// The replicas alive at the last heartbeat.
    pub fn replicas(&self) -> Vec<Replica> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cluster part of `/admin/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let errors = self.link.errors();
        serde_json::json!({
            "name": self.settings.name,
            "redis": self.settings.redis_shown(),
            "state": if self.link.is_up() { "connected" } else { "fallback" },
            "since": crate::clock::rfc3339(self.link.since_ms().div_euclid(1000)),
            "replicas": self.replicas(),
            "errors": ERROR_KINDS.iter().zip(errors).map(|(k, n)| (k.to_string(), serde_json::Value::from(n))).collect::<serde_json::Map<_, _>>(),
            "pending_ban_writes": self.outbox.lock().unwrap_or_else(PoisonError::into_inner).len(),
            "failed_tokens_dropped": self.failures_dropped.load(Ordering::Relaxed),
        })
    }
}

/// The guessing rules in force, as the cluster's shared count needs them.
#[derive(Debug, Clone)]
pub struct GuessingRules {
    /// `[enumeration]`'s thresholds, window and ban lengths.
    pub settings: EnumerationSettings,
    /// `[client] ipv6_prefix`: how IPv6 clients are grouped.
    pub ipv6_prefix: u8,
}

/// What the cluster asks of the rest of the shield: the guessing rules in force, and where the
/// offences the shared count finds are reported (the shield bans them as its own count's).
pub trait Guessing: Send + Sync {
    /// The rules in force; `None` while guessing detection is off.
    fn rules(&self) -> Option<GuessingRules>;

    /// Reports that `offence` reached its threshold in the shared count at `now_unix`.
    fn offence(&self, offence: &Offence, rules: &GuessingRules, now_unix: i64);
}

/// What the cluster's tasks hold: the cluster, the ban table, the log, the clock, and the
/// [`Guessing`] callback.
#[derive(Clone)]
pub struct Parts {
    /// The cluster state.
    pub cluster: Arc<Cluster>,
    /// The ban table, adopted into and read for the full sync.
    pub bans: Arc<Bans>,
    /// The log.
    pub log: LogHandle,
    /// The incident's record: bans adopted from and lifted by other replicas.
    pub timeline: std::sync::Arc<crate::telemetry::timeline::Timeline>,
    /// The guessing rules and the offence callback.
    pub guessing: Arc<dyn Guessing>,
}

impl Parts {
    /// How long an adopted automatic ban's offence history is kept past its end (the doubling
    /// of a repeat offender's ban): the `max_ban` in force, or a day.
    pub(crate) fn forget_after(&self) -> std::time::Duration {
        self.guessing
            .rules()
            .map_or(std::time::Duration::from_secs(86_400), |r| {
                r.settings.max_ban
            })
    }

    pub(crate) fn now_unix(&self) -> i64 {
        self.cluster.clock.now().unix()
    }
}

/// Starts the cluster's tasks (link supervisor, ban writer and sync, pub/sub listener, failed
/// token counter); they end when `shutdown` is requested.
pub fn start(parts: Parts, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
    let cluster = parts.cluster.clone();
    let health = cluster.settings.sync_interval;
    let mut tasks = vec![tokio::spawn(
        cluster.link.clone().supervise(health, shutdown.clone()),
    )];
    tasks.push(tokio::spawn(sync::run(parts.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(sync::listen(parts.clone(), shutdown.clone())));
    let rx = cluster
        .failures_rx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(rx) = rx {
        tasks.push(tokio::spawn(failures::run(parts, rx, shutdown.clone())));
    }
    tasks
}
