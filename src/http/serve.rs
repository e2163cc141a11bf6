//! The HTTP server loop: HTTP/1.1 connections served with bounds a hostile or broken client
//! cannot get around, so `/metrics` and `/readyz` keep answering.
//!
//! - A request, headers and body together, must arrive within `REQUEST_TIMEOUT` of the moment
//!   its connection started waiting for it (accepted, or done with the request before): hyper
//!   closes a connection whose headers are late (its header-read timer also runs while a
//!   kept-alive connection waits for its next request), and the body reader
//!   (`super::guard::body`) answers 408 at the same deadline (`Receiving`).
//! - At most `MAX_CONNECTIONS` connections are served at once. When all are taken, the
//!   connection that has waited longest for a request it has not finished receiving is closed
//!   to make room for the new one: clients that hold connections without finishing a request
//!   cannot lock newer ones out. Only when every connection is busy with a request the server
//!   is handling is the new one closed at once. Both are logged, at most every
//!   `CAP_LOG_EVERY`.
//! - Request bodies are bounded by the router (`super::guard`).
//!
//! On shutdown the listener closes and each connection finishes the request it is serving.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long a client may take to send a whole request (headers and body), counted from when
/// its connection started waiting for it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How often, at most, shed and refused connections are logged.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a new connection waits for the slot of the connection shed for it.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// One connection, as the server's table of connections sees it.
struct Connection {
    /// When it started waiting for the request it is receiving (or its next one).
    since: Mutex<Instant>,
    /// Whether the request it received is being handled: such a connection is never shed.
    handling: AtomicBool,
    /// Cancelled to close it.
    shed: CancellationToken,
}

impl Connection {
    fn waiting_since(&self) -> Instant {
        *self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The request a connection is receiving, as the handlers see it: its deadline, and the way to
/// say it has been received whole.
#[derive(Clone)]
pub struct Receiving {
    connection: Arc<Connection>,
    timeout: Duration,
}

impl Receiving {
    /// When the whole request must have arrived.
    pub fn deadline(&self) -> Instant {
        self.connection.waiting_since() + self.timeout
    }

    /// How long the whole request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The request has arrived whole: its connection is busy and is not shed for another.
    pub fn received(&self) {
        self.connection.handling.store(true, Ordering::Relaxed);
    }
}

/// The connections being served, by number.
#[derive(Default)]
struct Table {
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection that has waited longest for a request it has not received
    /// whole; false when every connection is handling one.
    fn shed_oldest_unfinished(&self) -> bool {
        let table = self.lock();
        let oldest = table
            .values()
            .filter(|c| !c.handling.load(Ordering::Relaxed) && !c.shed.is_cancelled())
            .min_by_key(|c| c.waiting_since());
        match oldest {
            Some(c) => {
                c.shed.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Listed<'a>(&'a Table, u64);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Connections shed or refused since the last log line.
#[derive(Default)]
struct CapLog {
    shed: u64,
    refused: u64,
    logged: Option<Instant>,
}

impl CapLog {
    fn note(&mut self, shed: bool, max_connections: usize, peer: std::net::SocketAddr) {
        if shed {
            self.shed += 1;
        } else {
            self.refused += 1;
        }
        if self.logged.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
            warn!(
                max_connections,
                shed = self.shed,
                refused = self.refused,
                peer = %peer,
                "Too many HTTP connections: closing the oldest that have not finished a request (refusing new ones when every connection is busy)."
            );
            *self = CapLog {
                logged: Some(Instant::now()),
                ..CapLog::default()
            };
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled. An error is the listener failing.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, stop, MAX_CONNECTIONS, REQUEST_TIMEOUT).await
}

/// `serve` with its bounds given, for tests.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    max_connections: usize,
    request_timeout: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let table = Arc::new(Table::default());
    let connections = TaskTracker::new();
    let mut cap_log = CapLog::default();
    let mut next_id = 0u64;
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let shed = table.shed_oldest_unfinished();
                cap_log.note(shed, max_connections, peer);
                let freed = match shed {
                    true => tokio::time::timeout(SHED_WAIT, slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    false => None,
                };
                match freed {
                    Some(slot) => slot,
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        next_id += 1;
        let id = next_id;
        let connection = Arc::new(Connection {
            since: Mutex::new(Instant::now()),
            handling: AtomicBool::new(false),
            shed: CancellationToken::new(),
        });
        table.lock().insert(id, connection.clone());
        let service = {
            let (app, connection) = (TowerToHyperService::new(app.clone()), connection.clone());
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                let (app, connection) = (app.clone(), connection.clone());
                async move {
                    let receiving = Receiving {
                        connection: connection.clone(),
                        timeout: request_timeout,
                    };
                    if axum::body::HttpBody::is_end_stream(request.body()) {
                        receiving.received();
                    }
                    request.extensions_mut().insert(receiving);
                    let response = app.call(request).await;
                    // Waiting for the next request from now on.
                    *connection.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    connection.handling.store(false, Ordering::Relaxed);
                    response
                }
            })
        };
        let (stop, table) = (stop.clone(), table.clone());
        connections.spawn(async move {
            let _slot = slot;
            let _listed = Listed(&table, id);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout);
            let served = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(served);
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = connection.shed.cancelled() => {
                    debug!(peer = %peer, "HTTP connection closed to make room for a newer one.");
                    return;
                }
                () = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
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
