//! The evidence for one key, for a person deciding what to do about it: each dataset's rows for
//! the key (read through the one-key path), whether the key is within its grace and why, the
//! value of every sub-expression of the assertion, the verdict and the message.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::expr::parser::{Expr, ExprKind};
use crate::expr::{Env, Group};
use crate::rules::Rule;
use crate::sources::Sources;
use crate::value::{Key, format_timestamp};
use crate::verdict::RunError;

use super::judge::{Judge, evidence, groups_of};
use super::{ChannelBatches, RowBatches, describe, plan, where_};

/// At most this many sub-expressions are shown.
const MAX_STEPS: usize = 60;

#[derive(Debug, Clone, Serialize)]
pub struct DatasetRows {
    pub name: String,
    pub source: String,
    /// Each row as an object of its columns.
    pub rows: Vec<serde_json::Value>,
}

/// One sub-expression of the assertion and what it is for this key.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub expr: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub rule: String,
    pub key: String,
    pub at: String,
    pub datasets: Vec<DatasetRows>,
    /// Why the key is not judged yet, when it is within the rule's grace.
    pub grace: Option<String>,
    pub assertion: String,
    pub steps: Vec<Step>,
    /// `holds`, `violated`, `in_grace`, `not_found` (no dataset has a row for the key),
    /// `error` (it could not be judged), or `unknown` (the data could not be read).
    pub verdict: &'static str,
    pub message: Option<String>,
    pub error: Option<String>,
}

/// Explains the rule's verdict on one key, now.
pub async fn explain(rule: &Rule, sources: &Sources, now: DateTime<Utc>, key: &str) -> Explanation {
    let mut out = Explanation {
        rule: rule.name.clone(),
        key: key.to_string(),
        at: format_timestamp(now.timestamp_micros()),
        datasets: Vec::new(),
        grace: None,
        assertion: rule.assertion.clone(),
        steps: Vec::new(),
        verdict: "unknown",
        message: None,
        error: None,
    };
    if let Err(e) = judge(rule, sources, now, key, &mut out).await {
        out.verdict = "unknown";
        out.error = Some(format!("{}: {}", e.kind.as_str(), e.message));
    }
    redact(&mut out, sources.secrets());
    out
}

/// Replaces every secret in the evidence by `***`, as a run's output is: rows, the value of
/// each part of the assertion, the message and errors all come from the data.
fn redact(out: &mut Explanation, secrets: &crate::value::Secrets) {
    if secrets.is_empty() {
        return;
    }
    let clean = |s: &mut String| {
        if let std::borrow::Cow::Owned(r) = secrets.redact(s) {
            *s = r;
        }
    };
    for d in &mut out.datasets {
        d.rows.iter_mut().for_each(|r| secrets.redact_json(r));
    }
    for step in &mut out.steps {
        clean(&mut step.expr);
        clean(&mut step.value);
    }
    for text in [&mut out.message, &mut out.error, &mut out.grace]
        .into_iter()
        .flatten()
    {
        clean(text);
    }
    clean(&mut out.key);
}

async fn judge(
    rule: &Rule,
    sources: &Sources,
    now: DateTime<Utc>,
    key: &str,
    out: &mut Explanation,
) -> Result<(), RunError> {
    let described = describe(rule, sources, super::Read::Keys(&[key.to_string()])).await?;
    let mut descriptions = Vec::new();
    for (i, d) in described.descriptions.into_iter().enumerate() {
        descriptions.push(d.map_err(|e| {
            let at = where_(rule, i, e.kind);
            e.context(at)
        })?);
    }
    let plan = plan::plan(rule, &descriptions)?;
    let mut found = Vec::new();
    for (i, reader) in described.readers.into_iter().enumerate() {
        let _ = reader.mode.send(plan.mode);
        let mut batches = ChannelBatches {
            rx: reader.messages,
            spent: reader.spent,
            null_keys: 0,
        };
        let mut rows = Vec::new();
        while let Some(batch) = batches.next_batch().await? {
            rows.extend(batch);
        }
        let columns = &plan.columns[i];
        out.datasets.push(DatasetRows {
            name: rule.datasets[i].name.clone(),
            source: rule.datasets[i].source.clone(),
            rows: rows.iter().map(|r| evidence(columns, r)).collect(),
        });
        found.push(rows);
    }
    let groups = groups_of(rule, &found);
    if groups.iter().all(|g| g.rows.is_empty()) {
        out.verdict = "not_found";
        return Ok(());
    }
    if let Some((i, g)) = groups
        .iter()
        .enumerate()
        .find(|(_, g)| !g.many && g.rows.len() > 1)
    {
        out.verdict = "error";
        out.error = Some(super::merge::duplicate_rows(
            &rule.datasets[i].name,
            g.rows.len(),
        ));
        return Ok(());
    }
    // Judging is CPU work — up to `MAX_STEPS` evaluations, each within the per-key budget — so
    // it runs where it does not hold up other requests on the same worker.
    off_the_workers(|| evaluate(rule, &plan, &groups, key, now, out));
    Ok(())
}

/// Runs `f` on the current thread with the runtime told it blocks (so other tasks move to
/// other workers); on a single-threaded runtime, which has no other worker, it just runs.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The verdict on the key and the value of each part of the assertion, from its rows.
fn evaluate(
    rule: &Rule,
    plan: &plan::Plan,
    groups: &[Group],
    key: &str,
    now: DateTime<Utc>,
    out: &mut Explanation,
) {
    // Some dataset has a row (checked above): the key as the data types it.
    let key: Key = groups
        .iter()
        .flat_map(|g| g.rows.first())
        .map(|r| r.key.clone())
        .next()
        .unwrap_or_else(|| Key::Text(key.into()));
    let now_us = now.timestamp_micros();
    let judge = Judge::new(rule, plan, now_us, super::judge::Grace::Apply);
    if let Some(from) = judge.grace_from {
        match judge.newest_update(groups) {
            Ok(Some(t)) if t > from => {
                out.grace = Some(format!(
                    "last changed at {}, less than the rule's grace ({}) ago: not judged until {}",
                    format_timestamp(t),
                    humantime::format_duration(rule.grace),
                    format_timestamp(t + rule.grace.as_micros() as i64)
                ));
                out.verdict = "in_grace";
            }
            Ok(_) => {}
            Err(e) => {
                out.verdict = "error";
                out.error = Some(e);
                return;
            }
        }
    }
    let columns: Vec<Option<&[String]>> = plan.columns.iter().map(|c| Some(c.as_slice())).collect();
    let scope = rule.scope(&columns);
    let env = Env {
        now: now_us,
        key: &key,
        groups,
        missing_is_null: false,
        // A key's evidence does not compare with earlier runs: `previous` is null here.
        previous: None,
    };
    steps(
        &rule.assertion_ast,
        &rule.assertion,
        &scope,
        &env,
        &mut out.steps,
    );
    if out.verdict == "in_grace" {
        return;
    }
    match plan.assertion.eval_bool(&env) {
        Ok(true) => out.verdict = "holds",
        Ok(false) => {
            out.verdict = "violated";
            out.message = Some(plan.message.render(&env));
        }
        Err(e) => {
            out.verdict = "error";
            out.error = Some(format!("assert: {}", e.message));
        }
    }
}

/// The value of every sub-expression that is not a literal, outermost first. Those that
/// cannot be evaluated on their own (a comprehension's variable) are left out.
fn steps(
    expr: &Expr,
    text: &str,
    scope: &crate::expr::Scope<'_>,
    env: &Env<'_>,
    out: &mut Vec<Step>,
) {
    if out.len() >= MAX_STEPS || matches!(expr.kind, ExprKind::Lit(_)) {
        return;
    }
    if let Ok(program) = crate::expr::compile(expr, scope) {
        let value = match program.eval(env) {
            Ok(v) => v.display(),
            Err(e) => format!("error: {}", e.message),
        };
        let source = text
            .get(expr.span.start..expr.span.end)
            .unwrap_or_default()
            .trim()
            .to_string();
        if !out.iter().any(|s| s.expr == source) {
            out.push(Step {
                expr: source,
                value,
            });
        }
    }
    match &expr.kind {
        ExprKind::Select(inner, _, _) | ExprKind::Unary(_, inner) => {
            steps(inner, text, scope, env, out)
        }
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            steps(a, text, scope, env, out);
            steps(b, text, scope, env, out);
        }
        ExprKind::Cond(a, b, c) => {
            for e in [a, b, c] {
                steps(e, text, scope, env, out);
            }
        }
        ExprKind::Call { target, args, .. } => {
            if let Some(t) = target {
                steps(t, text, scope, env, out);
            }
            for a in args {
                steps(a, text, scope, env, out);
            }
        }
        ExprKind::List(items) => {
            for e in items {
                steps(e, text, scope, env, out);
            }
        }
        ExprKind::Lit(_) | ExprKind::Ident(_) => {}
    }
}
