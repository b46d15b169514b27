//! The command line as an operator uses it: `check`, `run` with signals, `healthcheck`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_joinshield");

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args(["check", "-c", "config/joinshield.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("upstream    http://127.0.0.1:8000"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"x\"\nupstrem = \"http://a:1\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:2: server.listen"), "{stderr}");
    assert!(
        stderr.contains("bad.toml:3: server.upstrem: unknown key"),
        "{stderr}"
    );
    assert!(stderr.contains("server.upstream: missing"), "{stderr}");
}

#[tokio::test]
async fn run_serves_until_sigterm_then_exits_zero() {
    let app = joinshield::standin::spawn("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        support::config_text(&format!("http://{}", app.addr), "", ""),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let admin = banner.rsplit("http://").next().unwrap().trim().to_string();
    let a = support::get(addr, "/api/v1/events/demo-wedding-2026", "").await;
    assert_eq!(a.status, 200);
    let health = Command::new(BIN)
        .args(["healthcheck", "--admin", &admin])
        .status()
        .unwrap();
    assert!(health.success());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let unhealthy = Command::new(BIN)
        .args(["healthcheck", "--admin", &admin])
        .status()
        .unwrap();
    assert!(!unhealthy.success());
}
