//! A private `redis-server` on an ephemeral loopback port, without persistence, killed on drop.
//! Without the program the caller skips, loudly, except under CI (`CI` set), where it fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or `None` (after saying so on stderr) when redis-server is not installed.
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral port");
        let mut server = RedisServer { child: None, port };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "redis-server is required under CI (Debian package `redis-server`)"
                );
                let _ = writeln!(std::io::stderr(), "SKIPPED: redis-server not installed");
                None
            }
            Err(e) => panic!("cannot run redis-server: {e}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take();
        self.child = Some(child);
        if let Some(stdout) = stdout {
            wait_ready(stdout);
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }
}

/// Waits (at most 10 s) for the line redis-server logs once it accepts connections: an event,
/// not a poll. The reader thread keeps draining the log so the server never blocks on it.
fn wait_ready(stdout: std::process::ChildStdout) {
    let (ready, is_ready) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Ready to accept connections") {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
        }
    });
    is_ready
        .recv_timeout(Duration::from_secs(10))
        .expect("redis-server did not say it was ready within 10 s");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
