//! A [`Disk`] that fails on command and counts what it is asked, for tests of the store's
//! failure paths: a full disk, I/O errors, short writes, a crash after any operation or byte,
//! and an operation held until released (to show what goes on meanwhile).
//!
//! It works on the real files (through [`OsDisk`]), so what a "crash" leaves is exactly what the
//! operations before it did; reopening with [`OsDisk`] is the restart.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::disk::{Disk, DiskFile, Keep, OsDisk};

/// A file operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Disk::create_new`], [`Disk::replace`] or [`Disk::open_append`].
    Create,
    /// [`DiskFile::write`].
    Write,
    /// [`DiskFile::sync`].
    Sync,
    /// [`DiskFile::set_len`].
    Truncate,
    /// [`Disk::rename`].
    Rename,
    /// [`Disk::remove`].
    Remove,
    /// [`Disk::sync_dir`].
    SyncDir,
    /// [`Disk::keep`].
    Keep,
    /// [`Disk::read`].
    Read,
    /// [`Disk::list`].
    List,
}

impl Op {
    /// Whether the operation changes the disk (a crash counts only these).
    pub fn changes_disk(self) -> bool {
        !matches!(self, Op::Read | Op::List)
    }
}

/// The error an injected failure returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// No space left on device.
    NoSpace,
    /// An I/O error.
    Io,
    /// Permission denied.
    Denied,
}

impl Errno {
    fn error(self) -> io::Error {
        match self {
            Errno::NoSpace => io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            ),
            Errno::Io => io::Error::other("input/output error (injected)"),
            Errno::Denied => io::Error::new(
                io::ErrorKind::PermissionDenied,
                "permission denied (injected)",
            ),
        }
    }
}

struct Rule {
    op: Op,
    on: String,
    errno: Errno,
    times: u32,
    /// A short write: at most this many bytes, then the next matching write fails.
    short: Option<usize>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    full: bool,
    crash_ops: Option<u64>,
    crash_bytes: Option<u64>,
    crashed: bool,
    counts: HashMap<(Op, PathBuf), u64>,
    log: Vec<(Op, PathBuf)>,
    hold: Option<(Op, String)>,
    holding: usize,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

/// The fault-injecting disk. Clones share their state: give one to the store, keep one to
/// steer it.
#[derive(Clone, Default)]
pub struct FaultDisk {
    inner: Arc<Inner>,
}

fn matches(path: &Path, on: &str) -> bool {
    on.is_empty()
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(on))
}

impl FaultDisk {
    /// A disk that does what it is asked until told otherwise.
    pub fn new() -> FaultDisk {
        FaultDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `times` operations `op` on a file whose name contains `on` (`""`: any) fail.
    pub fn fail(&self, op: Op, on: &str, errno: Errno, times: u32) {
        self.lock().rules.push(Rule {
            op,
            on: on.to_owned(),
            errno,
            times,
            short: None,
        });
    }

    /// The next write to a file whose name contains `on` writes at most `bytes` bytes; the
    /// write after it (the rest) fails with "no space".
    pub fn short_write(&self, on: &str, bytes: usize) {
        self.lock().rules.push(Rule {
            op: Op::Write,
            on: on.to_owned(),
            errno: Errno::NoSpace,
            times: 1,
            short: Some(bytes),
        });
    }

    /// While `full`, every write of a byte or more fails with "no space" (files can still be
    /// created, renamed and removed, as on a real full file system).
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// After `n` more operations that change the disk, the disk is gone: every later operation
    /// fails, as if the process had died there.
    pub fn crash_after_ops(&self, n: u64) {
        self.lock().crash_ops = Some(n);
    }

    /// After `n` more bytes written (to any file), the disk is gone; the write that reaches the
    /// limit writes only up to it.
    pub fn crash_after_bytes(&self, n: u64) {
        self.lock().crash_bytes = Some(n);
    }

    /// Whether a crash happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Blocks every operation `op` on a file whose name contains `on` until [`FaultDisk::release`].
    pub fn hold(&self, op: Op, on: &str) {
        self.lock().hold = Some((op, on.to_owned()));
    }

    /// Lets held operations go on.
    pub fn release(&self) {
        self.lock().hold = None;
        self.inner.changed.notify_all();
    }

    /// Waits until an operation is held (at most `limit`); says whether one is.
    pub fn wait_held(&self, limit: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .inner
            .changed
            .wait_timeout_while(st, limit, |s| s.holding == 0)
            .unwrap_or_else(PoisonError::into_inner);
        st.holding > 0
    }

    /// How many operations `op` were asked of files whose name contains `on`.
    pub fn count(&self, op: Op, on: &str) -> u64 {
        self.lock()
            .counts
            .iter()
            .filter(|((o, p), _)| *o == op && matches(p, on))
            .map(|(_, n)| *n)
            .sum()
    }

    /// The operations that change the disk, in the order asked.
    pub fn log(&self) -> Vec<(Op, PathBuf)> {
        self.lock().log.clone()
    }

    /// Decides an operation of `bytes` bytes (writes) on `path`: how many bytes it may write,
    /// or its error.
    fn before(&self, op: Op, path: &Path, bytes: usize) -> io::Result<usize> {
        let mut st = self.lock();
        while st
            .hold
            .as_ref()
            .is_some_and(|(o, on)| *o == op && matches(path, on))
        {
            st.holding += 1;
            self.inner.changed.notify_all();
            st = self
                .inner
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
            st.holding -= 1;
        }
        *st.counts.entry((op, path.to_owned())).or_default() += 1;
        let gone = || io::Error::other("the disk is gone (simulated crash)");
        if op.changes_disk() {
            st.log.push((op, path.to_owned()));
            if st.crashed {
                return Err(gone());
            }
            match st.crash_ops {
                Some(0) => {
                    st.crashed = true;
                    return Err(gone());
                }
                Some(n) => st.crash_ops = Some(n - 1),
                None => {}
            }
        }
        if let Some(i) = st
            .rules
            .iter()
            .position(|r| r.op == op && r.times > 0 && matches(path, &r.on))
        {
            let rule = &mut st.rules[i];
            rule.times -= 1;
            let (errno, short, on) = (rule.errno, rule.short, rule.on.clone());
            st.rules.retain(|r| r.times > 0);
            if let Some(max) = short {
                st.rules.push(Rule {
                    op: Op::Write,
                    on,
                    errno: Errno::NoSpace,
                    times: 1,
                    short: None,
                });
                return Ok(bytes.min(max));
            }
            return Err(errno.error());
        }
        if op == Op::Write {
            if st.full && bytes > 0 {
                return Err(Errno::NoSpace.error());
            }
            if let Some(left) = st.crash_bytes {
                if left == 0 {
                    st.crashed = true;
                    return Err(gone());
                }
                let allowed = bytes.min(usize::try_from(left).unwrap_or(usize::MAX));
                st.crash_bytes = Some(left - allowed as u64);
                return Ok(allowed);
            }
        }
        Ok(bytes)
    }
}

struct FaultFile {
    file: Box<dyn DiskFile>,
    path: PathBuf,
    disk: FaultDisk,
}

impl DiskFile for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.disk.before(Op::Write, &self.path, buf.len())?;
        if n == 0 {
            return Ok(0);
        }
        self.file.write(&buf[..n])
    }
    fn sync(&mut self) -> io::Result<()> {
        self.disk.before(Op::Sync, &self.path, 0)?;
        self.file.sync()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.disk.before(Op::Truncate, &self.path, 0)?;
        self.file.set_len(len)
    }
}

impl FaultDisk {
    fn wrap(&self, path: &Path, file: Box<dyn DiskFile>) -> Box<dyn DiskFile> {
        Box::new(FaultFile {
            file,
            path: path.to_owned(),
            disk: self.clone(),
        })
    }
}

impl Disk for FaultDisk {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.before(Op::Create, path, 0)?;
        Ok(self.wrap(path, OsDisk.create_new(path)?))
    }
    fn replace(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.before(Op::Create, path, 0)?;
        Ok(self.wrap(path, OsDisk.replace(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.before(Op::Create, path, 0)?;
        Ok(self.wrap(path, OsDisk.open_append(path)?))
    }
    fn read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        self.before(Op::Read, path, 0)?;
        OsDisk.read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.before(Op::Rename, from, 0)?;
        OsDisk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.before(Op::Remove, path, 0)?;
        OsDisk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.before(Op::SyncDir, dir, 0)?;
        OsDisk.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.before(Op::List, dir, 0)?;
        OsDisk.list(dir)
    }
    fn keep(&self, from: &Path, to: &Path, how: Keep) -> io::Result<()> {
        self.before(Op::Keep, from, 0)?;
        OsDisk.keep(from, to, how)
    }
}
