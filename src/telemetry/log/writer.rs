//! The writer: a bounded queue to one thread that formats and writes.
//!
//! A request never waits for the log: [`LogHandle::log`] tries to queue the record and, when the
//! queue is full (a slow disk, a flood), drops it and counts it. The writer thread buffers its
//! output and flushes whenever the queue runs empty, so a quiet log is on disk at once and a busy
//! one is written in large blocks. When records were dropped, the writer says how many in a
//! WARNING `Log records dropped` line with `{"dropped":N}` as soon as it has caught up.
//!
//! `reopen` (SIGUSR1) makes the writer open the file again by name, so logrotate's rename
//! works; if the new file cannot be opened, the writer keeps the old one and says so in the log.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use jiff::Timestamp;

use crate::clock::SharedClock;

use super::fold::{FoldOutcome, FoldTable, FOLD_TABLE_CAP};
use super::{Formatter, Level, LogConfig, Record, Value};

/// Records the queue holds before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16_384;

const BUFFER_BYTES: usize = 64 * 1024;

/// Why the log could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file could not be opened for appending.
    #[error("cannot open log file {path}: {source} (check the [log] file path and its folder's permissions)")]
    Open {
        /// The path from `[log] file`.
        path: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Spawn(io::Error),
}

/// Where lines go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Standard output.
    Stdout,
    /// A file, appended to and created if missing.
    File(PathBuf),
    /// Memory, for tests.
    Memory(Captured),
}

impl Destination {
    /// The destination `[log] file` names: `"-"` is stdout.
    pub fn from_config(config: &LogConfig) -> Destination {
        Destination::named(&config.file)
    }

    /// The destination a file setting names: `"-"` is stdout, anything else a path.
    pub fn named(file: &str) -> Destination {
        if file == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(file))
        }
    }

    /// Opens it for appending (a file is created if missing).
    pub(crate) fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::File(path) => Box::new(open_append(path)?),
            Destination::Memory(captured) => Box::new(captured.clone()),
        })
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Lines captured in memory (a [`Destination::Memory`]); clones share the same buffer.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// An empty capture.
    pub fn new() -> Captured {
        Captured::default()
    }

    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything written so far, one string a line, newlines removed.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.bytes())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Msg {
    Line(Timestamp, Record),
    /// Wakes the writer so it looks at the reopen flag.
    Wake,
    Flush(SyncSender<()>),
    Stop,
}

struct Shared {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    fold_overflows: AtomicU64,
    reopen: AtomicBool,
    folds: FoldTable,
    token_preview: usize,
    clock: SharedClock,
}

impl Shared {
    /// The time now, as the formatter takes it.
    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.clock.now().unix_micros()).unwrap_or_default()
    }
}

/// A cheap, cloneable handle for logging from anywhere; it never blocks.
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Queues `record`, stamped now. Drops and counts it when the queue is full.
    pub fn log(&self, record: Record) {
        self.log_at(self.shared.now(), record);
    }

    /// Queues `record` with the time `at` (the time the event happened).
    pub fn log_at(&self, at: Timestamp, record: Record) {
        match self.shared.tx.try_send(Msg::Line(at, record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Logs a record that may be folded with others of the same `key` (a well-mixed hash of
    /// client and reason, e.g. from a `RandomState`). `now` is the fold clock; `build` is only
    /// called when the record will be written, and must not log itself.
    pub fn log_folded(
        &self,
        key: u64,
        now: Instant,
        build: impl FnOnce() -> Record,
    ) -> FoldOutcome {
        let (outcome, record) = self.shared.folds.admit(key, now, build);
        if outcome == FoldOutcome::Unfolded {
            self.shared.fold_overflows.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(record) = record {
            self.log(record);
        }
        outcome
    }

    /// As [`LogHandle::log_folded`], folding per `network` as well: `net_key` is the
    /// network's key combined with what else makes records the same (reason, limit).
    pub fn log_folded_from(
        &self,
        key: u64,
        network: super::Network,
        net_key: u64,
        now: Instant,
        build: impl FnOnce() -> Record,
    ) -> FoldOutcome {
        let (outcome, record) = self
            .shared
            .folds
            .admit_from(key, network, net_key, now, build);
        if outcome == FoldOutcome::Unfolded {
            self.shared.fold_overflows.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(record) = record {
            self.log(record);
        }
        outcome
    }

    /// Writes every pending fold count now (`"repeated":N` of windows still open): before the
    /// process exits, and on SIGHUP.
    pub fn flush_folds(&self, now: Instant) {
        for record in self.shared.folds.flush(now) {
            self.log(record);
        }
    }

    /// Networks held in the fold table now (at most [`super::NET_TABLE_CAP`]).
    pub fn folded_networks(&self) -> usize {
        self.shared.folds.networks()
    }

    /// Waits until everything queued before this call is written and flushed. It blocks: for
    /// shutdown, operators and tests (from async code, inside `spawn_blocking`), never a request.
    pub fn flush_blocking(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.shared.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Writes the summaries of fold windows that ended by `now`; call about once a second
    /// (see [`LogHandle::spawn_fold_sweeper`]).
    pub fn sweep_folds(&self, now: Instant) {
        for record in self.shared.folds.sweep(now) {
            self.log(record);
        }
    }

    /// Runs [`LogHandle::sweep_folds`] every second on the current tokio runtime.
    pub fn spawn_fold_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                handle.sweep_folds(handle.shared.clock.now().instant());
            }
        })
    }

    /// Asks the writer to open the log file again (after logrotate moved it). Never blocks.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        // If the queue is full the writer is busy and sees the flag after its next line.
        let _ = self.shared.tx.try_send(Msg::Wake);
    }

    /// Records dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes that failed (disk full, closed stdout), since the start.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Records written unfolded because the fold table was full, since the start.
    pub fn fold_overflows(&self) -> u64 {
        self.shared.fold_overflows.load(Ordering::Relaxed)
    }

    /// Keys held in the fold table now (at most [`super::FOLD_TABLE_CAP`]).
    pub fn folded_keys(&self) -> usize {
        self.shared.folds.len()
    }

    /// The clock lines are stamped with.
    pub fn clock(&self) -> &SharedClock {
        &self.shared.clock
    }

    /// Characters of a join token a line may show (`[log] token_preview`).
    pub fn token_preview(&self) -> usize {
        self.shared.token_preview
    }
}

/// The running log: owns the writer thread. Dropping it writes what is queued and stops.
pub struct LogSink {
    handle: LogHandle,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl LogSink {
    /// Starts the log that `config` describes (stdout or the file, opened now so that a bad
    /// path is an error at start, not a silent loss), stamping lines with the system clock.
    pub fn start(config: &LogConfig) -> Result<LogSink, LogError> {
        LogSink::start_with(config, Destination::from_config(config), QUEUE_CAPACITY)
    }

    /// Starts a log writing to `destination` with a queue of `capacity` records.
    pub fn start_with(
        config: &LogConfig,
        destination: Destination,
        capacity: usize,
    ) -> Result<LogSink, LogError> {
        LogSink::start_clocked(config, destination, capacity, crate::clock::system())
    }

    /// As [`LogSink::start_with`], stamping lines (and sweeping folds) with `clock`.
    pub fn start_clocked(
        config: &LogConfig,
        destination: Destination,
        capacity: usize,
        clock: SharedClock,
    ) -> Result<LogSink, LogError> {
        let (handle, rx) = channel(config, capacity, clock);
        LogSink::spawn(config, destination, handle, rx)
    }

    fn spawn(
        config: &LogConfig,
        destination: Destination,
        handle: LogHandle,
        rx: Receiver<Msg>,
    ) -> Result<LogSink, LogError> {
        let out = destination.open().map_err(|source| LogError::Open {
            path: config.file.clone(),
            source,
        })?;
        let writer = Writer {
            rx,
            shared: Arc::clone(&handle.shared),
            formatter: Formatter::from_config(config),
            destination,
            out: BufWriter::with_capacity(BUFFER_BYTES, out),
            line: Vec::with_capacity(512),
            reported_drops: 0,
        };
        let thread = std::thread::Builder::new()
            .name("joinshield-log".to_owned())
            .spawn(move || writer.run())
            .map_err(LogError::Spawn)?;
        Ok(LogSink {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for logging.
    pub fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    /// Waits until everything queued before this call is written and flushed.
    pub fn flush(&self) {
        self.handle.flush_blocking();
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

impl Drop for LogSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn channel(config: &LogConfig, capacity: usize, clock: SharedClock) -> (LogHandle, Receiver<Msg>) {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let shared = Shared {
        tx,
        dropped: AtomicU64::new(0),
        write_errors: AtomicU64::new(0),
        fold_overflows: AtomicU64::new(0),
        reopen: AtomicBool::new(false),
        folds: FoldTable::new(FOLD_TABLE_CAP),
        token_preview: config.token_preview,
        clock,
    };
    (
        LogHandle {
            shared: Arc::new(shared),
        },
        rx,
    )
}

/// Reopens the log on every SIGUSR1; needs a tokio runtime.
#[cfg(unix)]
pub fn install_sigusr1_reopen(handle: LogHandle) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            handle.reopen();
        }
    }))
}

struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    formatter: Formatter,
    destination: Destination,
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
    reported_drops: u64,
}

impl Writer {
    fn run(mut self) {
        // Ends when every sender is gone or on Stop.
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(at, record) => self.write_record(at, &record),
                    Msg::Wake => {}
                    Msg::Flush(ack) => {
                        self.catch_up();
                        let _ = ack.send(());
                    }
                    Msg::Stop => {
                        self.drain_and_catch_up();
                        return;
                    }
                }
                if self.shared.reopen.swap(false, Ordering::AcqRel) {
                    self.reopen();
                }
                next = self.rx.try_recv().ok();
            }
            // The queue is empty: say what was lost and put everything on disk.
            self.catch_up();
        }
        self.catch_up();
    }

    fn drain_and_catch_up(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Line(at, record) => self.write_record(at, &record),
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Wake | Msg::Stop => {}
            }
        }
        self.catch_up();
    }

    fn write_record(&mut self, at: Timestamp, record: &Record) {
        self.line.clear();
        self.formatter.write(&mut self.line, record, at);
        if self.out.write_all(&self.line).is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn catch_up(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            let record = Record::new(Level::Warning, "Log records dropped")
                .with("dropped", dropped - self.reported_drops);
            self.reported_drops = dropped;
            self.write_record(self.shared.now(), &record);
        }
        if self.out.flush().is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reopen(&mut self) {
        if self.out.flush().is_err() {
            self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        match self.destination.open() {
            Ok(out) => self.out = BufWriter::with_capacity(BUFFER_BYTES, out),
            Err(error) => {
                let record = Record::new(Level::Error, "Log file reopen failed")
                    .with("error", Value::from(error.to_string()));
                self.write_record(self.shared.now(), &record);
            }
        }
    }
}

#[cfg(test)]
// The tests anchor their instants on the real clock; the code under test reads none.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::telemetry::log::Format;
    use std::time::Duration;

    fn config() -> LogConfig {
        LogConfig {
            format: Format::Laravel,
            ..LogConfig::default()
        }
    }

    fn denial(ip: &str) -> Record {
        Record::new(Level::Warning, "Join token access denied")
            .with("reason", "token_rate_limited")
            .with("ip", ip)
    }

    #[test]
    fn logged_records_reach_the_destination_in_order() {
        let captured = Captured::new();
        let sink =
            LogSink::start_with(&config(), Destination::Memory(captured.clone()), 64).unwrap();
        let log = sink.handle();
        log.log(denial("a"));
        log.log(denial("b"));
        sink.flush();
        let lines = captured.lines();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("{\"reason\":\"token_rate_limited\",\"ip\":\"a\"} "));
        assert!(lines[1].contains("\"ip\":\"b\""));
    }

    #[test]
    fn a_full_queue_drops_and_the_writer_reports_the_count() {
        let cfg = config();
        // No writer yet: the queue fills deterministically.
        let (handle, rx) = channel(&cfg, 2, crate::clock::system());
        for ip in ["a", "b", "c", "d", "e"] {
            handle.log(denial(ip));
        }
        assert_eq!(handle.dropped(), 3);
        let captured = Captured::new();
        let sink = LogSink::spawn(&cfg, Destination::Memory(captured.clone()), handle, rx).unwrap();
        sink.flush();
        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[1].contains("\"ip\":\"b\""));
        assert!(lines[2].contains("production.WARNING: Log records dropped {\"dropped\":3} "));
        // Reported once only.
        sink.flush();
        assert_eq!(captured.lines().len(), 3);
    }

    #[test]
    fn logging_never_blocks_when_the_writer_is_gone() {
        let cfg = config();
        let (handle, rx) = channel(&cfg, 1, crate::clock::system());
        drop(rx);
        handle.log(denial("a"));
        assert_eq!(handle.dropped(), 1);
    }

    #[test]
    fn folded_records_make_one_line_with_the_repeat_count() {
        let captured = Captured::new();
        let sink =
            LogSink::start_with(&config(), Destination::Memory(captured.clone()), 64).unwrap();
        let log = sink.handle();
        let t0 = Instant::now();
        for i in 0..50 {
            log.log_folded(42, t0 + Duration::from_millis(i * 100), || denial("a"));
        }
        log.sweep_folds(t0 + Duration::from_secs(11));
        sink.flush();
        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].ends_with("\"ip\":\"a\",\"repeated\":49} "));
    }

    #[test]
    fn a_file_is_appended_to_and_reopened_after_rotation() {
        let dir = std::env::temp_dir().join(format!(
            "joinshield-log-test-{}-{}",
            std::process::id(),
            t_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shield.log");
        std::fs::write(&path, "old line\n").unwrap();
        let cfg = LogConfig {
            file: path.to_string_lossy().into_owned(),
            ..config()
        };
        let sink = LogSink::start(&cfg).unwrap();
        let log = sink.handle();
        log.log(denial("a"));
        sink.flush();
        let rotated = dir.join("shield.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.log(denial("b"));
        sink.close();
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert!(old.starts_with("old line\n["));
        assert!(old.contains("\"ip\":\"a\""));
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("\"ip\":\"b\""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn t_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    }

    #[test]
    fn a_missing_folder_is_an_error_at_start() {
        let cfg = LogConfig {
            file: std::env::temp_dir()
                .join("joinshield-no-such-dir")
                .join("x")
                .join("shield.log")
                .to_string_lossy()
                .into_owned(),
            ..config()
        };
        assert!(matches!(LogSink::start(&cfg), Err(LogError::Open { .. })));
    }
}
