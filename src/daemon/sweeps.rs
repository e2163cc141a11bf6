//! Partitioned full sweeps across the replicas sharing a state store. The replica that runs a
//! rule with `partition` (it holds `rule/NAME`) splits a full sweep into the key ranges its
//! last full sweep sampled (`engine::key_ranges`), starts the sweep in the store, and waits
//! (`coordinate`) until every range has been read, then merges the parts' runs into one
//! (`engine::merge_parts`), which the runner records once. Meanwhile it holds a snapshot of
//! each PostgreSQL source of the rule (`pg_export_snapshot()` in a transaction it keeps open,
//! on a connection beyond the source's pool), which every range imports wherever it is read:
//! the ranges see the data as of one instant, as a single sweep would.
//!
//! Every replica, that one included, reads the ranges (`worker`): one at a time, each under a
//! lease of its own (`part/RULE/SWEEP/PART`), renewed while it is read. A renewal that fails or
//! finds the lease gone stops the read at once, and the part's run is written back only under
//! the lease, in the same transaction; a replica that dies leaves the part to be taken over
//! once its lease expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ServiceResult;
use crate::context::{Context, Handle, Wake};
use crate::engine::{merge_parts, run_rule_range};
use crate::rules::Rule;
use crate::sources::{HeldSnapshot, KeyRange};
use crate::state::{Lease, PartRow, StateError, keys_of, part_lease};
use crate::verdict::RuleRun;

/// How often a replica looks for ranges to read (a sweep started here wakes it at once).
const POLL: Duration = Duration::from_millis(500);
/// How often the rule's holder counts the ranges read by others (one read here wakes it at
/// once): the most a sweep's end waits to be noticed.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// How often a replica none of whose rules is partitioned looks (a replica alone, with no
/// range left anywhere, waits for a sweep started here instead: `ALONE_LONGEST`).
const IDLE_POLL: Duration = Duration::from_secs(10);

/// Starts a partitioned sweep of `rule` judging at `started` over `ranges`, under the rule's
/// `lease`, and waits until every range has been read (by any replica): the one run they
/// make. A sweep replaced meanwhile (another replica took the rule and started its own) ends
/// in `LeaseLost`.
pub async fn coordinate(
    ctx: &Context,
    wake: &Wake,
    rule: &Rule,
    started: DateTime<Utc>,
    ranges: &[KeyRange],
    lease: &Lease,
) -> Result<RuleRun, StateError> {
    let sweep = started.timestamp_micros();
    // Held until the ranges are merged: every range reads these sources as of now.
    let (_held, snapshots) = export_snapshots(ctx, rule).await;
    ctx.store
        .start_sweep(
            &rule.name,
            &rule.fingerprint,
            sweep,
            ranges,
            &snapshots,
            Some(lease),
        )
        .await?;
    debug!(rule = %rule.name, parts = ranges.len(), "Partitioned sweep started.");
    wake.parts.notify_one();
    loop {
        let done = wake.parts_done.notified();
        let (total, read) = ctx.store.sweep_progress(&rule.name, sweep).await?;
        if total != ranges.len() as i64 {
            return Err(StateError::LeaseLost(lease.name.clone()));
        }
        if read == total {
            // The runs are read once, when all are there.
            let parts = ctx.store.sweep_parts(&rule.name, sweep).await?;
            let runs: Vec<RuleRun> = parts.into_iter().filter_map(|(_, run)| run).collect();
            if runs.len() != ranges.len() {
                return Err(StateError::LeaseLost(lease.name.clone()));
            }
            let mut run = merge_parts(runs).expect("a sweep has at least one part");
            run.status = crate::engine::status_of(rule, &run);
            return Ok(run);
        }
        tokio::select! {
            () = tokio::time::sleep(PROGRESS_POLL) => {}
            () = done => {}
        }
    }
}

/// A snapshot of each source of the rule that can export one (on a connection of its own):
/// what is held, and the ids by source. A source that cannot export is read by each range
/// from a snapshot of its own.
async fn export_snapshots(
    ctx: &Context,
    rule: &Rule,
) -> (Vec<HeldSnapshot>, BTreeMap<String, String>) {
    let names: std::collections::BTreeSet<&str> =
        rule.datasets.iter().map(|d| d.source.as_str()).collect();
    let mut held = Vec::new();
    let mut ids = BTreeMap::new();
    for name in names {
        let Some(source) = ctx.sources.get(name) else {
            continue;
        };
        if !source.shares_snapshot() {
            continue;
        }
        match source.export_snapshot().await {
            Ok(Some(snapshot)) => {
                ids.insert(name.to_string(), snapshot.id.clone());
                held.push(snapshot);
            }
            Ok(None) => {}
            Err(e) => {
                debug!(rule = %rule.name, source = name, error = %e, "No snapshot exported for a partitioned sweep: each range reads its own.");
            }
        }
    }
    (held, ids)
}

/// Reads the ranges of partitioned sweeps, one at a time, until `stop`.
pub async fn worker(handle: Arc<Handle>, stop: CancellationToken) -> ServiceResult {
    let replica = handle.cluster.replica.clone();
    let mut failing = false;
    loop {
        let ctx = handle.current();
        // With no partitioned rule here, ranges can only be another version's: look rarely.
        let poll = if ctx.rules.iter().any(|r| r.partition.is_some()) {
            POLL
        } else {
            IDLE_POLL
        };
        let (took, poll) = match take(&ctx, &replica).await {
            Ok(Taken::Part(rule, part, lease)) => {
                failing = false;
                read(&ctx, &handle.wake, rule, &part, lease, &stop).await;
                (true, poll)
            }
            // Alone, with no range left anywhere, only a sweep started here makes one, and
            // that wakes it.
            Ok(Taken::Nothing) if handle.cluster.alone() => {
                failing = false;
                (false, super::ALONE_LONGEST)
            }
            Ok(_) => {
                failing = false;
                (false, poll)
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "Cannot look for ranges of partitioned sweeps to read.");
                }
                failing = true;
                (false, poll)
            }
        };
        drop(ctx);
        if stop.is_cancelled() {
            return Ok(());
        }
        if took {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = handle.wake.parts.notified() => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// What a look for a range to read found.
enum Taken<'c> {
    /// A range of a rule version this replica knows, and its lease, taken.
    Part(&'c Rule, Box<PartRow>, Lease),
    /// Ranges left, but none this replica can take now.
    Busy,
    /// No range left to read, by anyone.
    Nothing,
}

/// The first range no replica is reading, of a rule version this replica knows.
async fn take<'c>(ctx: &'c Context, replica: &str) -> Result<Taken<'c>, StateError> {
    let pending = ctx.store.pending_parts().await?;
    if pending.is_empty() {
        return Ok(Taken::Nothing);
    }
    let busy: std::collections::HashSet<String> = ctx
        .store
        .leases()
        .await?
        .into_iter()
        .filter(|l| !l.expired)
        .map(|l| l.name)
        .collect();
    for part in pending {
        let name = part_lease(&part.rule, part.sweep, part.part);
        let known = ctx
            .rules
            .iter()
            .find(|r| r.name == part.rule && r.fingerprint == part.fingerprint);
        let Some(rule) = known.filter(|_| !busy.contains(&name)) else {
            continue;
        };
        if let Some(lease) = ctx
            .store
            .acquire_lease(&name, replica, ctx.config.cluster.lease)
            .await?
        {
            return Ok(Taken::Part(rule, Box::new(part), lease));
        }
    }
    Ok(Taken::Busy)
}

/// Reads one range under its lease, renewing it meanwhile, and writes the part's run back
/// under it. Gives up at once when the lease is lost, and on `stop` (releasing it, so that
/// another replica reads the range without waiting for it to expire).
async fn read(
    ctx: &Context,
    wake: &Wake,
    rule: &Rule,
    part: &PartRow,
    lease: Lease,
    stop: &CancellationToken,
) {
    let cluster = ctx.config.cluster;
    let mut lease = lease;
    let mut deadline = Instant::now() + cluster.lease;
    let started = DateTime::from_timestamp_micros(part.sweep).unwrap_or_else(Utc::now);
    let open = match ctx.store.open_violations(&rule.name).await {
        Ok(open) => open,
        Err(e) => {
            warn!(rule = %rule.name, error = %e, "Cannot read a rule's open violations to read a range of its sweep.");
            let _ = ctx.store.release_lease(&lease).await;
            return;
        }
    };
    let open = keys_of(&open);
    let engine = run_rule_range(
        rule,
        &ctx.sources,
        started,
        &open,
        &part.range,
        &part.snapshots,
    );
    tokio::pin!(engine);
    let run = loop {
        tokio::select! {
            run = &mut engine => break run,
            () = tokio::time::sleep(cluster.renew) => {
                let asked = Instant::now();
                match ctx.store.renew_lease(&lease, cluster.lease).await {
                    Ok(Some(renewed)) => {
                        lease = renewed;
                        deadline = asked + cluster.lease;
                    }
                    Ok(None) => {
                        ctx.metrics.range_read("lost");
                        warn!(lease = %lease.name, "Lease lost while reading a range: another replica reads it now.");
                        return;
                    }
                    Err(e) if Instant::now() >= deadline => {
                        ctx.metrics.range_read("lost");
                        warn!(lease = %lease.name, error = %e, "Lease ran out before it could be renewed: the range is left to another replica.");
                        return;
                    }
                    Err(_) => {}
                }
            }
            () = stop.cancelled() => {
                let _ = ctx.store.release_lease(&lease).await;
                return;
            }
        }
    };
    // How long the sweep had been going when this range was read: the merged run lasts
    // until its last range is.
    let mut run = run;
    run.duration = (Utc::now() - started).to_std().unwrap_or(run.duration);
    match ctx.store.finish_part(part, &run, &lease).await {
        Ok(()) => {
            debug!(rule = %rule.name, part = part.part, keys = run.keys_judged, "Range read.");
            ctx.metrics.range_read("written");
            wake.parts_done.notify_waiters();
        }
        Err(StateError::LeaseLost(name)) => {
            ctx.metrics.range_read("lost");
            info!(lease = %name, "A range was read, but its lease was lost meanwhile: its run was not written.");
        }
        Err(e) => warn!(rule = %rule.name, error = %e, "Cannot write the run of a range."),
    }
    let _ = ctx.store.release_lease(&lease).await;
}
