//! Reading the configuration file: TOML syntax, then the typed sections ([`file`]), then
//! validation ([`validate`]). Every mistake is reported at once with its file, line and key.

pub mod file;
pub mod units;
pub mod validate;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use validate::{
    AdminConfig, ClientConfig, Config, ConfigError, LogFormat, LogSettings, ServerConfig, Upstream,
};

/// A configuration as loaded from a file, with what identifies it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    /// The file it came from.
    pub path: PathBuf,
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }]
    })?;
    parse(&text, path)
}

/// Validates configuration `text` as if read from `path` (relative paths resolve beside it).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, Vec<ConfigError>> {
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
                err(line, &key, message)
            })
            .collect();
        if out.is_empty() {
            out.push(err(None, "", "the configuration is incomplete".into()));
        }
        return Err(out);
    }
    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(Loaded {
        config: config.expect("checked above"),
        sha256,
        path: path.to_path_buf(),
    })
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
