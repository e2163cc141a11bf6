//! Writing to a source, for SQL repairs: one statement with bound parameters, in its own
//! read-write transaction, committed only when it affected exactly the rows it expects.
//!
//! How a failure ends says what the database may have done, which decides whether a repair
//! may be tried again:
//! - `NotDone`: nothing was committed — the connection could not be had, the database refused
//!   the statement, or the row count was wrong and the transaction was rolled back;
//! - `Ambiguous`: the statement or the commit was sent and no answer came (a timeout, a
//!   connection reset): it may have been committed.

use std::time::Duration;

use sqlx::Connection as _;

use super::{Pool, Source};
use crate::config::ConnectOptions;
use crate::value::format_timestamp;
use crate::verdict::Param;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Nothing was committed; `retry` when trying again may succeed (the source is down, a
    /// deadlock, a serialization failure), not when the statement itself is wrong.
    NotDone { retry: bool, message: String },
    /// It may have been committed.
    Ambiguous(String),
}

/// Database error codes that mean "try again": serialization failures and deadlocks.
const TRANSIENT_CODES: [&str; 4] = ["40001", "40P01", "1213", "1205"];

fn classify(e: sqlx::Error, sent: bool) -> WriteError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            WriteError::NotDone {
                retry: TRANSIENT_CODES.contains(&code.as_str()),
                message: format!("the database refused it: {}", db.message()),
            }
        }
        e if !sent => WriteError::NotDone {
            retry: true,
            message: format!("cannot reach the source: {e}"),
        },
        e => WriteError::Ambiguous(format!("no answer after sending it: {e}")),
    }
}

macro_rules! bind_params {
    ($query:expr, $params:expr, sqlite) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Null => q.bind(None::<String>),
                Param::Bool(b) => q.bind(*b),
                Param::Int(i) => q.bind(*i),
                Param::Double(d) => q.bind(*d),
                Param::Decimal(d) => q.bind(d.clone()),
                Param::Text(t) => q.bind(t.clone()),
                Param::Timestamp(t) => q.bind(format_timestamp(*t)),
                Param::Bytes(b) => q.bind(b.clone()),
            };
        }
        q
    }};
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Null => q.bind(None::<String>),
                Param::Bool(b) => q.bind(*b),
                Param::Int(i) => q.bind(*i),
                Param::Double(d) => q.bind(*d),
                Param::Decimal(d) => {
                    q.bind(
                        d.parse::<rust_decimal::Decimal>()
                            .map_err(|e| WriteError::NotDone {
                                retry: false,
                                message: format!("`{d}` is not a decimal: {e}"),
                            })?,
                    )
                }
                Param::Text(t) => q.bind(t.clone()),
                Param::Timestamp(t) => q.bind(
                    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(*t).ok_or_else(
                        || WriteError::NotDone {
                            retry: false,
                            message: format!("timestamp {t} is out of range"),
                        },
                    )?,
                ),
                Param::Bytes(b) => q.bind(b.clone()),
            };
        }
        q
    }};
}

/// Runs the statement in its own transaction with `timeout` for the whole of it; commits
/// when it affected `expect_rows` rows, else rolls back. Returns the rows affected.
macro_rules! transact {
    ($conn:expr, $statement:expr, $params:expr, $expect:expr, $($sqlite:ident)?) => {{
        let mut tx = $conn.begin().await.map_err(|e| classify(e, false))?;
        let query = bind_params!(sqlx::query(sqlx::AssertSqlSafe($statement.to_string())), $params $(, $sqlite)?);
        let n = query
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, true))?
            .rows_affected();
        if n != $expect {
            let _ = tx.rollback().await;
            return Err(WriteError::NotDone {
                retry: false,
                message: format!(
                    "the statement affected {n} row{}, not the {} expected (expect_rows); rolled back",
                    if n == 1 { "" } else { "s" },
                    $expect
                ),
            });
        }
        tx.commit().await.map_err(|e| classify(e, true))?;
        Ok(n)
    }};
}

impl Source {
    /// Executes one repair statement. Takes one of the source's connections (waiting, like a
    /// run, for one to be free).
    pub async fn execute(
        &self,
        statement: &str,
        params: &[Param],
        expect_rows: u64,
        timeout: Duration,
    ) -> Result<u64, WriteError> {
        let _permit = self.reserve(1).await.map_err(|e| WriteError::NotDone {
            retry: true,
            message: e.message,
        })?;
        let work = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    let mut conn = pool.acquire().await.map_err(|e| classify(e, false))?;
                    let ms = self.config.statement_timeout.as_millis().max(1);
                    sqlx::query(sqlx::AssertSqlSafe(format!("SET statement_timeout = {ms}")))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| classify(e, false))?;
                    transact!(conn, statement, params, expect_rows,)
                }
                Pool::MySql(pool, _) => {
                    let mut conn = pool.acquire().await.map_err(|e| classify(e, false))?;
                    transact!(conn, statement, params, expect_rows,)
                }
                // The pool's connections are read-only: a write opens its own.
                Pool::Sqlite(_) => {
                    let ConnectOptions::Sqlite(o) = &self.config.options else {
                        unreachable!("a SQLite pool has SQLite options")
                    };
                    let mut conn = sqlx::SqliteConnection::connect_with(
                        &o.clone()
                            .read_only(false)
                            .create_if_missing(false)
                            .busy_timeout(timeout),
                    )
                    .await
                    .map_err(|e| classify(e, false))?;
                    let result: Result<u64, WriteError> =
                        transact!(conn, statement, params, expect_rows, sqlite);
                    let _ = conn.close().await;
                    result
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(WriteError::Ambiguous(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}
