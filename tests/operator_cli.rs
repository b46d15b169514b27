//! The binary as the on-call engineer uses it in an incident: `ctl` and `healthcheck` while the
//! configuration on disk is half-written, options anywhere, `--json` for every action, sentences
//! and tables for people, guard rails on bans and tokens, no panic on a closed pipe, `check`
//! reporting everything at once, folded repeats written on SIGTERM and SIGHUP, and the demo's
//! `ctl` lines.

mod support;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::*;

const TOKEN: &str = "operator-cli-admin-token-0123456";
const BIN: &str = env!("CARGO_BIN_EXE_joinshield");

/// A free loopback port (bound and released: the shield binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary serving a configuration whose admin listener is a real port (so `ctl -c` can
/// find it), its log in `shield.log`.
struct Served {
    child: std::process::Child,
    dir: tempfile::TempDir,
    guest: SocketAddr,
    admin: SocketAddr,
}

impl Served {
    fn config(&self) -> PathBuf {
        self.dir.path().join("joinshield.toml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shield.log")).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (polling the file, bounded) until the log holds `what`.
    async fn log_shows(&self, what: &str) {
        eventually(10, what, || async { self.log().contains(what) }).await;
    }

    /// SIGTERM, then waits for the exit (the process ends within its shutdown grace).
    fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(upstream: SocketAddr, guest: u16, admin: u16, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{guest}\"\nupstream = \"http://{upstream}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[log]\nfile = \"shield.log\"\n\n{rest}\n"
    )
}

fn serve(upstream: SocketAddr, rest: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (guest, admin) = (free_port(), free_port());
    let path = dir.path().join("joinshield.toml");
    std::fs::write(&path, config_text(upstream, guest, admin, rest)).unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env("JOINSHIELD_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("serving guests"), "{banner}");
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Served {
        child,
        dir,
        guest: format!("127.0.0.1:{guest}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
    }
}

/// Runs the binary with `args` (the admin token in the environment) on a blocking thread.
async fn bin(args: &[&str]) -> Ran {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("JOINSHIELD_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const LIMIT: &str =
    "[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n";

#[tokio::test]
async fn ctl_and_healthcheck_keep_working_while_the_file_on_disk_is_half_written() {
    let app = standin().await;
    let mut s = serve(app.addr, LIMIT);
    let config = s.config().display().to_string();
    // A half-saved edit: TOML that does not parse.
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(
        s.config(),
        format!("{text}\n[[limit]]\nname = \"guest-token\nrate = \"30"),
    )
    .unwrap();
    s.log_shows("Shield configuration rejected").await;

    // Options after the action, -c anywhere.
    let status = bin(&["ctl", "status", "-c", &config]).await;
    assert!(status.success(), "{}", status.text());
    assert!(
        status.stdout.contains("last rejected") && status.stdout.contains("1 error"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("not valid TOML here"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("limits        1 in force:"),
        "{}",
        status.stdout
    );
    let ban = bin(&[
        "ctl",
        "ban",
        "203.0.113.9",
        "--for",
        "2h",
        "-c",
        &config,
        "--reason",
        "half-written config",
    ])
    .await;
    assert!(ban.success(), "{}", ban.text());
    assert!(
        ban.stdout
            .starts_with("Banned 203.0.113.9/32 for 2h, until "),
        "{}",
        ban.stdout
    );
    let health = bin(&["healthcheck", "-c", &config]).await;
    assert!(health.success(), "{}", health.text());
    // The ban holds and the old configuration still serves.
    let a = get(s.guest, "/", "X-Forwarded-For: 203.0.113.9\r\n").await;
    assert_eq!(a.status, 429);
    let json = bin(&["ctl", "-c", &config, "--json", "status"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert!(v["last_rejected"]["errors"][0]
        .as_str()
        .unwrap()
        .contains("not valid TOML"));
    assert_eq!(s.stop().code(), Some(0));
}

#[tokio::test]
async fn every_ctl_action_answers_json_with_json_and_sentences_without() {
    let app = standin().await;
    let mut s = serve(app.addr, LIMIT);
    let admin = format!("http://{}", s.admin);
    for _ in 0..3 {
        get(
            s.guest,
            "/api/v1/events/demo-wedding-2026",
            "X-Forwarded-For: 203.0.113.20\r\n",
        )
        .await;
    }
    let actions: [&[&str]; 7] = [
        &["status"],
        &["denials", "--since", "15m"],
        &["offenders", "--since", "15m", "--top", "5"],
        &["reload"],
        &["ban", "198.51.100.0/24", "--for", "90m", "--reason", "test"],
        &["bans"],
        &["unban", "198.51.100.0/24"],
    ];
    for action in actions {
        let mut args = vec!["ctl"];
        args.extend_from_slice(action);
        args.extend(["--admin", &admin, "--json"]);
        let ran = bin(&args).await;
        assert!(ran.success(), "{action:?}: {}", ran.text());
        for line in ran.stdout.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{action:?}: {e}: {line}"));
        }
        assert!(!ran.stdout.trim().is_empty(), "{action:?}");
    }
    // For people: a table of bans with the time left as people say it, times in UTC.
    bin(&[
        "ctl",
        "--admin",
        &admin,
        "ban",
        "198.51.100.0/24",
        "--for",
        "2h",
    ])
    .await;
    let bans = bin(&["ctl", "bans", "--admin", &admin]).await;
    assert!(bans.success(), "{}", bans.text());
    let lines: Vec<&str> = bans.stdout.lines().collect();
    assert_eq!(lines[0], "1 active ban (times in UTC):", "{}", bans.stdout);
    assert!(
        lines[1].trim_start().starts_with("network"),
        "{}",
        bans.stdout
    );
    let row = lines[2];
    assert!(row.contains("198.51.100.0/24"), "{row}");
    // 2h, or a second short of it by the time ctl reads it: never "7199s".
    assert!(
        row.contains(" 2h ") || row.contains(" 1h 59m "),
        "{}",
        bans.stdout
    );
    let denials = bin(&["ctl", "--admin", &admin, "denials"]).await;
    assert!(
        denials.stdout.starts_with("time (UTC)"),
        "{}",
        denials.stdout
    );
    assert!(denials.stdout.contains("2 denials in the last 15m"));
    let reload = bin(&["ctl", "reload", "--admin", &admin]).await;
    assert!(
        reload.stdout.starts_with("Reloaded: version "),
        "{}",
        reload.stdout
    );
    assert_eq!(s.stop().code(), Some(0));
}

#[tokio::test]
async fn bans_too_broad_or_too_long_are_refused_with_the_reason() {
    let app = standin().await;
    let mut s = serve(app.addr, "");
    let admin = format!("http://{}", s.admin);
    for (cidr, duration, why) in [
        ("0.0.0.0/0", "1h", "broader than an IPv4 /8"),
        ("::/0", "1h", "broader than an IPv6 /32"),
        ("128.0.0.0/1", "1h", "broader than an IPv4 /8"),
        ("2001:db8::/31", "1h", "broader than an IPv6 /32"),
        ("198.51.100.0/24", "100000d", "at most 365d"),
    ] {
        let ran = bin(&["ctl", "ban", cidr, "--for", duration, "--admin", &admin]).await;
        assert_eq!(ran.code, Some(1), "{cidr}: {}", ran.text());
        assert!(
            ran.stderr.contains("(400)") && ran.stderr.contains(why),
            "{cidr}: {}",
            ran.stderr
        );
        let json = bin(&[
            "ctl", "ban", cidr, "--for", duration, "--admin", &admin, "--json",
        ])
        .await;
        assert_eq!(json.code, Some(1));
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
    // The broadest allowed ones are accepted.
    for cidr in ["10.0.0.0/8", "2001:db8::/32"] {
        let ran = bin(&["ctl", "ban", cidr, "--for", "365d", "--admin", &admin]).await;
        assert!(ran.success(), "{cidr}: {}", ran.text());
    }
    assert_eq!(s.stop().code(), Some(0));
}

#[tokio::test]
async fn ten_wrong_admin_tokens_from_one_peer_get_429_for_a_minute() {
    let var = "JOINSHIELD_TEST_TOKEN_OPERATOR_THROTTLE";
    std::env::set_var(var, "the-right-token-for-the-throttle");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), "").await;
    for i in 0..10 {
        let a = admin(&h, "GET", "/admin/status", Some("guess"), "").await;
        assert_eq!(a.status, 401, "wrong token {i}");
    }
    for token in ["guess", "the-right-token-for-the-throttle"] {
        let a = admin(&h, "GET", "/admin/status", Some(token), "").await;
        assert_eq!(a.status, 429, "{}", a.text());
        let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // /healthz and /metrics are not behind the token.
    let a = request(
        h.shield.admin_addr,
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".to_string(),
    )
    .await;
    assert_eq!(a.status, 200);
}

/// Spawns the binary with `args`, closes the read end of its stdout at once, and returns how
/// it exited and what it said on stderr.
async fn with_stdout_closed(args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env("JOINSHIELD_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_everywhere() {
    let app = standin().await;
    let mut s = serve(app.addr, LIMIT);
    let admin = format!("http://{}", s.admin);
    for i in 0..50 {
        get(
            s.guest,
            "/api/v1/events/demo-wedding-2026",
            &format!("X-Forwarded-For: 203.0.113.{}\r\n", i + 1),
        )
        .await;
        get(
            s.guest,
            "/api/v1/events/demo-wedding-2026",
            &format!("X-Forwarded-For: 203.0.113.{}\r\n", i + 1),
        )
        .await;
    }
    let admin_args = ["--admin", admin.as_str()];
    let runs: Vec<Vec<&str>> = vec![
        [&["ctl", "denials"][..], &admin_args].concat(),
        [&["ctl", "denials", "--json"][..], &admin_args].concat(),
        [&["ctl", "status"][..], &admin_args].concat(),
        [&["ctl", "offenders"][..], &admin_args].concat(),
        [&["ctl", "bans"][..], &admin_args].concat(),
        vec![
            "kuma-template",
            "--base-url",
            "https://app.example.com",
            "--event-token",
            "demo-wedding-2026",
        ],
        vec!["check", "-c", "config/joinshield.toml"],
        vec!["--help"],
    ];
    for args in runs {
        let (code, stderr) = with_stdout_closed(&args).await;
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
fn check_reports_config_and_list_errors_in_one_run_sorted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        dir.path().join("allow.txt"),
        "203.0.113.5\nnot-an-address\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\n\n\
         [[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"lots\"\n\n\
         [lists]\nblocklist = \"missing.txt\"\nallowlist = \"allow.txt\"\n\n\
         [[switch]]\nname = \"maintenance\"\nroutes = [\"nowhere\"]\n\n[server2]\n",
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.code, Some(1), "{}", out.text());
    let errors: Vec<&str> = out.stderr.lines().skip(1).map(str::trim).collect();
    let c = path.display().to_string();
    let expected_starts = [
        format!("{c}:8: limit \"guest-ip\" rate:"),
        format!("{c}:16: switch \"maintenance\" routes[0]:"),
        format!("{c}:18: server2:"),
        format!(
            "{}: lists.blocklist:",
            dir.path().join("missing.txt").display()
        ),
        format!(
            "{}:2: lists.allowlist:",
            dir.path().join("allow.txt").display()
        ),
    ];
    assert_eq!(errors.len(), expected_starts.len(), "{}", out.stderr);
    for (e, start) in errors.iter().zip(&expected_starts) {
        assert!(
            e.starts_with(start.as_str()),
            "{e:?} should start {start:?}\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_warns_about_a_short_admin_token_and_a_public_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\n[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"JOINSHIELD_TEST_SHORT_TOKEN\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env("JOINSHIELD_TEST_SHORT_TOKEN", "short")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .contains("warning: the admin token in $JOINSHIELD_TEST_SHORT_TOKEN has 5 characters"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: admin.listen 0.0.0.0:9901 is not a loopback or private address"),
        "{stdout}"
    );
}

/// A client whose malformed-token requests fold: the first is a line, the rest are counted.
async fn fold_some(s: &Served, ip: &str, n: usize) {
    for _ in 0..n {
        let a = get(
            s.guest,
            "/api/v1/events/x",
            &format!("X-Forwarded-For: {ip}\r\n"),
        )
        .await;
        assert_eq!(a.status, 404);
    }
}

fn repeated_lines(log: &str, ip: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("\"ip\":\"{ip}\"")) && l.contains("\"repeated\":"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn folded_repeats_are_written_on_sighup_and_on_sigterm() {
    let app = standin().await;
    let enumeration = "[enumeration]\nmax_failures = 1000\n";
    let mut s = serve(app.addr, enumeration);
    fold_some(&s, "203.0.113.40", 5).await;
    s.signal("HUP");
    s.log_shows("Shield configuration reloaded").await;
    let log = s.log();
    let hup = repeated_lines(&log, "203.0.113.40");
    assert_eq!(hup.len(), 1, "{log}");
    assert!(hup[0].contains("\"repeated\":4"), "{}", hup[0]);
    // The summary comes before the reload's line.
    let at = |what: &str| log.find(what).unwrap();
    assert!(at("\"repeated\":4") < at("Shield configuration reloaded"));

    fold_some(&s, "203.0.113.41", 3).await;
    assert_eq!(s.stop().code(), Some(0));
    let log = s.log();
    let term = repeated_lines(&log, "203.0.113.41");
    assert_eq!(term.len(), 1, "{log}");
    assert!(term[0].contains("\"repeated\":2"), "{}", term[0]);
}

#[tokio::test]
async fn the_demo_prints_a_token_and_ctl_lines_for_the_ports_it_really_uses() {
    // The usual ports taken: the demo has to move.
    let taken_guest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let guest = taken_guest.local_addr().unwrap().to_string();
    let admin = taken_admin.local_addr().unwrap().to_string();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", &guest, "--admin", &admin])
        .args(["--tls-listen", "127.0.0.1:0"])
        .env_remove("JOINSHIELD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (token, ctl_line) = tokio::task::spawn_blocking(move || {
        let mut token = None;
        let mut ctl_line = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let line = line.trim();
            if let Some(t) = line.strip_prefix("export JOINSHIELD_ADMIN_TOKEN=") {
                token = Some(t.to_string());
            }
            if line.starts_with("joinshield ctl --admin") && line.ends_with(" status") {
                ctl_line = Some(line.to_string());
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        (token.unwrap(), ctl_line.unwrap())
    })
    .await
    .unwrap();
    assert!(token.len() >= 16, "{token}");
    assert!(
        !ctl_line.contains(&admin),
        "{ctl_line} points at the taken port"
    );
    let args: Vec<String> = ctl_line
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let ran = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("JOINSHIELD_ADMIN_TOKEN", &token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&ran.stdout).into_owned();
    assert!(ran.status.success(), "{out}");
    assert!(out.starts_with("version       1 (sha256 "), "{out}");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop((taken_guest, taken_admin));
}
