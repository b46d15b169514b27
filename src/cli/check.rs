//! `joinshield check`: validates a configuration and the files it names, and prints what it
//! would run with (or every error, with its file, line and key).

use crate::{complain, say};
use std::process::ExitCode;

use anyhow::{anyhow, Result};

use crate::clock::rfc3339 as instant;
use crate::config::{self, Loaded};

/// Loads the configuration at `path`, or prints every error (file, line, key, fix) and says no.
pub fn load_or_report(path: &std::path::Path) -> Option<Loaded> {
    match config::load(path) {
        Ok(l) => Some(l),
        Err(errors) => {
            complain!(
                "joinshield: {} refused ({} error{}):",
                path.display(),
                errors.len(),
                plural(errors.len())
            );
            for e in errors {
                complain!("  {e}");
            }
            None
        }
    }
}

/// Loads a configuration, every error joined into one message.
pub fn load_or_error(path: &std::path::Path) -> Result<Loaded> {
    config::load(path).map_err(|errs| {
        anyhow!(
            "{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The shortest admin token `check` accepts without a warning.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Warnings about the admin API: a short token (`token`, the value of the variable
/// `token_env` names where `check` runs, if set), a listener reachable from public networks.
pub fn admin_warnings(admin: &crate::config::AdminConfig, token: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        let n = t.chars().count();
        if n < MIN_TOKEN_CHARS {
            out.push(format!(
                "the admin token in ${} has {n} character{}: use at least {MIN_TOKEN_CHARS} random ones (e.g. openssl rand -hex 16)",
                admin.token_env,
                plural(n)
            ));
        }
    }
    let ip = crate::policy::client_ip::canonical(admin.listen.ip());
    let private = match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    if !private {
        out.push(format!(
            "admin.listen {} is not a loopback or private address: the admin API (and /metrics) can be reached from any network that address is on; listen on 127.0.0.1 or a private address, or firewall the port",
            admin.listen
        ));
    }
    out
}

/// What `check` says of a temporary entry standing in for a permanent one.
fn stand_in_note(permanent: Option<usize>, what: &str) -> String {
    match permanent {
        Some(_) => format!(", standing in for the permanent {what} of that name until then"),
        None => String::new(),
    }
}

/// `joinshield check`: validates `path` and prints what the shield would run with.
pub fn check(path: &std::path::Path) -> ExitCode {
    let Some(loaded) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let c = &loaded.config;
    say!("{}: ok (sha256 {})", path.display(), &loaded.sha256[..16]);
    say!("  listen      {}", c.server.listen);
    say!("  upstream    {}", c.server.upstream.uri);
    say!(
        "  timeouts    head {}, body stall {}, app {}; at most {} connections, {} per client",
        crate::units::format_duration(c.server.header_timeout),
        crate::units::format_duration(c.server.body_timeout),
        crate::units::format_duration(c.server.upstream_timeout),
        c.server.max_connections,
        c.server.max_connections_per_ip
    );
    if let (Some(t), Some(pair)) = (&c.server.tls, &loaded.tls) {
        say!(
            "  https       {} (handshake timeout {})",
            t.listen,
            crate::units::format_duration(t.handshake_timeout)
        );
        say!("  tls cert    {}", t.cert.display());
        say!("  tls key     {}", t.key.display());
        say!("  certificate {}", pair.describe());
        if c.server.redirect_https {
            say!(
                "  redirect    plain requests get 308 to https (port {})",
                t.listen.port()
            );
        }
        if let Some(h) = c.server.hsts.as_ref().and_then(|h| h.to_str().ok()) {
            say!("  hsts        Strict-Transport-Security: {h}");
        }
    }
    say!("  admin       {}", c.admin.listen);
    say!(
        "  log         {} ({:?}, channel {}, {})",
        if c.log.file == "-" {
            "stdout"
        } else {
            &c.log.file
        },
        c.log.format,
        c.log.channel,
        c.log.timezone.iana_name().unwrap_or("UTC")
    );
    if c.log.access == crate::telemetry::access::AccessFormat::Json {
        println!(
            "  access log  {} (json, one line per answer)",
            if c.log.access_file == "-" {
                "stdout"
            } else {
                &c.log.access_file
            }
        );
    }
    let routes: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    say!("  routes      {}", routes.join(", "));
    say!(
        "  tokens      {}",
        if c.tokens.case_sensitive {
            "case-sensitive (compared byte for byte)"
        } else {
            "letter case and trailing whitespace ignored (revocation, limits, guessing)"
        }
    );
    for (i, l) in c.limits.iter().enumerate() {
        let classes: Vec<&str> = l
            .classes
            .iter()
            .filter_map(|&i| routes.get(i).copied())
            .collect();
        say!(
            "  limit       {} per {} {} burst {} on {}{}{}{}{}",
            l.name,
            match l.key {
                crate::policy::limits::KeyKind::Net => "net (IPv4 /24, IPv6 /48)",
                other => other.as_str(),
            },
            l.rate,
            l.burst,
            classes.join(", "),
            if l.mode == crate::policy::limits::Mode::Shadow {
                " (shadow)"
            } else {
                ""
            },
            if l.shared { " (shared)" } else { "" },
            l.until
                .map(|u| format!(" until {}", instant(u)))
                .unwrap_or_default(),
            stand_in_note(config::schema::stands_in_for(&c.limits, i), "limit")
        );
    }
    for (i, w) in c.switches.iter().enumerate() {
        say!(
            "  switch      {} {}{}{}",
            w.name,
            if w.paused { "PAUSED" } else { "off" },
            w.until
                .map(|u| format!(" until {}", instant(u)))
                .unwrap_or_default(),
            stand_in_note(config::schema::stands_in_for(&c.switches, i), "switch")
        );
    }
    for (name, path) in [
        ("blocklist", &c.lists.blocklist),
        ("allowlist", &c.lists.allowlist),
        ("revoked", &c.lists.revoked_tokens),
    ] {
        if let Some(p) = path {
            say!("  {name:<11} {}", p.display());
        }
    }
    if let Some(e) = &c.enumeration {
        say!(
            "  guessing    ban after {} distinct failed tokens ({} per prefix) within {}",
            e.settings.max_failures,
            e.settings.prefix_max_failures,
            crate::units::format_duration(e.settings.window)
        );
    }
    match &c.alerts {
        // The webhook's path is often its secret (Slack's are): only the host is printed.
        Some(a) => say!(
            "  alerts      to http://{}/… when {:.0}% of guest requests fail, denials pass {}, or a prefix is banned; each kind at most once per {}",
            a.webhook.authority,
            a.error_rate * 100.0,
            a.denial_rate,
            crate::units::format_duration(a.cooldown)
        ),
        None => say!("  alerts      off (no [alerts] webhook)"),
    }
    if let Some(k) = &c.cluster {
        say!(
            "  cluster     replica {} via {} (timeout {}, sync every {}, lease {}, keys {}:*)",
            k.name,
            k.redis_shown(),
            crate::units::format_duration(k.timeout),
            crate::units::format_duration(k.sync_interval),
            k.lease,
            k.key_prefix
        );
    }
    say!("  state file  {}", c.server.state_file.display());
    let l = &loaded.lists;
    say!(
        "  lists       blocklist {} entries, allowlist {}, revoked tokens {}",
        l.blocklist.len(),
        l.allowlist.len(),
        l.revoked.len()
    );
    for w in loaded.warnings.iter().cloned().chain(admin_warnings(
        &c.admin,
        std::env::var(&c.admin.token_env).ok().as_deref(),
    )) {
        say!("warning: {w}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(listen: &str) -> crate::config::AdminConfig {
        crate::config::AdminConfig {
            listen: listen.parse().unwrap(),
            token_env: "JOINSHIELD_ADMIN_TOKEN".into(),
        }
    }

    #[test]
    fn a_short_token_and_a_public_admin_listener_are_warned_about() {
        assert!(admin_warnings(&admin("127.0.0.1:9901"), None).is_empty());
        assert!(admin_warnings(&admin("10.1.2.3:9901"), Some("0123456789abcdef")).is_empty());
        assert!(admin_warnings(&admin("[fd00::1]:9901"), None).is_empty());
        let w = admin_warnings(&admin("127.0.0.1:9901"), Some("x"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("has 1 character:"), "{w:?}");
        for public in ["0.0.0.0:9901", "[::]:9901", "203.0.113.1:9901"] {
            let w = admin_warnings(&admin(public), None);
            assert!(w[0].contains("not a loopback or private address"), "{w:?}");
        }
    }
}
