//! `promtool check metrics` for the exposition tests.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `exposition` when it is installed; without it the check is
/// skipped, loudly, except under CI (`CI` set), where it must run.
pub fn promtool_accepts(exposition: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required under CI (Debian package `prometheus`)"
            );
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED: promtool not installed");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics refused the exposition ({}):\n{said}\n---\n{exposition}",
        out.status
    );
}
