//! PostgreSQL: a REPEATABLE READ READ ONLY transaction with `SET LOCAL statement_timeout`,
//! byte-wise text order through `COLLATE "C"`, and decoding by the column's type. A query
//! whose run is abandoned is cancelled with `pg_cancel_backend` from a connection of its own.

use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind};
use sqlx::{AssertSqlSafe, Column, Executor, Row as _, SqlSafeStr, Statement, TypeInfo};
use tokio::sync::oneshot;

use super::{
    Columns, KeyKind, KeyMode, KeySql, ReadRequest, Sink, describe_then_stream, quote_ident, wrap,
};
use crate::config::{ConnectOptions, SourceConfig};
use crate::expr::types::Types;
use crate::value::{Value, timestamp_from_date, timestamp_from_datetime, timestamp_from_naive};
use crate::verdict::RunError;

#[derive(Debug, Clone, Copy)]
pub(super) enum Decode {
    Bool,
    I16,
    I32,
    I64,
    Oid,
    F32,
    F64,
    Numeric,
    Text,
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
    Bytea,
    Jsonb,
}

fn decoder(ty: &PgTypeInfo) -> Option<Decode> {
    Some(match ty.name() {
        "BOOL" => Decode::Bool,
        "INT2" => Decode::I16,
        "INT4" => Decode::I32,
        "INT8" => Decode::I64,
        "OID" => Decode::Oid,
        "FLOAT4" => Decode::F32,
        "FLOAT8" => Decode::F64,
        "NUMERIC" => Decode::Numeric,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "\"CHAR\"" | "JSON" | "XML" => Decode::Text,
        "UUID" => Decode::Uuid,
        "TIMESTAMPTZ" => Decode::Timestamptz,
        "TIMESTAMP" => Decode::Timestamp,
        "DATE" => Decode::Date,
        "BYTEA" => Decode::Bytea,
        "JSONB" => Decode::Jsonb,
        name if name.eq_ignore_ascii_case("citext") => Decode::Text,
        _ => match ty.kind() {
            // An enum's binary form is its label.
            PgTypeKind::Enum(_) => Decode::Text,
            PgTypeKind::Domain(base) => return decoder(base),
            _ => return None,
        },
    })
}

fn value_types(d: Decode) -> Types {
    match d {
        Decode::Bool => Types::BOOL,
        Decode::I16 | Decode::I32 | Decode::I64 | Decode::Oid => Types::INT,
        Decode::F32 | Decode::F64 => Types::DOUBLE,
        Decode::Numeric => Types::DECIMAL,
        Decode::Text | Decode::Uuid | Decode::Jsonb => Types::STRING,
        Decode::Timestamptz | Decode::Timestamp | Decode::Date => Types::TIMESTAMP,
        Decode::Bytea => Types::BYTES,
    }
}

fn key_kind(d: Decode) -> KeyKind {
    match d {
        Decode::I16 | Decode::I32 | Decode::I64 | Decode::Oid => KeyKind::Int,
        Decode::Text | Decode::Uuid => KeyKind::Text,
        _ => KeyKind::Unsupported,
    }
}

/// Types were matched to decoders when the query was described, so the per-value type checks
/// of `try_get` are skipped (they were a measurable share of a sweep).
fn decode(row: &PgRow, i: usize, d: Decode) -> Result<Value, sqlx::Error> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match d {
        Decode::Bool => opt(row.try_get_unchecked::<Option<bool>, _>(i)?, Value::Bool),
        Decode::I16 => opt(row.try_get_unchecked::<Option<i16>, _>(i)?, |v| {
            Value::Int(v.into())
        }),
        Decode::I32 => opt(row.try_get_unchecked::<Option<i32>, _>(i)?, |v| {
            Value::Int(v.into())
        }),
        Decode::I64 => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, Value::Int),
        Decode::Oid => opt(
            row.try_get_unchecked::<Option<sqlx::postgres::types::Oid>, _>(i)?,
            |v| Value::Int(v.0.into()),
        ),
        Decode::F32 => opt(row.try_get_unchecked::<Option<f32>, _>(i)?, |v| {
            Value::Double(v.into())
        }),
        Decode::F64 => opt(row.try_get_unchecked::<Option<f64>, _>(i)?, Value::Double),
        Decode::Numeric => opt(
            row.try_get_unchecked::<Option<rust_decimal::Decimal>, _>(i)?,
            Value::Decimal,
        ),
        Decode::Text => opt(row.try_get_unchecked::<Option<String>, _>(i)?, |s| {
            Value::Text(s.into())
        }),
        Decode::Uuid => opt(row.try_get_unchecked::<Option<uuid::Uuid>, _>(i)?, |u| {
            Value::Text(u.to_string().into())
        }),
        Decode::Timestamptz => opt(row.try_get_unchecked::<Option<DateTime<Utc>>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_datetime(t))
        }),
        Decode::Timestamp => opt(row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_naive(t))
        }),
        Decode::Date => opt(row.try_get_unchecked::<Option<NaiveDate>, _>(i)?, |d| {
            Value::Timestamp(timestamp_from_date(d))
        }),
        Decode::Bytea => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| {
            Value::Bytes(b.into())
        }),
        // JSONB's binary form is a version byte, then the JSON text.
        Decode::Jsonb => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| {
            Value::Text(String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into())
        }),
    })
}

pub(super) async fn read(
    pool: &sqlx::PgPool,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let ConnectOptions::Postgres(options) = &config.options else {
        unreachable!("a PostgreSQL pool has PostgreSQL options")
    };
    let mut conn =
        super::acquire_fast::<sqlx::Postgres, _>(pool.acquire(), options, config.connect_timeout)
            .await?;
    let mut backend = None;
    let result = read_on(&mut conn, config, request, to, mode, &mut backend).await;
    if result.is_err() {
        // A read that ended early may leave COPY data or a statement's rows unread on the
        // connection: it is closed, never handed to another run.
        conn.close_on_drop();
    }
    if super::interrupted(&result)
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
        super::stop_on_server(&config.name, stop, config.connect_timeout).await;
    }
    result
}

/// A read on one connection, in a read-only transaction; `backend` is set to the server
/// process that runs it, to stop it from outside if the read is abandoned.
async fn read_on(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
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
    .map_err(|e| super::query_error(e, "cannot start a read-only transaction", &request.query))?;
    let timeout_ms = config.statement_timeout.as_millis().max(1);
    txn.execute(AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {timeout_ms}"
    )))
    .await
    .map_err(|e| super::query_error(e, "cannot set the statement timeout", &request.query))?;
    // One snapshot for the rule's datasets on this source: imported before the first query.
    if let Some(shared) = request.snapshot.as_ref().filter(|s| !s.exporter)
        && let Some(id) = shared.wait(request.deadline).await
    {
        // The id comes from the server's own `pg_export_snapshot()` (hex digits and dashes).
        let id = id.replace('\'', "");
        txn.execute(AssertSqlSafe(format!("SET TRANSACTION SNAPSHOT '{id}'")))
            .await
            .map_err(|e| {
                super::query_error(e, "cannot share the run's snapshot", &request.query)
            })?;
    }
    // To stop the query from another connection if the run is abandoned.
    *backend = Some(
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *txn)
            .await
            .map_err(|e| super::query_error(e, "cannot start reading", &request.query))?,
    );
    if let Some(shared) = request.snapshot.as_ref().filter(|s| s.exporter) {
        // A standby before PostgreSQL 10 cannot export one (and a failed statement would end
        // the transaction): there each dataset keeps its own snapshot, as before sharing.
        let exported: Option<String> = sqlx::query_scalar(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 100000 \
             OR NOT pg_is_in_recovery() THEN pg_export_snapshot() END",
        )
        .fetch_one(&mut *txn)
        .await
        .map_err(|e| super::query_error(e, "cannot share the run's snapshot", &request.query))?;
        shared.publish(exported);
    }

    let wrapped = wrap(&request.query);
    let statement = (&mut *txn)
        .prepare(AssertSqlSafe(wrapped.clone()).into_sql_str())
        .await
        .map_err(|e| super::query_error(e, "the query is not valid", &request.query))?;
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
    };
    let decode_row = |row: &PgRow| columns.decode(row, decode);
    // A full sweep streams through binary COPY; reads of some keys or of recent changes bind
    // parameters, which COPY cannot, and use the prepared statement.
    if request.keys.is_none() && request.changed_since.is_none() {
        copy_sweep(
            &mut txn,
            description,
            &wrapped,
            &key_sql,
            &columns,
            request,
            to,
            mode,
        )
        .await
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

/// A full sweep: `COPY (query ORDER BY key) TO STDOUT (FORMAT binary)`, decoded by the types
/// the query was described with (see `pgcopy`).
#[allow(clippy::too_many_arguments)]
async fn copy_sweep(
    conn: &mut sqlx::PgConnection,
    description: super::Description,
    wrapped: &str,
    key_sql: &KeySql<'_>,
    columns: &Columns<Decode>,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let Some((key_index, mode)) = super::handshake(description, to, mode).await else {
        return Ok(());
    };
    let order_by = match mode {
        KeyMode::Int => &key_sql.order_int,
        KeyMode::Text => &key_sql.order_text,
    };
    let sql = format!("COPY ({wrapped} ORDER BY {order_by}) TO STDOUT (FORMAT binary)");
    // The server answers once the query has started: the wait may end with the run.
    let chunks = tokio::select! {
        chunks = tokio::time::timeout_at(request.deadline, conn.copy_out_raw(&sql)) => match chunks {
            Ok(chunks) => chunks.map_err(|e| super::query_error(e, "query failed", &request.query))?,
            Err(_) => return Err(super::timed_out()),
        },
        () = to.tx.closed() => return Err(super::abandoned()),
    };
    let rows =
        super::pgcopy::CopyRows::new(chunks, columns.decoders.clone(), columns.names.clone());
    super::pump(
        rows,
        &request.query,
        key_index,
        mode,
        request.deadline,
        |row| row,
        to,
    )
    .await
}
