//! The repair service: applies approved repairs with the generation in force (its rules,
//! sources and settings), woken when repairs are planned, approved or moot, and otherwise
//! when the next approved one comes due (a retry, or another worker's lease running out) —
//! at least once a second while one is due but not taken (a rate limit holding it), at most
//! `IDLE` apart (`ALONE_LONGEST` on a replica that is alone, where nothing else changes the
//! repairs): with nothing due it does no store work; and keeps the repair metrics current
//! (the age of the oldest repair waiting is computed at each scrape). A repair that resolves its
//! violation updates the open counts and wakes the alert evaluator. In dry run
//! (`run --dry-run`, `repairs.dry_run`) it applies nothing. Repairs still waiting for a person
//! whose violation healed meanwhile are closed as `skipped`.
//!
//! With no rule that offers repairs the service only waits, woken by a reload that adds some:
//! a daemon that does not repair does no repair work in its store.
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

/// The least wait for a repair that is due but was not taken (its rule's hourly budget spent,
/// or taken by another replica).
const TICK: Duration = Duration::from_secs(1);
/// The longest wait: a generation without repairs is looked at again, and the repair counts
/// read again (changes another replica made), this often.
const IDLE: Duration = Duration::from_secs(60);

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
        // Another replica's approvals and claims are looked for at most `IDLE` apart; alone,
        // every change here wakes this.
        let longest = if handle.cluster.alone() {
            super::ALONE_LONGEST
        } else {
            IDLE
        };
        if !ctx.rules.iter().any(|r| r.repair.is_some()) {
            drop(ctx);
            tokio::select! {
                () = log.wake.repairs.notified() => {}
                () = tokio::time::sleep(longest) => {}
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
            (Ok(totals), Ok(pending)) => ctx.metrics.repairs(&ctx.rules, &totals, &pending),
            (Err(e), _) | (_, Err(e)) => error!(error = %e, "Cannot read repair counts."),
        }
        let wait = match ctx.store.next_repair_due().await {
            Ok(due) => until_due(due, Utc::now().timestamp_micros(), longest),
            Err(e) => {
                error!(error = %e, "Cannot read when the next repair is due.");
                TICK
            }
        };
        drop(ctx);
        if busy {
            if stop.is_cancelled() {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            () = log.wake.repairs.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// How long to wait for the next approved repair, due at `due` (microseconds), at `now`:
/// until then, but at least `TICK` (one already due was not taken) and at most `longest`.
fn until_due(due: Option<i64>, now: i64, longest: Duration) -> Duration {
    due.map_or(longest, |due| {
        Duration::from_micros(due.saturating_sub(now).max(0) as u64).clamp(TICK, longest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_waits_until_the_next_repair_is_due_within_bounds() {
        let s = 1_000_000;
        assert_eq!(until_due(None, 0, IDLE), IDLE);
        assert_eq!(until_due(Some(5 * s), 0, IDLE), Duration::from_secs(5));
        assert_eq!(until_due(Some(-5 * s), 0, IDLE), TICK, "due and not taken");
        assert_eq!(until_due(Some(3600 * s), 0, IDLE), IDLE);
        let alone = crate::daemon::ALONE_LONGEST;
        assert_eq!(until_due(Some(600 * s), 0, alone), Duration::from_secs(600));
        assert_eq!(until_due(None, 0, alone), alone);
    }
}
