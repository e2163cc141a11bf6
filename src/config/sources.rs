//! The `sources` section: one named database each, its URL parsed into connection options
//! without connecting, and its pool and timeout settings.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::{
    ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT,
    MAX_CONNECT_TIMEOUT, MAX_STATEMENT_TIMEOUT, MySqlLogin, PgLogin, RawSource, SourceConfig,
    SourceKind, duration_field, valid_name,
};
use crate::diag::Diagnostics;
use crate::yaml::{self, OrderedMap};

/// Validates every source. Returns the usable ones, and the names of those whose settings are
/// in error (already reported), so rules naming them get no second error.
pub(super) fn check_sources(
    raw: OrderedMap<RawSource>,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    secrets: &mut crate::value::Secrets,
) -> (Vec<SourceConfig>, Vec<String>) {
    let mut sources = Vec::new();
    let mut unusable_sources = Vec::new();
    for (name, raw_source) in raw.0 {
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
        let url = yaml::expand_spanned(&raw_source.url, &what, path, 0, env, diags);
        secrets.add_url_password(&url);
        let url_pos = yaml::pos(&raw_source.url, 0);
        let options = if url.is_empty() && raw_source.url.value.contains("${") {
            None // the missing variable is already reported
        } else {
            match connect_options(&url, base) {
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
            MAX_STATEMENT_TIMEOUT,
            "statement_timeout",
            path,
            diags,
        );
        let connect_timeout = duration_field(
            raw_source.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            MAX_CONNECT_TIMEOUT,
            "connect_timeout",
            path,
            diags,
        );
        let max_rows_per_second = match raw_source.max_rows_per_second {
            Some(m) if m.value == 0 => {
                diags.push(
                    path,
                    yaml::pos(&m, 0),
                    "max_rows_per_second must be at least 1 (leave it out for no limit)",
                );
                None
            }
            m => m.map(|m| m.value),
        };
        // A source whose name is in error is reported once: rules may name it without a
        // second error, and no suggestion ever points at it.
        if let Some(options) = options.filter(|_| valid_name(&name.value)) {
            sources.push(SourceConfig {
                name: name.value,
                identity: {
                    use sha2::Digest as _;
                    crate::value::hex(&sha2::Sha256::digest(url.as_bytes())[..16])
                },
                kind: match options {
                    ConnectOptions::Postgres(..) => SourceKind::Postgres,
                    ConnectOptions::MySql(..) => SourceKind::MySql,
                    ConnectOptions::Sqlite(_) => SourceKind::Sqlite,
                },
                options,
                max_connections,
                statement_timeout,
                connect_timeout,
                max_rows_per_second,
            });
        } else {
            unusable_sources.push(name.value);
        }
    }
    (sources, unusable_sources)
}

/// A URL's password and parameters, decoded as sqlx decodes them.
struct UrlParts(url::Url);

impl UrlParts {
    fn parse(url: &str) -> Option<UrlParts> {
        url::Url::parse(url).ok().map(UrlParts)
    }

    fn password(&self) -> Option<String> {
        self.0.password().and_then(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .ok()
        })
    }

    /// The last of a parameter's spellings wins, as in sqlx.
    fn param(&self, names: &[&str]) -> Option<String> {
        self.0
            .query_pairs()
            .filter(|(k, _)| names.contains(&k.as_ref()))
            .last()
            .map(|(_, v)| v.into_owned())
    }
}

/// What the wire reader needs from a MySQL URL that sqlx accepted, read as sqlx reads it.
fn mysql_login(url: &str) -> MySqlLogin {
    let Some(url) = UrlParts::parse(url) else {
        return MySqlLogin::default();
    };
    MySqlLogin {
        password: url.password(),
        timezone: url.param(&["timezone", "time-zone"]),
        ssl_ca: url.param(&["sslca", "ssl-ca"]).map(Into::into),
        ssl_cert: url.param(&["sslcert", "ssl-cert"]).map(Into::into),
        ssl_key: url.param(&["sslkey", "ssl-key"]).map(Into::into),
    }
}

/// What the COPY reader needs from a PostgreSQL URL that sqlx accepted: the URL's, else the
/// environment's, as sqlx takes them.
fn pg_login(url: &str) -> PgLogin {
    let url = UrlParts::parse(url);
    let param = |name: &str, env: &str| {
        url.as_ref()
            .and_then(|u| u.param(&[name]))
            .or_else(|| std::env::var(env).ok())
    };
    PgLogin {
        password: url
            .as_ref()
            .and_then(|u| u.password().or_else(|| u.param(&["password"])))
            .or_else(|| std::env::var("PGPASSWORD").ok()),
        hostaddr: param("hostaddr", "PGHOSTADDR"),
        ssl_root_cert: param("sslrootcert", "PGSSLROOTCERT").map(Into::into),
        ssl_cert: param("sslcert", "PGSSLCERT").map(Into::into),
        ssl_key: param("sslkey", "PGSSLKEY").map(Into::into),
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
            .map(|options| ConnectOptions::Postgres(options, Arc::new(pg_login(url))))
            .map_err(invalid),
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let options = MySqlConnectOptions::from_str(&url).map_err(invalid)?;
            Ok(ConnectOptions::MySql(options, Arc::new(mysql_login(&url))))
        }
        "sqlite" => {
            let options = SqliteConnectOptions::from_str(url).map_err(invalid)?;
            // Relative database files are relative to the config file, like rule paths, so a
            // config means the same thing whatever directory the daemon starts in.
            let file = options.get_filename().to_path_buf();
            let in_memory = file.to_string_lossy().contains(":memory:");
            if file.as_os_str().is_empty() {
                return Err(
                    "a sqlite:// URL needs the path of the database file (sqlite://orders.db)"
                        .into(),
                );
            }
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

    /// What the COPY reader takes from a PostgreSQL URL, decoded as the driver decodes it.
    #[test]
    fn a_postgres_url_gives_the_copy_reader_its_password_and_files() {
        let login = pg_login(
            "postgres://checker:p%40ss%3Aw%2Frd@db:5432/shop?sslmode=verify-full\
             &sslrootcert=/etc/ca.pem&sslcert=c.pem&sslkey=k.pem&hostaddr=10.0.0.5",
        );
        assert_eq!(login.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(login.ssl_root_cert, Some("/etc/ca.pem".into()));
        assert_eq!(login.ssl_cert, Some("c.pem".into()));
        assert_eq!(login.ssl_key, Some("k.pem".into()));
        assert_eq!(login.hostaddr.as_deref(), Some("10.0.0.5"));
        let login = pg_login("postgres://checker@db/shop?password=s%26cret");
        assert_eq!(login.password.as_deref(), Some("s&cret"));
    }
}
