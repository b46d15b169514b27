//! promtool for the tests: `check metrics` of the exposition, and any other check (config, rules,
//! rule unit tests) by [`promtool`].

use std::io::Write;
use std::process::{Command, Output, Stdio};

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

/// Runs `promtool ARGS` in the crate's folder and returns what it said, or `None` when promtool
/// is not installed: the check is skipped, loudly, except under CI (`CI` set), where it must run.
pub fn promtool(args: &[&str]) -> Option<Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required under CI (Debian package `prometheus`)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: promtool not installed (promtool {})",
                args.join(" ")
            );
            None
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

/// Runs `promtool ARGS` (see [`promtool`]) and fails the test unless it succeeds.
pub fn promtool_succeeds(args: &[&str]) {
    if let Some(out) = promtool(args) {
        assert!(
            out.status.success(),
            "promtool {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
