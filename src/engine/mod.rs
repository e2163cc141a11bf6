//! The engine: one run of one rule. Its datasets stream from their databases in key order and
//! are merged on the key in one pass (a k-way merge join, full outer), so memory does not grow
//! with table size; each key is then judged on its own: skipped while within `grace`, else the
//! assertion decides between pass and violation, and anything that prevents a decision for a
//! key (an evaluation error, two rows where one was expected) is reported for that key.
//!
//! A run that cannot finish — a source down, a query that fails or times out, a missing key
//! column — is `unknown`: it carries the reason and no verdicts at all, because no data is not
//! good data.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::expr::{Env, Group, Program, Row, Template};
use crate::rules::Rule;
use crate::sources::{
    Description, KeyKind, KeyMode, ReadRequest, Reader, ReaderMsg, Sources, spawn_reader,
};
use crate::value::{Key, Value, parse_timestamp_text};

/// At most this many per-key errors are kept with their text; all are counted.
const MAX_KEY_ERRORS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// A key for which the assertion is false.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: Key,
    pub message: String,
    /// What each dataset held for the key: a row, a list of rows (`many`), or null.
    pub datasets: serde_json::Map<String, serde_json::Value>,
}

/// A key that could not be judged.
#[derive(Debug, Clone)]
pub struct KeyError {
    pub key: Key,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct RuleRun {
    pub rule: String,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Why the run is unknown, or a summary of the keys that could not be judged.
    pub error: Option<String>,
    /// The rule's dataset names, in rule order.
    pub datasets: Vec<String>,
    /// Rows read, per dataset in rule order.
    pub rows_scanned: Vec<u64>,
    pub keys_judged: u64,
    pub keys_in_grace: u64,
    pub violations: Vec<Violation>,
    pub key_errors: Vec<KeyError>,
    pub key_errors_total: u64,
    /// Whether the run read every dataset to the end. Only then do its verdicts count: a key
    /// it did not report may be resolved.
    pub finished: bool,
    /// Keys that had an open violation before the run but were not judged by it (still in
    /// `grace`, or an error for that key): they stay as they are.
    pub unjudged_open: Vec<String>,
    /// Sources this run could not connect to.
    pub sources_down: Vec<String>,
}

impl RuleRun {
    /// A run that could not happen or was abandoned: it judges nothing.
    pub fn unknown(
        rule: &str,
        started_at: DateTime<Utc>,
        duration: Duration,
        reason: String,
    ) -> RuleRun {
        RuleRun {
            rule: rule.to_string(),
            started_at,
            duration,
            outcome: Outcome::Unknown,
            error: Some(reason),
            datasets: Vec::new(),
            rows_scanned: Vec::new(),
            keys_judged: 0,
            keys_in_grace: 0,
            violations: Vec::new(),
            key_errors: Vec::new(),
            key_errors_total: 0,
            finished: false,
            unjudged_open: Vec::new(),
            sources_down: Vec::new(),
        }
    }

    pub fn total_rows_scanned(&self) -> u64 {
        self.rows_scanned.iter().sum()
    }
}

/// Runs one rule once, at `now`.
pub async fn run_rule(rule: &Rule, sources: &Sources, now: DateTime<Utc>) -> RuleRun {
    run_rule_with_open(rule, sources, now, &HashSet::new()).await
}

/// Runs one rule once, at `now`, knowing which keys have an open violation, so that the run can
/// say which of them it could not judge.
pub async fn run_rule_with_open(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &HashSet<String>,
) -> RuleRun {
    let started = Instant::now();
    let mut run = RuleRun {
        datasets: rule.datasets.iter().map(|d| d.name.clone()).collect(),
        rows_scanned: vec![0; rule.datasets.len()],
        error: None,
        ..RuleRun::unknown(&rule.name, now, Duration::ZERO, String::new())
    };
    let result = execute(rule, sources, now, open, &mut run).await;
    run.duration = started.elapsed();
    match result {
        Err(reason) => {
            run.outcome = Outcome::Unknown;
            run.error = Some(reason);
            run.violations.clear();
            run.key_errors.clear();
            run.key_errors_total = 0;
            run.unjudged_open.clear();
        }
        Ok(()) => {
            run.finished = true;
            if run.key_errors_total > 0 {
                run.error = Some(key_error_summary(&run));
            }
            run.outcome = if !run.violations.is_empty() {
                Outcome::Fail
            } else if run.key_errors_total > 0 {
                Outcome::Unknown
            } else {
                Outcome::Pass
            };
        }
    }
    tracing::debug!(
        rule = %rule.name,
        outcome = run.outcome.as_str(),
        rows = run.total_rows_scanned(),
        violations = run.violations.len(),
        duration_ms = run.duration.as_millis() as u64,
        "Rule run finished."
    );
    run
}

fn key_error_summary(run: &RuleRun) -> String {
    let n = run.key_errors_total;
    let shown: Vec<String> = run
        .key_errors
        .iter()
        .take(5)
        .map(|e| format!("key {}: {}", e.key, e.message))
        .collect();
    let more = if n as usize > shown.len() {
        format!("; and {} more", n as usize - shown.len())
    } else {
        String::new()
    };
    format!(
        "{n} key{} could not be judged: {}{more}",
        if n == 1 { "" } else { "s" },
        shown.join("; ")
    )
}

/// The reader tasks of a run, abandoned with it: when a run ends early its readers stop and
/// their transactions roll back.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn execute(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &HashSet<String>,
    run: &mut RuleRun,
) -> Result<(), String> {
    let what = |i: usize| {
        let d = &rule.datasets[i];
        format!("dataset `{}` (source `{}`)", d.name, d.source)
    };

    // 1. Take the connections the run needs, source by source in name order so that two runs
    //    can never each hold what the other waits for; then start a reader per dataset.
    let mut needs: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for d in &rule.datasets {
        *needs.entry(d.source.as_str()).or_default() += 1;
    }
    let mut _permits = Vec::with_capacity(needs.len());
    for (name, n) in needs {
        let source = sources
            .get(name)
            .ok_or_else(|| format!("source `{name}` is not configured"))?;
        _permits.push(source.reserve(n).await?);
    }
    let mut tasks = AbortOnDrop(Vec::with_capacity(rule.datasets.len()));
    let mut readers = Vec::with_capacity(rule.datasets.len());
    for d in &rule.datasets {
        let source = sources
            .get(&d.source)
            .ok_or_else(|| format!("source `{}` is not configured", d.source))?;
        let cfg = &source.config;
        let deadline =
            Instant::now() + cfg.connect_timeout + cfg.statement_timeout + Duration::from_secs(5);
        let Reader {
            messages,
            mode,
            task,
        } = spawn_reader(
            source.clone(),
            ReadRequest {
                query: d.query.clone(),
                key: rule.key.clone(),
                deadline,
            },
        );
        tasks.0.push(task);
        readers.push((messages, mode));
    }
    let firsts =
        futures_util::future::join_all(readers.iter_mut().map(|(messages, _)| messages.recv()))
            .await;
    let mut descriptions = Vec::with_capacity(firsts.len());
    let mut failures = Vec::new();
    for (i, msg) in firsts.into_iter().enumerate() {
        match msg {
            Some(ReaderMsg::Described(d)) => descriptions.push(d),
            Some(ReaderMsg::Failed(e)) => {
                if e.unreachable {
                    run.sources_down.push(rule.datasets[i].source.clone());
                }
                failures.push(format!("{}: {e}", what(i)))
            }
            _ => failures.push(format!("{}: the reader stopped unexpectedly", what(i))),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    // 2. Check what the queries return against what the rule needs.
    let plan = plan(rule, &descriptions, &what)?;

    // 3. One key order for every dataset, then stream.
    let mode = if descriptions.iter().all(|d| d.key_kind == KeyKind::Int) {
        KeyMode::Int
    } else {
        KeyMode::Text
    };
    let mut cursors = Vec::with_capacity(readers.len());
    for (i, (messages, mode_tx)) in readers.into_iter().enumerate() {
        let _ = mode_tx.send(mode);
        cursors.push(Cursor {
            rx: messages,
            batch: Vec::new().into_iter(),
            head: None,
            rows: 0,
            null_keys: 0,
            done: false,
            index: i,
        });
    }
    for c in &mut cursors {
        c.advance()
            .await
            .map_err(|e| format!("{}: {e}", what(c.index)))?;
    }

    // 4. Merge and judge.
    let now_micros = now.timestamp_micros();
    let grace_from =
        (rule.grace > Duration::ZERO).then(|| now_micros - rule.grace.as_micros() as i64);
    let mut groups: Vec<Group> = rule
        .datasets
        .iter()
        .map(|d| Group {
            rows: Vec::new(),
            many: d.many,
        })
        .collect();
    let mut duplicates: Vec<(usize, usize)> = Vec::new();
    while let Some(key) = cursors
        .iter()
        .filter_map(|c| c.head.as_ref().map(|r| &r.key))
        .min()
        .cloned()
    {
        for g in &mut groups {
            g.rows.clear();
        }
        duplicates.clear();
        for (i, c) in cursors.iter_mut().enumerate() {
            let mut count = 0;
            while c.head.as_ref().is_some_and(|r| r.key == key) {
                let row = c.head.take().expect("checked");
                count += 1;
                if groups[i].many || groups[i].rows.is_empty() {
                    groups[i].rows.push(row);
                }
                c.advance().await.map_err(|e| format!("{}: {e}", what(i)))?;
            }
            if count > 1 && !groups[i].many {
                duplicates.push((i, count));
            }
        }
        if let Some(&(i, count)) = duplicates.first() {
            run.add_key_error(
                open,
                key,
                format!(
                    "dataset `{}` returned {count} rows for this key; without `many: true` a dataset must return at most one row per key",
                    rule.datasets[i].name
                ),
            );
            continue;
        }
        judge(rule, &plan, &groups, key, now_micros, grace_from, open, run);
    }
    for c in &cursors {
        run.rows_scanned[c.index] = c.rows;
        if c.null_keys > 0 {
            tracing::warn!(
                rule = %rule.name,
                dataset = %rule.datasets[c.index].name,
                rows = c.null_keys,
                "Rows with a NULL key were left out: they cannot be joined."
            );
        }
    }
    Ok(())
}

/// What a run needs after describing: the compiled assertion and message, and per dataset the
/// slot of its `updated_at` column.
struct Plan {
    assertion: Program,
    message: Template,
    updated_at: Vec<Option<usize>>,
    columns: Vec<Vec<String>>,
}

fn plan(
    rule: &Rule,
    descriptions: &[Description],
    what: &dyn Fn(usize) -> String,
) -> Result<Plan, String> {
    let mut problems = Vec::new();
    let mut updated_at = Vec::new();
    for (i, (d, desc)) in rule.datasets.iter().zip(descriptions).enumerate() {
        match (&desc.key_index, &desc.key_kind) {
            (None, _) => problems.push(format!(
                "{} returns no column `{}` (the rule's key); it returns: {}",
                what(i),
                rule.key,
                desc.columns.join(", ")
            )),
            (Some(k), KeyKind::Unsupported) => problems.push(format!(
                "{}: the key column `{}` has type {}; keys must be integers or text (cast it in the query)",
                what(i),
                rule.key,
                desc.types[*k]
            )),
            _ => {}
        }
        let slot = match &d.updated_at {
            None => None,
            Some(col) => match desc.columns.iter().position(|c| c == col) {
                Some(s) => Some(s),
                None => {
                    problems.push(format!(
                        "{}: updated_at names `{col}`, which the query does not return; it returns: {}",
                        what(i),
                        desc.columns.join(", ")
                    ));
                    None
                }
            },
        };
        updated_at.push(slot);
    }
    let columns: Vec<Option<&[String]>> = descriptions
        .iter()
        .map(|d| Some(d.columns.as_slice()))
        .collect();
    let scope = rule.scope(&columns);
    let assertion = crate::expr::compile(&rule.assertion_ast, &scope).map_err(|errors| {
        let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        format!("assert ({}): {}", rule.assertion_origin, msgs.join("; "))
    });
    let message = Template::compile(rule.message_template(), &scope).map_err(|errors| {
        let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        let origin = rule.message_origin.as_ref().unwrap_or(&rule.origin);
        format!("message ({origin}): {}", msgs.join("; "))
    });
    let (assertion, message) = match (assertion, message) {
        (Ok(a), Ok(m)) => (a, m),
        (a, m) => {
            problems.extend(a.err());
            problems.extend(m.err());
            return Err(problems.join("; "));
        }
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Plan {
        assertion,
        message,
        updated_at,
        columns: descriptions.iter().map(|d| d.columns.clone()).collect(),
    })
}

impl RuleRun {
    fn add_key_error(&mut self, open: &HashSet<String>, key: Key, message: String) {
        self.hold_if_open(open, &key);
        self.key_errors_total += 1;
        if self.key_errors.len() < MAX_KEY_ERRORS {
            self.key_errors.push(KeyError { key, message });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn judge(
    rule: &Rule,
    plan: &Plan,
    groups: &[Group],
    key: Key,
    now: i64,
    grace_from: Option<i64>,
    open: &HashSet<String>,
    run: &mut RuleRun,
) {
    if let Some(grace_from) = grace_from {
        match newest_update(rule, plan, groups) {
            Ok(Some(t)) if t > grace_from => {
                run.keys_in_grace += 1;
                run.hold_if_open(open, &key);
                return;
            }
            Ok(_) => {}
            Err(msg) => {
                run.add_key_error(open, key, msg);
                return;
            }
        }
    }
    let env = Env {
        now,
        key: &key,
        groups,
    };
    run.keys_judged += 1;
    match plan.assertion.eval_bool(&env) {
        Ok(true) => {}
        Ok(false) => {
            let message = plan.message.render(&env);
            let datasets = snapshot(rule, plan, groups);
            run.violations.push(Violation {
                key,
                message,
                datasets,
            });
        }
        Err(e) => {
            let msg = format!("assert: {}", e.message);
            run.add_key_error(open, key, msg);
        }
    }
}

impl RuleRun {
    /// Remembers that an open key was not judged. Only skipped keys pay for the lookup.
    fn hold_if_open(&mut self, open: &HashSet<String>, key: &Key) {
        if !open.is_empty() {
            let text = key.to_string();
            if open.contains(&text) {
                self.unjudged_open.push(text);
            }
        }
    }
}

/// The newest `updated_at` among the key's rows, across its datasets.
fn newest_update(rule: &Rule, plan: &Plan, groups: &[Group]) -> Result<Option<i64>, String> {
    let mut newest = None;
    for (i, (group, slot)) in groups.iter().zip(&plan.updated_at).enumerate() {
        let Some(slot) = slot else { continue };
        for row in &group.rows {
            let t = match &row.values[*slot] {
                Value::Null => continue,
                Value::Timestamp(t) => *t,
                Value::Text(s) => parse_timestamp_text(s).ok_or_else(|| {
                    format!(
                        "updated_at of dataset `{}` is `{s}`, not a timestamp",
                        rule.datasets[i].name
                    )
                })?,
                other => {
                    return Err(format!(
                        "updated_at of dataset `{}` is a {} (`{other}`), not a timestamp",
                        rule.datasets[i].name,
                        other.type_name()
                    ));
                }
            };
            newest = newest.max(Some(t));
        }
    }
    Ok(newest)
}

/// The rows behind a violation, for people and the API: each dataset's row as an object of
/// its columns, a list of them (`many`), or null.
fn snapshot(
    rule: &Rule,
    plan: &Plan,
    groups: &[Group],
) -> serde_json::Map<String, serde_json::Value> {
    rule.datasets
        .iter()
        .zip(groups)
        .zip(&plan.columns)
        .map(|((d, g), columns)| {
            let object = |r: &Row| {
                serde_json::Value::Object(
                    columns
                        .iter()
                        .zip(r.values.iter())
                        .map(|(c, v)| (c.clone(), v.to_json()))
                        .collect(),
                )
            };
            let value = if g.many {
                serde_json::Value::Array(g.rows.iter().map(object).collect())
            } else {
                g.rows.first().map_or(serde_json::Value::Null, object)
            };
            (d.name.clone(), value)
        })
        .collect()
}

struct Cursor {
    rx: tokio::sync::mpsc::Receiver<ReaderMsg>,
    batch: std::vec::IntoIter<Row>,
    head: Option<Row>,
    rows: u64,
    null_keys: u64,
    done: bool,
    index: usize,
}

impl Cursor {
    /// Moves the head to the next row, waiting for the next batch when needed.
    async fn advance(&mut self) -> Result<(), String> {
        loop {
            if let Some(row) = self.batch.next() {
                self.rows += 1;
                self.head = Some(row);
                return Ok(());
            }
            if self.done {
                self.head = None;
                return Ok(());
            }
            match self.rx.recv().await {
                Some(ReaderMsg::Rows(rows)) => self.batch = rows.into_iter(),
                Some(ReaderMsg::Done { null_keys }) => {
                    self.rows += null_keys;
                    self.null_keys = null_keys;
                    self.done = true;
                }
                Some(ReaderMsg::Failed(e)) => return Err(e.message),
                Some(ReaderMsg::Described(_)) => {
                    return Err("the reader described its query twice".into());
                }
                None => return Err("the reader stopped before the end of the data".into()),
            }
        }
    }
}
