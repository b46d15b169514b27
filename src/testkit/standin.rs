//! A stand-in for the fotospiel app's guest API, for `joinshield demo`, the integration tests
//! and the benchmarks. It answers like the app where the shield cares: JSON for the event and
//! gallery routes, a download body, an upload that reads (and counts) the whole body, and 404
//! `invalid_token` for tokens it does not know. Tokens beginning `demo-` or `load-` are valid.
//!
//! Extra routes help tests and benchmarks: `/__standin/echo` answers with the request it received
//! (method, target, headers) as JSON, `/__standin/slow?ms=N` answers after N milliseconds, and
//! `/__standin/stats` counts the requests answered so far (itself included).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::shutdown::Stop;

/// Tokens the demo prints in its example commands.
pub const DEMO_TOKENS: [&str; 3] = [
    "demo-wedding-2026",
    "demo-birthday-0042",
    "demo-company-summer",
];

/// Size of the body a download route answers with.
pub const DOWNLOAD_BYTES: usize = 64 * 1024;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target as received.
    pub target: String,
    /// Headers, in order, values lossily as text.
    pub headers: Vec<(String, String)>,
}

/// What the stand-in counted and recorded.
#[derive(Debug, Default)]
pub struct StandInState {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Upload body bytes read.
    pub upload_bytes: AtomicU64,
    /// Signalled each time a request arrives (tests wait on it instead of sleeping).
    pub arrived: tokio::sync::Notify,
    recorded: Option<Mutex<Vec<Seen>>>,
}

impl StandInState {
    /// The requests seen so far (when recording).
    pub fn seen(&self) -> Vec<Seen> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// A running stand-in.
pub struct StandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub state: Arc<StandInState>,
    stop: Stop,
}

impl StandIn {
    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.stop();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the stand-in on `addr` (port 0 for an ephemeral port); `record` keeps every request.
pub async fn spawn(addr: SocketAddr, record: bool) -> std::io::Result<StandIn> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(StandInState {
        recorded: record.then(|| Mutex::new(Vec::new())),
        ..StandInState::default()
    });
    let (stop, stopped) = crate::shutdown::pair();
    let serve_state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let state = serve_state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| answer(state.clone(), req));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                _ = stopped.requested() => return,
            }
        }
    });
    Ok(StandIn { addr, state, stop })
}

fn valid(token: &str) -> bool {
    token.starts_with("demo-") || token.starts_with("load-")
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

const NOT_FOUND: &str = r#"{"message":"Not Found"}"#;
const INVALID_TOKEN: &str = r#"{"error":{"code":"invalid_token","title":"Invalid Join Token","message":"The provided join token is invalid."}}"#;
static DOWNLOAD: [u8; DOWNLOAD_BYTES] = [b'z'; DOWNLOAD_BYTES];

async fn answer(
    state: Arc<StandInState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    state.arrived.notify_one();
    if let Some(rec) = &state.recorded {
        let seen = Seen {
            method: req.method().to_string(),
            target: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        if let Ok(mut v) = rec.lock() {
            v.push(seen);
        }
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let post = method == Method::POST || method == Method::PUT;
    let resp = match segs.as_slice() {
        [""] => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"fotospiel stand-in\n")));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        ["__standin", "echo"] => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            let body = serde_json::json!({"method": method.as_str(), "target": req.uri().to_string(), "headers": headers});
            json(StatusCode::OK, body.to_string())
        }
        ["__standin", "stats"] => json(
            StatusCode::OK,
            format!(
                r#"{{"requests":{},"upload_bytes":{}}}"#,
                state.requests.load(Ordering::Relaxed),
                state.upload_bytes.load(Ordering::Relaxed)
            ),
        ),
        ["__standin", "slow"] => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, r#"{"slow":true}"#)
        }
        ["api", "v1", "events", t, ..] | ["api", "v1", "gallery", t, ..] | ["gallery", t, ..]
            if !valid(t) =>
        {
            json(StatusCode::NOT_FOUND, INVALID_TOKEN)
        }
        ["api", "v1", "events", t, "upload"] | ["api", "v1", "events", t, "photos"] if post => {
            let mut body = req.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            state.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
            json(
                StatusCode::CREATED,
                format!(r#"{{"data":{{"id":1,"event":"{t}","bytes":{bytes}}}}}"#),
            )
        }
        ["api", "v1", "events", _, "photos", _, "download"]
        | ["api", "v1", "gallery", _, "photos", _, "download"]
        | ["api", "v1", "gallery", _, "download"]
        | ["gallery", _, "download"] => {
            let mut r = Response::new(Full::new(Bytes::from_static(&DOWNLOAD)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        ["api", "v1", "events", t] => json(
            StatusCode::OK,
            format!(r#"{{"slug":"{t}","engagement_mode":"photo_tasks","name":"Demo event"}}"#),
        ),
        ["api", "v1", "events", _, "stats"] => {
            json(StatusCode::OK, r#"{"data":{"photos":42,"guests":300}}"#)
        }
        ["api", "v1", "events", _, "tasks"] => json(
            StatusCode::OK,
            r#"{"data":[{"id":1,"title":"Take a photo with the couple"}]}"#,
        ),
        ["api", "v1", "events", _, "photos"] | ["api", "v1", "gallery", _, "photos"] => json(
            StatusCode::OK,
            r#"{"data":[{"id":1,"url":"/storage/photos/1.jpg"}]}"#,
        ),
        ["api", "v1", "gallery", t] => json(
            StatusCode::OK,
            format!(
                r##"{{"event":{{"slug":"{t}","name":"Demo event"}},"branding":{{"color":"#e91e63"}}}}"##
            ),
        ),
        ["gallery", _] | ["gallery", _, ..] => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"<!doctype html><title>Gallery</title>\n",
            )));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        _ => json(StatusCode::NOT_FOUND, NOT_FOUND),
    };
    Ok(resp)
}
