//! Sources: the databases rules read, one lazily connected pool each, and the reader that
//! streams one dataset out of one of them in key order.
//!
//! A dataset is read in two steps on one connection, inside one read-only transaction with
//! the source's statement timeout:
//! 1. describe: the query is prepared (not run) to learn its columns and the type of its key;
//! 2. stream: once every dataset of the rule is described, the engine picks one key order for
//!    all of them (integers when every key column is an integer, byte-wise text otherwise) and
//!    each reader runs its query with that `ORDER BY` pushed into the database, sending typed
//!    rows in small batches through a bounded channel. Memory stays flat whatever the table size.
//!
//! A reader whose run goes away, or whose deadline passes, stops its query on the server before
//! it lets the connection go (`interrupted`), and holds its reserved connection until it ends;
//! `Sources::settle` waits for readers at shutdown.
//!
//! Repairs write through `write.rs`: one statement, bound parameters, its own transaction.
//!
//! Each database differs only in how it begins a read-only transaction, names its types, sorts
//! byte-wise, decodes values and stops a query: those live in `postgres.rs`, `mysql.rs` and
//! `sqlite.rs`.

mod mysql;
mod mysqltls;
mod mysqlwire;
mod pgcopy;
mod postgres;
mod sqlite;
mod write;

pub use write::WriteError;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::{ConnectOptions, SourceConfig, SourceKind};
use crate::expr::types::Types;
use crate::value::{Key, Row, Secrets, Value};
use crate::verdict::{ErrorKind, RunError};

/// Rows per batch sent from a reader to the merge.
const BATCH_ROWS: usize = 1024;
/// Batches in flight per dataset: bounds memory at about `BATCH_ROWS * CHANNEL_BATCHES` rows.
const CHANNEL_BATCHES: usize = 4;

enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool, mysql::WireSweeps),
    Sqlite(sqlx::SqlitePool),
}

/// A configured database with its connection pool.
pub struct Source {
    pub config: SourceConfig,
    pool: Pool,
    /// One permit per pooled connection. A rule run takes the permits for all its datasets on
    /// this source before it starts reading, so waiting for a busy pool is never mistaken for
    /// a source that cannot be reached (the pool's own timeout then only measures connecting).
    permits: Arc<tokio::sync::Semaphore>,
    /// The reader tasks on this source, so that a shutdown can wait for their queries to be
    /// stopped on the server (see `Sources::settle`).
    readers: TaskTracker,
    /// `max_rows_per_second`, shared by every read of this source.
    throttle: Option<Throttle>,
}

/// A rows-per-second budget shared by the readers of one source: each batch books its rows'
/// share of time after the bookings before it, and waits for its turn. A source that was
/// idle may take one second's worth at once.
#[derive(Debug)]
pub(crate) struct Throttle {
    rows_per_second: u64,
    next: std::sync::Mutex<Instant>,
}

impl Throttle {
    fn new(rows_per_second: u64) -> Throttle {
        Throttle {
            rows_per_second,
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// When a batch of `rows` may be sent.
    fn book(&self, rows: usize) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().expect("throttle lock");
        let banked = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = (*next).max(banked);
        *next = start + Duration::from_secs_f64(rows as f64 / self.rows_per_second as f64);
        start.max(now)
    }
}

impl Source {
    /// Creates the pool without connecting: a source that is down makes its rules `unknown`
    /// when they run, and nothing else.
    pub fn new(config: SourceConfig) -> Source {
        use sqlx::ConnectOptions as _;
        // sqlx logs every statement's text, and a rule's query may hold what `${VAR}`
        // expanded to (a connection string, a password): invariantd logs its runs itself, so
        // the driver's statement logs are off. (A sweep also takes seconds by design, which
        // would make its "slow statement" warnings fire on every run.)
        let pool = match &config.options {
            ConnectOptions::Postgres(o) => Pool::Postgres(
                pool_options(&config).connect_lazy_with(
                    o.clone()
                        .application_name("invariantd")
                        .disable_statement_logging(),
                ),
            ),
            ConnectOptions::MySql(o, _) => Pool::MySql(
                pool_options(&config).connect_lazy_with(o.clone().disable_statement_logging()),
                mysql::WireSweeps::default(),
            ),
            // Checks only read: SQLite sources are opened read-only, which also means a
            // missing database file is an error rather than a new empty database. A kept
            // connection would keep reading a file that was since replaced (`mv new.db
            // orders.db`) or deleted, so connections are closed after each use: every run
            // opens the file as it is now, which for SQLite costs microseconds.
            ConnectOptions::Sqlite(o) => Pool::Sqlite(
                pool_options(&config)
                    .after_release(|_, _| Box::pin(async { Ok(false) }))
                    .connect_lazy_with(
                        o.clone()
                            .read_only(true)
                            .create_if_missing(false)
                            .disable_statement_logging(),
                    ),
            ),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize));
        Source {
            throttle: config.max_rows_per_second.map(Throttle::new),
            config,
            pool,
            permits,
            readers: TaskTracker::new(),
        }
    }

    /// Waits until `n` connections of this source are free for one run, and holds them until
    /// the returned permit is dropped.
    pub async fn reserve(&self, n: u32) -> Result<tokio::sync::OwnedSemaphorePermit, RunError> {
        if n > self.config.max_connections {
            return Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "the rule reads {n} datasets from source `{}` at once, but its max_connections is {}",
                    self.config.name, self.config.max_connections
                ),
            ));
        }
        self.permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| RunError::new(ErrorKind::Cancelled, "the source is shutting down"))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the source answers — one connection and one query, failing fast like a read —
    /// and whether its role could do more than read: `Some(reason)` when it is a PostgreSQL
    /// superuser, or has MySQL's SUPER or FILE privilege (a "read-only" check could then write
    /// files on the server, e.g. with `lo_export`).
    pub async fn probe(&self) -> Result<Option<String>, RunError> {
        let _permit = self.reserve(1).await?;
        let timeout = self.config.connect_timeout;
        let failed = |e| query_error(e, "the probe failed", "");
        Ok(match (&self.pool, &self.config.options) {
            (Pool::Postgres(pool), ConnectOptions::Postgres(o)) => {
                let mut conn =
                    acquire_fast::<sqlx::Postgres, _>(pool.acquire(), o, timeout).await?;
                let superuser: bool = sqlx::query_scalar(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                )
                .fetch_optional(&mut *conn)
                .await
                .map_err(failed)?
                .unwrap_or(false);
                superuser.then(|| "its role is a PostgreSQL superuser".to_string())
            }
            (Pool::MySql(pool, _), ConnectOptions::MySql(o, _)) => {
                let mut conn = acquire_fast::<sqlx::MySql, _>(pool.acquire(), o, timeout).await?;
                let grants: Vec<String> = sqlx::query_scalar("SHOW GRANTS")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(failed)?;
                mysql_power(&grants)
            }
            (Pool::Sqlite(pool), _) => {
                let mut conn = pool.acquire().await.map_err(|e| {
                    RunError::new(
                        ErrorKind::SourceUnreachable,
                        format!("cannot open the database: {e}"),
                    )
                })?;
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map_err(failed)?;
                None
            }
            _ => unreachable!("a source's pool matches its options"),
        })
    }

    pub fn kind(&self) -> SourceKind {
        self.config.kind
    }
}

fn pool_options<DB: sqlx::Database>(config: &SourceConfig) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(config.connect_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
}

/// Makes ring the process's default TLS provider. sqlx builds its certificate verifiers
/// (MySQL `verify_ca`/`verify_identity`, PostgreSQL `verify-ca`/`verify-full`) with the
/// default provider, and with both ring (sqlx) and aws-lc (reqwest, lettre) in the build
/// there is none: the first verified connection would panic. ring is the one sqlx's TLS runs
/// on. Called at start and by `Sources::new`; a second call finds it installed.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// All configured sources by name, and the secrets no run may publish.
#[derive(Clone, Default)]
pub struct Sources {
    sources: HashMap<String, Arc<Source>>,
    secrets: Arc<Secrets>,
}

impl Sources {
    pub fn new(configs: &[SourceConfig], secrets: Secrets) -> Sources {
        install_tls_provider();
        Sources {
            sources: configs
                .iter()
                .map(|c| (c.name.clone(), Arc::new(Source::new(c.clone()))))
                .collect(),
            secrets: Arc::new(secrets),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.get(name)
    }

    /// What runs on these sources must never show.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Waits, at most `limit`, until every reader has ended, each having stopped its query on
    /// the server if its run was abandoned. False when some were still going at the limit.
    pub async fn settle(&self, limit: Duration) -> bool {
        let all = futures_util::future::join_all(self.sources.values().map(|s| {
            s.readers.close();
            s.readers.wait()
        }));
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Every source, in name order.
    pub fn all(&self) -> Vec<&Arc<Source>> {
        let mut all: Vec<&Arc<Source>> = self.sources.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

/// How a key column can take part in the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Text,
    /// A type that cannot be a join key.
    Unsupported,
}

/// The order every dataset of one rule run is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Int,
    Text,
}

/// What describing a dataset's query found.
#[derive(Debug, Clone)]
pub struct Description {
    pub columns: Vec<String>,
    /// Database type names, for messages.
    pub types: Vec<String>,
    /// The expression types each column's values can have (for the assertion's type check).
    pub value_types: Vec<Types>,
    pub key_index: Option<usize>,
    pub key_kind: KeyKind,
}

/// Messages from a reader to the engine.
#[derive(Debug)]
pub enum ReaderMsg {
    Described(Description),
    Rows(Vec<Row>),
    /// Every row was sent. Rows whose key was NULL were left out (they cannot be joined) and
    /// are counted here. A channel that closes without `Done` means the reader died: the
    /// engine must not take that for the end of the data.
    Done {
        null_keys: u64,
    },
    Failed(RunError),
}

/// Whether MySQL/MariaDB grants give more than reading: global ALL, SUPER or FILE.
fn mysql_power(grants: &[String]) -> Option<String> {
    grants.iter().find_map(|g| {
        let upper = g.to_ascii_uppercase();
        let global = upper.contains(" ON *.* ");
        let privileges = upper.split(" ON ").next().unwrap_or("");
        let power = if global && privileges.contains("ALL PRIVILEGES") {
            "ALL PRIVILEGES on *.*"
        } else if privileges.contains("SUPER") {
            "SUPER"
        } else if global && privileges.contains("FILE") {
            "FILE"
        } else {
            return None;
        };
        Some(format!("its user has the MySQL privilege {power}"))
    })
}

/// A database error as a `RunError`, in the database's own words: a statement cancelled by
/// the source's own timeout (PostgreSQL 57014, MariaDB 1969, MySQL 3024) is a `timeout`,
/// anything else `query_failed`. A position PostgreSQL reports inside the wrapped query is
/// translated into a line and column of the rule's query, which is all the user can see.
pub(crate) fn query_error(e: sqlx::Error, what: &str, query: &str) -> RunError {
    let Some(db) = e.as_database_error() else {
        return RunError::new(ErrorKind::QueryFailed, format!("{what}: {e}"));
    };
    let code = db.code();
    // SQLite's SQLITE_INTERRUPT (9) comes from the reader's own timeout (see `sqlite.rs`).
    let sqlite_interrupt = db
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some_and(|_| code.as_deref() == Some("9"));
    if sqlite_interrupt {
        return statement_timeout(db.message());
    }
    let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else {
        return db_error(what, code.as_deref(), db.message());
    };
    if is_timeout(code.as_deref(), db.message()) {
        return statement_timeout(db.message());
    }
    let mut message = format!("{what}: {}", db.message());
    if let Some(sqlx::postgres::PgErrorPosition::Original(at)) = pg.position()
        && let Some((line, column)) = position_in_query(query, at)
    {
        message.push_str(&format!(" (line {line}, column {column} of the query)"));
    }
    if let Some(hint) = pg.hint() {
        message.push_str(&format!("; hint: {hint}"));
    }
    RunError::new(ErrorKind::QueryFailed, message)
}

/// A database's error by its code (SQLSTATE) and message, as `query_error` words it.
pub(crate) fn db_error(what: &str, code: Option<&str>, message: &str) -> RunError {
    if is_timeout(code, message) {
        return statement_timeout(message);
    }
    let mut out = format!("{what}: {message}");
    if let Some(code) = code {
        out.push_str(&format!(" ({code})"));
    }
    RunError::new(ErrorKind::QueryFailed, out)
}

fn is_timeout(code: Option<&str>, message: &str) -> bool {
    matches!(code, Some("57014" | "1969" | "3024" | "70100")) && !message.contains("user request")
}

fn statement_timeout(message: &str) -> RunError {
    RunError::new(
        ErrorKind::Timeout,
        format!("statement timeout: the query did not finish in time ({message})"),
    )
}

/// The 1-based (line, column) in `query` of the 1-based character position `at` in the
/// wrapped query (see `wrap`), when it falls inside the user's text.
fn position_in_query(query: &str, at: usize) -> Option<(usize, usize)> {
    let prefix = wrap("")
        .split('\n')
        .next()
        .map_or(0, |p| p.chars().count() + 1);
    let offset = at.checked_sub(1)?.checked_sub(prefix)?;
    let before: String = query.chars().take(offset).collect();
    if before.chars().count() < offset {
        return None;
    }
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// The engine's end of a running reader.
pub struct Reader {
    pub messages: mpsc::Receiver<ReaderMsg>,
    /// Send the run's key order once every dataset is described; drop to cancel.
    pub mode: oneshot::Sender<KeyMode>,
}

/// What a reader needs to know about its dataset.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub query: String,
    pub key: String,
    /// When the whole read must be over: the statement timeout, enforced here too for
    /// databases without one of their own (SQLite).
    pub deadline: Instant,
    /// Read only these keys (`WHERE key IN (…)` pushed into the query, each key a bound
    /// parameter); `None` reads every key.
    pub keys: Option<Vec<String>>,
    /// Read only the rows whose `updated_at` column is at or after this instant (an
    /// incremental run's first step: which keys changed).
    pub changed_since: Option<ChangedSince>,
    /// The snapshot this read shares with the rule's other datasets on the same source.
    pub snapshot: Option<SharedSnapshot>,
}

/// One snapshot for the datasets of a rule run on one PostgreSQL source: the first reader
/// exports its transaction's snapshot (`pg_export_snapshot()`), the others import it (`SET
/// TRANSACTION SNAPSHOT`) before their first query, so every dataset sees the same committed
/// data. The exporter's transaction stays open until every reader has described its query,
/// which is after every import.
#[derive(Debug, Clone)]
pub struct SharedSnapshot {
    pub exporter: bool,
    /// `Some(Some(id))` once exported, `Some(None)` when the exporter could not (each reader
    /// then takes its own snapshot).
    pub id: Arc<tokio::sync::watch::Sender<Option<Option<String>>>>,
}

impl SharedSnapshot {
    /// Snapshots for `n` readers, the first the exporter.
    pub fn group(n: usize) -> Vec<SharedSnapshot> {
        let id = Arc::new(tokio::sync::watch::Sender::new(None));
        (0..n)
            .map(|i| SharedSnapshot {
                exporter: i == 0,
                id: id.clone(),
            })
            .collect()
    }

    /// Publishes the exported snapshot (or that there is none) to the other readers.
    pub(crate) fn publish(&self, id: Option<String>) {
        self.id.send_if_modified(|v| {
            let unset = v.is_none();
            if unset {
                *v = Some(id);
            }
            unset
        });
    }

    /// The exported snapshot to import, waiting for the exporter until `deadline`; `None`
    /// when it could not export one.
    pub(crate) async fn wait(&self, deadline: Instant) -> Option<String> {
        let mut rx = self.id.subscribe();
        let published = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await;
        match published {
            Ok(Ok(v)) => v.clone().flatten(),
            _ => None,
        }
    }
}

/// `WHERE updated_at >= since`, for a dataset's `updated_at` column.
#[derive(Debug, Clone)]
pub struct ChangedSince {
    pub column: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

impl ChangedSince {
    /// The bound value: UTC, to the millisecond, rounded down (every database's date functions
    /// read this form; the overlap margin makes the lost microseconds irrelevant).
    fn value(&self) -> String {
        self.since.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

/// How a database writes what the statement around the query needs: the key column as it is
/// (for integer keys, so that an index serves the filter) and as text; the `ORDER BY` of each
/// key order; and `updated_at >= <placeholder>` for a column (by its index in the description),
/// or an error saying why that column cannot be compared with a time.
pub(crate) struct KeySql<'a> {
    pub column: String,
    pub as_text: String,
    pub order_int: String,
    pub order_text: String,
    pub since: &'a (dyn Fn(usize, &str) -> Result<String, String> + Sync),
}

/// `WHERE …` restricting the wrapped query to `keys`, with its parameters added to `args`.
/// An integer key column is compared with integers (keys that are not integers cannot match
/// and are left out); any other with text.
fn key_filter<DB: sqlx::Database>(
    keys: &[String],
    kind: KeyKind,
    key: &KeySql<'_>,
    args: &mut DB::Arguments,
) -> Result<String, RunError>
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments as _;
    let bind_error = |e: sqlx::error::BoxDynError| {
        RunError::new(ErrorKind::QueryFailed, format!("cannot bind a key: {e}"))
    };
    let mut placeholders = Vec::new();
    for k in keys {
        match kind {
            KeyKind::Int => match k.parse::<i64>() {
                Ok(i) => args.add(i).map_err(bind_error)?,
                Err(_) => continue,
            },
            _ => args.add(k.clone()).map_err(bind_error)?,
        }
        let mut p = String::new();
        let _ = args.format_placeholder(&mut p);
        placeholders.push(p);
    }
    let column = match kind {
        KeyKind::Int => &key.column,
        _ => &key.as_text,
    };
    Ok(if placeholders.is_empty() {
        "1 = 0".to_string()
    } else {
        format!("{column} IN ({})", placeholders.join(", "))
    })
}

/// `updated_at >= …` restricting the wrapped query to rows changed since an instant, with
/// its parameter added to `args`.
fn since_filter<DB: sqlx::Database>(
    changed: &ChangedSince,
    description: &Description,
    key: &KeySql<'_>,
    args: &mut DB::Arguments,
) -> Result<String, RunError>
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments as _;
    let Some(i) = description
        .columns
        .iter()
        .position(|c| *c == changed.column)
    else {
        return Err(RunError::new(
            ErrorKind::SchemaMismatch,
            format!(
                "updated_at names `{}`, which the query does not return; it returns: {}",
                changed.column,
                description.columns.join(", ")
            ),
        ));
    };
    args.add(changed.value())
        .map_err(|e| RunError::new(ErrorKind::QueryFailed, format!("cannot bind a time: {e}")))?;
    let mut p = String::new();
    let _ = args.format_placeholder(&mut p);
    (key.since)(i, &p).map_err(|why| {
        RunError::new(
            ErrorKind::SchemaMismatch,
            format!(
                "updated_at column `{}` ({}) {why}",
                changed.column, description.types[i]
            ),
        )
    })
}

/// Starts reading a dataset, holding `connection` (reserved with `Source::reserve`) until it
/// ends. The reader describes the query, waits for the key order, then streams rows until
/// done, failed, or its receiver is dropped — then it stops its query on the server.
pub fn spawn_reader(
    source: Arc<Source>,
    request: ReadRequest,
    connection: tokio::sync::OwnedSemaphorePermit,
) -> Reader {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let (mode_tx, mode_rx) = oneshot::channel();
    source.readers.clone().spawn(async move {
        let _connection = connection;
        // However the reader ends, the readers waiting for its snapshot go on.
        let _published = request
            .snapshot
            .clone()
            .filter(|s| s.exporter)
            .map(PublishOnDrop);
        let to = Sink {
            tx: &tx,
            throttle: source.throttle.as_ref(),
        };
        let result = match &source.pool {
            Pool::Postgres(pool) => {
                postgres::read(pool, &source.config, &request, to, mode_rx).await
            }
            Pool::MySql(pool, sweeps) => {
                mysql::read(pool, sweeps, &source.config, &request, to, mode_rx).await
            }
            Pool::Sqlite(pool) => sqlite::read(pool, &source.config, &request, to, mode_rx).await,
        };
        if let Err(e) = result {
            let _ = tx.send(ReaderMsg::Failed(e)).await;
        }
    });
    Reader {
        messages: rx,
        mode: mode_tx,
    }
}

/// Where a reader sends its messages, at the pace its source allows.
#[derive(Clone, Copy)]
pub(crate) struct Sink<'a> {
    pub tx: &'a mpsc::Sender<ReaderMsg>,
    pub throttle: Option<&'a Throttle>,
}

impl Sink<'_> {
    /// Sends a batch of rows once the source's budget allows; an error when the run is gone.
    async fn rows(&self, batch: Vec<Row>) -> Result<(), RunError> {
        if let Some(throttle) = self.throttle
            && let at = throttle.book(batch.len())
            && at > Instant::now()
        {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.tx.closed() => return Err(abandoned()),
            }
        }
        self.tx
            .send(ReaderMsg::Rows(batch))
            .await
            .map_err(|_| abandoned())
    }
}

/// Tells the readers waiting for an exporter's snapshot that there is none, if the exporter
/// ends without publishing one.
struct PublishOnDrop(SharedSnapshot);

impl Drop for PublishOnDrop {
    fn drop(&mut self) {
        self.0.publish(None);
    }
}

/// The error of a read past its deadline.
pub(crate) fn timed_out() -> RunError {
    RunError::new(
        ErrorKind::Timeout,
        "statement timeout: the query did not finish in time",
    )
}

/// The error of a read whose run went away while its query was running.
pub(crate) fn abandoned() -> RunError {
    RunError::new(ErrorKind::Cancelled, "the run was abandoned")
}

/// Whether a read ended while its query may still be running on the server: its run was
/// abandoned, or it gave up at its deadline. The database would go on running the query
/// (PostgreSQL and MariaDB until their own timeout, or until they next write to a client that
/// is gone; SQLite to the end of the statement), so the reader stops it there before it lets
/// the connection go.
pub(crate) fn interrupted<T>(result: &Result<T, RunError>) -> bool {
    matches!(result, Err(e) if matches!(e.kind, ErrorKind::Timeout | ErrorKind::Cancelled))
}

/// Stops a query from outside its connection: `stop` opens a connection of its own and asks
/// the server to cancel the query (the source's pool may have no connection to spare). It
/// gets `limit`; a failure is logged, as the query then ends by the server's own timeout.
pub(crate) async fn stop_on_server(
    source: &str,
    stop: impl std::future::Future<Output = Result<(), sqlx::Error>>,
    limit: Duration,
) {
    match tokio::time::timeout(limit, stop).await {
        Ok(Ok(())) => tracing::debug!(source, "Stopped an abandoned query on the server."),
        Ok(Err(e)) => tracing::warn!(
            source,
            error = %e,
            "Could not stop an abandoned query on the server; it runs until its statement timeout."
        ),
        Err(_) => tracing::warn!(
            source,
            "Could not stop an abandoned query on the server within {}; it runs until its statement timeout.",
            humantime::format_duration(limit)
        ),
    }
}

/// The query wrapped so its key order can be imposed from outside. The newlines keep a
/// trailing `-- comment` in the user's query from swallowing the closing parenthesis.
pub(crate) fn wrap(query: &str) -> String {
    format!("SELECT * FROM (\n{query}\n) AS invariantd_q")
}

/// How long the pool may take to hand out a connection before a direct attempt asks the
/// database why: a healthy pool answers well within it.
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// Takes a connection (or begins a transaction) from the pool, failing fast when the database
/// cannot be reached. The pool itself retries a refused connection until its timeout, so a
/// source that is down would cost `connect_timeout` per run and hide the cause; when the pool
/// has not answered within `PROBE_AFTER`, one direct attempt tells: an error (refused, unknown
/// host, bad credentials) is returned at once, while success means the pool is only slow.
pub(crate) async fn acquire_fast<DB: sqlx::Database, T>(
    acquire: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    options: &<DB::Connection as sqlx::Connection>::Options,
    timeout: Duration,
) -> Result<T, RunError> {
    use sqlx::ConnectOptions;
    let unreachable = |message: String| RunError::new(ErrorKind::SourceUnreachable, message);
    tokio::pin!(acquire);
    if let Ok(result) = tokio::time::timeout(PROBE_AFTER, &mut acquire).await {
        return result.map_err(|e| unreachable(pool_error(e, timeout)));
    }
    let probe = tokio::time::timeout(timeout, options.connect());
    tokio::select! {
        result = &mut acquire => result.map_err(|e| unreachable(pool_error(e, timeout))),
        probed = probe => match probed {
            Ok(Err(cause)) => Err(unreachable(format!("cannot connect: {cause}"))),
            // The database answers: the pool is only slow. Wait for it.
            Ok(Ok(_)) => acquire.await.map_err(|e| unreachable(pool_error(e, timeout))),
            Err(_) => Err(unreachable(format!(
                "cannot connect: no answer within {}",
                humantime::format_duration(timeout)
            ))),
        },
    }
}

fn pool_error(e: sqlx::Error, timeout: Duration) -> String {
    if matches!(e, sqlx::Error::PoolTimedOut) {
        format!(
            "cannot connect: no connection within {}",
            humantime::format_duration(timeout)
        )
    } else {
        format!("cannot connect: {e}")
    }
}

/// Streams decoded rows to the engine in key order, checking that the database really sorted
/// them the way it was asked to (a collation surprise must not become false violations).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pump<S, R>(
    mut stream: S,
    query: &str,
    key_index: usize,
    mode: KeyMode,
    deadline: Instant,
    decode: impl Fn(R) -> Result<Box<[Value]>, RunError>,
    to: Sink<'_>,
) -> Result<(), RunError>
where
    S: Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    let tx = to.tx;
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut last: Option<Key> = None;
    let mut null_keys = 0u64;
    loop {
        // A row already received is taken at once. Only a wait for the database watches the
        // deadline and the run: it may take long before the next row, the run may be abandoned
        // meanwhile, and the caller then stops the query on the server (see `interrupted`).
        // Rows that keep coming are held to both at every batch.
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => tokio::select! {
                next = tokio::time::timeout_at(deadline, stream.next()) => match next {
                    Ok(n) => n,
                    Err(_) => return Err(timed_out()),
                },
                () = tx.closed() => return Err(abandoned()),
            },
        };
        let Some(row) = next else { break };
        let row = row.map_err(|e| query_error(e, "query failed", query))?;
        let values = decode(row)?;
        let Some(key) = key_of(&values[key_index], mode)? else {
            null_keys += 1;
            continue;
        };
        // The previous key is the batch's last row, or the last row of the batch before.
        if let Some(prev) = batch.last().map(|r: &Row| &r.key).or(last.as_ref())
            && key < *prev
        {
            return Err(RunError::new(
                ErrorKind::QueryFailed,
                format!(
                    "the database returned key {key} after {prev}: rows are not in byte-wise key order, so the datasets cannot be joined reliably"
                ),
            ));
        }
        batch.push(Row { key, values });
        if batch.len() == BATCH_ROWS {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            last = batch.last().map(|r| r.key.clone());
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            to.rows(full).await?;
        }
    }
    if !batch.is_empty() {
        to.rows(batch).await?;
    }
    let _ = tx.send(ReaderMsg::Done { null_keys }).await;
    Ok(())
}

/// The join key of a key column value in `mode`; `None` for NULL.
pub fn key_of(v: &Value, mode: KeyMode) -> Result<Option<Key>, RunError> {
    Ok(Some(match (v, mode) {
        (Value::Null, _) => return Ok(None),
        (Value::Int(i), KeyMode::Int) => Key::Int(*i),
        (Value::Int(i), KeyMode::Text) => Key::Text(i.to_string().into()),
        (Value::Text(s), KeyMode::Text) => Key::Text(s.clone()),
        (other, _) => {
            return Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "key value `{other}` is a {}, not an {}",
                    other.type_name(),
                    if mode == KeyMode::Int {
                        "integer"
                    } else {
                        "integer or text"
                    }
                ),
            ));
        }
    }))
}

/// Hands the description to the engine and waits for the run's key order: the key column's
/// index and the order, or `None` when there is nothing to read (the run was abandoned, or the
/// query has no key column, which the engine reports).
pub(crate) async fn handshake(
    description: Description,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Option<(usize, KeyMode)> {
    let key_index = description.key_index;
    if to.tx.send(ReaderMsg::Described(description)).await.is_err() {
        return None;
    }
    Some((key_index?, mode.await.ok()?))
}

/// The second half of every reader: sends the description, waits for the run's key order,
/// then runs the query with that order pushed into the database and pumps its rows.
/// `order_by` gives the database's ORDER BY expression for a key order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn describe_then_stream<'c, DB, E>(
    executor: E,
    description: Description,
    wrapped: &str,
    key_sql: KeySql<'_>,
    decode: impl Fn(&DB::Row) -> Result<Box<[Value]>, RunError>,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let key_kind = description.key_kind.clone();
    // The filters are built before the description is handed over, which they read.
    let mut args = DB::Arguments::default();
    let mut filters = Vec::new();
    if let Some(changed) = &request.changed_since {
        filters.push(since_filter::<DB>(
            changed,
            &description,
            &key_sql,
            &mut args,
        )?);
    }
    let Some((key_index, mode)) = handshake(description, to, mode).await else {
        return Ok(());
    };
    // With arguments (even none) the query is prepared and rows come in the binary format the
    // decoders expect, as with `sqlx::query`; bare SQL would use PostgreSQL's text protocol.
    if let Some(keys) = &request.keys {
        filters.push(key_filter::<DB>(keys, key_kind, &key_sql, &mut args)?);
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let order_by = match mode {
        KeyMode::Int => &key_sql.order_int,
        KeyMode::Text => &key_sql.order_text,
    };
    let sql = format!("{wrapped}{filter} ORDER BY {order_by}");
    let query = (sqlx::AssertSqlSafe(sql), Some(args));
    let stream = executor.fetch(query);
    pump(
        stream,
        &request.query,
        key_index,
        mode,
        request.deadline,
        |row| decode(&row),
        to,
    )
    .await
}

/// A prepared query's columns, each with the decoder its type needs.
pub(crate) struct Columns<D> {
    pub names: Vec<String>,
    pub types: Vec<String>,
    pub decoders: Vec<D>,
}

impl<D: Copy> Columns<D> {
    /// From (name, type name, decoder) per column; a column without a decoder is an error
    /// naming it, with a hint how to cast it.
    pub fn new(
        columns: impl IntoIterator<Item = (String, String, Option<D>)>,
        cast_hint: &str,
    ) -> Result<Columns<D>, RunError> {
        let mut out = Columns {
            names: Vec::new(),
            types: Vec::new(),
            decoders: Vec::new(),
        };
        let mut unreadable = Vec::new();
        for (name, ty, decoder) in columns {
            match decoder {
                Some(d) => out.decoders.push(d),
                None => unreadable.push(format!("{name} ({ty})")),
            }
            out.names.push(name);
            out.types.push(ty);
        }
        if unreadable.is_empty() {
            Ok(out)
        } else {
            Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "invariantd cannot read the type of column {}; cast it in the query, e.g. {cast_hint}",
                    unreadable.join(", ")
                ),
            ))
        }
    }

    /// What the engine needs to know; `key_kind` classifies the key column, by its index, and
    /// `value_types` says which expression types a decoder produces.
    pub fn description(
        &self,
        key: &str,
        key_kind: impl FnOnce(usize) -> KeyKind,
        value_types: impl Fn(D) -> Types,
    ) -> Description {
        let key_index = self.names.iter().position(|c| c == key);
        Description {
            columns: self.names.clone(),
            types: self.types.clone(),
            value_types: self.decoders.iter().map(|d| value_types(*d)).collect(),
            key_index,
            key_kind: key_index.map_or(KeyKind::Text, key_kind),
        }
    }

    /// Decodes every column of a row.
    pub fn decode<R>(
        &self,
        row: &R,
        decode: impl Fn(&R, usize, D) -> Result<Value, sqlx::Error>,
    ) -> Result<Box<[Value]>, RunError> {
        self.decoders
            .iter()
            .enumerate()
            .map(|(i, d)| {
                decode(row, i, *d).map_err(|e| {
                    RunError::new(
                        ErrorKind::SchemaMismatch,
                        format!("cannot decode column `{}`: {e}", self.names[i]),
                    )
                })
            })
            .collect()
    }
}

pub(crate) fn quote_ident(name: &str, quote: char) -> String {
    let q = quote.to_string();
    format!("{quote}{}{quote}", name.replace(quote, &(q.clone() + &q)))
}
