//! `invariantd.yaml`: the raw file as written (strict serde, unknown fields rejected), and the
//! validated `Config` the rest of the program uses. Validation does no I/O and collects every
//! error with its position; `${VAR}` is expanded from the environment. Each section has its
//! check function: `sources.rs` for the databases, `daemon.rs` for state, http and telemetry,
//! `alerting.rs` for receivers and routes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

mod alerting;
mod daemon;
mod repairs;
mod sources;

pub use alerting::{AlertingConfig, MATCH_FIELDS, Matcher, ReceiverConfig, RouteConfig};
use daemon::{
    check_auth, check_cluster, check_http, check_max_concurrent_runs, check_metrics,
    check_retention, check_state, check_telemetry,
};
pub use repairs::RepairsConfig;
pub use sources::connect_options;

use crate::diag::{Diagnostics, Pos};
use crate::outbound::{Allowed, literal_refusal};
use crate::yaml::{self, OrderedMap};
use crate::yaml::{Bound, duration_field};

pub const DEFAULT_CONFIG_PATH: &str = "invariantd.yaml";
const DEFAULT_MAX_CONNECTIONS: u32 = 4;
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    sources: OrderedMap<RawSource>,
    state: Option<RawState>,
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    max_concurrent_runs: Option<Spanned<u32>>,
    shutdown_grace: Option<Spanned<String>>,
    http: Option<RawHttp>,
    telemetry: Option<RawTelemetry>,
    auth: Option<RawAuth>,
    metrics: Option<RawMetrics>,
    alerting: Option<alerting::RawAlerting>,
    repairs: Option<repairs::RawRepairs>,
    outbound: Option<crate::outbound::RawOutbound>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
struct RawCluster {
    lease: Option<Spanned<String>>,
    renew: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawMetrics {
    #[serde(default)]
    rule_labels: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawAuth {
    tokens_file: Option<Spanned<String>>,
    read: Option<Spanned<String>>,
    audit_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawTelemetry {
    log_format: Option<Spanned<String>>,
    otlp_endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawHttp {
    listen: Spanned<String>,
    probes_listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawSource {
    url: Spanned<String>,
    max_connections: Option<Spanned<u32>>,
    statement_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    max_rows_per_second: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
struct RawState {
    url: Spanned<String>,
    retention: Option<Spanned<String>>,
}

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    /// The driver's options, and what the full-sweep reader (`sources/postgres/wire.rs`)
    /// needs from the URL that the driver keeps to itself.
    Postgres(PgConnectOptions, Arc<PgLogin>),
    /// The driver's options, and what the full-sweep reader (`sources/mysql/wire.rs`) needs
    /// from the URL that the driver keeps to itself.
    MySql(MySqlConnectOptions, Arc<MySqlLogin>),
    Sqlite(SqliteConnectOptions),
}

/// The parts of a MySQL URL that sqlx's options do not hand back: the password, the session
/// time zone (`?timezone=`, UTC when absent, as the driver sets it) and the TLS files
/// (`ssl-ca`, `ssl-cert`, `ssl-key`, paths as the driver reads them).
#[derive(Clone, Default)]
pub struct MySqlLogin {
    pub password: Option<String>,
    pub timezone: Option<String>,
    pub ssl_ca: Option<PathBuf>,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
}

/// The parts of a PostgreSQL URL that sqlx's options do not hand back: the password (the
/// URL's, its `?password=`, else `PGPASSWORD`, as the driver takes them; `~/.pgpass` is left to
/// the driver) and the TLS files (`sslrootcert`, `sslcert`, `sslkey`, else `PGSSLROOTCERT`,
/// `PGSSLCERT`, `PGSSLKEY`), and the address to connect to in place of the host's
/// (`hostaddr`, else `PGHOSTADDR`).
#[derive(Clone, Default)]
pub struct PgLogin {
    pub password: Option<String>,
    pub hostaddr: Option<String>,
    pub ssl_root_cert: Option<PathBuf>,
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectOptions(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    /// A digest of the expanded URL: two generations of the config with the same name,
    /// identity and settings describe the same source, whose pool a reload keeps.
    pub identity: String,
    pub kind: SourceKind,
    pub options: ConnectOptions,
    pub max_connections: u32,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// The most rows per second all reads of this source together may take: a sweep that
    /// would go faster waits between batches.
    pub max_rows_per_second: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub options: ConnectOptions,
    /// How long resolved violations and runs are kept.
    pub retention: Duration,
    /// The key of the audit chain's HMAC (`auth.audit_key_file`); without one the chain is
    /// hashed unkeyed.
    pub audit_key_file: Option<PathBuf>,
}

const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_MAX_CONCURRENT_RUNS: u32 = 4;
/// Kubernetes waits 30 s after SIGTERM before SIGKILL: stop within that by default.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Leases of 30 s renewed every 10 s: two renewals can fail before a lease is lost.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const DEFAULT_RENEW: Duration = Duration::from_secs(10);
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
    /// How long a stopping daemon waits for runs in flight and services before it exits.
    pub shutdown_grace: Duration,
    /// Where the daemon serves `/metrics`, health and the API.
    pub http_listen: std::net::SocketAddr,
    /// A listener of its own for `/healthz`, `/readyz` and `/metrics` (`http.probes_listen`),
    /// so that clients that hold the main listener's connections cannot blind them.
    pub probes_listen: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    /// OTLP/HTTP base URL for traces; none means no traces are exported.
    pub otlp_endpoint: Option<String>,
    pub auth: AuthConfig,
    /// The passwords of the source and state URLs: redacted wherever they might show.
    pub secrets: crate::value::Secrets,
    /// Rule labels copied to every per-rule metric series (`metrics.rule_labels`).
    pub metric_rule_labels: Vec<String>,
    /// Receivers, routes and the timing of alerts.
    pub alerting: AlertingConfig,
    /// How repairs are applied and approved.
    pub repairs: RepairsConfig,
    /// What receivers and repair actions may reach although it is loopback, private,
    /// link-local or a metadata address (`outbound.allow`).
    pub outbound_allow: Vec<Allowed>,
    /// How replicas on one state store share the work (`cluster`).
    pub cluster: ClusterConfig,
    /// Sources named in the file whose settings are in error (already reported): rules may
    /// name them without a second error.
    pub unusable_sources: Vec<String>,
}

/// How long a replica's leases last and how often it renews them (`cluster.lease`,
/// `cluster.renew`): a replica that dies leaves its work for at most `lease` (+ one `renew`
/// for another to notice); a shorter lease fails over faster and writes more often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    pub lease: Duration,
    pub renew: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease: DEFAULT_LEASE,
            renew: DEFAULT_RENEW,
        }
    }
}

/// Who may use the API: bearer tokens from a file (read when the daemon starts or reloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `name:role:token` per line; resolved against the config file's directory.
    pub tokens_file: Option<PathBuf>,
    /// Whether reads (the API's GETs and /metrics) need a token too; changes always do.
    pub read_requires_token: bool,
    /// The key of the audit chain's HMAC; resolved against the config file's directory.
    pub audit_key_file: Option<PathBuf>,
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
    match yaml::read_text(path) {
        Ok(text) => parse_partial(path, &text, env),
        Err(e) => {
            let mut diags = Diagnostics::default();
            let (pos, message) = e.diagnostic("config file");
            diags.push(path, pos, message);
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
            shutdown_grace: None,
            http: None,
            telemetry: None,
            auth: None,
            metrics: None,
            alerting: None,
            repairs: None,
            outbound: None,
            cluster: None,
        },
        Some(doc) => {
            // Unknown fields first, in a pass of their own: they do not stop the rest.
            for (pos, msg) in yaml::unknown_fields(doc, &shape()) {
                diags.push(path, pos, msg);
            }
            match yaml::parse_document(doc) {
                Ok(r) => r,
                Err((pos, msg)) => {
                    diags.push(path, pos, msg);
                    return (None, diags);
                }
            }
        }
    };
    let base = base_dir(path);

    let mut secrets = crate::value::Secrets::default();
    let (sources, unusable_sources) =
        sources::check_sources(raw.sources, path, &base, env, &mut diags, &mut secrets);

    let retention = check_retention(raw.state.as_ref(), path, &mut diags);
    let max_concurrent_runs = check_max_concurrent_runs(raw.max_concurrent_runs, path, &mut diags);
    let shutdown_grace = duration_field(
        raw.shutdown_grace.as_ref(),
        DEFAULT_SHUTDOWN_GRACE,
        MAX_SHUTDOWN_GRACE,
        "shutdown_grace",
        path,
        &mut diags,
    );
    let (http_listen, probes_listen) = check_http(raw.http.as_ref(), path, &mut diags);
    let (log_format, otlp_endpoint) =
        check_telemetry(raw.telemetry.as_ref(), path, env, &mut diags);
    let state = check_state(raw.state, path, &base, env, &mut diags, &mut secrets);
    let auth = check_auth(raw.auth.as_ref(), path, &base, env, &mut diags);
    let metric_rule_labels = check_metrics(raw.metrics.as_ref(), path, &mut diags);
    let repairs = repairs::check_repairs(raw.repairs, path, &mut diags);
    let outbound_allow = crate::outbound::check_outbound(raw.outbound.as_ref(), path, &mut diags);
    let cluster = check_cluster(raw.cluster.as_ref(), path, &mut diags);
    let mut alerting =
        alerting::check_alerting(raw.alerting, path, &base, env, &mut diags, &mut secrets);
    let mut refused = Diagnostics::default();
    for r in &alerting.receivers {
        if let Some(why) = literal_refusal(r.kind.target(), &outbound_allow) {
            let message = format!("alerting.receivers.{}: its alerts will be {why}", r.name);
            refused.push(path, Pos::default(), message);
        }
    }
    alerting.warnings.extend(refused.0);

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
        state: StateConfig {
            options,
            retention,
            audit_key_file: auth.audit_key_file.clone(),
        },
        rule_paths,
        max_concurrent_runs,
        shutdown_grace,
        http_listen,
        probes_listen,
        log_format,
        otlp_endpoint,
        auth,
        metric_rule_labels,
        alerting,
        repairs,
        outbound_allow,
        cluster,
        secrets,
        unusable_sources,
    });
    (config, diags)
}

/// The fields the config file may have, section by section: anything else is an unknown field.
/// The raw structs ignore unknown keys, so one typo does not hide the file's other errors.
fn shape() -> yaml::Shape {
    use yaml::Shape;
    Shape::of::<RawConfig>(vec![
        (
            "sources",
            Shape::MapOf(Box::new(Shape::of::<RawSource>(vec![]))),
        ),
        ("state", Shape::of::<RawState>(vec![])),
        ("http", Shape::of::<RawHttp>(vec![])),
        ("telemetry", Shape::of::<RawTelemetry>(vec![])),
        ("auth", Shape::of::<RawAuth>(vec![])),
        ("metrics", Shape::of::<RawMetrics>(vec![])),
        ("cluster", Shape::of::<RawCluster>(vec![])),
        ("alerting", alerting::shape()),
        ("repairs", Shape::of::<repairs::RawRepairs>(vec![])),
        (
            "outbound",
            Shape::of::<crate::outbound::RawOutbound>(vec![]),
        ),
    ])
}

/// A receiver name: a label value in metrics, so plain.
fn valid_receiver_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const DAY: u64 = 24 * 3600;
/// PostgreSQL takes a statement timeout in milliseconds as a 32-bit integer (24 days).
const MAX_STATEMENT_TIMEOUT: Bound = (Duration::from_secs(24 * DAY), "24d");
/// Nobody means to wait longer for a connection, or for a daemon to stop.
const MAX_CONNECT_TIMEOUT: Bound = (Duration::from_secs(3600), "1h");
const MAX_SHUTDOWN_GRACE: Bound = (Duration::from_secs(3600), "1h");
/// A century: instants overflow long before a billion years.
const MAX_RETENTION: Bound = (Duration::from_secs(36_500 * DAY), "36500d");

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
  shop: { url: "sqlite://shop.db", max_rows_per_second: 50000 }
  stock: { url: "mariadb://root@127.0.0.1/stock" }
state: { url: "sqlite://state.db" }
rules: [rules/, extra.yaml]
"#;
        let cfg = parse(Path::new("/etc/invariantd/invariantd.yaml"), text, &env).unwrap();
        assert_eq!(cfg.sources.len(), 3);
        assert_eq!(cfg.sources[0].kind, SourceKind::Postgres);
        assert_eq!(cfg.sources[0].max_connections, 2);
        assert_eq!(cfg.sources[0].statement_timeout, Duration::from_secs(10));
        assert_eq!(cfg.sources[0].max_rows_per_second, None);
        assert_eq!(cfg.sources[1].max_rows_per_second, Some(50_000));
        assert_eq!(cfg.sources[2].kind, SourceKind::MySql);
        let ConnectOptions::Sqlite(o) = &cfg.sources[1].options else {
            panic!()
        };
        assert_eq!(o.get_filename(), Path::new("/etc/invariantd/shop.db"));
        assert_eq!(
            cfg.rule_paths[1].path,
            Path::new("/etc/invariantd/extra.yaml")
        );
        // The password itself, in any form (the `secrets` field only says how many there are).
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains(":secret") && debug.contains("Secrets(1 redacted)"),
            "{debug}"
        );
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let text = "sources:\n  a: { url: \"${NOPE}\" }\n  b: { url: \"oracle://x\" }\n  C: { url: \"sqlite://c.db\", statement_timeout: soon }\n  d: { url: \"sqlite://d.db\", max_rows_per_second: 0 }\n";
        let err = parse(Path::new("invariantd.yaml"), text, &env).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "invariantd.yaml:2:13: environment variable NOPE is not set (used in sources.a.url)",
                "invariantd.yaml:3:13: source `b`: unsupported database `oracle`: use a postgres://, mysql:// (also for MariaDB) or sqlite:// URL",
                "invariantd.yaml:4:3: source name `C` must match [a-z0-9_]+ (it is used in metric labels)",
                "invariantd.yaml:4:49: statement_timeout: invalid duration `soon`; write it like 30s or 5m",
                "invariantd.yaml:5:51: max_rows_per_second must be at least 1 (leave it out for no limit)",
            ]
        );
    }

    #[test]
    fn outbound_allow_entries_are_checked_where_written() {
        let text = "outbound:\n  allow:\n    - 10.0.0.0/8\n    - \"*.svc.cluster.local\"\n    - 10.0.0.0/33\n    - http://x\n    - 10.1.0.0/8\n";
        let err = parse(Path::new("c.yaml"), text, &env).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "c.yaml:5:7: outbound.allow: `10.0.0.0/33` is not a network (like 10.0.0.0/8 or fd00::/8)",
                "c.yaml:6:7: outbound.allow: `http://x` is a URL: list its host or address alone",
                "c.yaml:7:7: outbound.allow: `10.1.0.0/8` is listed twice",
            ]
        );
        let ok = parse(
            Path::new("c.yaml"),
            "outbound: { allow: [127.0.0.1, hooks.internal] }\n",
            &env,
        )
        .unwrap();
        assert_eq!(ok.outbound_allow.len(), 2);
    }

    #[test]
    fn cluster_leases_default_to_30s_renewed_every_10s_and_renewal_must_fit_twice() {
        let c = parse(Path::new("c.yaml"), "sources: {}\n", &env).unwrap();
        assert_eq!(c.cluster.lease, Duration::from_secs(30));
        assert_eq!(c.cluster.renew, Duration::from_secs(10));
        let text = "sources: {}\ncluster: { lease: 6s }\n";
        let c = parse(Path::new("c.yaml"), text, &env).unwrap();
        assert_eq!(c.cluster.renew, Duration::from_secs(2));
        let text = "sources: {}\ncluster: { lease: 10s, renew: 6s }\n";
        let err = parse(Path::new("c.yaml"), text, &env).unwrap_err();
        let msg = err.0[0].to_string();
        assert!(
            msg.starts_with(
                "c.yaml:2:31: cluster.renew (6s) must be at most half of cluster.lease (10s)"
            ),
            "{msg}"
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

    /// A receiver's kind is its one key; each kind checks its own fields where they are
    /// written; and two receivers differing only in a secret are different (a reload that
    /// changes a webhook's secret path replaces the receiver), though neither prints it.
    #[test]
    fn a_receiver_is_exactly_one_kind_by_its_key() {
        let text = r#"
alerting:
  receivers:
    two: { webhook: { url: "http://a.example/x" }, email: { smtp: "smtp://m.example", to: [a@example.com] } }
    none: { pager: { number: 1 } }
    bad: { alertmanager: { url: "ftp://am.example", resend_interval: soon } }
"#;
        let err = parse(Path::new("c.yaml"), text, &env).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "c.yaml:5:13: unknown field `pager`, expected one of email, webhook, alertmanager",
                "c.yaml:4:5: alerting.receivers.two: give exactly one of email, webhook or alertmanager",
                "c.yaml:5:5: alerting.receivers.none: give exactly one of email, webhook or alertmanager",
                "c.yaml:6:33: alerting.receivers.bad.url: `ftp://am.example` is not an http:// or https:// URL",
                "c.yaml:6:70: alerting.receivers.bad.resend_interval: invalid duration `soon`; write it like 30s or 5m",
            ]
        );
        let hooks = |path: &str| {
            let text = format!(
                "alerting:\n  receivers:\n    h: {{ webhook: {{ url: \"https://hooks.example/{path}\", format: slack }} }}\n    am: {{ alertmanager: {{ url: \"http://am.example\" }} }}\n  routes: [{{ receivers: [h, am] }}]\n"
            );
            parse(Path::new("c.yaml"), &text, &env).unwrap().alerting
        };
        let (a, b) = (hooks("T0/SECRET1"), hooks("T0/SECRET2"));
        assert_eq!(
            format!("{:?}", a.receivers[0]),
            format!("{:?}", b.receivers[0])
        );
        assert!(!format!("{a:?}").contains("SECRET"));
        assert_ne!(a.receivers[0], b.receivers[0]);
        assert_eq!(a.receivers[1], b.receivers[1]);
        assert_eq!(a.receivers[0].kind.kind(), "webhook");
        assert_eq!(a.receivers[0].kind.resend_interval(), None);
        assert_eq!(
            a.receivers[1].kind.resend_interval(),
            Some(crate::receivers::DEFAULT_RESEND_INTERVAL)
        );
    }
}
