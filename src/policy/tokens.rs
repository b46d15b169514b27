//! Join tokens as the app's database compares them (`[tokens]`).
//!
//! The app looks a token up with `where('join_token', $token)`. Under MySQL's and MariaDB's
//! default `_ci` collations (PAD SPACE) `ABC123`, `abc123` and `abc123 ` find the same event,
//! so with `case_sensitive = false` (the default) every spelling that differs only in ASCII
//! letter case or in trailing spaces and tabs is **one token**: one revocation entry, one
//! per-token bucket, one distinct guess. A request's token is folded once, in its context
//! ([`JoinToken::new`]): trailing spaces and tabs cut off, ASCII letters lower-cased into a
//! small inline buffer. A token that is already folded costs no copy; one of at most
//! [`INLINE`] bytes no allocation either.
//!
//! What each check reads:
//!
//! - [`JoinToken::key`], the folded token: revocation (a `sha256:` entry of the revoked-tokens
//!   file is the digest of the folded token), per-token limits, the guessing counts (local and
//!   the cluster's);
//! - [`JoinToken::spelled`], the token as sent without its trailing whitespace: the
//!   `token_pattern`, so a pattern written for upper-case tokens still accepts them; revocation
//!   is checked first, so no spelling of a revoked token gets past it either way;
//! - [`JoinToken::sent`], the token as sent: the log's preview and the redaction of the path.
//!
//! Folding is ASCII only: `_ci` collations also equate accented and other non-ASCII letters,
//! which no byte rule can follow. The default `token_pattern` refuses every non-ASCII token
//! (404 `invalid_token`, without asking the app), so such spellings never reach it.

/// Tokens up to this many bytes are folded without an allocation.
pub const INLINE: usize = 64;

/// How `[tokens]` says tokens compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFolding {
    /// `[tokens] case_sensitive`: `false` folds letter case and trailing whitespace.
    pub case_sensitive: bool,
}

impl Default for TokenFolding {
    /// SPEC §2: `case_sensitive = false`.
    fn default() -> Self {
        TokenFolding {
            case_sensitive: false,
        }
    }
}

impl TokenFolding {
    /// `token` folded as this setting says (for lists and the command line; a request folds
    /// once through [`JoinToken::new`]).
    pub fn fold<'a>(&self, token: &'a str) -> std::borrow::Cow<'a, str> {
        if self.case_sensitive {
            return std::borrow::Cow::Borrowed(token);
        }
        let trimmed = trim_trailing_blanks(token);
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(trimmed)
        }
    }
}

/// `token` without its trailing spaces and tabs.
fn trim_trailing_blanks(token: &str) -> &str {
    token.trim_end_matches([' ', '\t'])
}

/// The folded spelling, where it is not simply a prefix of the token as sent.
#[derive(Debug, Clone)]
enum Folded {
    /// The first `len` bytes of the token as sent are already folded.
    Prefix,
    /// Lower-cased into an inline buffer (the first `len` bytes).
    Inline([u8; INLINE]),
    /// Lower-cased, longer than [`INLINE`].
    Heap(Box<str>),
}

/// A request's join token: as sent, and folded once.
#[derive(Debug, Clone)]
pub struct JoinToken {
    sent: Box<str>,
    /// Bytes of `sent` before its trailing whitespace (all of it when case-sensitive).
    len: usize,
    folded: Folded,
}

impl JoinToken {
    /// The token `sent` (as Laravel binds it), folded as `folding` says.
    pub fn new(sent: Box<str>, folding: TokenFolding) -> JoinToken {
        let len = if folding.case_sensitive {
            sent.len()
        } else {
            trim_trailing_blanks(&sent).len()
        };
        let spelled = sent.get(..len).unwrap_or_default();
        let folded = if folding.case_sensitive || !spelled.bytes().any(|b| b.is_ascii_uppercase()) {
            Folded::Prefix
        } else if len <= INLINE {
            let mut buf = [0u8; INLINE];
            for (out, b) in buf.iter_mut().zip(spelled.bytes()) {
                *out = b.to_ascii_lowercase();
            }
            Folded::Inline(buf)
        } else {
            Folded::Heap(spelled.to_ascii_lowercase().into_boxed_str())
        };
        JoinToken { sent, len, folded }
    }

    /// The token exactly as sent (decoded once, like Laravel binds it): for logs.
    pub fn sent(&self) -> &str {
        &self.sent
    }

    /// The token as sent, kept past the request (for its access record).
    pub fn into_sent(self) -> Box<str> {
        self.sent
    }

    /// The token as sent without trailing whitespace when folding (else as sent): what
    /// `token_pattern` judges.
    pub fn spelled(&self) -> &str {
        self.sent.get(..self.len).unwrap_or_default()
    }

    /// The folded token: what revocation, limits and guessing counts key on.
    pub fn key(&self) -> &str {
        match &self.folded {
            Folded::Prefix => self.spelled(),
            Folded::Inline(buf) => {
                // Lower-casing ASCII bytes keeps UTF-8 valid: the fallback is never taken.
                let bytes = buf.get(..self.len).unwrap_or_default();
                std::str::from_utf8(bytes).unwrap_or_else(|_| self.spelled())
            }
            Folded::Heap(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLD: TokenFolding = TokenFolding {
        case_sensitive: false,
    };
    const EXACT: TokenFolding = TokenFolding {
        case_sensitive: true,
    };

    fn key(sent: &str, folding: TokenFolding) -> String {
        JoinToken::new(sent.into(), folding).key().to_owned()
    }

    #[test]
    fn spellings_that_differ_in_case_or_trailing_blanks_are_one_token() {
        for spelling in [
            "abc123XYZ789",
            "ABC123XYZ789",
            "abc123xyz789",
            "abc123XYZ789 ",
            "abc123XYZ789\t",
            "ABC123xyz789 \t  ",
        ] {
            assert_eq!(key(spelling, FOLD), "abc123xyz789", "{spelling:?}");
        }
    }

    #[test]
    fn leading_and_inner_blanks_are_part_of_the_token() {
        assert_eq!(key(" abc", FOLD), " abc");
        assert_eq!(key("a bc ", FOLD), "a bc");
    }

    #[test]
    fn case_sensitive_tokens_are_taken_as_sent() {
        assert_eq!(key("ABC123 ", EXACT), "ABC123 ");
        let t = JoinToken::new("ABC123 ".into(), EXACT);
        assert_eq!(t.spelled(), "ABC123 ");
    }

    #[test]
    fn the_pattern_sees_the_sent_case_without_trailing_blanks() {
        let t = JoinToken::new("ABC123xyz \t".into(), FOLD);
        assert_eq!(t.sent(), "ABC123xyz \t");
        assert_eq!(t.spelled(), "ABC123xyz");
        assert_eq!(t.key(), "abc123xyz");
    }

    #[test]
    fn long_tokens_and_non_ascii_letters_fold_ascii_only() {
        let long = format!("{}Z ", "A".repeat(INLINE + 10));
        assert_eq!(key(&long, FOLD), format!("{}z", "a".repeat(INLINE + 10)));
        let exactly = "B".repeat(INLINE);
        assert_eq!(key(&exactly, FOLD), "b".repeat(INLINE));
        // Non-ASCII stays as it is; the ASCII around it is folded.
        assert_eq!(key("ÉtéAB", FOLD), "Étéab");
    }

    #[test]
    fn a_token_of_blanks_folds_to_nothing() {
        assert_eq!(key("  \t", FOLD), "");
        assert_eq!(key("", FOLD), "");
    }

    #[test]
    fn folding_a_text_agrees_with_folding_a_request_token() {
        for t in ["abc", "ABC ", "aBc\t", "  x", "Ünï ", &"Q".repeat(100)] {
            assert_eq!(FOLD.fold(t), key(t, FOLD), "{t:?}");
            assert_eq!(EXACT.fold(t), key(t, EXACT), "{t:?}");
        }
    }
}
