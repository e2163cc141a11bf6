//! MySQL and MariaDB: a READ ONLY transaction with the server's statement time limit
//! (`max_statement_time` on MariaDB, `max_execution_time` on MySQL), byte-wise text order
//! through `CAST(… AS BINARY)`, and decoding by the column's type. A full sweep speaks the
//! protocol itself on a connection of its own (`wire.rs`, `rows.rs`), where it can (no TLS, a known
//! authentication plugin); reads of some keys or of recent changes go through the driver. A
//! query whose run is abandoned is stopped with `KILL QUERY` from a connection of its own.

mod decode;
mod rows;
mod wire;

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::mysql::{MySqlConnectOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Column, Executor, SqlSafeStr, Statement, TypeInfo};
use tokio::sync::oneshot;

use super::backend::Backend;
use super::connect::{acquire_fast, pool_options, stop_on_server};
use super::errors::{abandoned, interrupted, query_error, timed_out};
use super::filters::{KeySql, quote_ident, range_filter, wrap};
use super::pump::{Columns, Keyed, Sink, describe_then_stream, handshake, pump_decoded};
use super::request::{KeyMode, ReadRequest};
use super::write::{WriteError, classify, transact};
use crate::config::{ConnectOptions, SourceConfig};
use crate::verdict::{ErrorKind, Param, RunError};
use decode::{Decode, decode, decoder, key_kind, value_types};
use wire::WireError;

/// A MySQL or MariaDB source's pool, and whether its full sweeps can speak the protocol.
pub(super) struct MySql {
    pool: sqlx::MySqlPool,
    sweeps: WireSweeps,
}

impl MySql {
    pub(super) fn new(config: &SourceConfig, options: &MySqlConnectOptions) -> MySql {
        use sqlx::ConnectOptions as _;
        // The driver's statement logs are off, as for PostgreSQL (a query may hold a secret).
        MySql {
            pool: pool_options(config)
                .connect_lazy_with(options.clone().disable_statement_logging()),
            sweeps: WireSweeps::default(),
        }
    }
}

impl Backend for MySql {
    fn catalog_query(&self) -> &'static str {
        // information_schema shows only what the role has a privilege on.
        "SELECT CONCAT(table_name, '.', column_name) AS id, table_schema AS table_schema, \
         table_name AS table_name, column_name AS column_name, \
         ordinal_position AS position, column_type AS data_type, \
         CASE WHEN column_key = 'PRI' THEN 1 ELSE 0 END AS primary_key \
         FROM information_schema.columns WHERE table_schema = DATABASE()"
    }

    fn read<'a>(
        &'a self,
        config: &'a SourceConfig,
        request: &'a ReadRequest,
        to: Sink<'a>,
        mode: oneshot::Receiver<KeyMode>,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(read(&self.pool, &self.sweeps, config, request, to, mode))
    }

    fn probe<'a>(
        &'a self,
        config: &'a SourceConfig,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>> {
        Box::pin(async move {
            let ConnectOptions::MySql(options, _) = &config.options else {
                unreachable!("a MySQL pool has MySQL options")
            };
            let mut conn = acquire_fast::<sqlx::MySql, _>(
                self.pool.acquire(),
                options,
                config.connect_timeout,
            )
            .await?;
            let grants: Vec<String> = sqlx::query_scalar("SHOW GRANTS")
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| query_error(e, "the probe failed", ""))?;
            Ok(mysql_power(&grants))
        })
    }

    fn write<'a>(
        &'a self,
        _config: &'a SourceConfig,
        statement: &'a str,
        params: &'a [Param],
        expect_rows: u64,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<u64, WriteError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(|e| classify(e, false))?;
            transact!(conn, statement, params, expect_rows,)
        })
    }
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

/// Per source: why full sweeps go through the driver rather than the protocol (`wire.rs`), once a
/// connection found out (TLS, an authentication plugin). It is not tried again until the
/// configuration is reloaded.
#[derive(Debug, Default)]
struct WireSweeps {
    unsupported: std::sync::OnceLock<String>,
}

async fn read(
    pool: &sqlx::MySqlPool,
    sweeps: &WireSweeps,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mut mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let ConnectOptions::MySql(options, login) = &config.options else {
        unreachable!("a MySQL pool has MySQL options")
    };
    if request.keys.is_none()
        && request.changed_since.is_none()
        && sweeps.unsupported.get().is_none()
    {
        match wire_sweep(pool, options, login, config, request, to, mode).await {
            Ok(result) => return result,
            Err((why, returned)) => {
                tracing::info!(
                    source = %config.name,
                    "Full sweeps of this source read through the driver's row stream, which is slower: {why}."
                );
                let _ = sweeps.unsupported.set(why);
                mode = returned;
            }
        }
    }
    let mut conn =
        acquire_fast::<sqlx::MySql, _>(pool.acquire(), options, config.connect_timeout).await?;
    // The limit is a session variable: set before the transaction, on this connection.
    let [mariadb, mysql] = statement_time_limits(config);
    if conn.execute(AssertSqlSafe(mariadb)).await.is_err() {
        conn.execute(AssertSqlSafe(mysql))
            .await
            .map_err(|e| query_error(e, "cannot set the statement timeout", &request.query))?;
    }
    // To stop the query from another connection if the run is abandoned.
    let thread: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| query_error(e, "cannot start reading", &request.query))?;
    let mut txn = sqlx::Connection::begin_with(&mut *conn, "START TRANSACTION READ ONLY")
        .await
        .map_err(|e| query_error(e, "cannot start a read-only transaction", &request.query))?;

    let wrapped = wrap(&request.query);
    let statement = (&mut *txn)
        .prepare(AssertSqlSafe(wrapped.clone()).into_sql_str())
        .await
        .map_err(|e| query_error(e, "the query is not valid", &request.query))?;
    let columns = Columns::new(
        statement.columns().iter().map(|c| {
            let ty = c.type_info().name();
            (c.name().to_string(), ty.to_string(), decoder(ty))
        }),
        "`CAST(column AS CHAR)`",
    )?;
    let description =
        columns.description(&request.key, |i| key_kind(columns.decoders[i]), value_types);
    let key = key_column(&request.key);
    // sqlx sets the session's time zone to UTC: the value compares with TIMESTAMP and
    // DATETIME columns (UTC, as the engine reads them) as it is.
    let since = |i: usize, p: &str| {
        let column = format!("invariantd_q.{}", quote_ident(&columns.names[i], '`'));
        Ok(match columns.decoders[i] {
            Decode::Timestamp | Decode::Datetime | Decode::Date => format!("{column} >= {p}"),
            Decode::Text => format!("CAST({column} AS DATETIME(6)) >= {p}"),
            _ => return Err("is not a time".to_string()),
        })
    };
    let key_sql = KeySql {
        as_text: format!("CAST({key} AS CHAR)"),
        order_text: order_by(&key, KeyMode::Text),
        order_int: order_by(&key, KeyMode::Int),
        column: key,
        since: &since,
        text: binary_from_hex,
    };
    let decode_row = |row: &MySqlRow| columns.decode(row, decode);
    let result = describe_then_stream(
        &mut *txn,
        description,
        &wrapped,
        key_sql,
        decode_row,
        request,
        to,
        mode,
    )
    .await;
    if interrupted(&result) {
        // The connection is still held, so the thread cannot be running anyone else's query.
        kill_query(config, options, thread).await;
    }
    result
}

/// The statements that limit a session's statements to the source's statement_timeout:
/// MariaDB's, then MySQL's (the first fails on MySQL).
fn statement_time_limits(config: &SourceConfig) -> [String; 2] {
    let timeout = config.statement_timeout;
    [
        format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64()),
        format!(
            "SET SESSION max_execution_time = {}",
            timeout.as_millis().max(1)
        ),
    ]
}

fn key_column(key: &str) -> String {
    format!("invariantd_q.{}", quote_ident(key, '`'))
}

/// The ORDER BY expression for the key column in `mode`: byte-wise for text.
fn order_by(key: &str, mode: KeyMode) -> String {
    match mode {
        KeyMode::Int => key.to_string(),
        KeyMode::Text => format!("CAST({key} AS BINARY)"),
    }
}

/// Stops a query from a connection of its own. The caller still holds the query's
/// connection, so the thread cannot be running anyone else's query.
async fn kill_query(
    config: &SourceConfig,
    options: &sqlx::mysql::MySqlConnectOptions,
    thread: u64,
) {
    let stop = async {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut conn = options.connect().await?;
        conn.execute(AssertSqlSafe(format!("KILL QUERY {thread}")))
            .await?;
        conn.close().await
    };
    stop_on_server(&config.name, stop, config.connect_timeout).await;
}

/// A full sweep over a connection of its own, speaking the protocol directly (`wire.rs`).
/// `Err` hands the key-order receiver back when this connection cannot be made without what
/// the reader does not speak (TLS, another authentication plugin): nothing was read yet, and
/// the caller reads through the driver.
#[allow(clippy::type_complexity)]
async fn wire_sweep(
    pool: &sqlx::MySqlPool,
    options: &sqlx::mysql::MySqlConnectOptions,
    login: &crate::config::MySqlLogin,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<Result<(), RunError>, (String, oneshot::Receiver<KeyMode>)> {
    let unreachable = |m: String| RunError::new(ErrorKind::SourceUnreachable, m);
    // The sweep's connection takes the place of an idle pooled one, so that sweeps do not add
    // to the connections kept open on the server.
    if let Some(idle) = pool.try_acquire() {
        let _ = sqlx::Connection::close(idle.detach()).await;
    }
    let connect = tokio::time::timeout(config.connect_timeout, wire::Conn::connect(options, login));
    let mut conn = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(WireError::Unsupported(why))) => return Err((why, mode)),
            Ok(Err(e)) => return Ok(Err(unreachable(format!("cannot connect: {e}")))),
            Err(_) => {
                return Ok(Err(unreachable(format!(
                    "cannot connect: no answer within {}",
                    humantime::format_duration(config.connect_timeout)
                ))));
            }
        },
        () = to.tx.closed() => return Ok(Err(abandoned())),
    };
    tracing::debug!(
        source = %config.name,
        "Full sweep over the MySQL protocol, on a connection of its own."
    );
    let result = sweep_on(&mut conn, login, options, config, request, to, mode).await;
    if interrupted(&result) {
        kill_query(config, options, conn.thread.into()).await;
    }
    conn.quit().await;
    Ok(result)
}

/// The steps of a wire sweep, as the driver's path takes them: the session as sqlx sets it
/// up, the statement time limit, a read-only transaction, the description, then the rows in
/// the run's key order.
async fn sweep_on(
    conn: &mut wire::Conn,
    login: &crate::config::MySqlLogin,
    options: &sqlx::mysql::MySqlConnectOptions,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    // Each step may wait on the server: the run's deadline and its abandonment bound it.
    async fn step<T>(
        request: &ReadRequest,
        to: Sink<'_>,
        what: &str,
        f: impl std::future::Future<Output = Result<T, WireError>>,
    ) -> Result<T, RunError> {
        tokio::select! {
            r = tokio::time::timeout_at(request.deadline, f) => match r {
                Ok(r) => r.map_err(|e| e.into_run_error(what)),
                Err(_) => Err(timed_out()),
            },
            () = to.tx.closed() => Err(abandoned()),
        }
    }
    let names = match options.get_collation() {
        Some(collation) => format!("NAMES {} COLLATE {collation}", options.get_charset()),
        None => format!("NAMES {}", options.get_charset()),
    };
    let session = format!(
        "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')),\
         time_zone='{}',{names}",
        login
            .timezone
            .as_deref()
            .unwrap_or("+00:00")
            .replace('\'', "")
    );
    step(
        request,
        to,
        "cannot start reading",
        conn.execute_sql(&session),
    )
    .await?;
    let [mariadb, mysql] = statement_time_limits(config);
    let what = "cannot set the statement timeout";
    match step(request, to, what, conn.execute_sql(&mariadb)).await {
        Err(e) if e.kind == ErrorKind::QueryFailed => {
            step(request, to, what, conn.execute_sql(&mysql)).await?;
        }
        other => other?,
    }
    let what = "cannot start a read-only transaction";
    step(
        request,
        to,
        what,
        conn.execute_sql("START TRANSACTION READ ONLY"),
    )
    .await?;
    let wrapped = wrap(&request.query);
    let described = step(
        request,
        to,
        "the query is not valid",
        conn.prepare(&wrapped),
    )
    .await?;
    let columns = Columns::new(
        described.columns.iter().map(|c| {
            let ty = c.type_name();
            (c.name.clone(), ty.to_string(), decoder(ty))
        }),
        "`CAST(column AS CHAR)`",
    )?;
    step(
        request,
        to,
        "cannot start reading",
        conn.close_statement(described.id),
    )
    .await?;
    let description =
        columns.description(&request.key, |i| key_kind(columns.decoders[i]), value_types);
    let Some((key_index, mode)) = handshake(description, to, mode).await else {
        return Ok(());
    };
    let key = key_column(&request.key);
    let range = match &request.range {
        Some(range) => range_filter(
            range,
            mode,
            &key,
            &order_by(&key, KeyMode::Text),
            binary_from_hex,
        )?
        .map(|f| format!(" WHERE {f}")),
        None => None,
    }
    .unwrap_or_default();
    let sql = format!("{wrapped}{range} ORDER BY {}", order_by(&key, mode));
    let ordered = step(request, to, "the query is not valid", conn.prepare(&sql)).await?;
    step(request, to, "query failed", conn.execute(ordered.id)).await?;
    let mut rows = rows::WireRows::new(
        conn,
        columns.decoders.clone(),
        columns.names.clone(),
        Keyed::new(key_index, mode, to.spent),
    );
    pump_decoded(&mut rows, &request.query, request.deadline, to).await
}

/// A binary string from bytes in hexadecimal: what `CAST(key AS BINARY)` compares with.
fn binary_from_hex(hex: &str) -> String {
    format!("X'{hex}'")
}
