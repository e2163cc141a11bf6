//! Test harness: a fresh database per test on real PostgreSQL, MariaDB and SQLite servers,
//! dropped when the test ends, and a working directory with a config and rules.
//!
//! Servers default to the local ones (`postgres://postgres@127.0.0.1:5432`,
//! `mysql://root@127.0.0.1:3306`); `INVARIANTD_TEST_PG` and `INVARIANTD_TEST_MYSQL` override.
//! Sources connect as `CHECKER`, a role that may only read; tables are made as the administrator.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use invariantd::config::SourceKind;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, Row as _};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn pg_server() -> String {
    std::env::var("INVARIANTD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn mysql_server() -> String {
    std::env::var("INVARIANTD_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The role sources connect as in the tests: it may read, and nothing more. The servers must
/// let it in without a password (trust on loopback, as on the CI machines).
pub const CHECKER: &str = "invariantd_checker";

/// A server URL with the checker role as its user (`scheme://user[:password]@host/db`).
fn as_checker(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{CHECKER}@{host}")
}

/// A running `invariantd run`: used as its `Child`, and killed when dropped if it is still
/// running — so a test that fails half-way leaves no daemon behind.
pub struct Daemon(Option<std::process::Child>);

impl Daemon {
    pub fn new(child: std::process::Child) -> Daemon {
        Daemon(Some(child))
    }

    /// The process, no longer killed on drop (to wait for its output).
    pub fn into_child(mut self) -> std::process::Child {
        self.0.take().expect("a daemon has its process until taken")
    }
}

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0
            .as_ref()
            .expect("a daemon has its process until taken")
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0
            .as_mut()
            .expect("a daemon has its process until taken")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A database that exists for one test.
pub struct TestDb {
    pub kind: SourceKind,
    pub name: String,
    /// The URL a config uses to reach it: as the checker role, which may only read (see
    /// README: Least privilege). SQLite has no roles.
    pub url: String,
    /// The URL of the server's administrator, to create and fill tables.
    pub admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

fn unique_name(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "invariantd_it_{}_{}_{n}",
        label.to_lowercase(),
        std::process::id()
    )
}

impl TestDb {
    pub async fn new(kind: SourceKind, label: &str) -> TestDb {
        let name = unique_name(label);
        match kind {
            SourceKind::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server()))
                    .await
                    .expect("PostgreSQL is running (see README: Tests)");
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap();
                // The grants the README gives a checker role; tables come later, so the
                // default privileges give it SELECT on them.
                admin
                    .execute(AssertSqlSafe(format!(
                        "DO $$ BEGIN CREATE ROLE {CHECKER} LOGIN; \
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                    )))
                    .await
                    .unwrap();
                let admin_url = format!("{}/{name}", pg_server());
                let mut db = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                for grant in [
                    format!("GRANT CONNECT ON DATABASE {name} TO {CHECKER}"),
                    format!("GRANT USAGE ON SCHEMA public TO {CHECKER}"),
                    format!(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {CHECKER}"
                    ),
                ] {
                    db.execute(AssertSqlSafe(grant)).await.unwrap();
                }
                db.close().await.unwrap();
                TestDb {
                    kind,
                    url: as_checker(&admin_url),
                    admin_url,
                    name,
                    _dir: None,
                }
            }
            SourceKind::MySql => {
                let mut admin = sqlx::MySqlConnection::connect(&mysql_server())
                    .await
                    .expect("MariaDB is running (see README: Tests)");
                admin
                    .execute(AssertSqlSafe(format!(
                        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
                    )))
                    .await
                    .unwrap();
                for host in ["%", "localhost"] {
                    for statement in [
                        format!("CREATE USER IF NOT EXISTS '{CHECKER}'@'{host}'"),
                        format!("GRANT SELECT ON {name}.* TO '{CHECKER}'@'{host}'"),
                    ] {
                        admin.execute(AssertSqlSafe(statement)).await.unwrap();
                    }
                }
                let admin_url = format!("{}/{name}", mysql_server());
                TestDb {
                    kind,
                    url: as_checker(&admin_url),
                    admin_url,
                    name,
                    _dir: None,
                }
            }
            SourceKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(format!("{name}.db"));
                let url = format!("sqlite://{}", path.display());
                let conn = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                    .unwrap()
                    .create_if_missing(true)
                    .connect()
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                TestDb {
                    kind,
                    admin_url: url.clone(),
                    url,
                    name,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// Runs statements one by one.
    pub async fn exec(&self, statements: &[String]) {
        match self.kind {
            SourceKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
                for s in statements {
                    c.execute(AssertSqlSafe(s.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                c.close().await.unwrap();
            }
            SourceKind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.admin_url)
                    .await
                    .unwrap();
                for s in statements {
                    c.execute(AssertSqlSafe(s.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                c.close().await.unwrap();
            }
            SourceKind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                for s in statements {
                    c.execute(AssertSqlSafe(s.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                c.close().await.unwrap();
            }
        }
    }

    /// The first column of the first row of a query, as an integer (`SELECT COUNT(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_string());
        match self.kind {
            SourceKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
            SourceKind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.admin_url)
                    .await
                    .unwrap();
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
            SourceKind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            }
        }
    }

    pub async fn exec_str(&self, statements: &[&str]) {
        let owned: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
        self.exec(&owned).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (kind, name) = (self.kind, self.name.clone());
        if kind == SourceKind::Sqlite {
            return; // the temporary directory goes with it
        }
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                match kind {
                    SourceKind::Postgres => {
                        if let Ok(mut c) =
                            sqlx::PgConnection::connect(&format!("{}/postgres", pg_server())).await
                        {
                            let _ = c
                                .execute(AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                        }
                    }
                    _ => {
                        if let Ok(mut c) = sqlx::MySqlConnection::connect(&mysql_server()).await {
                            let _ = c
                                .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                                .await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

/// A loopback port free now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory holding `invariantd.yaml` and a `rules/` directory.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// `sources` are (name, url); `rules` is the text of `rules/rules.yaml`, or `None` to use
    /// the project's shipped rule pack.
    pub fn new(sources: &[(&str, &str)], rules: Option<&str>) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("sources:\n");
        for (name, url) in sources {
            config.push_str(&format!(
                "  {name}: {{ url: \"{url}\", connect_timeout: 2s, statement_timeout: 10s }}\n"
            ));
        }
        match rules {
            Some(text) => {
                std::fs::create_dir(dir.path().join("rules")).unwrap();
                std::fs::write(dir.path().join("rules/rules.yaml"), text).unwrap();
                config.push_str("rules: [rules/]\n");
            }
            None => config.push_str(&format!("rules: [\"{}\"]\n", shipped_rules().display())),
        }
        std::fs::write(dir.path().join("invariantd.yaml"), config).unwrap();
        Workdir { dir }
    }

    /// A directory with exactly this config and `rules/rules.yaml`.
    pub fn raw(config: &str, rules: &str) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/rules.yaml"), rules).unwrap();
        std::fs::write(dir.path().join("invariantd.yaml"), config).unwrap();
        Workdir { dir }
    }

    /// The example shop on SQLite (one order broken in every way, `healthy` healthy orders of
    /// each kind around them), its databases next to the config, with the shipped rules.
    pub async fn sqlite_shop(healthy: usize) -> (Workdir, invariantd::demo::shop::Shop) {
        let shop = invariantd::demo::shop::scenario(chrono::Utc::now(), healthy);
        let dir = tempfile::tempdir().unwrap();
        invariantd::demo::create_sqlite_shop(&shop, dir.path())
            .await
            .unwrap();
        // Relative SQLite paths are relative to the config file.
        let mut config = String::from("sources:\n");
        for service in invariantd::demo::shop::SERVICES {
            config.push_str(&format!(
                "  {service}: {{ url: \"sqlite://{service}.db\" }}\n"
            ));
        }
        config.push_str(&format!("rules: [\"{}\"]\n", shipped_rules().display()));
        std::fs::write(dir.path().join("invariantd.yaml"), config).unwrap();
        (Workdir { dir }, shop)
    }

    /// Starts `invariantd run` here, serving HTTP on a free port, with `extra` appended to the
    /// config; returns once `/readyz` answers 200.
    pub async fn spawn_daemon(&self, extra: &str, stderr: std::process::Stdio) -> (Daemon, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(
            self.config(),
            format!("{config}http: {{ listen: \"127.0.0.1:{port}\" }}\n{extra}"),
        )
        .unwrap();
        let child = Daemon::new(
            std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
                .args(["run", "--log-level", "info"])
                .current_dir(self.path())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || http(port, "GET", "/readyz").0 != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        (child, port)
    }

    /// Starts `invariantd run` again on the config as it is (after `spawn_daemon`, which set
    /// its port); returns once `/readyz` answers 200.
    pub async fn respawn(&self, port: u16) -> Daemon {
        let child = Daemon::new(
            std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
                .args(["run", "--log-level", "info"])
                .current_dir(self.path())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually(
            std::time::Duration::from_secs(20),
            "the daemon never became ready",
            || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && http(port, "GET", "/readyz").0 == 200
            },
        )
        .await;
        child
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("invariantd.yaml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Loads the config and rules, panicking with every diagnostic if they are invalid.
    pub fn load(&self) -> (invariantd::config::Config, Vec<invariantd::rules::Rule>) {
        invariantd::context::load(&self.config()).unwrap_or_else(|d| panic!("{d}"))
    }

    /// Runs every rule once; results in rule order, keyed by rule name.
    pub async fn run(&self) -> Vec<invariantd::verdict::RuleRun> {
        let (config, rules) = self.load();
        let sources = invariantd::sources::Sources::new(&config.sources, config.secrets.clone());
        invariantd::engine::run_rules(&rules, &sources, 4).await
    }

    /// Runs the `invariantd` binary in this directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_env(args, &[])
    }

    /// The CLI with these environment variables set.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_invariantd"))
            .args(args)
            .current_dir(self.path())
            .env_remove("INVARIANTD_CONFIG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

pub fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/rules")
}

pub fn run_of<'a>(
    runs: &'a [invariantd::verdict::RuleRun],
    rule: &str,
) -> &'a invariantd::verdict::RuleRun {
    runs.iter()
        .find(|r| r.rule == rule)
        .unwrap_or_else(|| panic!("no run of {rule}"))
}

/// A run's error as (kind, message).
pub fn error_of(run: &invariantd::verdict::RuleRun) -> Option<(&'static str, &str)> {
    run.error
        .as_ref()
        .map(|e| (e.kind.as_str(), e.message.as_str()))
}

/// The keys of a run's violations, as text.
pub fn keys(run: &invariantd::verdict::RuleRun) -> Vec<String> {
    run.violations.iter().map(|v| v.key.to_string()).collect()
}

/// A plain HTTP/1.1 request to a daemon on loopback: (status, body).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    http_as(port, method, path, None)
}

/// The tokens file every test daemon that needs one uses: private, as the daemon demands.
/// `ops` is an admin.
pub const TOKEN: &str = "tests-token-0123456789abcdef";
/// A second approver's token (`lead`, role `approve`), for four eyes.
pub const LEAD_TOKEN: &str = "tests-lead-token-fedcba9876543210";
/// A token that may only read (`grafana`, role `read`).
pub const READ_TOKEN: &str = "tests-read-token-5555aaaa5555aaaa";

/// The config of alerts sent to one webhook on loopback: receiver `hook` at
/// `http://127.0.0.1:PORT/PATH` (allowed outbound), every group routed to it, and `settings`
/// (`for: 0s`, …) under `alerting:`, `evaluation_interval: 1s` unless one of them gives it.
pub fn webhook_alerting(port: u16, path: &str, settings: &[&str]) -> String {
    let mut out = String::from("outbound: { allow: [127.0.0.1] }\nalerting:\n");
    for setting in settings {
        out.push_str(&format!("  {setting}\n"));
    }
    if !settings
        .iter()
        .any(|s| s.starts_with("evaluation_interval:"))
    {
        out.push_str("  evaluation_interval: 1s\n");
    }
    out.push_str(&format!(
        "  receivers:\n    hook: {{ webhook: {{ url: \"http://127.0.0.1:{port}/{path}\" }} }}\n  routes:\n    - {{ receivers: [hook] }}\n"
    ));
    out
}

/// Writes `tokens` (private) into `dir` and returns the config line that names it.
pub fn tokens_file(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!(
            "# test approvers\nops:admin:{TOKEN}\nlead:approve:{LEAD_TOKEN}\ngrafana:read:{READ_TOKEN}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    "auth: { tokens_file: tokens }\n".to_string()
}

/// As `http`, with `Authorization: Bearer <token>` when a token is given.
pub fn http_as(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A `POST` of a JSON `body`, with `Authorization: Bearer <token>` when a token is given:
/// status, and the answer (`null` when it is not JSON).
pub fn http_post(
    port: u16,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let answer = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (status, answer)
}

/// Sends SIGTERM to a daemon and waits for it to exit, failing the test if it takes longer
/// than `limit`.
pub async fn terminate_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    kill(child, "TERM");
    let stopped_at = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            stopped_at.elapsed() < limit,
            "the daemon did not stop within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a child process.
pub fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Lints a scrape with `promtool check metrics` (Debian's `prometheus` package; .ci/run
/// installs it), failing the test with what promtool says.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP proxy on loopback that a test can cut (every connection closed, new ones refused)
/// and restore: a database that goes away and comes back, without touching the real server.
pub struct Proxy {
    pub port: u16,
    generation: tokio::sync::watch::Sender<(u64, bool)>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (generation, watch) = tokio::sync::watch::channel((0u64, true));
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (born, up) = *watch.borrow();
                if !up {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let cut = async {
                        while watch.borrow().0 == born {
                            if watch.changed().await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Proxy { port, generation }
    }

    /// A proxy in front of the PostgreSQL server of `db`, and `db`'s URL through it.
    pub async fn in_front_of(db: &TestDb) -> (Proxy, String) {
        let address = pg_server()
            .rsplit_once('@')
            .map(|(_, a)| a.to_string())
            .unwrap();
        let proxy = Proxy::start(address.clone()).await;
        let url = db
            .url
            .replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1);
        (proxy, url)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.generation.send_modify(|(n, up)| {
            *n += 1;
            *up = false;
        });
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.generation.send_modify(|(_, up)| *up = true);
    }
}

/// A helper server from `tests/support` (a Python script that prints its port), killed when
/// dropped.
pub struct Helper {
    pub port: u16,
    child: std::process::Child,
}

impl Helper {
    pub fn start(script: &str, args: &[&str]) -> Helper {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let mut child = std::process::Command::new("python3")
            .arg(&path)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("{script} printed no port (are its Python packages installed? .ci/run installs them)")
        });
        Helper { port, child }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, with no
/// clustering and a receiver that sends nothing: the tests read its API. Killed when dropped.
pub struct Alertmanager {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub async fn start() -> Alertmanager {
        Alertmanager::with_config(
            "route: { receiver: none, group_wait: 0s }\nreceivers: [{ name: none }]\n",
        )
        .await
    }

    /// An Alertmanager with this configuration (routes, receivers, inhibitions).
    pub async fn with_config(yaml: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("am.yml"), yaml).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package; .ci/run installs it)");
        let am = Alertmanager {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || http(port, "GET", "/-/ready").0 != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "Alertmanager never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        am
    }

    /// The alerts Alertmanager holds now (active, silenced or inhibited; not resolved ones).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = http(self.port, "GET", "/api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus (Debian's `prometheus`) on a free loopback port, scraping `targets`
/// every second under the job name `job`, evaluating `rule_files` every second and sending
/// alerts to `alertmanager` when given. Killed when dropped.
pub struct Prometheus {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(
        job: &str,
        targets: &[u16],
        rule_files: &[&Path],
        alertmanager: Option<u16>,
    ) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = targets
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("\"{}\"", f.display()))
            .collect();
        let alerting = alertmanager.map_or(String::new(), |am| {
            format!("alerting:\n  alertmanagers:\n    - static_configs: [{{ targets: [\"127.0.0.1:{am}\"] }}]\n")
        });
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{}]\n{alerting}scrape_configs:\n  - job_name: {job}\n    static_configs: [{{ targets: [{}] }}]\n",
                rules.join(", "),
                targets.join(", ")
            ),
        )
        .unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; .ci/run installs it)");
        let prometheus = Prometheus {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || http(port, "GET", "/-/ready").0 != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// The result of an instant query (`data.result`).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http(self.port, "GET", &format!("/api/v1/query?query={encoded}"));
        assert_eq!(status, 200, "{expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON lines a helper has written so far.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits up to `limit` for `check` to hold, failing with `what`.
pub async fn eventually(limit: std::time::Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, made with openssl.
pub fn private_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=invariantd test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A MariaDB server of its own, with TLS (`private_ca`'s certificate for 127.0.0.1), on a free
/// loopback port: the shared test server has no TLS. Its root has no password over the Unix
/// socket, where `sql` runs statements. Killed when dropped.
pub struct TlsMariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

impl TlsMariaDb {
    pub async fn start() -> TlsMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        private_ca(path);
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let user = format!("--user={}", user.trim());
        let data = format!("--datadir={}", path.join("data").display());
        let install = std::process::Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &data,
                &user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (MariaDB's server package)");
        assert!(
            install.status.success(),
            "{}",
            String::from_utf8_lossy(&install.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let at = |name: &str| path.join(name).display().to_string();
        let child = std::process::Command::new("mariadbd")
            .args([
                "--no-defaults".to_string(),
                data,
                user,
                format!("--port={port}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--socket={}", at("sock")),
                format!("--pid-file={}", at("pid")),
                format!("--log-error={}", at("error.log")),
                format!("--ssl-cert={}", at("server.pem")),
                format!("--ssl-key={}", at("server.key")),
                format!("--ssl-ca={}", at("ca.pem")),
                "--innodb-buffer-pool-size=16M".to_string(),
                "--skip-log-bin".to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd");
        let server = TlsMariaDb { port, dir, child };
        let up = std::time::Instant::now();
        while !server.try_sql("SELECT 1") {
            assert!(
                up.elapsed() < std::time::Duration::from_secs(30),
                "mariadbd did not start: {}",
                std::fs::read_to_string(server.dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        server
    }

    fn try_sql(&self, sql: &str) -> bool {
        std::process::Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-e", sql])
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs statements as root.
    pub fn sql(&self, sql: &str) {
        assert!(self.try_sql(sql), "{sql}");
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server of its own on loopback, with TLS (the certificate `private_ca` makes)
/// and logins by password: the role `scram` by SCRAM-SHA-256, `md5` by MD5, `plain` by
/// cleartext password, each with the password `secret` and allowed to read `t`; `postgres`
/// is trusted. Stopped when dropped.
pub struct TlsPostgres {
    pub port: u16,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

impl TlsPostgres {
    pub async fn start() -> TlsPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server package (/usr/lib/postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        private_ca(&path);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = TlsPostgres { port, dir, bin };
        // PostgreSQL will not run as root: as the `postgres` user then.
        if as_root() {
            server.run("chown", &["-R", "postgres:", &server.at("")]);
        }
        server.run("chmod", &["0600", &server.at("server.key")]);
        server.pg(
            "initdb",
            &[
                "-D",
                &server.at("data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.pem'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\nshared_buffers = 16MB\n",
            dir = server.at("")
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path.join("data/postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        std::fs::write(
            path.join("data/pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all scram 127.0.0.1/32 scram-sha-256\n\
             host all md5 127.0.0.1/32 md5\n\
             host all plain 127.0.0.1/32 password\n",
        )
        .unwrap();
        server.pg(
            "pg_ctl",
            &[
                "-D",
                &server.at("data"),
                "-l",
                &server.at("log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        server.sql(
            "CREATE ROLE scram LOGIN PASSWORD 'secret'; \
             SET password_encryption = 'md5'; CREATE ROLE md5 LOGIN PASSWORD 'secret'; \
             CREATE ROLE plain LOGIN PASSWORD 'secret'; \
             CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2), (3); \
             GRANT SELECT ON t TO scram, md5, plain",
        );
        server
    }

    fn at(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One of the server's programs, as the user that owns the data.
    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program).display().to_string();
        if as_root() {
            let mut all = vec!["-u", "postgres", "--", &program];
            all.extend(args);
            self.run("runuser", &all);
        } else {
            self.run(&program, args);
        }
    }

    /// Runs statements as `postgres`, over the Unix socket.
    pub fn sql(&self, sql: &str) {
        let port = self.port.to_string();
        let host = self.at("");
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        );
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl").display().to_string();
        let data = self.at("data");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let mut command = if as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            std::process::Command::new(&program)
        };
        let _ = command.args(args).output();
    }
}

/// Whether the tests run as root.
fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// How many of invariantd's queries containing `marker` the server is running now.
pub async fn running(db: &TestDb, marker: &str) -> i64 {
    match db.kind {
        SourceKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND application_name = 'invariantd' AND strpos(query, $1) > 0",
            )
            .bind(marker)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
        }
        SourceKind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            sqlx::query(
                "SELECT count(*) FROM information_schema.processlist WHERE command IN ('Query', 'Execute') \
                 AND id <> CONNECTION_ID() AND db = DATABASE() AND LOCATE(?, info) > 0",
            )
            .bind(marker)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0)
        }
        SourceKind::Sqlite => unreachable!("SQLite has no server to ask"),
    }
}
