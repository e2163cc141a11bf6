//! Planning a run once its datasets are described: checking what each query returns against
//! what the rule needs (the key column and its type, `updated_at`), choosing one key order for
//! every dataset, and compiling the assertion, message and impact against the real columns —
//! and checking the assertion and impact against their types, once, rather than failing key by key;
//! and compiling the repair actions' templates against the same columns.

use crate::expr::types::{Types, check_assertion, check_number};
use crate::expr::{Program, Template};
use crate::rules::{Origin, Rule};
use crate::sources::{Description, KeyKind, KeyMode};
use crate::verdict::{ErrorKind, RunError};

/// What a run needs after describing: the compiled assertion and message, and per dataset the
/// slot of its `updated_at` column and its column names.
pub(crate) struct Plan {
    pub assertion: Program,
    pub message: Template,
    /// The rule's `impact` value, when it has one.
    pub impact: Option<Program>,
    pub updated_at: Vec<Option<usize>>,
    pub columns: Vec<Vec<String>>,
    /// The key order every dataset is read in.
    pub mode: KeyMode,
    /// The rule's repair actions, compiled against the real columns.
    pub repairs: Vec<Box<dyn crate::actions::Fill>>,
}

/// Checks the descriptions against the rule; every problem is reported in one schema error.
pub(crate) fn plan(rule: &Rule, descriptions: &[Description]) -> Result<Plan, RunError> {
    check(rule, descriptions).map_err(|problems| {
        let messages: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
        RunError::new(ErrorKind::SchemaMismatch, messages.join("; "))
    })
}

/// Checks the descriptions against the rule: the plan, or every problem with where it is
/// written (the query's, the assertion's or the message's position).
pub(crate) fn check(
    rule: &Rule,
    descriptions: &[Description],
) -> Result<Plan, Vec<(Origin, String)>> {
    let what = |i: usize| super::where_(rule, i, ErrorKind::SchemaMismatch);
    let mut problems: Vec<(Origin, String)> = Vec::new();
    let mut updated_at = Vec::new();
    for (i, (d, desc)) in rule.datasets.iter().zip(descriptions).enumerate() {
        let at = || d.query_origin.clone();
        match (&desc.key_index, &desc.key_kind) {
            (None, _) => problems.push((at(), format!(
                "{} returns no column `{}` (the rule's key); it returns: {}",
                what(i),
                rule.key,
                desc.columns.join(", ")
            ))),
            (Some(k), KeyKind::Unsupported) => problems.push((at(), format!(
                "{}: the key column `{}` has type {}; keys must be integers or text (cast it in the query)",
                what(i),
                rule.key,
                desc.types[*k]
            ))),
            _ => {}
        }
        let slot = match &d.updated_at {
            None => None,
            Some(col) => match desc.columns.iter().position(|c| c == col) {
                Some(s) => Some(s),
                None => {
                    problems.push((at(), format!(
                        "{}: updated_at names `{col}`, which the query does not return; it returns: {}",
                        what(i),
                        desc.columns.join(", ")
                    )));
                    None
                }
            },
        };
        updated_at.push(slot);
    }
    let columns: Vec<Option<&[String]>> = descriptions
        .iter()
        .map(|d| Some(d.columns.as_slice()))
        .collect();
    let scope = rule.scope(&columns);
    let assertion = crate::expr::compile(&rule.assertion_ast, &scope).map_err(|errors| {
        let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        let origin = &rule.assertion_origin;
        (
            origin.clone(),
            format!("assert ({origin}): {}", msgs.join("; ")),
        )
    });
    let message = Template::compile(rule.message_template(), &scope).map_err(|errors| {
        let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        let origin = rule.message_origin.as_ref().unwrap_or(&rule.origin);
        (
            origin.clone(),
            format!("message ({origin}): {}", msgs.join("; ")),
        )
    });
    // With the column types known, the assertion's types are checked once for the run, not
    // found out key by key.
    let assertion = assertion.and_then(|a| {
        let types: Vec<Vec<Types>> = descriptions.iter().map(|d| d.value_types.clone()).collect();
        let errors = check_assertion(&a, &types);
        if errors.is_empty() {
            Ok(a)
        } else {
            let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            let origin = &rule.assertion_origin;
            Err((
                origin.clone(),
                format!(
                    "assert ({origin}): {} (with the column types the queries return)",
                    msgs.join("; ")
                ),
            ))
        }
    });
    let impact = rule.impact.as_ref().map(|i| {
        let origin = &i.origin;
        let program = crate::expr::compile(&i.ast, &scope).map_err(|errors| {
            let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            (
                origin.clone(),
                format!("impact ({origin}): {}", msgs.join("; ")),
            )
        })?;
        let types: Vec<Vec<Types>> = descriptions.iter().map(|d| d.value_types.clone()).collect();
        let errors = check_number(&program, &types);
        if errors.is_empty() {
            Ok(program)
        } else {
            let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            Err((
                origin.clone(),
                format!(
                    "impact ({origin}): {} (with the column types the queries return)",
                    msgs.join("; ")
                ),
            ))
        }
    });
    let repairs = super::render::compile(rule, &scope).map_err(|errors| {
        let origin = &rule.origin;
        (
            origin.clone(),
            format!("repair ({origin}): {}", errors.join("; ")),
        )
    });
    let (assertion, message, impact, repairs) =
        match (assertion, message, impact.transpose(), repairs) {
            (Ok(a), Ok(m), Ok(i), Ok(r)) if problems.is_empty() => (a, m, i, r),
            (a, m, i, r) => {
                problems.extend(a.err());
                problems.extend(m.err());
                problems.extend(i.err());
                problems.extend(r.err());
                return Err(problems);
            }
        };
    let mode = if descriptions.iter().all(|d| d.key_kind == KeyKind::Int) {
        KeyMode::Int
    } else {
        KeyMode::Text
    };
    Ok(Plan {
        assertion,
        message,
        impact,
        updated_at,
        columns: descriptions.iter().map(|d| d.columns.clone()).collect(),
        mode,
        repairs,
    })
}
