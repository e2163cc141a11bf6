//! `invariantd init --source NAME=URL…`: reads each source's catalog (read-only, through the
//! same path as a dataset), relates the sources by key columns (`starter`), and writes a
//! starter `invariantd.yaml` and `rules/starter.yaml` that `validate --connect` and `test`
//! pass as written. It never overwrites a file, and never writes a password: a URL's
//! password becomes `${NAME_PASSWORD}`, to be set in the environment.

pub mod starter;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Config};
use crate::sources::Sources;

use starter::Found;

/// What went wrong, for the user: nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "{0} exists; init never overwrites a file (move it away, or write elsewhere with --config)"
    )]
    Exists(String),
    #[error("{0}")]
    Config(String),
    #[error("source `{name}`: cannot read its tables: {message}")]
    Source { name: String, message: String },
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// What `init` wrote.
pub struct Written {
    pub config: PathBuf,
    pub rules: PathBuf,
    /// Per source: its name, the tables it found, and their key-like columns (`table.column`).
    pub tables: Vec<(String, usize, Vec<String>)>,
    pub relations: Vec<starter::Relation>,
    /// Environment variables the configuration names in place of passwords.
    pub variables: Vec<String>,
}

/// `NAME=URL` → (name, url).
pub fn parse_source(arg: &str) -> Result<(String, String), InitError> {
    match arg.split_once('=') {
        Some((name, url)) if !name.is_empty() && !url.is_empty() => {
            Ok((name.to_string(), url.to_string()))
        }
        _ => Err(InitError::Usage(format!(
            "--source `{arg}`: write it as NAME=URL (orders=postgres://checker@db/orders)"
        ))),
    }
}

/// The URL as the file should hold it: a password replaced by `${NAME_PASSWORD}`, and the
/// variable's name.
fn without_password(name: &str, url: &str) -> (String, Option<String>) {
    let password = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_string));
    match password {
        Some(p) if !p.is_empty() => {
            let var = format!("{}_PASSWORD", name.to_ascii_uppercase());
            let written = url.replacen(&format!(":{p}@"), &format!(":${{{var}}}@"), 1);
            (written, Some(var))
        }
        _ => (url.replace("${", "$${"), None),
    }
}

/// A relative SQLite path is relative to the current directory on the command line, and to
/// the configuration's directory in the file.
fn as_written_from(dir: &Path, url: &str) -> String {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return url.to_string();
    };
    let file = path.split('?').next().unwrap_or(path);
    let cwd = std::env::current_dir().unwrap_or_default();
    let same_dir = dir.as_os_str().is_empty()
        || std::fs::canonicalize(dir).ok() == std::fs::canonicalize(&cwd).ok();
    if Path::new(file).is_absolute() || file.starts_with(':') || same_dir {
        url.to_string()
    } else {
        format!("sqlite://{}", cwd.join(path).display())
    }
}

/// Reads the sources and writes the starter files next to `config_path`.
pub async fn init(config_path: &Path, args: &[String]) -> Result<Written, InitError> {
    let mut given: Vec<(String, String)> = Vec::new();
    for arg in args {
        let (name, url) = parse_source(arg)?;
        if given.iter().any(|(n, _)| *n == name) {
            return Err(InitError::Usage(format!("--source {name} is given twice")));
        }
        given.push((name, url));
    }
    if given.is_empty() {
        return Err(InitError::Usage(
            "give the sources to read: --source NAME=URL, once per source".to_string(),
        ));
    }
    let dir = config_path.parent().unwrap_or(Path::new("")).to_path_buf();
    let rules_path = dir.join("rules").join("starter.yaml");
    for path in [config_path, rules_path.as_path()] {
        if path.exists() {
            return Err(InitError::Exists(path.display().to_string()));
        }
    }

    // The sources as the configuration says them, checked as `run` would check them.
    let url_of = |(n, u): &(String, String)| (n.clone(), as_written_from(&dir, u));
    let to_read: Vec<(String, String)> = given.iter().map(url_of).collect();
    let config = parse_config(config_path, &to_read)?;
    let sources = Sources::new(&config.sources, config.secrets.clone());
    let mut found = Vec::new();
    for sc in &config.sources {
        let source = sources
            .get(&sc.name)
            .expect("every configured source is built");
        let columns =
            source
                .catalog(Duration::from_secs(30))
                .await
                .map_err(|e| InitError::Source {
                    name: sc.name.clone(),
                    message: e.message.to_string(),
                })?;
        found.push(Found {
            name: sc.name.clone(),
            kind: sc.kind,
            columns,
        });
    }
    let relations = starter::relations(&found);

    let mut variables = Vec::new();
    let written_urls: Vec<(String, String)> = to_read
        .iter()
        .map(|(name, url)| {
            let (url, var) = without_password(name, url);
            variables.extend(var);
            (name.clone(), url)
        })
        .collect();
    let rules = starter::rules_text(&relations, &found);
    create_new(&rules_path, &rules)?;
    if let Err(e) = create_new(config_path, &starter::config_text(&written_urls)) {
        // Nothing half-written: the rule file was this run's own.
        let _ = std::fs::remove_file(&rules_path);
        return Err(e);
    }
    let tables = found
        .iter()
        .map(|f| {
            let mut t: Vec<(&str, &str)> = f
                .columns
                .iter()
                .map(|c| (c.schema.as_str(), c.table.as_str()))
                .collect();
            t.dedup();
            let keys = f
                .columns
                .iter()
                .filter(|c| starter::key_like(c))
                .map(|c| format!("{}.{}", c.table, c.name))
                .collect();
            (f.name.clone(), t.len(), keys)
        })
        .collect();
    Ok(Written {
        config: config_path.to_path_buf(),
        rules: rules_path,
        tables,
        relations,
        variables,
    })
}

fn parse_config(path: &Path, sources: &[(String, String)]) -> Result<Config, InitError> {
    let text = starter::config_text(sources);
    config::parse(path, &text, &|_| None).map_err(|d| {
        // The text is ours; what can be wrong is a name or a URL given on the command line.
        InitError::Config(format!("{d}").replace(&format!("{}:", path.display()), "--source:"))
    })
}

/// Writes a file that must not exist yet (`create_new`: a file that appeared meanwhile is
/// not overwritten either).
fn create_new(path: &Path, text: &str) -> Result<(), InitError> {
    let fail = |error| InitError::Write {
        path: path.display().to_string(),
        error,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => InitError::Exists(path.display().to_string()),
            _ => fail(e),
        })?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// `invariantd init`: writes, and says what it wrote; or says why it wrote nothing (exit 2).
pub async fn command(config_path: &Path, args: &[String]) -> std::process::ExitCode {
    match init(config_path, args).await {
        Ok(written) => {
            print!("{}", summary(&written));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}\nnothing was written");
            std::process::ExitCode::from(2)
        }
    }
}

/// What to tell the user after writing.
pub fn summary(w: &Written) -> String {
    let mut out = String::new();
    const SHOWN: usize = 20;
    for (name, tables, keys) in &w.tables {
        let s = if *tables == 1 { "" } else { "s" };
        out.push_str(&format!("source {name}: {tables} table{s}"));
        if !keys.is_empty() {
            let more = keys.len().saturating_sub(SHOWN);
            let shown: Vec<&str> = keys.iter().take(SHOWN).map(String::as_str).collect();
            out.push_str(&format!("; key-like columns: {}", shown.join(", ")));
            if more > 0 {
                out.push_str(&format!(" and {more} more"));
            }
        }
        out.push('\n');
    }
    for r in &w.relations {
        out.push_str(&format!(
            "related {}.{} ({}) to {}.{} ({}) by {}: {}\n",
            r.child.table,
            r.child.column,
            r.child.source,
            r.parent.table,
            r.parent.column,
            r.parent.source,
            r.key,
            r.because
        ));
    }
    out.push_str(&format!(
        "wrote {} and {} ({} example rule{})\n",
        w.config.display(),
        w.rules.display(),
        w.relations.len(),
        if w.relations.len() == 1 { "" } else { "s" }
    ));
    if !w.variables.is_empty() {
        out.push_str(&format!(
            "the passwords are not in the file: set {} in the environment\n",
            w.variables.join(", ")
        ));
    }
    out.push_str("next: invariantd validate --connect && invariantd test && invariantd check\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_written() {
        assert_eq!(
            without_password("payments", "mysql://checker:s3cr%40t@db:3306/payments"),
            (
                "mysql://checker:${PAYMENTS_PASSWORD}@db:3306/payments".to_string(),
                Some("PAYMENTS_PASSWORD".to_string())
            )
        );
        assert_eq!(
            without_password("orders", "postgres://checker@db/orders"),
            ("postgres://checker@db/orders".to_string(), None)
        );
        assert_eq!(
            without_password("shipping", "sqlite://shipping.db"),
            ("sqlite://shipping.db".to_string(), None)
        );
    }

    #[test]
    fn a_source_is_name_equals_url() {
        assert_eq!(
            parse_source("orders=postgres://db/orders?sslmode=require").unwrap(),
            (
                "orders".to_string(),
                "postgres://db/orders?sslmode=require".to_string()
            )
        );
        for bad in ["orders", "=postgres://db", "orders="] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }
}
