//! The admin listener, apart from guest traffic: `/healthz` (the process serves), `/readyz` (a
//! configuration is loaded and the app accepted a connection in the last 10 s), and the
//! bearer-protected `/admin/*` API. The bearer token is read from the variable `token_env`
//! names; unset, `/admin/*` answers 403 (admin actions are off); a wrong or missing token is 401.
//! Tokens are compared by their sha256 digests, in constant time; a peer that sent 10 wrong
//! tokens within a minute gets 429 for a minute ([`super::throttle`]).

use std::convert::Infallible;
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

use crate::admin::{scrape, views, Parts};
use crate::background::probe::READY_WINDOW_MS;
use crate::background::reload::Outcome;
use crate::shutdown::Shutdown;
use crate::telemetry::log::{Level, Record, Value};

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one admin request.
async fn handle(
    parts: Arc<Parts>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let shared = &parts;
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    Ok(match req.uri().path() {
        "/healthz" if get => text(StatusCode::OK, "ok\n"),
        "/readyz" if get => {
            let now_ms = shared.clock.now().unix_ms();
            if shared.telemetry.liveness.silent_for_ms(now_ms) <= READY_WINDOW_MS {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the upstream has not accepted a connection in the last 10 s\n",
                )
            }
        }
        "/metrics" if get => scrape::respond(shared, req.headers().get(header::ACCEPT)),
        "/healthz" | "/readyz" | "/metrics" => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        path if path.starts_with("/admin/") => match refuse(shared, peer, &req) {
            Some(refusal) => refusal,
            None => admin_api(shared, req).await,
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// A JSON answer.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

/// Checks the bearer token: the refusal to send (429 while the peer is blocked for wrong
/// tokens, 403 when admin actions are off, 401 when the token is wrong), or `None` when the
/// request may go on.
fn refuse(
    shared: &Parts,
    peer: std::net::IpAddr,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let now_ms = shared.clock.now().unix_ms();
    if let Some(left_ms) = shared.throttle.blocked(peer, now_ms) {
        let secs = u64::try_from(left_ms.max(1)).unwrap_or(1).div_ceil(1000);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many wrong tokens from {peer}: the admin API answers again in {secs} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Some(r);
    }
    let var = shared
        .snapshots
        .load()
        .loaded
        .config
        .admin
        .token_env
        .clone();
    let expected = match std::env::var(&var) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            return Some(error(
                StatusCode::FORBIDDEN,
                &format!("admin actions are off: set {var} to enable them"),
            ))
        }
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return None;
    }
    shared.throttle.failed(peer, now_ms);
    let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// Compares two secrets without leaking where they differ or how long they are: both are hashed
/// first, then every byte of the digests is compared.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

async fn admin_api(shared: &Parts, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let now = shared.clock.now();
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/admin/reload") => {
            let worker = shared.reloader.clone();
            match tokio::task::spawn_blocking(move || worker.reload_logged()).await {
                Ok(Outcome::Applied { version, changes, warnings }) => json(
                    StatusCode::OK,
                    serde_json::json!({ "version": version, "changes": changes, "warnings": warnings }).to_string(),
                ),
                Ok(Outcome::Rejected { errors, kept }) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({
                        "errors": errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "version": kept,
                    })
                    .to_string(),
                ),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the reload task failed"),
            }
        }
        (_, "/admin/reload") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        (&Method::GET, "/admin/bans") => {
            let bans = shared.defence.bans.list(now.unix());
            json(
                StatusCode::OK,
                serde_json::json!({ "bans": bans }).to_string(),
            )
        }
        (&Method::POST, "/admin/bans") => add_ban(shared, req).await,
        (&Method::DELETE, "/admin/bans") => {
            let cidr = query_param(req.uri().query().unwrap_or(""), "cidr").unwrap_or_default();
            match parse_net(&cidr) {
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
                Ok(net) => match shared.defence.bans.lift(net) {
                    Some(ban) => {
                        if let Some(cluster) = &shared.cluster {
                            cluster.announce_unban(ban.net);
                        }
                        shared.telemetry.timeline.lifted(
                            now.unix_ms(),
                            &ban,
                            crate::telemetry::timeline::LiftCause::Manual,
                        );
                        shared.telemetry.log.log(
                            Record::new(Level::Notice, "Ban lifted")
                                .with("net", net.to_string())
                                .with("reason", ban.reason.as_str()),
                        );
                        json(
                            StatusCode::OK,
                            serde_json::json!({ "lifted": ban }).to_string(),
                        )
                    }
                    None => error(StatusCode::NOT_FOUND, &format!("no ban of exactly {net}")),
                },
            }
        }
        (_, "/admin/bans") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE"),
        (&Method::GET, "/admin/status") => json(
            StatusCode::OK,
            views::status_json(shared, now.unix_ms()).to_string(),
        ),
        (&Method::GET, "/admin/denials") => {
            let query = req.uri().query().unwrap_or("");
            match views::denials_ndjson(&shared.telemetry.recent, query, now.unix_ms()) {
                Ok(body) => {
                    let mut r = json(StatusCode::OK, body);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-ndjson"),
                    );
                    r
                }
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
            }
        }
        (&Method::GET, "/admin/offenders") => {
            let query = req.uri().query().unwrap_or("");
            match views::offenders_json(&shared.telemetry.recent, query, now.unix_ms()) {
                Ok(v) => json(StatusCode::OK, v.to_string()),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
            }
        }
        (&Method::GET, "/admin/timeline") => {
            let query = req.uri().query().unwrap_or("");
            match views::timeline_json(shared, query, now.unix_ms()) {
                Ok(v) => json(StatusCode::OK, v.to_string()),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
            }
        }
        (_, "/admin/status" | "/admin/denials" | "/admin/offenders" | "/admin/timeline") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Largest admin request body read.
const MAX_ADMIN_BODY: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    cidr: String,
    #[serde(rename = "for")]
    duration: String,
    #[serde(default)]
    reason: String,
}

async fn add_ban(shared: &Parts, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is too large or broken",
            )
        }
    };
    let new: NewBan = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                "expected {{\"cidr\":\"198.51.100.0/24\",\"for\":\"2h\",\"reason\":\"…\"}}: {e}"
            ),
            )
        }
    };
    let net = match parse_net(&new.cidr).and_then(narrow_enough) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let duration = match crate::units::parse_duration(&new.duration) {
        Ok(d) if d > MAX_BAN => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "\"for\" is {}: a ban lasts at most 365d (the blocklist file is the tool for anything longer)",
                    crate::units::format_duration(d)
                ),
            )
        }
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "\"for\" must be longer than zero",
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let reason = if new.reason.trim().is_empty() {
        "manual ban".to_string()
    } else {
        new.reason
    };
    let now = shared.clock.now();
    let ban = shared
        .defence
        .bans
        .ban_manual(net, duration, &reason, now.unix());
    if let Some(cluster) = &shared.cluster {
        cluster.announce_ban(&ban);
    }
    shared.telemetry.timeline.banned(now.unix_ms(), &ban, None);
    shared.telemetry.log.log(
        Record::new(Level::Warning, "Manual ban")
            .with("net", net.to_string())
            .with(
                "ban_seconds",
                crate::policy::denial::retry_after_secs(duration),
            )
            .with("until", crate::clock::rfc3339(ban.until))
            .with("reason", Value::request(&reason)),
    );
    json(
        StatusCode::CREATED,
        serde_json::json!({ "ban": ban }).to_string(),
    )
}

/// The longest ban `POST /admin/bans` makes.
pub const MAX_BAN: Duration = Duration::from_secs(365 * 86_400);
/// The broadest IPv4 network `POST /admin/bans` bans.
pub const BROADEST_V4: u8 = 8;
/// The broadest IPv6 network `POST /admin/bans` bans.
pub const BROADEST_V6: u8 = 32;

/// `net`, unless it is broader than an IPv4 /8 or an IPv6 /32: one typo (`0.0.0.0/0`, `::/0`)
/// would lock out every guest and the allowlisted monitors too.
fn narrow_enough(net: ipnet::IpNet) -> Result<ipnet::IpNet, String> {
    let (broadest, family) = match net {
        ipnet::IpNet::V4(_) => (BROADEST_V4, "IPv4"),
        ipnet::IpNet::V6(_) => (BROADEST_V6, "IPv6"),
    };
    if net.prefix_len() < broadest {
        return Err(format!(
            "{net} is broader than an {family} /{broadest}: such a ban would lock out every guest of it, the monitors too; ban narrower networks, or put it in the blocklist file if you really mean it"
        ));
    }
    Ok(net)
}

/// An address (a single-client ban) or a network; host bits must be clear.
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(crate::policy::client_ip::canonical_net(ipnet::IpNet::from(
            ip,
        )));
    }
    let net: ipnet::IpNet = text.parse().map_err(|_| {
        format!("{text:?} is not an IP address or CIDR: write e.g. \"198.51.100.0/24\"")
    })?;
    let net = crate::policy::client_ip::canonical_net(net);
    if net != net.trunc() {
        return Err(format!(
            "{text:?} has host bits set: write the network, {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The value of `name` in a query string (percent-decoded).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Serves the admin API on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, parts: Arc<Parts>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let parts = parts.clone();
                let peer = crate::policy::client_ip::canonical(peer.ip());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(parts.clone(), peer, req));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.requested() => return,
        }
    }
}
