//! The state store: rule runs, violations and their lifecycle, and cumulative counters, in
//! SQLite (embedded, the default) or PostgreSQL (for production and several replicas). One
//! file per table: `runs`, `violations`, `counters`, `alerts` (alert groups and the outbox),
//! `silences`, `audit`, `repairs`, `enabling`, `leases` (with the fence a guarded write checks)
//! and `sweeps` (partitioned sweeps and their ranges), and `history` (what the charts read)
//! and `open_cache` (what is open per rule, remembered while the daemon is the only writer,
//! `set_sole_writer`); the pure decisions they apply (four eyes,
//! enabling under the caps, a repair's lifecycle) are in `lifecycle`; this file owns the
//! connection, the migrations and the transaction that records a run.
//!
//! Lifecycle, per (rule, key): a finished run that finds a violation opens it, or bumps
//! `last_seen` and `occurrences` if it is already open; an open violation whose key the run
//! judged and found holding is resolved. A violation that comes back after being resolved is
//! a new row linked to the old one (`previous_id`). A run that did not finish (`unknown` for a
//! source down, a timeout…) changes nothing but the record of the run: no data is not good
//! data. Keys a run did not judge (grace, an error for that key) keep their state.
//!
//! A run's bookkeeping is done with batched statements, so a run with 100,000 violations
//! costs a few hundred statements, not 100,000; in one transaction for a usual run, in parts
//! of bounded size for a big one, so that no write holds the store for long. Every statement is
//! written once for both databases (`$N` placeholders, `CAST`, `ON CONFLICT`, `UPDATE … FROM`
//! are common to both); only the DDL differs, in `migrations/sqlite` and `migrations/postgres`.
//! Statements are built as plain values (`Stmt`) by the table modules and executed here, so
//! the per-table code is written once for both pools.

mod alerts;
mod audit;
mod counters;
mod enabling;
mod filter;
mod history;
mod leases;
mod open_cache;
mod repairs;
mod runs;
mod silences;
mod sweeps;
mod violations;

use std::borrow::Cow;
use std::collections::HashMap;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr};

use crate::config::{ConnectOptions, StateConfig};
use crate::verdict::RuleRun;

pub use crate::lifecycle::approval::{Approval, Promotion, Refusal, Step, approve, promote};
pub use crate::lifecycle::repair::Decision;
pub use crate::lifecycle::states::{Hold, RepairEnd, RepairRecord, RepairState, SECOND_APPROVER};
pub use alerts::{AlertGroupState, OutboxEntry, OutboxRow};
pub use audit::{AuditEntry, AuditRecord, Verification, load_key as load_audit_key};
pub use counters::RuleTotals;
pub use enabling::{EnableRequest, Enabling};
pub(crate) use filter::Where;
pub use history::{StepChange, Steps, step_changes};
pub use leases::{Lease, LeaseRow, SoleWriter, WriterError};
pub use repairs::{Claimed, NewRepair, RepairFilter, RepairSummary, Written};
pub use runs::{Judged, RunRecord, SweepMarks};
pub use silences::{NewSilence, Silence};
pub use sweeps::{PartRow, PartState, parse_part_lease, part_lease};
pub use violations::{
    OpenViolation, RuleSnapshot, ViolationFilter, ViolationRecord, ViolationState, keys_of,
};

/// Rows per batched statement: far below both databases' parameter limits.
const BATCH: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state store: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the state store: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the state store holds a value this version does not know: {0}")]
    Corrupt(String),
    /// `auth.audit_key_file` cannot be used: nothing is audited, so nothing is changed.
    #[error("{0}")]
    AuditKey(String),
    /// The lease that guards the write is no longer this replica's (it expired, or another
    /// replica holds it now): nothing was written.
    #[error("lease `{0}` was lost: another replica may hold it now, so this write was refused")]
    LeaseLost(String),
}

enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs the same code on whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A value bound to a statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    I64(i64),
    Text(String),
    OptText(Option<String>),
    OptI64(Option<i64>),
}

/// A statement and its parameters, built by a table module and executed on either pool.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// A `sqlx::query` with a `Stmt`'s parameters bound.
macro_rules! bound {
    ($stmt:expr) => {{
        let stmt: Stmt = $stmt;
        let mut q = sqlx::query(AssertSqlSafe(stmt.sql));
        for b in stmt.binds {
            q = match b {
                Bind::I64(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::OptText(v) => q.bind(v),
                Bind::OptI64(v) => q.bind(v),
            };
        }
        q
    }};
}
pub(crate) use bound;

pub struct StateStore {
    pool: Pool,
    /// Writers take turns, in the order they asked (tokio's mutex is fair): SQLite has one
    /// writer at a time, and its own busy handler would let a big recording starve the rest.
    writer: tokio::sync::Mutex<()>,
    /// The audit chain's key (`auth.audit_key_file`), or why it cannot be used: read at
    /// open, so that commands that write no audit entry work without it.
    audit_key: Result<Option<Vec<u8>>, String>,
    /// The file of a SQLite state store (none in memory, none for PostgreSQL).
    sqlite_path: Option<std::path::PathBuf>,
    /// What is open per rule, while this process is the only writer.
    open_cache: open_cache::OpenCache,
}

impl StateStore {
    /// Whether this process is the store's only writer now (the daemon, while alone): then
    /// what is open per rule is remembered between reads, and only the rules this process
    /// wrote since are read again. Off, every read asks the store.
    pub fn set_sole_writer(&self, sole: bool) {
        self.open_cache.set_on(sole);
    }

    /// Whether the store is PostgreSQL (shared by replicas) rather than SQLite (one writer).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Whether the store answers: a connection from the pool, and a round trip on it at the
    /// protocol level (on PostgreSQL a `Sync` answered by `ReadyForQuery`), which runs no
    /// statement. The store watch asks this every second; as a query (`SELECT 1`) it was
    /// sixty transactions a minute of a daemon with nothing to do.
    pub async fn ping(&self) -> Result<(), StateError> {
        use sqlx::Connection;
        on_pool!(self, pool => {
            pool.acquire().await?.ping().await?;
        });
        Ok(())
    }

    /// The audit chain's key, if one is configured; an error if it cannot be used.
    pub fn audit_key(&self) -> Result<Option<&[u8]>, StateError> {
        match &self.audit_key {
            Ok(key) => Ok(key.as_deref()),
            Err(e) => Err(StateError::AuditKey(e.clone())),
        }
    }
}

/// Violation rows one transaction of a recording changes at most (see `StateStore::record`).
const ROWS_PER_TRANSACTION: usize = 2 * BATCH;

/// A recording's statements in parts of at most `ROWS_PER_TRANSACTION` rows (a statement
/// alone may be the part), in order, each taken from `statements` as it is asked for.
fn split(
    statements: impl Iterator<Item = (Stmt, Recorded)>,
) -> impl Iterator<Item = Vec<(Stmt, Recorded)>> {
    let mut statements = statements.peekable();
    std::iter::from_fn(move || {
        let mut part = Vec::new();
        let mut rows = 0;
        while let Some((_, counts)) = statements.peek() {
            let n = (counts.opened + counts.seen_again + counts.resolved) as usize;
            if !part.is_empty() && rows + n > ROWS_PER_TRANSACTION {
                break;
            }
            rows += n;
            part.extend(statements.next());
        }
        (!part.is_empty()).then_some(part)
    })
}

/// A part of a recording's statements, followed by the counter increments they cause.
fn with_counters(rule: &str, part: Vec<(Stmt, Recorded)>) -> (Vec<Stmt>, Recorded) {
    let mut changed = Recorded::default();
    let mut statements = Vec::with_capacity(part.len() + 2);
    for (stmt, counts) in part {
        statements.push(stmt);
        changed.add(&counts);
    }
    statements.extend(counters::add_changes(rule, &changed));
    (statements, changed)
}

/// What recording a run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub run_id: i64,
    pub opened: u64,
    pub seen_again: u64,
    pub resolved: u64,
    /// How long each violation the run resolved had been open: the time to consistency.
    pub healed_after: Vec<std::time::Duration>,
}

impl Recorded {
    fn add(&mut self, other: &Recorded) {
        self.opened += other.opened;
        self.seen_again += other.seen_again;
        self.resolved += other.resolved;
        self.healed_after.extend_from_slice(&other.healed_after);
    }
}

struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} embedded migrations", self.0.len())
    }
}

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        AssertSqlSafe(*sql).into_sql_str(),
                        false,
                    )
                })
                .collect())
        })
    }
}

const SQLITE_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "runs and violations",
        include_str!("../../migrations/sqlite/0001_runs_and_violations.sql"),
    ),
    (
        2,
        "run error kind",
        include_str!("../../migrations/sqlite/0002_run_error_kind.sql"),
    ),
    (
        3,
        "run key counts",
        include_str!("../../migrations/sqlite/0003_run_key_counts.sql"),
    ),
    (
        4,
        "violations by key",
        include_str!("../../migrations/sqlite/0004_violations_by_key.sql"),
    ),
    (
        5,
        "alerts",
        include_str!("../../migrations/sqlite/0005_alerts.sql"),
    ),
    (
        6,
        "silences",
        include_str!("../../migrations/sqlite/0006_silences.sql"),
    ),
    (
        7,
        "violation impact",
        include_str!("../../migrations/sqlite/0007_violation_impact.sql"),
    ),
    (
        8,
        "audit log",
        include_str!("../../migrations/sqlite/0008_audit_log.sql"),
    ),
    (
        9,
        "repairs",
        include_str!("../../migrations/sqlite/0009_repairs.sql"),
    ),
    (
        10,
        "run mode",
        include_str!("../../migrations/sqlite/0010_run_mode.sql"),
    ),
    (
        11,
        "enable requests",
        include_str!("../../migrations/sqlite/0011_enable_requests.sql"),
    ),
    (
        12,
        "resolved by",
        include_str!("../../migrations/sqlite/0012_resolved_by.sql"),
    ),
    (
        13,
        "rejected by",
        include_str!("../../migrations/sqlite/0013_rejected_by.sql"),
    ),
    (
        14,
        "leases",
        include_str!("../../migrations/sqlite/0014_leases.sql"),
    ),
    (
        15,
        "sweep parts",
        include_str!("../../migrations/sqlite/0015_sweep_parts.sql"),
    ),
    (
        16,
        "history indexes",
        include_str!("../../migrations/sqlite/0016_history_indexes.sql"),
    ),
    (
        18,
        "repairs by creation",
        include_str!("../../migrations/sqlite/0018_repairs_by_creation.sql"),
    ),
    (
        19,
        "run measures",
        include_str!("../../migrations/sqlite/0019_run_measures.sql"),
    ),
    (
        20,
        "alert group severity, run status",
        include_str!("../../migrations/sqlite/0020_alert_group_severity.sql"),
    ),
]);
const POSTGRES_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "runs and violations",
        include_str!("../../migrations/postgres/0001_runs_and_violations.sql"),
    ),
    (
        2,
        "run error kind",
        include_str!("../../migrations/postgres/0002_run_error_kind.sql"),
    ),
    (
        3,
        "run key counts",
        include_str!("../../migrations/postgres/0003_run_key_counts.sql"),
    ),
    (
        4,
        "violations by key",
        include_str!("../../migrations/postgres/0004_violations_by_key.sql"),
    ),
    (
        5,
        "alerts",
        include_str!("../../migrations/postgres/0005_alerts.sql"),
    ),
    (
        6,
        "silences",
        include_str!("../../migrations/postgres/0006_silences.sql"),
    ),
    (
        7,
        "violation impact",
        include_str!("../../migrations/postgres/0007_violation_impact.sql"),
    ),
    (
        8,
        "audit log",
        include_str!("../../migrations/postgres/0008_audit_log.sql"),
    ),
    (
        9,
        "repairs",
        include_str!("../../migrations/postgres/0009_repairs.sql"),
    ),
    (
        10,
        "run mode",
        include_str!("../../migrations/postgres/0010_run_mode.sql"),
    ),
    (
        11,
        "enable requests",
        include_str!("../../migrations/postgres/0011_enable_requests.sql"),
    ),
    (
        12,
        "resolved by",
        include_str!("../../migrations/postgres/0012_resolved_by.sql"),
    ),
    (
        13,
        "rejected by",
        include_str!("../../migrations/postgres/0013_rejected_by.sql"),
    ),
    (
        14,
        "leases",
        include_str!("../../migrations/postgres/0014_leases.sql"),
    ),
    (
        15,
        "sweep parts",
        include_str!("../../migrations/postgres/0015_sweep_parts.sql"),
    ),
    (
        16,
        "history indexes",
        include_str!("../../migrations/postgres/0016_history_indexes.sql"),
    ),
    (
        17,
        "violations fillfactor",
        include_str!("../../migrations/postgres/0017_violations_fillfactor.sql"),
    ),
    (
        18,
        "repairs by creation",
        include_str!("../../migrations/postgres/0018_repairs_by_creation.sql"),
    ),
    (
        19,
        "run measures",
        include_str!("../../migrations/postgres/0019_run_measures.sql"),
    ),
    (
        20,
        "alert group severity, run status",
        include_str!("../../migrations/postgres/0020_alert_group_severity.sql"),
    ),
]);

impl StateStore {
    /// Connects and applies pending migrations.
    pub async fn open(config: &StateConfig) -> Result<StateStore, StateError> {
        let store = StateStore::connect(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating. A SQLite state file is created when missing.
    pub async fn connect(config: &StateConfig) -> Result<StateStore, StateError> {
        let pool = match &config.options {
            ConnectOptions::Sqlite(o) => Pool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(
                        o.clone()
                            .create_if_missing(true)
                            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                            .busy_timeout(std::time::Duration::from_secs(10)),
                    )
                    .await
                    .map_err(StateError::Connect)?,
            ),
            ConnectOptions::Postgres(o, _) => Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    // A store that went away answers with an error within seconds, not the
                    // 30 s default: the API says 503 and readiness turns while it is away.
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .connect_with(o.clone().application_name("invariantd-state"))
                    .await
                    .map_err(StateError::Connect)?,
            ),
            ConnectOptions::MySql(..) => {
                unreachable!("config validation allows SQLite and PostgreSQL only")
            }
        };
        let audit_key = config
            .audit_key_file
            .as_deref()
            .map(audit::load_key)
            .transpose();
        let sqlite_path = match &config.options {
            ConnectOptions::Sqlite(o) => Some(o.get_filename().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty() && p.as_os_str() != ":memory:"),
            _ => None,
        };
        Ok(StateStore {
            pool,
            writer: tokio::sync::Mutex::new(()),
            audit_key,
            sqlite_path,
            open_cache: Default::default(),
        })
    }

    /// Applies the migrations not applied yet.
    pub async fn migrate(&self) -> Result<(), StateError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                Migrator::new(SQLITE_MIGRATIONS)
                    .await
                    .map_err(StateError::Migrate)?
                    .run(p)
                    .await
            }
            Pool::Postgres(p) => {
                Migrator::new(POSTGRES_MIGRATIONS)
                    .await
                    .map_err(StateError::Migrate)?
                    .run(p)
                    .await
            }
        }
        .map_err(StateError::Migrate)
    }

    /// Records a run and applies its verdicts to the violations and counters.
    ///
    /// A run that changes at most `ROWS_PER_TRANSACTION` violations is recorded in one
    /// transaction. A bigger one is recorded in several, so that it never holds the store for
    /// long (SQLite has a single writer): its violation changes go first, each part with the
    /// counter increments it causes, and the run's own row and counters last. Other rules'
    /// runs are recorded in between, in the order they asked. If the daemon dies half-way,
    /// the store holds some of the changes and no run: still consistent (counters agree with
    /// the rows), and the rule's next run judges every key again.
    ///
    /// `open` is the rule's open violations as read before the run (`open_violations`): only
    /// the rule's own runs change them, and those never overlap.
    ///
    /// With `lease` (the rule's, held by this replica), every transaction checks it first: a
    /// replica that lost the rule (it stalled past its lease) has its late result refused
    /// (`LeaseLost`), whole or from the part where it was lost.
    pub async fn record(
        &self,
        run: &RuleRun,
        open: &[OpenViolation],
        lease: Option<&Lease>,
    ) -> Result<Recorded, StateError> {
        let started_us = run.started_at.timestamp_micros();
        // Once every transaction below has ended, however: what is open changed.
        let _changing = self.open_cache.changing(&run.rule);
        // A repair may have resolved some of `open` since it was read.
        let repaired = match open.iter().map(|o| o.id).min() {
            Some(from_id) if run.finished => {
                let stmt = violations::select_repaired(&run.rule, from_id);
                on_pool!(self, pool => {
                    bound!(stmt)
                        .fetch_all(pool)
                        .await?
                        .into_iter()
                        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Option<i64>, _>(1)?.unwrap_or(i64::MAX))))
                        .collect::<Result<HashMap<i64, i64>, sqlx::Error>>()?
                })
            }
            _ => HashMap::new(),
        };
        // A run that did not read everything changes no violation.
        let verdicts = if run.finished {
            violations::apply(run, open, &repaired, started_us)
        } else {
            violations::Verdicts::none(&run.rule, started_us)
        };
        // Each part but the last is a transaction of its own; the last commits with the
        // run's row, so that a run shows as recorded only once all of its changes are.
        let mut recorded = Recorded::default();
        let mut last = Vec::new();
        for part in split(verdicts.statements()) {
            let earlier = std::mem::replace(&mut last, part);
            if !earlier.is_empty() {
                let (statements, changed) = with_counters(&run.rule, earlier);
                self.write_guarded(lease, None, statements).await?;
                recorded.add(&changed);
            }
        }
        let (mut statements, changed) = with_counters(&run.rule, last);
        statements.extend(counters::add_run(run));
        let run_id = self
            .write_guarded(lease, Some(runs::insert(run)), statements)
            .await?;
        recorded.add(&changed);
        recorded.run_id = run_id.expect("the run's insert returns its id");
        Ok(recorded)
    }

    /// One write transaction, after the writes that asked before it: `first` returns an id
    /// (an `INSERT … RETURNING id`), then `statements` run in order.
    async fn write(
        &self,
        first: Option<Stmt>,
        statements: Vec<Stmt>,
    ) -> Result<Option<i64>, StateError> {
        self.write_guarded(None, first, statements).await
    }

    /// `write`, guarded by `lease`: before it commits, the transaction checks that the lease
    /// is still this replica's (`fence`), and rolls back when it is not (`LeaseLost`). The
    /// check comes last so that on SQLite the transaction already writes (a read turned into
    /// a write would be refused at once while another connection writes); on PostgreSQL its
    /// `FOR SHARE` holds off a takeover until the commit either way.
    async fn write_guarded(
        &self,
        lease: Option<&Lease>,
        first: Option<Stmt>,
        statements: Vec<Stmt>,
    ) -> Result<Option<i64>, StateError> {
        let _turn = self.writer.lock().await;
        let fence = lease.map(|l| (l.name.clone(), self.fence(l)));
        let id = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id = match first {
                Some(stmt) => Some(bound!(stmt).fetch_one(&mut *tx).await?.try_get::<i64, _>(0)?),
                None => None,
            };
            for stmt in statements {
                bound!(stmt).execute(&mut *tx).await?;
            }
            if let Some((name, fence)) = fence
                && bound!(fence).fetch_optional(&mut *tx).await?.is_none()
            {
                tx.rollback().await?;
                return Err(StateError::LeaseLost(name));
            }
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// Deletes resolved violations resolved before `before_us`, runs started before it, and
    /// delivered notifications and silences over since before it, in batches of at most
    /// `PRUNE_BATCH` rows a transaction: each batch takes the writer for a few milliseconds
    /// (it finds its rows by index), so that runs are recorded between batches however much
    /// there is to prune. Open violations are never pruned.
    pub async fn prune(&self, before_us: i64) -> Result<Pruned, StateError> {
        self.prune_in_batches(before_us, PRUNE_BATCH).await
    }

    /// `prune`, `batch` rows at a time.
    pub async fn prune_in_batches(&self, before_us: i64, batch: i64) -> Result<Pruned, StateError> {
        let tables: [fn(i64, i64) -> Vec<Stmt>; 4] = [
            violations::prune,
            runs::prune,
            alerts::prune,
            silences::prune,
        ];
        let mut pruned = Pruned::default();
        for table in tables {
            loop {
                let statements = table(before_us, batch);
                let _turn = self.writer.lock().await;
                let held = std::time::Instant::now();
                // The last statement of a batch deletes; those before it unlink.
                let deleted = on_pool!(self, pool => {
                    let mut tx = pool.begin().await?;
                    let mut deleted = 0;
                    for stmt in statements {
                        deleted = bound!(stmt).execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    deleted
                });
                pruned.longest_batch = pruned.longest_batch.max(held.elapsed());
                pruned.batches += 1;
                pruned.rows += deleted;
                if deleted < batch as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

/// Rows one pruning transaction deletes at most.
pub const PRUNE_BATCH: i64 = 200;

/// What a prune did: the rows it deleted, in how many transactions, and the longest time one
/// of them held the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows: u64,
    pub batches: u64,
    pub longest_batch: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Key;
    use crate::verdict::{ErrorKind, Outcome, RunError, Violation};

    #[test]
    fn a_big_recording_is_split_in_bounded_parts_in_order() {
        let mut run = RuleRun::unknown(
            "big",
            chrono::Utc::now(),
            std::time::Duration::ZERO,
            RunError::new(ErrorKind::Cancelled, ""),
        );
        run.outcome = Outcome::Fail;
        run.error = None;
        run.finished = true;
        run.violations = (0..10_000)
            .map(|i| Violation {
                key: Key::Int(i),
                message: "".into(),
                datasets: Default::default(),
                impact: None,
                repairs: Box::default(),
            })
            .collect();
        // 3,000 of them were open already, and 1,000 open ones are gone.
        let open: Vec<OpenViolation> = (7_000..11_000)
            .map(|i| OpenViolation {
                id: i,
                key: i.to_string().into(),
                first_seen_us: -60_000_000,
            })
            .collect();
        let verdicts = violations::apply(&run, &open, &HashMap::new(), 0);
        let sql: Vec<String> = verdicts.statements().map(|(s, _)| s.sql).collect();
        let parts: Vec<_> = split(verdicts.statements()).collect();
        assert!(parts.len() > 1);
        let mut total = Recorded::default();
        for part in &parts {
            let mut rows = Recorded::default();
            part.iter().for_each(|(_, c)| rows.add(c));
            assert!(rows.opened + rows.seen_again + rows.resolved <= ROWS_PER_TRANSACTION as u64);
            total.add(&rows);
        }
        assert_eq!(
            (total.opened, total.seen_again, total.resolved),
            (7_000, 3_000, 1_000)
        );
        // Each resolved violation had been open for the minute before the run.
        assert_eq!(total.healed_after.len(), 1_000);
        assert!(
            total
                .healed_after
                .iter()
                .all(|d| *d == std::time::Duration::from_secs(60))
        );
        let again: Vec<String> = parts.into_iter().flatten().map(|(s, _)| s.sql).collect();
        assert_eq!(again, sql);
    }
}
