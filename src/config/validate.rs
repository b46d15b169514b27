//! From the file as written ([`FileConfig`]) to a [`Config`] the shield can run: every value
//! parsed into its real type, defaults filled in, and every mistake collected (never only the
//! first), each with its key, the bad value and the fix. Nothing is clamped silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{Field, FileConfig, Unknown};
use super::schema::*;
use crate::policy::classify::RouteSpec;
use crate::policy::guessing::{EnumerationSettings, MAX_DISTINCT};
use crate::policy::limits::{KeyKind, Mode};
use crate::policy::tokens::TokenFolding;
use crate::telemetry::access::AccessFormat;
use crate::telemetry::log::{Format, LogConfig};
use crate::units::{parse_duration, parse_instant, parse_rate, parse_size, Rate};
use std::num::NonZeroU32;

/// Collects mistakes while validating; lines are filled in afterwards from the source.
#[derive(Default)]
pub(crate) struct Errors {
    pub(crate) list: Vec<(String, String)>,
}

impl Errors {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push((key.into(), message.into()));
    }

    /// Reports every unknown key of a table.
    pub(crate) fn unknown(&mut self, table: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let path = if table.is_empty() {
                key.clone()
            } else {
                format!("{table}.{key}")
            };
            self.push(
                path,
                format!(
                    "unknown key {key:?}: a typo here would silently disable a protection; known keys are {}",
                    known.join(", ")
                ),
            );
        }
    }

    /// The value of an optional field, or `default` when left out; a wrong type is an error.
    pub(crate) fn get<T: Clone>(
        &mut self,
        key: &str,
        field: &Option<Field<T>>,
        default: T,
    ) -> Option<T> {
        match field {
            None => Some(default),
            Some(Field(Ok(v))) => Some(v.clone()),
            Some(Field(Err(e))) => {
                self.push(key, e.clone());
                None
            }
        }
    }

    /// Parses a string field with `parse`, or takes `default` when left out.
    pub(crate) fn parsed<T>(
        &mut self,
        key: &str,
        field: &Option<Field<String>>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match field {
            None => Some(default),
            Some(Field(Ok(text))) => match parse(text) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.push(key, e);
                    None
                }
            },
            Some(Field(Err(e))) => {
                self.push(key, e.clone());
                None
            }
        }
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not an address and port: write e.g. \"0.0.0.0:8080\" or \"[::]:8080\"")
    })
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!(
            "{text:?} is zero: give a positive duration such as \"10s\""
        ));
    }
    Ok(d)
}

/// Parses `http://host:port` (no path, no query); https upstreams are not supported.
pub fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: http::Uri = text.parse().map_err(|e| {
        format!("{text:?} is not a URL ({e}): write e.g. \"http://127.0.0.1:8000\"")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?} uses https: the shield talks plain HTTP to the app on a private network; write \"http://…\""
            ))
        }
        _ => return Err(format!("{text:?} needs the scheme: write e.g. \"http://127.0.0.1:8000\"")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host: write e.g. \"http://127.0.0.1:8000\""))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{text:?} has a path or query: the upstream is a host and port only, e.g. \"http://127.0.0.1:8000\""
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let authority = format!("{}:{port}", authority.host());
    let uri = format!("http://{authority}")
        .parse()
        .map_err(|e| format!("{text:?} is not a usable URL ({e})"))?;
    Ok(Upstream { uri, authority })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        let net = crate::policy::client_ip::canonical_net(net);
        if net != net.trunc() {
            return Err(format!(
                "{text:?} has host bits set: write the network, {}",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| crate::policy::client_ip::canonical_net(IpNet::from(ip)))
        .map_err(|_| {
            format!(
                "{text:?} is not an IP address or CIDR: write e.g. \"10.0.0.0/8\" or \"::1/128\""
            )
        })
}

/// Validates a parsed file; `base` is the folder relative paths are resolved against.
pub(crate) fn validate(file: &FileConfig, base: &Path, errors: &mut Errors) -> Option<Config> {
    errors.unknown(
        "",
        &file.unknown,
        &[
            "server",
            "client",
            "admin",
            "log",
            "route",
            "limit",
            "lists",
            "switch",
            "enumeration",
            "alerts",
            "cluster",
            "tokens",
        ],
    );

    let server = validate_server(file.server.as_ref(), base, errors);
    let client = validate_client(file.client.as_ref(), errors);
    let admin = validate_admin(file.admin.as_ref(), errors);
    let log = validate_log(file.log.as_ref(), base, errors);

    let routes = match &file.route {
        None => Some(crate::policy::classify::default_specs()),
        Some(list) => validate_routes(list, errors),
    };

    let cluster = match &file.cluster {
        None => Some(None),
        Some(c) => validate_cluster(c, errors).map(Some),
    };
    let limits = match (&file.limit, &routes) {
        (None, _) => Some(Vec::new()),
        (Some(list), Some(routes)) => validate_limits(list, routes, file.cluster.is_some(), errors),
        (Some(_), None) => None,
    };

    let lists = validate_lists(file.lists.as_ref(), base, errors);
    let switches = match (&file.switch, &routes) {
        (None, _) => Some(Vec::new()),
        (Some(list), Some(routes)) => validate_switches(list, routes, errors),
        (Some(_), None) => None,
    };
    let enumeration = match &file.enumeration {
        None => Some(None),
        Some(e) => validate_enumeration(e, errors).map(Some),
    };
    let alerts = match &file.alerts {
        None => Some(None),
        Some(a) => validate_alerts(a, errors),
    };
    let tokens = validate_tokens(file.tokens.as_ref(), errors);

    Some(Config {
        server: server?,
        client: client?,
        admin: admin?,
        log: log?,
        routes: routes?,
        limits: limits?,
        lists: lists?,
        switches: switches?,
        enumeration: enumeration?,
        alerts: alerts?,
        cluster: cluster?,
        tokens: tokens?,
    })
}

/// `[tokens]`: whether join tokens that differ only in letter case or trailing whitespace are
/// one token (`case_sensitive = false`, the default).
pub(crate) fn validate_tokens(
    t: Option<&super::file::FileTokens>,
    errors: &mut Errors,
) -> Option<TokenFolding> {
    let Some(t) = t else {
        return Some(TokenFolding::default());
    };
    errors.unknown("tokens", &t.unknown, &["case_sensitive"]);
    let case_sensitive = errors.get(
        "tokens.case_sensitive",
        &t.case_sensitive,
        TokenFolding::default().case_sensitive,
    )?;
    Some(TokenFolding { case_sensitive })
}

/// `[server]`: listeners, the upstream, timeouts, limits on size and connections, TLS.
fn validate_server(
    s: Option<&super::file::FileServer>,
    base: &Path,
    errors: &mut Errors,
) -> Option<ServerConfig> {
    if let Some(s) = s {
        errors.unknown(
            "server",
            &s.unknown,
            &[
                "listen",
                "upstream",
                "header_timeout",
                "upstream_timeout",
                "max_body",
                "shutdown_grace",
                "state_file",
                "tls_listen",
                "tls_cert",
                "tls_key",
                "tls_handshake_timeout",
                "redirect_https",
                "hsts",
                "body_timeout",
                "max_connections",
                "max_connections_per_ip",
            ],
        );
    }
    let listen = errors.parsed(
        "server.listen",
        &s.and_then(|s| s.listen.clone()),
        SocketAddr::from(([0, 0, 0, 0], 8080)),
        parse_socket_addr,
    );
    let upstream = match s.and_then(|s| s.upstream.clone()) {
        None => {
            errors.push(
                "server.upstream",
                "missing: the shield needs the app's address; add upstream = \"http://127.0.0.1:8000\" under [server]",
            );
            None
        }
        field => errors
            .parsed("server.upstream", &field, None, |t| {
                parse_upstream(t).map(Some)
            })
            .flatten(),
    };
    let header_timeout = errors.parsed(
        "server.header_timeout",
        &s.and_then(|s| s.header_timeout.clone()),
        Duration::from_secs(10),
        parse_positive_duration,
    );
    let upstream_timeout = errors.parsed(
        "server.upstream_timeout",
        &s.and_then(|s| s.upstream_timeout.clone()),
        Duration::from_secs(60),
        parse_positive_duration,
    );
    let max_body = errors.parsed(
        "server.max_body",
        &s.and_then(|s| s.max_body.clone()),
        64 << 20,
        parse_size,
    );
    let shutdown_grace = errors.parsed(
        "server.shutdown_grace",
        &s.and_then(|s| s.shutdown_grace.clone()),
        Duration::from_secs(30),
        parse_duration,
    );

    let body_timeout = errors.parsed(
        "server.body_timeout",
        &s.and_then(|s| s.body_timeout.clone()),
        DEFAULT_BODY_TIMEOUT,
        parse_positive_duration,
    );
    let max_connections = errors
        .get(
            "server.max_connections",
            &s.and_then(|s| s.max_connections.clone()),
            DEFAULT_MAX_CONNECTIONS as i64,
        )
        .and_then(|n| match usize::try_from(n) {
            Ok(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => Some(n),
            _ => {
                errors.push(
                    "server.max_connections",
                    format!(
                        "{n} is out of range: allow 1 to {MAX_CONNECTIONS_CEILING} connections, and keep it below the process's open-file limit (ulimit -n) less the app connections"
                    ),
                );
                None
            }
        });
    let max_connections_per_ip = errors
        .get(
            "server.max_connections_per_ip",
            &s.and_then(|s| s.max_connections_per_ip.clone()),
            DEFAULT_MAX_CONNECTIONS_PER_IP as i64,
        )
        .and_then(|n| match usize::try_from(n) {
            Ok(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => Some(n),
            _ => {
                errors.push(
                    "server.max_connections_per_ip",
                    format!(
                        "{n} is out of range: allow 1 to {MAX_CONNECTIONS_CEILING} connections per client (a browser opens about 6 per site; clients behind one NAT share the count)"
                    ),
                );
                None
            }
        });

    let state_file = errors
        .get(
            "server.state_file",
            &s.and_then(|s| s.state_file.clone()),
            "joinshield-state.json".to_string(),
        )
        .map(|f| base.join(f));

    let tls = validate_tls(s, base, listen, errors);
    let redirect_https = errors.get(
        "server.redirect_https",
        &s.and_then(|s| s.redirect_https.clone()),
        false,
    );
    let hsts = errors.parsed(
        "server.hsts",
        &s.and_then(|s| s.hsts.clone()),
        None,
        parse_hsts,
    );
    if matches!(tls, Some(None)) {
        if redirect_https == Some(true) {
            errors.push(
                "server.redirect_https",
                "redirects to https need the HTTPS listener: set tls_listen, tls_cert and tls_key, or remove redirect_https",
            );
        }
        if matches!(hsts, Some(Some(_))) {
            errors.push(
                "server.hsts",
                "Strict-Transport-Security is sent on HTTPS answers only: set tls_listen, tls_cert and tls_key, or remove hsts",
            );
        }
    }

    Some(ServerConfig {
        listen: listen?,
        upstream: upstream?,
        header_timeout: header_timeout?,
        upstream_timeout: upstream_timeout?,
        max_body: max_body?,
        shutdown_grace: shutdown_grace?,
        body_timeout: body_timeout?,
        max_connections: max_connections?,
        max_connections_per_ip: max_connections_per_ip?,
        state_file: state_file?,
        tls: tls?,
        redirect_https: redirect_https?,
        hsts: hsts?,
    })
}

/// `[client]`: who may name the client, and how IPv6 clients are grouped.
fn validate_client(
    c: Option<&super::file::FileClient>,
    errors: &mut Errors,
) -> Option<ClientConfig> {
    if let Some(c) = c {
        errors.unknown("client", &c.unknown, &["trusted_proxies", "ipv6_prefix"]);
    }
    let trusted_proxies = errors
        .get(
            "client.trusted_proxies",
            &c.and_then(|c| c.trusted_proxies.clone()),
            vec!["127.0.0.1/32".into(), "::1/128".into()],
        )
        .map(|list| {
            let mut nets = Vec::new();
            for (i, text) in list.iter().enumerate() {
                match parse_cidr(text) {
                    Ok(net) => nets.push(net),
                    Err(e) => errors.push(format!("client.trusted_proxies[{i}]"), e),
                }
            }
            nets
        });
    let ipv6_prefix = errors
        .get(
            "client.ipv6_prefix",
            &c.and_then(|c| c.ipv6_prefix.clone()),
            64,
        )
        .and_then(|p| match u8::try_from(p) {
            Ok(p) if (1..=128).contains(&p) => Some(p),
            _ => {
                errors.push(
                    "client.ipv6_prefix",
                    format!(
                        "{p} is not a prefix length: give 1 to 128 (64 is one household or phone)"
                    ),
                );
                None
            }
        });

    Some(ClientConfig {
        trusted_proxies: trusted_proxies?,
        ipv6_prefix: ipv6_prefix?,
    })
}

/// `[admin]`: its listener and the variable holding its token.
pub(crate) fn validate_admin(
    a: Option<&super::file::FileAdmin>,
    errors: &mut Errors,
) -> Option<AdminConfig> {
    if let Some(a) = a {
        errors.unknown("admin", &a.unknown, &["listen", "token_env"]);
    }
    let admin_listen = errors.parsed(
        "admin.listen",
        &a.and_then(|a| a.listen.clone()),
        SocketAddr::from(([127, 0, 0, 1], 9901)),
        parse_socket_addr,
    );
    let token_env = errors.get(
        "admin.token_env",
        &a.and_then(|a| a.token_env.clone()),
        "JOINSHIELD_ADMIN_TOKEN".to_string(),
    );

    Some(AdminConfig {
        listen: admin_listen?,
        token_env: token_env?,
    })
}

/// `[log]`: where, in which format, channel and zone, and how much of a token to show.
fn validate_log(
    l: Option<&super::file::FileLog>,
    base: &Path,
    errors: &mut Errors,
) -> Option<LogConfig> {
    if let Some(l) = l {
        errors.unknown(
            "log",
            &l.unknown,
            &[
                "file",
                "format",
                "channel",
                "timezone",
                "token_preview",
                "access",
                "access_file",
            ],
        );
    }
    let resolve = |f: String| {
        if f == "-" {
            f
        } else {
            base.join(f).to_string_lossy().into_owned()
        }
    };
    let log_file = errors
        .get("log.file", &l.and_then(|l| l.file.clone()), "-".to_string())
        .map(resolve);
    let access = errors.parsed(
        "log.access",
        &l.and_then(|l| l.access.clone()),
        AccessFormat::Off,
        |t| match t {
            "off" => Ok(AccessFormat::Off),
            "json" => Ok(AccessFormat::Json),
            other => Err(format!(
                "{other:?} is not an access log format: write \"off\" or \"json\""
            )),
        },
    );
    let access_file = errors
        .parsed(
            "log.access_file",
            &l.and_then(|l| l.access_file.clone()),
            "-".to_string(),
            |t| {
                if t.trim().is_empty() {
                    Err(
                        "an empty path: write \"-\" for stdout or a file such as \"access.log\""
                            .to_string(),
                    )
                } else {
                    Ok(t.to_string())
                }
            },
        )
        .map(resolve);
    if let (Some(AccessFormat::Json), Some(log), Some(access)) = (&access, &log_file, &access_file)
    {
        if access != "-" && access == log {
            errors.push(
                "log.access_file",
                format!(
                    "{access:?} is also [log] file: the access log needs a file of its own (e.g. \"access.log\"), or \"-\" for stdout"
                ),
            );
        }
    }
    let format = errors.parsed(
        "log.format",
        &l.and_then(|l| l.format.clone()),
        Format::Laravel,
        |t| match t {
            "laravel" => Ok(Format::Laravel),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "{other:?} is not a log format: write \"laravel\" or \"json\""
            )),
        },
    );
    let channel = errors.parsed(
        "log.channel",
        &l.and_then(|l| l.channel.clone()),
        "production".to_string(),
        |t| {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "{t:?} is not a channel word: use e.g. \"production\" (APP_ENV)"
                ))
            } else {
                Ok(t.to_string())
            }
        },
    );
    let timezone = errors.parsed(
        "log.timezone",
        &l.and_then(|l| l.timezone.clone()),
        jiff::tz::TimeZone::UTC,
        |t| {
            jiff::tz::TimeZone::get(t).map_err(|_| {
                format!("{t:?} is not an IANA time zone: write e.g. \"UTC\" or \"Europe/Berlin\"")
            })
        },
    );
    let token_preview = errors
        .get("log.token_preview", &l.and_then(|l| l.token_preview.clone()), 6)
        .and_then(|n| match usize::try_from(n) {
            Ok(n) if n <= 16 => Some(n),
            _ => {
                errors.push(
                    "log.token_preview",
                    format!("{n} is out of range: keep 0 to 16 characters of a token (a whole token must never be logged)"),
                );
                None
            }
        });

    Some(LogConfig {
        file: log_file?,
        format: format?,
        channel: channel?,
        timezone: timezone?,
        token_preview: token_preview?,
        access: access?,
        access_file: access_file?,
    })
}

/// Longest `[cluster] timeout`: a request must never wait on Redis longer than this.
pub const MAX_CLUSTER_TIMEOUT: Duration = Duration::from_secs(1);

fn validate_cluster(c: &super::file::FileCluster, errors: &mut Errors) -> Option<ClusterConfig> {
    errors.unknown(
        "cluster",
        &c.unknown,
        &[
            "redis",
            "name",
            "timeout",
            "sync_interval",
            "lease",
            "key_prefix",
        ],
    );
    let redis = required(
        errors,
        "cluster.redis",
        &c.redis,
        "give the Redis every replica shares, e.g. redis = \"redis://127.0.0.1:6379/0\"",
    )
    .and_then(|url| {
        let fix = "write e.g. \"redis://127.0.0.1:6379/0\" (or redis://:password@host:6379/0)";
        if !url.starts_with("redis://") {
            errors.push(
                "cluster.redis",
                format!("{url:?} is not a redis:// URL: {fix}"),
            );
            return None;
        }
        match redis::Client::open(url.as_str()) {
            Ok(_) => Some(url),
            Err(e) => {
                errors.push(
                    "cluster.redis",
                    format!("{url:?} is not a usable Redis URL ({e}): {fix}"),
                );
                None
            }
        }
    });
    let name = errors
        .get("cluster.name", &c.name, default_replica_name())
        .and_then(|n| {
            if valid_replica_name(&n) {
                Some(n)
            } else {
                errors.push(
                    "cluster.name",
                    format!(
                        "{n:?} is not a replica name: use letters, digits, _, - and . (at most 64)"
                    ),
                );
                None
            }
        });
    let timeout = errors
        .parsed(
            "cluster.timeout",
            &c.timeout,
            Duration::from_millis(5),
            parse_positive_duration,
        )
        .and_then(|t| {
            if t > MAX_CLUSTER_TIMEOUT {
                errors.push(
                    "cluster.timeout",
                    format!(
                        "{} is longer than a guest should wait on Redis: give at most 1s (5ms is typical)",
                        crate::units::format_duration(t)
                    ),
                );
                None
            } else {
                Some(t)
            }
        });
    let sync_interval = errors
        .parsed(
            "cluster.sync_interval",
            &c.sync_interval,
            Duration::from_secs(1),
            parse_positive_duration,
        )
        .and_then(|t| {
            if (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&t) {
                Some(t)
            } else {
                errors.push(
                    "cluster.sync_interval",
                    format!(
                        "{} is out of range: give 100ms to 60s (1s keeps replicas within a second of each other)",
                        crate::units::format_duration(t)
                    ),
                );
                None
            }
        });
    let lease = errors
        .get("cluster.lease", &c.lease, 10)
        .and_then(|n| match u32::try_from(n) {
            Ok(n) if (1..=1000).contains(&n) => Some(n),
            _ => {
                errors.push(
                    "cluster.lease",
                    format!("{n} is out of range: give 1 to 1000 tokens per round trip"),
                );
                None
            }
        });
    let key_prefix = errors
        .get(
            "cluster.key_prefix",
            &c.key_prefix,
            "joinshield".to_string(),
        )
        .and_then(|p| {
            if valid_name(&p) {
                Some(p)
            } else {
                errors.push(
                    "cluster.key_prefix",
                    format!("{p:?} is not a key prefix: use letters, digits, _ and -"),
                );
                None
            }
        });
    Some(ClusterConfig {
        redis: redis?,
        name: name?,
        timeout: timeout?,
        sync_interval: sync_interval?,
        lease: lease?,
        key_prefix: key_prefix?,
    })
}

/// Parses a webhook URL: `http://host[:port]/path`; https is refused with the way around it.
pub fn parse_webhook(text: &str) -> Result<Webhook, String> {
    let uri: http::Uri = text.parse().map_err(|e| {
        format!(
            "{text:?} is not a URL ({e}): write e.g. \"http://alerts-relay:8080/hooks/incident\""
        )
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?} uses https, which this build cannot send to: point webhook at an http:// relay on your network that forwards to Slack (see README \"Alerts\")"
            ))
        }
        _ => {
            return Err(format!(
                "{text:?} needs the scheme: write e.g. \"http://alerts-relay:8080/hooks/incident\""
            ))
        }
    }
    let authority = uri.authority().ok_or_else(|| {
        format!("{text:?} has no host: write e.g. \"http://alerts-relay:8080/hooks/incident\"")
    })?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} carries user information: put the secret in the path, as Slack does"
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    Ok(Webhook {
        url: text.to_string(),
        authority: format!("{}:{port}", authority.host()),
        host: authority.as_str().to_string(),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
    })
}

fn validate_alerts(a: &super::file::FileAlerts, errors: &mut Errors) -> Option<Option<AlertsSpec>> {
    errors.unknown(
        "alerts",
        &a.unknown,
        &[
            "webhook",
            "error_rate",
            "denial_rate",
            "cooldown",
            "timeout",
        ],
    );
    let webhook = errors.parsed("alerts.webhook", &a.webhook, None, |t| {
        if t.is_empty() {
            Ok(None)
        } else {
            parse_webhook(t).map(Some)
        }
    });
    let error_rate = errors
        .get("alerts.error_rate", &a.error_rate, 0.5)
        .and_then(|r| {
            if r > 0.0 && r <= 1.0 {
                Some(r)
            } else {
                errors.push(
                    "alerts.error_rate",
                    format!("{r} is not a share: give more than 0 and at most 1, e.g. 0.5 for half of the guest requests failing"),
                );
                None
            }
        });
    let denial_rate = errors.parsed(
        "alerts.denial_rate",
        &a.denial_rate,
        Rate {
            count: 600,
            per: Duration::from_secs(60),
        },
        parse_rate,
    );
    let cooldown = errors.parsed(
        "alerts.cooldown",
        &a.cooldown,
        Duration::from_secs(600),
        parse_positive_duration,
    );
    let timeout = errors.parsed(
        "alerts.timeout",
        &a.timeout,
        Duration::from_secs(5),
        parse_positive_duration,
    );
    let (webhook, error_rate, denial_rate, cooldown, timeout) =
        (webhook?, error_rate?, denial_rate?, cooldown?, timeout?);
    Some(webhook.map(|webhook| AlertsSpec {
        webhook,
        error_rate,
        denials_per_minute: per_minute(denial_rate),
        denial_rate,
        cooldown,
        timeout,
    }))
}

/// `rate` as a whole number of events per minute, rounded up (at least 1).
fn per_minute(rate: Rate) -> u64 {
    let per_ms = rate.per.as_millis().max(1);
    let n = (u128::from(rate.count) * 60_000).div_ceil(per_ms);
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

/// `tls_listen`, `tls_cert`, `tls_key`, `tls_handshake_timeout`: all three of the first or none.
fn validate_tls(
    s: Option<&super::file::FileServer>,
    base: &Path,
    listen: Option<SocketAddr>,
    errors: &mut Errors,
) -> Option<Option<TlsConfig>> {
    let tls_listen = errors.parsed(
        "server.tls_listen",
        &s.and_then(|s| s.tls_listen.clone()),
        None,
        |t| parse_socket_addr(t).map(Some),
    );
    let path = |errors: &mut Errors, key: &str, f: Option<Field<String>>| {
        errors
            .get(key, &f, String::new())
            .map(|p| (!p.is_empty()).then(|| base.join(p)))
    };
    let cert = path(
        errors,
        "server.tls_cert",
        s.and_then(|s| s.tls_cert.clone()),
    );
    let key = path(errors, "server.tls_key", s.and_then(|s| s.tls_key.clone()));
    let handshake_timeout = errors.parsed(
        "server.tls_handshake_timeout",
        &s.and_then(|s| s.tls_handshake_timeout.clone()),
        Duration::from_secs(10),
        parse_positive_duration,
    );
    let (tls_listen, cert, key) = (tls_listen?, cert?, key?);
    let Some(tls_listen) = tls_listen else {
        for (k, given) in [("tls_cert", cert.is_some()), ("tls_key", key.is_some())] {
            if given {
                errors.push(
                    format!("server.{k}"),
                    "given without tls_listen, so nothing would serve HTTPS: add tls_listen = \"0.0.0.0:8443\" under [server], or remove it",
                );
            }
        }
        return Some(None);
    };
    if Some(tls_listen) == listen && tls_listen.port() != 0 {
        errors.push(
            "server.tls_listen",
            format!("{tls_listen} is also the plain listen address: give HTTPS its own port, e.g. \"0.0.0.0:8443\""),
        );
    }
    let mut missing = |k: &str, example: &str| {
        errors.push(
            format!("server.{k}"),
            format!("missing: tls_listen needs the certificate pair; add {k} = \"{example}\" (PEM) under [server]"),
        )
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Some(Some(TlsConfig {
            listen: tls_listen,
            cert,
            key,
            handshake_timeout: handshake_timeout?,
        })),
        (cert, key) => {
            if cert.is_none() {
                missing("tls_cert", "certs/fullchain.pem");
            }
            if key.is_none() {
                missing("tls_key", "certs/privkey.pem");
            }
            None
        }
    }
}

/// A `Strict-Transport-Security` value: `max-age=N`, optionally `includeSubDomains` and
/// `preload`; `""` is none.
pub(crate) fn parse_hsts(text: &str) -> Result<Option<http::HeaderValue>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let fix = "write e.g. \"max-age=31536000\" or \"max-age=31536000; includeSubDomains\"";
    let mut max_age = false;
    for directive in text.split(';').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("max-age=") {
            if max_age || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{text:?} needs exactly one max-age=<seconds>: {fix}"
                ));
            }
            max_age = true;
        } else if lower != "includesubdomains" && lower != "preload" {
            return Err(format!(
                "{directive:?} is not a Strict-Transport-Security directive (max-age, includeSubDomains, preload): {fix}"
            ));
        }
    }
    if !max_age {
        return Err(format!("{text:?} has no max-age: {fix}"));
    }
    http::HeaderValue::from_str(text.trim())
        .map(Some)
        .map_err(|_| format!("{text:?} is not a header value: {fix}"))
}

pub(crate) fn validate_lists(
    l: Option<&super::file::FileLists>,
    base: &Path,
    errors: &mut Errors,
) -> Option<ListPaths> {
    let Some(l) = l else {
        return Some(ListPaths::default());
    };
    errors.unknown(
        "lists",
        &l.unknown,
        &["blocklist", "allowlist", "revoked_tokens"],
    );
    let mut path = |key: &str, f: &Option<Field<String>>| -> Option<Option<PathBuf>> {
        match errors.get(&format!("lists.{key}"), f, String::new()) {
            None => None,
            Some(p) if p.is_empty() => Some(None),
            Some(p) => Some(Some(base.join(p))),
        }
    };
    let blocklist = path("blocklist", &l.blocklist);
    let allowlist = path("allowlist", &l.allowlist);
    let revoked_tokens = path("revoked_tokens", &l.revoked_tokens);
    Some(ListPaths {
        blocklist: blocklist?,
        allowlist: allowlist?,
        revoked_tokens: revoked_tokens?,
    })
}

fn validate_switches(
    list: &[super::file::FileSwitch],
    routes: &[RouteSpec],
    errors: &mut Errors,
) -> Option<Vec<SwitchSpec>> {
    let mut out: Vec<SwitchSpec> = Vec::new();
    let mut ok = true;
    for (i, w) in list.iter().enumerate() {
        let at = format!("switch[{i}]");
        errors.unknown(
            &at,
            &w.unknown,
            &[
                "name",
                "routes",
                "paused",
                "message",
                "until",
                "retry_after",
            ],
        );
        let temporary = w.until.is_some();
        let name = entry_name(errors, &at, &w.name, "switch", "gallery-downloads", |n| {
            out.iter()
                .any(|s| s.name == n && s.until.is_some() == temporary)
                .then_some(temporary)
        });
        let classes = required(
            errors,
            &format!("{at}.routes"),
            &w.routes,
            "list the route classes it pauses, or [\"*\"] for every guest route",
        )
        .and_then(|names| resolve_classes(&format!("{at}.routes"), &names, routes, errors));
        let paused = errors.get(&format!("{at}.paused"), &w.paused, false);
        let message = errors.get(
            &format!("{at}.message"),
            &w.message,
            "This service is paused. Please try again later.".to_string(),
        );
        let until = errors.parsed(&format!("{at}.until"), &w.until, None, |t| {
            parse_instant(t).map(Some)
        });
        let retry_after = errors.parsed(
            &format!("{at}.retry_after"),
            &w.retry_after,
            Duration::from_secs(300),
            parse_positive_duration,
        );
        match (name, classes, paused, message, until, retry_after) {
            (
                Some(name),
                Some(classes),
                Some(paused),
                Some(message),
                Some(until),
                Some(retry_after),
            ) => out.push(SwitchSpec {
                name,
                classes,
                paused,
                message,
                until,
                retry_after,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn validate_enumeration(
    e: &super::file::FileEnumeration,
    errors: &mut Errors,
) -> Option<EnumerationSpec> {
    errors.unknown(
        "enumeration",
        &e.unknown,
        &[
            "statuses",
            "max_failures",
            "prefix_max_failures",
            "window",
            "ban",
            "max_ban",
            "token_pattern",
        ],
    );
    let statuses = errors
        .get("enumeration.statuses", &e.statuses, vec![403, 404, 410])
        .and_then(|list| {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                match u16::try_from(*s) {
                    Ok(s) if (100..=599).contains(&s) => out.push(s),
                    _ => errors.push(
                        format!("enumeration.statuses[{i}]"),
                        format!("{s} is not an HTTP status: give 100 to 599"),
                    ),
                }
            }
            (out.len() == list.len()).then_some(out)
        });
    let count = |errors: &mut Errors, key: &str, f: &Option<Field<i64>>, default: i64| {
        errors
            .get(key, f, default)
            .and_then(|n| match u32::try_from(n) {
                Ok(n) if (1..=MAX_DISTINCT).contains(&n) => Some(n),
                _ => {
                    errors.push(
                        key,
                        format!(
                            "{n} is out of range: give a whole number from 1 to {MAX_DISTINCT}"
                        ),
                    );
                    None
                }
            })
    };
    let max_failures = count(errors, "enumeration.max_failures", &e.max_failures, 20);
    let prefix_max_failures = count(
        errors,
        "enumeration.prefix_max_failures",
        &e.prefix_max_failures,
        100,
    );
    let window = errors.parsed(
        "enumeration.window",
        &e.window,
        Duration::from_secs(600),
        parse_positive_duration,
    );
    let ban = errors.parsed(
        "enumeration.ban",
        &e.ban,
        Duration::from_secs(900),
        parse_positive_duration,
    );
    let max_ban = errors.parsed(
        "enumeration.max_ban",
        &e.max_ban,
        Duration::from_secs(86_400),
        parse_positive_duration,
    );
    if let (Some(b), Some(m)) = (ban, max_ban) {
        if b > m {
            errors.push(
                "enumeration.max_ban",
                format!(
                    "{} is shorter than ban ({}): make max_ban at least ban",
                    crate::units::format_duration(m),
                    crate::units::format_duration(b)
                ),
            );
        }
    }
    let pattern_text = errors.get(
        "enumeration.token_pattern",
        &e.token_pattern,
        "^[A-Za-z0-9_-]{8,128}$".to_string(),
    );
    let token_pattern = pattern_text.as_ref().and_then(|p| {
        match regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
            Ok(r) => Some(r),
            Err(err) => {
                errors.push("enumeration.token_pattern", format!("{p:?} is not a regular expression ({err}): write e.g. \"^[A-Za-z0-9_-]{{8,128}}$\""));
                None
            }
        }
    });
    Some(EnumerationSpec {
        settings: EnumerationSettings {
            statuses: statuses?,
            max_failures: max_failures?,
            prefix_max_failures: prefix_max_failures?,
            window: window?,
            ban: ban?,
            max_ban: max_ban?,
        },
        token_pattern_text: pattern_text?,
        token_pattern: token_pattern?,
    })
}

/// Resolves route class names (or `"*"`, every class) to indices.
pub(crate) fn resolve_classes(
    at: &str,
    names: &[String],
    routes: &[RouteSpec],
    errors: &mut Errors,
) -> Option<Vec<usize>> {
    if names.is_empty() {
        errors.push(
            at,
            "empty: name the route classes it applies to, or \"*\" for every guest route",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, n) in names.iter().enumerate() {
        if n == "*" {
            out.extend(0..routes.len());
        } else if let Some(idx) = routes.iter().position(|r| &r.name == n) {
            out.push(idx);
        } else {
            let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
            errors.push(
                format!("{at}[{i}]"),
                format!(
                    "{n:?} is not a route class: use one of {}, or \"*\"",
                    known.join(", ")
                ),
            );
            ok = false;
        }
    }
    out.sort_unstable();
    out.dedup();
    ok.then_some(out)
}

fn validate_limits(
    list: &[super::file::FileLimit],
    routes: &[RouteSpec],
    has_cluster: bool,
    errors: &mut Errors,
) -> Option<Vec<LimitSpec>> {
    let mut out: Vec<LimitSpec> = Vec::new();
    let mut ok = true;
    for (i, l) in list.iter().enumerate() {
        let at = format!("limit[{i}]");
        errors.unknown(
            &at,
            &l.unknown,
            &[
                "name", "routes", "key", "rate", "burst", "mode", "until", "shared", "max_keys",
            ],
        );
        let temporary = l.until.is_some();
        let name = entry_name(errors, &at, &l.name, "limit", "guest-ip", |n| {
            out.iter()
                .any(|s| s.name == n && s.until.is_some() == temporary)
                .then_some(temporary)
        });
        let classes = required(
            errors,
            &format!("{at}.routes"),
            &l.routes,
            "list the route classes it applies to, e.g. routes = [\"gallery\"]",
        )
        .and_then(|names| resolve_classes(&format!("{at}.routes"), &names, routes, errors));
        let key = required(
            errors,
            &format!("{at}.key"),
            &l.key,
            "say what it counts by: key = \"ip\", key = \"net\" or key = \"token\"",
        )
        .and_then(|k| match KeyKind::parse(&k) {
            Some(kind) => Some(kind),
            None => {
                errors.push(
                    format!("{at}.key"),
                    format!(
                        "{k:?} is not a key: write \"ip\" (one client), \"net\" (its IPv4 /24 or IPv6 /48) or \"token\""
                    ),
                );
                None
            }
        });
        let rate = required(
            errors,
            &format!("{at}.rate"),
            &l.rate,
            "give the sustained rate, e.g. rate = \"300/min\"",
        )
        .and_then(|r| match parse_rate(&r) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(format!("{at}.rate"), e);
                None
            }
        });
        let burst = errors
            .get(&format!("{at}.burst"), &l.burst, 1)
            .and_then(|b| match u32::try_from(b).ok().and_then(NonZeroU32::new) {
                Some(b) => Some(b),
                None => {
                    errors.push(
                        format!("{at}.burst"),
                        format!("{b} is not a burst: give a whole number of at least 1"),
                    );
                    None
                }
            });
        let mode = errors.parsed(&format!("{at}.mode"), &l.mode, Mode::Enforce, |m| match m {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            other => Err(format!(
                "{other:?} is not a mode: write \"enforce\" or \"shadow\""
            )),
        });
        let until = errors.parsed(&format!("{at}.until"), &l.until, None, |t| {
            parse_instant(t).map(Some)
        });
        let shared = errors
            .get(&format!("{at}.shared"), &l.shared, false)
            .and_then(|shared| {
                if shared && !has_cluster {
                    errors.push(
                        format!("{at}.shared"),
                        "shared limits need [cluster]: add [cluster] with redis = \"redis://127.0.0.1:6379/0\", or remove shared = true (the limit then holds per replica)",
                    );
                    None
                } else {
                    Some(shared)
                }
            });
        let max_keys = errors
            .get(
                &format!("{at}.max_keys"),
                &l.max_keys,
                DEFAULT_MAX_KEYS as i64,
            )
            .and_then(|m| match usize::try_from(m) {
                Ok(m) if (1..=100_000_000).contains(&m) => Some(m),
                _ => {
                    errors.push(
                        format!("{at}.max_keys"),
                        format!("{m} is out of range: give 1 to 100000000"),
                    );
                    None
                }
            });
        match (
            name, classes, key, rate, burst, mode, until, max_keys, shared,
        ) {
            (
                Some(name),
                Some(classes),
                Some(key),
                Some(rate),
                Some(burst),
                Some(mode),
                Some(until),
                Some(max_keys),
                Some(shared),
            ) => out.push(LimitSpec {
                name,
                classes,
                key,
                rate,
                burst,
                mode,
                until,
                max_keys,
                shared,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// The `name` of the entry at `at` (`limit[2]`): required, a valid name, and not `taken`
/// (which says whether the entry taking it is temporary, for limits and switches, whose
/// temporary entries may share the name of a permanent one).
fn entry_name(
    errors: &mut Errors,
    at: &str,
    field: &Option<Field<String>>,
    what: &str,
    example: &str,
    taken: impl Fn(&str) -> Option<bool>,
) -> Option<String> {
    let key = format!("{at}.name");
    let name = required(
        errors,
        &key,
        field,
        &format!("every {what} needs a name, e.g. name = \"{example}\""),
    )?;
    if !valid_name(&name) {
        errors.push(
            key,
            format!("{name:?} is not a name: use letters, digits, _ and -"),
        );
        return None;
    }
    if let Some(temporary) = taken(&name) {
        let message = match (what, temporary) {
            ("limit" | "switch", true) => format!(
                "{name:?} is used by two temporary entries: keep one (a temporary {what} with until may share the name of one permanent {what}, which it stands in for until then)"
            ),
            ("limit" | "switch", false) => format!(
                "{name:?} is used by two permanent entries: give each {what} its own name (to change one for a while, add until = \"…\" to the second: it then stands in for the first until that instant)"
            ),
            _ => format!("{name:?} is used twice: give each {what} its own name"),
        };
        errors.push(key, message);
        return None;
    }
    Some(name)
}

fn required<T: Clone>(
    errors: &mut Errors,
    key: &str,
    field: &Option<Field<T>>,
    fix: &str,
) -> Option<T> {
    match field {
        None => {
            errors.push(key, format!("missing: {fix}"));
            None
        }
        Some(Field(Ok(v))) => Some(v.clone()),
        Some(Field(Err(e))) => {
            errors.push(key, e.clone());
            None
        }
    }
}

fn validate_routes(list: &[super::file::FileRoute], errors: &mut Errors) -> Option<Vec<RouteSpec>> {
    let mut specs = Vec::new();
    let mut ok = true;
    for (i, r) in list.iter().enumerate() {
        let at = format!("route[{i}]");
        errors.unknown(&at, &r.unknown, &["name", "methods", "paths"]);
        let name = entry_name(errors, &at, &r.name, "route class", "gallery", |n| {
            specs
                .iter()
                .any(|s: &RouteSpec| s.name == n)
                .then_some(false)
        });
        let methods = errors.get(
            &format!("{at}.methods"),
            &r.methods.clone().map(|f| Field(f.0.map(Some))),
            None,
        );
        let methods = methods.map(|m| {
            m.map(|m| {
                let mut out = Vec::new();
                for (j, text) in m.iter().enumerate() {
                    match http::Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
                        Ok(method) => out.push(method),
                        Err(_) => errors.push(
                            format!("{at}.methods[{j}]"),
                            format!("{text:?} is not an HTTP method"),
                        ),
                    }
                }
                out
            })
        });
        let paths = match &r.paths {
            None => {
                errors.push(format!("{at}.paths"), "missing: list the paths of this class, e.g. paths = [\"/api/v1/gallery/{token}\"]");
                None
            }
            Some(f) => errors.get(&format!("{at}.paths"), &Some(f.clone()), Vec::new()),
        };
        if let Some(p) = &paths {
            if p.is_empty() {
                errors.push(
                    format!("{at}.paths"),
                    "empty: a route class needs at least one path",
                );
            }
        }
        match (name, methods, paths) {
            (Some(name), Some(methods), Some(paths)) => specs.push(RouteSpec {
                name,
                methods,
                paths,
            }),
            _ => ok = false,
        }
    }
    if list.is_empty() {
        errors.push(
            "route",
            "an empty route list leaves nothing to protect: remove it to get the default classes",
        );
        ok = false;
    }
    // Pattern errors are reported by index, which matches the file only when every route parsed.
    if ok {
        if let Err(errs) = crate::policy::classify::RouteTable::new(&specs) {
            for (route, path, e) in errs {
                errors.push(format!("route[{route}].paths[{path}]"), e.to_string());
            }
            ok = false;
        }
    }
    ok.then_some(specs)
}

/// Names of routes, limits and switches: letters, digits, `_`, `-`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
