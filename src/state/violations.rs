//! The `violations` table: one row per violation occurrence, open until its key holds again
//! (judged by a run of its rule, or by a repair's check after acting: `resolved_by`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, Row as _};

use super::open_cache::{Open, Plan};
use super::{BATCH, Bind, Pool, Recorded, StateError, StateStore, Stmt, Where, bound, on_pool};
use crate::verdict::{RuleRun, Violation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationState {
    Open,
    Resolved,
}

impl ViolationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationState::Open => "open",
            ViolationState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<ViolationState> {
        match text {
            "open" => Some(ViolationState::Open),
            "resolved" => Some(ViolationState::Resolved),
            _ => None,
        }
    }
}

/// A violation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ViolationRecord {
    pub id: i64,
    pub rule: String,
    pub key: String,
    pub state: ViolationState,
    pub message: String,
    pub datasets: serde_json::Value,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub occurrences: i64,
    pub resolved_us: Option<i64>,
    /// What resolved it when not a run of its rule (`repair #17`).
    pub resolved_by: Option<String>,
    pub previous_id: Option<i64>,
    /// The rule's impact value for this key, as an exact decimal.
    pub impact: Option<String>,
}

/// Which violations to list: optional rule and state, in id order after a cursor.
#[derive(Debug, Clone, Default)]
pub struct ViolationFilter {
    pub rule: Option<String>,
    /// Only these rules' (a selection's, `rules::select`).
    pub rules: Option<Vec<String>>,
    pub key: Option<String>,
    pub state: Option<ViolationState>,
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// A rule's state at a glance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSnapshot {
    pub open: i64,
    pub oldest_first_seen_us: Option<i64>,
    /// The sum of the open violations' impact, exact (none when none has one).
    pub impact: Option<Decimal>,
    pub last_success_us: Option<i64>,
    /// Keys judged, held back by grace, and with errors in the last finished run (in the
    /// every-rule snapshot only, which restores the metrics).
    pub last_keys: Option<[i64; 3]>,
}

/// The open violations' impacts, as stored (exact decimal text). Summed here rather than in
/// SQL: SQLite has no exact decimal sum, and money must not drift (`0.10 + 0.20` is `0.30`).
fn open_impacts(filter: &str, binds: Vec<Bind>) -> Stmt {
    Stmt {
        sql: format!(
            "SELECT rule, impact FROM violations WHERE state = 'open' AND impact IS NOT NULL{filter}"
        ),
        binds,
    }
}

/// Adds one stored impact to its rule's sum.
fn add_impact(map: &mut HashMap<String, Open>, rule: String, impact: String) {
    let Ok(value) = impact.parse::<Decimal>() else {
        tracing::warn!(
            rule,
            impact,
            "A stored impact is not a decimal; it is left out of the sum."
        );
        return;
    };
    let s = map.entry(rule).or_default();
    s.impact = Some(s.impact.unwrap_or_default().saturating_add(value));
}

/// A stored impact as `Decimal` printed it, as a PostgreSQL pattern: one that is not (written
/// by hand) is left out of sums.
const DECIMAL_TEXT: &str = "'^-?[0-9]+(\\.[0-9]+)?$'";

/// The rule's violations from id `from_id` on that a repair resolved: id and when.
pub(super) fn select_repaired(rule: &str, from_id: i64) -> Stmt {
    Stmt {
        sql: "SELECT id, resolved_us FROM violations WHERE rule = $1 AND id >= $2 \
              AND state = 'resolved' AND resolved_by IS NOT NULL"
            .into(),
        binds: vec![Bind::Text(rule.into()), Bind::I64(from_id)],
    }
}

pub(super) fn select_open(rule: &str) -> Stmt {
    Stmt {
        sql: "SELECT id, key, first_seen_us FROM violations WHERE rule = $1 AND state = 'open'"
            .into(),
        binds: vec![Bind::Text(rule.into())],
    }
}

/// An open violation of a rule, as a run's recording needs it.
#[derive(Debug, Clone)]
pub struct OpenViolation {
    pub id: i64,
    pub key: Box<str>,
    pub first_seen_us: i64,
}

/// A rule's open violations as the engine asks about their keys: `open_violations` sorted
/// them by key, so a key is looked up in them as they are, with nothing more held for it.
pub struct OpenKeysOf<'a>(&'a [OpenViolation]);

pub fn keys_of(open: &[OpenViolation]) -> OpenKeysOf<'_> {
    debug_assert!(open.is_sorted_by(|a, b| a.key <= b.key));
    OpenKeysOf(open)
}

impl crate::verdict::OpenKeys for OpenKeysOf<'_> {
    fn contains(&self, key: &str) -> bool {
        self.0.binary_search_by(|o| (*o.key).cmp(key)).is_ok()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(self.0.iter().map(|o| &*o.key))
    }
}

/// The columns a `ViolationRecord` is read from, in `fetch_violations`' order.
const RECORD_COLUMNS: &str = "id, rule, key, state, message, datasets, first_seen_us, last_seen_us, \
     occurrences, resolved_us, previous_id, impact, resolved_by";

fn datasets_json(v: &Violation) -> String {
    v.datasets.as_str().to_string()
}

/// What a finished run changes, given the rule's open violations (id, key): open the new,
/// bump the seen again, resolve the open ones the run judged and found holding (or no longer
/// saw), and leave the keys it did not judge alone. Only keys and references: the statements
/// that apply it are built a batch at a time (`statements`), so that recording a run with a
/// million violations never holds their statements all at once.
///
/// `repaired` are the violations among `open` that a repair resolved since they were read,
/// by id, with when: they are open no more. A run that started before the repair read older
/// data than the repair's check, so it neither reopens nor resolves those keys; one that
/// started after judges them as new.
pub(super) struct Verdicts<'a> {
    rule: &'a str,
    started_us: i64,
    violations: &'a [Violation],
    /// For each of `violations`, the open one it was found again as (an index into
    /// `by_key`), or `NEW`, or `STALE` (a repair resolved it after the run started). Four
    /// bytes per violation found, where a list of the new and one of the seen again, grown as
    /// they were found, took up to three times as much.
    verdicts: Vec<u32>,
    by_key: Vec<&'a OpenViolation>,
    resolved: Vec<&'a OpenViolation>,
}

const NEW: u32 = u32::MAX;
const STALE: u32 = u32::MAX - 1;

pub(super) fn apply<'a>(
    run: &'a RuleRun,
    open: &'a [OpenViolation],
    repaired: &HashMap<i64, i64>,
    started_us: i64,
) -> Verdicts<'a> {
    let stale: HashSet<&str> = open
        .iter()
        .filter(|o| repaired.get(&o.id).is_some_and(|at| *at >= started_us))
        .map(|o| &*o.key)
        .collect();
    // Sorted by key and searched, with a mark for each one found: what is left unmarked at
    // the end was not found. (A vector of references rather than a map: this is held, with
    // the run, for each of perhaps a million open violations.)
    let mut by_key: Vec<&OpenViolation> = open
        .iter()
        .filter(|o| !repaired.contains_key(&o.id))
        .collect();
    by_key.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    assert!(
        by_key.len() < STALE as usize,
        "fewer open violations than u32 counts"
    );
    let mut found = vec![false; by_key.len()];
    let mut key = String::new();
    let verdicts = run
        .violations
        .iter()
        .map(|v| {
            key.clear();
            write!(key, "{}", v.key).expect("a key formats");
            if stale.contains(key.as_str()) {
                return STALE;
            }
            match by_key.binary_search_by(|o| (*o.key).cmp(key.as_str())) {
                Ok(i) if !found[i] => {
                    found[i] = true;
                    i as u32
                }
                _ => NEW,
            }
        })
        .collect();
    let held: HashSet<&str> = run.unjudged_open.iter().map(String::as_str).collect();
    let mut resolved: Vec<&OpenViolation> = by_key
        .iter()
        .zip(found)
        .filter(|(o, found)| !found && !held.contains(&*o.key))
        .map(|(o, _)| *o)
        .collect();
    resolved.sort_by_key(|o| o.id);
    Verdicts {
        rule: &run.rule,
        started_us,
        violations: &run.violations,
        verdicts,
        by_key,
        resolved,
    }
}

impl<'a> Verdicts<'a> {
    /// No change at all.
    pub(super) fn none(rule: &'a str, started_us: i64) -> Verdicts<'a> {
        Verdicts {
            rule,
            started_us,
            violations: &[],
            verdicts: Vec::new(),
            by_key: Vec::new(),
            resolved: Vec::new(),
        }
    }

    /// The statements, in batches of `BATCH` rows, each with the counts it changes: the new
    /// first, then the seen again, then the resolved. Built as they are taken.
    pub(super) fn statements(&self) -> impl Iterator<Item = (Stmt, Recorded)> + Send + '_ {
        let found = || self.violations.iter().zip(&self.verdicts);
        let new =
            batches(found().filter(|(_, t)| **t == NEW).map(|(v, _)| v)).map(|c| self.insert(&c));
        let again = batches(
            found()
                .filter(|(_, t)| **t < STALE)
                .map(|(v, t)| (self.by_key[*t as usize].id, v)),
        )
        .map(|c| self.seen_again(&c));
        let resolved = self.resolved.chunks(BATCH).map(|c| self.resolve(c));
        new.chain(again).chain(resolved)
    }

    fn insert(&self, chunk: &[&Violation]) -> (Stmt, Recorded) {
        let mut sql = String::from(
            "INSERT INTO violations (rule, key, state, message, datasets, impact, first_seen_us, last_seen_us, occurrences, previous_id) VALUES ",
        );
        let mut binds = vec![Bind::Text(self.rule.into()), Bind::I64(self.started_us)];
        for (i, v) in chunk.iter().enumerate() {
            let b = 3 + i * 4;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "($1, ${b}, 'open', ${m}, ${d}, ${x}, $2, $2, 1, (SELECT MAX(p.id) FROM violations p WHERE p.rule = $1 AND p.key = ${b}))",
                m = b + 1,
                d = b + 2,
                x = b + 3
            ));
            binds.push(Bind::Text(v.key.to_string()));
            binds.push(Bind::Text(v.message.to_string()));
            binds.push(Bind::Text(datasets_json(v)));
            binds.push(Bind::OptText(v.impact.map(|d| d.to_string())));
        }
        let counts = Recorded {
            opened: chunk.len() as u64,
            ..Recorded::default()
        };
        (Stmt { sql, binds }, counts)
    }

    fn seen_again(&self, chunk: &[(i64, &Violation)]) -> (Stmt, Recorded) {
        let mut sql = String::from("WITH u (id, message, datasets, impact) AS (VALUES ");
        let mut binds = vec![Bind::I64(self.started_us)];
        for (i, (id, v)) in chunk.iter().enumerate() {
            let b = 2 + i * 4;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(CAST(${b} AS BIGINT), ${}, ${}, CAST(${} AS TEXT))",
                b + 1,
                b + 2,
                b + 3
            ));
            binds.push(Bind::I64(*id));
            binds.push(Bind::Text(v.message.to_string()));
            binds.push(Bind::Text(datasets_json(v)));
            binds.push(Bind::OptText(v.impact.map(|d| d.to_string())));
        }
        sql.push_str(
            ") UPDATE violations SET message = u.message, datasets = u.datasets, impact = u.impact, \
             last_seen_us = $1, occurrences = violations.occurrences + 1 \
             FROM u WHERE violations.id = u.id",
        );
        let counts = Recorded {
            seen_again: chunk.len() as u64,
            ..Recorded::default()
        };
        (Stmt { sql, binds }, counts)
    }

    fn resolve(&self, chunk: &[&OpenViolation]) -> (Stmt, Recorded) {
        let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let mut binds = vec![Bind::I64(self.started_us)];
        binds.extend(chunk.iter().map(|o| Bind::I64(o.id)));
        let stmt = Stmt {
            sql: format!(
                "UPDATE violations SET state = 'resolved', resolved_us = $1 WHERE id IN ({})",
                ids.join(", ")
            ),
            binds,
        };
        let started_us = self.started_us;
        let counts = Recorded {
            resolved: chunk.len() as u64,
            healed_after: chunk
                .iter()
                .map(|o| {
                    Duration::from_micros(started_us.saturating_sub(o.first_seen_us).max(0) as u64)
                })
                .collect(),
            ..Recorded::default()
        };
        (stmt, counts)
    }
}

/// `items` in vectors of up to `BATCH`, taken as they are asked for.
fn batches<T>(items: impl Iterator<Item = T>) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        Some(items.by_ref().take(BATCH).collect())
    })
}

/// One batch of pruning: unlinks newer rows from the (at most `limit`) oldest resolved ones
/// going away, then deletes those. Both pick the same rows (the same order, and unlinking
/// changes neither `state` nor `resolved_us`); the delete comes last.
pub(super) fn prune(before_us: i64, limit: i64) -> Vec<Stmt> {
    const OLDEST: &str = "SELECT id FROM violations WHERE state = 'resolved' AND resolved_us < $1 \
                          ORDER BY resolved_us, id LIMIT $2";
    let binds = vec![Bind::I64(before_us), Bind::I64(limit)];
    vec![
        Stmt {
            sql: format!(
                "UPDATE violations SET previous_id = NULL WHERE previous_id IN ({OLDEST})"
            ),
            binds: binds.clone(),
        },
        Stmt {
            sql: format!("DELETE FROM violations WHERE id IN ({OLDEST})"),
            binds,
        },
    ]
}

impl StateStore {
    /// A rule's open violations: what a run needs to know before it starts (their keys) and
    /// to be recorded (their ids, and since when each is open).
    pub async fn open_violations(&self, rule: &str) -> Result<Vec<OpenViolation>, StateError> {
        use futures_util::TryStreamExt;
        // Streamed, not fetched whole: a rule with a million open violations is read a row at
        // a time into what the run keeps of each (an id, a key, a time), not a million driver
        // rows first.
        let mut open = Vec::new();
        on_pool!(self, pool => {
            let stmt = select_open(rule);
            let mut rows = bound!(stmt).fetch(pool);
            while let Some(r) = rows.try_next().await? {
                open.push(OpenViolation {
                    id: r.try_get(0)?,
                    key: r.try_get::<String, _>(1)?.into_boxed_str(),
                    first_seen_us: r.try_get(2)?,
                });
            }
        });
        open.shrink_to_fit();
        // By key, byte-wise (what `keys_of` searches), whatever the store's collation.
        open.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(open)
    }

    /// The keys of a rule's open violations.
    pub async fn open_keys(&self, rule: &str) -> Result<HashSet<String>, StateError> {
        let open = self.open_violations(rule).await?;
        Ok(open.into_iter().map(|o| o.key.into()).collect())
    }

    /// Violations in id order, after `filter.after_id`, at most `filter.limit`.
    pub async fn violations(
        &self,
        filter: &ViolationFilter,
    ) -> Result<Vec<ViolationRecord>, StateError> {
        let mut conditions = Where::default();
        conditions
            .and("rule =", filter.rule.clone().map(Bind::Text))
            .and_in("rule", filter.rules.as_deref())
            .and("key =", filter.key.clone().map(Bind::Text))
            .and(
                "state =",
                filter.state.map(|s| Bind::Text(s.as_str().into())),
            )
            .and("id >", filter.after_id.map(Bind::I64));
        let stmt = conditions.select(
            &format!("SELECT {RECORD_COLUMNS} FROM violations"),
            "id",
            filter.limit,
        );
        self.fetch_violations(stmt).await
    }

    /// The open violation of each of these (rule, key) pairs that has one, in one statement
    /// per 400 pairs: what the page shows beside the repairs waiting, without a query each.
    pub async fn open_violations_of(
        &self,
        pairs: &[(String, String)],
    ) -> Result<HashMap<(String, String), ViolationRecord>, StateError> {
        let mut out = HashMap::new();
        for chunk in pairs.chunks(400) {
            let mut binds = Vec::with_capacity(2 * chunk.len());
            let values: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, (rule, key))| {
                    binds.push(Bind::Text(rule.clone()));
                    binds.push(Bind::Text(key.clone()));
                    format!("(${}, ${})", 2 * i + 1, 2 * i + 2)
                })
                .collect();
            let stmt = Stmt {
                sql: format!(
                    "SELECT {RECORD_COLUMNS} FROM violations WHERE state = 'open' \
                     AND (rule, key) IN (VALUES {})",
                    values.join(", ")
                ),
                binds,
            };
            for v in self.fetch_violations(stmt).await? {
                out.insert((v.rule.clone(), v.key.clone()), v);
            }
        }
        Ok(out)
    }

    async fn fetch_violations(&self, stmt: Stmt) -> Result<Vec<ViolationRecord>, StateError> {
        let rows = on_pool!(self, pool => {
            bound!(stmt)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    let datasets: String = r.try_get(5)?;
                    let state: String = r.try_get(3)?;
                    Ok((
                        ViolationRecord {
                            id: r.try_get(0)?,
                            rule: r.try_get(1)?,
                            key: r.try_get(2)?,
                            state: ViolationState::Open,
                            message: r.try_get(4)?,
                            datasets: serde_json::from_str(&datasets).unwrap_or(serde_json::Value::Null),
                            first_seen_us: r.try_get(6)?,
                            last_seen_us: r.try_get(7)?,
                            occurrences: r.try_get(8)?,
                            resolved_us: r.try_get(9)?,
                            previous_id: r.try_get(10)?,
                            impact: r.try_get(11)?,
                            resolved_by: r.try_get(12)?,
                        },
                        state,
                    ))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(mut v, state)| {
                v.state = ViolationState::parse(&state)
                    .ok_or_else(|| StateError::Corrupt(format!("violation state `{state}`")))?;
                Ok(v)
            })
            .collect()
    }

    /// One violation by id.
    pub async fn violation(&self, id: i64) -> Result<Option<ViolationRecord>, StateError> {
        let page = self
            .violations(&ViolationFilter {
                rules: None,
                after_id: Some(id - 1),
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(page.into_iter().next().filter(|v| v.id == id))
    }

    /// For each of `rules`: its open violations (count, the oldest one's first sighting, the
    /// impact summed) and its newest run that judged its keys (when it finished, and its key
    /// counts); rules not in `rules` with violations open, their open violations. The runs
    /// are looked up by index, rule by rule: what the history holds does not count.
    pub async fn rule_snapshots(
        &self,
        rules: &[&str],
    ) -> Result<HashMap<String, RuleSnapshot>, StateError> {
        let mut map = self.open_per_rule(None).await?;
        for (rule, judged) in self.latest_judged(rules).await? {
            let s = map.entry(rule).or_default();
            s.last_success_us = Some(judged.finished_us);
            s.last_keys = Some(judged.keys);
        }
        Ok(map)
    }

    /// Per rule with open violations: their count, the oldest one's first sighting and the
    /// impact summed — from the open violations alone, so it costs what is open, not what
    /// the run history holds (the alert evaluator asks after every run).
    pub async fn open_summaries(&self) -> Result<HashMap<String, RuleSnapshot>, StateError> {
        self.open_per_rule(None).await
    }

    /// Per rule with open violations (all rules, or those of `rules`): their count, the
    /// oldest one's first sighting and their impact summed — remembered between reads while
    /// this process is the only writer (`OpenCache`), so that only the rules written since
    /// are read again.
    async fn open_per_rule(
        &self,
        rules: Option<&[&str]>,
    ) -> Result<HashMap<String, RuleSnapshot>, StateError> {
        let open = if self.open_cache.is_on() {
            match self.open_cache.plan(rules) {
                Plan::Known(known) => known,
                Plan::Read(asked, versions) => {
                    let read = self.read_open(asked.as_deref()).await?;
                    self.open_cache
                        .keep(asked.as_deref(), &versions, read, rules)
                }
            }
        } else {
            let asked: Option<Vec<String>> =
                rules.map(|r| r.iter().map(|s| s.to_string()).collect());
            self.read_open(asked.as_deref()).await?
        };
        Ok(open
            .into_iter()
            .map(|(rule, o)| {
                let snap = RuleSnapshot {
                    open: o.open,
                    oldest_first_seen_us: o.oldest_first_seen_us,
                    impact: o.impact,
                    ..Default::default()
                };
                (rule, snap)
            })
            .collect())
    }

    /// `open_per_rule` from the store. On PostgreSQL the sum is SQL's (`NUMERIC`, exact), one
    /// row per rule whatever is open; SQLite has no exact decimal sum, so there each open
    /// impact is streamed and summed here.
    async fn read_open(
        &self,
        rules: Option<&[String]>,
    ) -> Result<HashMap<String, Open>, StateError> {
        let binds: Vec<Bind> = rules
            .unwrap_or_default()
            .iter()
            .map(|r| Bind::Text(r.clone()))
            .collect();
        let filter = match rules {
            None => String::new(),
            Some([]) => return Ok(HashMap::new()),
            Some(rules) => format!(
                " AND rule IN ({})",
                (1..=rules.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let summed = self.is_postgres();
        // A stored impact is what `Decimal` printed; one that is not (a row written by hand)
        // is left out of the sum, and said so.
        let sql = if summed {
            // The pattern once a row (half the time with 100,000 open): `OFFSET 0` keeps
            // PostgreSQL from inlining the inner query, which would match it for the sum and
            // again for the count.
            format!(
                "SELECT rule, COUNT(*), MIN(first_seen_us), \
                 CAST(SUM(CASE WHEN is_decimal THEN CAST(impact AS NUMERIC) END) AS TEXT), \
                 COUNT(impact) - COUNT(CASE WHEN is_decimal THEN 1 END) \
                 FROM (SELECT rule, first_seen_us, impact, impact ~ {DECIMAL_TEXT} AS is_decimal \
                 FROM violations WHERE state = 'open'{filter} OFFSET 0) AS v GROUP BY rule"
            )
        } else {
            format!(
                "SELECT rule, COUNT(*), MIN(first_seen_us) FROM violations \
                 WHERE state = 'open'{filter} GROUP BY rule"
            )
        };
        let open = Stmt {
            sql,
            binds: binds.clone(),
        };
        let mut map: HashMap<String, Open> = HashMap::new();
        on_pool!(self, pool => {
            for row in bound!(open).fetch_all(pool).await? {
                let name: String = row.try_get(0)?;
                let s = map.entry(name.clone()).or_default();
                s.open = row.try_get(1)?;
                s.oldest_first_seen_us = row.try_get(2)?;
                if summed {
                    let total: Option<String> = row.try_get(3)?;
                    let unreadable: i64 = row.try_get(4)?;
                    if unreadable > 0 {
                        tracing::warn!(rule = name, unreadable, "Stored impacts that are not decimals are left out of the sum.");
                    }
                    if let Some(total) = total {
                        // Beyond what a `Decimal` holds (28 digits), the most it does.
                        let total = total.parse::<Decimal>().unwrap_or(Decimal::MAX);
                        s.impact = Some(total);
                    }
                }
            }
            if !summed {
                // Streamed: one row per open violation with an impact, perhaps a million.
                let mut rows = bound!(open_impacts(&filter, binds)).fetch(pool);
                while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                    add_impact(&mut map, row.try_get(0)?, row.try_get(1)?);
                }
            }
        });
        Ok(map)
    }

    /// One rule's open violations and when its newest run that judged its keys finished.
    pub async fn rule_snapshot(&self, rule: &str) -> Result<RuleSnapshot, StateError> {
        let mut snapshot = self
            .open_per_rule(Some(&[rule]))
            .await?
            .remove(rule)
            .unwrap_or_default();
        snapshot.last_success_us = self.last_success(rule).await?;
        Ok(snapshot)
    }
}
