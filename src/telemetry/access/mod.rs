//! The access log (`[log] access = "json"`): one JSON line per answer, in a file of its own,
//! for log pipelines used to nginx's access log. The denial log stays as it is.
//!
//! The request path only fills an [`AccessRecord`] (plain values moved out of the request's
//! context, nothing formatted) and hands it to [`AccessLog::write`] when the answer has ended:
//! its body sent to the end, or dropped because the client went away. That is a `try_send` on
//! a bounded queue to one writer thread, which never waits: when the queue is full the record is
//! dropped and counted (`joinshield_access_log_records_dropped_total`, and a WARNING in the main
//! log once the writer has caught up). The writer formats each record into one reused buffer
//! ([`format::write_line`]), writes through a 64 KiB buffer and flushes whenever the queue runs
//! empty.
//!
//! With `access = "off"` (the default) no writer exists and the request path builds no
//! record: the one exit tests an `Option` and moves on.
//!
//! `reopen` (SIGUSR1) opens the file again by name, as the main log does, for logrotate.

pub mod format;

use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use http::{HeaderValue, Method, Uri, Version};
use tokio::sync::watch;

use crate::telemetry::log::{Destination, Level, LogConfig, LogError, LogHandle, Record, Stamper};

/// Records the queue holds before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16_384;

const BUFFER_BYTES: usize = 64 * 1024;

/// `[log] access`: whether each answer gets an access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// No access log (the default): the request path pays one branch.
    Off,
    /// One JSON object a line ([`format::write_line`]).
    Json,
}

/// One answer, as the request path hands it to the access log: the values are moved out of the
/// request's context (no copy of the path, the token or the request id is made), and the
/// writer thread does every bit of formatting, redaction included.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request arrived (its one clock reading), Unix microseconds.
    pub at_us: i64,
    /// The client IP the shield decided on.
    pub ip: IpAddr,
    /// The request method.
    pub method: Method,
    /// The request target; only its path is written (the query may carry signatures).
    pub uri: Uri,
    /// The route class, on a guest route.
    pub route: Option<Arc<str>>,
    /// The join token, on a guest route. Never written: the line shows its preview, and the
    /// path has it redacted.
    pub token: Option<Box<str>>,
    /// Characters of the token the line may show (`[log] token_preview` of the request's
    /// snapshot).
    pub keep: u8,
    /// The request id (the client's when sane, else the shield's).
    pub request_id: HeaderValue,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The status sent.
    pub status: u16,
    /// Why the shield answered itself: the answer's `error.code` (`token_rate_limited`,
    /// `upstream_timeout`, …) or `https_redirect`; `None` for the app's answers.
    pub reason: Option<&'static str>,
    /// From sending the request upstream to the app's response head (or to the failure, for a
    /// 502/504), microseconds; `None` when it was not sent upstream.
    pub upstream_us: Option<u64>,
    /// Body bytes handed to the connection, counted as they stream.
    pub bytes: u64,
    /// Whether the body went out to its end (false: the client went away, or the app's body
    /// broke off, first).
    pub complete: bool,
}

/// Why a record could not be queued: the queue was full or the writer has stopped.
struct Dropped;

enum Msg {
    Record(Box<AccessRecord>),
    /// Wakes the writer so it looks at the reopen flag.
    Wake,
    Flush(SyncSender<()>),
    Stop,
}

struct Shared {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    reopen: AtomicBool,
    /// Records written (and flushed, at the end of each batch), for tests and operators.
    written: watch::Sender<u64>,
}

/// A cheap, cloneable handle to the access log; it never blocks.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Queues `record`; drops and counts it when the queue is full.
    pub fn write(&self, record: Box<AccessRecord>) {
        if self.try_write(record).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn try_write(&self, record: Box<AccessRecord>) -> Result<(), Dropped> {
        match self.shared.tx.try_send(Msg::Record(record)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Dropped),
        }
    }

    /// Asks the writer to open the file again (after logrotate moved it). Never blocks.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        let _ = self.shared.tx.try_send(Msg::Wake);
    }

    /// Waits until everything queued before this call is written and flushed. It blocks: for
    /// shutdown, operators and tests, never a request.
    pub fn flush_blocking(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.shared.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Records dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes that failed (disk full, closed stdout), since the start.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Follows the count of records written and flushed (wait for `*n >= k`, never sleep).
    pub fn written(&self) -> watch::Receiver<u64> {
        self.shared.written.subscribe()
    }
}

/// The running access log: owns the writer thread. Dropping it writes what is queued and stops.
pub struct AccessSink {
    handle: AccessLog,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AccessSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSink")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl AccessSink {
    /// Starts the access log `config` asks for (`None` when `access = "off"`), opening its file
    /// now so that a bad path is an error at start; drops and reopen failures are reported in
    /// `log`.
    pub fn start(config: &LogConfig, log: LogHandle) -> Result<Option<AccessSink>, LogError> {
        match config.access {
            AccessFormat::Off => Ok(None),
            AccessFormat::Json => AccessSink::start_with(
                config,
                Destination::named(&config.access_file),
                QUEUE_CAPACITY,
                log,
            )
            .map(Some),
        }
    }

    /// Starts an access log writing to `destination` with a queue of `capacity` records.
    pub fn start_with(
        config: &LogConfig,
        destination: Destination,
        capacity: usize,
        log: LogHandle,
    ) -> Result<AccessSink, LogError> {
        let (handle, rx) = channel(capacity);
        AccessSink::spawn(config, destination, handle, rx, log)
    }

    fn spawn(
        config: &LogConfig,
        destination: Destination,
        handle: AccessLog,
        rx: Receiver<Msg>,
        log: LogHandle,
    ) -> Result<AccessSink, LogError> {
        let out = destination.open().map_err(|source| LogError::Open {
            path: config.access_file.clone(),
            source,
        })?;
        let writer = Writer {
            rx,
            shared: Arc::clone(&handle.shared),
            stamper: Stamper::new(config.timezone.clone()),
            destination,
            file: config.access_file.clone(),
            out: BufWriter::with_capacity(BUFFER_BYTES, out),
            line: Vec::with_capacity(512),
            written: 0,
            reported_drops: 0,
            log,
        };
        let thread = std::thread::Builder::new()
            .name("joinshield-access".to_owned())
            .spawn(move || writer.run())
            .map_err(LogError::Spawn)?;
        Ok(AccessSink {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for writing.
    pub fn handle(&self) -> AccessLog {
        self.handle.clone()
    }

    /// Writes everything queued, then stops the writer thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.shared.tx.send(Msg::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for AccessSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn channel(capacity: usize) -> (AccessLog, Receiver<Msg>) {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let (written, _) = watch::channel(0);
    let shared = Shared {
        tx,
        dropped: AtomicU64::new(0),
        write_errors: AtomicU64::new(0),
        reopen: AtomicBool::new(false),
        written,
    };
    (
        AccessLog {
            shared: Arc::new(shared),
        },
        rx,
    )
}

struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    stamper: Stamper,
    destination: Destination,
    /// `[log] access_file`, for messages.
    file: String,
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
    written: u64,
    reported_drops: u64,
    log: LogHandle,
}

impl Writer {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(record) => self.write_record(&record),
                    Msg::Wake => {}
                    Msg::Flush(ack) => {
                        self.catch_up();
                        let _ = ack.send(());
                    }
                    Msg::Stop => {
                        self.drain();
                        return;
                    }
                }
                if self.shared.reopen.swap(false, Ordering::AcqRel) {
                    self.reopen();
                }
                next = self.rx.try_recv().ok();
            }
            // The queue is empty: put everything on disk and say what was lost.
            self.catch_up();
        }
        self.catch_up();
    }

    fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Record(record) => self.write_record(&record),
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Wake | Msg::Stop => {}
            }
        }
        self.catch_up();
    }

    fn write_record(&mut self, record: &AccessRecord) {
        self.line.clear();
        format::write_line(&mut self.line, &mut self.stamper, record);
        if self.out.write_all(&self.line).is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.written += 1;
    }

    fn catch_up(&mut self) {
        if self.out.flush().is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.written.send_replace(self.written);
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            self.log.log(
                Record::new(Level::Warning, "Access log records dropped")
                    .with("dropped", dropped - self.reported_drops),
            );
            self.reported_drops = dropped;
        }
    }

    fn reopen(&mut self) {
        if self.out.flush().is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        match self.destination.open() {
            Ok(out) => self.out = BufWriter::with_capacity(BUFFER_BYTES, out),
            Err(error) => self.log.log(
                Record::new(Level::Error, "Access log reopen failed")
                    .with("file", self.file.as_str())
                    .with("error", error.to_string()),
            ),
        }
    }
}

/// Reopens the access log on every SIGUSR1; needs a tokio runtime.
#[cfg(unix)]
pub fn install_sigusr1_reopen(handle: AccessLog) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            handle.reopen();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::{Captured, LogSink};

    fn record(status: u16) -> Box<AccessRecord> {
        Box::new(AccessRecord {
            at_us: 1_795_802_400_123_456,
            ip: "203.0.113.7".parse().unwrap(),
            method: Method::GET,
            uri: Uri::from_static("/api/v1/gallery/abc123XYZ789/photos?sig=secret"),
            route: Some("gallery".into()),
            token: Some("abc123XYZ789".into()),
            keep: 6,
            request_id: HeaderValue::from_static("req-1"),
            version: Version::HTTP_11,
            tls: false,
            status,
            reason: None,
            upstream_us: Some(1234),
            bytes: 10,
            complete: true,
        })
    }

    fn main_log() -> (LogSink, Captured) {
        let captured = Captured::new();
        let sink = LogSink::start_with(
            &LogConfig::default(),
            Destination::Memory(captured.clone()),
            64,
        )
        .unwrap();
        (sink, captured)
    }

    #[test]
    fn records_become_lines_in_order_and_the_written_count_follows() {
        let (log, _) = main_log();
        let captured = Captured::new();
        let sink = AccessSink::start_with(
            &LogConfig::default(),
            Destination::Memory(captured.clone()),
            64,
            log.handle(),
        )
        .unwrap();
        let access = sink.handle();
        let written = access.written();
        access.write(record(200));
        access.write(record(429));
        access.flush_blocking();
        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("\"status\":200"), "{}", lines[0]);
        assert!(lines[1].contains("\"status\":429"), "{}", lines[1]);
        assert_eq!(*written.borrow(), 2);
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so_in_the_main_log() {
        let (log, main) = main_log();
        // No writer yet: the queue fills deterministically.
        let (handle, rx) = channel(2);
        for status in [200, 201, 202, 203, 204] {
            handle.write(record(status));
        }
        assert_eq!(handle.dropped(), 3);
        let captured = Captured::new();
        let sink = AccessSink::spawn(
            &LogConfig::default(),
            Destination::Memory(captured.clone()),
            handle,
            rx,
            log.handle(),
        )
        .unwrap();
        sink.handle().flush_blocking();
        assert_eq!(captured.lines().len(), 2);
        log.flush();
        let lines = main.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("WARNING: Access log records dropped {\"dropped\":3}")),
            "{lines:?}"
        );
    }

    #[test]
    fn writing_never_blocks_when_the_writer_is_gone() {
        let (handle, rx) = channel(1);
        drop(rx);
        handle.write(record(200));
        assert_eq!(handle.dropped(), 1);
    }

    #[test]
    fn off_starts_no_writer() {
        let (log, _) = main_log();
        assert!(AccessSink::start(&LogConfig::default(), log.handle())
            .unwrap()
            .is_none());
    }
}
