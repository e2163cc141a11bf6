//! `invariantd.yaml`: the raw file as written (strict serde, unknown fields rejected), and the
//! validated `Config` the rest of the program uses. Validation does no I/O and collects every
//! error with its position; `${VAR}` is expanded from the environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::diag::{Diagnostics, Pos};
use crate::yaml::{self, OrderedMap};

pub const DEFAULT_CONFIG_PATH: &str = "invariantd.yaml";
const DEFAULT_MAX_CONNECTIONS: u32 = 4;
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sources: OrderedMap<RawSource>,
    state: Option<RawState>,
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    max_concurrent_runs: Option<Spanned<u32>>,
    http: Option<RawHttp>,
    telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    log_format: Option<Spanned<String>>,
    otlp_endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: Spanned<String>,
    max_connections: Option<Spanned<u32>>,
    statement_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    url: Spanned<String>,
    retention: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Postgres,
    MySql,
    Sqlite,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Postgres => "postgres",
            SourceKind::MySql => "mysql",
            SourceKind::Sqlite => "sqlite",
        })
    }
}

/// Connection options parsed from a source URL. They hold credentials, so they are never
/// printed.
#[derive(Clone)]
pub enum ConnectOptions {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectOptions(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    pub options: ConnectOptions,
    pub max_connections: u32,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub options: ConnectOptions,
    /// How long resolved violations and runs are kept.
    pub retention: Duration,
}

const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_MAX_CONCURRENT_RUNS: u32 = 4;
/// 9464 is the port Prometheus' registry of default ports gives OpenTelemetry-style exporters;
/// loopback unless the operator opens it up.
const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub sources: Vec<SourceConfig>,
    pub state: StateConfig,
    /// Rule files and directories, resolved against the config file's directory.
    pub rule_paths: Vec<RulePath>,
    /// Rule runs at the same time in the daemon.
    pub max_concurrent_runs: usize,
    /// Where the daemon serves `/metrics`, health and the API.
    pub http_listen: std::net::SocketAddr,
    pub log_format: crate::telemetry::LogFormat,
    /// OTLP/HTTP base URL for traces; none means no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// Sources named in the file whose settings are in error (already reported): rules may
    /// name them without a second error.
    pub unusable_sources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RulePath {
    pub path: PathBuf,
    pub pos: Pos,
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        // A bare file name: paths stay relative, and print as the user wrote them.
        _ => PathBuf::new(),
    }
}

/// Reads and validates the config file. `env` looks up environment variables.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Diagnostics> {
    let (config, diags) = load_partial(path, env);
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => Err(diags),
    }
}

/// Like `load`, but also returns what could be read of a config with errors, so that the
/// rules can be checked against it and every error reported at once.
pub fn load_partial(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Config>, Diagnostics) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_partial(path, &text, env),
        Err(e) => {
            let mut diags = Diagnostics::default();
            diags.push(
                path,
                Pos::default(),
                format!("cannot read the config file: {e}"),
            );
            (None, diags)
        }
    }
}

/// Validates config text as if read from `path`.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    let (config, diags) = parse_partial(path, text, env);
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => Err(diags),
    }
}

fn parse_partial(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Config>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let docs = yaml::documents(text);
    if docs.len() > 1 {
        diags.push(
            path,
            Pos {
                line: docs[1].line_offset,
                column: 1,
            },
            "the config file must hold one YAML document",
        );
        return (None, diags);
    }
    let raw: RawConfig = match docs.first() {
        None => RawConfig {
            sources: OrderedMap::default(),
            state: None,
            rules: Vec::new(),
            max_concurrent_runs: None,
            http: None,
            telemetry: None,
        },
        Some(doc) => match yaml::parse_document(doc) {
            Ok(r) => r,
            Err((pos, msg)) => {
                diags.push(path, pos, msg);
                return (None, diags);
            }
        },
    };
    let base = base_dir(path);

    let mut sources = Vec::new();
    let mut unusable_sources = Vec::new();
    for (name, raw_source) in raw.sources.0 {
        let what = format!("sources.{}.url", name.value);
        if !valid_name(&name.value) {
            diags.push(
                path,
                yaml::pos(&name, 0),
                format!(
                    "source name `{}` must match [a-z0-9_]+ (it is used in metric labels)",
                    name.value
                ),
            );
        }
        let url = yaml::expand_spanned(&raw_source.url, &what, path, 0, env, &mut diags);
        let url_pos = yaml::pos(&raw_source.url, 0);
        let options = if url.is_empty() && raw_source.url.value.contains("${") {
            None // the missing variable is already reported
        } else {
            match connect_options(&url, &base) {
                Ok(o) => Some(o),
                Err(msg) => {
                    diags.push(path, url_pos, format!("source `{}`: {msg}", name.value));
                    None
                }
            }
        };
        let max_connections = match raw_source.max_connections {
            Some(m) if m.value == 0 => {
                diags.push(path, yaml::pos(&m, 0), "max_connections must be at least 1");
                DEFAULT_MAX_CONNECTIONS
            }
            Some(m) => m.value,
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let statement_timeout = duration_field(
            raw_source.statement_timeout.as_ref(),
            DEFAULT_STATEMENT_TIMEOUT,
            "statement_timeout",
            path,
            &mut diags,
        );
        let connect_timeout = duration_field(
            raw_source.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            "connect_timeout",
            path,
            &mut diags,
        );
        if let Some(options) = options {
            sources.push(SourceConfig {
                name: name.value,
                kind: match options {
                    ConnectOptions::Postgres(_) => SourceKind::Postgres,
                    ConnectOptions::MySql(_) => SourceKind::MySql,
                    ConnectOptions::Sqlite(_) => SourceKind::Sqlite,
                },
                options,
                max_connections,
                statement_timeout,
                connect_timeout,
            });
        } else {
            unusable_sources.push(name.value);
        }
    }

    let retention = duration_field(
        raw.state.as_ref().and_then(|s| s.retention.as_ref()),
        DEFAULT_RETENTION,
        "state.retention",
        path,
        &mut diags,
    );
    let max_concurrent_runs = match raw.max_concurrent_runs {
        Some(m) if m.value == 0 => {
            diags.push(
                path,
                yaml::pos(&m, 0),
                "max_concurrent_runs must be at least 1",
            );
            DEFAULT_MAX_CONCURRENT_RUNS
        }
        Some(m) => m.value,
        None => DEFAULT_MAX_CONCURRENT_RUNS,
    } as usize;
    let http_listen = match &raw.http {
        None => DEFAULT_LISTEN.parse().expect("a valid address"),
        Some(h) => h.listen.value.parse().unwrap_or_else(|_| {
            diags.push(
                path,
                yaml::pos(&h.listen, 0),
                format!(
                    "http.listen: `{}` is not an address and port such as 127.0.0.1:9464",
                    h.listen.value
                ),
            );
            DEFAULT_LISTEN.parse().expect("a valid address")
        }),
    };
    let mut log_format = crate::telemetry::LogFormat::default();
    let mut otlp_endpoint = None;
    if let Some(t) = &raw.telemetry {
        if let Some(f) = &t.log_format {
            log_format = match f.value.as_str() {
                "text" => crate::telemetry::LogFormat::Text,
                "json" => crate::telemetry::LogFormat::Json,
                other => {
                    diags.push(
                        path,
                        yaml::pos(f, 0),
                        format!("telemetry.log_format: `{other}` is not text or json"),
                    );
                    crate::telemetry::LogFormat::Text
                }
            };
        }
        if let Some(e) = &t.otlp_endpoint {
            let url = yaml::expand_spanned(e, "telemetry.otlp_endpoint", path, 0, env, &mut diags);
            if !url.is_empty() {
                if url.starts_with("http://") || url.starts_with("https://") {
                    otlp_endpoint = Some(url);
                } else {
                    diags.push(path, yaml::pos(e, 0), "telemetry.otlp_endpoint: an http:// or https:// URL (OTLP over HTTP) is expected");
                }
            }
        }
    }
    let state = match raw.state {
        None => connect_options("sqlite://invariantd.db?mode=rwc", &base).ok(),
        Some(s) => {
            let url = yaml::expand_spanned(&s.url, "state.url", path, 0, env, &mut diags);
            match connect_options(&url, &base) {
                Ok(ConnectOptions::MySql(_)) => {
                    diags.push(
                        path,
                        yaml::pos(&s.url, 0),
                        "state: the state store is SQLite or PostgreSQL",
                    );
                    None
                }
                Ok(o) => Some(o),
                Err(msg) if !url.is_empty() => {
                    diags.push(path, yaml::pos(&s.url, 0), format!("state: {msg}"));
                    None
                }
                Err(_) => None,
            }
        }
    };

    let mut rule_paths = Vec::new();
    for p in raw.rules {
        let pos = yaml::pos(&p, 0);
        rule_paths.push(RulePath {
            path: base.join(&p.value),
            pos,
        });
    }
    if rule_paths.is_empty() {
        rule_paths.push(RulePath {
            path: base.join("rules"),
            pos: Pos::default(),
        });
    }

    // A state URL in error is reported; the partial config carries the default in its place.
    let state = state.or_else(|| connect_options("sqlite://invariantd.db?mode=rwc", &base).ok());
    let config = state.map(|options| Config {
        path: path.to_path_buf(),
        sources,
        state: StateConfig { options, retention },
        rule_paths,
        max_concurrent_runs,
        http_listen,
        log_format,
        otlp_endpoint,
        unusable_sources,
    });
    (config, diags)
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn duration_field(
    value: Option<&Spanned<String>>,
    default: Duration,
    what: &str,
    path: &Path,
    diags: &mut Diagnostics,
) -> Duration {
    let Some(v) = value else { return default };
    match humantime::parse_duration(&v.value) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            diags.push(
                path,
                yaml::pos(v, 0),
                format!("{what} must be greater than zero"),
            );
            default
        }
        Err(_) => {
            diags.push(
                path,
                yaml::pos(v, 0),
                format!(
                    "{what}: invalid duration `{}`; write it like 30s or 5m",
                    v.value
                ),
            );
            default
        }
    }
}

/// Parses a database URL into connection options without connecting. Error messages never
/// repeat the URL, which may hold a password.
pub fn connect_options(url: &str, base: &Path) -> Result<ConnectOptions, String> {
    let scheme = url.split(':').next().unwrap_or("");
    let invalid = |e: sqlx::Error| {
        format!(
            "invalid {scheme} URL: {}",
            redact_error(&e.to_string(), url)
        )
    };
    match scheme {
        "postgres" | "postgresql" => PgConnectOptions::from_str(url)
            .map(ConnectOptions::Postgres)
            .map_err(invalid),
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            MySqlConnectOptions::from_str(&url)
                .map(ConnectOptions::MySql)
                .map_err(invalid)
        }
        "sqlite" => {
            let options = SqliteConnectOptions::from_str(url).map_err(invalid)?;
            // Relative database files are relative to the config file, like rule paths, so a
            // config means the same thing whatever directory the daemon starts in.
            let file = options.get_filename().to_path_buf();
            let in_memory =
                file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:");
            Ok(ConnectOptions::Sqlite(
                if file.is_relative() && !in_memory {
                    options.filename(base.join(file))
                } else {
                    options
                },
            ))
        }
        "" => Err("the URL is empty".into()),
        other => Err(format!(
            "unsupported database `{other}`: use a postgres://, mysql:// (also for MariaDB) or sqlite:// URL"
        )),
    }
}

fn redact_error(message: &str, url: &str) -> String {
    if url.is_empty() {
        message.to_string()
    } else {
        message.replace(url, "<url>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ORDERS_URL" => Some("postgres://u:secret@127.0.0.1/orders".into()),
            _ => None,
        }
    }

    #[test]
    fn a_full_config_loads() {
        let text = r#"
sources:
  orders: { url: "${ORDERS_URL}", max_connections: 2, statement_timeout: 10s }
  shop: { url: "sqlite://shop.db" }
  stock: { url: "mariadb://root@127.0.0.1/stock" }
state: { url: "sqlite://state.db" }
rules: [rules/, extra.yaml]
"#;
        let cfg = parse(Path::new("/etc/invariantd/invariantd.yaml"), text, &env).unwrap();
        assert_eq!(cfg.sources.len(), 3);
        assert_eq!(cfg.sources[0].kind, SourceKind::Postgres);
        assert_eq!(cfg.sources[0].max_connections, 2);
        assert_eq!(cfg.sources[0].statement_timeout, Duration::from_secs(10));
        assert_eq!(cfg.sources[2].kind, SourceKind::MySql);
        let ConnectOptions::Sqlite(o) = &cfg.sources[1].options else {
            panic!()
        };
        assert_eq!(o.get_filename(), Path::new("/etc/invariantd/shop.db"));
        assert_eq!(
            cfg.rule_paths[1].path,
            Path::new("/etc/invariantd/extra.yaml")
        );
        assert!(!format!("{cfg:?}").contains("secret"));
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let text = "sources:\n  a: { url: \"${NOPE}\" }\n  b: { url: \"oracle://x\" }\n  C: { url: \"sqlite://c.db\", statement_timeout: soon }\n";
        let err = parse(Path::new("invariantd.yaml"), text, &env).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "invariantd.yaml:2:13: environment variable NOPE is not set (used in sources.a.url)",
                "invariantd.yaml:3:13: source `b`: unsupported database `oracle`: use a postgres://, mysql:// (also for MariaDB) or sqlite:// URL",
                "invariantd.yaml:4:3: source name `C` must match [a-z0-9_]+ (it is used in metric labels)",
                "invariantd.yaml:4:49: statement_timeout: invalid duration `soon`; write it like 30s or 5m",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse(Path::new("c.yaml"), "sources: {}\nsorces: {}\n", &env).unwrap_err();
        let msg = err.0[0].to_string();
        assert!(
            msg.starts_with("c.yaml:2:1: unknown field `sorces`"),
            "{msg}"
        );
    }
}
