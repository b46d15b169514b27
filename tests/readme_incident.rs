//! The README's incident rehearsal, run as it stands: the block after the marker
//! `<!-- rehearsed by tests/readme_incident.rs` is extracted from README.md and run with `sh -e`
//! beside the binary serving the shipped configuration (copied to a temporary folder, its
//! listeners moved to free loopback ports). When the README drifts from what the shield does,
//! this test fails.

mod support;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

const TOKEN: &str = "readme-rehearsal-admin-token-0123";

/// A free loopback port (bound and released: the shield binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shell block of README.md that the rehearsal marker points at.
fn rehearsal_block() -> String {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let after = readme
        .split("<!-- rehearsed by tests/readme_incident.rs")
        .nth(1)
        .expect("README.md has lost its rehearsal block");
    let block = after
        .split_once("```sh\n")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .expect("the rehearsal marker is followed by a ```sh block");
    format!("{block}\n")
}

/// Copies the shipped configuration and lists into `dir/config`, with the guest and admin
/// listeners on `guest`/`admin` and the upstream at `upstream`.
fn shipped_config(dir: &Path, guest: u16, admin: u16, upstream: std::net::SocketAddr) {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    for list in ["blocklist.txt", "allowlist.txt", "revoked-tokens.txt"] {
        std::fs::copy(Path::new("config").join(list), config.join(list)).unwrap();
    }
    let text = std::fs::read_to_string("config/joinshield.toml").unwrap();
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["server"]["listen"] = toml_edit::value(format!("127.0.0.1:{guest}"));
    doc["server"]["upstream"] = toml_edit::value(format!("http://{upstream}"));
    doc["admin"]["listen"] = toml_edit::value(format!("127.0.0.1:{admin}"));
    std::fs::write(config.join("joinshield.toml"), doc.to_string()).unwrap();
}

#[tokio::test]
async fn the_readme_incident_commands_run_against_the_shipped_config() {
    let block = rehearsal_block();
    let app = support::standin().await;
    let dir = tempfile::tempdir().unwrap();
    let (guest, admin) = (free_port(), free_port());
    shipped_config(dir.path(), guest, admin, app.addr);

    let bin = Path::new(env!("CARGO_BIN_EXE_joinshield"));
    let mut shield = Command::new(bin)
        .args(["run", "-c", "config/joinshield.toml"])
        .current_dir(dir.path())
        .env("JOINSHIELD_ADMIN_TOKEN", TOKEN)
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line on stderr says it serves.
    let stderr = shield.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains("serving guests"), "{banner}");
    std::thread::spawn(move || for _ in lines.by_ref() {});

    // Something to snapshot: a malformed token and a guessing guest.
    let guest_addr: std::net::SocketAddr = format!("127.0.0.1:{guest}").parse().unwrap();
    for path in ["/api/v1/events/x", "/api/v1/events/no-such-event-1"] {
        support::get(guest_addr, path, "").await;
    }

    let script = block
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{guest}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"))
        .replace(
            "KNOWN_GOOD_TOKEN",
            joinshield::testkit::standin::DEMO_TOKENS[0],
        );
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-e", "-x", "-c", &script])
            .current_dir(&dir_path)
            .env("PATH", path)
            .env("JOINSHIELD_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &shield.id().to_string()])
        .status();
    let exit = shield.wait().unwrap();
    assert!(
        out.status.success(),
        "the rehearsal failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert_eq!(exit.code(), Some(0));

    // What the engineer is told along the way.
    for said in [
        "ok (sha256",
        "ready",
        "HTTP/1.1 200",
        "Banned 198.51.100.0/24 for 2h",
        "198.51.100.0/24",
        "Reloaded: version 2 is in force.",
        "standing in for 300/min burst 100 per ip",
        "Lifted the ban of 198.51.100.0/24",
    ] {
        assert!(stdout.contains(said), "{said:?} not in\n{stdout}\n{stderr}");
    }
    // The snapshot for the ticket is NDJSON, one denial a line.
    let snapshot = std::fs::read_to_string(dir.path().join("snapshot.ndjson")).unwrap();
    assert!(snapshot.lines().count() >= 1, "{snapshot:?}");
    for line in snapshot.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["message"], "Join token access denied", "{line}");
    }
    // The log is on stdout, as the README says, and holds the reload and the ban.
    let log = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(log.contains("Shield configuration reloaded"), "{log}");
    assert!(log.contains("Manual ban"), "{log}");
}
