//! The repair service: applies approved repairs with the generation in force (its rules,
//! sources and settings), woken when repairs are planned or approved and every second for
//! retries that come due; and keeps the repair metrics current. A repair that resolves its
//! violation updates the open counts and wakes the alert evaluator. In dry run
//! (`run --dry-run`, `repairs.dry_run`) it applies nothing. Repairs still waiting for a person
//! whose violation healed meanwhile are closed as `skipped`.
//!
//! With no rule that offers repairs the service only waits, looking again every `IDLE` for a
//! reload that adds some: a daemon that does not repair does no repair work in its store.
//!
//! On shutdown the repairs in hand are finished (each bounded by its action's timeout), never
//! dropped half-way; one the daemon dies in the middle of is found by its expired lease.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::ServiceResult;
use super::runner::RunLog;
use crate::actions::Clients;
use crate::context::Handle;
use crate::repair::{RepairEnv, work};

/// How often due retries are looked for without being woken.
const TICK: Duration = Duration::from_secs(1);
/// How often a generation without repairs is looked at again.
const IDLE: Duration = Duration::from_secs(10);

pub async fn service(
    handle: Arc<Handle>,
    stop: CancellationToken,
    log: Arc<RunLog>,
) -> ServiceResult {
    // The replica's identity, random per process: a restarted daemon never mistakes an old
    // claim for its own, and `repairs show` names the replica that applied a repair.
    let owner = handle.cluster.replica.clone();
    let mut clients: Option<Arc<Clients>> = None;
    loop {
        let ctx = handle.current();
        if !ctx.rules.iter().any(|r| r.repair.is_some()) {
            drop(ctx);
            tokio::select! {
                () = log.wake.repairs.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
                () = stop.cancelled() => return Ok(()),
            }
            continue;
        }
        let timeout = ctx.config.repairs.timeout;
        let allow = &ctx.config.outbound_allow;
        let c = match &clients {
            Some(c) if c.timeout == timeout && &c.allow == allow => c.clone(),
            _ => match Clients::new(timeout, allow) {
                Ok(c) => {
                    let c = Arc::new(c);
                    clients = Some(c.clone());
                    c
                }
                Err(e) => {
                    error!(error = %e, "Cannot apply repairs; trying again.");
                    drop(ctx);
                    tokio::select! {
                        () = tokio::time::sleep(IDLE) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                    continue;
                }
            },
        };
        let mut busy = false;
        if !ctx.config.repairs.dry_run && !stop.is_cancelled() {
            let env = RepairEnv {
                rules: &ctx.rules,
                sources: &ctx.sources,
                store: &ctx.store,
                clients: &c,
                config: &ctx.config.repairs,
                owner: &owner,
            };
            match work(&env).await {
                Ok(worked) => {
                    busy = worked.handled > 0;
                    if !worked.resolved.is_empty() {
                        // The open counts and the alert groups follow at once, not at the
                        // rule's next run.
                        for (name, open_for) in &worked.resolved {
                            let Some(rule) = ctx.rule(name) else { continue };
                            match ctx.store.rule_snapshot(name).await {
                                Ok(snap) => ctx.metrics.resolved_by_repair(rule, *open_for, &snap),
                                Err(e) => {
                                    error!(error = %e, "Cannot read a rule's open violations.")
                                }
                            }
                        }
                        log.wake.alerts.notify_one();
                    }
                }
                Err(e) => error!(error = %e, "Cannot apply repairs; trying again."),
            }
        }
        let now = Utc::now().timestamp_micros();
        if let Err(e) = ctx.store.skip_healed_repairs(now).await {
            error!(error = %e, "Cannot close the repairs of healed violations.");
        }
        match (ctx.store.totals().await, ctx.store.repair_summaries().await) {
            (Ok(totals), Ok(pending)) => ctx.metrics.repairs(&ctx.rules, &totals, &pending, now),
            (Err(e), _) | (_, Err(e)) => error!(error = %e, "Cannot read repair counts."),
        }
        drop(ctx);
        if busy {
            if stop.is_cancelled() {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            () = log.wake.repairs.notified() => {}
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
