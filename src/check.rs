//! `invariantd check`: run rules once and report, as a table for people or as one JSON
//! document for programs.

use std::fmt::Write as _;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;

use crate::engine::{Outcome, RuleRun, run_rule};
use crate::rules::Rule;
use crate::sources::Sources;

/// Runs the rules, up to `concurrency` at a time; results come back in rule order.
pub async fn run_rules(rules: &[Rule], sources: &Sources, concurrency: usize) -> Vec<RuleRun> {
    futures_util::stream::iter(rules)
        .map(|rule| run_rule(rule, sources, Utc::now()))
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// 0 when every rule holds, 1 when any violation was found, 2 when any rule is unknown or
/// has keys that could not be judged.
pub fn exit_code(runs: &[RuleRun]) -> u8 {
    if runs
        .iter()
        .any(|r| r.outcome == Outcome::Unknown || r.error.is_some())
    {
        2
    } else if runs.iter().any(|r| r.outcome == Outcome::Fail) {
        1
    } else {
        0
    }
}

pub fn render_json(rules: &[Rule], runs: &[RuleRun]) -> String {
    let items: Vec<serde_json::Value> = rules
        .iter()
        .zip(runs)
        .map(|(rule, run)| {
            json!({
                "rule": run.rule,
                "severity": rule.severity.as_str(),
                "outcome": run.outcome.as_str(),
                "rows_scanned": run.total_rows_scanned(),
                "duration_ms": run.duration.as_millis() as u64,
                "error": run.error,
                "violations": run.violations.iter().map(|v| json!({
                    "key": v.key.to_string(),
                    "message": v.message,
                    "datasets": v.datasets,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out =
        serde_json::to_string_pretty(&json!({ "rules": items })).expect("JSON values serialize");
    out.push('\n');
    out
}

/// The table for people: one line per rule, then up to `limit` violations per rule (0: all).
pub fn render_table(rules: &[Rule], runs: &[RuleRun], limit: usize) -> String {
    let mut out = String::new();
    let name_w = rules.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<8}  {:<7}  {:>10}  {:>10}  DURATION",
        "RULE", "SEVERITY", "OUTCOME", "ROWS", "VIOLATIONS"
    );
    for (rule, run) in rules.iter().zip(runs) {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<8}  {:<7}  {:>10}  {:>10}  {}ms",
            run.rule,
            rule.severity.as_str(),
            run.outcome.as_str(),
            run.total_rows_scanned(),
            run.violations.len(),
            run.duration.as_millis()
        );
    }
    for (rule, run) in rules.iter().zip(runs) {
        if run.violations.is_empty() && run.error.is_none() {
            continue;
        }
        out.push('\n');
        if !run.violations.is_empty() {
            let n = run.violations.len();
            let _ = writeln!(
                out,
                "{} ({}): {n} violation{}",
                run.rule,
                rule.severity,
                if n == 1 { "" } else { "s" }
            );
            if !rule.description.is_empty() {
                let _ = writeln!(out, "  {}", rule.description);
            }
            let key_w = run
                .violations
                .iter()
                .map(|v| v.key.to_string().len())
                .max()
                .unwrap_or(0);
            let shown = if limit == 0 { n } else { n.min(limit) };
            for v in &run.violations[..shown] {
                let _ = writeln!(out, "  {:<key_w$}  {}", v.key.to_string(), v.message);
            }
            if shown < n {
                let _ = writeln!(
                    out,
                    "  … and {} more (--limit 0 lists all, --format json gives every row)",
                    n - shown
                );
            }
        }
        if let Some(error) = &run.error {
            let _ = writeln!(
                out,
                "{} ({}): {}: {error}",
                run.rule,
                rule.severity,
                run.outcome.as_str()
            );
        }
    }
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    let violations: usize = runs.iter().map(|r| r.violations.len()).sum();
    let _ = writeln!(
        out,
        "\n{} rule{}: {} pass, {} fail, {} unknown; {violations} violation{}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Unknown),
        if violations == 1 { "" } else { "s" }
    );
    out
}
