//! The attacker of the "connection flood" scenario of `benches/load/scenarios.sh`: one client
//! address that opens many idle TCP connections to a proxy and holds them, so the scenario can
//! ask whether the other guests are still served (and how fast) while it does. It sends no
//! byte: an idle connection costs the attacker nothing but a socket.
//!
//! Usage: `conn_flood --target 127.0.0.1:8080 --source 127.0.0.99 --connections 10000
//! --seconds 30 [--reconnect-ms 100] [--connect-concurrency 256] [--connect-timeout-ms 3000]`.
//! Every connection is bound to `--source` (any 127.0.0.0/8 address is loopback on Linux), so a
//! per-client connection bound can tell the flooder from the guests. With `--reconnect-ms`, a
//! connection the proxy closes (or that failed) is opened again after that pause, as a
//! determined attacker would; without it, it stays closed. After the first attempt of every
//! connection it prints one `ready ...` line; at the end (after `--seconds`, or on SIGINT or
//! SIGTERM) one `flood ...` line of `key=value` counters. Sockets close with an RST, so the
//! flooder leaves no `TIME_WAIT` behind to starve the next round of ports.
//!
//! Without `--target` (as `cargo bench` runs every bench target) it says how to use it and
//! exits 0. Built with `cargo build --release --bench conn_flood` or `cargo bench --no-run`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

const USAGE: &str = "conn_flood --target ADDR --source IP --connections N --seconds S \
    [--reconnect-ms MS] [--connect-concurrency N] [--connect-timeout-ms MS]";

struct Options {
    target: SocketAddr,
    source: IpAddr,
    connections: u64,
    seconds: u64,
    reconnect: Option<Duration>,
    concurrency: usize,
    connect_timeout: Duration,
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    established: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    /// Failures of the flooder's own (out of descriptors or ports): not the proxy's doing.
    local_errors: AtomicU64,
    closed_by_peer: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    first_attempts_done: AtomicU64,
}

impl Counters {
    fn line(&self, what: &str) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{what} attempted={} established={} refused={} timed_out={} local_errors={} closed_by_peer={} open={} max_open={}",
            get(&self.attempted),
            get(&self.established),
            get(&self.refused),
            get(&self.timed_out),
            get(&self.local_errors),
            get(&self.closed_by_peer),
            get(&self.open),
            get(&self.max_open),
        )
    }
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("conn_flood: {e}\nusage: {USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conn_flood: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(flood(options));
    ExitCode::SUCCESS
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let (mut target, mut source, mut connections, mut seconds) = (None, None, 1000, 30);
    let (mut reconnect, mut concurrency, mut connect_timeout) = (None, 256, 3000);
    fn value<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = v.ok_or_else(|| format!("{name} needs a value"))?;
        v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => target = Some(value::<SocketAddr>(&arg, args.next())?),
            "--source" => source = Some(value::<IpAddr>(&arg, args.next())?),
            "--connections" => connections = value(&arg, args.next())?,
            "--seconds" => seconds = value(&arg, args.next())?,
            "--reconnect-ms" => {
                reconnect = Some(Duration::from_millis(value(&arg, args.next())?));
            }
            "--connect-concurrency" => concurrency = value(&arg, args.next())?,
            "--connect-timeout-ms" => connect_timeout = value(&arg, args.next())?,
            // `cargo bench` passes `--bench` (and filters).
            _ => {}
        }
    }
    let Some(target) = target else {
        return Ok(None);
    };
    let source = source.ok_or("--source is required")?;
    if concurrency == 0 {
        return Err("--connect-concurrency must be at least 1".into());
    }
    Ok(Some(Options {
        target,
        source,
        connections,
        seconds,
        reconnect,
        concurrency,
        connect_timeout: Duration::from_millis(connect_timeout),
    }))
}

async fn flood(options: Options) {
    let options = Arc::new(options);
    let counters = Arc::new(Counters::default());
    let connecting = Arc::new(Semaphore::new(options.concurrency));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(options.seconds);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
    for _ in 0..options.connections {
        let (options, counters, connecting) =
            (options.clone(), counters.clone(), connecting.clone());
        let ready = ready_tx.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                hold_one(&options, &counters, &connecting, first, &ready).await;
                first = false;
                match options.reconnect {
                    Some(pause) if tokio::time::Instant::now() + pause < deadline => {
                        tokio::time::sleep(pause).await;
                    }
                    _ => break,
                }
            }
        });
    }
    drop(ready_tx);
    let mut said_ready = options.connections == 0;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut terminated => break,
            got = ready_rx.recv(), if !said_ready => {
                if got.is_none() || counters.first_attempts_done.load(Ordering::Relaxed) >= options.connections {
                    said_ready = true;
                    println!("{}", counters.line("ready"));
                }
            }
        }
    }
    println!("{}", counters.line("flood"));
}

/// Opens one connection (waiting for a connect slot), holds it until the proxy closes it (the
/// process ends at the deadline with the rest still open), and counts what happened.
async fn hold_one(
    options: &Options,
    counters: &Counters,
    connecting: &Semaphore,
    first: bool,
    ready: &tokio::sync::mpsc::Sender<()>,
) {
    let attempt = async {
        let socket = match options.source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        // An abortive close: no TIME_WAIT on the flooder's ports.
        socket.set_zero_linger()?;
        socket.bind(SocketAddr::new(options.source, 0))?;
        socket.connect(options.target).await
    };
    let connected = {
        let _slot = connecting.acquire().await;
        counters.attempted.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(options.connect_timeout, attempt).await
    };
    if first {
        counters.first_attempts_done.fetch_add(1, Ordering::Relaxed);
        let _ = ready.try_send(());
    }
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // EMFILE, ENFILE, EADDRINUSE, EADDRNOTAVAIL: the flooder ran out, not the proxy.
            let local = matches!(e.raw_os_error(), Some(23 | 24 | 98 | 99));
            let counter = if local {
                &counters.local_errors
            } else {
                &counters.refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.established.fetch_add(1, Ordering::Relaxed);
    let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
    counters.max_open.fetch_max(open, Ordering::Relaxed);
    // The proxy sends nothing unprompted: any end of the read is the proxy closing.
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
    counters.closed_by_peer.fetch_add(1, Ordering::Relaxed);
    counters.open.fetch_sub(1, Ordering::Relaxed);
}
