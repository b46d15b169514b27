//! `joinshield token-hash TOKEN`: the line that revokes a join token without the
//! revoked-tokens file holding the secret, `sha256:` and the digest of the token as the shield
//! compares it (folded unless the configuration's `[tokens] case_sensitive = true`).

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::policy::lists::revoked_entry;

/// Prints the revoked-tokens entry for `token` under the `[tokens]` setting of the
/// configuration at `path` (read alone, so a half-edited file elsewhere does not stop it).
pub fn token_hash(path: &Path, token: &str) -> ExitCode {
    let folding = match config::load_tokens(path) {
        Ok(f) => f,
        Err(errors) => {
            eprintln!(
                "joinshield: cannot read [tokens] of {} (give the configuration with -c):",
                path.display()
            );
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if folding.fold(token).is_empty() {
        eprintln!("joinshield: the token is empty: give the join token itself");
        return ExitCode::FAILURE;
    }
    println!("{}", revoked_entry(token, folding));
    eprintln!(
        "{}: add the line above to the revoked-tokens file ({})",
        path.display(),
        if folding.case_sensitive {
            "case_sensitive = true: the token exactly as given"
        } else {
            "letter case and trailing whitespace ignored: every spelling of the token is revoked"
        }
    );
    ExitCode::SUCCESS
}
