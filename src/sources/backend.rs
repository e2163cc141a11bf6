//! The seam between a `Source` and one kind of database. A backend owns its pool and knows how
//! to read one dataset in key order, probe the database, write one repair statement, and
//! whether the datasets of one run on it (or the ranges of one partitioned sweep, anywhere) can
//! read one snapshot. Everything the databases share
//! (the request, the statement around the query, the pump, errors, pacing) lives beside it, so
//! a new kind of database is one folder implementing this trait and one line in
//! `Source::new`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::pump::Sink;
use super::request::{KeyMode, ReadRequest};
use super::write::WriteError;
use crate::config::SourceConfig;
use crate::verdict::{Param, RunError};

pub(crate) trait Backend: Send + Sync {
    /// Reads one dataset: describes the query, hands the description to `to`, waits for the
    /// run's key order on `mode`, then streams the rows in that order (see `pump.rs`). A read
    /// that ends early stops its query on the server before it returns.
    fn read<'a>(
        &'a self,
        config: &'a SourceConfig,
        request: &'a ReadRequest,
        to: Sink<'a>,
        mode: oneshot::Receiver<KeyMode>,
    ) -> BoxFuture<'a, Result<(), RunError>>;

    /// One connection and one query, failing fast like a read; `Some(reason)` when the role
    /// could do more than read.
    fn probe<'a>(
        &'a self,
        config: &'a SourceConfig,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>>;

    /// Runs one repair statement with bound parameters in its own read-write transaction,
    /// committed only when it affected `expect_rows` rows (see `write.rs`); `timeout` is what
    /// a wait for a lock may take where the database has no statement timeout of its own.
    fn write<'a>(
        &'a self,
        config: &'a SourceConfig,
        statement: &'a str,
        params: &'a [Param],
        expect_rows: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64, WriteError>>;

    /// A query listing the tables and columns the role can read (`catalog.rs`): one row per
    /// column, keyed by `id`, with `table_schema`, `table_name`, `column_name`, `position`,
    /// `data_type` and `primary_key` (1 or 0).
    fn catalog_query(&self) -> &'static str;

    /// Whether the datasets of one rule run on this source can read one snapshot (see
    /// `request::SharedSnapshot`).
    fn shares_snapshot(&self) -> bool {
        false
    }

    /// Opens a read-only transaction and exports its snapshot, for reads elsewhere (other
    /// processes, other hosts) to import while it is held: `None` where the database cannot.
    fn export_snapshot<'a>(
        &'a self,
        _config: &'a SourceConfig,
    ) -> BoxFuture<'a, Result<Option<HeldSnapshot>, RunError>> {
        Box::pin(async { Ok(None) })
    }
}

/// An exported snapshot, importable (`SharedSnapshot::imported`) while this is held: it holds
/// the exporting transaction open, and ends it when dropped.
pub struct HeldSnapshot {
    pub id: String,
    pub(crate) _hold: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for HeldSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldSnapshot({})", self.id)
    }
}
