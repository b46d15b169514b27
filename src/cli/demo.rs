//! `joinshield demo`: the shipped configuration, copied to a fresh folder, in front of the
//! built-in stand-in of the guest API, with a self-signed certificate made at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::check::load_or_error;
use crate::config::Loaded;
use crate::testkit::standin::StandIn;

/// The shipped configuration and its example lists, embedded for `demo`.
const SHIPPED: [(&str, &str); 4] = [
    (
        "joinshield.toml",
        include_str!("../../config/joinshield.toml"),
    ),
    ("blocklist.txt", include_str!("../../config/blocklist.txt")),
    ("allowlist.txt", include_str!("../../config/allowlist.txt")),
    (
        "revoked-tokens.txt",
        include_str!("../../config/revoked-tokens.txt"),
    ),
];

/// The demo's admin token: the one already in `$JOINSHIELD_ADMIN_TOKEN`, else a random one
/// made now and put there, so `ctl` can be tried against the demo (the banner prints it). Call
/// it before any thread starts: it changes the process environment.
pub fn admin_token() -> String {
    const VAR: &str = "JOINSHIELD_ADMIN_TOKEN";
    if let Some(t) = std::env::var(VAR).ok().filter(|t| !t.is_empty()) {
        return t;
    }
    let bytes: [u8; 16] = rand::random();
    let token = hex::encode(bytes);
    std::env::set_var(VAR, &token);
    token
}

/// A demo ready to serve: its configuration, the banner to print (`{shield}`, `{https}` and
/// `{admin}` stand for the addresses it really serves on, filled in once it serves), its
/// folder, its stand-in.
pub struct Demo {
    /// The copied shipped configuration, loaded.
    pub loaded: Loaded,
    /// What to print once the shield serves.
    pub banner: String,
    dir: PathBuf,
    /// The stand-in guest API (stops when dropped).
    pub standin: StandIn,
}

impl Demo {
    /// Removes the demo's folder.
    pub fn clean_up(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sets up the demo: the stand-in, the copied configuration and the certificate pair.
pub async fn prepare(
    listen: SocketAddr,
    admin: SocketAddr,
    tls_listen: SocketAddr,
) -> Result<Demo> {
    let standin =
        crate::testkit::standin::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), false).await?;
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
    let token_env = loaded.config.admin.token_env.clone();
    let token = std::env::var(&token_env).unwrap_or_default();
    let t = crate::testkit::standin::DEMO_TOKENS[0];
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
         The admin API is on http://{{admin}}; its token for this demo is in ${token_env}:\n  \
         export {token_env}={token}\n  \
         joinshield ctl --admin http://{{admin}} status\n  \
         joinshield ctl --admin http://{{admin}} denials --since 15m\n  \
         joinshield ctl --admin http://{{admin}} ban 203.0.113.7 --for 10m --reason \"demo\"\n  \
         joinshield ctl -c {config} bans    (ctl reads the admin address from the copied configuration too)\n\
         Press Ctrl-C to stop.",
        standin.addr,
        path.display(),
        config = path.display(),
    );
    Ok(Demo {
        loaded,
        banner,
        dir,
        standin,
    })
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
