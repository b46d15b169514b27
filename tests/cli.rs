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
    assert!(stdout.contains("alerts      off"), "{stdout}");
}

#[test]
fn check_prints_the_alerts_without_the_webhooks_secret_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:8000\"\n[alerts]\nwebhook = \"http://relay:8080/hooks/T1/secret\"\ndenial_rate = \"20/s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("alerts"))
        .unwrap_or_default();
    assert!(line.contains("http://relay:8080/…"), "{stdout}");
    assert!(
        line.contains("50%") && line.contains("20/s") && line.contains("10m"),
        "{line}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
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
    let app = joinshield::testkit::standin::spawn("127.0.0.1:0".parse().unwrap(), false)
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

#[test]
fn check_names_a_missing_list_and_warns_about_allowed_and_blocked_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = "[server]\nupstream = \"http://127.0.0.1:1\"\n[lists]\nblocklist = \"block.txt\"\nallowlist = \"allow.txt\"\n";
    std::fs::write(&path, base).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("block.txt") && stderr.contains("allow.txt"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("block.txt"), "198.51.100.0/24\n").unwrap();
    std::fs::write(
        dir.path().join("allow.txt"),
        "198.51.100.9 reason=\"monitor\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "warning: 198.51.100.9/32 is in the allowlist and 198.51.100.0/24 in the blocklist"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("blocklist 1 entries, allowlist 1"),
        "{stdout}"
    );

    // A truncated list line is refused with its file and line.
    std::fs::write(
        dir.path().join("block.txt"),
        "198.51.100.0/24\n203.0.113.7 reason=\"cut sho",
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
    assert!(stderr.contains("block.txt:2"), "{stderr}");
}
