//! The connection to Redis and whether to trust it: one multiplexed connection shared by every
//! task and request, a supervisor that (re)connects with backoff, and the fallback switch.
//!
//! **Up or fallback.** The request path asks [`Link::conn`]: one atomic load, and `None` while
//! the link is in fallback, so a request never waits on a Redis that is known to be gone. A
//! connection error drops the connection and turns fallback on at once. Timeouts do when they
//! come [`TIMEOUTS_IN_A_ROW`] in a row and nothing has answered for [`SILENCE`] (a busy host
//! answers some requests late and others in time: that is not an outage, and the late ones are
//! decided locally anyway; a hung Redis answers nothing). Fallback means: one WARNING per outage, the
//! `joinshield_cluster_fallback` gauge at 1. The supervisor then reconnects with exponential
//! backoff (100 ms doubling to 5 s); when Redis answers again the link is up, one NOTICE says so,
//! and the bans are re-synced in both directions ([`super::sync`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use tokio::sync::{watch, Notify};

use crate::clock::SharedClock;
use crate::shutdown::Shutdown;
use crate::telemetry::log::{Level, LogHandle, Record};

/// Timeouts in a row that count as an outage (when Redis was also silent for [`SILENCE`]).
pub const TIMEOUTS_IN_A_ROW: u32 = 3;

/// How long without any answer from Redis makes timeouts an outage.
pub const SILENCE: Duration = Duration::from_millis(100);

/// How long background work (sync, heartbeat, ban writes) may wait on Redis: not a guest's
/// wait, so it can be generous.
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// First and longest pause between reconnection attempts.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What went wrong talking to Redis (the `kind` label of `joinshield_cluster_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// Redis answered with an error or something unexpected.
    Reply,
}

/// The labels of [`ErrorKind`], in order.
pub const ERROR_KINDS: [&str; 3] = ["timeout", "connection", "reply"];

impl ErrorKind {
    fn index(self) -> usize {
        match self {
            ErrorKind::Timeout => 0,
            ErrorKind::Connection => 1,
            ErrorKind::Reply => 2,
        }
    }

    /// The kind of a `redis` error.
    pub fn of(e: &redis::RedisError) -> ErrorKind {
        if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            ErrorKind::Connection
        } else {
            ErrorKind::Reply
        }
    }
}

/// The shared connection and its state.
pub struct Link {
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    /// Whether the link was ever up (the first connection is not a recovery).
    ever_up: AtomicBool,
    /// Unix ms when the current state (up or fallback) began.
    since_ms: AtomicI64,
    timeouts: AtomicU32,
    /// Unix ms of the last answer.
    last_ok_ms: AtomicI64,
    errors: [AtomicU64; 3],
    /// Wakes the supervisor when the link breaks.
    broken: Notify,
    /// `true` while up; tasks wait on it.
    state: watch::Sender<bool>,
    log: LogHandle,
    clock: SharedClock,
    shown: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("redis", &self.shown)
            .field("up", &self.is_up())
            .finish()
    }
}

impl Link {
    /// A link to `client` that is not connected yet (fallback until the supervisor connects).
    pub fn new(client: redis::Client, shown: String, log: LogHandle, clock: SharedClock) -> Link {
        let now_ms = clock.now().unix_ms();
        Link {
            client,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            since_ms: AtomicI64::new(now_ms),
            timeouts: AtomicU32::new(0),
            last_ok_ms: AtomicI64::new(0),
            errors: Default::default(),
            broken: Notify::new(),
            state: watch::Sender::new(false),
            log,
            clock,
            shown,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().unix_ms()
    }

    /// Whether Redis is trusted now (`false`: fallback to local state).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The connection, while the link is up.
    pub fn conn(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Unix ms when the current state began.
    pub fn since_ms(&self) -> i64 {
        self.since_ms.load(Ordering::Relaxed)
    }

    /// Errors so far, by [`ERROR_KINDS`].
    pub fn errors(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed))
    }

    /// A receiver of the up/down state (for tasks that only work while up).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Notes a successful exchange.
    pub fn succeeded(&self) {
        if self.timeouts.load(Ordering::Relaxed) != 0 {
            self.timeouts.store(0, Ordering::Relaxed);
        }
        let now = self.now_ms();
        if self.last_ok_ms.load(Ordering::Relaxed) != now {
            self.last_ok_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Notes a failed exchange; a connection error or enough timeouts in a row turn fallback on.
    pub fn failed(&self, kind: ErrorKind, what: &str) {
        self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        let outage = match kind {
            ErrorKind::Timeout => {
                let silent = self.now_ms() - self.last_ok_ms.load(Ordering::Relaxed)
                    >= i64::try_from(SILENCE.as_millis()).unwrap_or(100);
                self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_IN_A_ROW && silent
            }
            ErrorKind::Connection => true,
            ErrorKind::Reply => false,
        };
        if outage {
            self.go_down(kind, what);
        }
    }

    fn go_down(&self, kind: ErrorKind, what: &str) {
        if !self.up.swap(false, Ordering::AcqRel) {
            return;
        }
        self.conn.store(None);
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.state.send_replace(false);
        self.log.log(
            Record::new(Level::Warning, "Cluster link lost, deciding on local state")
                .with("redis", self.shown.as_str())
                .with("error", ERROR_KINDS[kind.index()])
                .with("during", what),
        );
        self.broken.notify_one();
    }

    fn go_up(&self, conn: MultiplexedConnection) {
        self.timeouts.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(self.now_ms(), Ordering::Relaxed);
        self.conn.store(Some(Arc::new(conn)));
        let down_ms = self.now_ms() - self.since_ms();
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.up.store(true, Ordering::Release);
        self.state.send_replace(true);
        let recovery = self.ever_up.swap(true, Ordering::AcqRel);
        let record = if recovery {
            Record::new(Level::Notice, "Cluster link restored, re-syncing")
                .with("down_seconds", (down_ms.max(0) / 1000) as u64)
        } else {
            Record::new(Level::Notice, "Cluster link up")
        };
        self.log.log(record.with("redis", self.shown.as_str()));
    }

    /// Opens a fresh connection (bounded by [`BACKGROUND_TIMEOUT`]) and checks it answers.
    async fn connect(&self) -> Result<MultiplexedConnection, ErrorKind> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(BACKGROUND_TIMEOUT)
            .set_response_timeout(BACKGROUND_TIMEOUT);
        let attempt = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(BACKGROUND_TIMEOUT * 2, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(ErrorKind::of(&e)),
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    /// A separate connection for pub/sub.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, ErrorKind> {
        match tokio::time::timeout(BACKGROUND_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(ErrorKind::of(&e)),
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    /// Runs `op` on the connection within `timeout`, noting success or failure. `None` when the
    /// link is down, the op failed or took too long.
    pub async fn run<T, F, Fut>(&self, timeout: Duration, what: &str, op: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn()?;
        match tokio::time::timeout(timeout, op(conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(ErrorKind::of(&e), what);
                None
            }
            Err(_) => {
                self.failed(ErrorKind::Timeout, what);
                None
            }
        }
    }

    /// Keeps the link up until `stop`: connects with backoff while down; while up, checks the
    /// connection every `health` (a PING) and as soon as a request reports it broken.
    pub async fn supervise(self: Arc<Self>, health: Duration, stop: Shutdown) {
        let mut backoff = BACKOFF.0;
        let mut warned_down = false;
        loop {
            if self.is_up() {
                tokio::select! {
                    _ = self.broken.notified() => continue,
                    _ = tokio::time::sleep(health) => {}
                    _ = stop.requested() => return,
                }
                let ping = self
                    .run(BACKGROUND_TIMEOUT, "health check", |mut c| async move {
                        redis::cmd("PING").query_async::<String>(&mut c).await
                    })
                    .await;
                if ping.is_none() && self.is_up() {
                    // A PING that waited a whole second is an outage, not a slow answer.
                    self.go_down(ErrorKind::Timeout, "health check");
                }
                continue;
            }
            match self.connect().await {
                Ok(conn) => {
                    backoff = BACKOFF.0;
                    warned_down = false;
                    self.go_up(conn);
                }
                Err(kind) => {
                    self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
                    if !warned_down && !self.ever_up.load(Ordering::Acquire) {
                        warned_down = true;
                        self.log.log(
                            Record::new(
                                Level::Warning,
                                "Cluster link down, deciding on local state",
                            )
                            .with("redis", self.shown.as_str())
                            .with("error", ERROR_KINDS[kind.index()]),
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.requested() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }
}
