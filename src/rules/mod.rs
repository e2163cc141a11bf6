//! Rule files (`rules/*.yaml`): the raw documents as written, and the validated `Rule`s the
//! engine runs. Loading is strict and pure: an unknown field, a duplicate name, an unknown
//! source, a bad cron or duration, an assertion (or `impact`) that does not parse or names
//! something that does not exist, an `impact` that cannot be a number, a template naming an
//! unknown field, a test fixture naming an unknown dataset or column (`cases`), a route
//! matcher on nothing (`check_routes`) — every one is reported with its file, line and column,
//! and nothing runs until there are none.

mod builtin;
mod cases;
mod columns;
mod incremental;
mod repair;
mod schedule;
pub mod select;
pub mod thresholds;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use cases::{DEFAULT_NOW, Expect, ExpectedViolation, Fixture, TestCase};
pub use columns::static_columns;
pub use incremental::{DEFAULT_FULL_SWEEP, DEFAULT_OVERLAP, Incremental, Partition};
pub use repair::{DEFAULT_MAX_AUTO_PER_RUN, Repair, RepairMode};
pub use schedule::{DEFAULT_EVERY, Schedule};

use crate::config::Config;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::expr::{self, Scope, ScopeDataset};
use crate::yaml::{self, OrderedMap};

#[derive(Debug, Deserialize)]
struct RawRule {
    name: Spanned<String>,
    description: Option<String>,
    severity: Option<Spanned<String>>,
    #[serde(default)]
    labels: OrderedMap<String>,
    schedule: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    // Missing, with no `check:`, is reported as serde would (`builtin::core`).
    key: Option<Spanned<String>>,
    // Missing is reported as "at least one dataset is needed", with the rule's other errors.
    #[serde(default)]
    datasets: OrderedMap<RawDataset>,
    #[serde(rename = "assert")]
    assertion: Option<Spanned<String>>,
    /// A built-in check, which writes `key`, `datasets`, `assert` and `message`.
    check: Option<Spanned<builtin::RawCheck>>,
    message: Option<Spanned<String>>,
    impact: Option<RawImpact>,
    warn_if: Option<thresholds::RawConditions>,
    error_if: Option<thresholds::RawConditions>,
    repair: Option<repair::RawRepair>,
    incremental: Option<Spanned<incremental::RawIncremental>>,
    consistent_cut: Option<Spanned<incremental::RawCut>>,
    partition: Option<Spanned<incremental::RawPartition>>,
    #[serde(default)]
    tests: Vec<cases::RawCase>,
}

#[derive(Debug, Deserialize)]
struct RawImpact {
    value: Spanned<String>,
    unit: Spanned<String>,
    scale: Option<Spanned<f64>>,
    display_unit: Option<String>,
}

/// What a violation puts at risk: a number per violating key (`value`), in `unit`; shown
/// multiplied by `scale`, in `display_unit` (cents → EUR).
#[derive(Debug, Clone)]
pub struct Impact {
    pub value: String,
    pub ast: expr::parser::Expr,
    pub unit: String,
    pub scale: Option<f64>,
    pub display_unit: Option<String>,
    pub origin: Origin,
}

impl Impact {
    /// A sum as people read it: `1,234,567 cents`, or with `scale: 0.01` and
    /// `display_unit: EUR`, `12,345.67 EUR`. Exact: the sum and the scale are decimals.
    pub fn describe(&self, sum: Decimal) -> String {
        let unit = self.display_unit.as_deref().unwrap_or(&self.unit);
        match self.scale.and_then(crate::value::decimal_from_f64) {
            Some(scale) => {
                // As many decimals as the scale has: 0.01 → 2.
                let decimals = scale.normalize().scale().min(6);
                let scaled = sum.checked_mul(scale).unwrap_or(sum);
                format!("{} {unit}", grouped(scaled, decimals))
            }
            None => {
                // Whole units as they are; anything else as money is written.
                let decimals = if sum.fract().is_zero() { 0 } else { 2 };
                format!("{} {unit}", grouped(sum, decimals))
            }
        }
    }
}

/// `1234567.891` with 2 decimals → `1,234,567.89` (half away from zero).
fn grouped(value: Decimal, decimals: u32) -> String {
    let rounded = value.round_dp_with_strategy(
        decimals,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    let text = format!("{:.*}", decimals as usize, rounded.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if rounded.is_sign_negative() && !rounded.is_zero() {
        out.insert(0, '-');
    }
    out
}

#[derive(Debug, Deserialize)]
struct RawDataset {
    source: Spanned<String>,
    query: Spanned<String>,
    updated_at: Option<Spanned<String>>,
    #[serde(default)]
    many: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    /// `critical`, `warning` or `info`.
    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "critical" => Some(Severity::Critical),
            "warning" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where something was written: for errors found only when a rule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub pos: Pos,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.display(),
            self.pos.line,
            self.pos.column
        )
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub source: String,
    /// The query with `${VAR}` expanded.
    pub query: String,
    pub updated_at: Option<String>,
    pub many: bool,
    /// The columns the SQL text says the query returns, when it says.
    pub static_columns: Option<Vec<String>>,
    /// Where the query is written, for errors the database reports about it.
    pub query_origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub labels: Vec<(String, String)>,
    pub schedule: Schedule,
    pub grace: Duration,
    pub key: String,
    pub datasets: Vec<Dataset>,
    pub assertion: String,
    pub assertion_ast: expr::parser::Expr,
    pub message: Option<String>,
    /// Where the rule's document starts.
    pub origin: Origin,
    pub assertion_origin: Origin,
    pub message_origin: Option<Origin>,
    /// The rule's unit tests, run by `invariantd test`.
    pub tests: Vec<TestCase>,
    /// What is valid but probably not meant (a message field that renders as null).
    pub warnings: Vec<Diagnostic>,
    /// Money (or anything countable) at risk per violation.
    pub impact: Option<Impact>,
    /// When the rule's violations only warn and when they are an error.
    pub thresholds: thresholds::Thresholds,
    /// The compensating actions the rule offers, and their guardrails.
    pub repair: Option<Repair>,
    /// Runs judge only what changed, with full sweeps on their own schedule.
    pub incremental: Option<Incremental>,
    /// `consistent_cut.lag`: keys are judged as of `now - lag`; a key with a row updated
    /// after that is not judged in this run.
    pub consistent_cut: Option<Duration>,
    /// Full sweeps split into key ranges that replicas read in parallel (not part of the
    /// fingerprint: how the keys are read does not change their verdicts).
    pub partition: Option<incremental::Partition>,
    /// What the rule remembers from run to run (a `row_count` check with `max_drop`): its
    /// next run sees this run's value as `previous`.
    pub measure: Option<Measure>,
    /// A hash of what decides the rule's verdicts and repairs (key, grace, datasets,
    /// assertion, repair section): a rule whose fingerprint changed is a changed rule, whose
    /// automatic repairs wait until a person enables them again.
    pub fingerprint: String,
}

/// A number a rule keeps from run to run: a column of the one row of one of its datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    /// The dataset's index in `datasets`.
    pub dataset: usize,
    pub column: String,
}

impl Rule {
    /// The scope expressions of this rule see, with the given columns per dataset.
    pub fn scope<'a>(&'a self, columns: &[Option<&'a [String]>]) -> Scope<'a> {
        Scope {
            datasets: self
                .datasets
                .iter()
                .zip(columns)
                .map(|(d, c)| ScopeDataset {
                    name: &d.name,
                    many: d.many,
                    columns: *c,
                })
                .collect(),
            previous: self.measure.is_some(),
        }
    }

    /// The message template, or the default one.
    pub fn message_template(&self) -> &str {
        self.message.as_deref().unwrap_or(DEFAULT_MESSAGE)
    }
}

const DEFAULT_MESSAGE: &str = "key {{key}} violates the invariant";

/// The longest `grace`: ten years.
const MAX_GRACE: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Names an expression reserves for itself; a dataset cannot take them.
const RESERVED_DATASET_NAMES: [&str; 6] = ["now", "key", "null", "true", "false", "in"];

/// The rule files under the configured paths, in a stable order.
fn rule_files(config: &Config, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for rp in &config.rule_paths {
        if rp.path.is_file() {
            files.push(rp.path.clone());
        } else if rp.path.is_dir() {
            let before = files.len();
            collect_yaml(&rp.path, &mut files, diags);
            files[before..].sort();
        } else {
            diags.push(
                &config.path,
                rp.pos,
                format!("rules: {} does not exist", rp.path.display()),
            );
        }
    }
    files
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(
                dir,
                Pos::default(),
                format!("cannot read the rules directory: {e}"),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, files, diags);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
}

/// Loads every rule under the config's rule paths.
pub fn load(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Rule>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut rules = Vec::new();
    let mut seen: HashMap<String, Origin> = HashMap::new();
    for file in rule_files(config, &mut diags) {
        let text = match yaml::read_text(&file) {
            Ok(t) => t,
            Err(e) => {
                let (pos, message) = e.diagnostic("rule file");
                diags.push(&file, pos, message);
                continue;
            }
        };
        rules.extend(parse_file_into(
            &file, &text, config, env, &mut diags, &mut seen,
        ));
    }
    // Rules with errors are left out: their labels would look unknown.
    if diags.is_empty() {
        check_routes(config, &rules, &mut diags);
    }
    diags.into_result(rules)
}

/// Every route matcher names something that exists: a field alerts have, a rule's label, a
/// rule or a source. A typo there would silently route nothing.
fn check_routes(config: &Config, rules: &[Rule], diags: &mut Diagnostics) {
    use crate::config::MATCH_FIELDS;
    for (i, route) in config.alerting.routes.iter().enumerate() {
        // A route by money at risk takes only alerts of rules with an `impact`.
        let named = route.matchers.iter().find(|m| m.field == "rule");
        let priced = rules
            .iter()
            .filter(|r| named.is_none_or(|m| m.value == r.name))
            .any(|r| r.impact.is_some());
        if route.min_impact.is_some() && !priced {
            diags.push(
                &config.path,
                route.pos,
                format!(
                    "alerting.routes[{i}]: min_impact, but no rule it can take has an `impact`: it would take no alert"
                ),
            );
        }
        for m in &route.matchers {
            let problem = match m.field.as_str() {
                "rule" if !rules.iter().any(|r| r.name == m.value) => {
                    Some(format!("no rule is named `{}`", m.value))
                }
                "source" if config.source(&m.value).is_none() => {
                    Some(format!("no source is named `{}`", m.value))
                }
                f if MATCH_FIELDS.contains(&f) => None,
                f if rules.iter().any(|r| r.labels.iter().any(|(k, _)| k == f)) => None,
                f => Some(format!(
                    "matches on `{f}`, which is not {} or a label of any rule",
                    MATCH_FIELDS.join(", ")
                )),
            };
            if let Some(p) = problem {
                diags.push(&config.path, m.pos, format!("alerting.routes[{i}]: {p}"));
            }
        }
    }
}

/// Parses the rules of one file, adding every problem to `diags`. Rules with errors are left out.
pub fn parse_file(
    file: &Path,
    text: &str,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Vec<Rule> {
    parse_file_into(file, text, config, env, diags, &mut HashMap::new())
}

/// The fields a rule document may have: anything else is an unknown field, reported without
/// stopping the rest of the document's checks.
fn shape() -> yaml::Shape {
    use yaml::Shape;
    Shape::of::<RawRule>(vec![
        (
            "datasets",
            Shape::MapOf(Box::new(Shape::of::<RawDataset>(vec![]))),
        ),
        (
            "tests",
            Shape::SeqOf(Box::new(Shape::of::<cases::RawCase>(vec![]))),
        ),
        ("impact", Shape::of::<RawImpact>(vec![])),
        ("check", builtin::shape()),
        ("warn_if", Shape::of::<thresholds::RawConditions>(vec![])),
        ("error_if", Shape::of::<thresholds::RawConditions>(vec![])),
        ("repair", repair::shape()),
        (
            "incremental",
            Shape::of::<incremental::RawIncremental>(vec![]),
        ),
        ("consistent_cut", Shape::of::<incremental::RawCut>(vec![])),
        ("partition", Shape::of::<incremental::RawPartition>(vec![])),
    ])
}

/// Like `parse_file`, with the rule names seen so far (in this and earlier files): a name seen
/// before is an error, whether or not either document has other errors.
fn parse_file_into(
    file: &Path,
    text: &str,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    seen: &mut HashMap<String, Origin>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    for doc in yaml::documents(text) {
        let before = diags.len();
        for (pos, msg) in yaml::unknown_fields(&doc, &shape()) {
            diags.push(file, pos, msg);
        }
        let mut raw: RawRule = match yaml::parse_document(&doc) {
            Ok(r) => r,
            Err((pos, msg)) => {
                // serde places a missing field at the mapping's end (the last field written):
                // it is the rule's, so point at the rule.
                let pos = if msg.starts_with("missing field") {
                    Pos {
                        line: doc.line_offset + 1,
                        column: 1,
                    }
                } else {
                    pos
                };
                diags.push(file, pos, msg);
                continue;
            }
        };
        let site = builtin::Site { file, doc: &doc };
        let Some(core) = builtin::core(&site, &mut raw, diags) else {
            continue;
        };
        let rule = validate::validate(file, &doc, raw, core, config, env, diags);
        if let Some(first) = seen.get(&rule.name) {
            diags.push(
                &rule.origin.file,
                rule.origin.pos,
                format!(
                    "duplicate rule name `{}` (first defined at {first})",
                    rule.name
                ),
            );
            continue;
        }
        seen.insert(rule.name.clone(), rule.origin.clone());
        if diags.len() == before {
            rules.push(rule);
        }
    }
    rules
}

#[cfg(test)]
mod tests;
