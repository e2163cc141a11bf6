//! Applying repairs. `work` claims the approved repairs that are due (leased, with a fence),
//! then for each: checks the key again through the engine's one-key path — a key that holds
//! now is `skipped`, one that cannot be judged now waits — acts once, checks again, and
//! records the result under its fence.
//!
//! Failures: what the target refused is `failed`; what may work later is retried with backoff
//! up to `repairs.max_attempts`; a key that cannot be judged now (its source down, the key
//! within its grace) waits with backoff as long as it takes, since nothing was tried; an ambiguous one (sent, no answer), and a claim that finds an
//! earlier attempt interrupted (its worker died while acting), is retried only for actions
//! marked `idempotent`, and otherwise goes to `needs_manual` — unless the key holds now, which
//! says the interrupted attempt did its work.

use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;

use crate::actions::{Clients, Targets};
use crate::config::RepairsConfig;
use crate::engine::run_rule_for_keys;
use crate::lifecycle::repair::{Attempt, after_action, before_action};
use crate::rules::Rule;
use crate::sources::Sources;
use crate::state::{Claimed, RepairEnd, RepairState, StateError, StateStore};

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

/// Judges the rule for one key, now.
pub async fn check_key(rule: &Rule, sources: &Sources, key: &str) -> Check {
    let run = run_rule_for_keys(rule, sources, Utc::now(), &[key.to_string()]).await;
    if let Some(e) = &run.error {
        return Check::NotNow(format!("{}: {}", e.kind.as_str(), e.message));
    }
    if run.keys_in_grace > 0 {
        return Check::NotNow(format!(
            "the key changed within the rule's grace ({})",
            humantime::format_duration(rule.grace)
        ));
    }
    if run.violations.iter().any(|v| v.key.to_string() == key) {
        Check::Violated
    } else {
        Check::Holds
    }
}

/// Claims and applies the repairs that are due, up to `repairs.workers` at a time. Returns
/// how many it handled.
pub async fn work(env: &RepairEnv<'_>) -> Result<usize, StateError> {
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
    let n = claimed.len();
    let results: Vec<Result<(), StateError>> = futures_util::stream::iter(claimed)
        .map(|c| apply(env, c))
        .buffer_unordered(workers.max(1) as usize)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(n)
}

async fn apply(env: &RepairEnv<'_>, claimed: Claimed) -> Result<(), StateError> {
    let mut end = decide(env, &claimed).await;
    // What a target answered, or an error quoting a URL, may carry a secret: the store, the
    // API and the log get it redacted.
    let secrets = env.sources.secrets();
    match &mut end {
        RepairEnd::Final(_, text) | RepairEnd::Retry { error: text, .. } => {
            if let std::borrow::Cow::Owned(clean) = secrets.redact(text) {
                *text = clean;
            }
        }
    }
    let r = &claimed.repair;
    match &end {
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
    if !env.store.end_attempt(&claimed, &end, now).await? {
        tracing::warn!(
            repair = r.id,
            "Repair result not recorded: its lease passed to another worker, whose result stands."
        );
    }
    Ok(())
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
    let check = check_key(rule, env.sources, &r.key).await;
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
    let attempt = match crate::actions::apply(&*action.kind, &to, &planned.spec, &r.idempotency_key)
        .await
    {
        Attempt::Applied(said) => {
            let after = match check_key(rule, env.sources, &r.key).await {
                Check::Holds => "the invariant holds now".to_string(),
                Check::Violated => "the key still violates the rule after the action".to_string(),
                Check::NotNow(why) => format!("not checked after the action: {why}"),
            };
            Attempt::Applied(format!("{said}; {after}"))
        }
        other => other,
    };
    after_action(
        attempt,
        action.idempotent,
        r.attempts,
        env.config.max_attempts,
        Utc::now().timestamp_micros(),
    )
}
