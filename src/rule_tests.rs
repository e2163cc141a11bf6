//! `invariantd test`: runs the rules' unit tests (`tests:` in each rule) through the engine in
//! memory — the same plan, merge and judge as a real run, with no database — and reports each
//! case that fails with its file:line, what was expected and what came out; for CI, as JUnit
//! XML and run results (`--junit`, `--output`, through `report`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::engine::fixture::run_fixtures;
use crate::report::Invocation;
use crate::report::results::{Document, Status};
use crate::rules::{Expect, Rule, TestCase};
use crate::verdict::{Outcome, RuleRun};

/// Rows per batch in a test run: small, so that cases also cross batch boundaries.
const BATCH_ROWS: usize = 2;

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub rule: String,
    pub case: String,
    /// `file:line:column` of the case's name.
    pub origin: String,
    pub file: String,
    pub line: u64,
    /// How long the case took.
    pub duration: std::time::Duration,
    /// Why the case failed, as lines for people; empty when it passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case of `rules`, in file order.
pub async fn run(rules: &[Rule]) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for rule in rules {
        for case in &rule.tests {
            let started = std::time::Instant::now();
            let run = run_fixtures(
                rule,
                &case.given,
                (case.now, case.previous),
                &HashSet::new(),
                BATCH_ROWS,
            )
            .await;
            results.push(CaseResult {
                rule: rule.name.clone(),
                case: case.name.clone(),
                origin: case.origin.to_string(),
                file: case.origin.file.display().to_string(),
                line: case.origin.pos.line,
                duration: started.elapsed(),
                failures: compare(case, &run),
            });
        }
    }
    results
}

/// What differs between what the case expects and what the run found.
fn compare(case: &TestCase, run: &RuleRun) -> Vec<String> {
    let mut failures = Vec::new();
    if run.outcome == Outcome::Unknown && !run.finished {
        let error = run
            .error
            .as_ref()
            .map_or(String::new(), |e| format!("{} ({})", e, e.kind));
        failures.push(format!("the rule could not run on the fixtures: {error}"));
        return failures;
    }
    for e in &run.key_errors {
        failures.push(format!(
            "key {} could not be judged ({}): {}",
            e.key, e.kind, e.message
        ));
    }
    let found: BTreeMap<String, &str> = run
        .violations
        .iter()
        .map(|v| (v.key.to_string(), &*v.message))
        .collect();
    let found_keys = || found.keys().cloned().collect::<Vec<_>>().join(", ");
    match &case.expect {
        Expect::Pass => {
            if !found.is_empty() {
                failures.push("expected: pass".into());
                failures.push(format!("got:      violations [{}]", found_keys()));
                for (key, message) in &found {
                    failures.push(format!("  {key}: {message}"));
                }
            }
        }
        Expect::Violations(expected) => {
            let expected_keys: Vec<String> = {
                let mut k: Vec<String> = expected.iter().map(|e| e.key.clone()).collect();
                k.sort();
                k
            };
            let got: Vec<String> = found.keys().cloned().collect();
            let mut sorted_got = got.clone();
            sorted_got.sort();
            if expected_keys != sorted_got {
                failures.push(format!(
                    "expected: violations [{}]",
                    expected_keys.join(", ")
                ));
                failures.push(if got.is_empty() {
                    "got:      pass".to_string()
                } else {
                    format!("got:      violations [{}]", found_keys())
                });
            }
            for e in expected {
                if let (Some(want), Some(message)) = (&e.message, found.get(&e.key))
                    && want != message
                {
                    failures.push(format!("key {}: expected message: {want}", e.key));
                    failures.push(format!("key {}: got message:      {message}", e.key));
                }
            }
        }
    }
    failures
}

/// The report for people: each failing case in full, then a summary line.
pub fn render(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        if r.passed() {
            let _ = writeln!(out, "ok    {} / {}", r.rule, r.case);
        } else {
            let _ = writeln!(out, "FAIL  {}: {} / {}", r.origin, r.rule, r.case);
            for line in &r.failures {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(
        out,
        "\n{} case{}: {} passed, {failed} failed",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        results.len() - failed
    );
    out
}

/// 0 when every case passed (or there are none), 1 when a case failed.
pub fn exit_code(results: &[CaseResult]) -> u8 {
    u8::from(results.iter().any(|r| !r.passed()))
}

/// `test --junit FILE`: a test case per fixture case, named `RULE / CASE`, its failures as
/// the failure's text.
pub fn junit(results: &[CaseResult], at: &Invocation<'_>) -> String {
    use crate::report::junit::{Case, CaseResult as Result, Suite, render};
    render(&Suite {
        name: "invariantd test".into(),
        started_at: at.started_at,
        elapsed: at.elapsed,
        properties: crate::report::junit::properties(at),
        cases: results
            .iter()
            .map(|r| Case {
                name: format!("{} / {}", r.rule, r.case),
                classname: format!("invariantd.test.{}", r.rule),
                file: Some(r.file.clone()),
                line: Some(r.line as u32),
                time: Some(r.duration),
                result: match r.failures.first() {
                    None => Result::Passed,
                    Some(first) => Result::Failed {
                        kind: "case".into(),
                        message: first.clone(),
                        text: r.failures.join("\n"),
                    },
                },
            })
            .collect(),
    })
}

/// One case's result in `test`'s run-results document.
#[derive(serde::Serialize)]
struct CaseReport<'a> {
    rule: &'a str,
    case: &'a str,
    file: &'a str,
    line: u64,
    status: Status,
    duration_seconds: f64,
    /// What differed, as `test` prints it; empty when the case passed.
    failures: &'a [String],
}

/// `test --output FILE`: the run-results document (`report::results`) of the cases.
pub fn results_json(results: &[CaseResult], at: &Invocation<'_>) -> String {
    let cases = results
        .iter()
        .map(|r| CaseReport {
            rule: &r.rule,
            case: &r.case,
            file: &r.file,
            line: r.line,
            status: if r.passed() {
                Status::Pass
            } else {
                Status::Fail
            },
            duration_seconds: r.duration.as_secs_f64(),
            failures: &r.failures,
        })
        .collect();
    Document::new(
        "test",
        at,
        exit_code(results),
        cases,
        |c: &CaseReport<'_>| c.status,
    )
    .to_json()
}
