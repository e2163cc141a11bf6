//! The HTTP server loop: HTTP/1.1 connections served with bounds a hostile or broken client
//! cannot get around, so `/metrics` and `/readyz` keep answering.
//!
//! - A client has `HEADER_TIMEOUT` to send a request's headers, and a kept-alive connection
//!   that sends no new request within it is closed (hyper's header-read timer also runs while a
//!   connection waits for its next request): half-open connections do not pile up.
//! - At most `MAX_CONNECTIONS` connections are served at once. One more is accepted and closed
//!   at once (the file descriptors stay bounded and the kernel's backlog keeps moving), and the
//!   log says so, at most every `CAP_LOG_EVERY`.
//! - Request bodies are bounded by the router (`super::guard`).
//!
//! On shutdown the listener closes and each connection finishes the request it is serving.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long a client may take to send a request's headers, or to send its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How often, at most, refused connections are logged.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` is cancelled. An error is the listener failing.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, stop, MAX_CONNECTIONS, HEADER_TIMEOUT).await
}

/// `serve` with its bounds given, for tests.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    max_connections: usize,
    header_timeout: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let connections = TaskTracker::new();
    let mut refused = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors, or a connection reset before it was accepted: the
                // listener is fine, so wait a moment rather than spin or stop serving.
                Err(e) if is_transient(&e) => {
                    debug!(error = %e, "Could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if logged.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
                warn!(
                    max_connections,
                    refused,
                    peer = %peer,
                    "Too many HTTP connections: refusing new ones until some close."
                );
                logged = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(peer = %peer, error = %e, "HTTP connection ended with an error.");
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(e.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE: no file descriptor left
}
