//! The run-results artifact (`check --output FILE`, `test --output FILE`): one JSON document
//! of a versioned schema, `invariantd/run-results/v1` (README: Reports for CI), for pipelines
//! that keep or compare results. Fields are only ever added within a version; a change to
//! what a field means is a new version.

use serde::Serialize;

use super::Invocation;
use crate::rules::Rule;
use crate::verdict::{Outcome, RuleRun, RuleStatus};

/// The schema this module writes.
pub const SCHEMA: &str = "invariantd/run-results/v1";

/// What became of one rule or case, as the exit status counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Violations that only warn under the rule's thresholds (exit status 0).
    Warn,
    Fail,
    Error,
}

/// A rule's run: an error when it could not be judged (exit status 2), a failure when its
/// violations are an error under its thresholds (1; without thresholds, any violation), a
/// warning when they only warn.
pub fn status(run: &RuleRun) -> Status {
    if run.outcome == Outcome::Unknown || run.error.is_some() {
        Status::Error
    } else if run.outcome == Outcome::Fail && run.status == RuleStatus::Error {
        Status::Fail
    } else if run.outcome == Outcome::Fail && run.status == RuleStatus::Warn {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// The document, for `check`'s rules or `test`'s cases.
#[derive(Serialize)]
pub struct Document<'a, R> {
    pub schema: &'static str,
    pub command: &'a str,
    pub invariantd_version: &'static str,
    pub generated_at: String,
    pub elapsed_seconds: f64,
    pub config: String,
    /// The worst status of the results (`pass` when there are none).
    pub status: Status,
    pub exit_status: u8,
    pub summary: Summary,
    pub results: Vec<R>,
}

#[derive(Serialize)]
pub struct Summary {
    pub total: usize,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub error: usize,
}

impl<'a, R> Document<'a, R> {
    /// A document of these results, each with its status.
    pub fn new(
        command: &'a str,
        at: &Invocation<'_>,
        exit_status: u8,
        results: Vec<R>,
        status_of: impl Fn(&R) -> Status,
    ) -> Document<'a, R> {
        let count = |s: Status| results.iter().filter(|r| status_of(r) == s).count();
        let summary = Summary {
            total: results.len(),
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            error: count(Status::Error),
        };
        let status = if summary.error > 0 {
            Status::Error
        } else if summary.fail > 0 {
            Status::Fail
        } else if summary.warn > 0 {
            Status::Warn
        } else {
            Status::Pass
        };
        Document {
            schema: SCHEMA,
            command,
            invariantd_version: env!("CARGO_PKG_VERSION"),
            generated_at: at
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            elapsed_seconds: at.elapsed.as_secs_f64(),
            config: at.config.display().to_string(),
            status,
            exit_status,
            summary,
            results,
        }
    }

    /// The document as pretty JSON, with terminal-hostile characters escaped.
    pub fn to_json(&self) -> String
    where
        R: Serialize,
    {
        let mut out =
            super::inert_json(serde_json::to_string_pretty(self).expect("JSON values serialize"));
        out.push('\n');
        out
    }
}

/// One rule's result in `check`'s document.
#[derive(Serialize)]
pub struct RuleResult<'a> {
    pub rule: &'a str,
    pub file: String,
    pub line: u64,
    pub severity: &'static str,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub status: Status,
    /// `pass`, `fail` or `unknown`, as the run recorded it.
    pub outcome: &'static str,
    pub started_at: String,
    pub duration_seconds: f64,
    pub rows_scanned: u64,
    pub keys_judged: u64,
    pub keys_in_grace: u64,
    pub keys_with_errors: u64,
    pub violations_total: usize,
    /// The first `limit` violations (all with `--limit 0`), in key order.
    pub violations: Vec<ViolationResult<'a>>,
    pub error: Option<ErrorResult<'a>>,
}

#[derive(Serialize)]
pub struct ViolationResult<'a> {
    pub key: String,
    pub message: &'a str,
    /// What it puts at risk, a decimal string, for rules with an `impact`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
}

#[derive(Serialize)]
pub struct ErrorResult<'a> {
    pub kind: &'static str,
    pub message: &'a str,
}

/// `check --output FILE`.
pub fn check(
    rules: &[Rule],
    runs: &[RuleRun],
    at: &Invocation<'_>,
    exit_status: u8,
    limit: usize,
) -> String {
    let results = rules
        .iter()
        .zip(runs)
        .map(|(rule, run)| {
            let shown = if limit == 0 {
                run.violations.len()
            } else {
                limit.min(run.violations.len())
            };
            RuleResult {
                rule: &rule.name,
                file: rule.origin.file.display().to_string(),
                line: rule.origin.pos.line,
                severity: rule.severity.as_str(),
                labels: rule
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                status: status(run),
                outcome: run.outcome.as_str(),
                started_at: run
                    .started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                duration_seconds: run.duration.as_secs_f64(),
                rows_scanned: run.total_rows_scanned(),
                keys_judged: run.keys_judged,
                keys_in_grace: run.keys_in_grace,
                keys_with_errors: run.key_errors_total,
                violations_total: run.violations.len(),
                violations: run.violations[..shown]
                    .iter()
                    .map(|v| ViolationResult {
                        key: v.key.to_string(),
                        message: &v.message,
                        impact: v.impact.map(|i| i.to_string()),
                    })
                    .collect(),
                error: run.error.as_ref().map(|e| ErrorResult {
                    kind: e.kind.as_str(),
                    message: &e.message,
                }),
            }
        })
        .collect();
    Document::new("check", at, exit_status, results, |r: &RuleResult<'_>| {
        r.status
    })
    .to_json()
}
