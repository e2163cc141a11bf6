//! The state store: rule runs, violations and their lifecycle, and cumulative counters, in
//! SQLite (embedded, the default) or PostgreSQL (for production and several replicas). One
//! file per table: `runs`, `violations`, `counters`; this file owns the connection, the
//! migrations and the transaction that records a run.
//!
//! Lifecycle, per (rule, key): a finished run that finds a violation opens it, or bumps
//! `last_seen` and `occurrences` if it is already open; an open violation whose key the run
//! judged and found holding is resolved. A violation that comes back after being resolved is
//! a new row linked to the old one (`previous_id`). A run that did not finish (`unknown` for a
//! source down, a timeout…) changes nothing but the record of the run: no data is not good
//! data. Keys a run did not judge (grace, an error for that key) keep their state.
//!
//! All of a run's bookkeeping happens in one transaction with batched statements, so a run
//! with 100,000 violations costs a few hundred statements, not 100,000. Every statement is
//! written once for both databases (`$N` placeholders, `CAST`, `ON CONFLICT`, `UPDATE … FROM`
//! are common to both); only the DDL differs, in `migrations/sqlite` and `migrations/postgres`.
//! Statements are built as plain values (`Stmt`) by the table modules and executed here, so
//! the per-table code is written once for both pools.

mod counters;
mod runs;
mod violations;

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr};

use crate::config::{ConnectOptions, StateConfig};
use crate::verdict::RuleRun;

pub use counters::RuleTotals;
pub use runs::RunRecord;
pub use violations::{RuleSnapshot, ViolationFilter, ViolationRecord, ViolationState};

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
}

/// A statement and its parameters, built by a table module and executed on either pool.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// The optional conditions of a list query, each with its parameter, and the statement they
/// make: `SELECT … [WHERE a AND b] ORDER BY … LIMIT $n`.
#[derive(Default)]
pub(crate) struct Where {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl Where {
    /// Adds `lhs $n` (such as `rule =`) when there is a value.
    pub fn and(&mut self, lhs: &str, value: Option<Bind>) -> &mut Where {
        if let Some(v) = value {
            self.binds.push(v);
            self.conditions.push(format!("{lhs} ${}", self.binds.len()));
        }
        self
    }

    pub fn select(mut self, select: &str, order_by: &str, limit: u32) -> Stmt {
        self.binds.push(Bind::I64(i64::from(limit)));
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        Stmt {
            sql: format!(
                "{select}{filter} ORDER BY {order_by} LIMIT ${}",
                self.binds.len()
            ),
            binds: self.binds,
        }
    }
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
            };
        }
        q
    }};
}
pub(crate) use bound;

pub struct StateStore {
    pool: Pool,
}

/// What recording a run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub run_id: i64,
    pub opened: u64,
    pub seen_again: u64,
    pub resolved: u64,
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
            ConnectOptions::Postgres(o) => Pool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(o.clone().application_name("invariantd-state"))
                    .await
                    .map_err(StateError::Connect)?,
            ),
            ConnectOptions::MySql(_) => {
                unreachable!("config validation allows SQLite and PostgreSQL only")
            }
        };
        Ok(StateStore { pool })
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

    /// Records a run and applies its verdicts to the violations and counters, in one
    /// transaction.
    pub async fn record(&self, run: &RuleRun) -> Result<Recorded, StateError> {
        let started_us = run.started_at.timestamp_micros();
        let mut recorded = Recorded::default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            recorded.run_id = bound!(runs::insert(run))
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>(0)?;
            if run.finished {
                let open: Vec<(i64, String)> = bound!(violations::select_open(&run.rule))
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                    .collect::<Result<_, sqlx::Error>>()?;
                let (statements, counts) = violations::apply(run, &open, started_us);
                for stmt in statements {
                    bound!(stmt).execute(&mut *tx).await?;
                }
                recorded = Recorded {
                    run_id: recorded.run_id,
                    ..counts
                };
            }
            for stmt in counters::add(run, &recorded) {
                bound!(stmt).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(recorded)
    }

    /// Deletes resolved violations resolved before `before_us` and runs started before it.
    /// Open violations are never pruned. Returns the rows deleted.
    pub async fn prune(&self, before_us: i64) -> Result<u64, StateError> {
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut deleted = 0;
            for stmt in violations::prune(before_us).into_iter().chain(runs::prune(before_us)) {
                // Unlinking newer rows from the ones going away is not a deletion.
                let counts = stmt.sql.starts_with("DELETE");
                let n = bound!(stmt).execute(&mut *tx).await?.rows_affected();
                if counts {
                    deleted += n;
                }
            }
            tx.commit().await?;
            deleted
        });
        Ok(deleted)
    }
}
