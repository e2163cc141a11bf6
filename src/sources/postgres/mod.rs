//! PostgreSQL: a REPEATABLE READ READ ONLY transaction with `SET LOCAL statement_timeout`,
//! byte-wise text order through `COLLATE "C"`, and decoding by the column's type. A full
//! sweep is a binary COPY, read on a connection of its own that speaks the protocol itself
//! (`wire.rs`) in the transaction's snapshot, where it can (TLS and authentication as the
//! driver would take them), else through the driver. A query whose run is abandoned is
//! cancelled with `pg_cancel_backend` from a connection of its own.

mod copy;
mod decode;
mod wire;

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{AssertSqlSafe, Column, Executor, SqlSafeStr, Statement, TypeInfo};
use tokio::sync::oneshot;

use super::backend::{Backend, HeldSnapshot};
use super::connect::{acquire_fast, pool_options, stop_on_server};
use super::errors::{abandoned, interrupted, query_error, timed_out};
use super::filters::{KeySql, quote_ident, range_filter, wrap};
use super::pump::{Columns, Keyed, Sink, describe_then_stream, handshake, pump_decoded};
use super::request::{Description, KeyMode, ReadRequest};
use super::write::{WriteError, classify, transact};
use crate::config::{ConnectOptions, SourceConfig};
use crate::verdict::{Param, RunError};
use decode::{Decode, decode, decoder, key_kind, value_types};

/// A PostgreSQL source's pool, and whether its full sweeps can speak the protocol.
pub(super) struct Postgres {
    pool: sqlx::PgPool,
    sweeps: WireSweeps,
}

/// Per source: why full sweeps read through the driver's COPY stream rather than the
/// protocol (`wire.rs`), once a connection found out (an authentication method, TLS it cannot
/// set up, a login refused). It is not tried again until the configuration is reloaded.
#[derive(Debug, Default)]
struct WireSweeps {
    unsupported: std::sync::OnceLock<String>,
}

impl Postgres {
    pub(super) fn new(config: &SourceConfig, options: &PgConnectOptions) -> Postgres {
        use sqlx::ConnectOptions as _;
        // sqlx logs every statement's text, and a rule's query may hold what `${VAR}`
        // expanded to (a connection string, a password): invariantd logs its runs itself, so
        // the driver's statement logs are off. (A sweep also takes seconds by design, which
        // would make its "slow statement" warnings fire on every run.)
        Postgres {
            pool: pool_options(config).connect_lazy_with(
                options
                    .clone()
                    .application_name("invariantd")
                    .disable_statement_logging(),
            ),
            sweeps: WireSweeps::default(),
        }
    }
}

impl Backend for Postgres {
    fn catalog_query(&self) -> &'static str {
        // From pg_catalog: information_schema hides the constraints of tables a role may only
        // read, and a checker role may only read.
        "SELECT n.nspname || '.' || c.relname || '.' || a.attname AS id, \
         n.nspname::text AS table_schema, c.relname::text AS table_name, \
         a.attname::text AS column_name, a.attnum::int AS position, \
         format_type(a.atttypid, a.atttypmod) AS data_type, \
         CASE WHEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid \
         AND i.indisprimary AND a.attnum = ANY(i.indkey)) THEN 1 ELSE 0 END AS primary_key \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid \
         WHERE c.relkind IN ('r', 'v', 'm', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND has_table_privilege(c.oid, 'SELECT')"
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
            let mut conn = acquire_fast::<sqlx::Postgres, _>(
                self.pool.acquire(),
                options(config),
                config.connect_timeout,
            )
            .await?;
            let superuser: bool =
                sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| query_error(e, "the probe failed", ""))?
                    .unwrap_or(false);
            Ok(superuser.then(|| "its role is a PostgreSQL superuser".to_string()))
        })
    }

    fn write<'a>(
        &'a self,
        config: &'a SourceConfig,
        statement: &'a str,
        params: &'a [Param],
        expect_rows: u64,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<u64, WriteError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(|e| classify(e, false))?;
            let ms = config.statement_timeout.as_millis().max(1);
            sqlx::query(AssertSqlSafe(format!("SET statement_timeout = {ms}")))
                .execute(&mut *conn)
                .await
                .map_err(|e| classify(e, false))?;
            transact!(conn, statement, params, expect_rows,)
        })
    }

    /// The first reader exports its snapshot, the others import it.
    fn shares_snapshot(&self) -> bool {
        true
    }

    /// On a connection of its own, outside the pool (so that holding it never keeps a range
    /// from the connections it reads with); closing it ends the transaction.
    fn export_snapshot<'a>(
        &'a self,
        config: &'a SourceConfig,
    ) -> BoxFuture<'a, Result<Option<HeldSnapshot>, RunError>> {
        Box::pin(async move {
            use sqlx::ConnectOptions as _;
            let mut conn = acquire_fast::<sqlx::Postgres, _>(
                options(config).connect(),
                options(config),
                config.connect_timeout,
            )
            .await?;
            conn.execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| query_error(e, "cannot start a read-only transaction", ""))?;
            let id: Option<String> = sqlx::query_scalar(EXPORT_SNAPSHOT)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| query_error(e, "cannot export a snapshot", ""))?;
            Ok(id.map(|id| HeldSnapshot {
                id,
                _hold: Box::new(conn),
            }))
        })
    }
}

/// Exports the transaction's snapshot, or NULL where that cannot be done: a standby before
/// PostgreSQL 10 (a failed statement would end the transaction). Each reader then keeps a
/// snapshot of its own, as before sharing.
const EXPORT_SNAPSHOT: &str = "SELECT CASE WHEN current_setting('server_version_num')::int >= 100000 \
     OR NOT pg_is_in_recovery() THEN pg_export_snapshot() END";

fn options(config: &SourceConfig) -> &PgConnectOptions {
    match &config.options {
        ConnectOptions::Postgres(options, _) => options,
        _ => unreachable!("a PostgreSQL pool has PostgreSQL options"),
    }
}

async fn read(
    pool: &sqlx::PgPool,
    sweeps: &WireSweeps,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let options = options(config);
    let mut conn =
        acquire_fast::<sqlx::Postgres, _>(pool.acquire(), options, config.connect_timeout).await?;
    let mut backend = None;
    let result = read_on(&mut conn, sweeps, config, request, to, mode, &mut backend).await;
    if result.is_err() {
        // A read that ended early may leave COPY data or a statement's rows unread on the
        // connection: it is closed, never handed to another run.
        conn.close_on_drop();
    }
    if interrupted(&result)
        && let Some(backend) = backend
    {
        // The connection is still held, so the backend cannot be running anyone else's query.
        let stop = async {
            use sqlx::{ConnectOptions as _, Connection as _};
            let mut conn = options.connect().await?;
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(backend)
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        stop_on_server(&config.name, stop, config.connect_timeout).await;
    }
    result
}

/// A read on one connection, in a read-only transaction; `backend` is set to the server
/// process that runs it, to stop it from outside if the read is abandoned.
async fn read_on(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    sweeps: &WireSweeps,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
    backend: &mut Option<i32>,
) -> Result<(), RunError> {
    let mut txn = sqlx::Connection::begin_with(
        &mut **conn,
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )
    .await
    .map_err(|e| query_error(e, "cannot start a read-only transaction", &request.query))?;
    let timeout_ms = config.statement_timeout.as_millis().max(1);
    txn.execute(AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {timeout_ms}"
    )))
    .await
    .map_err(|e| query_error(e, "cannot set the statement timeout", &request.query))?;
    // One snapshot for the rule's datasets on this source: imported before the first query.
    if let Some(shared) = request.snapshot.as_ref().filter(|s| !s.exporter)
        && let Some(id) = shared.wait(request.deadline).await
    {
        // The id comes from the server's own `pg_export_snapshot()` (hex digits and dashes).
        let id = id.replace('\'', "");
        txn.execute(AssertSqlSafe(format!("SET TRANSACTION SNAPSHOT '{id}'")))
            .await
            .map_err(|e| query_error(e, "cannot share the run's snapshot", &request.query))?;
    }
    // To stop the query from another connection if the run is abandoned.
    *backend = Some(
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *txn)
            .await
            .map_err(|e| query_error(e, "cannot start reading", &request.query))?,
    );
    if let Some(shared) = request.snapshot.as_ref().filter(|s| s.exporter) {
        let exported: Option<String> = sqlx::query_scalar(EXPORT_SNAPSHOT)
            .fetch_one(&mut *txn)
            .await
            .map_err(|e| query_error(e, "cannot share the run's snapshot", &request.query))?;
        shared.publish(exported);
    }

    let wrapped = wrap(&request.query);
    let statement = (&mut *txn)
        .prepare(AssertSqlSafe(wrapped.clone()).into_sql_str())
        .await
        .map_err(|e| query_error(e, "the query is not valid", &request.query))?;
    let columns = Columns::new(
        statement.columns().iter().map(|c| {
            let ty = c.type_info();
            (c.name().to_string(), ty.name().to_string(), decoder(ty))
        }),
        "`column::text`",
    )?;
    let description =
        columns.description(&request.key, |i| key_kind(columns.decoders[i]), value_types);
    let key = format!("invariantd_q.{}", quote_ident(&request.key, '"'));
    let since = |i: usize, p: &str| {
        let column = format!("invariantd_q.{}", quote_ident(&columns.names[i], '"'));
        // The value is UTC: a `timestamp` column holds UTC (as the engine reads it), a `date`
        // compares with the day of the instant.
        Ok(match columns.decoders[i] {
            Decode::Timestamptz => format!("{column} >= CAST({p} || '+00' AS timestamptz)"),
            Decode::Timestamp => format!("{column} >= CAST({p} AS timestamp)"),
            Decode::Date => format!("{column} >= CAST({p} AS date)"),
            Decode::Text => format!("CAST({column} AS timestamp) >= CAST({p} AS timestamp)"),
            _ => return Err("is not a time".to_string()),
        })
    };
    let key_sql = KeySql {
        as_text: format!("({key})::text"),
        order_text: format!("({key})::text COLLATE \"C\""),
        order_int: key.clone(),
        column: key,
        since: &since,
        text: text_from_hex,
    };
    let decode_row = |row: &PgRow| columns.decode(row, decode);
    // A full sweep streams through binary COPY; reads of some keys or of recent changes bind
    // parameters, which COPY cannot, and use the prepared statement.
    if request.keys.is_none() && request.changed_since.is_none() {
        let sweep = CopySweep {
            sweeps,
            config,
            request,
            wrapped: &wrapped,
            key_sql: &key_sql,
            columns: &columns,
        };
        copy_sweep(&mut txn, sweep, description, to, mode, backend).await
    } else {
        describe_then_stream(
            &mut *txn,
            description,
            &wrapped,
            key_sql,
            decode_row,
            request,
            to,
            mode,
        )
        .await
    }
}

/// What a full sweep reads, and how.
struct CopySweep<'a> {
    sweeps: &'a WireSweeps,
    config: &'a SourceConfig,
    request: &'a ReadRequest,
    wrapped: &'a str,
    key_sql: &'a KeySql<'a>,
    columns: &'a Columns<Decode>,
}

/// A full sweep: `COPY (query ORDER BY key) TO STDOUT (FORMAT binary)`, decoded by the types
/// the query was described with (see `copy.rs`), on a connection of its own in the
/// transaction's snapshot where it can be made (`wire.rs`), else on the transaction's.
async fn copy_sweep(
    conn: &mut sqlx::PgConnection,
    sweep: CopySweep<'_>,
    description: Description,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
    backend: &mut Option<i32>,
) -> Result<(), RunError> {
    let CopySweep {
        request,
        key_sql,
        columns,
        ..
    } = sweep;
    let Some((key_index, mode)) = handshake(description, to, mode).await else {
        return Ok(());
    };
    let order_by = match mode {
        KeyMode::Int => &key_sql.order_int,
        KeyMode::Text => &key_sql.order_text,
    };
    let range = match &request.range {
        Some(range) => range_filter(
            range,
            mode,
            &key_sql.column,
            &key_sql.order_text,
            key_sql.text,
        )?
        .map(|f| format!(" WHERE {f}")),
        None => None,
    }
    .unwrap_or_default();
    let sql = format!(
        "COPY ({}{range} ORDER BY {order_by}) TO STDOUT (FORMAT binary)",
        sweep.wrapped
    );
    let decoder = || {
        copy::RowDecoder::new(
            columns.decoders.clone(),
            columns.names.clone(),
            Keyed::new(key_index, mode, to.spent),
        )
    };
    if let Some(started) = wire_copy(conn, &sweep, &sql, &to, decoder(), backend).await {
        let mut rows = started?;
        let result = pump_decoded(&mut rows, &request.query, request.deadline, to).await;
        if result.is_ok() {
            rows.terminate().await;
        }
        return result;
    }
    // The server answers once the query has started: the wait may end with the run.
    let chunks = tokio::select! {
        chunks = tokio::time::timeout_at(request.deadline, conn.copy_out_raw(&sql)) => match chunks {
            Ok(chunks) => chunks.map_err(|e| query_error(e, "query failed", &request.query))?,
            Err(_) => return Err(timed_out()),
        },
        () = to.tx.closed() => return Err(abandoned()),
    };
    let rows = copy::CopyRows::new(chunks, decoder());
    pump_decoded(rows, &request.query, request.deadline, to).await
}

/// The COPY started on a connection of its own that speaks the protocol (`wire.rs`), in the
/// snapshot of the transaction `txn`, which stays open meanwhile; `backend` becomes its
/// server process. `None` when it cannot be made (what the reader does not speak, a
/// connection refused, a snapshot that cannot be exported): the COPY then runs on `txn`.
async fn wire_copy(
    txn: &mut sqlx::PgConnection,
    sweep: &CopySweep<'_>,
    sql: &str,
    to: &Sink<'_>,
    rows: copy::RowDecoder,
    backend: &mut Option<i32>,
) -> Option<Result<wire::CopyOut, RunError>> {
    let CopySweep {
        sweeps,
        config,
        request,
        ..
    } = *sweep;
    if sweeps.unsupported.get().is_some() {
        return None;
    }
    let ConnectOptions::Postgres(options, login) = &config.options else {
        unreachable!("a PostgreSQL pool has PostgreSQL options")
    };
    let snapshot: Option<String> = match sqlx::query_scalar(EXPORT_SNAPSHOT)
        .fetch_one(&mut *txn)
        .await
    {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let e = query_error(e, "cannot share the run's snapshot", &request.query);
            return Some(Err(e));
        }
    };
    // A standby before PostgreSQL 10 exports none.
    let snapshot = snapshot?;
    let connect = tokio::time::timeout(
        config.connect_timeout,
        wire::Conn::connect(options, login, "invariantd"),
    );
    let mut conn = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) if e.lasting() => {
                tracing::info!(
                    source = %config.name,
                    "Full sweeps of this source read through the driver's COPY stream, which is slower: {e}."
                );
                let _ = sweeps.unsupported.set(e.to_string());
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(source = %config.name, "This sweep reads through the driver: {e}.");
                return None;
            }
            Err(_) => {
                tracing::debug!(source = %config.name, "This sweep reads through the driver: no connection in time.");
                return None;
            }
        },
        () = to.tx.closed() => return Some(Err(abandoned())),
    };
    tracing::debug!(
        source = %config.name,
        "Full sweep over the PostgreSQL protocol, on a connection of its own."
    );
    // The id comes from the server's own `pg_export_snapshot()` (hex digits and dashes).
    let id = snapshot.replace('\'', "");
    let timeout_ms = config.statement_timeout.as_millis().max(1);
    // The server's own process id, to stop the query from outside (a cancellation key
    // would name a pooler's session behind one).
    let setup = format!(
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY; \
         SET TRANSACTION SNAPSHOT '{id}'; SET LOCAL statement_timeout = {timeout_ms}; \
         SELECT pg_backend_pid()"
    );
    match conn.execute(&setup).await {
        // From now on, a read abandoned is stopped there.
        Ok(pid) => {
            if let Some(pid) = pid.and_then(|pid| pid.parse().ok()) {
                *backend = Some(pid);
            }
        }
        Err(e) => return Some(Err(e.into_run_error("cannot share the run's snapshot"))),
    }
    Some(tokio::select! {
        started = tokio::time::timeout_at(request.deadline, conn.copy_out(sql, rows)) => match started {
            Ok(started) => started.map_err(|e| e.into_run_error("query failed")),
            Err(_) => Err(timed_out()),
        },
        () = to.tx.closed() => Err(abandoned()),
    })
}

/// A text value from UTF-8 bytes in hexadecimal.
fn text_from_hex(hex: &str) -> String {
    format!("convert_from('\\x{hex}'::bytea, 'UTF8')")
}
