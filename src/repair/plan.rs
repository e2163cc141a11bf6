//! Planning: after a run, one repair per violation occurrence (planning again finds it there
//! and adds nothing). A rule in `mode: approve` plans `pending` repairs. A rule in
//! `mode: auto` plans `approved` ones, unless a guardrail holds them for a person:
//! - dry run (`run --dry-run`, `repairs.dry_run`, or the rule's `dry_run`): `dry_run`;
//! - the run found more violations than `max_auto_per_run`: all `pending`;
//! - a dataset suddenly returned nothing where it returned many rows: all `pending`;
//! - the rule is new or changed since a person enabled its automatic repairs: `dry_run`.
//!
//! The data guardrails come before enabling, so that enabling (which releases only what waits
//! for it) never approves what they held.
//!
//! An action that could not be filled in for the key is `needs_manual` from the start.

pub use crate::lifecycle::repair::idempotency_key;
use std::collections::HashMap;

use crate::rules::{RepairMode, Rule};
use crate::state::{Hold, NewRepair, OpenViolation, RepairState};
use crate::verdict::RuleRun;

/// A dataset that returned at least this many rows in the previous run and none now is
/// suspicious.
const SUSPICIOUS_FROM: u64 = 100;

/// What decides, beyond the rule itself, whether its repairs may apply by themselves.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    /// The daemon runs with `--dry-run` or `repairs.dry_run`.
    pub dry_run: bool,
    /// A person enabled automatic repairs for the rule as it is now.
    pub enabled: bool,
    /// Why the run's data looks wrong, if it does.
    pub suspicious: Option<String>,
    /// Plan only the violations this run opened: those open before were planned by an
    /// earlier run (planning them again would add nothing, at the cost of a write each).
    pub only_new: bool,
}

/// The repairs to plan for a run, and why they are held, if they are (for the logs and the
/// `repairs_held` counter).
#[derive(Debug, Clone, Default)]
pub struct Planned {
    pub repairs: Vec<NewRepair>,
    pub held: Option<(Hold, String)>,
}

/// Why a run's data looks wrong: a dataset that returned many rows last time and none now.
pub fn suspicious(rule: &Rule, previous: &[u64], run: &RuleRun) -> Option<String> {
    // An incremental run reads only some keys' rows: its counts say nothing of the tables.
    if !run.finished
        || run.mode != crate::verdict::RunMode::Full
        || previous.len() != run.rows_scanned.len()
    {
        return None;
    }
    rule.datasets
        .iter()
        .zip(previous.iter().zip(&run.rows_scanned))
        .find(|(_, (before, now))| **before >= SUSPICIOUS_FROM && **now == 0)
        .map(|(d, (before, _))| {
            format!(
                "dataset `{}` returned no rows, where the run before returned {before}",
                d.name
            )
        })
}

/// The repairs a finished, failing run plans.
pub fn plan(rule: &Rule, run: &RuleRun, open: &[OpenViolation], guard: &Guardrails) -> Planned {
    let Some(repair) = &rule.repair else {
        return Planned::default();
    };
    if !run.finished || run.violations.is_empty() || repair.actions.is_empty() {
        return Planned::default();
    }
    let started_us = run.started_at.timestamp_micros();
    let since: HashMap<&str, i64> = open.iter().map(|o| (&*o.key, o.first_seen_us)).collect();
    let found = run.violations.len();
    let held: Option<(Hold, String)> = match repair.mode {
        RepairMode::Approve => None,
        RepairMode::Auto if guard.dry_run || repair.dry_run => Some((
            Hold::DryRun,
            "dry run: planned and shown, not applied".into(),
        )),
        RepairMode::Auto if found > repair.max_auto_per_run as usize => Some((
            Hold::TooMany,
            format!(
                "the run found {found} violations, more than max_auto_per_run ({}): none is applied automatically",
                repair.max_auto_per_run
            ),
        )),
        RepairMode::Auto if guard.suspicious.is_some() => guard.suspicious.clone().map(|why| {
            (
                Hold::Suspicious,
                format!("suspicious data: {why}; automatic repairs pause"),
            )
        }),
        // After the data guardrails, so that enabling the rule later cannot approve what they
        // held: enabling only releases repairs held as `not_enabled`.
        RepairMode::Auto if !guard.enabled => Some((
            Hold::NotEnabled,
            format!(
                "the rule is new or changed: its automatic repairs are in dry run until a person enables them (invariantd repairs enable {})",
                rule.name
            ),
        )),
        RepairMode::Auto => None,
    };
    let auto_state = match &held {
        None => RepairState::Approved,
        Some((Hold::DryRun | Hold::NotEnabled, _)) => RepairState::DryRun,
        Some(_) => RepairState::Pending,
    };
    let first = &repair.actions[0].name;
    let repairs = run
        .violations
        .iter()
        .filter(|v| !(guard.only_new && since.contains_key(v.key.to_string().as_str())))
        .map(|v| {
            let key = v.key.to_string();
            let occurrence_us = since.get(key.as_str()).copied().unwrap_or(started_us);
            let invalid = v
                .repairs
                .iter()
                .find(|a| &a.name == first)
                .and_then(|a| a.spec.invalid_error().map(str::to_string));
            let (state, hold_reason, held_by) = match (&invalid, repair.mode) {
                (Some(e), _) => (
                    RepairState::NeedsManual,
                    Some(format!("the action could not be filled in: {e}")),
                    Some(Hold::Invalid),
                ),
                (None, RepairMode::Approve) => (RepairState::Pending, None, None),
                (None, RepairMode::Auto) => (
                    auto_state,
                    held.as_ref().map(|(_, why)| why.clone()),
                    held.as_ref().map(|(h, _)| *h),
                ),
            };
            NewRepair {
                idempotency_key: idempotency_key(&rule.name, &key, first, occurrence_us),
                key,
                occurrence_us,
                state,
                mode: repair.mode.as_str().to_string(),
                action: first.clone(),
                actions: v.repairs.to_vec(),
                hold_reason,
                held_by,
            }
        })
        .collect();
    Planned { repairs, held }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Key;
    use crate::verdict::{ErrorKind, Outcome, RunError, Violation};
    use std::path::Path;

    fn rule(repair: &str) -> Rule {
        let config = crate::config::parse(
            Path::new("invariantd.yaml"),
            "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
            &|_| None,
        )
        .expect("a valid config");
        let text = format!(
            "name: r\nkey: k\ndatasets:\n  a: {{ source: db, query: \"SELECT k FROM t\" }}\nassert: a == null\nrepair:\n{repair}  action:\n    sql: {{ source: db, statement: \"DELETE FROM t WHERE k = ?\", params: [key] }}\n"
        );
        let mut diags = crate::diag::Diagnostics::default();
        let mut rules = crate::rules::parse_file(
            Path::new("rules/r.yaml"),
            &text,
            &config,
            &|_| None,
            &mut diags,
        );
        assert!(diags.is_empty(), "{diags}");
        rules.remove(0)
    }

    fn run(keys: std::ops::RangeInclusive<i64>, rows: Vec<u64>) -> RuleRun {
        let mut run = RuleRun::unknown(
            "r",
            chrono::Utc::now(),
            std::time::Duration::ZERO,
            RunError::new(ErrorKind::Cancelled, ""),
        );
        run.outcome = Outcome::Fail;
        run.error = None;
        run.finished = true;
        run.rows_scanned = rows;
        run.violations = keys
            .map(|k| Violation {
                key: Key::Int(k),
                message: "".into(),
                datasets: Default::default(),
                impact: None,
                repairs: Box::new([crate::verdict::PlannedAction {
                    name: "default".into(),
                    spec: crate::verdict::ActionSpec {
                        kind: "sql".into(),
                        values: serde_json::json!({ "params": [{ "type": "int", "value": k }] })
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    },
                }]),
            })
            .collect();
        run
    }

    fn enabled() -> Guardrails {
        Guardrails {
            enabled: true,
            ..Guardrails::default()
        }
    }

    #[test]
    fn approve_mode_waits_and_auto_mode_goes_to_the_queue_once_enabled() {
        let p = plan(
            &rule("  mode: approve\n"),
            &run(1..=3, vec![3]),
            &[],
            &enabled(),
        );
        assert!(p.repairs.iter().all(|r| r.state == RepairState::Pending));
        assert_eq!(p.held, None);
        let auto = rule("  mode: auto\n");
        let p = plan(&auto, &run(1..=3, vec![3]), &[], &enabled());
        assert!(p.repairs.iter().all(|r| r.state == RepairState::Approved));
        let p = plan(&auto, &run(1..=3, vec![3]), &[], &Guardrails::default());
        assert!(p.repairs.iter().all(|r| r.state == RepairState::DryRun));
        assert_eq!(p.held.map(|h| h.0), Some(Hold::NotEnabled));
    }

    #[test]
    fn too_many_violations_or_an_emptied_dataset_hold_every_repair_of_the_run() {
        let auto = rule("  mode: auto\n  max_auto_per_run: 2\n");
        let p = plan(&auto, &run(1..=3, vec![3]), &[], &enabled());
        assert_eq!(p.repairs.len(), 3);
        assert!(
            p.repairs
                .iter()
                .all(|r| r.state == RepairState::Pending && r.held_by == Some(Hold::TooMany))
        );
        let why = suspicious(&auto, &[150], &run(1..=1, vec![0]));
        assert_eq!(
            why.as_deref(),
            Some("dataset `a` returned no rows, where the run before returned 150")
        );
        assert_eq!(suspicious(&auto, &[99], &run(1..=1, vec![0])), None);
        let guard = Guardrails {
            suspicious: why,
            ..enabled()
        };
        let p = plan(&auto, &run(1..=1, vec![0]), &[], &guard);
        assert_eq!(p.repairs[0].held_by, Some(Hold::Suspicious));
    }

    #[test]
    fn a_rule_not_yet_enabled_is_still_held_by_the_data_guardrails() {
        // Enabling releases only what waits as `not_enabled`: what the cap or suspicious data
        // held must not wait that way, or enabling would approve it.
        let auto = rule("  mode: auto\n  max_auto_per_run: 2\n");
        let p = plan(&auto, &run(1..=3, vec![3]), &[], &Guardrails::default());
        assert!(
            p.repairs
                .iter()
                .all(|r| r.state == RepairState::Pending && r.held_by == Some(Hold::TooMany))
        );
        let guard = Guardrails {
            suspicious: Some("emptied".into()),
            ..Guardrails::default()
        };
        let p = plan(&auto, &run(1..=1, vec![0]), &[], &guard);
        assert_eq!(p.repairs[0].held_by, Some(Hold::Suspicious));
        assert_eq!(p.repairs[0].state, RepairState::Pending);
    }

    #[test]
    fn later_runs_plan_only_what_they_opened_with_stable_keys() {
        let auto = rule("  mode: auto\n");
        let open = vec![OpenViolation {
            id: 1,
            key: "1".into(),
            first_seen_us: 42,
        }];
        let all = plan(&auto, &run(1..=2, vec![2]), &open, &enabled());
        assert_eq!(all.repairs.len(), 2);
        assert_eq!(
            all.repairs[0].occurrence_us, 42,
            "the open violation's occurrence"
        );
        let only_new = Guardrails {
            only_new: true,
            ..enabled()
        };
        let new = plan(&auto, &run(1..=2, vec![2]), &open, &only_new);
        assert_eq!(new.repairs.len(), 1);
        assert_eq!(new.repairs[0].key, "2");
        assert_eq!(
            idempotency_key("r", "1", "default", 42),
            all.repairs[0].idempotency_key
        );
        assert_ne!(
            idempotency_key("r", "1", "refund", 42),
            idempotency_key("r", "1", "default", 42)
        );
    }
}
