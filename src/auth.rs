//! Who may use the API: the bearer tokens of `auth.tokens_file`, one `name:role:token` per
//! line (`#` starts a comment). The name is the person or system recorded for what they do; the
//! role is what the token may do — `read` (the API's reads, `/metrics`, the page), `approve`
//! (also decide on repairs and silence alerts: on-call) or `admin` (also reload and enable a
//! rule's automatic repairs). A line without a role (`name:token`, as before roles) is `admin`
//! and warned about. Tokens are secrets: they are never logged or printed, a file that group or
//! others can read is refused, and tokens are compared in constant time.

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

/// Every problem of a tokens file, one a line.
#[derive(Debug)]
pub struct AuthErrors(pub Vec<AuthError>);

impl fmt::Display for AuthErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for AuthErrors {}

/// What a token may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The API's reads, `/metrics` and the page (when `auth.read: token`).
    Read,
    /// Also approve and reject repairs, and add and expire silences: on-call.
    Approve,
    /// Also reload the config and enable a rule's automatic repairs.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Approve, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Approve => "approve",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One token: whose, what it may do, and the secret.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    role: Role,
    token: String,
}

/// The configured tokens. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
    /// Lines without a role (given `admin`), for a warning.
    pub without_role: Vec<usize>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        write!(f, "Tokens({names:?})")
    }
}

impl Tokens {
    /// No tokens: every request that needs one is refused.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Reads and checks the tokens file: every problem, each with its line where it has one.
    pub fn load(path: &Path) -> Result<Tokens, AuthErrors> {
        let read = |source| {
            AuthErrors(vec![AuthError::Read {
                path: path.to_path_buf(),
                source,
            }])
        };
        let mut errors = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                errors.push(AuthError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let bytes = std::fs::read(path).map_err(read)?;
        match Tokens::parse_bytes(path, &bytes) {
            Ok(tokens) if errors.is_empty() => Ok(tokens),
            Ok(_) => Err(AuthErrors(errors)),
            Err(more) => {
                errors.extend(more);
                Err(AuthErrors(errors))
            }
        }
    }

    /// Parses the file's lines; every problem, each with its line, never the token.
    fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Tokens, Vec<AuthError>> {
        let mut errors = Vec::new();
        let mut text = String::with_capacity(bytes.len());
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            match std::str::from_utf8(line) {
                Ok(l) => text.push_str(l),
                Err(e) => errors.push(AuthError::Invalid {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!(
                        "not UTF-8 text (a bad byte at column {})",
                        e.valid_up_to() + 1
                    ),
                }),
            }
            text.push('\n');
        }
        match Tokens::parse(path, &text) {
            Ok(tokens) if errors.is_empty() => Ok(tokens),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                errors.sort_by_key(|e| match e {
                    AuthError::Invalid { line, .. } => *line,
                    _ => 0,
                });
                Err(errors)
            }
        }
    }

    /// Parses `name:role:token` (or `name:token`) lines; every problem, each with its line,
    /// never the token.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, Vec<AuthError>> {
        let invalid = |line: usize, message: String| AuthError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut errors = Vec::new();
        let mut tokens = Tokens::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, rest)) = line.split_once(':') else {
                errors.push(invalid(i + 1, "expected `name:role:token`".into()));
                continue;
            };
            let (role, token) = match rest.split_once(':') {
                Some((role, token)) if Role::parse(role.trim()).is_some() => {
                    (Role::parse(role.trim()).expect("checked"), token)
                }
                _ => {
                    tokens.without_role.push(i + 1);
                    (Role::Admin, rest)
                }
            };
            let (name, token) = (name.trim(), token.trim());
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
            if !name_ok {
                errors.push(invalid(
                    i + 1,
                    format!("`{name}` is not a name: use letters, digits and . _ @ -"),
                ));
                continue;
            }
            if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
                errors.push(invalid(
                    i + 1,
                    format!(
                        "the token of `{name}` must be at least {MIN_TOKEN_LEN} characters without spaces"
                    ),
                ));
                continue;
            }
            if tokens.entries.iter().any(|e| e.name == name) {
                errors.push(invalid(i + 1, format!("`{name}` has a token already")));
                continue;
            }
            if tokens.entries.iter().any(|e| e.token == token) {
                errors.push(invalid(
                    i + 1,
                    format!("the token of `{name}` is another name's too; each needs its own"),
                ));
                continue;
            }
            tokens.entries.push(Entry {
                name: name.to_string(),
                role,
                token: token.to_string(),
            });
        }
        if errors.is_empty() {
            Ok(tokens)
        } else {
            Err(errors)
        }
    }

    /// The lines without a role, as a warning for people, if there are any.
    pub fn warning(&self, path: &Path) -> Option<String> {
        let lines: Vec<String> = self.without_role.iter().map(usize::to_string).collect();
        (!lines.is_empty()).then(|| {
            format!(
                "{}: line{} {} give{} no role, so {} admin; write `name:role:token` with the narrowest of read, approve, admin",
                path.display(),
                if lines.len() == 1 { "" } else { "s" },
                lines.join(", "),
                if lines.len() == 1 { "s" } else { "" },
                if lines.len() == 1 { "it is" } else { "they are" },
            )
        })
    }

    /// The name and role a token belongs to. Every configured token is compared, each in
    /// constant time, so the answer's timing says nothing about which or how much matched.
    pub fn who(&self, token: &str) -> Option<(&str, Role)> {
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(e.token.as_bytes(), token.as_bytes()) {
                found = Some((e.name.as_str(), e.role));
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every token to the secrets no output may show.
    pub fn add_to(&self, secrets: &mut crate::value::Secrets) {
        for e in &self.entries {
            secrets.add(&e.token);
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
    fn tokens_file_lines_name_their_owner_and_role_and_errors_never_show_a_token() {
        let path = Path::new("tokens");
        let tokens = Tokens::parse(
            path,
            "# approvers\nalice:approve:aaaaaaaaaaaaaaaaaaaa\n\nci-bot@example.com:read:bbbbbbbbbbbbbbbbbbbb\nold:cccc:cccccccccccccccc\n",
        )
        .unwrap();
        assert_eq!(
            tokens.who("aaaaaaaaaaaaaaaaaaaa"),
            Some(("alice", Role::Approve))
        );
        assert_eq!(
            tokens.who("bbbbbbbbbbbbbbbbbbbb"),
            Some(("ci-bot@example.com", Role::Read))
        );
        // No role: the whole rest is the token, and it is an admin's, with a warning.
        assert_eq!(
            tokens.who("cccc:cccccccccccccccc"),
            Some(("old", Role::Admin))
        );
        assert_eq!(tokens.without_role, [5]);
        assert!(
            tokens
                .warning(path)
                .unwrap()
                .contains("line 5 gives no role")
        );
        assert_eq!(tokens.who("aaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.who(""), None);
        assert_eq!(
            format!("{tokens:?}"),
            r#"Tokens(["alice", "ci-bot@example.com", "old"])"#
        );

        for (text, error) in [
            ("alice", "tokens:1: expected `name:role:token`"),
            (
                "al ice:read:aaaaaaaaaaaaaaaaaaaa",
                "tokens:1: `al ice` is not a name: use letters, digits and . _ @ -",
            ),
            (
                "alice:read:short-secret",
                "tokens:1: the token of `alice` must be at least 16 characters without spaces",
            ),
            (
                "a:read:aaaaaaaaaaaaaaaaaaaa\na:admin:cccccccccccccccccccc",
                "tokens:2: `a` has a token already",
            ),
            (
                "a:read:aaaaaaaaaaaaaaaaaaaa\nb:admin:aaaaaaaaaaaaaaaaaaaa",
                "tokens:2: the token of `b` is another name's too; each needs its own",
            ),
        ] {
            let errors = Tokens::parse(path, text).unwrap_err();
            assert_eq!(errors.len(), 1);
            let e = errors[0].to_string();
            assert_eq!(e, error);
            assert!(!e.contains("short-secret"));
        }
    }

    #[test]
    fn every_problem_of_a_tokens_file_is_reported_with_its_line() {
        let path = Path::new("tokens");
        let mut bytes =
            b"a:read:12345\nb:admin:bbbbbbbbbbbbbbbbbbbb\nc:admin:cc\xffcccccccccccccccccc\nd\n"
                .to_vec();
        bytes.extend_from_slice(b"e:approve:eeeeeeeeeeeeeeeeeeee\n");
        let errors: Vec<String> = Tokens::parse_bytes(path, &bytes)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "tokens:1: the token of `a` must be at least 16 characters without spaces",
                "tokens:3: not UTF-8 text (a bad byte at column 11)",
                "tokens:4: expected `name:role:token`",
            ]
        );
    }
}
