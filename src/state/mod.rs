//! The state store: rule runs, violations and their lifecycle, and cumulative counters, in
//! SQLite (embedded, the default) or PostgreSQL (for production and several replicas).
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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Row as _, SqlSafeStr};

use crate::config::{ConnectOptions, StateConfig};
use crate::engine::{Outcome, RuleRun};

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

/// A violation as stored; `violation_json` is how it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ViolationRecord {
    pub id: i64,
    pub rule: String,
    pub key: String,
    pub state: String,
    pub message: String,
    pub datasets: serde_json::Value,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub occurrences: i64,
    pub resolved_us: Option<i64>,
    pub previous_id: Option<i64>,
}

/// A rule's state at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSnapshot {
    pub open: i64,
    pub oldest_first_seen_us: Option<i64>,
    pub last_success_us: Option<i64>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub rule: String,
    pub started_us: i64,
    pub finished_us: i64,
    pub outcome: String,
    pub rows_scanned: i64,
    pub violations: i64,
    pub error: Option<String>,
}

/// A run as the API shows it.
pub fn run_json(r: &RunRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.to_string(),
        "rule": r.rule,
        "started_at": rfc3339(r.started_us),
        "finished_at": rfc3339(r.finished_us),
        "outcome": r.outcome,
        "rows_scanned": r.rows_scanned,
        "violations": r.violations,
        "error": r.error,
    })
}

/// Which violations to list: optional rule and state, in id order after a cursor.
#[derive(Debug, Clone, Default)]
pub struct ViolationFilter {
    pub rule: Option<String>,
    pub state: Option<String>,
    pub after_id: Option<i64>,
    pub limit: u32,
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

const SQLITE_MIGRATIONS: Embedded = Embedded(&[(
    1,
    "runs and violations",
    include_str!("../../migrations/sqlite/0001_runs_and_violations.sql"),
)]);
const POSTGRES_MIGRATIONS: Embedded = Embedded(&[(
    1,
    "runs and violations",
    include_str!("../../migrations/postgres/0001_runs_and_violations.sql"),
)]);

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

    /// The keys of a rule's open violations.
    pub async fn open_keys(&self, rule: &str) -> Result<HashSet<String>, StateError> {
        let rows = on_pool!(self, pool => {
            sqlx::query("SELECT key FROM violations WHERE rule = $1 AND state = 'open'")
                .bind(rule)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<HashSet<_>, _>>()?
        });
        Ok(rows)
    }

    /// Records a run and applies its verdicts to the violations, in one transaction.
    pub async fn record(&self, run: &RuleRun) -> Result<Recorded, StateError> {
        let started_us = run.started_at.timestamp_micros();
        let finished_us = started_us + run.duration.as_micros() as i64;
        let mut recorded = Recorded::default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            recorded.run_id = sqlx::query(
                "INSERT INTO runs (rule, started_us, finished_us, outcome, rows_scanned, violations, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(&run.rule)
            .bind(started_us)
            .bind(finished_us)
            .bind(run.outcome.as_str())
            .bind(run.total_rows_scanned() as i64)
            .bind(run.violations.len() as i64)
            .bind(run.error.as_deref())
            .fetch_one(&mut *tx)
            .await?
            .try_get::<i64, _>(0)?;

            if run.finished {
                let open: Vec<(i64, String)> =
                    sqlx::query("SELECT id, key FROM violations WHERE rule = $1 AND state = 'open'")
                        .bind(&run.rule)
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                        .collect::<Result<_, sqlx::Error>>()?;
                let open_ids: HashMap<&str, i64> = open.iter().map(|(id, k)| (k.as_str(), *id)).collect();
                let found: Vec<(String, &crate::engine::Violation)> =
                    run.violations.iter().map(|v| (v.key.to_string(), v)).collect();
                let found_keys: HashSet<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
                let held: HashSet<&str> = run.unjudged_open.iter().map(String::as_str).collect();

                let (again, new): (Vec<_>, Vec<_>) =
                    found.iter().partition(|(k, _)| open_ids.contains_key(k.as_str()));
                let resolved: Vec<i64> = open
                    .iter()
                    .filter(|(_, k)| !found_keys.contains(k.as_str()) && !held.contains(k.as_str()))
                    .map(|(id, _)| *id)
                    .collect();

                for chunk in new.chunks(BATCH) {
                    let mut sql = String::from(
                        "INSERT INTO violations (rule, key, state, message, datasets, first_seen_us, last_seen_us, occurrences, previous_id) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let b = 3 + i * 3;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!(
                            "($1, ${b}, 'open', ${m}, ${d}, $2, $2, 1, (SELECT MAX(p.id) FROM violations p WHERE p.rule = $1 AND p.key = ${b}))",
                            m = b + 1,
                            d = b + 2
                        ));
                    }
                    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(&run.rule).bind(started_us);
                    for (key, v) in chunk {
                        q = q.bind(key.as_str()).bind(v.message.as_str()).bind(datasets_json(v));
                    }
                    q.execute(&mut *tx).await?;
                }
                for chunk in again.chunks(BATCH) {
                    let mut sql = String::from("WITH u (id, message, datasets) AS (VALUES ");
                    for i in 0..chunk.len() {
                        let b = 2 + i * 3;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!("(CAST(${b} AS BIGINT), ${}, ${})", b + 1, b + 2));
                    }
                    sql.push_str(
                        ") UPDATE violations SET message = u.message, datasets = u.datasets, \
                         last_seen_us = $1, occurrences = violations.occurrences + 1 \
                         FROM u WHERE violations.id = u.id",
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(started_us);
                    for (key, v) in chunk {
                        q = q.bind(open_ids[key.as_str()]).bind(v.message.as_str()).bind(datasets_json(v));
                    }
                    q.execute(&mut *tx).await?;
                }
                for chunk in resolved.chunks(BATCH) {
                    let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                    let sql = format!(
                        "UPDATE violations SET state = 'resolved', resolved_us = $1 WHERE id IN ({})",
                        ids.join(", ")
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(started_us);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *tx).await?;
                }
                recorded.opened = new.len() as u64;
                recorded.seen_again = again.len() as u64;
                recorded.resolved = resolved.len() as u64;
            }

            let outcome_counter = match run.outcome {
                Outcome::Pass => "runs_pass",
                Outcome::Fail => "runs_fail",
                Outcome::Unknown => "runs_unknown",
            };
            let mut counts: Vec<(String, i64)> = vec![
                (outcome_counter.to_string(), 1),
                ("violations_detected".into(), recorded.opened as i64),
                ("violations_resolved".into(), recorded.resolved as i64),
            ];
            for (dataset, rows) in run.datasets.iter().zip(&run.rows_scanned) {
                counts.push((format!("rows_scanned:{dataset}"), *rows as i64));
            }
            for (name, value) in counts {
                if value == 0 {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO rule_counters (rule, name, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (rule, name) DO UPDATE SET value = rule_counters.value + excluded.value",
                )
                .bind(&run.rule)
                .bind(name.as_str())
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(recorded)
    }

    /// Violations in id order, after `filter.after_id`, at most `filter.limit`.
    pub async fn violations(
        &self,
        filter: &ViolationFilter,
    ) -> Result<Vec<ViolationRecord>, StateError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.rule.is_some() {
            conditions.push(format!("rule = {}", next()));
        }
        if filter.state.is_some() {
            conditions.push(format!("state = {}", next()));
        }
        if filter.after_id.is_some() {
            conditions.push(format!("id > {}", next()));
        }
        let limit = next();
        let sql = format!(
            "SELECT id, rule, key, state, message, datasets, first_seen_us, last_seen_us, occurrences, resolved_us, previous_id \
             FROM violations {} ORDER BY id LIMIT {limit}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            }
        );
        let records = on_pool!(self, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(r) = &filter.rule {
                q = q.bind(r.as_str());
            }
            if let Some(s) = &filter.state {
                q = q.bind(s.as_str());
            }
            if let Some(a) = filter.after_id {
                q = q.bind(a);
            }
            q.bind(i64::from(filter.limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    let datasets: String = r.try_get(5)?;
                    Ok(ViolationRecord {
                        id: r.try_get(0)?,
                        rule: r.try_get(1)?,
                        key: r.try_get(2)?,
                        state: r.try_get(3)?,
                        message: r.try_get(4)?,
                        datasets: serde_json::from_str(&datasets).unwrap_or(serde_json::Value::Null),
                        first_seen_us: r.try_get(6)?,
                        last_seen_us: r.try_get(7)?,
                        occurrences: r.try_get(8)?,
                        resolved_us: r.try_get(9)?,
                        previous_id: r.try_get(10)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(records)
    }

    /// Per rule: open violations, the oldest one's first sighting, the last run that finished.
    /// For one rule, or every rule with `None`.
    pub async fn rule_snapshots_for(
        &self,
        rule: Option<&str>,
    ) -> Result<HashMap<String, RuleSnapshot>, StateError> {
        let (open_sql, runs_sql) = match rule {
            Some(_) => (
                "SELECT rule, COUNT(*), MIN(first_seen_us) FROM violations WHERE state = 'open' AND rule = $1 GROUP BY rule",
                "SELECT rule, MAX(finished_us) FROM runs WHERE outcome <> 'unknown' AND rule = $1 GROUP BY rule",
            ),
            None => (
                "SELECT rule, COUNT(*), MIN(first_seen_us) FROM violations WHERE state = 'open' GROUP BY rule",
                "SELECT rule, MAX(finished_us) FROM runs WHERE outcome <> 'unknown' GROUP BY rule",
            ),
        };
        let mut map: HashMap<String, RuleSnapshot> = HashMap::new();
        on_pool!(self, pool => {
            let mut q = sqlx::query(open_sql);
            if let Some(r) = rule {
                q = q.bind(r);
            }
            for row in q.fetch_all(pool).await? {
                let s = map.entry(row.try_get(0)?).or_default();
                s.open = row.try_get(1)?;
                s.oldest_first_seen_us = row.try_get(2)?;
            }
            let mut q = sqlx::query(runs_sql);
            if let Some(r) = rule {
                q = q.bind(r);
            }
            for row in q.fetch_all(pool).await? {
                map.entry(row.try_get(0)?).or_default().last_success_us = row.try_get(1)?;
            }
        });
        Ok(map)
    }

    pub async fn rule_snapshots(&self) -> Result<HashMap<String, RuleSnapshot>, StateError> {
        self.rule_snapshots_for(None).await
    }

    pub async fn rule_snapshot(&self, rule: &str) -> Result<RuleSnapshot, StateError> {
        Ok(self
            .rule_snapshots_for(Some(rule))
            .await?
            .remove(rule)
            .unwrap_or_default())
    }

    /// Runs, newest first, before `before_id`, optionally of one rule.
    pub async fn runs(
        &self,
        rule: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        if rule.is_some() {
            n += 1;
            conditions.push(format!("rule = ${n}"));
        }
        if before_id.is_some() {
            n += 1;
            conditions.push(format!("id < ${n}"));
        }
        let sql = format!(
            "SELECT id, rule, started_us, finished_us, outcome, rows_scanned, violations, error FROM runs {} ORDER BY id DESC LIMIT ${}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            n + 1
        );
        let records = on_pool!(self, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(r) = rule {
                q = q.bind(r);
            }
            if let Some(b) = before_id {
                q = q.bind(b);
            }
            q.bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok(RunRecord {
                    id: r.try_get(0)?,
                    rule: r.try_get(1)?,
                    started_us: r.try_get(2)?,
                    finished_us: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    rows_scanned: r.try_get(5)?,
                    violations: r.try_get(6)?,
                    error: r.try_get(7)?,
                }))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(records)
    }

    /// Cumulative counters per rule: (rule, name) → value.
    pub async fn counters(&self) -> Result<HashMap<(String, String), i64>, StateError> {
        let map = on_pool!(self, pool => {
            sqlx::query("SELECT rule, name, value FROM rule_counters")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?)))
                .collect::<Result<HashMap<_, _>, sqlx::Error>>()?
        });
        Ok(map)
    }

    /// Deletes resolved violations resolved before `before_us` and runs started before it.
    /// Open violations are never pruned. Returns the rows deleted.
    pub async fn prune(&self, before_us: i64) -> Result<u64, StateError> {
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Newer rows may point at the ones going away.
            sqlx::query(
                "UPDATE violations SET previous_id = NULL WHERE previous_id IN \
                 (SELECT id FROM violations WHERE state = 'resolved' AND resolved_us < $1)",
            )
            .bind(before_us)
            .execute(&mut *tx)
            .await?;
            let v = sqlx::query("DELETE FROM violations WHERE state = 'resolved' AND resolved_us < $1")
                .bind(before_us)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let r = sqlx::query("DELETE FROM runs WHERE started_us < $1")
                .bind(before_us)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            v + r
        });
        Ok(deleted)
    }
}

fn datasets_json(v: &crate::engine::Violation) -> String {
    serde_json::Value::Object(v.datasets.clone()).to_string()
}

fn rfc3339(us: i64) -> String {
    crate::value::format_timestamp(us)
}

/// A violation as the API and `violations list --format json` show it.
pub fn violation_json(v: &ViolationRecord) -> serde_json::Value {
    serde_json::json!({
        "id": v.id.to_string(),
        "rule": v.rule,
        "key": v.key,
        "state": v.state,
        "message": v.message,
        "first_seen": rfc3339(v.first_seen_us),
        "last_seen": rfc3339(v.last_seen_us),
        "occurrences": v.occurrences,
        "resolved_at": v.resolved_us.map(rfc3339),
        "previous_id": v.previous_id.map(|p| p.to_string()),
        "datasets": v.datasets,
    })
}

/// Violations as a table for people.
pub fn violations_table(items: &[ViolationRecord], next: Option<i64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let rule_w = items.iter().map(|v| v.rule.len()).max().unwrap_or(4).max(4);
    let key_w = items.iter().map(|v| v.key.len()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        out,
        "{:>6}  {:<rule_w$}  {:<key_w$}  {:<8}  {:<20}  {:>5}  MESSAGE",
        "ID", "RULE", "KEY", "STATE", "FIRST SEEN", "SEEN"
    );
    for v in items {
        let first = rfc3339(v.first_seen_us);
        let _ = writeln!(
            out,
            "{:>6}  {:<rule_w$}  {:<key_w$}  {:<8}  {:<20}  {:>5}  {}",
            v.id,
            v.rule,
            v.key,
            v.state,
            first.get(..19).unwrap_or(&first),
            v.occurrences,
            v.message
        );
    }
    match next {
        Some(n) => {
            let _ = writeln!(out, "(more: --after {n})");
        }
        None => {
            let _ = writeln!(
                out,
                "{} violation{}",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            );
        }
    }
    out
}
