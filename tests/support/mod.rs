//! Test support: a shield in front of the stand-in app (or an upstream the test runs) on
//! ephemeral loopback ports, the shield binary as a child process, a strict HTTP/1.1 client
//! ([`client`]), and the functions every test file shares.
#![allow(dead_code)]

pub mod client;
pub mod promtool;
pub mod recorder;
pub mod redis;
pub mod spellings;

#[allow(unused_imports)]
pub use client::{
    exchange, get, request, upload, Answer, Broken, Conn, End, Exchange, Sent, Uploaded,
};

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use joinshield::testkit::standin::{self, StandIn};
use joinshield::Running;

/// A shield and its stand-in upstream.
pub struct Harness {
    pub shield: Running,
    pub app: StandIn,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub fn addr(&self) -> SocketAddr {
        self.shield.addr
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("joinshield.toml")
    }
    /// The shield's log lines so far (after flushing the queue).
    pub async fn log_lines(&self) -> Vec<String> {
        log_lines(&self.shield, self.dir.path()).await
    }
    /// Requests the stand-in has answered.
    pub fn upstream_requests(&self) -> u64 {
        self.app
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Stops the shield (which saves its state file) and starts it again on the same
    /// configuration, in front of the same stand-in.
    pub async fn restart(self) -> Harness {
        let Harness { shield, app, dir } = self;
        shield.shutdown().await;
        let shield = start(&dir.path().join("joinshield.toml")).await;
        Harness { shield, app, dir }
    }
}

/// A shield in front of an upstream the test runs itself (e.g. a [`recorder::Recorder`]).
pub struct Fronted {
    pub shield: Running,
    pub dir: tempfile::TempDir,
}

impl Fronted {
    pub fn addr(&self) -> SocketAddr {
        self.shield.addr
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("joinshield.toml")
    }
    /// The shield's log lines so far (after flushing the queue).
    pub async fn log_lines(&self) -> Vec<String> {
        log_lines(&self.shield, self.dir.path()).await
    }
}

/// The log lines `shield` wrote so far into `shield.log` in `dir` (after flushing its queue).
pub async fn log_lines(shield: &Running, dir: &Path) -> Vec<String> {
    shield.flush_log().await;
    std::fs::read_to_string(dir.join("shield.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The config text for a shield in front of `upstream`: `[server]` with loopback ephemeral
/// listeners, plus `extra_server` lines inside `[server]`, plus `rest` after it.
pub fn config_text(upstream: &str, extra_server: &str, rest: &str) -> String {
    config_text_admin(upstream, extra_server, "", rest)
}

/// As [`config_text`], with `extra_admin` lines inside `[admin]`.
pub fn config_text_admin(
    upstream: &str,
    extra_server: &str,
    extra_admin: &str,
    rest: &str,
) -> String {
    // Logs go to a file beside the config (read by tests), unless the test sets [log] itself.
    let log = if rest.contains("[log]") {
        ""
    } else {
        "[log]\nfile = \"shield.log\"\n"
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n{extra_server}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{extra_admin}\n\n{log}{rest}\n"
    )
}

/// Starts a shield on the configuration file at `path`.
pub async fn start(path: &Path) -> Running {
    let loaded = joinshield::config::load(path).unwrap_or_else(|e| panic!("config refused: {e:?}"));
    joinshield::start(loaded).await.unwrap()
}

/// Writes the configuration (as [`config_text_admin`]) into `dir` and starts a shield on it.
pub async fn start_in(
    dir: &Path,
    upstream: SocketAddr,
    extra_server: &str,
    extra_admin: &str,
    rest: &str,
) -> Running {
    let path = dir.join("joinshield.toml");
    let text = config_text_admin(
        &format!("http://{upstream}"),
        extra_server,
        extra_admin,
        rest,
    );
    std::fs::write(&path, text).unwrap();
    start(&path).await
}

/// Starts a recording stand-in.
pub async fn standin() -> StandIn {
    standin::spawn("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap()
}

/// Starts a recording stand-in and a shield in front of it.
pub async fn spawn_shield(extra_server: &str, rest: &str) -> Harness {
    spawn_full(standin().await, extra_server, "", rest).await
}

/// Starts a recording stand-in and a shield whose `[admin]` has `extra_admin` lines.
pub async fn spawn_shield_admin(extra_admin: &str, rest: &str) -> Harness {
    spawn_full(standin().await, "", extra_admin, rest).await
}

/// Starts a recording stand-in and a shield in front of it, after writing `files` (name,
/// text) beside its configuration (list files a configuration names are read at start).
pub async fn spawn_shield_with_files(rest: &str, files: &[(&str, &str)]) -> Harness {
    let app = standin().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let shield = start_in(dir.path(), app.addr, "", "", rest).await;
    Harness { shield, app, dir }
}

async fn spawn_full(app: StandIn, extra_server: &str, extra_admin: &str, rest: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let shield = start_in(dir.path(), app.addr, extra_server, extra_admin, rest).await;
    Harness { shield, app, dir }
}

/// Starts a shield in front of `upstream` (an address), with `extra_server` lines in `[server]`
/// and `rest` after it.
pub async fn spawn_shield_at(upstream: SocketAddr, extra_server: &str, rest: &str) -> Fronted {
    let dir = tempfile::tempdir().unwrap();
    let shield = start_in(dir.path(), upstream, extra_server, "", rest).await;
    Fronted { shield, dir }
}

/// A loopback address nothing listens on (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A guest request from client `ip`, named in `X-Forwarded-For` by the trusted loopback peer.
pub async fn from(h: &Harness, ip: &str, path: &str) -> Answer {
    get(h.addr(), path, &format!("X-Forwarded-For: {ip}\r\n")).await
}

/// An admin request with an optional bearer token.
pub async fn admin(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(h.shield.admin_addr, raw).await
}

/// Reloads `shield`'s configuration on a blocking thread (it reads files) and fails the test
/// unless the reload was applied.
pub async fn reload_applied(shield: &Running) {
    let worker = shield.reloader();
    let outcome = tokio::task::spawn_blocking(move || worker.reload())
        .await
        .unwrap();
    assert!(
        matches!(outcome, joinshield::ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

/// Waits until `shield` runs configuration version `v` or later, failing after `within`.
pub async fn wait_version(shield: &Running, v: u64, within: Duration) {
    let mut rx = shield.version();
    tokio::time::timeout(within, rx.wait_for(|n| *n >= v))
        .await
        .unwrap_or_else(|_| panic!("version {v} not reached within {within:?}"))
        .unwrap();
}

/// Polls `f` until it returns true, failing after `secs` seconds; returns how long it took.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(secs);
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a run of the shield binary printed, and how it exited.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// Both outputs, stdout first.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the shield binary with `args` to its end (from a test thread: blocks it).
pub fn run_bin<I, A>(args: I) -> Ran
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_joinshield"))
        .args(args)
        .output()
        .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `joinshield check -c CONFIG`.
pub fn check(config: &Path) -> Ran {
    run_bin([OsStr::new("check"), OsStr::new("-c"), config.as_os_str()])
}

/// Runs `joinshield ctl ARGS` against the admin listener at `admin_addr` with `token`.
pub async fn ctl(admin_addr: SocketAddr, token: &str, args: &[&str]) -> Ran {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_joinshield"));
    cmd.arg("ctl")
        .args(args)
        .arg("--admin")
        .arg(format!("http://{admin_addr}"))
        .env("JOINSHIELD_ADMIN_TOKEN", token);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The shield binary as a child process.
pub struct Child {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The HTTPS listener, when the configuration has `tls_listen`.
    pub tls_addr: Option<SocketAddr>,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Child {
    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// CPU time (user + system) the process has used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces) are split on spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `joinshield run` on a config in front of `upstream` (with `extra_server` in `[server]`
/// and `rest` after it), behind `wrapper` (e.g. `["prlimit", "--nofile=64"]`), and returns once
/// it printed its addresses.
pub fn spawn_binary(
    upstream: SocketAddr,
    extra_server: &str,
    rest: &str,
    wrapper: &[&str],
) -> Child {
    spawn_binary_with_files(upstream, extra_server, rest, wrapper, &[], &[])
}

/// As [`spawn_binary`], after writing `files` (name, text) beside the configuration (lists,
/// certificates), with `env` (name, value) added to the process's environment.
pub fn spawn_binary_with_files(
    upstream: SocketAddr,
    extra_server: &str,
    rest: &str,
    wrapper: &[&str],
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Child {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("joinshield.toml");
    std::fs::write(
        &path,
        config_text(&format!("http://{upstream}"), extra_server, rest),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_joinshield");
    let mut cmd = match wrapper.split_first() {
        Some((first, args)) => {
            let mut c = std::process::Command::new(first);
            c.args(args).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    let mut child = cmd
        .envs(env.iter().copied())
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    // "joinshield: serving guests on http://A[ and https://B], admin on http://C"
    let after = |marker: &str| -> Option<SocketAddr> {
        let rest = banner.split(marker).nth(1)?;
        let end = rest.find([',', ' ']).unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let addr = after("guests on http://").unwrap_or_else(|| panic!("no address in {banner:?}"));
    let tls_addr = after(" and https://");
    let admin = banner.rsplit("http://").next().unwrap().trim().to_string();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Child {
        child,
        addr,
        tls_addr,
        admin,
        dir,
    }
}
