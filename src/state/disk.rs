//! The file operations the store makes, behind one trait, so tests can fail any of them
//! ([`crate::state::fault::FaultDisk`]) and the store never touches `std::fs` directly.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// A file open for writing: appends (segments) or writes from the start (the snapshot's
/// temporary file).
pub trait DiskFile: Send {
    /// Writes some of `buf` (maybe fewer bytes than given, like `write(2)`).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Makes what was written durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes; later appends start there.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// How [`Disk::keep`] keeps a file under a new name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The file leaves its name.
    Move,
    /// The file stays where it is and a copy (or a hard link) gets the new name.
    Copy,
}

/// The file operations of the store.
pub trait Disk: Send + Sync + 'static {
    /// Creates `path` for appending; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Creates or empties `path` for writing.
    fn replace(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing `path` for appending (to cut a torn tail away).
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens `path` for reading.
    fn read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Renames `from` over `to` (atomically replacing it).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the folder's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Gives `from` the additional or new name `to`, failing with `AlreadyExists` rather than
    /// replacing anything at `to`.
    fn keep(&self, from: &Path, to: &Path, how: Keep) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsDisk;

struct OsFile(File);

impl DiskFile for OsFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Disk for OsDisk {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn replace(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Other systems cannot open a folder to flush it; a rename is as durable as they allow.
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn keep(&self, from: &Path, to: &Path, how: Keep) -> io::Result<()> {
        // A hard link never replaces an existing name, so two kept files can never collide; it
        // also needs no space, which matters when the disk is full.
        match std::fs::hard_link(from, to) {
            Ok(()) => {
                if how == Keep::Move {
                    std::fs::remove_file(from)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            // A file system without hard links: check, then rename or copy (one process owns
            // the state folder, so nothing else creates the name in between).
            Err(_) => {
                if std::fs::symlink_metadata(to).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", to.display()),
                    ));
                }
                match how {
                    Keep::Move => std::fs::rename(from, to),
                    Keep::Copy => {
                        let mut src = File::open(from)?;
                        let mut dst = OpenOptions::new().write(true).create_new(true).open(to)?;
                        io::copy(&mut src, &mut dst)?;
                        dst.sync_all()
                    }
                }
            }
        }
    }
}

/// Writes all of `buf` through `file`, going on after short writes. Returns how many bytes
/// reached the file and the error that stopped it, if any.
pub(crate) fn write_all(file: &mut dyn DiskFile, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        match file.write(&buf[done..]) {
            Ok(0) => {
                return (
                    done,
                    Err(io::Error::new(io::ErrorKind::WriteZero, "wrote no bytes")),
                )
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// `io::Write` over a [`DiskFile`], counting the bytes that reached it.
pub(crate) struct Writer<'a> {
    pub file: &'a mut dyn DiskFile,
    pub written: u64,
}

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
