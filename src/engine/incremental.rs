//! Incremental runs: instead of every key, the keys whose rows changed since an instant (each
//! dataset read with `updated_at >= since` pushed into its query) and the keys of open
//! violations, judged through the one-key path in batches (`WHERE key IN (…)` on every
//! dataset). The cost follows the change rate, not the table size.
//!
//! Every key an incremental run judges is judged exactly as a full sweep judges it; a key it
//! does not look at is neither opened nor resolved (every open key is looked at). What it
//! cannot see is a row that left a dataset (deleted, or no longer matching the query's
//! `WHERE`) while the key's other rows stayed as they were: the full sweep finds that.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{ChannelBatches, RowBatches, execute, finish, new_run, redact, where_};
use crate::rules::Rule;
use crate::sources::{ChangedSince, KeyKind, KeyMode, ReadRequest, Reader, ReaderMsg, Sources};
use crate::verdict::{ErrorKind, RuleRun, RunError, RunMode};

/// Keys per look-up: each a bound parameter, well under every database's limit.
const KEYS_PER_BATCH: usize = 1000;

/// Beyond this many keys to judge, one full sweep costs less than the look-ups: the run
/// becomes a full sweep.
pub const MAX_INCREMENTAL_KEYS: usize = 200_000;

/// Judges the keys whose rows changed at or after `since`, and the `open` keys, at `now`. A
/// run with more than `MAX_INCREMENTAL_KEYS` keys to judge is a full sweep instead.
pub async fn run_rule_incremental(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    open: &HashSet<String>,
) -> RuleRun {
    let started = Instant::now();
    let mut run = new_run(rule, now);
    run.mode = RunMode::Incremental;
    let result = async {
        let changed = changed_keys(rule, sources, since, &mut run).await?;
        run.keys_changed = changed.len() as u64;
        let mut keys = changed;
        keys.extend(open.iter().cloned());
        if keys.len() > MAX_INCREMENTAL_KEYS {
            return Ok(false);
        }
        let keys: Vec<String> = keys.into_iter().collect();
        for batch in keys.chunks(KEYS_PER_BATCH) {
            execute(rule, sources, now, open, Some(batch), &mut run).await?;
        }
        Ok(true)
    }
    .await;
    if let Ok(false) = result {
        tracing::info!(
            rule = %rule.name,
            changed = run.keys_changed,
            "So many keys changed that a full sweep is cheaper; sweeping."
        );
        return super::run_keys(rule, sources, now, open, None).await;
    }
    let mut run = finish(run, result.map(|_| ()), started.elapsed());
    redact(&mut run, sources.secrets());
    run
}

/// The keys of the rows of every dataset changed at or after `since`, one dataset at a time
/// (each read takes one connection of its source, as a sweep's do).
async fn changed_keys(
    rule: &Rule,
    sources: &Sources,
    since: DateTime<Utc>,
    run: &mut RuleRun,
) -> Result<BTreeSet<String>, RunError> {
    let mut keys = BTreeSet::new();
    for (i, d) in rule.datasets.iter().enumerate() {
        let located = |e: RunError| {
            let at = where_(rule, i, e.kind);
            e.context(at)
        };
        let Some(source) = sources.get(&d.source) else {
            run.sources_down.push(d.source.clone());
            return Err(RunError::new(
                ErrorKind::SourceUnreachable,
                format!("source `{}` is not configured", d.source),
            ));
        };
        let column = d.updated_at.clone().ok_or_else(|| {
            located(RunError::new(
                ErrorKind::SchemaMismatch,
                "an incremental run needs `updated_at` on every dataset",
            ))
        })?;
        let permit = source.reserve(1).await?;
        let cfg = &source.config;
        let deadline = Instant::now()
            + cfg.connect_timeout
            + cfg.statement_timeout
            + std::time::Duration::from_secs(5);
        let Reader { mut messages, mode } = crate::sources::spawn_reader(
            source.clone(),
            ReadRequest {
                query: d.query.clone(),
                key: rule.key.clone(),
                deadline,
                keys: None,
                changed_since: Some(ChangedSince { column, since }),
                snapshot: None,
            },
            permit,
        );
        let description = match messages.recv().await {
            Some(ReaderMsg::Described(description)) => description,
            Some(ReaderMsg::Failed(e)) => {
                if e.kind == ErrorKind::SourceUnreachable {
                    run.sources_down.push(d.source.clone());
                }
                return Err(located(e));
            }
            _ => {
                return Err(located(RunError::new(
                    ErrorKind::QueryFailed,
                    "the reader stopped unexpectedly",
                )));
            }
        };
        if !run.sources_reached.contains(&d.source) {
            run.sources_reached.push(d.source.clone());
        }
        if description.key_index.is_none() {
            return Err(located(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "the query does not return the key column `{}`; it returns: {}",
                    rule.key,
                    description.columns.join(", ")
                ),
            )));
        }
        let order = match description.key_kind {
            KeyKind::Int => KeyMode::Int,
            _ => KeyMode::Text,
        };
        let _ = mode.send(order);
        let mut rows = ChannelBatches {
            rx: messages,
            null_keys: 0,
        };
        while let Some(batch) = rows.next_batch().await.map_err(located)? {
            run.rows_scanned[i] += batch.len() as u64;
            keys.extend(batch.into_iter().map(|r| r.key.to_string()));
            if keys.len() > MAX_INCREMENTAL_KEYS {
                // The run becomes a full sweep; the rest need not be read.
                return Ok(keys);
            }
        }
    }
    Ok(keys)
}
