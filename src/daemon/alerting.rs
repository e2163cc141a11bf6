//! The two alerting services: the evaluator (after every run, silence, repair decision,
//! reload and change in a source's health; and for repeats, staleness and `for`, every
//! `alerting.evaluation_interval` — or, on a replica that is alone, when the evaluation
//! said the next is due, at most `ALONE_LONGEST` apart) and the delivery service,
//! which keeps one delivery task per configured receiver and follows reloads (a receiver
//! added, changed or removed; a task never sends through a receiver the config no longer has).
//! Both run on one replica at a time, the holder of the `alerting` lease (the daemon runs them
//! through `cluster::under_lease`): each alert is decided and sent once across replicas, and
//! every group's state is written under that lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::ServiceResult;
use super::runner::RunLog;
use crate::config::ReceiverConfig;
use crate::context::Handle;
use crate::outbound::Allowed;

/// The least time between two evaluations: many rules finishing at once cost one.
const MIN_GAP: Duration = Duration::from_millis(500);

/// Evaluates alerts until `stop`.
pub async fn evaluator(
    handle: Arc<Handle>,
    stop: CancellationToken,
    log: Arc<RunLog>,
    delivery: Arc<Notify>,
) -> ServiceResult {
    let started_us = Utc::now().timestamp_micros();
    loop {
        // Written under the `alerting` lease: a replica that lost it writes nothing more.
        let Some(lease) = handle.cluster.lease(crate::context::cluster::ALERTING) else {
            // Another replica evaluates, and exports the rules' statuses, now.
            handle.current().metrics.set_rule_statuses(&[], None);
            return Ok(());
        };
        let ctx = handle.current();
        let sources_down = ctx
            .health
            .sources_down(ctx.config.sources.iter().map(|s| s.name.as_str()));
        let inputs = crate::alert::Inputs {
            config: &ctx.config,
            rules: &ctx.rules,
            sources_down: &sources_down,
            started_us,
            lease: Some(&lease),
        };
        // Other replicas' runs and decisions are found by looking every interval (and so is
        // a failed evaluation tried again).
        let mut interval = ctx.config.alerting.evaluation_interval;
        match crate::alert::evaluate(&ctx.store, &inputs, Utc::now().timestamp_micros()).await {
            Ok(done) => {
                ctx.metrics
                    .set_rule_statuses(&ctx.rules, Some(&done.statuses));
                if done.queued > 0 {
                    delivery.notify_waiters();
                }
                // Alone, nothing but this process changes what an evaluation reads, and every
                // change here wakes this: the next look is when something comes due.
                if handle.cluster.alone() {
                    interval = until(done.next_us, Utc::now().timestamp_micros());
                }
            }
            Err(crate::state::StateError::LeaseLost(_)) => {
                ctx.metrics.set_rule_statuses(&[], None);
                return Ok(());
            }
            Err(e) => error!(error = %e, "Cannot evaluate alerts; trying again."),
        }
        drop(ctx);
        // Runs finishing meanwhile are taken together by the next evaluation.
        tokio::select! {
            () = tokio::time::sleep(MIN_GAP) => {}
            () = stop.cancelled() => return Ok(()),
        }
        tokio::select! {
            () = log.wake.alerts.notified() => {}
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// How long an evaluator that is alone waits at `now_us` for what is due at `next_us`: until
/// then, at most `ALONE_LONGEST`.
fn until(next_us: Option<i64>, now_us: i64) -> Duration {
    next_us
        .map_or(super::ALONE_LONGEST, |at| {
            Duration::from_micros(at.saturating_sub(now_us).max(0) as u64)
        })
        .min(super::ALONE_LONGEST)
}

/// Keeps a delivery task per receiver of the generation in force, until `stop`.
pub async fn delivery(
    handle: Arc<Handle>,
    stop: CancellationToken,
    wake: Arc<Notify>,
) -> ServiceResult {
    // Each task with the receiver and the `outbound.allow` it was built from: a reload that
    // changes either replaces it.
    let mut running: HashMap<String, (ReceiverConfig, Vec<Allowed>, CancellationToken)> =
        HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let ctx = handle.current();
        let wanted = &ctx.config.alerting.receivers;
        let allow = &ctx.config.outbound_allow;
        running.retain(|name, (config, built_with, token)| {
            let keep = wanted.contains(config) && &config.name == name && built_with == allow;
            if !keep {
                token.cancel();
            }
            keep
        });
        for config in wanted {
            if running.contains_key(&config.name) {
                continue;
            }
            let receiver = match config.kind.build(allow) {
                Ok(r) => r,
                Err(e) => {
                    // Its notifications stay queued until a reload fixes it.
                    warn!(receiver = %config.name, error = %e, "Receiver cannot start; its alerts wait in the outbox.");
                    continue;
                }
            };
            let token = stop.child_token();
            let is_current = {
                let (handle, config, allow) = (handle.clone(), config.clone(), allow.clone());
                move || {
                    let now = handle.current();
                    now.config.alerting.receiver(&config.name) == Some(&config)
                        && now.config.outbound_allow == allow
                }
            };
            tasks.spawn(crate::alert::deliver(
                ctx.store.clone(),
                ctx.metrics.clone(),
                config.name.clone(),
                receiver,
                wake.clone(),
                token.clone(),
                is_current,
            ));
            running.insert(config.name.clone(), (config.clone(), allow.clone(), token));
        }
        drop(ctx);
        // A delivery task whose receiver a reload changed stops before it sends (and is
        // replaced here at once); other reloads are noticed within this.
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    return Err(format!("an alert delivery task panicked: {e}"));
                }
            }
            () = stop.cancelled() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
