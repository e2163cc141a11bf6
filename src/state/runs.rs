//! The `runs` table: one row per rule run, with its outcome, counts and typed error.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, Where, bound, on_pool};
use crate::verdict::{ErrorKind, Outcome, RuleRun, RuleStatus, RunMode};

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub rule: String,
    pub started_us: i64,
    pub finished_us: i64,
    pub outcome: Outcome,
    pub rows_scanned: i64,
    pub violations: i64,
    pub keys_judged: i64,
    pub keys_in_grace: i64,
    pub keys_with_errors: i64,
    /// The error's kind; `None` with an error text for runs recorded before kinds existed.
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    pub mode: RunMode,
    pub keys_changed: i64,
    /// The rule's status under its thresholds after the run; none for runs recorded before
    /// statuses were kept.
    pub status: Option<RuleStatus>,
}

/// Where incremental runs of one version of a rule stand: when its last run that judged its
/// keys (pass or fail) and its last such full sweep started, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepMarks {
    pub last_run_us: Option<i64>,
    pub last_full_us: Option<i64>,
}

/// A rule's newest run that judged its keys: when it finished, and its keys judged, in grace
/// and with errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub finished_us: i64,
    pub keys: [i64; 3],
}

/// Inserts the run, returning its id.
pub(super) fn insert(run: &RuleRun) -> Stmt {
    let started_us = run.started_at.timestamp_micros();
    Stmt {
        sql: "INSERT INTO runs (rule, started_us, finished_us, outcome, rows_scanned, violations, \
              keys_judged, keys_in_grace, keys_with_errors, error_kind, error, mode, keys_changed, \
              fingerprint, measure, status) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
              RETURNING id"
            .into(),
        binds: vec![
            Bind::Text(run.rule.clone()),
            Bind::I64(started_us),
            Bind::I64(started_us + run.duration.as_micros() as i64),
            Bind::Text(run.outcome.as_str().into()),
            Bind::I64(run.total_rows_scanned() as i64),
            Bind::I64(run.violations.len() as i64),
            Bind::I64(run.keys_judged as i64),
            Bind::I64(run.keys_in_grace as i64),
            Bind::I64(run.key_errors_total as i64),
            Bind::OptText(run.error.as_ref().map(|e| e.kind.as_str().into())),
            Bind::OptText(run.error.as_ref().map(|e| e.message.clone())),
            Bind::Text(run.mode.as_str().into()),
            Bind::I64(run.keys_changed as i64),
            Bind::OptText((!run.fingerprint.is_empty()).then(|| run.fingerprint.clone())),
            Bind::OptI64(run.measure),
            Bind::Text(run.status.as_str().into()),
        ],
    }
}

/// One batch of pruning: the (at most `limit`) oldest runs started before `before_us`.
pub(super) fn prune(before_us: i64, limit: i64) -> Vec<Stmt> {
    vec![Stmt {
        sql: "DELETE FROM runs WHERE id IN \
              (SELECT id FROM runs WHERE started_us < $1 ORDER BY started_us LIMIT $2)"
            .into(),
        binds: vec![Bind::I64(before_us), Bind::I64(limit)],
    }]
}

/// The columns every run query selects, in `fetch`'s order.
const COLUMNS: &str = "id, rule, started_us, finished_us, outcome, rows_scanned, violations, error_kind, error, \
     keys_judged, keys_in_grace, keys_with_errors, mode, keys_changed, status";

impl StateStore {
    /// Runs, newest first, before `before_id`, optionally of one rule.
    pub async fn runs(
        &self,
        rule: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        let mut filter = Where::default();
        filter
            .and("rule =", rule.map(|r| Bind::Text(r.into())))
            .and("id <", before_id.map(Bind::I64));
        let stmt = filter.select(&format!("SELECT {COLUMNS} FROM runs"), "id DESC", limit);
        self.fetch_runs(stmt).await
    }

    /// One number from the rule's newest run that `filter` (after `rule = $1`, with `binds`
    /// from `$2`) selects, by the (rule, id) index: it costs little however long the history.
    async fn newest(
        &self,
        column: &str,
        rule: &str,
        filter: &str,
        binds: &[&str],
    ) -> Result<Option<i64>, StateError> {
        let mut all = vec![Bind::Text(rule.into())];
        all.extend(binds.iter().map(|b| Bind::Text((*b).into())));
        let stmt = Stmt {
            sql: format!(
                "SELECT {column} FROM runs WHERE rule = $1 AND {filter} ORDER BY id DESC LIMIT 1"
            ),
            binds: all,
        };
        let found = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
            Some(row) => row.try_get::<Option<i64>, _>(0)?,
            None => None,
        });
        Ok(found)
    }

    /// When the rule's last run that judged its keys (not `unknown`) finished.
    pub async fn last_success(&self, rule: &str) -> Result<Option<i64>, StateError> {
        self.newest("finished_us", rule, "outcome <> 'unknown'", &[])
            .await
    }

    /// What the rule measured at its newest run of this version that measured (`previous`
    /// for its next run).
    pub async fn last_measure(
        &self,
        rule: &str,
        fingerprint: &str,
    ) -> Result<Option<i64>, StateError> {
        let filter = "fingerprint = $2 AND measure IS NOT NULL";
        self.newest("measure", rule, filter, &[fingerprint]).await
    }

    /// Sets a recorded run's status: the daemon's, from the rule's open violations after it.
    pub async fn set_run_status(&self, id: i64, status: RuleStatus) -> Result<(), StateError> {
        let stmt = Stmt {
            sql: "UPDATE runs SET status = $1 WHERE id = $2".into(),
            binds: vec![Bind::Text(status.as_str().into()), Bind::I64(id)],
        };
        on_pool!(self, pool => { bound!(stmt).execute(pool).await?; });
        Ok(())
    }

    /// The keys the rule's newest full sweep of this version judged: what a `fraction`
    /// threshold divides by (an incremental run judges only what changed).
    pub async fn full_sweep_keys(
        &self,
        rule: &str,
        fingerprint: &str,
    ) -> Result<Option<i64>, StateError> {
        let filter = "fingerprint = $2 AND mode = 'full' AND outcome IN ('pass', 'fail')";
        self.newest("keys_judged", rule, filter, &[fingerprint])
            .await
    }

    /// For each of `rules`: its newest run, and when its newest run that judged its keys
    /// finished (as `last_success`). Two index lookups per rule, like those of `runs` and
    /// `last_success`, but one statement for up to 200 rules: what the alert evaluator reads
    /// for every rule, each time.
    pub async fn latest_runs(
        &self,
        rules: &[&str],
    ) -> Result<HashMap<String, (Option<RunRecord>, Option<i64>)>, StateError> {
        let mut out: HashMap<String, (Option<RunRecord>, Option<i64>)> = rules
            .iter()
            .map(|r| (r.to_string(), (None, None)))
            .collect();
        // SQLite takes at most 500 terms in one compound SELECT.
        for chunk in rules.chunks(200) {
            let binds: Vec<Bind> = chunk.iter().map(|r| Bind::Text(r.to_string())).collect();
            let newest: Vec<String> = (1..=chunk.len())
                .map(|i| format!("SELECT (SELECT MAX(id) FROM runs WHERE rule = ${i})"))
                .collect();
            let stmt = Stmt {
                sql: format!(
                    "SELECT {COLUMNS} FROM runs WHERE id IN ({})",
                    newest.join(" UNION ALL ")
                ),
                binds: binds.clone(),
            };
            for run in self.fetch_runs(stmt).await? {
                if let Some(entry) = out.get_mut(&run.rule) {
                    entry.0 = Some(run);
                }
            }
        }
        for (rule, judged) in self.latest_judged(rules).await? {
            if let Some(entry) = out.get_mut(&rule) {
                entry.1 = Some(judged.finished_us);
            }
        }
        Ok(out)
    }

    /// For each of `rules` that has one: its newest run that judged its keys (not
    /// `unknown`), as `last_success` finds it — an index lookup per rule, up to 200 rules a
    /// statement.
    pub async fn latest_judged(
        &self,
        rules: &[&str],
    ) -> Result<HashMap<String, Judged>, StateError> {
        let mut out = HashMap::new();
        for chunk in rules.chunks(200) {
            let newest: Vec<String> = (1..=chunk.len())
                .map(|i| {
                    format!(
                        "SELECT (SELECT id FROM runs WHERE rule = ${i} AND outcome <> 'unknown' \
                         ORDER BY id DESC LIMIT 1)"
                    )
                })
                .collect();
            let stmt = Stmt {
                sql: format!(
                    "SELECT rule, finished_us, keys_judged, keys_in_grace, keys_with_errors \
                     FROM runs WHERE id IN ({})",
                    newest.join(" UNION ALL ")
                ),
                binds: chunk.iter().map(|r| Bind::Text(r.to_string())).collect(),
            };
            on_pool!(self, pool => {
                for row in bound!(stmt).fetch_all(pool).await? {
                    let judged = Judged {
                        finished_us: row.try_get(1)?,
                        keys: [row.try_get(2)?, row.try_get(3)?, row.try_get(4)?],
                    };
                    out.insert(row.try_get::<String, _>(0)?, judged);
                }
            });
        }
        Ok(out)
    }

    /// Where the incremental runs of this version of the rule stand (see `SweepMarks`).
    pub async fn sweep_marks(
        &self,
        rule: &str,
        fingerprint: &str,
    ) -> Result<SweepMarks, StateError> {
        // Newest first along the (rule, fingerprint, mode, started_us) index: each query stops
        // at the first run that judged its keys, however long the history.
        let mut newest = [None, None];
        for (i, mode) in [RunMode::Full, RunMode::Incremental]
            .into_iter()
            .enumerate()
        {
            let stmt = Stmt {
                sql: "SELECT started_us FROM runs WHERE rule = $1 AND fingerprint = $2 AND mode = $3 \
                      AND outcome IN ('pass', 'fail') ORDER BY started_us DESC LIMIT 1"
                    .into(),
                binds: vec![
                    Bind::Text(rule.into()),
                    Bind::Text(fingerprint.into()),
                    Bind::Text(mode.as_str().into()),
                ],
            };
            newest[i] = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
                Some(row) => Some(row.try_get::<i64, _>(0)?),
                None => None,
            });
        }
        Ok(SweepMarks {
            last_run_us: newest[0].max(newest[1]),
            last_full_us: newest[0],
        })
    }

    /// For each (rule, fingerprint): when its last full sweep that judged its keys started
    /// (`SweepMarks::last_full_us`), along the same index, in one statement per 200 rules.
    pub async fn last_full_sweeps(
        &self,
        rules: &[(&str, &str)],
    ) -> Result<HashMap<String, Option<i64>>, StateError> {
        let mut out = HashMap::new();
        for chunk in rules.chunks(200) {
            let mut binds = Vec::with_capacity(2 * chunk.len());
            let terms: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, (rule, fingerprint))| {
                    binds.push(Bind::Text((*rule).into()));
                    binds.push(Bind::Text((*fingerprint).into()));
                    let (r, f) = (2 * i + 1, 2 * i + 2);
                    format!(
                        "SELECT ${r}, (SELECT started_us FROM runs WHERE rule = ${r} \
                         AND fingerprint = ${f} AND mode = 'full' AND outcome IN ('pass', 'fail') \
                         ORDER BY started_us DESC LIMIT 1)"
                    )
                })
                .collect();
            let stmt = Stmt {
                sql: terms.join(" UNION ALL "),
                binds,
            };
            on_pool!(self, pool => {
                for row in bound!(stmt).fetch_all(pool).await? {
                    out.insert(row.try_get::<String, _>(0)?, row.try_get::<Option<i64>, _>(1)?);
                }
            });
        }
        Ok(out)
    }

    async fn fetch_runs(&self, stmt: Stmt) -> Result<Vec<RunRecord>, StateError> {
        let rows = on_pool!(self, pool => {
            bound!(stmt)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    let outcome: String = r.try_get(4)?;
                    let kind: Option<String> = r.try_get(7)?;
                    Ok((
                        RunRecord {
                            id: r.try_get(0)?,
                            rule: r.try_get(1)?,
                            started_us: r.try_get(2)?,
                            finished_us: r.try_get(3)?,
                            outcome: Outcome::Unknown,
                            rows_scanned: r.try_get(5)?,
                            violations: r.try_get(6)?,
                            error_kind: None,
                            error: r.try_get(8)?,
                            keys_judged: r.try_get(9)?,
                            keys_in_grace: r.try_get(10)?,
                            keys_with_errors: r.try_get(11)?,
                            mode: RunMode::Full,
                            keys_changed: r.try_get(13)?,
                            status: r
                                .try_get::<Option<String>, _>(14)?
                                .as_deref()
                                .and_then(RuleStatus::parse),
                        },
                        outcome,
                        kind,
                        r.try_get::<String, _>(12)?,
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(mut record, outcome, kind, mode)| {
                record.mode = RunMode::parse(&mode)
                    .ok_or_else(|| StateError::Corrupt(format!("run mode `{mode}`")))?;
                record.outcome = Outcome::parse(&outcome)
                    .ok_or_else(|| StateError::Corrupt(format!("run outcome `{outcome}`")))?;
                record.error_kind = match kind {
                    None => None,
                    Some(k) => Some(
                        ErrorKind::parse(&k)
                            .ok_or_else(|| StateError::Corrupt(format!("error kind `{k}`")))?,
                    ),
                };
                Ok(record)
            })
            .collect()
    }
}
