//! SQLite: read-only connections (see `Sqlite::new`), a deferred transaction for one snapshot,
//! byte-wise text order through the BINARY collation, and decoding by each value's own storage
//! class, refined by the column's declared type (SQLite applications store timestamps as text
//! and money in NUMERIC columns, which SQLite keeps as REAL).
//!
//! SQLite has no statement timeout of its own: a progress handler, called every few thousand
//! virtual-machine steps, interrupts the statement once `statement_timeout` has passed or the
//! run was abandoned, so the query stops using the CPU then and there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Executor, Row as _, TypeInfo, ValueRef};
use tokio::sync::oneshot;

use super::backend::Backend;
use super::connect::pool_options;
use super::errors::{interrupted, query_error};
use super::filters::{KeySql, quote_ident, wrap};
use super::pump::{Columns, Sink, describe_then_stream};
use super::request::{KeyKind, KeyMode, ReadRequest};
use super::write::{WriteError, classify, transact};
use crate::config::SourceConfig;
use crate::value::{Types, Value, decimal_from_f64, parse_timestamp_text};
use crate::verdict::{ErrorKind, Param, RunError};

/// A SQLite source: a pool of read-only connections, and the options a repair's write opens
/// a connection of its own with.
pub(super) struct Sqlite {
    pool: sqlx::SqlitePool,
    options: SqliteConnectOptions,
}

impl Sqlite {
    pub(super) fn new(config: &SourceConfig, options: &SqliteConnectOptions) -> Sqlite {
        use sqlx::ConnectOptions as _;
        // Checks only read: SQLite sources are opened read-only, which also means a
        // missing database file is an error rather than a new empty database. A kept
        // connection would keep reading a file that was since replaced (`mv new.db
        // orders.db`) or deleted, so connections are closed after each use: every run
        // opens the file as it is now, which for SQLite costs microseconds.
        Sqlite {
            pool: pool_options(config)
                .after_release(|_, _| Box::pin(async { Ok(false) }))
                .connect_lazy_with(
                    options
                        .clone()
                        .read_only(true)
                        .create_if_missing(false)
                        .disable_statement_logging(),
                ),
            options: options.clone(),
        }
    }
}

impl Backend for Sqlite {
    fn catalog_query(&self) -> &'static str {
        "SELECT m.name || '.' || p.name AS id, 'main' AS table_schema, m.name AS table_name, \
         p.name AS column_name, p.cid AS position, p.type AS data_type, \
         CASE WHEN p.pk > 0 THEN 1 ELSE 0 END AS primary_key \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%'"
    }

    fn read<'a>(
        &'a self,
        config: &'a SourceConfig,
        request: &'a ReadRequest,
        to: Sink<'a>,
        mode: oneshot::Receiver<KeyMode>,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(read(&self.pool, config, request, to, mode))
    }

    fn probe<'a>(
        &'a self,
        _config: &'a SourceConfig,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(|e| {
                RunError::new(
                    ErrorKind::SourceUnreachable,
                    format!("cannot open the database: {e}"),
                )
            })?;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(|e| query_error(e, "the probe failed", ""))?;
            Ok(None)
        })
    }

    /// The pool's connections are read-only: a write opens its own, which waits up to
    /// `timeout` for a lock (SQLite has no statement timeout).
    fn write<'a>(
        &'a self,
        _config: &'a SourceConfig,
        statement: &'a str,
        params: &'a [Param],
        expect_rows: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64, WriteError>> {
        Box::pin(async move {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect_with(
                &self
                    .options
                    .clone()
                    .read_only(false)
                    .create_if_missing(false)
                    .busy_timeout(timeout),
            )
            .await
            .map_err(|e| classify(e, false))?;
            let result: Result<u64, WriteError> =
                async { transact!(conn, statement, params, expect_rows, sqlite) }.await;
            let _ = conn.close().await;
            result
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Plain,
    Bool,
    Timestamp,
    /// An exact number, with the scale of `NUMERIC(p,s)` when declared.
    Decimal(Option<u32>),
}

fn declared(type_name: &str) -> Declared {
    let t = type_name.to_ascii_uppercase();
    if t.contains("BOOL") {
        Declared::Bool
    } else if t.contains("DATE") || t.contains("TIME") {
        Declared::Timestamp
    } else if t.contains("DEC") || t.contains("NUMERIC") || t.contains("MONEY") {
        // NUMERIC(12,2): SQLite keeps the value as INTEGER or REAL; the scale is put back.
        let scale = t
            .split_once(',')
            .and_then(|(_, rest)| rest.trim_end_matches(')').trim().parse().ok());
        Declared::Decimal(scale)
    } else {
        Declared::Plain
    }
}

fn with_scale(d: rust_decimal::Decimal, scale: Option<u32>) -> Value {
    let mut d = d;
    if let Some(s) = scale
        && d.scale() < s
    {
        d.rescale(s);
    }
    Value::Decimal(d)
}

fn decode(row: &SqliteRow, i: usize, d: Declared) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info().name().to_string();
    Ok(match storage.as_str() {
        "INTEGER" => {
            let v: i64 = row.try_get_unchecked(i)?;
            match d {
                Declared::Bool => Value::Bool(v != 0),
                Declared::Decimal(scale) => with_scale(v.into(), scale),
                _ => Value::Int(v),
            }
        }
        "REAL" => {
            let v: f64 = row.try_get_unchecked(i)?;
            match (d, decimal_from_f64(v)) {
                (Declared::Decimal(scale), Some(dec)) => with_scale(dec, scale),
                _ => Value::Double(v),
            }
        }
        "BLOB" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i)?.into()),
        _ => {
            let s: String = row.try_get_unchecked(i)?;
            match d {
                Declared::Timestamp => match parse_timestamp_text(&s) {
                    Some(t) => Value::Timestamp(t),
                    None => Value::Text(s.into()),
                },
                Declared::Decimal(scale) => match s.trim().parse() {
                    Ok(dec) => with_scale(dec, scale),
                    Err(_) => Value::Text(s.into()),
                },
                _ => Value::Text(s.into()),
            }
        }
    })
}

/// The result columns of a query with their declared types. sqlx maps declared types to a few
/// families and drops the rest (`NUMERIC(10,2)` becomes nothing), so SQLite is asked directly:
/// a TEMP view over the query reports each column's declared type. TEMP objects live outside
/// the database file, so this works on a read-only connection, and the view is dropped again.
async fn declared_columns(
    txn: &mut sqlx::SqliteConnection,
    wrapped: &str,
) -> Result<(Vec<String>, Vec<String>), RunError> {
    const VIEW: &str = "invariantd_describe";
    txn.execute(AssertSqlSafe(format!("DROP VIEW IF EXISTS temp.{VIEW}")))
        .await
        .map_err(|e| query_error(e, "cannot describe the query", ""))?;
    txn.execute(AssertSqlSafe(format!(
        "CREATE TEMP VIEW {VIEW} AS {wrapped}"
    )))
    .await
    .map_err(|e| query_error(e, "the query is not valid", ""))?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT name, type FROM pragma_table_info('{VIEW}', 'temp') ORDER BY cid"
    )))
    .fetch_all(&mut *txn)
    .await
    .map_err(|e| query_error(e, "cannot describe the query", ""))?;
    txn.execute(AssertSqlSafe(format!("DROP VIEW temp.{VIEW}")))
        .await
        .map_err(|e| query_error(e, "cannot describe the query", ""))?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    for row in rows {
        columns.push(
            row.try_get::<String, _>(0)
                .map_err(|e| query_error(e, "cannot describe the query", ""))?,
        );
        types.push(
            row.try_get::<String, _>(1)
                .map_err(|e| query_error(e, "cannot describe the query", ""))?,
        );
    }
    Ok((columns, types))
}

/// Virtual-machine steps between two looks at the clock: well under a millisecond.
const STEPS_PER_CHECK: i32 = 10_000;

async fn read(
    pool: &sqlx::SqlitePool,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let mut txn = pool.begin().await.map_err(|e| {
        RunError::new(
            ErrorKind::SourceUnreachable,
            format!("cannot open the database: {e}"),
        )
    })?;
    let deadline = std::time::Instant::now() + config.statement_timeout;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    txn.lock_handle()
        .await
        .map_err(|e| query_error(e, "cannot start reading", ""))?
        .set_progress_handler(STEPS_PER_CHECK, move || {
            !stopping.load(Ordering::Relaxed) && std::time::Instant::now() < deadline
        });
    let wrapped = wrap(&request.query);
    let (names, types) = declared_columns(&mut txn, &wrapped).await?;
    let columns = Columns::new(
        names.into_iter().zip(types).map(|(name, ty)| {
            let d = declared(&ty);
            (name, ty, Some(d))
        }),
        "",
    )?;
    // SQLite's own rule for integer affinity: the declared type contains "INT".
    // SQLite's types are the values', not the columns': any column may hold any of them.
    let description = columns.description(
        &request.key,
        |i| {
            if columns.types[i].to_ascii_uppercase().contains("INT") {
                KeyKind::Int
            } else {
                KeyKind::Text
            }
        },
        |_| Types::COLUMN,
    );
    let key = format!("invariantd_q.{}", quote_ident(&request.key, '"'));
    // SQLite keeps times as text (or numbers) in any of the forms its date functions read.
    let since = |i: usize, p: &str| {
        let column = format!("invariantd_q.{}", quote_ident(&columns.names[i], '"'));
        Ok(format!("julianday({column}) >= julianday({p})"))
    };
    let key_sql = KeySql {
        as_text: format!("CAST({key} AS TEXT)"),
        order_text: format!("CAST({key} AS TEXT) COLLATE BINARY"),
        order_int: key.clone(),
        column: key,
        since: &since,
        text: text_from_hex,
    };
    let decode_row = |row: &SqliteRow| columns.decode(row, decode);
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
        stop.store(true, Ordering::Relaxed);
    }
    result
}

/// A text value from UTF-8 bytes in hexadecimal.
fn text_from_hex(hex: &str) -> String {
    format!("CAST(X'{hex}' AS TEXT)")
}
