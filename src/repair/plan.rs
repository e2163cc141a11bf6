//! Planning: after a run, one repair per violation occurrence (planning again finds it there
//! and adds nothing). A rule in `mode: approve` plans `pending` repairs. A rule in
//! `mode: auto` plans `approved` ones, unless a guardrail holds them for a person:
//! - dry run (`run --dry-run`, `repairs.dry_run`, or the rule's `dry_run`): `dry_run`;
//! - the rule is new or changed since a person enabled its automatic repairs: `dry_run`;
//! - the run found more violations than `max_auto_per_run`: all `pending`;
//! - a dataset suddenly returned nothing where it returned many rows: all `pending`.
//!
//! An action that could not be filled in for the key is `needs_manual` from the start.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::rules::{RepairMode, Rule};
use crate::state::{Hold, NewRepair, OpenViolation, RepairState};
use crate::verdict::{ActionSpec, RuleRun};

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
}

/// The repairs to plan for a run, and why they are held, if they are (for the logs and the
/// `repairs_held` counter).
#[derive(Debug, Clone, Default)]
pub struct Planned {
    pub repairs: Vec<NewRepair>,
    pub held: Option<(Hold, String)>,
}

/// The idempotency key of a repair: from the rule, key, action and occurrence, so the same
/// repair always carries the same key and a target can recognise a repeat.
pub fn idempotency_key(rule: &str, key: &str, action: &str, occurrence_us: i64) -> String {
    let mut h = Sha256::new();
    for field in [rule, key, action, &occurrence_us.to_string()] {
        h.update(field.len().to_string().as_bytes());
        h.update(b":");
        h.update(field.as_bytes());
    }
    format!("invariantd-{}", crate::value::hex(&h.finalize()[..16]))
}

/// Why a run's data looks wrong: a dataset that returned many rows last time and none now.
pub fn suspicious(rule: &Rule, previous: &[u64], run: &RuleRun) -> Option<String> {
    if !run.finished || previous.len() != run.rows_scanned.len() {
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
    let since: HashMap<&str, i64> = open
        .iter()
        .map(|o| (o.key.as_str(), o.first_seen_us))
        .collect();
    let found = run.violations.len();
    let held: Option<(Hold, String)> = match repair.mode {
        RepairMode::Approve => None,
        RepairMode::Auto if guard.dry_run || repair.dry_run => Some((
            Hold::DryRun,
            "dry run: planned and shown, not applied".into(),
        )),
        RepairMode::Auto if !guard.enabled => Some((
            Hold::NotEnabled,
            format!(
                "the rule is new or changed: its automatic repairs are in dry run until a person enables them (invariantd repairs enable {})",
                rule.name
            ),
        )),
        RepairMode::Auto if found > repair.max_auto_per_run as usize => Some((
            Hold::TooMany,
            format!(
                "the run found {found} violations, more than max_auto_per_run ({}): none is applied automatically",
                repair.max_auto_per_run
            ),
        )),
        RepairMode::Auto => guard.suspicious.clone().map(|why| {
            (
                Hold::Suspicious,
                format!("suspicious data: {why}; automatic repairs pause"),
            )
        }),
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
        .map(|v| {
            let key = v.key.to_string();
            let occurrence_us = since.get(key.as_str()).copied().unwrap_or(started_us);
            let invalid = v.repairs.iter().find_map(|a| match (&a.spec, &a.name) {
                (ActionSpec::Invalid { error }, name) if name == first => Some(error.clone()),
                _ => None,
            });
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
                actions: v.repairs.clone(),
                hold_reason,
                held_by,
            }
        })
        .collect();
    Planned { repairs, held }
}
