//! MySQL and MariaDB: a READ ONLY transaction with the server's statement time limit
//! (`max_statement_time` on MariaDB, `max_execution_time` on MySQL), byte-wise text order
//! through `CAST(… AS BINARY)`, and decoding by the column's type. A query whose run is
//! abandoned is stopped with `KILL QUERY` from a connection of its own.

use sqlx::mysql::MySqlRow;
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
enum Decode {
    Bool,
    Int,
    UInt,
    Float,
    Double,
    Decimal,
    Text,
    /// Binary types, and text columns with a binary collation (which MySQL reports as binary):
    /// text when the bytes are UTF-8.
    Binary,
    Timestamp,
    Datetime,
    Date,
    Time,
}

/// What values each decoder produces (unsigned integers above 2^63 become decimals; binary
/// data is text when it is UTF-8).
fn value_types(d: Decode) -> Types {
    match d {
        Decode::Bool => Types::BOOL,
        Decode::Int => Types::INT,
        Decode::UInt => Types::INT.with(Types::DECIMAL),
        Decode::Float | Decode::Double => Types::DOUBLE,
        Decode::Decimal => Types::DECIMAL,
        Decode::Text => Types::STRING,
        Decode::Binary => Types::STRING.with(Types::BYTES),
        Decode::Timestamp | Decode::Datetime | Decode::Date => Types::TIMESTAMP,
        Decode::Time => Types::COLUMN,
    }
}

fn decoder(type_name: &str) -> Option<Decode> {
    Some(match type_name {
        "BOOLEAN" => Decode::Bool,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Decode::Int,
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => Decode::UInt,
        "FLOAT" => Decode::Float,
        "DOUBLE" => Decode::Double,
        "DECIMAL" => Decode::Decimal,
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "JSON" => Decode::Text,
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => Decode::Binary,
        "TIMESTAMP" => Decode::Timestamp,
        "DATETIME" => Decode::Datetime,
        "DATE" => Decode::Date,
        "TIME" => Decode::Time,
        "NULL" => Decode::Text,
        _ => return None,
    })
}

fn key_kind(d: Decode) -> KeyKind {
    match d {
        Decode::Int | Decode::UInt => KeyKind::Int,
        Decode::Text | Decode::Binary => KeyKind::Text,
        _ => KeyKind::Unsupported,
    }
}

fn decode(row: &MySqlRow, i: usize, d: Decode) -> Result<Value, sqlx::Error> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match d {
        Decode::Bool => opt(row.try_get_unchecked::<Option<i8>, _>(i)?, |v| {
            Value::Bool(v != 0)
        }),
        Decode::Int => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, Value::Int),
        Decode::UInt => opt(
            row.try_get_unchecked::<Option<u64>, _>(i)?,
            |v| match i64::try_from(v) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Decimal(v.into()),
            },
        ),
        Decode::Float => opt(row.try_get_unchecked::<Option<f32>, _>(i)?, |v| {
            Value::Double(v.into())
        }),
        Decode::Double => opt(row.try_get_unchecked::<Option<f64>, _>(i)?, Value::Double),
        Decode::Decimal => opt(
            row.try_get_unchecked::<Option<rust_decimal::Decimal>, _>(i)?,
            Value::Decimal,
        ),
        Decode::Text => opt(row.try_get_unchecked::<Option<String>, _>(i)?, |s| {
            Value::Text(s.into())
        }),
        Decode::Binary => {
            opt(
                row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?,
                |b| match String::from_utf8(b) {
                    Ok(s) => Value::Text(s.into()),
                    Err(e) => Value::Bytes(e.into_bytes().into()),
                },
            )
        }
        Decode::Timestamp => opt(row.try_get_unchecked::<Option<DateTime<Utc>>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_datetime(t))
        }),
        Decode::Datetime => opt(row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_naive(t))
        }),
        Decode::Date => opt(row.try_get_unchecked::<Option<NaiveDate>, _>(i)?, |d| {
            Value::Timestamp(timestamp_from_date(d))
        }),
        Decode::Time => opt(row.try_get_unchecked::<Option<NaiveTime>, _>(i)?, |t| {
            Value::Text(t.to_string().into())
        }),
    })
}

pub(super) async fn read(
    pool: &sqlx::MySqlPool,
    config: &SourceConfig,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError> {
    let ConnectOptions::MySql(options) = &config.options else {
        unreachable!("a MySQL pool has MySQL options")
    };
    let mut conn =
        super::acquire_fast::<sqlx::MySql, _>(pool.acquire(), options, config.connect_timeout)
            .await?;
    // The limit is a session variable: set before the transaction, on this connection.
    let timeout = config.statement_timeout;
    let mariadb = format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64());
    if conn.execute(AssertSqlSafe(mariadb)).await.is_err() {
        let mysql = format!(
            "SET SESSION max_execution_time = {}",
            timeout.as_millis().max(1)
        );
        conn.execute(AssertSqlSafe(mysql)).await.map_err(|e| {
            super::query_error(e, "cannot set the statement timeout", &request.query)
        })?;
    }
    // To stop the query from another connection if the run is abandoned.
    let thread: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| super::query_error(e, "cannot start reading", &request.query))?;
    let mut txn = sqlx::Connection::begin_with(&mut *conn, "START TRANSACTION READ ONLY")
        .await
        .map_err(|e| {
            super::query_error(e, "cannot start a read-only transaction", &request.query)
        })?;

    let wrapped = wrap(&request.query);
    let statement = (&mut *txn)
        .prepare(AssertSqlSafe(wrapped.clone()).into_sql_str())
        .await
        .map_err(|e| super::query_error(e, "the query is not valid", &request.query))?;
    let columns = Columns::new(
        statement.columns().iter().map(|c| {
            let ty = c.type_info().name();
            (c.name().to_string(), ty.to_string(), decoder(ty))
        }),
        "`CAST(column AS CHAR)`",
    )?;
    let description =
        columns.description(&request.key, |i| key_kind(columns.decoders[i]), value_types);
    let key = format!("invariantd_q.{}", quote_ident(&request.key, '`'));
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
        order_text: format!("CAST({key} AS BINARY)"),
        order_int: key.clone(),
        column: key,
        since: &since,
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
    if super::interrupted(&result) {
        // The connection is still held, so the thread cannot be running anyone else's query.
        let stop = async {
            use sqlx::{ConnectOptions as _, Connection as _};
            let mut conn = options.connect().await?;
            conn.execute(AssertSqlSafe(format!("KILL QUERY {thread}")))
                .await?;
            conn.close().await
        };
        super::stop_on_server(&config.name, stop, config.connect_timeout).await;
    }
    result
}
