//! `joinshield ctl` and `joinshield healthcheck`: the client side of the admin API (one
//! HTTP/1.1 request on a fresh connection, bounded in time, with the bearer token) and what each
//! action prints.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::cli::check::{load_or_error, plural};
use crate::clock::{rfc3339 as instant, Clock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an admin call failed before it got an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The connection or the exchange failed.
    #[error("{authority}: {source}")]
    Io {
        /// Where.
        authority: String,
        /// Why.
        source: std::io::Error,
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
        let io = |source| CtlError::Io {
            authority: self.authority.clone(),
            source,
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
    /// Show what is loaded, paused switches, list sizes, bans, error and request rates.
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

/// The admin API's address: `--admin`, else the configuration's `[admin] listen` (an
/// unspecified address is reached on loopback).
pub fn admin_url(path: &Path, admin: Option<String>) -> Result<String> {
    if let Some(url) = admin {
        return Ok(url);
    }
    let loaded = load_or_error(path)?;
    let mut a = loaded.config.admin.listen;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(a.to_string())
}

/// `joinshield healthcheck`: success when the admin `/healthz` answers 200.
pub async fn healthcheck(path: &Path, admin: Option<String>) -> Result<ExitCode> {
    let client = AdminClient::new(&admin_url(path, admin)?, None);
    match client.call("GET", "/healthz", None).await {
        Ok(r) if r.status == 200 => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!(
                "joinshield: {}/healthz answered {}",
                client.authority(),
                r.status
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("joinshield: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `joinshield ctl`: one call to the admin API, printed as a table (or its JSON with `json`).
pub async fn ctl(
    path: &Path,
    admin: Option<String>,
    json: bool,
    action: Action,
) -> Result<ExitCode> {
    let token = std::env::var("JOINSHIELD_ADMIN_TOKEN").ok();
    let client = AdminClient::new(&admin_url(path, admin)?, token);
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
            let q: String =
                percent_encoding::utf8_percent_encode(cidr, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            client
                .call("DELETE", &format!("/admin/bans?cidr={q}"), None)
                .await?
        }
    };
    if json || reply.status >= 400 {
        println!("{}", reply.body.trim_end());
    } else {
        print_human(&action, &reply.body);
    }
    Ok(if reply.status < 400 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_human(action: &Action, body: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    match action {
        Action::Status => print_status(&v),
        Action::Denials { since } => print_denials(body, since),
        Action::Offenders { .. } => print_offenders(&v),
        Action::Timeline { .. } => print!("{}", crate::cli::timeline::markdown(&v)),
        Action::Reload => {
            println!("reloaded: version {}", v["version"]);
            for c in v["changes"].as_array().into_iter().flatten() {
                println!("  {}", c.as_str().unwrap_or_default());
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                println!("  warning: {}", w.as_str().unwrap_or_default());
            }
        }
        Action::Bans => {
            let bans = v["bans"].as_array().cloned().unwrap_or_default();
            if bans.is_empty() {
                println!("no active bans");
                return;
            }
            let now = crate::clock::SystemClock.now().unix();
            println!(
                "{:<43} {:<9} {:<16} {:>9} {:<20} {:>7}  reason",
                "network", "source", "origin", "left", "until", "tokens"
            );
            for b in bans {
                let until = b["until"].as_i64().unwrap_or_default();
                println!(
                    "{:<43} {:<9} {:<16} {:>9} {:<20} {:>7}  {}",
                    b["net"].as_str().unwrap_or_default(),
                    b["source"].as_str().unwrap_or_default(),
                    b["origin"].as_str().unwrap_or("-"),
                    crate::units::format_duration(std::time::Duration::from_secs(
                        until.saturating_sub(now).max(0).unsigned_abs()
                    )),
                    instant(until),
                    b["distinct_tokens"]
                        .as_u64()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    b["reason"].as_str().unwrap_or_default()
                );
            }
        }
        Action::Ban { .. } => {
            println!(
                "banned {} until {}",
                v["ban"]["net"].as_str().unwrap_or_default(),
                instant(v["ban"]["until"].as_i64().unwrap_or_default())
            );
        }
        Action::Unban { .. } => {
            println!(
                "lifted the ban of {}",
                v["lifted"]["net"].as_str().unwrap_or_default()
            );
        }
    }
}

/// A share as a percentage, or `-` when there was nothing to share.
fn percent(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn print_status(v: &serde_json::Value) {
    let sha = v["sha256"].as_str().unwrap_or_default();
    println!(
        "version       {} (sha256 {}, loaded {})",
        v["version"],
        sha.get(..16).unwrap_or(sha),
        v["loaded_at"].as_str().unwrap_or_default()
    );
    let switches: Vec<String> = v["switches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{} {}{}",
                w["name"].as_str().unwrap_or_default(),
                if w["paused"].as_bool().unwrap_or(false) {
                    "PAUSED"
                } else {
                    "off"
                },
                w["until"]
                    .as_str()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    println!(
        "switches      {}",
        if switches.is_empty() {
            "none".to_string()
        } else {
            switches.join(", ")
        }
    );
    let l = &v["lists"];
    println!(
        "lists         blocklist {}, allowlist {}, revoked tokens {}",
        l["blocklist"], l["allowlist"], l["revoked_tokens"]
    );
    println!("bans          {} active", v["bans"]);
    let c = &v["cluster"];
    if c.is_object() {
        let replicas: Vec<&str> = c["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        println!(
            "cluster       replica {} via {}: {} since {}; {} alive: {}",
            c["name"].as_str().unwrap_or_default(),
            c["redis"].as_str().unwrap_or_default(),
            match c["state"].as_str() {
                Some("fallback") => "FALLBACK (local state decides)",
                Some(other) => other,
                None => "-",
            },
            c["since"].as_str().unwrap_or_default(),
            replicas.len(),
            replicas.join(", ")
        );
    }
    let e = &v["guest_error_rate"];
    println!(
        "guest errors  {} (1m)  {} (5m)  {} (15m)",
        percent(&e["1m"]),
        percent(&e["5m"]),
        percent(&e["15m"])
    );
    let m = &v["per_minute"];
    println!(
        "last minute   {} requests, {} denied, {} guest requests forwarded, {} failed",
        m["requests"], m["denials"], m["guest_forwarded"], m["guest_errors"]
    );
}

fn print_denials(body: &str, since: &str) {
    let lines: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        println!("no denials in the last {since}");
        return;
    }
    println!(
        "{:<24} {:<39} {:<6} {:<22} {:<16} {:<12} path",
        "time", "ip", "method", "reason", "route", "token"
    );
    let field = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("-").to_string();
    for d in &lines {
        let mut reason = field(d, "reason");
        if let Some(limit) = d["limit"].as_str() {
            reason = format!("{reason} {limit}");
        }
        if d["mode"].as_str() == Some("shadow") {
            reason.push_str(" (shadow)");
        }
        println!(
            "{:<24} {:<39} {:<6} {:<22} {:<16} {:<12} {}",
            field(d, "time"),
            field(d, "ip"),
            field(d, "method"),
            reason,
            field(d, "route"),
            field(d, "token"),
            field(d, "path")
        );
    }
    println!(
        "{} denial{} in the last {since}",
        lines.len(),
        plural(lines.len())
    );
}

fn print_offenders(v: &serde_json::Value) {
    println!(
        "offenders over the last {} minute{} (a count may be over by up to its +N)",
        v["minutes"],
        plural(usize::try_from(v["minutes"].as_u64().unwrap_or(0)).unwrap_or(0))
    );
    for (kind, title) in [("denials", "denials"), ("failed_tokens", "failed tokens")] {
        for (dim, what) in [
            ("ips", "client IP"),
            ("prefixes", "prefix"),
            ("tokens", "token preview"),
        ] {
            let rows = v[kind][dim].as_array().cloned().unwrap_or_default();
            println!();
            println!("{what} by {title}");
            if rows.is_empty() {
                println!("  none");
                continue;
            }
            for (i, r) in rows.iter().enumerate() {
                let over = r["max_overcount"].as_u64().unwrap_or(0);
                println!(
                    "  {:>3}. {:<43} {:>8}{}",
                    i + 1,
                    r["key"].as_str().unwrap_or_default(),
                    r["count"],
                    if over > 0 {
                        format!(" (+{over})")
                    } else {
                        String::new()
                    }
                );
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
