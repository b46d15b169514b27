//! Reading only `[admin]` of a configuration file, for `ctl` and `healthcheck`: they must keep
//! working while the rest of the file holds a half-finished edit (that is when the on-call
//! engineer needs them). A file whose TOML does not parse as a whole still yields its `[admin]`
//! table when that table, cut out on its own, parses.

use std::path::Path;

use serde::Deserialize;

use super::file::{FileAdmin, Unknown};
use super::schema::{AdminConfig, ConfigError};
use super::validate::{validate_admin, Errors};

/// The file with everything but `[admin]` ignored.
#[derive(Deserialize)]
struct AdminOnly {
    admin: Option<FileAdmin>,
    #[serde(flatten)]
    _rest: Unknown,
}

/// Reads `[admin]` of the file at `path` (its defaults when the file has none). Errors are
/// only those of `[admin]` itself, or a file that cannot be read.
pub fn load_admin(path: &Path) -> Result<AdminConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }]
    })?;
    parse_admin(&text, path)
}

/// As [`load_admin`], from the text of the file.
pub fn parse_admin(text: &str, path: &Path) -> Result<AdminConfig, Vec<ConfigError>> {
    let err = |line: Option<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let admin = match toml::from_str::<AdminOnly>(text) {
        Ok(whole) => whole.admin,
        Err(_) => match admin_table(text) {
            None => None,
            Some((first_line, table)) => match toml::from_str::<AdminOnly>(&table) {
                Ok(cut) => cut.admin,
                Err(e) => {
                    let line = e
                        .span()
                        .map(|s| first_line + table[..s.start].matches('\n').count());
                    return Err(vec![err(
                        line,
                        "admin",
                        format!("not valid TOML here: {}", e.message()),
                    )]);
                }
            },
        },
    };
    let mut errors = Errors::default();
    match validate_admin(admin.as_ref(), &mut errors) {
        Some(a) if errors.list.is_empty() => Ok(a),
        _ => Err(errors
            .list
            .into_iter()
            .map(|(key, message)| err(None, &key, message))
            .collect()),
    }
}

/// The `[admin]` table of `text` cut out on its own (its header up to the next table header),
/// with the 1-based line it starts on; `None` when the file has no `[admin]` header.
fn admin_table(text: &str) -> Option<(usize, String)> {
    let mut lines = text.lines().enumerate();
    let (start, header) = lines.find(|(_, l)| header_name(l).as_deref() == Some("admin"))?;
    let mut table = String::from(header);
    table.push('\n');
    for (_, line) in lines {
        if header_name(line).is_some() {
            break;
        }
        table.push_str(line);
        table.push('\n');
    }
    Some((start + 1, table))
}

/// The name of the table a header line opens (`[admin]`, `[[limit]]`, with spaces and a
/// comment allowed), or `None` for any other line.
fn header_name(line: &str) -> Option<String> {
    let line = line.trim();
    let line = line
        .split_once('#')
        .map_or(line, |(before, _)| before)
        .trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    let name = inner.trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '));
    plain.then(|| name.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(text: &str) -> Result<AdminConfig, Vec<ConfigError>> {
        parse_admin(text, Path::new("c.toml"))
    }

    #[test]
    fn the_admin_table_is_read_from_a_file_whose_other_sections_are_invalid() {
        let a = admin(
            "[server]\nupstream = 7\nbogus = 1\n[admin]\nlisten = \"127.0.0.1:9911\"\ntoken_env = \"X_TOKEN\"\n[[limit]]\nname = 3\n",
        )
        .unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:9911");
        assert_eq!(a.token_env, "X_TOKEN");
    }

    #[test]
    fn a_half_written_file_still_yields_its_admin_table() {
        let text = "[server]\nupstream = \"http://127.0.0.1:8000\"\n\n[admin] # the API\nlisten = \"127.0.0.1:9912\"\n\n[[limit]]\nname = \"guest-ip\"\nrate = \"30";
        assert!(toml::from_str::<toml::Table>(text).is_err());
        assert_eq!(admin(text).unwrap().listen.to_string(), "127.0.0.1:9912");
        // Broken before the admin table, too.
        let text = "[server\nupstream = \n[admin]\nlisten = \"127.0.0.1:9913\"\n";
        assert_eq!(admin(text).unwrap().listen.to_string(), "127.0.0.1:9913");
    }

    #[test]
    fn no_admin_table_means_the_defaults() {
        let a = admin("[server]\nupstream = \"http://a:1\"\n[log\n").unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:9901");
        assert_eq!(a.token_env, "JOINSHIELD_ADMIN_TOKEN");
    }

    #[test]
    fn a_broken_admin_table_is_an_error_with_its_line() {
        let e = admin("[server]\nupstream = \"\n\n[admin]\nlisten = \n").unwrap_err();
        assert_eq!(e[0].line, Some(5), "{e:?}");
        let e = admin("[admin]\nlisten = \"nowhere\"\nlistn = \"x\"\n").unwrap_err();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["admin.listn", "admin.listen"], "{e:?}");
    }
}
