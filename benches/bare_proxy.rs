//! Question: what is the least a hyper 1 HTTP/1.1 reverse proxy spends on a forwarded request?
//! This is the floor the load benchmarks (`benches/load/run.sh`, `benches/load/profile.sh`)
//! put under joinshield: whatever joinshield spends above it is the price of its features.
//!
//! It is the thinnest proxy hyper allows, built from the same parts as joinshield: the same
//! runtime (tokio, multi-threaded, one worker per core it may run on), the same allocator
//! (mimalloc), hyper's HTTP/1.1 server connection per accepted socket (`TCP_NODELAY`, no timer,
//! no header timeout), and a pooled keep-alive client of `hyper::client::conn::http1`
//! connections in a bounded lock-free queue (as joinshield's own pool). A request is forwarded
//! as it came (headers, target and body untouched, streamed both ways); an upstream connection
//! goes back to the pool once its answer has been read to the end. No limits, no
//! classification, no forwarding headers, no logging, no metrics, no timeouts; 502 when the
//! upstream cannot be reached.
//!
//! Usage: `bare_proxy --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8000`, serving until
//! killed. Without `--listen` (as `cargo bench` runs every bench target) it says how to use it
//! and exits 0. Built with `cargo build --release --bench bare_proxy` or `cargo bench --no-run`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Idle upstream connections kept at most (joinshield keeps as many).
const MAX_IDLE: usize = 256;

const USAGE: &str = "bare_proxy --listen ADDR --upstream http://HOST:PORT\n\
    the floor of the load benchmarks: a hyper HTTP/1.1 reverse proxy with a keep-alive pool and no features";

fn main() -> ExitCode {
    let mut listen = None;
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--upstream" => upstream = args.next(),
            // `cargo bench` passes `--bench` (and filters); nothing to run then.
            _ => {}
        }
    }
    let Some(listen) = listen else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let (listen, upstream) = match parse(&listen, upstream.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bare_proxy: {e}\nusage: {USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare_proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The listen address, and the upstream's socket address from an `http://HOST:PORT` URL whose
/// host is an IP address (the benchmarks' upstream is on loopback: no resolver on the path).
fn parse(listen: &str, upstream: Option<&str>) -> Result<(SocketAddr, SocketAddr), String> {
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| format!("--listen {listen:?}: {e}"))?;
    let upstream = upstream.ok_or("--upstream is required")?;
    let uri: http::Uri = upstream
        .parse()
        .map_err(|e| format!("--upstream {upstream:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--upstream {upstream:?}: only http:// is served"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--upstream {upstream:?}: no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|e| format!("--upstream {upstream:?}: the host must be an IP address ({e})"))?;
    Ok((
        listen,
        SocketAddr::new(ip, authority.port_u16().unwrap_or(80)),
    ))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let pool = Arc::new(Pool {
        idle: ArrayQueue::new(MAX_IDLE),
        upstream,
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept: try the next one.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let stream = Downstream(stream);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(forward(&pool, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The client-facing socket. A newtype only so that a profile can tell hyper's code for this
/// side from the upstream side's (hyper's I/O buffer is generic over the IO alone); every call
/// goes straight through.
struct Downstream(TcpStream);

impl AsyncRead for Downstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Keep-alive connections to the upstream, each driven by its own task.
struct Pool {
    idle: ArrayQueue<SendRequest<Incoming>>,
    upstream: SocketAddr,
}

type Answer = Response<Either<Released, Empty<Bytes>>>;

/// Sends `req` upstream on a pooled connection (or a new one) and returns the answer; 502 when
/// the upstream cannot be reached.
async fn forward(pool: &Arc<Pool>, mut req: Request<Incoming>) -> Answer {
    loop {
        let (mut sender, reused) = match checkout(pool).await {
            Some(sender) => (sender, true),
            None => match connect(pool.upstream).await {
                Ok(sender) => (sender, false),
                Err(_) => return bad_gateway(),
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let back = Some((sender, pool.clone()));
                return resp.map(|inner| Either::Left(Released { inner, back }));
            }
            Err(mut e) => match e.take_message() {
                // The pooled connection closed before the request went out: try another.
                Some(unsent) if reused => req = unsent,
                _ => return bad_gateway(),
            },
        }
    }
}

async fn checkout(pool: &Pool) -> Option<SendRequest<Incoming>> {
    while let Some(mut sender) = pool.idle.pop() {
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
    None
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.ready().await?;
    Ok(sender)
}

fn bad_gateway() -> Answer {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

/// The upstream's answer body, streamed; read to its end, it puts its connection back.
struct Released {
    inner: Incoming,
    back: Option<(SendRequest<Incoming>, Arc<Pool>)>,
}

impl Released {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            if !sender.is_closed() {
                // Full: the connection is dropped, which closes it.
                let _ = pool.idle.push(sender);
            }
        }
    }
}

impl Body for Released {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // A broken answer leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        // Dropped before its end, the answer takes its connection along: the unread bytes
        // could not be told from the next answer.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
