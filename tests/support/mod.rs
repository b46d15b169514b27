//! Test support: a shield in front of the stand-in app on ephemeral loopback ports, and a raw
//! socket client that sends exactly the bytes a test gives it.
#![allow(dead_code)]

pub mod promtool;
pub mod redis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use joinshield::testkit::standin::{self, StandIn};
use joinshield::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        self.shield.flush_log().await;
        std::fs::read_to_string(self.dir.path().join("shield.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
    /// Requests the stand-in has answered.
    pub fn upstream_requests(&self) -> u64 {
        self.app
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }
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

/// Starts a recording stand-in and a shield in front of it.
pub async fn spawn_shield(extra_server: &str, rest: &str) -> Harness {
    let app = standin::spawn("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    spawn_shield_to(app, extra_server, rest).await
}

/// Starts a shield in front of an already running stand-in.
pub async fn spawn_shield_to(app: StandIn, extra_server: &str, rest: &str) -> Harness {
    spawn_full(app, extra_server, "", rest).await
}

/// Starts a recording stand-in and a shield whose `[admin]` has `extra_admin` lines.
pub async fn spawn_shield_admin(extra_admin: &str, rest: &str) -> Harness {
    let app = standin::spawn("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    spawn_full(app, "", extra_admin, rest).await
}

async fn spawn_full(app: StandIn, extra_server: &str, extra_admin: &str, rest: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("joinshield.toml");
    let text = config_text_admin(
        &format!("http://{}", app.addr),
        extra_server,
        extra_admin,
        rest,
    );
    std::fs::write(&path, text).unwrap();
    let loaded =
        joinshield::config::load(&path).unwrap_or_else(|e| panic!("config refused: {e:?}"));
    let shield = joinshield::start(loaded).await.unwrap();
    Harness { shield, app, dir }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `raw` on a new connection and reads until the server closes it (bounded by 10 s).
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    buf
}

/// Parses the first response in `bytes` (Content-Length or to the end).
pub fn parse(bytes: &[u8]) -> Answer {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&bytes[..text_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &bytes[text_end + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match len {
        Some(n) => rest[..n.min(rest.len())].to_vec(),
        None => rest.to_vec(),
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A GET with `Connection: close` and extra header lines (each ending `\r\n`).
pub async fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{extra}\r\n");
    parse(&send_raw(addr, raw.as_bytes()).await)
}

/// An admin request with an optional bearer token; returns status and body.
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
    parse(&send_raw(h.shield.admin_addr, raw.as_bytes()).await)
}

/// A keep-alive connection that sends requests one after another and reads each answer
/// (Content-Length framed, as the stand-in and the shield's own answers are).
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        Ok(KeepAlive {
            stream: TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    /// Sends `raw` and reads one answer; an error means the connection failed.
    pub async fn request(&mut self, raw: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(raw).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let answer = parse(&self.buf[..end + 4 + len]);
                    self.buf.drain(..end + 4 + len);
                    return Ok(answer);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s")
                })??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

pub mod recorder;
pub mod spellings;

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
    pub async fn log_lines(&self) -> Vec<String> {
        self.shield.flush_log().await;
        std::fs::read_to_string(self.dir.path().join("shield.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Starts a shield in front of `upstream` (an address), with `extra_server` lines in `[server]`
/// and `rest` after it.
pub async fn spawn_shield_at(upstream: SocketAddr, extra_server: &str, rest: &str) -> Fronted {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("joinshield.toml");
    std::fs::write(
        &path,
        config_text(&format!("http://{upstream}"), extra_server, rest),
    )
    .unwrap();
    let loaded =
        joinshield::config::load(&path).unwrap_or_else(|e| panic!("config refused: {e:?}"));
    let shield = joinshield::start(loaded).await.unwrap();
    Fronted { shield, dir }
}

/// Sends `raw` on a new connection and reads answers until the server closes the connection or
/// `want` final answers have arrived (bounded by 10 s). Returns the final answers (1xx interim
/// answers are skipped) and whether the server closed the connection.
pub async fn exchange(addr: SocketAddr, raw: &[u8], want: usize) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server may close before reading everything; what it answered still counts.
    let _ = s.write_all(raw).await;
    read_answers(&mut s, want).await
}

/// Reads answers from `s` as [`exchange`] does.
pub async fn read_answers(s: &mut TcpStream, want: usize) -> (Vec<Answer>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let interim = head.starts_with("http/1.1 1");
            let len = if interim {
                0
            } else {
                head.lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0)
            };
            if buf.len() < end + 4 + len {
                break;
            }
            let answer = parse(&buf[..end + 4 + len]);
            buf.drain(..end + 4 + len);
            if !interim {
                answers.push(answer);
            }
        }
        if answers.len() >= want {
            return (answers, false);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (answers, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (answers, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The shield binary as a child process.
pub struct Child {
    pub child: std::process::Child,
    pub addr: SocketAddr,
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
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
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
    let addr: SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .parse()
        .unwrap();
    let admin = banner.rsplit("http://").next().unwrap().trim().to_string();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Child {
        child,
        addr,
        admin,
        dir,
    }
}

/// Polls `f` until it returns true, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
