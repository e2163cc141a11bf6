//! Sources: the databases rules read, one lazily connected pool each, and the reader that
//! streams one dataset out of one of them in key order.
//!
//! A dataset is read in two steps on one connection, inside one read-only transaction with
//! the source's statement timeout:
//! 1. describe: the query is prepared (not run) to learn its columns and the type of its key;
//! 2. stream: once every dataset of the rule is described, the engine picks one key order for
//!    all of them (integers when every key column is an integer, byte-wise text otherwise) and
//!    each reader runs its query with that `ORDER BY` pushed into the database, sending typed
//!    rows in small batches through a bounded channel. Memory stays flat whatever the table size.
//!
//! A reader whose run goes away, or whose deadline passes, stops its query on the server before
//! it lets the connection go (`errors::interrupted`), and holds its reserved connection until it
//! ends; `Sources::settle` waits for readers at shutdown.
//!
//! The files, in the order they use each other: `request` (what a read is asked and answers),
//! `pacing` (rows per second), `filters` (the statement around the query), `errors`, `connect`,
//! `pump` (the half of every reader that is the same for all databases), `write` (repairs),
//! `backend` (the trait each database implements), then one home per database — `postgres/`,
//! `mysql/`, `sqlite.rs` — each holding its driver, its decoders and its own wire reader where
//! it has one. This file only holds sources together.

mod backend;
mod catalog;
mod connect;
mod errors;
mod filters;
mod mysql;
mod pacing;
mod postgres;
mod pump;
mod request;
mod sqlite;
mod tls;
mod write;

pub use request::{
    ChangedSince, Description, KeyKind, KeyMode, KeyRange, ReadRequest, Reader, ReaderMsg,
    SharedSnapshot, Spent, key_of,
};
pub use write::WriteError;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::config::{ConnectOptions, SourceConfig};
use crate::value::Secrets;
use crate::verdict::{ErrorKind, Param, RunError};
use backend::Backend;
pub use backend::HeldSnapshot;
pub use catalog::Column;
use pacing::Throttle;
use pump::Sink;

/// Batches in flight per dataset: bounds memory at about `pump::BATCH_ROWS * CHANNEL_BATCHES`
/// rows.
const CHANNEL_BATCHES: usize = 4;

/// A configured database with its connection pool.
pub struct Source {
    pub config: SourceConfig,
    backend: Box<dyn Backend>,
    /// One permit per pooled connection. A rule run takes the permits for all its datasets on
    /// this source before it starts reading, so waiting for a busy pool is never mistaken for
    /// a source that cannot be reached (the pool's own timeout then only measures connecting).
    permits: Arc<tokio::sync::Semaphore>,
    /// The reader tasks on this source, so that a shutdown can wait for their queries to be
    /// stopped on the server (see `Sources::settle`).
    readers: TaskTracker,
    /// `max_rows_per_second`, shared by every read of this source.
    throttle: Option<Throttle>,
}

impl Source {
    /// Creates the pool without connecting: a source that is down makes its rules `unknown`
    /// when they run, and nothing else.
    pub fn new(config: SourceConfig) -> Source {
        let backend: Box<dyn Backend> = match &config.options {
            ConnectOptions::Postgres(o, _) => Box::new(postgres::Postgres::new(&config, o)),
            ConnectOptions::MySql(o, _) => Box::new(mysql::MySql::new(&config, o)),
            ConnectOptions::Sqlite(o) => Box::new(sqlite::Sqlite::new(&config, o)),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize));
        Source {
            throttle: config.max_rows_per_second.map(Throttle::new),
            config,
            backend,
            permits,
            readers: TaskTracker::new(),
        }
    }

    /// Waits until `n` connections of this source are free for one run, and holds them until
    /// the returned permit is dropped.
    pub async fn reserve(&self, n: u32) -> Result<tokio::sync::OwnedSemaphorePermit, RunError> {
        if n > self.config.max_connections {
            return Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "the rule reads {n} datasets from source `{}` at once, but its max_connections is {}",
                    self.config.name, self.config.max_connections
                ),
            ));
        }
        self.permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| RunError::new(ErrorKind::Cancelled, "the source is shutting down"))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the source answers — one connection and one query, failing fast like a read —
    /// and whether its role could do more than read: `Some(reason)` when it is a PostgreSQL
    /// superuser, or has MySQL's SUPER or FILE privilege (a "read-only" check could then write
    /// files on the server, e.g. with `lo_export`).
    pub async fn probe(&self) -> Result<Option<String>, RunError> {
        let _permit = self.reserve(1).await?;
        self.backend.probe(&self.config).await
    }

    /// Whether the datasets of one rule run on this source can read one snapshot.
    pub fn shares_snapshot(&self) -> bool {
        self.backend.shares_snapshot()
    }

    /// A snapshot of this source for the ranges of a partitioned sweep to import wherever
    /// they are read, held until dropped (on a connection beyond `max_connections`); `None`
    /// where the database cannot export one.
    pub async fn export_snapshot(&self) -> Result<Option<HeldSnapshot>, RunError> {
        self.backend.export_snapshot(&self.config).await
    }

    /// Executes one repair statement. Takes one of the source's connections (waiting, like a
    /// run, for one to be free); `timeout` bounds the whole of it.
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
        let work = self
            .backend
            .write(&self.config, statement, params, expect_rows, timeout);
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(WriteError::Ambiguous(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// Makes ring the process's default TLS provider. sqlx builds its certificate verifiers
/// (MySQL `verify_ca`/`verify_identity`, PostgreSQL `verify-ca`/`verify-full`) with the
/// default provider, and with both ring (sqlx) and aws-lc (reqwest, lettre) in the build
/// there is none: the first verified connection would panic. ring is the one sqlx's TLS runs
/// on. Called at start and by `Sources::new`; a second call finds it installed.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// All configured sources by name, and the secrets no run may publish.
#[derive(Clone, Default)]
pub struct Sources {
    sources: HashMap<String, Arc<Source>>,
    secrets: Arc<Secrets>,
}

impl Sources {
    pub fn new(configs: &[SourceConfig], secrets: Secrets) -> Sources {
        install_tls_provider();
        Sources {
            sources: configs
                .iter()
                .map(|c| (c.name.clone(), Arc::new(Source::new(c.clone()))))
                .collect(),
            secrets: Arc::new(secrets),
        }
    }

    /// The sources of a new generation: those `keep` says are unchanged are the same sources,
    /// pools and connections included; the others are new.
    pub fn reloaded(
        &self,
        configs: &[SourceConfig],
        secrets: Secrets,
        keep: impl Fn(&str) -> bool,
    ) -> Sources {
        Sources {
            sources: configs
                .iter()
                .map(|c| {
                    let source = match self.sources.get(&c.name) {
                        Some(old) if keep(&c.name) => old.clone(),
                        _ => Arc::new(Source::new(c.clone())),
                    };
                    (c.name.clone(), source)
                })
                .collect(),
            secrets: Arc::new(secrets),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.get(name)
    }

    /// What runs on these sources must never show.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Waits, at most `limit`, until every reader has ended, each having stopped its query on
    /// the server if its run was abandoned. False when some were still going at the limit.
    pub async fn settle(&self, limit: Duration) -> bool {
        let all = futures_util::future::join_all(self.sources.values().map(|s| {
            s.readers.close();
            s.readers.wait()
        }));
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Every source, in name order.
    pub fn all(&self) -> Vec<&Arc<Source>> {
        let mut all: Vec<&Arc<Source>> = self.sources.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

/// Starts reading a dataset, holding `connection` (reserved with `Source::reserve`) until it
/// ends. The reader describes the query, waits for the key order, then streams rows until
/// done, failed, or its receiver is dropped — then it stops its query on the server.
pub fn spawn_reader(
    source: Arc<Source>,
    request: ReadRequest,
    connection: tokio::sync::OwnedSemaphorePermit,
) -> Reader {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let (mode_tx, mode_rx) = oneshot::channel();
    let spent = Spent::default();
    let given_back = spent.clone();
    source.readers.clone().spawn(async move {
        let _connection = connection;
        // However the reader ends, the readers waiting for its snapshot go on.
        let _published = request
            .snapshot
            .clone()
            .filter(|s| s.exporter)
            .map(PublishOnDrop);
        let to = Sink {
            tx: &tx,
            throttle: source.throttle.as_ref(),
            spent: &spent,
        };
        let result = source
            .backend
            .read(&source.config, &request, to, mode_rx)
            .await;
        if let Err(e) = result {
            let _ = tx.send(ReaderMsg::Failed(e)).await;
        }
    });
    Reader {
        messages: rx,
        mode: mode_tx,
        spent: given_back,
    }
}

/// Tells the readers waiting for an exporter's snapshot that there is none, if the exporter
/// ends without publishing one.
struct PublishOnDrop(SharedSnapshot);

impl Drop for PublishOnDrop {
    fn drop(&mut self) {
        self.0.publish(None);
    }
}
