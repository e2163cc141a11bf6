//! A read's errors in the database's own words: a statement cancelled by a timeout is a
//! `timeout`, anything else `query_failed` with the position translated into the rule's query;
//! and the errors of a read that ran out of time or whose run went away.

use super::filters::wrap;
use crate::verdict::{ErrorKind, RunError};

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
