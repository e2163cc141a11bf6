//! Connections: the pool's settings, taking a connection that fails fast when the database
//! cannot be reached, and stopping a query from outside its connection.

use std::time::Duration;

use crate::config::SourceConfig;
use crate::verdict::{ErrorKind, RunError};

pub(super) fn pool_options<DB: sqlx::Database>(
    config: &SourceConfig,
) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(config.connect_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
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
