//! Applying repairs. `work` claims the approved repairs that are due (leased, with a fence),
//! then for each: checks the key again through the engine's one-key path — a key that holds
//! now is `skipped`, one that cannot be judged now waits — acts once, checks again without
//! grace (the action just changed the key), and records the result under its fence: a key
//! that holds then has its violation resolved by the repair in the same transaction.
//!
//! Failures: what the target refused is `failed`; what may work later is retried with backoff
//! up to `repairs.max_attempts`; a key that cannot be judged now (its source down, the key
//! within its grace) waits with backoff as long as it takes, since nothing was tried; an ambiguous one (sent, no answer), and a claim that finds an
//! earlier attempt interrupted (its worker died while acting), is retried only for actions
//! marked `idempotent`, and otherwise goes to `needs_manual` — unless the key holds now, which
//! says the interrupted attempt did its work.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::actions::{Clients, Targets};
use crate::config::RepairsConfig;
use crate::engine::{Grace, run_rule_for_keys};
use crate::lifecycle::repair::{Attempt, after_action, applied, before_action};
use crate::rules::{Rule, Schedule};
use crate::scheduler::next_cron;
use crate::sources::Sources;
use crate::state::{Claimed, RepairEnd, RepairState, StateError, StateStore};
use crate::value::format_timestamp;

/// What applying repairs needs: the generation's rules and sources, the store, the clients.
pub struct RepairEnv<'a> {
    pub rules: &'a [Rule],
    pub sources: &'a Sources,
    pub store: &'a StateStore,
    pub clients: &'a Arc<Clients>,
    pub config: &'a RepairsConfig,
    /// Who holds the leases: unique per process.
    pub owner: &'a str,
}

pub use crate::lifecycle::repair::Check;

/// Judges the rule for one key, now: with its grace before acting, without it after (the
/// action is what just changed the key).
pub async fn check_key(rule: &Rule, sources: &Sources, key: &str, grace: Grace) -> Check {
    let run = run_rule_for_keys(rule, sources, Utc::now(), &[key.to_string()], grace).await;
    if let Some(e) = &run.error {
        return Check::NotNow(format!("{}: {}", e.kind.as_str(), e.message));
    }
    if run.keys_in_grace > 0 {
        return Check::NotNow(match grace {
            Grace::Apply => format!(
                "the key changed within the rule's grace ({})",
                humantime::format_duration(rule.grace)
            ),
            Grace::Skip => format!(
                "the key changed within the rule's consistent cut ({})",
                humantime::format_duration(rule.consistent_cut.unwrap_or_default())
            ),
        });
    }
    if run.violations.iter().any(|v| v.key.to_string() == key) {
        Check::Violated
    } else {
        Check::Holds
    }
}

/// When the rule's runs judge a key changed `now` again: at its first run once the key is out
/// of its grace (and consistent cut).
fn judged_again(rule: &Rule, now: DateTime<Utc>) -> String {
    let hold = rule.grace.max(rule.consistent_cut.unwrap_or_default());
    let from = now + chrono::Duration::from_std(hold).unwrap_or_default();
    match &rule.schedule {
        Schedule::Cron { cron, .. } => match next_cron(cron, from) {
            Some(at) => format!(
                "and the rule judges it again at its run at {}",
                format_timestamp(at.timestamp_micros())
            ),
            None => "and the rule's schedule has no further run".to_string(),
        },
        Schedule::Every(d) => format!(
            "and the rule judges it again at its first run after {} (it runs every {})",
            format_timestamp(from.timestamp_micros()),
            humantime::format_duration(*d)
        ),
    }
}

/// What one round of `work` did.
#[derive(Debug, Default)]
pub struct Worked {
    /// Repairs claimed and handled.
    pub handled: usize,
    /// The violations resolved by the repairs applied: their rule, and how long each was open.
    pub resolved: Vec<(String, std::time::Duration)>,
}

/// Claims and applies the repairs that are due, up to `repairs.workers` at a time.
pub async fn work(env: &RepairEnv<'_>) -> Result<Worked, StateError> {
    let now = Utc::now().timestamp_micros();
    let times = (now, now + env.config.lease.as_micros() as i64);
    let workers = env.config.workers;
    // A rule with a rate limit is claimed on its own, no more than its budget for the hour.
    let mut limited = Vec::new();
    let mut claimed = Vec::new();
    for rule in env.rules {
        if let Some(max) = rule.repair.as_ref().and_then(|r| r.max_per_hour) {
            limited.push(rule.name.clone());
            let hour_ago = now - 3_600_000_000;
            let applied = env.store.applied_since(&rule.name, hour_ago).await?;
            let budget = u64::from(max)
                .saturating_sub(applied)
                .min(u64::from(workers)) as u32;
            if budget > 0 {
                claimed.extend(
                    env.store
                        .claim_repairs(env.owner, times, budget, &[], Some(&rule.name))
                        .await?,
                );
            }
        }
    }
    claimed.extend(
        env.store
            .claim_repairs(env.owner, times, workers, &limited, None)
            .await?,
    );
    let handled = claimed.len();
    let results: Vec<Result<_, StateError>> = futures_util::stream::iter(claimed)
        .map(|c| apply(env, c))
        .buffer_unordered(workers.max(1) as usize)
        .collect()
        .await;
    let resolved = results
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Worked { handled, resolved })
}

/// Applies one claimed repair; the violation it resolved, if it did.
async fn apply(
    env: &RepairEnv<'_>,
    claimed: Claimed,
) -> Result<Option<(String, std::time::Duration)>, StateError> {
    let mut end = decide(env, &claimed).await;
    // What a target answered, or an error quoting a URL, may carry a secret: the store, the
    // API and the log get it redacted.
    let secrets = env.sources.secrets();
    match &mut end {
        RepairEnd::Final(_, text)
        | RepairEnd::Repaired(text)
        | RepairEnd::Retry { error: text, .. } => {
            if let std::borrow::Cow::Owned(clean) = secrets.redact(text) {
                *text = clean;
            }
        }
    }
    let r = &claimed.repair;
    match &end {
        RepairEnd::Repaired(result) => tracing::info!(
            repair = r.id,
            rule = %r.rule,
            key = %r.key,
            action = %r.action,
            state = "applied",
            result = %result,
            "Repair ended; its violation is resolved."
        ),
        RepairEnd::Final(state, result) => tracing::info!(
            repair = r.id,
            rule = %r.rule,
            key = %r.key,
            action = %r.action,
            state = state.as_str(),
            result = %result,
            "Repair ended."
        ),
        RepairEnd::Retry { error, .. } => tracing::warn!(
            repair = r.id,
            rule = %r.rule,
            key = %r.key,
            attempt = r.attempts,
            error = %error,
            "Repair attempt did not go through; it will be tried again."
        ),
    }
    let now = Utc::now().timestamp_micros();
    match env.store.end_attempt(&claimed, &end, now).await? {
        Some(written) => Ok(written.resolved_after.map(|d| (r.rule.clone(), d))),
        None => {
            tracing::warn!(
                repair = r.id,
                "Repair result not recorded: its lease passed to another worker, whose result stands."
            );
            Ok(None)
        }
    }
}

/// Runs one claimed repair to the end of this attempt.
async fn decide(env: &RepairEnv<'_>, claimed: &Claimed) -> RepairEnd {
    let r = &claimed.repair;
    let manual = |why: String| RepairEnd::Final(RepairState::NeedsManual, why);
    let Some(rule) = env.rules.iter().find(|x| x.name == r.rule) else {
        return manual(format!("rule `{}` is no longer configured", r.rule));
    };
    let Some(action) = rule
        .repair
        .as_ref()
        .and_then(|rep| rep.actions.iter().find(|a| a.name == r.action))
    else {
        return manual(format!(
            "rule `{}` no longer offers action `{}`",
            r.rule, r.action
        ));
    };
    let Some(planned) = r.chosen() else {
        return manual(format!(
            "action `{}` was not planned for this repair",
            r.action
        ));
    };
    if let Some(error) = planned.spec.invalid_error() {
        return manual(format!("the action could not be filled in: {error}"));
    }

    // Before acting: does the key still violate the rule?
    let check = check_key(rule, env.sources, &r.key, Grace::Apply).await;
    let now_us = Utc::now().timestamp_micros();
    if let Some(end) = before_action(
        check,
        claimed.interrupted,
        action.idempotent,
        r.attempts,
        now_us,
    ) {
        return end;
    }

    let to = Targets {
        sources: env.sources,
        clients: env.clients,
    };
    let attempt =
        crate::actions::apply(&*action.kind, &to, &planned.spec, &r.idempotency_key).await;
    if let Attempt::Applied(said) = attempt {
        let after = check_key(rule, env.sources, &r.key, Grace::Skip).await;
        return applied(said, after, &judged_again(rule, Utc::now()));
    }
    after_action(
        attempt,
        action.idempotent,
        r.attempts,
        env.config.max_attempts,
        Utc::now().timestamp_micros(),
    )
}
