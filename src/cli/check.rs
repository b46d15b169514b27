//! `joinshield check`: validates a configuration and the files it names, and prints what it
//! would run with (or every error, with its file, line and key).

use std::process::ExitCode;

use anyhow::{anyhow, Result};

use crate::clock::rfc3339 as instant;
use crate::config::{self, Loaded};

/// Loads the configuration at `path`, or prints every error (file, line, key, fix) and says no.
pub fn load_or_report(path: &std::path::Path) -> Option<Loaded> {
    match config::load(path) {
        Ok(l) => Some(l),
        Err(errors) => {
            eprintln!(
                "joinshield: {} refused ({} error{}):",
                path.display(),
                errors.len(),
                plural(errors.len())
            );
            for e in errors {
                eprintln!("  {e}");
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

/// `joinshield check`: validates `path` and prints what the shield would run with.
pub fn check(path: &std::path::Path) -> ExitCode {
    let Some(loaded) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let c = &loaded.config;
    println!("{}: ok (sha256 {})", path.display(), &loaded.sha256[..16]);
    println!("  listen      {}", c.server.listen);
    println!("  upstream    {}", c.server.upstream.uri);
    println!(
        "  timeouts    head {}, body stall {}, app {}; at most {} connections",
        crate::units::format_duration(c.server.header_timeout),
        crate::units::format_duration(c.server.body_timeout),
        crate::units::format_duration(c.server.upstream_timeout),
        c.server.max_connections
    );
    if let (Some(t), Some(pair)) = (&c.server.tls, &loaded.tls) {
        println!(
            "  https       {} (handshake timeout {})",
            t.listen,
            crate::units::format_duration(t.handshake_timeout)
        );
        println!("  tls cert    {}", t.cert.display());
        println!("  tls key     {}", t.key.display());
        println!("  certificate {}", pair.describe());
        if c.server.redirect_https {
            println!(
                "  redirect    plain requests get 308 to https (port {})",
                t.listen.port()
            );
        }
        if let Some(h) = c.server.hsts.as_ref().and_then(|h| h.to_str().ok()) {
            println!("  hsts        Strict-Transport-Security: {h}");
        }
    }
    println!("  admin       {}", c.admin.listen);
    println!(
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
    let routes: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    println!("  routes      {}", routes.join(", "));
    println!(
        "  tokens      {}",
        if c.tokens.case_sensitive {
            "case-sensitive (compared byte for byte)"
        } else {
            "letter case and trailing whitespace ignored (revocation, limits, guessing)"
        }
    );
    for l in &c.limits {
        let classes: Vec<&str> = l
            .classes
            .iter()
            .filter_map(|&i| routes.get(i).copied())
            .collect();
        println!(
            "  limit       {} per {} {} burst {} on {}{}{}{}",
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
                .unwrap_or_default()
        );
    }
    for w in &c.switches {
        println!(
            "  switch      {} {}{}",
            w.name,
            if w.paused { "PAUSED" } else { "off" },
            w.until
                .map(|u| format!(" until {}", instant(u)))
                .unwrap_or_default()
        );
    }
    for (name, path) in [
        ("blocklist", &c.lists.blocklist),
        ("allowlist", &c.lists.allowlist),
        ("revoked", &c.lists.revoked_tokens),
    ] {
        if let Some(p) = path {
            println!("  {name:<11} {}", p.display());
        }
    }
    if let Some(e) = &c.enumeration {
        println!(
            "  guessing    ban after {} distinct failed tokens ({} per prefix) within {}",
            e.settings.max_failures,
            e.settings.prefix_max_failures,
            crate::units::format_duration(e.settings.window)
        );
    }
    match &c.alerts {
        // The webhook's path is often its secret (Slack's are): only the host is printed.
        Some(a) => println!(
            "  alerts      to http://{}/… when {:.0}% of guest requests fail, denials pass {}, or a prefix is banned; each kind at most once per {}",
            a.webhook.authority,
            a.error_rate * 100.0,
            a.denial_rate,
            crate::units::format_duration(a.cooldown)
        ),
        None => println!("  alerts      off (no [alerts] webhook)"),
    }
    if let Some(k) = &c.cluster {
        println!(
            "  cluster     replica {} via {} (timeout {}, sync every {}, lease {}, keys {}:*)",
            k.name,
            k.redis_shown(),
            crate::units::format_duration(k.timeout),
            crate::units::format_duration(k.sync_interval),
            k.lease,
            k.key_prefix
        );
    }
    println!("  state file  {}", c.server.state_file.display());
    let l = &loaded.lists;
    println!(
        "  lists       blocklist {} entries, allowlist {}, revoked tokens {}",
        l.blocklist.len(),
        l.allowlist.len(),
        l.revoked.len()
    );
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}
