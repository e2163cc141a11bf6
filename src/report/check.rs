//! What `check` (and `run --once`) prints — a table for people, one JSON document for
//! programs — its JUnit report, and the exit status it promises. A rule's status under its
//! thresholds (`warn_if`, `error_if`) decides between a failure and a warning.

use std::fmt::Write as _;

use super::{Invocation, inert_json, junit, results};
use crate::rules::Rule;
use crate::value::terminal_safe;
use crate::verdict::{Outcome, RuleRun};

/// 0 when every rule holds (or its violations only warn under its thresholds), 1 when any
/// rule's violations are an error, 2 when any rule is unknown or has keys that could not be
/// judged.
pub fn exit_code(runs: &[RuleRun]) -> u8 {
    if runs
        .iter()
        .any(|r| r.outcome == Outcome::Unknown || r.error.is_some())
    {
        2
    } else if runs
        .iter()
        .any(|r| r.outcome == Outcome::Fail && r.status == crate::verdict::RuleStatus::Error)
    {
        1
    } else {
        0
    }
}

/// `check --format json`. The document borrows the runs' violations rather than copying them
/// into a JSON tree first: a sweep's report may hold many thousands, each with its rows.
pub fn render_json(rules: &[Rule], runs: &[RuleRun]) -> String {
    #[derive(serde::Serialize)]
    struct Report<'a> {
        rules: Vec<RuleReport<'a>>,
    }
    #[derive(serde::Serialize)]
    struct RuleReport<'a> {
        rule: &'a str,
        severity: &'a str,
        outcome: &'a str,
        /// Under the rule's thresholds: pass, warn, error or unknown.
        status: &'a str,
        /// The severity the rule's violations carry now (none when it passes).
        effective_severity: Option<&'a str>,
        rows_scanned: u64,
        keys_judged: u64,
        keys_in_grace: u64,
        keys_with_errors: u64,
        duration_ms: u64,
        error: Option<ErrorReport<'a>>,
        violations: Vec<ViolationReport<'a>>,
    }
    #[derive(serde::Serialize)]
    struct ErrorReport<'a> {
        kind: &'a str,
        message: &'a str,
    }
    #[derive(serde::Serialize)]
    struct ViolationReport<'a> {
        key: String,
        message: &'a str,
        datasets: serde_json::Value,
    }
    let report = Report {
        rules: rules
            .iter()
            .zip(runs)
            .map(|(rule, run)| RuleReport {
                rule: &run.rule,
                severity: rule.severity.as_str(),
                outcome: run.outcome.as_str(),
                status: run.status.as_str(),
                effective_severity: crate::rules::thresholds::effective_severity(
                    rule.severity,
                    run.status,
                )
                .map(|s| s.as_str()),
                rows_scanned: run.total_rows_scanned(),
                keys_judged: run.keys_judged,
                keys_in_grace: run.keys_in_grace,
                keys_with_errors: run.key_errors_total,
                duration_ms: run.duration.as_millis() as u64,
                error: run.error.as_ref().map(|e| ErrorReport {
                    kind: e.kind.as_str(),
                    message: &e.message,
                }),
                violations: run
                    .violations
                    .iter()
                    .map(|v| ViolationReport {
                        key: v.key.to_string(),
                        message: &v.message,
                        datasets: v.datasets.to_value(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut out = inert_json(serde_json::to_string_pretty(&report).expect("JSON values serialize"));
    out.push('\n');
    out
}

/// `check --junit FILE`: a test case per rule, a failure with the message of up to `limit`
/// violations (0: all), an error for a rule that could not be judged.
pub fn check_junit(rules: &[Rule], runs: &[RuleRun], at: &Invocation<'_>, limit: usize) -> String {
    use junit::{Case, CaseResult, Suite};
    let cases = rules
        .iter()
        .zip(runs)
        .map(|(rule, run)| {
            let status = results::status(run);
            let result = match status {
                results::Status::Pass => CaseResult::Passed,
                results::Status::Warn => CaseResult::Warned(format!(
                    "warning: {} ({})\n{}",
                    count_of(run.violations.len()),
                    threshold_reasons(rule, run).join(", "),
                    violation_sample(run, limit)
                )),
                results::Status::Fail => CaseResult::Failed {
                    kind: "violations".into(),
                    message: format!(
                        "{} violation{} of `{}`",
                        run.violations.len(),
                        if run.violations.len() == 1 { "" } else { "s" },
                        rule.assertion
                    ),
                    text: violation_sample(run, limit),
                },
                results::Status::Error => {
                    let (kind, message) = match &run.error {
                        Some(e) => (e.kind.as_str().to_string(), e.message.clone()),
                        None => (
                            "key_errors".to_string(),
                            format!("{} keys could not be judged", run.key_errors_total),
                        ),
                    };
                    let mut text = String::new();
                    for e in &run.key_errors {
                        let _ = writeln!(text, "key {}: {} ({})", e.key, e.message, e.kind);
                    }
                    text.push_str(&violation_sample(run, limit));
                    CaseResult::Error {
                        kind,
                        message,
                        text,
                    }
                }
            };
            Case {
                name: rule.name.clone(),
                classname: format!("invariantd.{}", rule.severity.as_str()),
                file: Some(rule.origin.file.display().to_string()),
                line: Some(rule.origin.pos.line as u32),
                time: Some(run.duration),
                result,
            }
        })
        .collect();
    junit::render(&Suite {
        name: "invariantd check".into(),
        started_at: at.started_at,
        elapsed: at.elapsed,
        properties: junit::properties(at),
        cases,
    })
}

/// `3 violations`.
fn count_of(n: usize) -> String {
    format!("{n} violation{}", if n == 1 { "" } else { "s" })
}

/// The threshold conditions that hold for a run (`violations > 10`), or what the rule's
/// status rests on when none is written.
fn threshold_reasons(rule: &Rule, run: &RuleRun) -> Vec<String> {
    let reasons = rule
        .thresholds
        .reasons(&crate::engine::tally_of(rule, run), run.status);
    if !reasons.is_empty() {
        return reasons;
    }
    // Violations with no condition that holds: below the next threshold.
    let below = |field: &str, c: &Option<Vec<crate::rules::thresholds::Condition>>| {
        let conds: Vec<String> = c.iter().flatten().map(ToString::to_string).collect();
        format!("below {field} ({})", conds.join(" or "))
    };
    match run.status {
        crate::verdict::RuleStatus::Warn => vec![below("error_if", &rule.thresholds.error_if)],
        crate::verdict::RuleStatus::Pass => vec![below("warn_if", &rule.thresholds.warn_if)],
        _ => Vec::new(),
    }
}

/// Up to `limit` violations (0: all), a line each, and how many more there are.
fn violation_sample(run: &RuleRun, limit: usize) -> String {
    let mut text = String::new();
    let shown = if limit == 0 {
        run.violations.len()
    } else {
        limit.min(run.violations.len())
    };
    for v in &run.violations[..shown] {
        let _ = writeln!(text, "{}: {}", v.key, v.message);
    }
    if shown < run.violations.len() {
        let _ = writeln!(text, "… and {} more", run.violations.len() - shown);
    }
    text
}

pub fn render_table(rules: &[Rule], runs: &[RuleRun], limit: usize) -> String {
    let mut out = String::new();
    let name_w = rules.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<8}  {:<7}  {:>10}  {:>8}  {:>6}  {:>6}  {:>10}  DURATION",
        "RULE", "SEVERITY", "OUTCOME", "ROWS", "JUDGED", "GRACE", "ERRORS", "VIOLATIONS"
    );
    for (rule, run) in rules.iter().zip(runs) {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<8}  {:<7}  {:>10}  {:>8}  {:>6}  {:>6}  {:>10}  {}ms",
            run.rule,
            rule.severity.as_str(),
            run.outcome.as_str(),
            run.total_rows_scanned(),
            run.keys_judged,
            run.keys_in_grace,
            run.key_errors_total,
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
            let status = if rule.thresholds.is_set() {
                format!(
                    " — {}: {}",
                    run.status.as_str(),
                    threshold_reasons(rule, run).join(", ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{} ({}): {}{status}",
                run.rule,
                rule.severity,
                count_of(n)
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
                let _ = writeln!(
                    out,
                    "  {:<key_w$}  {}",
                    terminal_safe(&v.key.to_string()),
                    terminal_safe(&v.message)
                );
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
                "{} ({}): {} ({}): {}",
                run.rule,
                rule.severity,
                run.outcome.as_str(),
                error.kind,
                terminal_safe(&error.message)
            );
        }
    }
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    let violations: usize = runs.iter().map(|r| r.violations.len()).sum();
    // Violations that only warn are said apart: they do not fail `check`.
    let warned = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Fail && r.status != crate::verdict::RuleStatus::Error)
        .count();
    let warned = if warned > 0 {
        format!(" ({warned} only warn)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n{} rule{}: {} pass, {} fail{warned}, {} unknown; {violations} violation{}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Unknown),
        if violations == 1 { "" } else { "s" }
    );
    out
}
