//! The command line as an operator uses it: `check`, `run` with signals, `healthcheck`.

mod support;

use std::path::Path;

use support::{check, run_bin, spawn_binary, standin};

#[test]
fn check_accepts_the_shipped_config() {
    let out = check(Path::new("config/joinshield.toml"));
    assert!(out.success(), "{}", out.stderr);
    let stdout = &out.stdout;
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
    let out = check(&path);
    assert!(out.success(), "{}", out.stderr);
    let stdout = &out.stdout;
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
    let out = check(&path);
    assert_eq!(out.code, Some(1));
    let stderr = &out.stderr;
    assert!(stderr.contains("bad.toml:2: server.listen"), "{stderr}");
    assert!(
        stderr.contains("bad.toml:3: server.upstrem: unknown key"),
        "{stderr}"
    );
    assert!(stderr.contains("server.upstream: missing"), "{stderr}");
}

#[tokio::test]
async fn run_serves_until_sigterm_then_exits_zero() {
    let app = standin().await;
    let child = spawn_binary(app.addr, "", "", &[]);
    let admin = child.admin.clone();
    let a = support::get(child.addr, "/api/v1/events/demo-wedding-2026", "").await;
    assert_eq!(a.status, 200);
    assert!(run_bin(["healthcheck", "--admin", &admin]).success());
    child.signal("TERM");
    let status = tokio::task::spawn_blocking(move || child.wait_exit())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!run_bin(["healthcheck", "--admin", &admin]).success());
}

#[test]
fn check_names_a_missing_list_and_warns_about_allowed_and_blocked_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = "[server]\nupstream = \"http://127.0.0.1:1\"\n[lists]\nblocklist = \"block.txt\"\nallowlist = \"allow.txt\"\n";
    std::fs::write(&path, base).unwrap();
    let out = check(&path);
    assert_eq!(out.code, Some(1));
    let stderr = &out.stderr;
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
    let out = check(&path);
    assert!(out.success(), "{}", out.stderr);
    let stdout = &out.stdout;
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
    let out = check(&path);
    assert_eq!(out.code, Some(1));
    let stderr = &out.stderr;
    assert!(stderr.contains("block.txt:2"), "{stderr}");
}
