//! The single writer of the snapshot: a reload parses and validates the configuration file,
//! builds a new [`Snapshot`] and swaps it in whole. On any error nothing changes and the
//! running configuration keeps serving. Listen addresses change only on restart.

use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::server::Shared;
use crate::snapshot::Snapshot;

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// A new snapshot is in force.
    Applied {
        /// Its version.
        version: u64,
        /// Readable lines saying what changed.
        changes: Vec<String>,
        /// Warnings (e.g. a listen address that needs a restart).
        warnings: Vec<String>,
    },
    /// Nothing changed; these are the reasons.
    Rejected {
        /// Every error found.
        errors: Vec<ConfigError>,
        /// The version still in force.
        kept: u64,
    },
}

/// Reloads from the file the current snapshot was loaded from.
pub fn reload(shared: &Shared) -> Outcome {
    // Reloads are serialised by the caller (one reload task); the swap below is the only write.
    let current = shared.snapshot.load_full();
    let path = current.loaded.path.clone();
    let rejected = |errors| Outcome::Rejected {
        errors,
        kept: current.version,
    };
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(errors) => return rejected(errors),
    };
    let old = &current.loaded.config;
    let new = &loaded.config;
    let mut warnings = Vec::new();
    if old.server.listen != new.server.listen {
        warnings.push(format!(
            "server.listen changed to {} but stays {} until restart",
            new.server.listen, old.server.listen
        ));
    }
    if old.admin.listen != new.admin.listen {
        warnings.push(format!(
            "admin.listen changed to {} but stays {} until restart",
            new.admin.listen, old.admin.listen
        ));
    }
    let mut changes = Vec::new();
    if old.server.upstream != new.server.upstream {
        changes.push(format!(
            "upstream {} -> {}",
            old.server.upstream.uri, new.server.upstream.uri
        ));
    }
    if old.routes != new.routes {
        changes.push("route classes changed".to_string());
    }
    if old.client != new.client {
        changes.push("client settings changed".to_string());
    }
    let version = current.version + 1;
    let snapshot = match Snapshot::build(Arc::new(loaded), version) {
        Ok(s) => s,
        Err(e) => {
            return rejected(vec![ConfigError {
                file: path,
                line: None,
                key: String::new(),
                message: e.to_string(),
            }])
        }
    };
    shared.snapshot.store(Arc::new(snapshot));
    Outcome::Applied {
        version,
        changes,
        warnings,
    }
}
