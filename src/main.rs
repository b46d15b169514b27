//! The `joinshield` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};

use joinshield::config::{self, Loaded};
use joinshield::ctl::AdminClient;

// mimalloc instead of glibc's malloc: every request allocates and frees a few dozen small
// blocks on the runtime's worker threads, and glibc's per-thread arenas keep growing and
// trimming their heaps under that churn (an `mprotect` system call every few requests in a
// flood). BENCHMARKS.md has the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shipped configuration and its example lists, embedded for `demo`.
const SHIPPED: [(&str, &str); 4] = [
    ("joinshield.toml", include_str!("../config/joinshield.toml")),
    ("blocklist.txt", include_str!("../config/blocklist.txt")),
    ("allowlist.txt", include_str!("../config/allowlist.txt")),
    (
        "revoked-tokens.txt",
        include_str!("../config/revoked-tokens.txt"),
    ),
];

#[derive(Parser)]
#[command(
    name = "joinshield",
    version,
    about = "An abuse shield for token-based guest APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate a configuration file and the lists it names; print a summary.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the shipped configuration in front of a built-in stand-in of the guest API.
    Demo {
        /// Where the shield listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Where the shield serves HTTPS (with a self-signed certificate made at start).
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: SocketAddr,
    },
    /// Exit 0 when the admin /healthz answers 200.
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// The admin API's URL, instead of the one in the configuration.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Talk to a running shield's admin API (token from $JOINSHIELD_ADMIN_TOKEN).
    Ctl {
        #[command(flatten)]
        config: ConfigArg,
        /// The admin API's URL, instead of the one in the configuration.
        #[arg(long, global = true)]
        admin: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Print an Uptime Kuma 1.23 import file: the playbook's synthetic monitors and the shield's.
    KumaTemplate {
        /// The app's public URL, e.g. https://app.example.com.
        #[arg(long)]
        base_url: String,
        /// The join token of the dedicated synthetic event (URL-encoded into the guest monitors).
        #[arg(long)]
        event_token: String,
        /// A configuration whose admin listener the /healthz monitor checks (default 127.0.0.1:9901).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The admin listener as Uptime Kuma reaches it (e.g. http://shield:9901 in docker compose).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Run only the stand-in guest API (for load tests and benchmarks).
    #[command(hide = true)]
    Standin {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
}

/// `-c FILE`: the configuration file, shared by every command that reads one.
#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        short = 'c',
        value_name = "FILE",
        long = "config",
        env = "JOINSHIELD_CONFIG",
        default_value = "config/joinshield.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum CtlAction {
    /// Show what is loaded, paused switches, list sizes, bans, error and request rates.
    Status,
    /// Print the recent denials (the playbook's "snapshot logs"), oldest first.
    Denials {
        /// How far back: `90s`, `15m`, `2h` (at most 24h; the shield keeps the last 100,000).
        #[arg(long, default_value = "15m")]
        since: String,
    },
    /// Print the client IPs, prefixes and token previews most denied and most failing tokens.
    Offenders {
        /// How far back, in whole minutes: `5m`, `15m`, `1h` (at most 60m).
        #[arg(long, default_value = "15m")]
        since: String,
        /// How many of each to show (1 to 100).
        #[arg(long, default_value_t = 20)]
        top: u32,
    },
    /// Reload the configuration and lists now.
    Reload,
    /// List active bans (automatic and manual).
    Bans,
    /// Ban a client address or network.
    Ban {
        /// An address (`203.0.113.7`) or a network (`198.51.100.0/24`).
        cidr: String,
        /// How long: `30m`, `2h`, `1d`.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// Why (shown in `ctl bans` and the log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift the ban of exactly this address or network.
    Unban {
        /// The banned address or network, as `ctl bans` lists it.
        cidr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("joinshield: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("joinshield: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let loaded = match load_or_report(&config.path) {
                Some(l) => l,
                None => return Ok(ExitCode::FAILURE),
            };
            serve(loaded, None).await
        }
        Command::Check { config } => Ok(check(&config.path)),
        Command::Demo {
            listen,
            admin,
            tls_listen,
        } => demo(listen, admin, tls_listen).await,
        Command::Healthcheck { config, admin } => healthcheck(&config.path, admin).await,
        Command::Ctl {
            config,
            admin,
            json,
            action,
        } => ctl(&config.path, admin, json, action).await,
        Command::KumaTemplate {
            base_url,
            event_token,
            config,
            admin,
        } => {
            let admin = match (admin, config) {
                (Some(url), _) => url,
                (None, Some(path)) => admin_url(&path, None)?,
                (None, None) => "127.0.0.1:9901".to_string(),
            };
            let admin = if admin.starts_with("http://") || admin.starts_with("https://") {
                admin
            } else {
                format!("http://{admin}")
            };
            let template = joinshield::kuma::template(&base_url, &event_token, &admin)?;
            println!("{}", serde_json::to_string_pretty(&template)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Standin { listen } => {
            let standin = joinshield::standin::spawn(listen, false).await?;
            eprintln!("stand-in guest API on http://{}", standin.addr);
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_or_report(path: &std::path::Path) -> Option<Loaded> {
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
fn load_or_error(path: &std::path::Path) -> Result<Loaded> {
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

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let Some(loaded) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let c = &loaded.config;
    println!("{}: ok (sha256 {})", path.display(), &loaded.sha256[..16]);
    println!("  listen      {}", c.server.listen);
    println!("  upstream    {}", c.server.upstream.uri);
    println!(
        "  timeouts    head {}, body stall {}, app {}; at most {} connections",
        joinshield::config::units::format_duration(c.server.header_timeout),
        joinshield::config::units::format_duration(c.server.body_timeout),
        joinshield::config::units::format_duration(c.server.upstream_timeout),
        c.server.max_connections
    );
    if let (Some(t), Some(pair)) = (&c.server.tls, &loaded.tls) {
        println!(
            "  https       {} (handshake timeout {})",
            t.listen,
            joinshield::config::units::format_duration(t.handshake_timeout)
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
        c.log.timezone
    );
    let routes: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    println!("  routes      {}", routes.join(", "));
    for l in &c.limits {
        let classes: Vec<&str> = l
            .classes
            .iter()
            .filter_map(|&i| routes.get(i).copied())
            .collect();
        println!(
            "  limit       {} per {} {} burst {} on {}{}{}{}",
            l.name,
            l.key.as_str(),
            l.rate,
            l.burst,
            classes.join(", "),
            if l.mode == joinshield::limits::Mode::Shadow {
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
            joinshield::config::units::format_duration(e.settings.window)
        );
    }
    match &c.alerts {
        // The webhook's path is often its secret (Slack's are): only the host is printed.
        Some(a) => println!(
            "  alerts      to http://{}/… when {:.0}% of guest requests fail, denials pass {}, or a prefix is banned; each kind at most once per {}",
            a.webhook.authority,
            a.error_rate * 100.0,
            a.denial_rate,
            joinshield::config::units::format_duration(a.cooldown)
        ),
        None => println!("  alerts      off (no [alerts] webhook)"),
    }
    if let Some(k) = &c.cluster {
        println!(
            "  cluster     replica {} via {} (timeout {}, sync every {}, lease {}, keys {}:*)",
            k.name,
            k.redis_shown(),
            joinshield::config::units::format_duration(k.timeout),
            joinshield::config::units::format_duration(k.sync_interval),
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

fn instant(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// Serves `loaded` until SIGTERM or SIGINT; SIGHUP reloads.
async fn serve(loaded: Loaded, banner: Option<String>) -> Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let running = joinshield::start(loaded).await?;
    joinshield::log::install_sigusr1_reopen(running.shared.log.clone())
        .context("cannot watch SIGUSR1")?;
    eprintln!(
        "joinshield: serving guests on http://{}{}, admin on http://{}",
        running.addr,
        running
            .tls_addr
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default(),
        running.admin_addr
    );
    if let Some(b) = banner {
        println!("{b}");
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // The outcome is in the log (NOTICE or ERROR line).
                joinshield::reload::reload_logged(&running.shared);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!("joinshield: stopping; in-flight requests may finish");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn demo(listen: SocketAddr, admin: SocketAddr, tls_listen: SocketAddr) -> Result<ExitCode> {
    let standin = joinshield::standin::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), false).await?;
    let dir = std::env::temp_dir().join(format!("joinshield-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in SHIPPED {
        let file = dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    // A self-signed certificate for this machine's loopback names, made fresh for each demo.
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .context("cannot generate the demo certificate")?;
    std::fs::write(dir.join("demo-cert.pem"), pair.cert.pem())
        .context("cannot write the demo certificate")?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("demo-key.pem"))
            .and_then(|mut f| f.write_all(pair.signing_key.serialize_pem().as_bytes()))
            .context("cannot write the demo key")?;
    }
    // The demo binds loopback only, and moves to a free port when the usual one is taken.
    let shield = free_or_ephemeral(listen);
    let https = free_or_ephemeral(tls_listen);
    // Written into the copied file (not only into the loaded config), so a reload of it keeps
    // pointing at the stand-in and keeps serving HTTPS.
    let mut doc: toml_edit::DocumentMut = SHIPPED[0]
        .1
        .parse()
        .context("the shipped configuration is not TOML")?;
    for (table, key, value) in [
        ("server", "listen", shield.to_string()),
        ("server", "upstream", format!("http://{}", standin.addr)),
        ("server", "tls_listen", https.to_string()),
        ("server", "tls_cert", "demo-cert.pem".to_string()),
        ("server", "tls_key", "demo-key.pem".to_string()),
        ("admin", "listen", free_or_ephemeral(admin).to_string()),
    ] {
        doc[table][key] = toml_edit::value(value);
    }
    let path = dir.join("joinshield.toml");
    std::fs::write(&path, doc.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let loaded = load_or_error(&path).context("the shipped configuration is invalid")?;
    let t = joinshield::standin::DEMO_TOKENS[0];
    let banner = format!(
        "joinshield demo: the shipped configuration in front of a stand-in of the guest API ({})\n\
         Configuration copied to {} (edit it or its lists: saved edits apply within a second).\n\
         Try:\n  \
         curl -i http://{{shield}}/api/v1/events/{t}\n  \
         curl -i http://{{shield}}/api/v1/gallery/{t}/photos\n  \
         curl -i http://{{shield}}/api/v1/events/not-a-real-token-123\n  \
         curl -i -X POST --data-binary @/etc/hostname http://{{shield}}/api/v1/events/{t}/photos\n  \
         curl -s -o /dev/null -w '%{{http_code}}\\n' http://{{shield}}/api/v1/gallery/{t}/download\n  \
         curl -k -i https://{{https}}/api/v1/events/{t}    (HTTPS, a self-signed certificate made at start)\n\
         Press Ctrl-C to stop.",
        standin.addr,
        path.display(),
    );
    let banner = banner
        .replace("{shield}", &shield.to_string())
        .replace("{https}", &format!("localhost:{}", https.port()));
    let code = serve(loaded, Some(banner)).await;
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// `addr` if it can be bound now, else an ephemeral port on the same IP.
fn free_or_ephemeral(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => l.local_addr().unwrap_or(addr),
        Err(_) => match std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)) {
            Ok(l) => l.local_addr().unwrap_or(addr),
            Err(_) => addr,
        },
    }
}

/// The admin API's address: `--admin`, else the configuration's `[admin] listen` (an
/// unspecified address is reached on loopback).
fn admin_url(path: &std::path::Path, admin: Option<String>) -> Result<String> {
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

async fn healthcheck(path: &std::path::Path, admin: Option<String>) -> Result<ExitCode> {
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

async fn ctl(
    path: &std::path::Path,
    admin: Option<String>,
    json: bool,
    action: CtlAction,
) -> Result<ExitCode> {
    let token = std::env::var("JOINSHIELD_ADMIN_TOKEN").ok();
    let client = AdminClient::new(&admin_url(path, admin)?, token);
    let encode = |text: &str| -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).collect()
    };
    let reply = match &action {
        CtlAction::Status => client.call("GET", "/admin/status", None).await?,
        CtlAction::Denials { since } => {
            let path = format!("/admin/denials?since={}", encode(since));
            client.call("GET", &path, None).await?
        }
        CtlAction::Offenders { since, top } => {
            let path = format!("/admin/offenders?since={}&top={top}", encode(since));
            client.call("GET", &path, None).await?
        }
        CtlAction::Reload => client.call("POST", "/admin/reload", None).await?,
        CtlAction::Bans => client.call("GET", "/admin/bans", None).await?,
        CtlAction::Ban {
            cidr,
            duration,
            reason,
        } => {
            let body =
                serde_json::json!({ "cidr": cidr, "for": duration, "reason": reason }).to_string();
            client.call("POST", "/admin/bans", Some(&body)).await?
        }
        CtlAction::Unban { cidr } => {
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

fn print_human(action: &CtlAction, body: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    match action {
        CtlAction::Status => print_status(&v),
        CtlAction::Denials { since } => print_denials(body, since),
        CtlAction::Offenders { .. } => print_offenders(&v),
        CtlAction::Reload => {
            println!("reloaded: version {}", v["version"]);
            for c in v["changes"].as_array().into_iter().flatten() {
                println!("  {}", c.as_str().unwrap_or_default());
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                println!("  warning: {}", w.as_str().unwrap_or_default());
            }
        }
        CtlAction::Bans => {
            let bans = v["bans"].as_array().cloned().unwrap_or_default();
            if bans.is_empty() {
                println!("no active bans");
                return;
            }
            let now = chrono::Utc::now().timestamp();
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
                    joinshield::config::units::format_duration(std::time::Duration::from_secs(
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
        CtlAction::Ban { .. } => {
            println!(
                "banned {} until {}",
                v["ban"]["net"].as_str().unwrap_or_default(),
                instant(v["ban"]["until"].as_i64().unwrap_or_default())
            );
        }
        CtlAction::Unban { .. } => {
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
