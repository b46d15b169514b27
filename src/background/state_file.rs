//! The ban state file, kept across restarts: a versioned JSON file,
//! `{"version":1,"bans":[...],"offenders":[...]}`, written to `<file>.tmp`, fsync'd, renamed over
//! `<file>`, and the directory fsync'd, so a crash at any point leaves either the old or the new
//! file whole. The table itself is the policy's ([`Bans`]); this is its I/O, for the start-up
//! and the housekeeping task.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::bans::{net_text, Ban, Bans};

/// The version of the state file this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Why the ban state file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BansError {
    /// The file exists but could not be read.
    #[error("cannot read ban state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a ban state file.
    #[error("ban state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file was written by a newer (or unknown) version.
    #[error(
        "ban state file {path} has version {version}; this build reads version {STATE_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct StoredOffender {
    #[serde(with = "net_text")]
    net: IpNet,
    offences: u32,
    forget_at: i64,
}

#[derive(Serialize)]
struct StateOut<'a> {
    version: u32,
    bans: &'a [Ban],
    offenders: Vec<StoredOffender>,
}

#[derive(Deserialize)]
struct StateIn {
    #[serde(default)]
    bans: Vec<Ban>,
    #[serde(default)]
    offenders: Vec<StoredOffender>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Saving and loading a ban table.
pub trait StateFile: Sized {
    /// Writes the whole state to `path` atomically: `<path>.tmp` is written and fsync'd, renamed
    /// over `path`, and the directory fsync'd.
    fn save(&self, path: &Path) -> std::io::Result<()>;

    /// Saves only when something changed since the last save; says whether it wrote.
    fn save_if_dirty(&self, path: &Path) -> std::io::Result<bool>;

    /// Reads the state saved at `path`, dropping bans that ended by `now_unix`. A missing file
    /// is an empty table; an unreadable, corrupt or unknown-version file is an error naming it
    /// (the caller starts empty and sets the file aside with [`set_aside`]).
    fn load(path: &Path, now_unix: i64) -> Result<Self, BansError>;
}

impl StateFile for Bans {
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let _one_at_a_time = self.save_lock();
        let (bans, offenders, change) = self.saved_state();
        let state = StateOut {
            version: STATE_VERSION,
            bans: &bans,
            offenders: offenders
                .into_iter()
                .map(|(net, offences, forget_at)| StoredOffender {
                    net,
                    offences,
                    forget_at,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        let tmp = sibling(path, "tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(path)?;
        self.mark_saved(change);
        Ok(())
    }

    fn save_if_dirty(&self, path: &Path) -> std::io::Result<bool> {
        if !self.is_dirty() {
            return Ok(false);
        }
        self.save(path).map(|()| true)
    }

    fn load(path: &Path, now_unix: i64) -> Result<Bans, BansError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Bans::new()),
            Err(source) => {
                return Err(BansError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let corrupt = |e: serde_json::Error| BansError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // The version first, so a newer file is reported as such rather than as corrupt.
        let version = serde_json::from_slice::<VersionOnly>(&bytes)
            .map_err(corrupt)?
            .version;
        if version != STATE_VERSION {
            return Err(BansError::Version {
                path: path.to_owned(),
                version,
            });
        }
        let state: StateIn = serde_json::from_slice(&bytes).map_err(corrupt)?;
        let offenders = state
            .offenders
            .into_iter()
            .map(|o| (o.net, o.offences, o.forget_at))
            .collect();
        Ok(Bans::restore(state.bans, offenders, now_unix))
    }
}

/// Moves a corrupt state file aside to `<path>.corrupt` (replacing an older one) and returns
/// the new name.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let aside = sibling(path, "corrupt");
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// `<path>.<ext>` next to `path` (the extension is appended, not substituted).
fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> std::io::Result<()> {
    // Other systems cannot open a directory to flush it; the rename is as durable as they allow.
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::guessing::{Offence, OffenceKind};

    const NOW: i64 = 1_795_802_400; // 2026-11-27T18:00:00Z
    const MIN: i64 = 60;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn offence(n: &str, kind: OffenceKind) -> Offence {
        Offence {
            net: net(n),
            distinct_tokens: 20,
            kind,
        }
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn save_then_load_round_trips_bans_and_offences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::new();
        let o = offence("2001:db8:1:2::/64", OffenceKind::Client);
        bans.ban_offence(&o, minutes(15), minutes(24 * 60), NOW);
        bans.ban_manual(
            net("198.51.100.0/24"),
            minutes(120),
            "SEV-2 \"scraping\"",
            NOW,
        );
        bans.ban_manual(net("203.0.113.9/32"), minutes(1), "short", NOW);
        bans.save(&path).unwrap();
        assert!(!sibling(&path, "tmp").exists());

        let loaded = Bans::load(&path, NOW + 2 * MIN).unwrap();
        assert_eq!(loaded.list(NOW + 2 * MIN), bans.list(NOW + 2 * MIN));
        assert_eq!(loaded.len(), 2, "the ended ban is dropped on load");
        assert!(!loaded.is_dirty());
        // The offence history came along: the next ban is twice as long.
        loaded.expire(NOW + 16 * MIN);
        let again = loaded.ban_offence(&o, minutes(15), minutes(24 * 60), NOW + 16 * MIN);
        assert_eq!((again.offences, again.until - again.created), (2, 30 * MIN));
    }

    #[test]
    fn a_crash_mid_write_leaves_the_previous_file_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::new();
        bans.ban_manual(net("198.51.100.0/24"), minutes(120), "kept", NOW);
        bans.save(&path).unwrap();
        // The next save died after writing half its temporary file, before the rename.
        std::fs::write(
            sibling(&path, "tmp"),
            b"{\"version\":1,\"bans\":[{\"net\":\"19",
        )
        .unwrap();
        let loaded = Bans::load(&path, NOW).unwrap();
        assert_eq!(loaded.list(NOW), bans.list(NOW));
        // And the next save replaces the leftover.
        loaded.ban_manual(net("203.0.113.7/32"), minutes(5), "new", NOW);
        loaded.save(&path).unwrap();
        assert_eq!(Bans::load(&path, NOW).unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::fs::write(&path, b"{\"version\":1,\"bans\":[{\"net\":\"not a net\"}]}").unwrap();
        let err = Bans::load(&path, NOW).unwrap_err();
        assert!(matches!(err, BansError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("bans.json"), "{err}");

        std::fs::write(&path, b"\x00garbage").unwrap();
        assert!(matches!(
            Bans::load(&path, NOW),
            Err(BansError::Corrupt { .. })
        ));
        std::fs::write(&path, b"{\"version\":7,\"bans\":[]}").unwrap();
        let err = Bans::load(&path, NOW).unwrap_err();
        assert!(
            matches!(err, BansError::Version { version: 7, .. }),
            "{err:?}"
        );

        let aside = set_aside(&path).unwrap();
        assert!(aside.to_string_lossy().ends_with("bans.json.corrupt"));
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_file_is_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = Bans::load(&dir.path().join("none.json"), NOW).unwrap();
        assert!(loaded.is_empty());
    }

    #[test]
    fn save_if_dirty_writes_only_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::new();
        assert!(!bans.save_if_dirty(&path).unwrap());
        assert!(!path.exists());
        bans.ban_manual(net("203.0.113.7/32"), minutes(5), "x", NOW);
        assert!(bans.save_if_dirty(&path).unwrap());
        assert!(!bans.save_if_dirty(&path).unwrap());
        bans.expire(NOW + 5 * MIN);
        assert!(bans.save_if_dirty(&path).unwrap());
        assert!(Bans::load(&path, NOW).unwrap().is_empty());
    }
}
