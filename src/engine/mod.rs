//! The engine: one run of one rule. Its datasets stream from their databases in key order and
//! are merged on the key in one pass (`merge`, a k-way merge join, full outer), so memory does
//! not grow with table size; each key is then judged on its own (`judge`). `plan` checks what
//! the queries return against what the rule needs before any key is judged.
//!
//! A run that cannot finish — a source down, a query that fails or times out, a missing key
//! column — is `unknown`: it carries a typed `RunError` and no verdicts at all, because no
//! data is not good data.
//!
//! A full sweep may be split into key ranges read apart (`run_rule_range`, on several
//! replicas); `parts` merges their runs into the one run a single sweep would have made.
//!
//! The merge reads through `RowBatches`, which the database readers (here) and in-memory
//! fixtures (`fixture`, for `invariantd test` and property tests) both implement, so the same
//! code judges both.

mod explain;
pub mod fixture;
mod incremental;
mod judge;
mod merge;
mod parts;
mod plan;
#[cfg(test)]
mod proptests;
mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::rules::{Origin, Rule};
use crate::sources::{
    ChangedSince, Description, KeyRange, ReadRequest, Reader, ReaderMsg, SharedSnapshot, Sources,
    Spent, spawn_reader,
};
use crate::value::Row;
use crate::verdict::{ErrorKind, NONE_OPEN, OpenKeys, Outcome, RuleRun, RunError};

pub use explain::{DatasetRows, Explanation, Step, explain};
pub use incremental::{MAX_INCREMENTAL_KEYS, run_rule_incremental};
pub use merge::RowBatches;
pub use parts::{key_ranges, merge_parts};

pub use judge::Grace;
use judge::Judge;
use merge::Cursor;

/// Runs the rules at once, up to `concurrency` at a time; results come back in rule order.
///
/// Each run is a task of the runtime, not a part of the caller's future: a command drives
/// its future from the thread that called `block_on`, which is not one of the runtime's
/// workers, so merging there would make three busy threads of the process (that one and the
/// two workers running the readers) on a two-core machine, where the databases' own threads
/// need the cores too (`bench/RESULTS.md`, "The merge on the workers"). Dropping the returned
/// future aborts the runs, which abandons their readers, as before.
pub async fn run_rules(rules: &[Rule], sources: &Sources, concurrency: usize) -> Vec<RuleRun> {
    futures_util::stream::iter(rules)
        .map(|rule| {
            let (rule, sources) = (rule.clone(), sources.clone());
            AbortOnDropHandle::new(tokio::spawn(async move {
                run_rule(&rule, &sources, Utc::now()).await
            }))
        })
        .buffered(concurrency.max(1))
        .map(|joined| joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
        .collect()
        .await
}

/// Runs one rule once, at `now`.
pub async fn run_rule(rule: &Rule, sources: &Sources, now: DateTime<Utc>) -> RuleRun {
    run_rule_with_open(rule, sources, now, NONE_OPEN, None).await
}

/// Runs one rule once, at `now`, knowing which keys have an open violation, so that the run can
/// say which of them it could not judge, and what the rule measured at its previous run
/// (`previous`, for a rule that measures: `Rule::measure`).
pub async fn run_rule_with_open(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &dyn OpenKeys,
    previous: Option<i64>,
) -> RuleRun {
    run_keys(rule, sources, now, open, Read::All, Grace::Apply, previous).await
}

/// Runs one rule once, at `now`, over the keys in `range` only: one part of a full sweep split
/// into key ranges (`merge_parts` makes the parts one run). `open` may hold every key with an
/// open violation: those outside the range are not the part's to judge. `snapshots`, by
/// source, are snapshots exported for the whole sweep (`Source::export_snapshot`): the
/// datasets on those sources read them, so every range sees the same data.
pub async fn run_rule_range(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &dyn OpenKeys,
    range: &KeyRange,
    snapshots: &BTreeMap<String, String>,
) -> RuleRun {
    let read = Read::Range(range, snapshots);
    run_keys(rule, sources, now, open, read, Grace::Apply, None).await
}

/// Judges the rule for these keys only, now: each dataset's query is read with the key
/// filter pushed into it (`WHERE key IN (…)`), so the cost follows the number of keys, not
/// the table. Keys with no row in any dataset are not judged. This is how a repair's
/// violation is checked again before acting (with grace) and after (without), and what
/// `explain` shows.
pub async fn run_rule_for_keys(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    keys: &[String],
    grace: Grace,
) -> RuleRun {
    run_keys(rule, sources, now, NONE_OPEN, Read::Keys(keys), grace, None).await
}

async fn run_keys(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &dyn OpenKeys,
    read: Read<'_>,
    grace: Grace,
    previous: Option<i64>,
) -> RuleRun {
    let started = Instant::now();
    let mut run = new_run(rule, now);
    let judging = (grace, previous);
    let result = execute(rule, sources, now, open, read, judging, &mut run).await;
    let mut run = finish(rule, run, result, started.elapsed());
    redact(&mut run, sources.secrets());
    run
}

/// Replaces every secret in what a run found (messages, evidence, errors) by `***`: a query
/// that selects a connection string must not publish its password to the store, the API or
/// the logs.
fn redact(run: &mut RuleRun, secrets: &crate::value::Secrets) {
    if secrets.is_empty() {
        return;
    }
    let clean = |s: &mut String| {
        if let std::borrow::Cow::Owned(r) = secrets.redact(s) {
            *s = r;
        }
    };
    for v in &mut run.violations {
        if let std::borrow::Cow::Owned(r) = secrets.redact(&v.message) {
            v.message = r.into();
        }
        v.datasets.redact(secrets);
        for action in &mut v.repairs {
            if let Ok(mut json) = serde_json::to_value(&action.spec) {
                secrets.redact_json(&mut json);
                if let Ok(spec) = serde_json::from_value(json) {
                    action.spec = spec;
                }
            }
        }
    }
    for e in &mut run.key_errors {
        clean(&mut e.message);
    }
    if let Some(e) = &mut run.error {
        clean(&mut e.message);
    }
}

/// A run of `rule` at `now` that has judged nothing yet.
fn new_run(rule: &Rule, now: DateTime<Utc>) -> RuleRun {
    RuleRun {
        datasets: rule.datasets.iter().map(|d| d.name.clone()).collect(),
        rows_scanned: vec![0; rule.datasets.len()],
        error: None,
        fingerprint: rule.fingerprint.clone(),
        ..RuleRun::unknown(
            &rule.name,
            now,
            Duration::ZERO,
            RunError::new(ErrorKind::Cancelled, ""),
        )
    }
}

/// Settles the outcome: an error makes the run unknown with no verdicts; otherwise
/// violations make it fail, and keys that could not be judged (with no violation) unknown.
fn finish(
    rule: &Rule,
    mut run: RuleRun,
    result: Result<(), RunError>,
    duration: Duration,
) -> RuleRun {
    run.duration = duration;
    match result {
        Err(error) => {
            run.outcome = Outcome::Unknown;
            run.error = Some(error);
            run.violations.clear();
            run.key_errors.clear();
            run.key_errors_total = 0;
            run.unjudged_open.clear();
            run.keys_judged = 0;
            run.keys_in_grace = 0;
            run.samples.clear();
        }
        Ok(()) => {
            run.finished = true;
            parts::settle(&mut run);
        }
    }
    run.status = status_of(rule, &run);
    tracing::debug!(
        rule = %run.rule,
        outcome = run.outcome.as_str(),
        rows = run.total_rows_scanned(),
        violations = run.violations.len(),
        duration_ms = run.duration.as_millis() as u64,
        "Rule run finished."
    );
    run
}

/// A run's status under its rule's thresholds: what its violations, the keys it judged and
/// the impact they put at risk add up to; `unknown` when it judged nothing.
pub fn status_of(rule: &Rule, run: &RuleRun) -> crate::verdict::RuleStatus {
    if run.outcome == Outcome::Unknown {
        return crate::verdict::RuleStatus::Unknown;
    }
    rule.thresholds.status(&tally_of(rule, run))
}

/// What a run's violations add up to, as thresholds read them.
pub fn tally_of(rule: &Rule, run: &RuleRun) -> crate::rules::thresholds::Tally {
    crate::rules::thresholds::Tally {
        violations: run.violations.len() as u64,
        judged: run.keys_judged,
        impact: rule
            .impact
            .as_ref()
            .map(|_| run.violations.iter().filter_map(|v| v.impact).sum()),
    }
}

/// Where a dataset's error happened: the dataset and source, and for errors about the query
/// itself, where the query is written.
pub(crate) fn where_(rule: &Rule, i: usize, kind: ErrorKind) -> String {
    let d = &rule.datasets[i];
    match kind {
        ErrorKind::QueryFailed | ErrorKind::Timeout | ErrorKind::SchemaMismatch => format!(
            "dataset `{}` (source `{}`, query at {})",
            d.name, d.source, d.query_origin
        ),
        _ => format!("dataset `{}` (source `{}`)", d.name, d.source),
    }
}

/// A database reader's rows after its description.
struct ChannelBatches {
    rx: mpsc::Receiver<ReaderMsg>,
    spent: Spent,
    null_keys: u64,
}

impl RowBatches for ChannelBatches {
    async fn next_batch(&mut self) -> Result<Option<Vec<Row>>, RunError> {
        match self.rx.recv().await {
            Some(ReaderMsg::Rows(rows)) => Ok(Some(rows)),
            Some(ReaderMsg::Done { null_keys }) => {
                self.null_keys = null_keys;
                Ok(None)
            }
            Some(ReaderMsg::Failed(e)) => Err(e),
            Some(ReaderMsg::Described(_)) => Err(RunError::new(
                ErrorKind::QueryFailed,
                "the reader described its query twice",
            )),
            None => Err(RunError::new(
                ErrorKind::QueryFailed,
                "the reader stopped before the end of the data",
            )),
        }
    }

    fn null_keys(&self) -> u64 {
        self.null_keys
    }

    fn give_back(&mut self, spent: Vec<Row>) {
        self.spent.give(spent);
    }
}

/// The readers of one run, started and described: each dataset's description (or its typed
/// error), and what the merge needs to go on. Dropping it abandons the readers: each notices,
/// stops its query on the server, rolls back and ends, giving back its reserved connection.
struct Described {
    readers: Vec<Reader>,
    descriptions: Vec<Result<Description, RunError>>,
}

/// Which rows of each dataset a run reads.
#[derive(Debug, Clone, Copy)]
enum Read<'a> {
    All,
    /// The rows of these keys (`WHERE key IN (…)`).
    Keys(&'a [String]),
    /// The rows whose `updated_at` is at or after this instant.
    ChangedSince(DateTime<Utc>),
    /// The rows of the keys in this range (one part of a partitioned sweep), from the
    /// sweep's snapshots of these sources.
    Range(&'a KeyRange, &'a BTreeMap<String, String>),
}

/// Takes the connections a run needs, source by source in name order so that two runs can
/// never each hold what the other waits for; starts a reader per dataset; and waits until each
/// has described its query (prepared, not run).
async fn describe(rule: &Rule, sources: &Sources, read: Read<'_>) -> Result<Described, RunError> {
    let not_configured = |name: &str| {
        RunError::new(
            ErrorKind::SourceUnreachable,
            format!("source `{name}` is not configured"),
        )
    };
    let mut needs: BTreeMap<&str, u32> = BTreeMap::new();
    for d in &rule.datasets {
        *needs.entry(d.source.as_str()).or_default() += 1;
    }
    let mut permits = BTreeMap::new();
    for (name, n) in needs {
        let source = sources.get(name).ok_or_else(|| not_configured(name))?;
        permits.insert(name, source.reserve(n).await?);
    }
    // Datasets on one PostgreSQL source read from one snapshot: the sweep's, for a range of
    // a partitioned one that has it.
    let mut snapshots: BTreeMap<&str, Vec<SharedSnapshot>> = BTreeMap::new();
    for (name, permit) in &permits {
        let shares = permit.num_permits();
        let exported = match read {
            Read::Range(_, exported) => exported.get(*name),
            _ => None,
        };
        if let Some(id) = exported {
            let imports = (0..shares).map(|_| SharedSnapshot::imported(id.clone()));
            snapshots.insert(name, imports.collect());
        } else if shares > 1 && sources.get(name).is_some_and(|s| s.shares_snapshot()) {
            snapshots.insert(name, SharedSnapshot::group(shares));
        }
    }
    let mut readers = Vec::with_capacity(rule.datasets.len());
    for (i, d) in rule.datasets.iter().enumerate() {
        let changed_since = match read {
            Read::ChangedSince(since) => Some(ChangedSince {
                column: d.updated_at.clone().ok_or_else(|| {
                    let e = RunError::new(
                        ErrorKind::SchemaMismatch,
                        "an incremental run needs `updated_at` on every dataset",
                    );
                    e.context(where_(rule, i, ErrorKind::SchemaMismatch))
                })?,
                since,
            }),
            _ => None,
        };
        let source = sources
            .get(&d.source)
            .ok_or_else(|| not_configured(&d.source))?;
        let cfg = &source.config;
        let deadline =
            Instant::now() + cfg.connect_timeout + cfg.statement_timeout + Duration::from_secs(5);
        // Each reader holds one of the connections reserved for its source until it ends.
        let permit = permits
            .get_mut(d.source.as_str())
            .and_then(|p| p.split(1))
            .expect("one connection was reserved per dataset");
        let reader = spawn_reader(
            source.clone(),
            ReadRequest {
                query: d.query.clone(),
                key: rule.key.clone(),
                deadline,
                keys: match read {
                    Read::Keys(keys) => Some(keys.to_vec()),
                    _ => None,
                },
                changed_since,
                snapshot: snapshots.get_mut(d.source.as_str()).and_then(Vec::pop),
                range: match read {
                    Read::Range(range, _) => Some(range.clone()),
                    _ => None,
                },
            },
            permit,
        );
        readers.push(reader);
    }
    let firsts =
        futures_util::future::join_all(readers.iter_mut().map(|r| r.messages.recv())).await;
    let descriptions = firsts
        .into_iter()
        .map(|msg| match msg {
            Some(ReaderMsg::Described(d)) => Ok(d),
            Some(ReaderMsg::Failed(e)) => Err(e),
            _ => Err(RunError::new(
                ErrorKind::QueryFailed,
                "the reader stopped unexpectedly",
            )),
        })
        .collect();
    Ok(Described {
        readers,
        descriptions,
    })
}

/// A problem `prepare` found: where it is written (the query, the assertion…) and the error,
/// or the source that cannot be reached and why (the error's message is then only the cause).
#[derive(Debug, Clone)]
pub struct Problem {
    pub origin: Option<Origin>,
    pub unreachable: Option<String>,
    pub error: RunError,
}

/// What is wrong with a rule against its databases, found without running anything: every
/// dataset's query is prepared on its source (never executed) and the rule's plan is checked
/// against the columns they return. Empty when nothing is.
pub async fn prepare(rule: &Rule, sources: &Sources) -> Vec<Problem> {
    let located = |i: usize, error: RunError| {
        let d = &rule.datasets[i];
        if error.kind == ErrorKind::SourceUnreachable {
            Problem {
                origin: None,
                unreachable: Some(d.source.clone()),
                error,
            }
        } else {
            let at = where_(rule, i, error.kind);
            Problem {
                origin: Some(d.query_origin.clone()),
                unreachable: None,
                error: error.context(at),
            }
        }
    };
    let described = match describe(rule, sources, Read::All).await {
        Ok(d) => d,
        Err(error) => {
            return vec![Problem {
                origin: Some(rule.origin.clone()),
                unreachable: None,
                error,
            }];
        }
    };
    let mut problems = Vec::new();
    let mut descriptions = Vec::new();
    for (i, d) in described.descriptions.into_iter().enumerate() {
        match d {
            Ok(d) => descriptions.push(d),
            Err(e) => problems.push(located(i, e)),
        }
    }
    if problems.is_empty()
        && let Err(found) = plan::check(rule, &descriptions)
    {
        problems.extend(found.into_iter().map(|(origin, message)| Problem {
            origin: Some(origin),
            unreachable: None,
            error: RunError::new(ErrorKind::SchemaMismatch, message),
        }));
    }
    problems
}

/// Checks what the readers described against the rule (noting the sources reached and
/// down), then gives every reader the plan's key order: the plan, and a cursor per dataset.
fn start(
    rule: &Rule,
    described: Described,
    run: &mut RuleRun,
) -> Result<(plan::Plan, Vec<Cursor<ChannelBatches>>), RunError> {
    let Described {
        readers,
        descriptions: described,
    } = described;
    let mut descriptions = Vec::with_capacity(described.len());
    let mut failures: Vec<RunError> = Vec::new();
    for (i, d) in described.into_iter().enumerate() {
        let source = &rule.datasets[i].source;
        match d {
            Ok(d) => {
                if !run.sources_reached.contains(source) {
                    run.sources_reached.push(source.clone());
                }
                descriptions.push(d);
            }
            Err(e) => {
                if e.kind == ErrorKind::SourceUnreachable {
                    run.sources_down.push(source.clone());
                }
                let at = where_(rule, i, e.kind);
                failures.push(e.context(at));
            }
        }
    }
    if let Some(first) = failures.first() {
        let message: Vec<&str> = failures.iter().map(|e| e.message.as_str()).collect();
        return Err(RunError::new(first.kind, message.join("; ")));
    }
    let plan = plan::plan(rule, &descriptions)?;
    let cursors = readers
        .into_iter()
        .map(
            |Reader {
                 messages,
                 mode,
                 spent,
             }| {
                let _ = mode.send(plan.mode);
                Cursor::new(ChannelBatches {
                    rx: messages,
                    spent,
                    null_keys: 0,
                })
            },
        )
        .collect();
    Ok((plan, cursors))
}

async fn execute(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    open: &dyn OpenKeys,
    read: Read<'_>,
    (grace, previous): (Grace, Option<i64>),
    run: &mut RuleRun,
) -> Result<(), RunError> {
    // 1. Reserve connections, start the readers, let each describe its query.
    let described = describe(rule, sources, read).await?;
    // 2. Then the plan checks the descriptions against the rule, and every reader is told
    //    the one key order.
    let (plan, mut cursors) = start(rule, described, run)?;
    // 3. Stream, merge and judge.
    let judge = Judge::new(rule, &plan, now.timestamp_micros(), grace).after(previous);
    // A full sweep finds about as many violations as are open, on a bad day a million: room
    // for them at once, rather than a vector grown by doubling (up to half of it unused, and
    // the old and the new both held while it grows).
    if matches!(read, Read::All) {
        run.violations.reserve_exact(open.len());
    }
    // A full sweep (or a range of one) of a partitioned rule samples where the next splits.
    let sample_every = match read {
        Read::All | Read::Range(..) => rule.partition.map(|p| p.keys),
        Read::Keys(_) | Read::ChangedSince(_) => None,
    };
    merge::merge(rule, &judge, &mut cursors, open, sample_every, run).await
}
