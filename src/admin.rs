//! The admin listener, apart from guest traffic: `/healthz` (the process serves), `/readyz` (a
//! configuration is loaded and the app accepted a connection in the last 10 s).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::{now_ms, Shared};

/// How recent the app's last sign of life must be for `/readyz`.
pub const READY_WINDOW_MS: i64 = 10_000;

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one admin request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    Ok(match req.uri().path() {
        "/healthz" if get => text(StatusCode::OK, "ok\n"),
        "/readyz" if get => {
            if now_ms() - shared.upstream_ok_at.load(Ordering::Relaxed) <= READY_WINDOW_MS {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the upstream has not accepted a connection in the last 10 s\n",
                )
            }
        }
        "/healthz" | "/readyz" => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Serves the admin API on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = crate::server::stopped(&mut shutdown) => return,
        }
    }
}

/// Keeps `/readyz` honest when no guest traffic flows: every 2 s without a recent answer from
/// the app, try to open a connection to it.
pub async fn probe_upstream(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::server::stopped(&mut shutdown) => return,
        }
        if now_ms() - shared.upstream_ok_at.load(Ordering::Relaxed) < READY_WINDOW_MS / 2 {
            continue;
        }
        let authority = shared
            .snapshot
            .load()
            .loaded
            .config
            .server
            .upstream
            .authority
            .clone();
        let connect = tokio::net::TcpStream::connect(authority);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            shared.upstream_ok_at.store(now_ms(), Ordering::Relaxed);
        }
    }
}
