//! Reading the list files: a missing, unreadable or non-UTF-8 file is one error naming the fix,
//! and the text goes to the policy's parsers ([`IpList::parse`], [`TokenList::parse`]).

use std::path::Path;

use crate::policy::lists::{IpList, ListError, TokenList};
use crate::policy::tokens::TokenFolding;

/// A list that can be read from its file.
pub trait ListFile: Sized {
    /// Reads and parses a list file; a missing or unreadable file is one error with line 0.
    fn load(path: &Path) -> Result<Self, Vec<ListError>>;
}

impl ListFile for IpList {
    fn load(path: &Path) -> Result<IpList, Vec<ListError>> {
        IpList::parse(&read_text(path)?, path)
    }
}

/// Reads and parses a revoked-tokens file, plain tokens folded as `folding` says (`[tokens]`);
/// a missing or unreadable file is one error with line 0.
pub fn load_revoked(path: &Path, folding: TokenFolding) -> Result<TokenList, Vec<ListError>> {
    TokenList::parse_with(&read_text(path)?, path, folding)
}

/// Reads a list file as UTF-8 text; a missing, unreadable or non-UTF-8 file is one error.
fn read_text(path: &Path) -> Result<String, Vec<ListError>> {
    let error = |line, message: String| {
        vec![ListError {
            file: path.to_path_buf(),
            line,
            message,
        }]
    };
    let bytes = std::fs::read(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "file not found: create it (an empty file is an empty list) or fix the path in \
                 [lists]"
                    .to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: let the shield's user read the file".to_string()
            }
            _ => format!("cannot read the file ({e}): check the path in [lists]"),
        };
        error(0, message)
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes
            .get(..valid)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        error(line, "not UTF-8 text: save the file as UTF-8".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_one_error_on_line_zero() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("absent.txt");
        let errs = IpList::load(&path).err().unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 0);
        assert!(errs[0].message.starts_with("file not found: create it"));
        assert_eq!(
            errs[0].to_string(),
            format!("{}: {}", path.display(), errs[0].message)
        );
        assert_eq!(
            load_revoked(&path, TokenFolding::default())
                .err()
                .map(|e| e.len()),
            Some(1)
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("latin1.txt");
        std::fs::write(&path, b"10.0.0.1\n10.0.0.2 reason=\"caf\xe9\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let errs = IpList::load(&path).err().unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].line, errs[0].message.as_str()),
            (2, "not UTF-8 text: save the file as UTF-8")
        );
    }

    #[test]
    fn a_file_on_disk_loads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("blocklist.txt");
        std::fs::write(&path, "10.0.0.0/8\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(IpList::load(&path).map(|l| l.len()), Ok(1));
    }
}
