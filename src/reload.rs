//! The single writer of the snapshot: a reload parses and validates the configuration file,
//! builds a new [`Snapshot`] and swaps it in whole. On any error nothing changes and the
//! running configuration keeps serving. Listen addresses change only on restart.

use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::log::{Level, Record, Value};
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
    changes.extend(limit_changes(&old.limits, &new.limits));
    if old.client != new.client {
        changes.push("client settings changed".to_string());
    }
    let version = current.version + 1;
    let snapshot = match Snapshot::build(Arc::new(loaded), version, Some(&current)) {
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

/// Readable lines for what a reload changes in the limits.
fn limit_changes(
    old: &[crate::config::validate::LimitSpec],
    new: &[crate::config::validate::LimitSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => out.push(format!(
                "limit {} added ({} burst {})",
                n.name, n.rate, n.burst
            )),
            Some(o) => {
                if o.rate != n.rate {
                    out.push(format!("limit {} rate {} -> {}", n.name, o.rate, n.rate));
                }
                if o.burst != n.burst {
                    out.push(format!("limit {} burst {} -> {}", n.name, o.burst, n.burst));
                }
                if o.key != n.key {
                    out.push(format!(
                        "limit {} key {} -> {}",
                        n.name,
                        o.key.as_str(),
                        n.key.as_str()
                    ));
                }
                if o.mode != n.mode {
                    out.push(
                        format!("limit {} mode {:?} -> {:?}", n.name, o.mode, n.mode)
                            .to_lowercase(),
                    );
                }
                if o.classes != n.classes || o.until != n.until || o.max_keys != n.max_keys {
                    out.push(format!(
                        "limit {} routes, until or max_keys changed",
                        n.name
                    ));
                }
            }
        }
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            out.push(format!("limit {} removed", o.name));
        }
    }
    out
}

/// Reloads and writes the outcome to the log: NOTICE `Shield configuration reloaded` with the
/// version, sha256 and what changed, or ERROR `Shield configuration rejected` with every error
/// and the version kept. Warnings (e.g. listen addresses) are WARNING lines.
pub fn reload_logged(shared: &Shared) -> Outcome {
    let outcome = reload(shared);
    match &outcome {
        Outcome::Applied {
            version,
            changes,
            warnings,
        } => {
            let sha = shared.snapshot.load().loaded.sha256.clone();
            let changes = if changes.is_empty() {
                vec!["no effective change".to_string()]
            } else {
                changes.clone()
            };
            shared.log.log(
                Record::new(Level::Notice, "Shield configuration reloaded")
                    .with("version", *version)
                    .with("sha256", sha)
                    .with(
                        "changes",
                        Value::List(changes.into_iter().map(Value::from).collect()),
                    ),
            );
            for w in warnings {
                shared.log.log(
                    Record::new(Level::Warning, "Shield configuration warning")
                        .with("warning", w.as_str()),
                );
            }
        }
        Outcome::Rejected { errors, kept } => {
            shared.log.log(
                Record::new(Level::Error, "Shield configuration rejected")
                    .with(
                        "errors",
                        Value::List(errors.iter().map(|e| Value::from(e.to_string())).collect()),
                    )
                    .with("version", *kept),
            );
        }
    }
    outcome
}
