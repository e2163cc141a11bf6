//! Who may change things: the bearer tokens of `auth.tokens_file`, one `name:token` per line
//! (`#` starts a comment). The name is the person or system recorded for what they do (a
//! reload now, approvals later). Tokens are secrets: they are never logged or printed, a file
//! that group or others can read is refused, and tokens are compared in constant time.

use std::fmt;
use std::path::{Path, PathBuf};

/// The shortest token accepted: anything shorter can be guessed.
const MIN_TOKEN_LEN: usize = 16;

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the tokens file {path} can be read by group or others (mode {mode:04o}); make it private: chmod 600 {path}"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The configured tokens. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, String)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Tokens({names:?})")
    }
}

impl Tokens {
    /// No tokens: every request that needs one is refused.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Reads and checks the tokens file.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let read = |source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AuthError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Tokens::parse(path, &text)
    }

    /// Parses `name:token` lines; errors say the line, never the token.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, AuthError> {
        let invalid = |line: usize, message: String| AuthError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(invalid(i + 1, "expected `name:token`".into()));
            };
            let (name, token) = (name.trim(), token.trim());
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
            if !name_ok {
                return Err(invalid(
                    i + 1,
                    format!("`{name}` is not a name: use letters, digits and . _ @ -"),
                ));
            }
            if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
                return Err(invalid(
                    i + 1,
                    format!(
                        "the token of `{name}` must be at least {MIN_TOKEN_LEN} characters without spaces"
                    ),
                ));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(invalid(i + 1, format!("`{name}` has a token already")));
            }
            if entries.iter().any(|(_, t)| t == token) {
                return Err(invalid(
                    i + 1,
                    format!("the token of `{name}` is another name's too; each needs its own"),
                ));
            }
            entries.push((name.to_string(), token.to_string()));
        }
        Ok(Tokens { entries })
    }

    /// The name a token belongs to. Every configured token is compared, each in constant
    /// time, so the answer's timing says nothing about which or how much matched.
    pub fn who(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, t) in &self.entries {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every token to the secrets no output may show.
    pub fn add_to(&self, secrets: &mut crate::value::Secrets) {
        for (_, token) in &self.entries {
            secrets.add(token);
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines_name_their_owner_and_errors_never_show_a_token() {
        let path = Path::new("tokens");
        let tokens = Tokens::parse(
            path,
            "# approvers\nalice: aaaaaaaaaaaaaaaaaaaa\n\nci-bot@example.com:bbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(tokens.who("aaaaaaaaaaaaaaaaaaaa"), Some("alice"));
        assert_eq!(
            tokens.who("bbbbbbbbbbbbbbbbbbbb"),
            Some("ci-bot@example.com")
        );
        assert_eq!(tokens.who("aaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.who(""), None);
        assert_eq!(
            format!("{tokens:?}"),
            r#"Tokens(["alice", "ci-bot@example.com"])"#
        );

        for (text, error) in [
            ("alice", "tokens:1: expected `name:token`"),
            (
                "al ice:aaaaaaaaaaaaaaaaaaaa",
                "tokens:1: `al ice` is not a name: use letters, digits and . _ @ -",
            ),
            (
                "alice:short-secret",
                "tokens:1: the token of `alice` must be at least 16 characters without spaces",
            ),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\na:cccccccccccccccccccc",
                "tokens:2: `a` has a token already",
            ),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\nb:aaaaaaaaaaaaaaaaaaaa",
                "tokens:2: the token of `b` is another name's too; each needs its own",
            ),
        ] {
            let e = Tokens::parse(path, text).unwrap_err().to_string();
            assert_eq!(e, error);
            assert!(!e.contains("short-secret"));
        }
    }
}
