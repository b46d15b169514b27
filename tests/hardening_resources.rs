//! Resource abuse: slow heads, slow bodies, huge heads, idle connection floods, the connection
//! cap and file-descriptor exhaustion. Every attack runs while a well-behaved client keeps
//! asking, and each must keep being answered. Attacks pace themselves with timers (that is the
//! attack); nothing here synchronises on a sleep or asserts a duration.

mod support;

use std::time::Duration;

use support::recorder::{self, Mode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A well-behaved request: keep-alive off, answered 200 by the recorder.
async fn good(addr: std::net::SocketAddr) -> u16 {
    let (answers, _) = exchange(
        addr,
        b"GET /up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        1,
    )
    .await;
    answers.first().map_or(0, |a| a.status)
}

/// Reads until the peer closes (true) or 10 s pass (false); whatever was answered is returned.
async fn closed_within_bound(s: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (false, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slowloris_heads_are_cut_at_header_timeout_while_others_are_served() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "header_timeout = \"1s\"", "").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(shield.addr()).await.unwrap();
        s.write_all(b"GET /up HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // One more that trickles a byte every 100 ms forever: the timeout is for the whole head.
    let addr = shield.addr();
    let trickler = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /up HTTP/1.1\r\nHost: app.test\r\n")
            .await
            .unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..200 {
            tick.tick().await;
            if s.write_all(b"X").await.is_err() {
                return true;
            }
        }
        false
    });
    for _ in 0..20 {
        assert_eq!(good(shield.addr()).await, 200);
    }
    for s in &mut slow {
        let (closed, _) = closed_within_bound(s).await;
        assert!(closed, "a slow head outlived header_timeout");
    }
    assert!(trickler.await.unwrap(), "a trickled head was never cut");
    assert_eq!(good(shield.addr()).await, 200);
    assert!(rec.parsed().iter().all(|p| p.target == "/up"));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_header_timeout() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "header_timeout = \"1s\"", "").await;
    let mut conns = Vec::new();
    // Thousands of idle connections: half never said anything, half finished one request.
    for i in 0..2000 {
        let mut s = TcpStream::connect(shield.addr()).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /up HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .await
                .unwrap();
            let (answers, _) = read_answers(&mut s, 1).await;
            assert_eq!(answers[0].status, 200);
        }
        conns.push(s);
        if i % 500 == 0 {
            assert_eq!(good(shield.addr()).await, 200);
        }
    }
    for s in &mut conns {
        let (closed, _) = closed_within_bound(s).await;
        assert!(closed, "an idle connection was kept past header_timeout");
    }
    assert_eq!(good(shield.addr()).await, 200);
}

#[tokio::test]
async fn max_connections_caps_open_connections_and_frees_slots_as_they_close() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(
        rec.addr,
        "header_timeout = \"60s\"\nmax_connections = 20",
        "",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(shield.addr()).await.unwrap();
        s.write_all(b"GET /up HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let (answers, _) = read_answers(&mut s, 1).await;
        assert_eq!(answers[0].status, 200);
        held.push(s);
    }
    // The 21st waits in the backlog: it is not served while every slot is taken. (A wait that
    // runs out proves nothing wrong on a slow machine; an answer here is the failure.)
    let mut waiting = TcpStream::connect(shield.addr()).await.unwrap();
    waiting
        .write_all(b"GET /up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    assert_eq!(rec.parsed().len(), 20);
    // One slot frees: the waiting connection is accepted and answered.
    drop(held.pop());
    let (answers, _) = read_answers(&mut waiting, 1).await;
    assert_eq!(answers.first().map(|a| a.status), Some(200));
}

#[tokio::test]
async fn huge_heads_and_targets_are_refused_without_reading_them_whole() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "", "").await;
    let headers =
        "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            .repeat(500 * 1024 / 80);
    let target = format!("/up?{}", "a".repeat(1024 * 1024));
    let many = "X-A: 1\r\n".repeat(200);
    for (case, raw) in [
        (
            "500 KiB of headers",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\n{headers}\r\n"),
        ),
        (
            "1 MiB target",
            format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        ),
        (
            "200 header lines",
            format!("GET /up HTTP/1.1\r\nHost: app.test\r\n{many}\r\n"),
        ),
    ] {
        let (answers, closed) = exchange(shield.addr(), raw.as_bytes(), 1).await;
        let status = answers.first().map(|a| a.status);
        assert!(
            matches!(status, Some(400 | 414 | 431)) || (answers.is_empty() && closed),
            "{case}: {status:?}"
        );
        assert_eq!(good(shield.addr()).await, 200, "{case}");
    }
    assert!(rec.parsed().iter().all(|p| p.target == "/up"));
}

#[tokio::test]
async fn a_stalled_body_is_408_and_not_blamed_on_the_app() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(rec.addr, "body_timeout = \"1s\"", "").await;
    let mut s = TcpStream::connect(shield.addr()).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    assert_eq!(good(shield.addr()).await, 200);
    let (answers, closed) = read_answers(&mut s, 1).await;
    assert_eq!(answers.first().map(|a| a.status), Some(408));
    assert_eq!(answers[0].json()["error"]["code"], "body_timeout");
    assert_eq!(answers[0].header("connection"), Some("close"));
    let _ = closed;
    let (closed, _) = closed_within_bound(&mut s).await;
    assert!(closed);
    let lines = shield.log_lines().await;
    assert!(lines
        .iter()
        .any(|l| l.contains("\"reason\":\"body_timeout\"")));
    assert!(!lines.iter().any(|l| l.contains("upstream_")), "{lines:?}");
}

#[tokio::test]
async fn a_trickled_body_that_outlasts_upstream_timeout_is_the_clients_fault() {
    let rec = recorder::spawn(Mode::Answer).await;
    let shield = spawn_shield_at(
        rec.addr,
        "body_timeout = \"5s\"\nupstream_timeout = \"1s\"",
        "",
    )
    .await;
    let mut s = TcpStream::connect(shield.addr()).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for _ in 0..1000 {
            tick.tick().await;
            if wr.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
    trickle.abort();
    let a = parse(&got);
    assert_eq!(a.status, 408, "{}", a.text());
    assert_eq!(good(shield.addr()).await, 200);
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_cut_off_and_frees_the_app_connection() {
    let rec = recorder::spawn(Mode::Huge).await;
    let shield = spawn_shield_at(rec.addr, "body_timeout = \"1s\"", "").await;
    let mut readers = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(shield.addr()).await.unwrap();
        s.write_all(b"GET /zip HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        // Never read: the answer fills the socket buffers and stops.
        readers.push(s);
    }
    rec.wait_for(5).await;
    // The shield gives up on each stalled client and drops the app's half-sent answer with it.
    eventually(20, "every stalled answer dropped", || async {
        rec.broken_answers() == 5
    })
    .await;
    rec.set_mode(Mode::Answer);
    assert_eq!(good(shield.addr()).await, 200);
    drop(readers);
}

#[tokio::test]
async fn body_timeout_and_max_connections_are_validated_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\nbody_timeout = \"0s\"\nmax_connections = 0\n",
    )
    .unwrap();
    let errors = format!("{:?}", joinshield::config::load(&path).err().unwrap());
    assert!(errors.contains("server.body_timeout"), "{errors}");
    assert!(errors.contains("server.max_connections"), "{errors}");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\nmax_connections = \"many\"\n",
    )
    .unwrap();
    let errors = format!("{:?}", joinshield::config::load(&path).err().unwrap());
    assert!(errors.contains("server.max_connections"), "{errors}");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\nbody_timeout = \"45s\"\nmax_connections = 300\n",
    )
    .unwrap();
    let loaded = joinshield::config::load(&path).unwrap();
    assert_eq!(loaded.config.server.body_timeout, Duration::from_secs(45));
    assert_eq!(loaded.config.server.max_connections, 300);
}

/// Out of file descriptors: the binary runs under `prlimit --nofile=64`, far more connections
/// than that arrive and stay, and the accept loop must back off (its CPU time stays small)
/// and serve again once they are gone.
#[tokio::test]
async fn running_out_of_file_descriptors_neither_spins_nor_wedges() {
    let Ok(true) = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is missing on CI"
        );
        eprintln!("SKIPPED: prlimit not installed");
        return;
    };
    let rec = recorder::spawn(Mode::Answer).await;
    let child = spawn_binary(
        rec.addr,
        "header_timeout = \"60s\"",
        "",
        &["prlimit", "--nofile=64:64"],
    );
    assert_eq!(good(child.addr).await, 200);
    let mut flood = Vec::new();
    for _ in 0..200 {
        // The kernel completes handshakes into the backlog even when the process cannot accept.
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(child.addr)).await {
            Ok(Ok(s)) => flood.push(s),
            _ => break,
        }
    }
    assert!(flood.len() > 64, "only {} connections opened", flood.len());
    // A measuring window, not a synchronisation: a spinning accept loop burns all of it.
    let ticks_per_sec = 100;
    let before = child.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = child.cpu_ticks() - before;
    let rss = child.rss_kib();
    eprintln!("out of file descriptors: {used} CPU ticks in 2 s, {rss} KiB resident");
    assert!(rss < 256 * 1024, "{rss} KiB resident");
    assert!(
        used < ticks_per_sec, // under half of the 2 s window
        "the accept loop spins out of file descriptors: {used} ticks in 2 s"
    );
    drop(flood);
    eventually(20, "served again after the flood", || async {
        good(child.addr).await == 200
    })
    .await;
}
