//! The `rule_counters` table: cumulative counts per rule that survive the pruning of old rows,
//! so the metrics built on them never go backwards across restarts. Counter names are written
//! and read here only, through `Counter`; everyone else sees typed `RuleTotals`.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, Recorded, StateError, StateStore, Stmt, bound, on_pool};
use crate::verdict::{ErrorKind, Outcome, RuleRun};

/// One cumulative counter of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Counter {
    Runs(Outcome),
    Detected,
    Resolved,
    RowsScanned(String),
    Errors(ErrorKind),
    /// Repairs that ended, by how (`applied`, `failed`, …).
    Repairs(String),
}

impl Counter {
    fn name(&self) -> String {
        match self {
            Counter::Runs(o) => format!("runs_{}", o.as_str()),
            Counter::Detected => "violations_detected".into(),
            Counter::Resolved => "violations_resolved".into(),
            Counter::RowsScanned(dataset) => format!("rows_scanned:{dataset}"),
            Counter::Errors(kind) => format!("errors:{}", kind.as_str()),
            Counter::Repairs(outcome) => format!("repairs:{outcome}"),
        }
    }

    fn parse(name: &str) -> Option<Counter> {
        if let Some(dataset) = name.strip_prefix("rows_scanned:") {
            return Some(Counter::RowsScanned(dataset.into()));
        }
        if let Some(outcome) = name.strip_prefix("repairs:") {
            return Some(Counter::Repairs(outcome.into()));
        }
        if let Some(kind) = name.strip_prefix("errors:") {
            return ErrorKind::parse(kind).map(Counter::Errors);
        }
        if let Some(outcome) = name.strip_prefix("runs_") {
            return Outcome::parse(outcome).map(Counter::Runs);
        }
        match name {
            "violations_detected" => Some(Counter::Detected),
            "violations_resolved" => Some(Counter::Resolved),
            _ => None,
        }
    }
}

/// A rule's cumulative counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTotals {
    pub runs: HashMap<Outcome, u64>,
    pub detected: u64,
    pub resolved: u64,
    /// Rows read, by dataset name.
    pub rows_scanned: HashMap<String, u64>,
    pub errors: HashMap<ErrorKind, u64>,
    /// Repairs that ended, by outcome.
    pub repairs: HashMap<String, u64>,
}

impl RuleTotals {
    fn add(&mut self, counter: Counter, value: u64) {
        match counter {
            Counter::Runs(o) => *self.runs.entry(o).or_default() += value,
            Counter::Detected => self.detected += value,
            Counter::Resolved => self.resolved += value,
            Counter::RowsScanned(d) => *self.rows_scanned.entry(d).or_default() += value,
            Counter::Errors(k) => *self.errors.entry(k).or_default() += value,
            Counter::Repairs(o) => *self.repairs.entry(o).or_default() += value,
        }
    }
}

/// What a recorded run itself adds to its rule's counters: its outcome, rows and error.
pub(super) fn add_run(run: &RuleRun) -> Vec<Stmt> {
    let mut counts = vec![(Counter::Runs(run.outcome), 1)];
    for (dataset, rows) in run.datasets.iter().zip(&run.rows_scanned) {
        counts.push((Counter::RowsScanned(dataset.clone()), *rows));
    }
    if let Some(kind) = run.error_kind() {
        counts.push((Counter::Errors(kind), 1));
    }
    increments(&run.rule, counts)
}

/// The counter increments for the violations one part of a run opened and resolved: written
/// in the same transaction as those changes, so the counters always agree with the rows.
pub(super) fn add_changes(rule: &str, changed: &Recorded) -> Vec<Stmt> {
    increments(
        rule,
        vec![
            (Counter::Detected, changed.opened),
            (Counter::Resolved, changed.resolved),
        ],
    )
}

/// One more repair of the rule ended this way.
pub(super) fn add_repair(rule: &str, outcome: &str) -> Vec<Stmt> {
    increments(rule, vec![(Counter::Repairs(outcome.to_string()), 1)])
}

fn increments(rule: &str, counts: Vec<(Counter, u64)>) -> Vec<Stmt> {
    counts
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(counter, value)| Stmt {
            sql: "INSERT INTO rule_counters (rule, name, value) VALUES ($1, $2, $3) \
                  ON CONFLICT (rule, name) DO UPDATE SET value = rule_counters.value + excluded.value"
                .into(),
            binds: vec![
                Bind::Text(rule.to_string()),
                Bind::Text(counter.name()),
                Bind::I64(value as i64),
            ],
        })
        .collect()
}

impl StateStore {
    /// Every rule's cumulative counts. Counters this version does not know are left out.
    pub async fn totals(&self) -> Result<HashMap<String, RuleTotals>, StateError> {
        let stmt = Stmt {
            sql: "SELECT rule, name, value FROM rule_counters".into(),
            binds: Vec::new(),
        };
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => {
            bound!(stmt)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let mut totals: HashMap<String, RuleTotals> = HashMap::new();
        for (rule, name, value) in rows {
            if let Some(counter) = Counter::parse(&name) {
                totals
                    .entry(rule)
                    .or_default()
                    .add(counter, value.max(0) as u64);
            }
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_round_trip() {
        let all = [
            Counter::Runs(Outcome::Pass),
            Counter::Runs(Outcome::Unknown),
            Counter::Detected,
            Counter::Resolved,
            Counter::RowsScanned("payment".into()),
            Counter::Errors(ErrorKind::Timeout),
            Counter::Repairs("applied".into()),
        ];
        for c in all {
            assert_eq!(Counter::parse(&c.name()), Some(c));
        }
        assert_eq!(Counter::parse("something_else"), None);
    }
}
