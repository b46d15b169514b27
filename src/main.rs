//! The `joinshield` command line: the argument types and the dispatch; what each command does
//! and prints is in the library's `cli` module, the shield itself in `joinshield::start`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use joinshield::cli::{self, ctl::Action, run::Asked};
use joinshield::config::Loaded;

// mimalloc instead of glibc's malloc: every request allocates and frees a few dozen small
// blocks on the runtime's worker threads, and glibc's per-thread arenas keep growing and
// trimming their heaps under that churn (an `mprotect` system call every few requests in a
// flood). BENCHMARKS.md has the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Exit 0 when the admin /healthz answers 200 (reads only [admin] of the configuration).
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// The admin API's URL, instead of the one in the configuration.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Talk to a running shield's admin API (token from the variable `[admin] token_env` names,
    /// default $JOINSHIELD_ADMIN_TOKEN). Reads only [admin] of the configuration; -c, --admin
    /// and --json may stand anywhere on the line.
    Ctl {
        /// The configuration file (only its [admin] section is read).
        #[arg(
            short = 'c',
            value_name = "FILE",
            long = "config",
            env = "JOINSHIELD_CONFIG",
            default_value = "config/joinshield.toml",
            global = true
        )]
        config: PathBuf,
        /// The admin API's URL, instead of the one in the configuration.
        #[arg(long, global = true)]
        admin: Option<String>,
        /// Print the API's JSON (NDJSON for denials) instead of sentences and tables.
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
    /// Print the revoked-tokens line (sha256:…) of a join token, folded as [tokens] says.
    TokenHash {
        /// The join token, as it appears in the guest link (it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        token: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run only the built-in stand-in of the guest API (the demo's app; for load tests and
    /// benchmarks): it answers the playbook's guest routes for the demo tokens.
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
    /// Print the incident's record for the ticket (Markdown; --json for the API's JSON):
    /// reloads, switches, bans, alerts, expiries, and requests and denials per minute.
    Timeline {
        /// How far back: `30m`, `6h`, `2d` (at most 48h, what the shield keeps).
        #[arg(long, default_value = "6h")]
        since: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo { .. }) {
        // Before the runtime's threads exist: the demo puts its admin token in the environment.
        cli::demo::admin_token();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            joinshield::complain!("joinshield: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            joinshield::complain!("joinshield: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => match cli::check::load_or_report(&config.path) {
            Some(loaded) => serve(loaded, None).await,
            None => Ok(ExitCode::FAILURE),
        },
        Command::Check { config } => Ok(cli::check::check(&config.path)),
        Command::Demo {
            listen,
            admin,
            tls_listen,
        } => {
            let demo = cli::demo::prepare(listen, admin, tls_listen).await?;
            let code = serve(demo.loaded.clone(), Some(demo.banner.clone())).await;
            demo.clean_up();
            code
        }
        Command::Healthcheck { config, admin } => cli::ctl::healthcheck(&config.path, admin).await,
        Command::Ctl {
            config,
            admin,
            json,
            action,
        } => cli::ctl::ctl(&config, admin, json, action.into()).await,
        Command::KumaTemplate {
            base_url,
            event_token,
            config,
            admin,
        } => {
            let admin = match (admin, config) {
                (Some(url), _) => url,
                (None, Some(path)) => cli::ctl::admin_url(&path, None)?,
                (None, None) => "127.0.0.1:9901".to_string(),
            };
            let admin = if admin.starts_with("http://") || admin.starts_with("https://") {
                admin
            } else {
                format!("http://{admin}")
            };
            let template = cli::kuma::template(&base_url, &event_token, &admin)?;
            joinshield::say!("{}", serde_json::to_string_pretty(&template)?);
            joinshield::cli::out::flush();
            Ok(ExitCode::SUCCESS)
        }
        Command::TokenHash { token, config } => {
            Ok(cli::token_hash::token_hash(&config.path, &token))
        }
        Command::Standin { listen } => {
            let standin = joinshield::testkit::standin::spawn(listen, false).await?;
            joinshield::complain!(
                "joinshield: stand-in guest API on http://{}; its join tokens: {}",
                standin.addr,
                joinshield::testkit::standin::DEMO_TOKENS.join(", ")
            );
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serves `loaded` until SIGTERM or SIGINT; SIGHUP reloads (the outcome is in the log).
async fn serve(loaded: Loaded, banner: Option<String>) -> Result<ExitCode> {
    let mut signals = cli::run::Signals::watch()?;
    let running = joinshield::start(loaded).await?;
    running
        .reopen_log_on_sigusr1()
        .context("cannot watch SIGUSR1")?;
    cli::run::announce(
        running.addr,
        running.tls_addr,
        running.admin_addr,
        banner.as_deref(),
    );
    while signals.next().await == Asked::Reload {
        // Folded repeats are written before the reload, so its lines follow them.
        running.flush_folds();
        running.reload_logged();
    }
    cli::run::stopping();
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

impl From<CtlAction> for Action {
    fn from(action: CtlAction) -> Action {
        match action {
            CtlAction::Status => Action::Status,
            CtlAction::Denials { since } => Action::Denials { since },
            CtlAction::Offenders { since, top } => Action::Offenders { since, top },
            CtlAction::Reload => Action::Reload,
            CtlAction::Bans => Action::Bans,
            CtlAction::Ban {
                cidr,
                duration,
                reason,
            } => Action::Ban {
                cidr,
                duration,
                reason,
            },
            CtlAction::Unban { cidr } => Action::Unban { cidr },
            CtlAction::Timeline { since } => Action::Timeline { since },
        }
    }
}
