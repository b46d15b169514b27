//! The validated configuration: the types a [`Config`] is made of, each value in its real type
//! (addresses, durations, rates, networks, regexes, zones), every default filled in. Built by
//! [`super::validate`] from the file as written ([`super::file`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::policy::classify::RouteSpec;
use crate::policy::guessing::EnumerationSettings;
use crate::policy::limits::{KeyKind, Mode};
use crate::policy::tokens::TokenFolding;
use crate::telemetry::log::LogConfig;
use crate::units::Rate;
use std::num::NonZeroU32;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[client]`
    pub client: ClientConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[[route]]`, in order.
    pub routes: Vec<RouteSpec>,
    /// `[[limit]]`, in order.
    pub limits: Vec<LimitSpec>,
    /// `[lists]`: the files, resolved beside the configuration file.
    pub lists: ListPaths,
    /// `[[switch]]`, in order.
    pub switches: Vec<SwitchSpec>,
    /// `[enumeration]`, when token-guessing bans are on.
    pub enumeration: Option<EnumerationSpec>,
    /// `[alerts]`, when a webhook is set.
    pub alerts: Option<AlertsSpec>,
    /// `[cluster]`, when several replicas share bans, guessing counts and shared limits.
    pub cluster: Option<ClusterConfig>,
    /// `[tokens]`: how join tokens compare.
    pub tokens: TokenFolding,
}

/// The validated `[alerts]` (only when `webhook` is set: an empty one turns alerts off).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsSpec {
    /// Where alerts are POSTed.
    pub webhook: Webhook,
    /// Alert when at least this share (0 to 1) of forwarded guest requests failed over a minute.
    pub error_rate: f64,
    /// Alert when 429/403 denials exceed this many per minute.
    pub denials_per_minute: u64,
    /// The rate as written (for messages).
    pub denial_rate: Rate,
    /// At most one alert of a kind per this.
    pub cooldown: Duration,
    /// A webhook that has not answered within this is given up on.
    pub timeout: Duration,
}

/// A webhook URL: plain `http://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written.
    pub url: String,
    /// `host:port`, to connect to.
    pub authority: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

/// The validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL, as written (it may carry a password: never log it whole).
    pub redis: String,
    /// This replica's name (in heartbeats and on the bans it makes).
    pub name: String,
    /// The longest a request waits on Redis; past it, local state decides.
    pub timeout: Duration,
    /// How often bans are fully re-read and the heartbeat written.
    pub sync_interval: Duration,
    /// Tokens of a shared limit taken from Redis per round trip.
    pub lease: u32,
    /// Prefix of every Redis key and channel (several deployments may share one Redis).
    pub key_prefix: String,
}

impl ClusterConfig {
    /// The Redis URL with any password replaced by `***` (for logs and status).
    pub fn redis_shown(&self) -> String {
        match (self.redis.find("://"), self.redis.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.redis[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!(
                    "{}{user}:***{}",
                    &self.redis[..scheme + 3],
                    &self.redis[at..]
                )
            }
            _ => self.redis.clone(),
        }
    }
}

/// The default replica name: the host's name, else `shield`.
pub fn default_replica_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| valid_replica_name(h))
        .unwrap_or_else(|| "shield".to_string())
}

/// Replica names: letters, digits, `_`, `-` and `.` (host names), at most 64.
pub fn valid_replica_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `[lists]`: where each list lives (none: that list is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPaths {
    /// Refused with 403 on every path.
    pub blocklist: Option<PathBuf>,
    /// Exempt from limits and automatic bans.
    pub allowlist: Option<PathBuf>,
    /// Answered 410 at the edge.
    pub revoked_tokens: Option<PathBuf>,
}

/// One validated `[[switch]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSpec {
    /// Its name (in the answer and the log).
    pub name: String,
    /// Indices of the route classes it pauses.
    pub classes: Vec<usize>,
    /// Whether it is on.
    pub paused: bool,
    /// The sentence guests get.
    pub message: String,
    /// Unix seconds after which it no longer applies.
    pub until: Option<i64>,
    /// The `Retry-After` of its answer (when no `until` is closer).
    pub retry_after: Duration,
}

/// The validated `[enumeration]`.
#[derive(Debug, Clone)]
pub struct EnumerationSpec {
    /// Statuses, thresholds, window and ban lengths.
    pub settings: EnumerationSettings,
    /// The pattern of a well-formed token, as written.
    pub token_pattern_text: String,
    /// The compiled pattern.
    pub token_pattern: regex::Regex,
}

impl PartialEq for EnumerationSpec {
    fn eq(&self, o: &Self) -> bool {
        self.settings == o.settings && self.token_pattern_text == o.token_pattern_text
    }
}

/// One validated `[[limit]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpec {
    /// Its name.
    pub name: String,
    /// Indices of the route classes it applies to.
    pub classes: Vec<usize>,
    /// What it counts by.
    pub key: KeyKind,
    /// Sustained rate.
    pub rate: Rate,
    /// Burst.
    pub burst: NonZeroU32,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Unix seconds after which it no longer applies.
    pub until: Option<i64>,
    /// Most keys tracked at once.
    pub max_keys: usize,
    /// Enforced across every replica through `[cluster]` (else per replica).
    pub shared: bool,
}

/// Default cap on the keys one limit tracks (about 100 bytes each).
pub const DEFAULT_MAX_KEYS: usize = 200_000;

/// Default of `server.body_timeout` (nginx's `client_body_timeout` is 60s; the shield's
/// `upstream_timeout` is 60s, so a stalled body is named before the app is blamed).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest `server.max_connections` accepted.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;
/// Default of `server.max_connections_per_ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where guests connect.
    pub listen: SocketAddr,
    /// The app.
    pub upstream: Upstream,
    /// A request head must arrive within this.
    pub header_timeout: Duration,
    /// The upstream must send its response head within this.
    pub upstream_timeout: Duration,
    /// Larger request bodies are answered 413.
    pub max_body: u64,
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// The longest a body may stall: a request body the shield waits on, or an answer the
    /// client takes no byte of.
    pub body_timeout: Duration,
    /// Most guest connections open at once; at it, the longest idle one is closed to make room
    /// for a new one, and with none idle the new one is closed at once.
    pub max_connections: usize,
    /// Most guest connections one client (TCP peer; IPv6 per `ipv6_prefix`) has open at once;
    /// past it a new one is closed at once. Trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// Where bans are kept across restarts.
    pub state_file: PathBuf,
    /// HTTPS, when `tls_listen` is set.
    pub tls: Option<TlsConfig>,
    /// The plain listener answers every request with 308 to the https URL.
    pub redirect_https: bool,
    /// `Strict-Transport-Security` sent on HTTPS responses, when set.
    pub hsts: Option<http::HeaderValue>,
}

/// `[server]` `tls_*`: the HTTPS listener and its certificate pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where guests connect over HTTPS.
    pub listen: SocketAddr,
    /// The PEM certificate chain (the server's certificate first).
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// A handshake must finish within this after the connection is accepted.
    pub handshake_timeout: Duration,
}

/// The upstream app's address: plain HTTP only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port`, as written (normalised, no path).
    pub uri: http::Uri,
    /// `host:port`, for connecting and readiness checks.
    pub authority: String,
}

/// `[client]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Peers allowed to name the client in `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are one client per network of this length.
    pub ipv6_prefix: u8,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin listener.
    pub listen: SocketAddr,
    /// The environment variable holding the bearer token.
    pub token_env: String,
}

/// One mistake in the configuration: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// The TOML path of the key (`server.listen`, `route[2].paths`).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A `[[limit]]` or `[[switch]]`: named, and temporary when it has an `until`. A temporary
/// entry with the name of a permanent one stands in for it until then; after it, the permanent
/// one applies again (its limiter state kept all along). A name may be used once permanent
/// and once temporary, never twice of one kind.
pub trait Temporary {
    /// Its name.
    fn name(&self) -> &str;
    /// Unix seconds after which it no longer applies (`None`: permanent).
    fn until(&self) -> Option<i64>;
}

impl Temporary for LimitSpec {
    fn name(&self) -> &str {
        &self.name
    }
    fn until(&self) -> Option<i64> {
        self.until
    }
}

impl Temporary for SwitchSpec {
    fn name(&self) -> &str {
        &self.name
    }
    fn until(&self) -> Option<i64> {
        self.until
    }
}

/// The index of the temporary entry standing in for the permanent `list[i]`, if any.
pub fn stand_in_of<T: Temporary>(list: &[T], i: usize) -> Option<usize> {
    let entry = list.get(i)?;
    if entry.until().is_some() {
        return None;
    }
    list.iter()
        .position(|t| t.name() == entry.name() && t.until().is_some())
}

/// The index of the permanent entry the temporary `list[i]` stands in for, if any.
pub fn stands_in_for<T: Temporary>(list: &[T], i: usize) -> Option<usize> {
    let entry = list.get(i)?;
    entry.until()?;
    list.iter()
        .position(|p| p.name() == entry.name() && p.until().is_none())
}

/// Whether `list[i]` is in force at `now_unix`: a temporary entry until its `until`, a
/// permanent one unless a temporary one stands in for it now.
pub fn in_force<T: Temporary>(list: &[T], i: usize, now_unix: i64) -> bool {
    let Some(entry) = list.get(i) else {
        return false;
    };
    match entry.until() {
        Some(until) => now_unix < until,
        None => stand_in_of(list, i)
            .and_then(|t| list[t].until())
            .is_none_or(|until| now_unix >= until),
    }
}

/// The order in which the request path checks `list`: the file's order, with each temporary
/// stand-in moved to just before the permanent entry it stands in for (so a tightened limit
/// is checked where the limit it replaces was).
pub fn checking_order<T: Temporary>(list: &[T]) -> Vec<usize> {
    let mut order = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        if stands_in_for(list, i).is_some() {
            continue;
        }
        if let Some(t) = stand_in_of(list, i) {
            order.push(t);
        }
        order.push(i);
    }
    order
}
