//! Viewer tokens: the optional shared secrets a viewer must present (gRPC `authorization:
//! Bearer …` metadata; HTTP the same header or `?token=`).
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so neither a token's
//! content nor its length leaks through timing, and a memory dump shows no secret. Errors name
//! what was wrong with a presented token, never the token itself.

use std::path::Path;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable secret is worse than none, since it looks like security.
pub const MIN_TOKEN_LEN: usize = 16;

/// The set of accepted tokens.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token presented (send `authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed authorization header (expected `Bearer <token>`)")]
    Malformed,
    #[error("token not accepted")]
    Wrong,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: token is {len} characters; at least {MIN_TOKEN_LEN} are required")]
    TooShort {
        path: String,
        line: usize,
        len: usize,
    },
    #[error("token file {path}, line {line}: tokens are printable ASCII without spaces")]
    BadChars { path: String, line: usize },
    #[error("token file {path} has no tokens (one per line; `#` starts a comment)")]
    Empty { path: String },
}

impl Tokens {
    /// Reads one token per line; blank lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> Result<Tokens, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses token-file text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokenFileError> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            let (path, line) = (origin.to_string(), i + 1);
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenFileError::BadChars { path, line });
            }
            if token.len() < MIN_TOKEN_LEN {
                let len = token.len();
                return Err(TokenFileError::TooShort { path, line, len });
            }
            digests.push(sha256(token.as_bytes()));
        }
        if digests.is_empty() {
            return Err(TokenFileError::Empty {
                path: origin.to_string(),
            });
        }
        Ok(Tokens { digests })
    }

    /// Checks a bare token. Every configured token is compared, so the time taken does not
    /// depend on which one (if any) matched.
    pub fn check_token(&self, presented: &str) -> Result<(), AuthError> {
        let d = sha256(presented.as_bytes());
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, known| acc | known.ct_eq(&d));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }

    /// Checks an `authorization` header value (`Bearer <token>`, scheme case-insensitive).
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), AuthError> {
        let raw = header.ok_or(AuthError::Missing)?;
        let text = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        self.check_token(token.trim())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A fresh random token (for `camcast gen-token` and first boot): 32 bytes, URL-safe hex.
pub fn generate_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef-good";

    fn tokens() -> Tokens {
        Tokens::parse(
            &format!("# viewers\n\n{GOOD}\nsecond-token-0123456789\n"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn accepts_configured_tokens_only() {
        let t = tokens();
        assert_eq!(t.check_token(GOOD), Ok(()));
        assert_eq!(t.check_token("second-token-0123456789"), Ok(()));
        assert_eq!(t.check_token("0123456789abcdef-goo"), Err(AuthError::Wrong));
        assert_eq!(t.check_token(""), Err(AuthError::Wrong));
    }

    #[test]
    fn header_needs_the_bearer_scheme() {
        let t = tokens();
        let ok = format!("Bearer {GOOD}");
        assert_eq!(t.check_header(Some(ok.as_bytes())), Ok(()));
        let lower = format!("bearer  {GOOD} ");
        assert_eq!(t.check_header(Some(lower.as_bytes())), Ok(()));
        assert_eq!(t.check_header(None), Err(AuthError::Missing));
        assert_eq!(
            t.check_header(Some(GOOD.as_bytes())),
            Err(AuthError::Malformed)
        );
        let basic = format!("Basic {GOOD}");
        assert_eq!(
            t.check_header(Some(basic.as_bytes())),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            t.check_header(Some(b"Bearer \xff\xfe")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn bad_token_files_are_explained_without_the_secret() {
        let short = Tokens::parse("ok-ok-ok-ok-ok-ok-ok\nshort\n", "f").unwrap_err();
        let msg = short.to_string();
        assert!(
            msg.contains("line 2") && msg.contains("5 characters"),
            "{msg}"
        );
        assert!(!msg.contains("short\n") && !msg.contains("ok-ok"), "{msg}");
        assert!(matches!(
            Tokens::parse("# nothing\n\n", "f"),
            Err(TokenFileError::Empty { .. })
        ));
        assert!(matches!(
            Tokens::parse("has a space in the middle\n", "f"),
            Err(TokenFileError::BadChars { line: 1, .. })
        ));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let shown = format!("{:?}", tokens());
        assert_eq!(shown, "Tokens(2 configured)");
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_accepted() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let t = Tokens::parse(&a, "gen").unwrap();
        assert_eq!(t.check_token(&a), Ok(()));
        assert_eq!(t.check_token(&b), Err(AuthError::Wrong));
    }
}
