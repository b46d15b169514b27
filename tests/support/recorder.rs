//! A raw recording upstream for the hardening suite: it keeps every byte the shield sent it,
//! parses the byte stream strictly (Content-Length or chunked framing, nothing lenient), and
//! answers each request `200` with the target it parsed. A test asserts on what it parsed, so a
//! request the shield did not decide on (a smuggled one) shows up as a request here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the recorder parsed it from the shield's bytes.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Parsed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the recorder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200` with a short body, keep-alive.
    Answer,
    /// Reads the head, then closes without answering (an app that dies mid-request).
    CloseAfterHead,
    /// Answers a head promising 1 MiB, sends 10 bytes of it and closes (dies mid-response).
    DieMidResponse,
    /// Holds each request until [`Recorder::release`], then answers as [`Mode::Answer`].
    Hold,
    /// Answers a 64 MiB body, counting answers the shield stopped taking (see
    /// [`Recorder::broken_answers`]).
    Huge,
    /// Answers keep-alive, then closes the idle connection right after each answer (a pooled
    /// connection that is gone by the time it is reused).
    CloseWhenIdle,
}

#[derive(Default)]
struct Inner {
    raw: Mutex<Vec<u8>>,
    parsed: Mutex<Vec<Parsed>>,
    /// Streams whose bytes did not parse as HTTP/1.1 requests.
    garbage: Mutex<Vec<String>>,
    /// Every request line read, even of a request whose body was cut off.
    heads: Mutex<Vec<String>>,
    /// Streams that ended inside a request (the shield gave up on it): not a smuggle.
    aborted: Mutex<Vec<String>>,
    connections: std::sync::atomic::AtomicUsize,
    broken_answers: std::sync::atomic::AtomicUsize,
    released: std::sync::atomic::AtomicBool,
    release: tokio::sync::Notify,
    arrived: tokio::sync::Notify,
}

/// A running recorder.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    mode: Arc<Mutex<Mode>>,
}

impl Recorder {
    /// Every request parsed so far.
    pub fn parsed(&self) -> Vec<Parsed> {
        self.inner.parsed.lock().unwrap().clone()
    }

    /// Every byte received so far, as text (for failure messages).
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.inner.raw.lock().unwrap()).into_owned()
    }

    /// Streams the strict parser refused, with the reason.
    pub fn garbage(&self) -> Vec<String> {
        self.inner.garbage.lock().unwrap().clone()
    }

    /// Requests cut off mid-stream so far (head forwarded, body not finished).
    pub fn aborted(&self) -> Vec<String> {
        self.inner.aborted.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers whose writing failed because the shield dropped the connection.
    pub fn broken_answers(&self) -> usize {
        self.inner
            .broken_answers
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held request (and every later one) be answered.
    pub fn release(&self) {
        self.inner
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.release.notify_waiters();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Waits (bounded by 10 s) until `n` requests have been parsed.
    pub async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.inner.arrived.notified();
            if self.parsed().len() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the recorder saw {} requests, not {n}; raw:\n{}",
                    self.parsed().len(),
                    self.raw_text()
                );
            }
        }
    }

    /// Fails the test if any parsed target contains `needle`, or a stream did not parse.
    pub fn assert_never_saw(&self, needle: &str) {
        let garbage = self.garbage();
        assert!(
            garbage.is_empty(),
            "the upstream got bytes that are not a clean request stream: {garbage:?}\nraw:\n{}",
            self.raw_text()
        );
        for line in self.inner.heads.lock().unwrap().iter() {
            assert!(
                !line.contains(needle),
                "the upstream saw a request the shield did not decide on: {line:?}\nraw:\n{}",
                self.raw_text()
            );
        }
    }
}

/// Starts a recorder on an ephemeral loopback port.
pub async fn spawn(mode: Mode) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rec = Recorder {
        addr: listener.local_addr().unwrap(),
        inner: Arc::default(),
        mode: Arc::new(Mutex::new(mode)),
    };
    let accepting = rec.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepting
                .inner
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(accepting.clone(), stream));
        }
    });
    rec
}

async fn serve(rec: Recorder, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let parsed = match read_request(&rec, &mut stream, &mut buf).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(why) => {
                let cut = why.starts_with("stream ended");
                let into = if cut {
                    &rec.inner.aborted
                } else {
                    &rec.inner.garbage
                };
                into.lock().unwrap().push(why);
                rec.inner.arrived.notify_waiters();
                return;
            }
        };
        let target = parsed.target.clone();
        rec.inner.parsed.lock().unwrap().push(parsed);
        rec.inner.arrived.notify_waiters();
        let mode = *rec.mode.lock().unwrap();
        if mode == Mode::Hold {
            loop {
                let released = rec.inner.release.notified();
                if rec.inner.released.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
        }
        match mode {
            Mode::Answer | Mode::CloseWhenIdle | Mode::Hold => {
                let body = format!("seen {target}");
                // One write: a head and body in two would wait on Nagle and delayed ACKs.
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                if mode == Mode::CloseWhenIdle {
                    return;
                }
            }
            Mode::CloseAfterHead => return,
            Mode::Huge => {
                let chunk = vec![b'z'; 64 * 1024];
                let mut ok = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
                    .await
                    .is_ok();
                for _ in 0..1024 {
                    ok = ok && stream.write_all(&chunk).await.is_ok();
                }
                if !ok {
                    rec.inner
                        .broken_answers
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    rec.inner.arrived.notify_waiters();
                    return;
                }
            }
            Mode::DieMidResponse => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n0123456789")
                    .await;
                return;
            }
        }
    }
}

/// Reads one request strictly: CRLF line ends, `Name: value` headers, one framing. `Ok(None)` is
/// a clean end of stream between requests.
async fn read_request(
    rec: &Recorder,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Parsed>, String> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !fill(rec, stream, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(format!(
                    "stream ended inside a head: {:?}",
                    String::from_utf8_lossy(buf)
                ))
            };
        }
    };
    // CloseAfterHead: the head is enough.
    if *rec.mode.lock().unwrap() == Mode::CloseAfterHead {
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let line = head.lines().next().unwrap_or("").to_string();
        let mut words = line.split(' ');
        return Ok(Some(Parsed {
            method: words.next().unwrap_or("").into(),
            target: words.next().unwrap_or("").into(),
            headers: Vec::new(),
            body: Vec::new(),
        }));
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| "a head that is not UTF-8".to_string())?
        .to_string();
    buf.drain(..head_end + 4);
    if head
        .split("\r\n")
        .any(|l| l.contains('\n') || l.contains('\r'))
    {
        return Err(format!("bare CR or LF in a head: {head:?}"));
    }
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    rec.inner.heads.lock().unwrap().push(line.to_string());
    let words: Vec<&str> = line.split(' ').collect();
    if words.len() != 3 || words[2] != "HTTP/1.1" {
        return Err(format!("not a request line: {line:?}"));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.starts_with(' ') || l.starts_with('\t') {
            return Err(format!("folded header line: {l:?}"));
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("not a header line: {l:?}"));
        };
        if k.is_empty() || k.contains(' ') {
            return Err(format!("bad header name: {l:?}"));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let te: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .collect();
    let cl: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .collect();
    let hosts = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .count();
    if hosts != 1 {
        return Err(format!("{hosts} Host headers: {head:?}"));
    }
    let body = match (te.as_slice(), cl.as_slice()) {
        ([], []) => Vec::new(),
        ([], [(_, len)]) => {
            if !len.bytes().all(|b| b.is_ascii_digit()) || len.is_empty() {
                return Err(format!("bad Content-Length {len:?}"));
            }
            let n: usize = len
                .parse()
                .map_err(|_| format!("huge Content-Length {len}"))?;
            while buf.len() < n {
                if !fill(rec, stream, buf).await? {
                    return Err("stream ended inside a body".into());
                }
            }
            buf.drain(..n).collect()
        }
        ([(_, te)], []) if te.eq_ignore_ascii_case("chunked") => {
            read_chunked(rec, stream, buf).await?
        }
        _ => return Err(format!("ambiguous framing: {head:?}")),
    };
    Ok(Some(Parsed {
        method: words[0].to_string(),
        target: words[1].to_string(),
        headers,
        body,
    }))
}

async fn read_chunked(
    rec: &Recorder,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(rec, stream, buf).await?;
        let size = usize::from_str_radix(&line, 16).map_err(|_| format!("chunk size {line:?}"))?;
        if size == 0 {
            // No trailers expected from the shield: the last line must be empty.
            let end = read_line(rec, stream, buf).await?;
            if !end.is_empty() {
                return Err(format!("trailer sent upstream: {end:?}"));
            }
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if !fill(rec, stream, buf).await? {
                return Err("stream ended inside a chunk".into());
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_line(
    rec: &Recorder,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<String, String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            return Ok(line);
        }
        if buf.len() > 1024 {
            return Err("a chunk line over 1 KiB".into());
        }
        if !fill(rec, stream, buf).await? {
            return Err("stream ended inside a chunk line".into());
        }
    }
}

/// Reads more bytes (recording them); `false` at end of stream.
async fn fill(rec: &Recorder, stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => Ok(false),
        Ok(n) => {
            rec.inner.raw.lock().unwrap().extend_from_slice(&chunk[..n]);
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
    }
}
