//! Writing to a source, for SQL repairs: one statement with bound parameters, in its own
//! read-write transaction, committed only when it affected exactly the rows it expects. Each
//! backend runs `transact!` on a connection of its own kind.
//!
//! How a failure ends says what the database may have done, which decides whether a repair
//! may be tried again:
//! - `NotDone`: nothing was committed — the connection could not be had, the database refused
//!   the statement, or the row count was wrong and the transaction was rolled back;
//! - `Ambiguous`: the statement or the commit was sent and no answer came (a timeout, a
//!   connection reset): it may have been committed.

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

pub(super) fn classify(e: sqlx::Error, sent: bool) -> WriteError {
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
                $crate::verdict::Param::Null => q.bind(None::<String>),
                $crate::verdict::Param::Bool(b) => q.bind(*b),
                $crate::verdict::Param::Int(i) => q.bind(*i),
                $crate::verdict::Param::Double(d) => q.bind(*d),
                $crate::verdict::Param::Decimal(d) => q.bind(d.clone()),
                $crate::verdict::Param::Text(t) => q.bind(t.clone()),
                $crate::verdict::Param::Timestamp(t) => q.bind($crate::value::format_timestamp(*t)),
                $crate::verdict::Param::Bytes(b) => q.bind(b.clone()),
            };
        }
        q
    }};
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                $crate::verdict::Param::Null => q.bind(None::<String>),
                $crate::verdict::Param::Bool(b) => q.bind(*b),
                $crate::verdict::Param::Int(i) => q.bind(*i),
                $crate::verdict::Param::Double(d) => q.bind(*d),
                $crate::verdict::Param::Decimal(d) => {
                    q.bind(d.parse::<rust_decimal::Decimal>().map_err(|e| {
                        $crate::sources::write::WriteError::NotDone {
                            retry: false,
                            message: format!("`{d}` is not a decimal: {e}"),
                        }
                    })?)
                }
                $crate::verdict::Param::Text(t) => q.bind(t.clone()),
                $crate::verdict::Param::Timestamp(t) => q.bind(
                    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(*t).ok_or_else(
                        || $crate::sources::write::WriteError::NotDone {
                            retry: false,
                            message: format!("timestamp {t} is out of range"),
                        },
                    )?,
                ),
                $crate::verdict::Param::Bytes(b) => q.bind(b.clone()),
            };
        }
        q
    }};
}

/// Runs the statement in its own transaction with `timeout` for the whole of it; commits
/// when it affected `expect_rows` rows, else rolls back. Returns the rows affected.
macro_rules! transact {
    ($conn:expr, $statement:expr, $params:expr, $expect:expr, $($sqlite:ident)?) => {{
        use sqlx::Connection as _;
        let mut tx = $conn.begin().await.map_err(|e| $crate::sources::write::classify(e, false))?;
        let query = $crate::sources::write::bind_params!(sqlx::query(sqlx::AssertSqlSafe($statement.to_string())), $params $(, $sqlite)?);
        let n = query
            .execute(&mut *tx)
            .await
            .map_err(|e| $crate::sources::write::classify(e, true))?
            .rows_affected();
        if n != $expect {
            let _ = tx.rollback().await;
            return Err($crate::sources::write::WriteError::NotDone {
                retry: false,
                message: format!(
                    "the statement affected {n} row{}, not the {} expected (expect_rows); rolled back",
                    if n == 1 { "" } else { "s" },
                    $expect
                ),
            });
        }
        tx.commit().await.map_err(|e| $crate::sources::write::classify(e, true))?;
        Ok(n)
    }};
}

pub(super) use {bind_params, transact};
