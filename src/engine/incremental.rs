//! Incremental runs: instead of every key, the keys whose rows changed since an instant (each
//! dataset read with `updated_at >= since` pushed into its query) and the keys of open
//! violations, judged through the one-key path in batches (`WHERE key IN (…)` on every
//! dataset). The cost follows the change rate, not the table size.
//!
//! Every key an incremental run judges is judged exactly as a full sweep judges it; a key it
//! does not look at is neither opened nor resolved (every open key is looked at). What it
//! cannot see is a row that left a dataset (deleted, or no longer matching the query's
//! `WHERE`) while the key's other rows stayed as they were: the full sweep finds that.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::merge::Cursor;
use super::{Read, RowBatches, describe, execute, finish, new_run, redact, start, where_};
use crate::rules::Rule;
use crate::sources::Sources;
use crate::verdict::{OpenKeys, RuleRun, RunError, RunMode};

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
    open: &dyn OpenKeys,
) -> RuleRun {
    let started = Instant::now();
    let mut run = new_run(rule, now);
    run.mode = RunMode::Incremental;
    let result = async {
        let changed = changed_keys(rule, sources, since, &mut run).await?;
        run.keys_changed = changed.len() as u64;
        let mut keys = changed;
        keys.extend(open.keys().map(str::to_string));
        if keys.len() > MAX_INCREMENTAL_KEYS {
            return Ok(false);
        }
        let keys: Vec<String> = keys.into_iter().collect();
        for batch in keys.chunks(KEYS_PER_BATCH) {
            execute(
                rule,
                sources,
                now,
                open,
                super::Read::Keys(batch),
                (super::judge::Grace::Apply, None),
                &mut run,
            )
            .await?;
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
        return super::run_keys(
            rule,
            sources,
            now,
            open,
            super::Read::All,
            super::judge::Grace::Apply,
            None,
        )
        .await;
    }
    let mut run = finish(rule, run, result.map(|_| ()), started.elapsed());
    redact(&mut run, sources.secrets());
    run
}

/// The keys of the rows of every dataset changed at or after `since`: each dataset's query
/// with `updated_at >= since` pushed into it, read as a run's datasets are (its connections,
/// one snapshot per source, the key order of the plan).
async fn changed_keys(
    rule: &Rule,
    sources: &Sources,
    since: DateTime<Utc>,
    run: &mut RuleRun,
) -> Result<BTreeSet<String>, RunError> {
    let described = describe(rule, sources, Read::ChangedSince(since)).await?;
    let (_, cursors) = start(rule, described, run)?;
    let mut keys = BTreeSet::new();
    for (i, mut rows) in cursors.into_iter().map(Cursor::into_batches).enumerate() {
        while let Some(batch) = rows.next_batch().await.map_err(|e| {
            let at = where_(rule, i, e.kind);
            e.context(at)
        })? {
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
