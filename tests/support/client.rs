//! A strict HTTP/1.1 client for the tests, over plain TCP or TLS.
//!
//! Every read and write is bounded (10 s unless a test says otherwise) and a bound that runs out
//! fails the test with what was received so far. An answer is read whole or not at all: a body
//! shorter than its `Content-Length`, a chunked body without its last chunk, a malformed head or
//! chunk, or a close-delimited body ended by a reset is a failure. How a connection ends is told
//! apart: a clean close (FIN; over TLS, `close_notify` first), a reset (RST), a TLS stream cut
//! without `close_notify`, or still open when the bound ran out. Bytes after the last answer of
//! a connection that should end are a failure too.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long one read, write or wait for the end may take unless a test sets its own bound.
pub const BOUND: Duration = Duration::from_secs(10);

/// The largest answer head the client accepts (the shield's own are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed cleanly: end of stream (FIN), and over TLS a `close_notify` before it.
    /// A reset that the kernel receives after the FIN cannot be seen by reading (Linux reports
    /// the end of stream from then on); what such a reset costs a client still sending shows
    /// in [`Sent`], which is why uploads are checked with [`Conn::upload`].
    Closed,
    /// The server reset the connection (RST, ECONNRESET).
    Reset,
    /// Over TLS: the TCP stream ended without a `close_notify` (a truncation attack looks alike).
    Truncated,
    /// Neither within the bound: the connection is still open.
    Open,
}

impl End {
    fn describe(self) -> &'static str {
        match self {
            End::Closed => "was closed",
            End::Reset => "was reset",
            End::Truncated => "ended without a TLS close_notify",
            End::Open => "stayed open",
        }
    }
}

/// How writing a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Every byte was taken.
    Whole,
    /// The server had closed its side: EPIPE after `written` bytes.
    BrokenPipe { written: usize },
    /// The server reset the connection after `written` bytes.
    Reset { written: usize },
}

/// One HTTP/1.1 answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The interim (1xx) answers that came before this one, by status.
    pub interim: Vec<u16>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Whether the answer says the connection ends after it.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// Why no whole answer could be read, with everything the connection received.
#[derive(Clone)]
pub struct Broken {
    pub why: String,
    /// How the connection ended, if it did.
    pub end: Option<End>,
    pub received: Vec<u8>,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; received so far: {}",
            self.why,
            shown(&self.received)
        )
    }
}

impl fmt::Debug for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Bytes for a failure message: as text, long runs cut in the middle.
pub fn shown(bytes: &[u8]) -> String {
    const KEEP: usize = 1500;
    if bytes.len() <= 2 * KEEP {
        return format!("{} bytes {:?}", bytes.len(), String::from_utf8_lossy(bytes));
    }
    format!(
        "{} bytes {:?} … {:?}",
        bytes.len(),
        String::from_utf8_lossy(&bytes[..KEEP]),
        String::from_utf8_lossy(&bytes[bytes.len() - KEEP..])
    )
}

/// One client connection.
pub struct Conn<S = TcpStream> {
    stream: S,
    /// Received and not yet taken as an answer.
    buf: Vec<u8>,
    /// Everything received, for failure messages.
    received: Vec<u8>,
    ended: Option<End>,
    bound: Duration,
}

impl Conn<TcpStream> {
    /// Connects to `addr` (failing the test when that is refused or takes longer than the bound).
    pub async fn open(addr: SocketAddr) -> Conn<TcpStream> {
        let stream = tokio::time::timeout(BOUND, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} took over {BOUND:?}"))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        Conn::over(stream)
    }
}

impl Conn<TlsStream<TcpStream>> {
    /// Connects to `addr` over TLS as `name` with `connector`; the handshake is bounded. A
    /// refused connection or a failed handshake is an error, for tests that count them.
    pub async fn open_tls(
        addr: SocketAddr,
        connector: &TlsConnector,
        name: &str,
    ) -> std::io::Result<Conn<TlsStream<TcpStream>>> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name, tcp).await
        };
        let stream = tokio::time::timeout(BOUND, handshake).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake with {addr} within {BOUND:?}"),
            )
        })??;
        Ok(Conn::over(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A client on an established stream (e.g. a TLS stream after its handshake).
    pub fn over(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            received: Vec::new(),
            ended: None,
            bound: BOUND,
        }
    }

    /// The same connection with another bound for each read, write and wait.
    pub fn bound(mut self, bound: Duration) -> Conn<S> {
        self.bound = bound;
        self
    }

    /// The stream underneath (e.g. to read what the TLS handshake settled).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Everything received on this connection so far.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Writes `raw` whole, failing the test if the server refuses any of it.
    pub async fn send(&mut self, raw: impl AsRef<[u8]>) {
        let raw = raw.as_ref();
        let sent = self.write(raw).await;
        assert_eq!(
            sent,
            Sent::Whole,
            "the request was not taken whole ({} bytes); received so far: {}",
            raw.len(),
            shown(&self.received)
        );
    }

    /// Writes `raw` and says how far it got: a closed or reset connection is reported, not a
    /// failure. A write that stalls past the bound (the server neither reads nor closes) fails.
    pub async fn write(&mut self, raw: impl AsRef<[u8]>) -> Sent {
        let raw = raw.as_ref();
        let deadline = Instant::now() + self.bound;
        let mut written = 0;
        while written < raw.len() {
            match tokio::time::timeout_at(deadline, self.stream.write(&raw[written..])).await {
                Err(_) => panic!(
                    "writing stalled: {written} of {} bytes taken within {:?}; received so far: {}",
                    raw.len(),
                    self.bound,
                    shown(&self.received)
                ),
                Ok(Ok(0)) => return Sent::BrokenPipe { written },
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return sent_after(e, written),
            }
        }
        match tokio::time::timeout_at(deadline, self.stream.flush()).await {
            Err(_) => panic!("flushing stalled past {:?}", self.bound),
            Ok(Ok(())) => Sent::Whole,
            Ok(Err(e)) => sent_after(e, written),
        }
    }

    /// Ends the client's sending side (TCP FIN; over TLS `close_notify` first), as a client
    /// does that has sent everything; reading goes on.
    pub async fn finish_sending(&mut self) {
        let _ = tokio::time::timeout(self.bound, self.stream.shutdown()).await;
    }

    /// Sends `raw` and reads its answer whole.
    pub async fn request(&mut self, raw: impl AsRef<[u8]>) -> Answer {
        self.send(raw).await;
        self.answer().await
    }

    /// Sends `raw` and reads its answer; anything short of a whole answer is an error.
    pub async fn try_request(&mut self, raw: impl AsRef<[u8]>) -> Result<Answer, Broken> {
        match self.write(raw).await {
            Sent::Whole => self.try_answer().await,
            sent => Err(self.broken(format!("the request was not taken whole: {sent:?}"))),
        }
    }

    /// The next final answer, whole (interim 1xx answers before it are kept in `interim`).
    pub async fn answer(&mut self) -> Answer {
        self.try_answer()
            .await
            .unwrap_or_else(|b| panic!("no whole answer: {b}"))
    }

    /// The answer to a HEAD request: a head whose framing headers announce no body.
    pub async fn answer_to_head(&mut self) -> Answer {
        self.read(Want::HeadOnly)
            .await
            .unwrap_or_else(|b| panic!("no whole answer: {b}"))
    }

    /// The next interim (1xx) answer; a final answer instead is a failure.
    pub async fn interim(&mut self) -> Answer {
        self.read(Want::Interim)
            .await
            .unwrap_or_else(|b| panic!("no interim answer: {b}"))
    }

    /// As [`Conn::answer`], reporting instead of failing.
    pub async fn try_answer(&mut self) -> Result<Answer, Broken> {
        self.read(Want::Final).await
    }

    /// The next answer, or how the connection ended when it ended between answers; anything
    /// else (part of an answer, a timeout inside one) is a failure. [`End::Open`] when nothing
    /// arrived within the bound.
    pub async fn answer_or_end(&mut self) -> Result<Answer, End> {
        self.answer_or_end_as(Want::Final).await
    }

    /// As [`Conn::answer_or_end`], for the answer to a HEAD request.
    pub async fn head_answer_or_end(&mut self) -> Result<Answer, End> {
        self.answer_or_end_as(Want::HeadOnly).await
    }

    async fn answer_or_end_as(&mut self, want: Want) -> Result<Answer, End> {
        let deadline = Instant::now() + self.bound;
        while self.buf.is_empty() && self.ended.is_none() {
            match self.fill(deadline).await {
                Filled::Data | Filled::End => {}
                Filled::Timeout => return Err(End::Open),
            }
        }
        if self.buf.is_empty() {
            if let Some(end) = self.ended {
                return Err(end);
            }
        }
        Ok(self
            .read(want)
            .await
            .unwrap_or_else(|b| panic!("no whole answer: {b}")))
    }

    /// Waits (bounded) for the end of the connection after its last answer. A byte more fails
    /// the test: nothing may follow an answer the server ends the connection after.
    pub async fn end(&mut self) -> End {
        let deadline = Instant::now() + self.bound;
        loop {
            assert!(
                self.buf.is_empty(),
                "bytes after the last whole answer: {}; everything received: {}",
                shown(&self.buf),
                shown(&self.received)
            );
            if let Some(end) = self.ended {
                return end;
            }
            if let Filled::Timeout = self.fill(deadline).await {
                return End::Open;
            }
        }
    }

    /// Fails the test unless the connection now ends cleanly, with nothing more received.
    pub async fn closed(mut self) {
        let end = self.end().await;
        assert_eq!(
            end,
            End::Closed,
            "the connection {} instead of closing cleanly; received: {}",
            end.describe(),
            shown(&self.received)
        );
    }

    /// Writes `head` and `body` whole before reading anything, as browsers' `fetch` and
    /// Python's http.client do, then reads the answer (also when the write failed: the answer
    /// may be there all the same).
    pub async fn upload(&mut self, head: &str, body: &[u8]) -> Uploaded {
        let mut raw = Vec::with_capacity(head.len() + body.len());
        raw.extend_from_slice(head.as_bytes());
        raw.extend_from_slice(body);
        let sent = self.write(&raw).await;
        let answer = self.try_answer().await;
        Uploaded { sent, answer }
    }

    async fn read(&mut self, want: Want) -> Result<Answer, Broken> {
        let deadline = Instant::now() + self.bound;
        let mut interim = Vec::new();
        loop {
            match parse_answer(&self.buf, want == Want::HeadOnly, self.ended) {
                Err(why) => return Err(self.broken(why)),
                Ok(Some((mut answer, used))) => {
                    self.buf.drain(..used);
                    let is_interim = (100..200).contains(&answer.status) && answer.status != 101;
                    match (want, is_interim) {
                        (Want::Interim, true) => return Ok(answer),
                        (Want::Interim, false) => {
                            return Err(self.broken(format!(
                                "a final {} where an interim answer was due",
                                answer.status
                            )))
                        }
                        (_, true) => interim.push(answer.status),
                        (_, false) => {
                            answer.interim = interim;
                            return Ok(answer);
                        }
                    }
                    continue;
                }
                Ok(None) => {}
            }
            if let Some(end) = self.ended {
                let place = if self.buf.is_empty() {
                    "before an answer"
                } else {
                    "inside an answer"
                };
                return Err(self.broken(format!("the connection {} {place}", end.describe())));
            }
            if let Filled::Timeout = self.fill(deadline).await {
                return Err(self.broken(format!("no whole answer within {:?}", self.bound)));
            }
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Filled {
        if self.ended.is_some() {
            return Filled::End;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Filled::Timeout,
            Ok(Ok(0)) => {
                self.ended = Some(End::Closed);
                Filled::End
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.received.extend_from_slice(&chunk[..n]);
                Filled::Data
            }
            Ok(Err(e)) => {
                self.ended = Some(match e.kind() {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                        End::Reset
                    }
                    std::io::ErrorKind::UnexpectedEof => End::Truncated,
                    _ => panic!(
                        "reading failed: {e}; received so far: {}",
                        shown(&self.received)
                    ),
                });
                Filled::End
            }
        }
    }

    fn broken(&self, why: String) -> Broken {
        Broken {
            why,
            end: self.ended,
            received: self.received.clone(),
        }
    }
}

/// What a client that writes its whole request before reading got.
#[derive(Debug)]
pub struct Uploaded {
    pub sent: Sent,
    pub answer: Result<Answer, Broken>,
}

impl Uploaded {
    /// The answer, failing the test unless the request was taken whole and answered whole.
    pub fn whole(self) -> Answer {
        let answer = match self.answer {
            Ok(a) => a,
            Err(b) => panic!("no whole answer to the upload (sent: {:?}): {b}", self.sent),
        };
        assert_eq!(
            self.sent,
            Sent::Whole,
            "answered {} but the body was refused on the way",
            answer.status
        );
        answer
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Final,
    HeadOnly,
    Interim,
}

enum Filled {
    Data,
    End,
    Timeout,
}

fn sent_after(e: std::io::Error, written: usize) -> Sent {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => Sent::BrokenPipe { written },
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
            Sent::Reset { written }
        }
        _ => panic!("writing failed after {written} bytes: {e}"),
    }
}

/// How an answer's body is framed.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses one answer at the start of `buf`: `Ok(None)` until it is whole. `ended` is how the
/// connection ended, if it did (only a clean close ends a close-delimited body).
fn parse_answer(
    buf: &[u8],
    head_only: bool,
    ended: Option<End>,
) -> Result<Option<(Answer, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("no end of the head within {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let (status, headers) = parse_head(&buf[..head_end])?;
    let start = head_end + 4;
    let framing = framing(status, &headers, head_only)?;
    let (body, used) = match framing {
        Framing::None => (Vec::new(), start),
        Framing::Length(n) => {
            if buf.len() < start + n {
                return Ok(None);
            }
            (buf[start..start + n].to_vec(), start + n)
        }
        Framing::Chunked => match parse_chunked(&buf[start..])? {
            Some((body, n)) => (body, start + n),
            None => return Ok(None),
        },
        Framing::UntilClose => match ended {
            Some(End::Closed) => (buf[start..].to_vec(), buf.len()),
            Some(end) => {
                return Err(format!(
                    "a body without length or chunking (delimited by the close) and the \
                     connection {}: it cannot be known whole",
                    end.describe()
                ))
            }
            None => return Ok(None),
        },
    };
    Ok(Some((
        Answer {
            status,
            headers,
            body,
            interim: Vec::new(),
        },
        used,
    )))
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = std::str::from_utf8(head)
        .map_err(|_| format!("an answer head that is not UTF-8: {}", shown(head)))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| {
            let code = rest.get(..3)?;
            let after = rest.get(3..)?;
            let ok = code.bytes().all(|b| b.is_ascii_digit())
                && (after.is_empty() || after.starts_with(' '));
            ok.then(|| code.parse().ok()).flatten()
        })
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        if line.contains(['\r', '\n']) {
            return Err(format!("a bare CR or LF in the answer head: {line:?}"));
        }
        if line.starts_with([' ', '\t']) {
            return Err(format!("a folded header line: {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a header line: {line:?}"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("a bad header name: {line:?}"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok((status, headers))
}

fn framing(status: u16, headers: &[(String, String)], head_only: bool) -> Result<Framing, String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(',').map(|p| p.trim().to_ascii_lowercase()))
            .collect()
    };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err(format!(
            "an answer with both Transfer-Encoding {te:?} and Content-Length {cl:?}"
        ));
    }
    if (100..200).contains(&status) || status == 204 || status == 304 || head_only {
        return Ok(Framing::None);
    }
    if !te.is_empty() {
        if te.last().map(String::as_str) != Some("chunked")
            || te.iter().filter(|c| *c == "chunked").count() != 1
        {
            return Err(format!(
                "a transfer coding other than final chunked: {te:?}"
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl.split_first() {
        None => Ok(Framing::UntilClose),
        Some((first, rest)) => {
            if first.is_empty()
                || !first.bytes().all(|b| b.is_ascii_digit())
                || rest.iter().any(|v| v != first)
            {
                return Err(format!("a bad Content-Length: {cl:?}"));
            }
            first
                .parse()
                .map(Framing::Length)
                .map_err(|_| format!("a Content-Length too large: {first}"))
        }
    }
}

/// Parses a chunked body at the start of `b`: the body and the bytes it took, once whole.
fn parse_chunked(b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(&b[pos..], b"\r\n") else {
            return line_too_long(&b[pos..]);
        };
        let line = &b[pos..pos + eol];
        let size_text = line.split(|c| *c == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| format!("a chunk size that is not text: {}", shown(line)))?
            .trim_end_matches([' ', '\t']);
        if size_text.is_empty() || !size_text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("a bad chunk size line: {}", shown(line)));
        }
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("a chunk size too large: {size_text}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then the empty line that ends the body.
            loop {
                let Some(eol) = find(&b[pos..], b"\r\n") else {
                    return line_too_long(&b[pos..]);
                };
                let line = &b[pos..pos + eol];
                pos += eol + 2;
                if line.is_empty() {
                    return Ok(Some((body, pos)));
                }
                if !line.contains(&b':') {
                    return Err(format!("not a trailer line: {}", shown(line)));
                }
            }
        }
        if b.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&b[pos..pos + size]);
        if &b[pos + size..pos + size + 2] != b"\r\n" {
            return Err("a chunk's data not followed by CRLF".to_string());
        }
        pos += size + 2;
    }
}

fn line_too_long<T>(rest: &[u8]) -> Result<Option<T>, String> {
    if rest.len() > 4096 {
        return Err(format!("a chunk line over 4 KiB: {}", shown(rest)));
    }
    Ok(None)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The answers to `raw` on a new connection, read until the connection ends, and how it ended.
#[derive(Debug)]
pub struct Exchange {
    pub sent: Sent,
    pub answers: Vec<Answer>,
    pub end: End,
    /// Everything the connection received.
    pub received: Vec<u8>,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.answers.iter().map(|a| a.status).collect()
    }
    /// The first answer's status, if any.
    pub fn status(&self) -> Option<u16> {
        self.answers.first().map(|a| a.status)
    }
}

/// Sends `raw` on a new connection (a server that closes early may refuse part of it: that is
/// reported in `sent`) and reads whole answers until the connection ends. An answer that says
/// `Connection: close` must be the last: any byte after it fails the test. When the server
/// keeps the connection open, `end` is [`End::Open`] after the bound.
pub async fn exchange(addr: SocketAddr, raw: impl AsRef<[u8]>) -> Exchange {
    let mut conn = Conn::open(addr).await;
    let sent = conn.write(raw).await;
    let mut answers = Vec::new();
    let end = loop {
        match conn.answer_or_end().await {
            Ok(a) => {
                let close = a.says_close();
                answers.push(a);
                if close {
                    break conn.end().await;
                }
            }
            Err(end) => break end,
        }
    };
    Exchange {
        sent,
        answers,
        end,
        received: conn.received,
    }
}

/// Sends `raw` (one request) on a new connection and returns its answer, failing the test
/// unless the answer is whole and the server then closes the connection cleanly.
pub async fn request(addr: SocketAddr, raw: impl AsRef<[u8]>) -> Answer {
    let mut conn = Conn::open(addr).await;
    let answer = conn.request(raw).await;
    conn.closed().await;
    answer
}

/// A GET with `Connection: close` and extra header lines (each ending `\r\n`): its answer,
/// whole, and then a clean close.
pub async fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{extra}\r\n"),
    )
    .await
}

/// Writes `head` and `body` whole before reading, as a browser's `fetch` does, on a new
/// connection; returns what happened to the request and its answer.
pub async fn upload(addr: SocketAddr, head: &str, body: &[u8]) -> (Uploaded, Conn) {
    let mut conn = Conn::open(addr).await;
    let up = conn.upload(head, body).await;
    (up, conn)
}
