//! Reading the configuration file: TOML syntax, then the typed sections ([`file`]), then
//! validation ([`validate`]), then the files it names: the lists ([`list_files`]) and the
//! certificate pair ([`cert`]). Every mistake is reported at once with its file, line and key.

pub mod admin;
pub mod cert;
pub mod file;
pub mod list_files;
pub mod schema;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::policy::lists::{IpList, ListError, TokenList};
use crate::policy::tokens::TokenFolding;
use list_files::ListFile;

pub use schema::{AdminConfig, ClientConfig, Config, ConfigError, ServerConfig, Upstream};

/// A configuration as loaded from a file, with what identifies it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The lists it names, loaded.
    pub lists: std::sync::Arc<Lists>,
    /// Things that are allowed but probably not meant (printed by `check`, logged on reload).
    pub warnings: Vec<String>,
    /// The HTTPS certificate pair, read and checked, when `tls_listen` is set.
    pub tls: Option<Arc<cert::CertPair>>,
}

/// The lists of `[lists]`, loaded (an unnamed list is empty).
#[derive(Debug)]
pub struct Lists {
    /// Refused with 403 on every path.
    pub blocklist: Arc<IpList>,
    /// Exempt from limits and automatic bans.
    pub allowlist: Arc<IpList>,
    /// Answered 410 at the edge.
    pub revoked: Arc<TokenList>,
    /// How each list file looked when it was read, to reuse it when a reload finds it unchanged.
    stamps: [(Option<PathBuf>, FileStamp); 3],
    /// How the revoked tokens were folded (`[tokens]`): a reload that changes it reads the
    /// file again.
    folding: TokenFolding,
}

/// What identifies a file's content cheaply: device, inode, size and modification time. A
/// rewrite in place changes the time (nanoseconds), a rename changes the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(Option<(u64, u64, u64, i64, i64)>);

impl FileStamp {
    /// The stamp of `path` now (`None` inside when it cannot be read).
    pub fn of(path: &Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())),
        )
    }
}

/// Loads every list `paths` names, revoked tokens folded as `folding` says; every bad line of
/// every file is reported. A list whose file is unchanged since `previous` read it is shared,
/// not read again: a reload that only touches the configuration costs nothing for a
/// million-line blocklist, and holds it once in memory.
pub fn load_lists(
    paths: &schema::ListPaths,
    folding: TokenFolding,
    previous: Option<&Lists>,
) -> Result<Lists, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut convert = |key: &str, errs: Vec<ListError>| {
        errors.extend(errs.into_iter().map(|e| ConfigError {
            file: e.file,
            line: (e.line > 0).then_some(e.line),
            key: format!("lists.{key}"),
            message: e.message,
        }))
    };
    let stamp = |p: &Option<PathBuf>| {
        (
            p.clone(),
            p.as_deref().map(FileStamp::of).unwrap_or(FileStamp(None)),
        )
    };
    let stamps = [
        stamp(&paths.blocklist),
        stamp(&paths.allowlist),
        stamp(&paths.revoked_tokens),
    ];
    // Reusable when the same file is named and its stamp (taken before reading) is unchanged.
    let unchanged = |i: usize| {
        previous.is_some_and(|prev| prev.stamps[i] == stamps[i] && stamps[i].1 != FileStamp(None))
    };
    let blocklist = match (&paths.blocklist, previous) {
        (_, Some(prev)) if unchanged(0) => Some(prev.blocklist.clone()),
        (None, _) => Some(Arc::new(IpList::empty())),
        (Some(p), _) => IpList::load(p)
            .map(Arc::new)
            .map_err(|e| convert("blocklist", e))
            .ok(),
    };
    let allowlist = match (&paths.allowlist, previous) {
        (_, Some(prev)) if unchanged(1) => Some(prev.allowlist.clone()),
        (None, _) => Some(Arc::new(IpList::empty())),
        (Some(p), _) => IpList::load(p)
            .map(Arc::new)
            .map_err(|e| convert("allowlist", e))
            .ok(),
    };
    let same_folding = previous.is_some_and(|prev| prev.folding == folding);
    let revoked = match (&paths.revoked_tokens, previous) {
        (_, Some(prev)) if unchanged(2) && same_folding => Some(prev.revoked.clone()),
        (None, _) => Some(Arc::new(TokenList::empty())),
        (Some(p), _) => list_files::load_revoked(p, folding)
            .map(Arc::new)
            .map_err(|e| convert("revoked_tokens", e))
            .ok(),
    };
    match (blocklist, allowlist, revoked) {
        (Some(blocklist), Some(allowlist), Some(revoked)) if errors.is_empty() => Ok(Lists {
            blocklist,
            allowlist,
            revoked,
            stamps,
            folding,
        }),
        _ => Err(errors),
    }
}

/// Warnings about lists that are valid but contradict each other.
fn list_warnings(lists: &Lists) -> Vec<String> {
    lists
        .allowlist
        .overlapping(&lists.blocklist)
        .into_iter()
        .map(|(allowed, blocked)| {
            format!("{allowed} is in the allowlist and {blocked} in the blocklist: such clients are blocked")
        })
        .collect()
}

/// Reads and validates the file at `path` (a certificate pair is checked against the system
/// clock).
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    load_with(path, None, SystemClock.now().unix())
}

/// As [`load`], sharing the lists of `previous` whose files are unchanged (for reloads), and
/// checking a certificate pair's validity at `now_unix`.
pub fn load_with(
    path: &Path,
    previous: Option<&Lists>,
    now_unix: i64,
) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }]
    })?;
    parse_with(&text, path, previous, now_unix)
}

/// Validates configuration `text` as if read from `path` (relative paths resolve beside it).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    parse_with(text, path, None, SystemClock.now().unix())
}

fn parse_with(
    text: &str,
    path: &Path,
    previous: Option<&Lists>,
    now: i64,
) -> Result<Loaded, Vec<ConfigError>> {
    let err = |line: Option<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    if text.trim().is_empty() {
        return Err(vec![err(
            None,
            "",
            "the file is empty: at least [server] upstream = \"http://…\" is needed".into(),
        )]);
    }
    let file: file::FileConfig = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            return Err(vec![err(
                line,
                "",
                format!("not valid TOML here: {}", e.message()),
            )]);
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut errors = validate::Errors::default();
    let config = validate::validate(&file, &base, &mut errors);
    if !errors.list.is_empty() || config.is_none() {
        let doc = toml_edit::ImDocument::parse(text).ok();
        let mut out: Vec<ConfigError> = errors
            .list
            .into_iter()
            .map(|(key, message)| {
                let line = doc
                    .as_ref()
                    .and_then(|d| locate(d, &key))
                    .map(|at| line_of(text, at));
                err(line, &named_key(&file, &key), message)
            })
            .collect();
        if out.is_empty() {
            out.push(err(None, "", "the configuration is incomplete".into()));
        }
        // The list files are read too, so one run of `check` reports every mistake.
        let mut ignored = validate::Errors::default();
        if let Some(paths) = validate::validate_lists(file.lists.as_ref(), &base, &mut ignored) {
            // Revoked tokens are read as `[tokens]` says, or as the default when it is broken.
            let folding =
                validate::validate_tokens(file.tokens.as_ref(), &mut ignored).unwrap_or_default();
            out.extend(
                load_lists(&paths, folding, None)
                    .err()
                    .into_iter()
                    .flatten(),
            );
        }
        return Err(sorted(out));
    }
    let Some(config) = config else {
        return Err(vec![err(
            None,
            "",
            "the configuration is incomplete".into(),
        )]);
    };
    // Lists and the certificate pair are read whatever the other's errors: all are reported.
    let lists = load_lists(&config.lists, config.tokens, previous);
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| cert::CertPair::load(&t.cert, &t.key, now).map(Arc::new))
        .transpose();
    let (lists, tls) = match (lists, tls) {
        (Ok(lists), Ok(tls)) => (lists, tls),
        (lists, tls) => {
            return Err(sorted(
                lists
                    .err()
                    .into_iter()
                    .flatten()
                    .chain(tls.err().into_iter().flatten())
                    .collect(),
            ))
        }
    };
    let mut warnings = list_warnings(&lists);
    warnings.extend(tls.as_ref().and_then(|t| t.expiry_warning(now)));
    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(Loaded {
        config,
        sha256,
        path: path.to_path_buf(),
        lists: std::sync::Arc::new(lists),
        warnings,
        tls,
    })
}

/// Errors in the order a reader fixes them: file by file (the configuration first, then the
/// files it names, in the order it names them), each by line (those without a line last).
fn sorted(errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for e in &errors {
        if !files.contains(&e.file) {
            files.push(e.file.clone());
        }
    }
    let mut keyed: Vec<(usize, ConfigError)> = errors
        .into_iter()
        .map(|e| (files.iter().position(|f| *f == e.file).unwrap_or(0), e))
        .collect();
    // Stable: errors of one line keep the order they were found in.
    keyed.sort_by_key(|(file, e)| (*file, e.line.is_none(), e.line));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// A key like `limit[0].rate` named by its entry's `name` (`limit "guest-ip" rate`), as people
/// know their entries; an entry without a usable name keeps its index.
fn named_key(file: &file::FileConfig, key: &str) -> String {
    let name_of = |kind: &str, i: usize| -> Option<String> {
        let field = match kind {
            "limit" => file.limit.as_ref()?.get(i)?.name.as_ref(),
            "switch" => file.switch.as_ref()?.get(i)?.name.as_ref(),
            "route" => file.route.as_ref()?.get(i)?.name.as_ref(),
            _ => None,
        }?;
        field
            .0
            .as_ref()
            .ok()
            .filter(|n| validate::valid_name(n))
            .cloned()
    };
    let Some((head, rest)) = key.split_once('[') else {
        return key.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return key.to_string();
    };
    let Some(name) = index.parse().ok().and_then(|i| name_of(head, i)) else {
        return key.to_string();
    };
    match tail.strip_prefix('.') {
        Some(field) => format!("{head} {name:?} {field}"),
        None => format!("{head} {name:?}{tail}"),
    }
}

/// The `[tokens]` setting of the configuration file at `path`, read alone: the rest of the
/// file may be half edited (for `joinshield token-hash`). Only TOML syntax and `[tokens]`
/// itself are checked.
pub fn load_tokens(path: &Path) -> Result<TokenFolding, Vec<ConfigError>> {
    let err = |line: Option<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![err(
            None,
            "",
            format!("cannot read the configuration file: {e}"),
        )]
    })?;
    let file: file::FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start));
        vec![err(
            line,
            "",
            format!("not valid TOML here: {}", e.message()),
        )]
    })?;
    let mut errors = validate::Errors::default();
    match validate::validate_tokens(file.tokens.as_ref(), &mut errors) {
        Some(folding) if errors.list.is_empty() => Ok(folding),
        _ => {
            let doc = toml_edit::ImDocument::parse(text.as_str()).ok();
            Err(errors
                .list
                .into_iter()
                .map(|(key, message)| {
                    let line = doc
                        .as_ref()
                        .and_then(|d| locate(d, &key))
                        .map(|at| line_of(&text, at));
                    err(line, &key, message)
                })
                .collect())
        }
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Byte offset of the key at a TOML path like `route[2].paths[0]`, if it is in the document;
/// a key that is missing points at the table that should hold it.
fn locate(doc: &toml_edit::ImDocument<&str>, path: &str) -> Option<usize> {
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Table(&'a toml_edit::Table),
        Value(&'a toml_edit::Value),
    }
    let mut node = Node::Item(doc.as_item());
    let mut at = None;
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or("");
        let table: &dyn toml_edit::TableLike = match node {
            Node::Item(i) => i.as_table_like()?,
            Node::Table(t) => t,
            Node::Value(v) => v.as_inline_table()?,
        };
        let Some((k, v)) = table.get_key_value(key) else {
            return at;
        };
        at = k.span().map(|s| s.start).or(at);
        node = Node::Item(v);
        for index in pieces {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            node = match node {
                Node::Item(toml_edit::Item::ArrayOfTables(a)) => {
                    let t = a.get(i)?;
                    at = t.span().map(|s| s.start).or(at);
                    Node::Table(t)
                }
                Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a)))
                | Node::Value(toml_edit::Value::Array(a)) => {
                    let v = a.get(i)?;
                    at = v.span().map(|s| s.start).or(at);
                    Node::Value(v)
                }
                _ => return at,
            };
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units;

    fn errors(text: &str) -> Vec<ConfigError> {
        parse(text, Path::new("conf/joinshield.toml"))
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn only_the_upstream_is_required() {
        let loaded = parse(
            "[server]\nupstream = \"http://127.0.0.1:8000\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.max_body, 64 << 20);
        assert_eq!(c.client.ipv6_prefix, 64);
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.log.token_preview, 6);
    }

    #[test]
    fn missing_upstream_is_an_error_with_the_fix() {
        let e = errors("[server]\nlisten = \"0.0.0.0:8080\"\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "server.upstream");
        assert!(e[0]
            .message
            .contains("upstream = \"http://127.0.0.1:8000\""));
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_line() {
        let text = "[server]\nupstream = \"http://127.0.0.1:8000\"\nlisten = \"nowhere\"\nmax_bdy = \"1MiB\"\n\
                    header_timeout = 10\n\n[client]\nipv6_prefix = 200\ntrusted_proxies = [\"10.0.0.1/8\", \"bogus\"]\n\n\
                    [log]\ntimezone = \"Mars/Olympus\"\n\n[[route]]\nname = \"x\"\npaths = []\n\n[bogus]\n";
        let e = errors(text);
        let found: Vec<(&str, Option<usize>)> =
            e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        for (key, line) in [
            ("server.listen", 3),
            ("server.max_bdy", 4),
            ("server.header_timeout", 5),
            ("client.ipv6_prefix", 8),
            ("client.trusted_proxies[0]", 9),
            ("client.trusted_proxies[1]", 9),
            ("log.timezone", 12),
            ("route \"x\" paths", 16),
            ("bogus", 18),
        ] {
            assert!(
                found.contains(&(key, Some(line))),
                "{key} at line {line} not in {found:?}"
            );
        }
        assert!(e
            .iter()
            .all(|e| e.file == Path::new("conf/joinshield.toml")));
    }

    #[test]
    fn broken_toml_names_its_line() {
        let e = errors("[server]\nupstream = \"http://a:1\"\nlisten = \n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(3));
    }

    #[test]
    fn empty_file_is_refused() {
        assert_eq!(errors("  \n").len(), 1);
    }

    #[test]
    fn https_and_paths_in_the_upstream_are_refused() {
        assert!(!errors("[server]\nupstream = \"https://a:1\"\n").is_empty());
        assert!(!errors("[server]\nupstream = \"http://a:1/app\"\n").is_empty());
        assert!(!errors("[server]\nupstream = \"a:1\"\n").is_empty());
    }

    #[test]
    fn alerts_need_a_webhook_and_report_every_bad_key_with_its_line() {
        let base = "[server]\nupstream = \"http://a:1\"\n";
        let off = parse(
            &format!("{base}[alerts]\nwebhook = \"\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(off.config.alerts.is_none());
        let on = parse(
            &format!("{base}[alerts]\nwebhook = \"http://relay:8080/hooks/T1/secret?x=1\"\nerror_rate = 1\ndenial_rate = \"20/s\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        let a = on.config.alerts.unwrap();
        assert_eq!(a.webhook.authority, "relay:8080");
        assert_eq!(a.webhook.path_and_query, "/hooks/T1/secret?x=1");
        assert_eq!((a.error_rate, a.denials_per_minute), (1.0, 1200));
        assert_eq!(a.cooldown, std::time::Duration::from_secs(600));

        let e = errors(&format!(
            "{base}[alerts]\nwebhook = \"https://hooks.slack.com/services/x\"\nerror_rate = 1.5\n\
             denial_rate = \"lots\"\ncooldown = \"0s\"\ncooldwn = \"1m\"\n"
        ));
        let found: Vec<(&str, Option<usize>)> =
            e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        for (key, line) in [
            ("alerts.webhook", 4),
            ("alerts.error_rate", 5),
            ("alerts.denial_rate", 6),
            ("alerts.cooldown", 7),
            ("alerts.cooldwn", 8),
        ] {
            assert!(
                found.contains(&(key, Some(line))),
                "{key} at {line} not in {found:?}"
            );
        }
        let webhook = e.iter().find(|e| e.key == "alerts.webhook").unwrap();
        assert!(webhook.message.contains("http:// relay"), "{webhook}");
    }

    #[test]
    fn relative_log_path_resolves_beside_the_config() {
        let loaded = parse(
            "[server]\nupstream = \"http://a:1\"\n[log]\nfile = \"logs/shield.log\"\n",
            Path::new("etc/shield/joinshield.toml"),
        )
        .unwrap();
        assert_eq!(loaded.config.log.file, "etc/shield/logs/shield.log");
    }

    #[test]
    fn the_access_log_is_off_by_default_and_its_file_resolves_beside_the_config() {
        use crate::telemetry::access::AccessFormat;
        let loaded = parse(
            "[server]\nupstream = \"http://a:1\"\n",
            Path::new("etc/shield/joinshield.toml"),
        )
        .unwrap();
        assert_eq!(loaded.config.log.access, AccessFormat::Off);
        assert_eq!(loaded.config.log.access_file, "-");
        let loaded = parse(
            "[server]\nupstream = \"http://a:1\"\n[log]\naccess = \"json\"\naccess_file = \"logs/access.log\"\n",
            Path::new("etc/shield/joinshield.toml"),
        )
        .unwrap();
        assert_eq!(loaded.config.log.access, AccessFormat::Json);
        assert_eq!(loaded.config.log.access_file, "etc/shield/logs/access.log");
    }

    #[test]
    fn a_bad_access_setting_or_a_shared_file_is_refused_with_its_line() {
        let keys = |text: &str| -> Vec<(String, Option<usize>)> {
            errors(text).into_iter().map(|e| (e.key, e.line)).collect()
        };
        assert_eq!(
            keys("[server]\nupstream = \"http://a:1\"\n[log]\naccess = \"combined\"\naccess_file = \"\"\n"),
            vec![
                ("log.access".to_string(), Some(4)),
                ("log.access_file".to_string(), Some(5)),
            ]
        );
        assert_eq!(
            keys("[server]\nupstream = \"http://a:1\"\n[log]\nfile = \"shield.log\"\naccess = \"json\"\naccess_file = \"shield.log\"\n"),
            vec![("log.access_file".to_string(), Some(6))]
        );
        // Both on stdout is allowed (a container's log): the lines tell themselves apart.
        assert!(
            errors("[server]\nupstream = \"http://a:1\"\n[log]\naccess = \"json\"\n").is_empty()
        );
    }

    #[test]
    fn tls_keys_are_checked_together_and_every_mistake_reported() {
        let keys = |text: &str| -> Vec<(String, Option<usize>)> {
            errors(text).into_iter().map(|e| (e.key, e.line)).collect()
        };
        let found = keys(
            "[server]\nupstream = \"http://a:1\"\ntls_listen = \"0.0.0.0:8443\"\n\
             tls_handshake_timeout = \"0s\"\nhsts = \"max-age=forever\"\n",
        );
        for (key, line) in [
            ("server.tls_cert", 1),
            ("server.tls_key", 1),
            ("server.tls_handshake_timeout", 4),
            ("server.hsts", 5),
        ] {
            assert!(
                found.contains(&(key.to_string(), Some(line))),
                "{key} at {line} not in {found:?}"
            );
        }
        let found = keys(
            "[server]\nupstream = \"http://a:1\"\ntls_cert = \"c.pem\"\nredirect_https = true\n\
             hsts = \"max-age=60\"\n",
        );
        for key in ["server.tls_cert", "server.redirect_https", "server.hsts"] {
            assert!(
                found.iter().any(|(k, _)| k == key),
                "{key} not in {found:?}"
            );
        }
        let found = keys(
            "[server]\nupstream = \"http://a:1\"\nlisten = \"0.0.0.0:8443\"\ntls_listen = \"0.0.0.0:8443\"\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        );
        assert!(
            found.contains(&("server.tls_listen".to_string(), Some(4))),
            "{found:?}"
        );
    }

    #[test]
    fn hsts_takes_max_age_and_the_two_flags_only() {
        for good in [
            "max-age=31536000",
            "max-age=0",
            "max-age=600; includeSubDomains",
            "max-age=63072000; includeSubDomains; preload",
        ] {
            assert!(
                validate::parse_hsts(good).is_ok_and(|v| v.is_some()),
                "{good}"
            );
        }
        assert_eq!(validate::parse_hsts("").ok(), Some(None));
        for bad in [
            "includeSubDomains",
            "max-age=",
            "max-age=1; max-age=2",
            "max-age=1; always",
            "max-age=-1",
            "max-age=1\nx",
        ] {
            assert!(validate::parse_hsts(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_paths_resolve_beside_the_config_and_a_missing_file_is_an_error() {
        let e = errors(
            "[server]\nupstream = \"http://a:1\"\ntls_listen = \"0.0.0.0:8443\"\n\
             tls_cert = \"certs/none.pem\"\ntls_key = \"certs/none-key.pem\"\n",
        );
        let files: Vec<String> = e.iter().map(|e| e.file.display().to_string()).collect();
        assert_eq!(
            files,
            ["conf/certs/none.pem", "conf/certs/none-key.pem"],
            "{e:?}"
        );
        assert!(e[0].message.starts_with("cannot read the certificate file"));
    }

    const LIMIT_SHARED: &str = "[[limit]]\nname = \"guest-ip\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"60/min\"\nshared = true\n";

    #[test]
    fn a_shared_limit_without_cluster_is_refused_with_the_fix() {
        let e = errors(&format!(
            "[server]\nupstream = \"http://a:1\"\n{LIMIT_SHARED}"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "limit \"guest-ip\" shared");
        assert_eq!(e[0].line, Some(8));
        assert!(e[0].message.contains("[cluster]"), "{}", e[0].message);
    }

    #[test]
    fn a_shared_limit_with_cluster_is_valid_and_cluster_takes_its_defaults() {
        let loaded = parse(
            &format!(
                "[server]\nupstream = \"http://a:1\"\n{LIMIT_SHARED}\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n"
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(loaded.config.limits[0].shared);
        let c = loaded.config.cluster.unwrap();
        assert_eq!(c.timeout, std::time::Duration::from_millis(5));
        assert_eq!(c.sync_interval, std::time::Duration::from_secs(1));
        assert_eq!(c.lease, 10);
        assert_eq!(c.key_prefix, "joinshield");
        assert!(schema::valid_replica_name(&c.name), "{}", c.name);
    }

    #[test]
    fn every_cluster_mistake_is_reported_with_its_line() {
        let text =
            "[server]\nupstream = \"http://a:1\"\n[cluster]\nredis = \"http://127.0.0.1:6379\"\n\
                    name = \"shield one\"\ntimeout = \"2s\"\nsync_interval = \"10ms\"\nlease = 0\n\
                    key_prefix = \"a:b\"\nredis_url = \"x\"\n";
        let e = errors(text);
        let found: Vec<(&str, Option<usize>)> =
            e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        for (key, line) in [
            ("cluster.redis", 4),
            ("cluster.name", 5),
            ("cluster.timeout", 6),
            ("cluster.sync_interval", 7),
            ("cluster.lease", 8),
            ("cluster.key_prefix", 9),
            ("cluster.redis_url", 10),
        ] {
            assert!(
                found.contains(&(key, Some(line))),
                "{key} at line {line} not in {found:?}"
            );
        }
        assert_eq!(e.len(), 7, "{found:?}");
    }

    #[test]
    fn a_cluster_without_redis_names_the_missing_key() {
        let e = errors("[server]\nupstream = \"http://a:1\"\n[cluster]\nname = \"s1\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "cluster.redis");
        assert!(e[0].message.starts_with("missing"));
    }

    #[test]
    fn a_temporary_entry_may_share_the_name_of_a_permanent_one_but_no_two_of_a_kind() {
        let base = "[server]\nupstream = \"http://a:1\"\n";
        let limit = |until: &str| {
            format!("[[limit]]\nname = \"guest-ip\"\nroutes = [\"*\"]\nkey = \"ip\"\nrate = \"60/min\"\n{until}\n")
        };
        let switch = |until: &str| {
            format!(
                "[[switch]]\nname = \"maintenance\"\nroutes = [\"*\"]\npaused = true\n{until}\n"
            )
        };
        let temporary = "until = \"2026-11-28T06:00:00Z\"";
        let ok = parse(
            &format!(
                "{base}{}{}{}{}",
                limit(""),
                limit(temporary),
                switch(temporary),
                switch("")
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        let c = &ok.config;
        assert_eq!(schema::stand_in_of(&c.limits, 0), Some(1));
        assert_eq!(schema::stands_in_for(&c.limits, 1), Some(0));
        assert_eq!(schema::checking_order(&c.limits), [1, 0]);
        assert_eq!(schema::stands_in_for(&c.switches, 0), Some(1));
        // In force: the stand-in until its instant, the permanent one from then on.
        let until = units::parse_instant("2026-11-28T06:00:00Z").unwrap();
        assert!(schema::in_force(&c.limits, 1, until - 1));
        assert!(!schema::in_force(&c.limits, 0, until - 1));
        assert!(!schema::in_force(&c.limits, 1, until));
        assert!(schema::in_force(&c.limits, 0, until));

        for (what, twice, kind) in [
            (
                "limit",
                format!("{}{}", limit(temporary), limit(temporary)),
                "two temporary",
            ),
            (
                "limit",
                format!("{}{}", limit(""), limit("")),
                "two permanent",
            ),
            (
                "switch",
                format!("{}{}", switch(temporary), switch(temporary)),
                "two temporary",
            ),
            (
                "switch",
                format!("{}{}", switch(""), switch("")),
                "two permanent",
            ),
        ] {
            let e = errors(&format!("{base}{twice}"));
            assert_eq!(e.len(), 1, "{e:?}");
            let name = if what == "limit" {
                "guest-ip"
            } else {
                "maintenance"
            };
            assert_eq!(e[0].key, format!("{what} {name:?} name"), "{e:?}");
            assert!(e[0].message.contains(kind), "{}", e[0].message);
        }
    }

    #[test]
    fn the_redis_password_is_never_shown() {
        let loaded = parse(
            "[server]\nupstream = \"http://a:1\"\n[cluster]\nredis = \"redis://:s3cret@10.0.0.5:6379/0\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let shown = loaded.config.cluster.unwrap().redis_shown();
        assert_eq!(shown, "redis://:***@10.0.0.5:6379/0");
    }

    #[test]
    fn tokens_default_to_folded_and_a_wrong_value_or_key_is_named() {
        let loaded = parse("[server]\nupstream = \"http://a:1\"\n", Path::new("c.toml")).unwrap();
        assert!(!loaded.config.tokens.case_sensitive);
        let e = errors(
            "[server]\nupstream = \"http://a:1\"\n[tokens]\ncase_sensitive = 1\nfold = true\n",
        );
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        // Sorted by line, as `check` reports them.
        assert_eq!(keys, ["tokens.case_sensitive", "tokens.fold"], "{e:?}");
        assert_eq!((e[0].line, e[1].line), (Some(4), Some(5)));
    }

    #[test]
    fn a_change_of_token_folding_reads_the_revoked_tokens_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("revoked.txt");
        std::fs::write(&file, "ABC123xyz\n").unwrap_or_else(|e| panic!("{e}"));
        let paths = schema::ListPaths {
            revoked_tokens: Some(file),
            ..schema::ListPaths::default()
        };
        let folded = TokenFolding::default();
        let exact = TokenFolding {
            case_sensitive: true,
        };
        let first = load_lists(&paths, folded, None).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(first.revoked.lookup("abc123xyz", 0).is_some());
        // Unchanged file and folding: the same list, not read again.
        let same = load_lists(&paths, folded, Some(&first)).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(Arc::ptr_eq(&same.revoked, &first.revoked));
        // Unchanged file, other folding: read again, exactly as written now.
        let other = load_lists(&paths, exact, Some(&same)).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!Arc::ptr_eq(&other.revoked, &first.revoked));
        assert!(other.revoked.lookup("abc123xyz", 0).is_none());
        assert!(other.revoked.lookup("ABC123xyz", 0).is_some());
    }
}
