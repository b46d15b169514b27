//! `joinshield ctl` and `joinshield healthcheck`: the client side of the admin API (one
//! HTTP/1.1 request on a fresh connection, bounded in time, with the bearer token) and what each
//! action prints. Only `[admin]` of the configuration is read ([`crate::config::admin`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::cli::out::{count, duration, time, time_text, Align::Left, Align::Right, Table};
use crate::clock::Clock;
use crate::{complain, say};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an admin call failed before it got an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The connection or the exchange failed.
    #[error("{authority}: {error}")]
    Io {
        /// Where.
        authority: String,
        /// Why.
        error: std::io::Error,
    },
    /// No answer in time.
    #[error("{0}: no answer within 10 s")]
    Timeout(String),
    /// The answer was not HTTP.
    #[error("{0}: the answer is not HTTP")]
    Garbled(String),
}

/// An admin API endpoint and the token to use.
pub struct AdminClient {
    authority: String,
    token: Option<String>,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl AdminClient {
    /// A client for `url` (`http://host:port` or `host:port`); `token` from the environment.
    pub fn new(url: &str, token: Option<String>) -> Self {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        AdminClient {
            authority,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// The address called.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Reply, CtlError> {
        let io = |error| CtlError::Io {
            authority: self.authority.clone(),
            error,
        };
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(io)?;
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.authority
            );
            if let Some(t) = &self.token {
                req.push_str(&format!("Authorization: Bearer {t}\r\n"));
            }
            let body = body.unwrap_or("");
            if !body.is_empty() || method == "POST" {
                req.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            req.push_str("\r\n");
            req.push_str(body);
            s.write_all(req.as_bytes()).await.map_err(io)?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.map_err(io)?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| CtlError::Timeout(self.authority.clone()))??;
        parse_reply(&buf).ok_or_else(|| CtlError::Garbled(self.authority.clone()))
    }
}

/// Parses a `Connection: close` HTTP/1.1 answer (Content-Length or chunked or to the end).
fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(buf.get(..head_end)?).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = buf.get(head_end + 4..)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(rest.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = rest.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// What `joinshield ctl` is asked to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Show what is loaded, the limits and switches in force, list sizes, bans, rates.
    Status,
    /// Print the recent denials since `since`.
    Denials {
        /// How far back.
        since: String,
    },
    /// Print the top offenders since `since`.
    Offenders {
        /// How far back.
        since: String,
        /// How many of each.
        top: u32,
    },
    /// Reload the configuration and lists now.
    Reload,
    /// List active bans.
    Bans,
    /// Ban a client address or network.
    Ban {
        /// The address or network.
        cidr: String,
        /// How long.
        duration: String,
        /// Why.
        reason: String,
    },
    /// Lift the ban of exactly this address or network.
    Unban {
        /// The banned address or network.
        cidr: String,
    },
    /// Print the incident's record since `since`, as Markdown for the ticket.
    Timeline {
        /// How far back (at most the 48 h kept).
        since: String,
    },
}

/// The variable the bearer token is read from when the configuration names none.
pub const DEFAULT_TOKEN_ENV: &str = "JOINSHIELD_ADMIN_TOKEN";

/// Where and how to reach the admin API: its URL and the variable holding the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` or `http://host:port`.
    pub url: String,
    /// The variable holding the bearer token (`[admin] token_env`).
    pub token_env: String,
}

/// The admin API to call: `--admin`, else `[admin] listen` of the configuration (an unspecified
/// address is reached on loopback). Only `[admin]` is read, so a broken edit elsewhere in the
/// file does not take `ctl` and `healthcheck` away.
pub fn target(path: &Path, admin: Option<String>) -> Result<Target> {
    let section = crate::config::admin::load_admin(path);
    let token_env = section
        .as_ref()
        .map(|a| a.token_env.clone())
        .unwrap_or_else(|_| DEFAULT_TOKEN_ENV.to_string());
    if let Some(url) = admin {
        return Ok(Target { url, token_env });
    }
    let section = section.map_err(|errs| {
        anyhow!(
            "{} (or give the admin API's address with --admin 127.0.0.1:9901)",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let mut a = section.listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        });
    }
    Ok(Target {
        url: a.to_string(),
        token_env,
    })
}

/// The admin API's address (see [`target`]).
pub fn admin_url(path: &Path, admin: Option<String>) -> Result<String> {
    target(path, admin).map(|t| t.url)
}

/// The bearer token: the variable `[admin] token_env` names, else `$JOINSHIELD_ADMIN_TOKEN`.
fn token(target: &Target) -> Option<String> {
    [target.token_env.as_str(), DEFAULT_TOKEN_ENV]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|t| !t.is_empty()))
}

/// `joinshield healthcheck`: success when the admin `/healthz` answers 200.
pub async fn healthcheck(path: &Path, admin: Option<String>) -> Result<ExitCode> {
    let client = AdminClient::new(&target(path, admin)?.url, None);
    match client.call("GET", "/healthz", None).await {
        Ok(r) if r.status == 200 => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            complain!(
                "joinshield: {}/healthz answered {}",
                client.authority(),
                r.status
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            complain!("joinshield: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `joinshield ctl`: one call to the admin API, printed for people (or as the API's JSON with
/// `json`). A refusal is said on stderr and exits 1.
pub async fn ctl(
    path: &Path,
    admin: Option<String>,
    json: bool,
    action: Action,
) -> Result<ExitCode> {
    let target = target(path, admin)?;
    let client = AdminClient::new(&target.url, token(&target));
    let encode = |text: &str| -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).collect()
    };
    let reply = match &action {
        Action::Status => client.call("GET", "/admin/status", None).await?,
        Action::Denials { since } => {
            let path = format!("/admin/denials?since={}", encode(since));
            client.call("GET", &path, None).await?
        }
        Action::Offenders { since, top } => {
            let path = format!("/admin/offenders?since={}&top={top}", encode(since));
            client.call("GET", &path, None).await?
        }
        Action::Reload => client.call("POST", "/admin/reload", None).await?,
        Action::Bans => client.call("GET", "/admin/bans", None).await?,
        Action::Ban {
            cidr,
            duration,
            reason,
        } => {
            let body =
                serde_json::json!({ "cidr": cidr, "for": duration, "reason": reason }).to_string();
            client.call("POST", "/admin/bans", Some(&body)).await?
        }
        Action::Timeline { since } => {
            let path = format!("/admin/timeline?since={}", encode(since));
            client.call("GET", &path, None).await?
        }
        Action::Unban { cidr } => {
            let path = format!("/admin/bans?cidr={}", encode(cidr));
            client.call("DELETE", &path, None).await?
        }
    };
    let ok = reply.status < 400;
    if json {
        let body = reply.body.trim_end();
        if !body.is_empty() {
            say!("{body}");
        }
    } else if ok {
        let now = crate::clock::SystemClock.now().unix();
        print_human(&action, &reply.body, now);
    } else {
        print_refusal(&action, &reply, &target);
    }
    crate::cli::out::flush();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A refusal of the admin API, in a sentence on stderr (and the reload's errors one a line).
fn print_refusal(action: &Action, reply: &Reply, target: &Target) {
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    let said = v["error"]
        .as_str()
        .or_else(|| v["error"]["message"].as_str())
        .unwrap_or(reply.body.trim());
    match (action, reply.status) {
        (Action::Reload, 422) => {
            let errors = v["errors"].as_array().cloned().unwrap_or_default();
            complain!(
                "joinshield: reload rejected ({}); version {} stays in force:",
                count(errors.len(), "error"),
                v["version"]
            );
            for e in errors {
                complain!("  {}", e.as_str().unwrap_or_default());
            }
        }
        (_, 401) => complain!(
            "joinshield: the admin API refused the token (401: {said}); set ${} to the shield's admin token",
            target.token_env
        ),
        (_, 403) => complain!("joinshield: admin actions are off on that shield (403: {said})"),
        (_, 429) => complain!("joinshield: too many wrong tokens from here; the admin API answers again within a minute (429: {said})"),
        (_, status) => complain!("joinshield: the shield refused ({status}): {said}"),
    }
}

fn print_human(action: &Action, body: &str, now: i64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    match action {
        Action::Status => print_status(&v, now),
        Action::Denials { since } => print_denials(body, since),
        Action::Offenders { .. } => print_offenders(&v),
        Action::Timeline { .. } => print!("{}", crate::cli::timeline::markdown(&v)),
        Action::Reload => {
            say!("Reloaded: version {} is in force.", v["version"]);
            let changes = v["changes"].as_array().cloned().unwrap_or_default();
            if changes.is_empty() {
                say!("  no effective change");
            }
            for c in changes {
                say!("  {}", c.as_str().unwrap_or_default());
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                say!("  warning: {}", w.as_str().unwrap_or_default());
            }
        }
        Action::Bans => print_bans(&v, now),
        Action::Ban {
            duration: asked, ..
        } => {
            let b = &v["ban"];
            let until = b["until"].as_i64().unwrap_or_default();
            // The length asked for (the shield accepted it); the time left would already be
            // a second short.
            let length = crate::units::parse_duration(asked)
                .map(|d| duration(d.as_secs()))
                .unwrap_or_else(|_| asked.clone());
            say!(
                "Banned {} for {length}, until {} UTC ({}).",
                b["net"].as_str().unwrap_or_default(),
                time(until),
                b["reason"].as_str().unwrap_or_default()
            );
        }
        Action::Unban { .. } => {
            let b = &v["lifted"];
            say!(
                "Lifted the ban of {} ({}).",
                b["net"].as_str().unwrap_or_default(),
                b["reason"].as_str().unwrap_or_default()
            );
        }
    }
}

fn print_bans(v: &serde_json::Value, now: i64) {
    let bans = v["bans"].as_array().cloned().unwrap_or_default();
    if bans.is_empty() {
        say!("No active bans.");
        return;
    }
    say!("{} (times in UTC):", count(bans.len(), "active ban"));
    let mut t = Table::new(&[
        ("network", Left),
        ("source", Left),
        ("origin", Left),
        ("left", Right),
        ("until", Left),
        ("tokens", Right),
        ("reason", Left),
    ]);
    for b in bans {
        let until = b["until"].as_i64().unwrap_or_default();
        t.row([
            b["net"].as_str().unwrap_or_default().to_string(),
            b["source"].as_str().unwrap_or_default().to_string(),
            b["origin"].as_str().unwrap_or("-").to_string(),
            duration(until.saturating_sub(now).max(0).unsigned_abs()),
            time(until),
            b["distinct_tokens"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            b["reason"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    t.print(0);
}

/// A share as a percentage, or `-` when there was nothing to share.
fn percent(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// `until` (RFC 3339) as `until 2026-11-27 18:00:00 UTC (in 2h)`.
fn until_text(until: &serde_json::Value, now: i64) -> String {
    let Some(text) = until.as_str() else {
        return String::new();
    };
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => format!(
            "until {} UTC (in {})",
            time(t.as_second()),
            duration(t.as_second().saturating_sub(now).max(0).unsigned_abs())
        ),
        Err(_) => format!("until {text}"),
    }
}

fn print_status(v: &serde_json::Value, now: i64) {
    let sha = v["sha256"].as_str().unwrap_or_default();
    say!(
        "version       {} (sha256 {}, loaded {} UTC)",
        v["version"],
        sha.get(..16).unwrap_or(sha),
        time_text(v["loaded_at"].as_str().unwrap_or_default())
    );
    let r = &v["last_rejected"];
    if r.is_object() {
        let errors = r["errors"].as_array().cloned().unwrap_or_default();
        say!(
            "last rejected {} UTC: {}; version {} stayed in force",
            time_text(r["at"].as_str().unwrap_or_default()),
            count(errors.len(), "error"),
            r["version"]
        );
        for e in errors {
            say!("                {}", e.as_str().unwrap_or_default());
        }
    }
    let limits = v["limits"].as_array().cloned().unwrap_or_default();
    if limits.is_empty() {
        say!("limits        none");
    } else {
        say!("limits        {} in force:", limits.len());
        let mut t = Table::new(&[
            ("name", Left),
            ("per", Left),
            ("rate", Right),
            ("burst", Right),
            ("mode", Left),
            ("", Left),
        ]);
        for l in limits {
            let mut note = until_text(&l["until"], now);
            let p = &l["stands_in_for"];
            if p.is_object() {
                note.push_str(&format!(
                    ", standing in for {} burst {} per {}",
                    p["rate"].as_str().unwrap_or_default(),
                    p["burst"],
                    p["key"].as_str().unwrap_or_default()
                ));
            }
            let mut mode = l["mode"].as_str().unwrap_or_default().to_string();
            if l["shared"].as_bool() == Some(true) {
                mode.push_str(", shared");
            }
            t.row([
                l["name"].as_str().unwrap_or_default().to_string(),
                l["key"].as_str().unwrap_or_default().to_string(),
                l["rate"].as_str().unwrap_or_default().to_string(),
                l["burst"].to_string(),
                mode,
                note,
            ]);
        }
        t.print(14);
    }
    let switches = v["switches"].as_array().cloned().unwrap_or_default();
    if switches.is_empty() {
        say!("switches      none");
    } else {
        say!("switches      {} in force:", switches.len());
        let mut t = Table::new(&[("name", Left), ("state", Left), ("", Left)]);
        for w in switches {
            let mut note = until_text(&w["until"], now);
            let p = &w["stands_in_for"];
            if p.is_object() {
                note.push_str(&format!(
                    ", standing in for {}",
                    if p["paused"].as_bool() == Some(true) {
                        "paused"
                    } else {
                        "off"
                    }
                ));
            }
            t.row([
                w["name"].as_str().unwrap_or_default().to_string(),
                if w["paused"].as_bool().unwrap_or(false) {
                    "PAUSED".to_string()
                } else {
                    "off".to_string()
                },
                note,
            ]);
        }
        t.print(14);
    }
    let l = &v["lists"];
    say!(
        "lists         blocklist {}, allowlist {}, revoked tokens {}",
        l["blocklist"],
        l["allowlist"],
        l["revoked_tokens"]
    );
    say!("bans          {} active", v["bans"]);
    let c = &v["cluster"];
    if c.is_object() {
        let replicas: Vec<&str> = c["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        say!(
            "cluster       replica {} via {}: {} since {} UTC; {} alive: {}",
            c["name"].as_str().unwrap_or_default(),
            c["redis"].as_str().unwrap_or_default(),
            match c["state"].as_str() {
                Some("fallback") => "FALLBACK (local state decides)",
                Some(other) => other,
                None => "-",
            },
            time_text(c["since"].as_str().unwrap_or_default()),
            replicas.len(),
            replicas.join(", ")
        );
    }
    let e = &v["guest_error_rate"];
    say!(
        "guest errors  {} (1m)  {} (5m)  {} (15m)",
        percent(&e["1m"]),
        percent(&e["5m"]),
        percent(&e["15m"])
    );
    let m = &v["per_minute"];
    say!(
        "last minute   {} requests, {} denied, {} guest requests forwarded, {} failed",
        m["requests"],
        m["denials"],
        m["guest_forwarded"],
        m["guest_errors"]
    );
}

fn print_denials(body: &str, since: &str) {
    let lines: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        say!("No denials in the last {since}.");
        return;
    }
    let mut t = Table::new(&[
        ("time (UTC)", Left),
        ("ip", Left),
        ("method", Left),
        ("reason", Left),
        ("route", Left),
        ("token", Left),
        ("path", Left),
    ]);
    let field = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("-").to_string();
    for d in &lines {
        let mut reason = field(d, "reason");
        if let Some(limit) = d["limit"].as_str() {
            reason = format!("{reason} {limit}");
        }
        if let Some(switch) = d["switch"].as_str() {
            reason = format!("{reason} {switch}");
        }
        if d["mode"].as_str() == Some("shadow") {
            reason.push_str(" (shadow)");
        }
        t.row([
            time_text(&field(d, "time")),
            field(d, "ip"),
            field(d, "method"),
            reason,
            field(d, "route"),
            field(d, "token"),
            field(d, "path"),
        ]);
    }
    t.print(0);
    say!("{} in the last {since}", count(lines.len(), "denial"));
}

fn print_offenders(v: &serde_json::Value) {
    let minutes = usize::try_from(v["minutes"].as_u64().unwrap_or(0)).unwrap_or(0);
    say!(
        "Offenders over the last {} (a count may be over by up to its +N).",
        count(minutes, "minute")
    );
    for (kind, title) in [("denials", "denials"), ("failed_tokens", "failed tokens")] {
        for (dim, what) in [
            ("ips", "client IP"),
            ("prefixes", "prefix"),
            ("tokens", "token preview"),
        ] {
            let rows = v[kind][dim].as_array().cloned().unwrap_or_default();
            say!();
            say!("{what} by {title}");
            if rows.is_empty() {
                say!("  none");
                continue;
            }
            let mut t = Table::new(&[(what, Left), (title, Right), ("", Left)]);
            for (i, r) in rows.iter().enumerate() {
                let over = r["max_overcount"].as_u64().unwrap_or(0);
                t.row([
                    format!(
                        "{:>3} {}",
                        format!("{}.", i + 1),
                        r["key"].as_str().unwrap_or_default()
                    ),
                    r["count"].to_string(),
                    if over > 0 {
                        format!("(+{over})")
                    } else {
                        String::new()
                    },
                ]);
            }
            // The header row is skipped: the title above names the columns.
            for line in t.render(2).into_iter().skip(1) {
                say!("{line}");
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_are_read() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        let r = parse_reply(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, "no"));
        assert!(parse_reply(b"garbage").is_none());
    }
}
