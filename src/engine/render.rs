//! A rule's repair actions for a run: compiled once against the columns the queries really
//! return, then filled in for each violating key by the action's kind (`actions`).

use crate::actions::Fill;
use crate::expr::{Env, Scope};
use crate::rules::Rule;
use crate::verdict::{ActionSpec, PlannedAction};

/// Compiles every action of the rule against the run's scope; the messages of what failed.
pub(crate) fn compile(rule: &Rule, scope: &Scope<'_>) -> Result<Vec<Box<dyn Fill>>, Vec<String>> {
    let Some(repair) = &rule.repair else {
        return Ok(Vec::new());
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for action in &repair.actions {
        let what = format!("repair action `{}`", action.name);
        match action.kind.compile(scope, &what) {
            Ok(fill) => out.push(fill),
            Err(es) => errors.extend(es),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Fills in every action for one key; a field a key has no row for reads as null.
pub(crate) fn render(rule: &Rule, compiled: &[Box<dyn Fill>], env: &Env<'_>) -> Vec<PlannedAction> {
    let Some(repair) = &rule.repair else {
        return Vec::new();
    };
    let env = &Env {
        missing_is_null: true,
        ..*env
    };
    repair
        .actions
        .iter()
        .zip(compiled)
        .map(|(action, c)| PlannedAction {
            name: action.name.clone(),
            spec: c.fill(env).unwrap_or_else(ActionSpec::invalid),
        })
        .collect()
}
