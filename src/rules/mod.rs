//! Rule files (`rules/*.yaml`): the raw documents as written, and the validated `Rule`s the
//! engine runs. Loading is strict and pure: an unknown field, a duplicate name, an unknown
//! source, a bad cron or duration, an assertion (or `impact`) that does not parse or names
//! something that does not exist, an `impact` that cannot be a number, a template naming an
//! unknown field, a test fixture naming an unknown dataset or column (`cases`), a route
//! matcher on nothing (`check_routes`) — every one is reported with its file, line and column,
//! and nothing runs until there are none.

mod cases;
mod columns;
mod incremental;
mod repair;
mod schedule;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use cases::{DEFAULT_NOW, Expect, ExpectedViolation, Fixture, TestCase};
pub use columns::static_columns;
pub use incremental::{DEFAULT_FULL_SWEEP, DEFAULT_OVERLAP, Incremental};
pub use repair::{
    Action, ActionKind, DEFAULT_MAX_AUTO_PER_RUN, Repair, RepairMode, StatusMeaning, json_templates,
};
pub use schedule::{DEFAULT_EVERY, Schedule};

use crate::config::{Config, valid_name};
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::expr::{self, Scope, ScopeDataset, Template};
use crate::yaml::{self, Document, OrderedMap};

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
    key: Spanned<String>,
    datasets: OrderedMap<RawDataset>,
    #[serde(rename = "assert")]
    assertion: Spanned<String>,
    message: Option<Spanned<String>>,
    impact: Option<RawImpact>,
    repair: Option<repair::RawRepair>,
    incremental: Option<Spanned<incremental::RawIncremental>>,
    consistent_cut: Option<Spanned<incremental::RawCut>>,
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
    /// `display_unit: EUR`, `12,345.67 EUR`.
    pub fn describe(&self, sum: f64) -> String {
        match self.scale {
            Some(scale) => {
                let decimals = if scale < 1.0 {
                    (-scale.log10()).ceil().clamp(0.0, 6.0) as usize
                } else {
                    0
                };
                format!(
                    "{} {}",
                    grouped(sum * scale, decimals),
                    self.display_unit.as_deref().unwrap_or(&self.unit)
                )
            }
            None => {
                // Whole units as they are; anything else as money is written.
                let decimals = if sum.fract() == 0.0 { 0 } else { 2 };
                format!(
                    "{} {}",
                    grouped(sum, decimals),
                    self.display_unit.as_deref().unwrap_or(&self.unit)
                )
            }
        }
    }
}

/// `1234567.891` with 2 decimals → `1,234,567.89`.
fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
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
    if value < 0.0 && value.abs() >= 0.5 * 10f64.powi(-(decimals as i32)) {
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
    /// The compensating actions the rule offers, and their guardrails.
    pub repair: Option<Repair>,
    /// Runs judge only what changed, with full sweeps on their own schedule.
    pub incremental: Option<Incremental>,
    /// `consistent_cut.lag`: keys are judged as of `now - lag`; a key with a row updated
    /// after that is not judged in this run.
    pub consistent_cut: Option<Duration>,
    /// A hash of what decides the rule's verdicts and repairs (key, grace, datasets,
    /// assertion, repair section): a rule whose fingerprint changed is a changed rule, whose
    /// automatic repairs wait until a person enables them again.
    pub fingerprint: String,
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
        ("repair", repair::shape()),
        (
            "incremental",
            Shape::of::<incremental::RawIncremental>(vec![]),
        ),
        ("consistent_cut", Shape::of::<incremental::RawCut>(vec![])),
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
        let raw: RawRule = match yaml::parse_document(&doc) {
            Ok(r) => r,
            Err((pos, msg)) => {
                diags.push(file, pos, msg);
                continue;
            }
        };
        let rule = validate(file, &doc, raw, config, env, diags);
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

fn validate(
    file: &Path,
    doc: &Document<'_>,
    raw: RawRule,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Rule {
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    let name = raw.name.value.clone();
    if !valid_name(&name) {
        diags.push(
            file,
            at(&raw.name),
            format!("rule name `{name}` must match [a-z0-9_]+ (it is a metric label)"),
        );
    }
    let ctx = format!("rule `{name}`");

    let severity = match &raw.severity {
        None => Severity::Warning,
        Some(s) => match s.value.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            "info" => Severity::Info,
            other => {
                diags.push(
                    file,
                    at(s),
                    format!("{ctx}: severity `{other}` is not one of critical, warning, info"),
                );
                Severity::Warning
            }
        },
    };

    let mut labels = Vec::new();
    for (k, v) in raw.labels.0 {
        let ok_chars = k
            .value
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if k.value.is_empty() || !ok_chars || k.value.starts_with("__") {
            diags.push(
                file,
                at(&k),
                format!(
                    "{ctx}: label name `{}` is not a valid Prometheus label name",
                    k.value
                ),
            );
        } else if ["rule", "severity", "alertname"].contains(&k.value.as_str()) {
            diags.push(
                file,
                at(&k),
                format!("{ctx}: label `{}` is set by invariantd itself", k.value),
            );
        }
        labels.push((k.value, v));
    }

    let schedule = match (&raw.schedule, &raw.every) {
        (Some(s), Some(_)) => {
            diags.push(
                file,
                at(s),
                format!("{ctx}: give either `schedule` or `every`, not both"),
            );
            Schedule::Every(DEFAULT_EVERY)
        }
        (Some(s), None) => Schedule::cron(&s.value).unwrap_or_else(|e| {
            diags.push(file, at(s), format!("{ctx}: {e}"));
            Schedule::Every(DEFAULT_EVERY)
        }),
        (None, Some(e)) => Schedule::every(&e.value).unwrap_or_else(|msg| {
            diags.push(file, at(e), format!("{ctx}: {msg}"));
            Schedule::Every(DEFAULT_EVERY)
        }),
        (None, None) => Schedule::Every(DEFAULT_EVERY),
    };

    let grace = match &raw.grace {
        None => Duration::ZERO,
        Some(g) => match humantime::parse_duration(&g.value) {
            // Keys are held back by comparing microsecond timestamps: beyond ten years the
            // arithmetic would wrap and judge keys that are in grace.
            Ok(d) if d > MAX_GRACE => {
                diags.push(
                    file,
                    at(g),
                    format!(
                        "{ctx}: grace: `{}` is longer than the maximum of 3650d",
                        g.value
                    ),
                );
                Duration::ZERO
            }
            Ok(d) => d,
            Err(_) => {
                diags.push(
                    file,
                    at(g),
                    format!(
                        "{ctx}: grace: invalid duration `{}`; write it like 5m or 30s",
                        g.value
                    ),
                );
                Duration::ZERO
            }
        },
    };

    let key = raw.key.value.trim().to_string();
    if key.is_empty() {
        diags.push(file, at(&raw.key), format!("{ctx}: key must name a column"));
    }

    if raw.datasets.0.is_empty() {
        diags.push(
            file,
            Pos {
                line: doc.line_offset + 1,
                column: 1,
            },
            format!("{ctx}: at least one dataset is needed"),
        );
    }
    let mut datasets: Vec<Dataset> = Vec::new();
    for (ds_name, d) in raw.datasets.0 {
        let n = ds_name.value.clone();
        let ident_ok = n
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ident_ok {
            diags.push(file, at(&ds_name), format!("{ctx}: dataset name `{n}` must match [a-z_][a-z0-9_]* (it is a name in `assert`)"));
        } else if RESERVED_DATASET_NAMES.contains(&n.as_str()) {
            diags.push(
                file,
                at(&ds_name),
                format!(
                    "{ctx}: `{n}` is a reserved name in expressions; name the dataset otherwise"
                ),
            );
        } else if datasets.iter().any(|x| x.name == n) {
            diags.push(
                file,
                at(&ds_name),
                format!("{ctx}: dataset `{n}` is defined twice"),
            );
        }
        let source = config.source(&d.source.value);
        if source.is_none() && !config.unusable_sources.contains(&d.source.value) {
            let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            // Suggest only names that are valid; a source whose name is in error is pointed at.
            let invalid = config
                .unusable_sources
                .iter()
                .find(|u| u.eq_ignore_ascii_case(&d.source.value));
            let hint = match invalid {
                Some(u) => format!("`{u}` is defined, but its name is invalid (reported above); "),
                None => crate::expr::suggest_name(&d.source.value, &names)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default(),
            };
            diags.push(
                file,
                at(&d.source),
                format!(
                    "{ctx}: dataset `{n}`: unknown source `{}`; {hint}sources in {}: {}",
                    d.source.value,
                    config.path.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
        let query = yaml::expand_spanned(
            &d.query,
            &format!("dataset `{n}` query"),
            file,
            doc.line_offset,
            env,
            diags,
        );
        if d.query.value.trim().is_empty() {
            diags.push(
                file,
                at(&d.query),
                format!("{ctx}: dataset `{n}`: the query is empty"),
            );
        }
        let query = query.trim().trim_end_matches(';').trim_end().to_string();
        let static_cols = source.and_then(|s| static_columns(&query, s.kind));
        if let Some(cols) = &static_cols {
            if !key.is_empty() && !cols.contains(&key) {
                diags.push(
                    file,
                    at(&d.query),
                    format!("{ctx}: dataset `{n}` does not select the key column `{key}`; its query returns: {}", cols.join(", ")),
                );
            }
            if let Some(u) = &d.updated_at
                && !cols.contains(&u.value)
            {
                diags.push(
                    file,
                    at(u),
                    format!("{ctx}: dataset `{n}`: updated_at names `{}`, which the query does not return; it returns: {}", u.value, cols.join(", ")),
                );
            }
        }
        datasets.push(Dataset {
            name: n,
            source: d.source.value,
            query,
            updated_at: d.updated_at.map(|u| u.value),
            many: d.many,
            static_columns: static_cols,
            query_origin: Origin {
                file: file.to_path_buf(),
                pos: at(&d.query),
            },
        });
    }

    if let Some(g) = &raw.grace
        && !grace.is_zero()
        && !datasets.is_empty()
        && datasets.iter().all(|d| d.updated_at.is_none())
    {
        diags.push(
            file,
            at(g),
            format!(
                "{ctx}: grace needs `updated_at` on at least one dataset: it is the time a key last changed"
            ),
        );
    }

    let columns: Vec<Option<&[String]>> = datasets
        .iter()
        .map(|d| d.static_columns.as_deref())
        .collect();
    let scope = Scope {
        datasets: datasets
            .iter()
            .zip(&columns)
            .map(|(d, c)| ScopeDataset {
                name: &d.name,
                many: d.many,
                columns: *c,
            })
            .collect(),
    };

    let assertion_ast = match expr::parse(&raw.assertion.value) {
        Ok(ast) => {
            // Literal types are known now: an operation none of its operands' possible types
            // allows is an error before any key is judged.
            let errors = match expr::compile(&ast, &scope) {
                Ok(program) => expr::types::check_assertion(&program, &[]),
                Err(errors) => errors,
            };
            for e in errors {
                diags.push(
                    file,
                    yaml::pos_in_scalar(doc, &raw.assertion, e.span.start),
                    format!("{ctx}: assert: {}", e.message),
                );
            }
            ast
        }
        Err(e) => {
            diags.push(
                file,
                yaml::pos_in_scalar(doc, &raw.assertion, e.span.start),
                format!("{ctx}: assert: {}", e.message),
            );
            expr::parser::Expr {
                kind: expr::parser::ExprKind::Lit(expr::parser::Lit::Bool(true)),
                span: e.span,
            }
        }
    };

    if let Some(m) = &raw.message
        && let Err(errors) = Template::compile(&m.value, &scope)
    {
        for e in errors {
            diags.push(
                file,
                yaml::pos_in_scalar(doc, m, e.offset),
                format!("{ctx}: message: {}", e.message),
            );
        }
    }

    let mut warnings = match &raw.message {
        Some(m) => null_fields(file, doc, m, &assertion_ast, &datasets, &ctx),
        None => Vec::new(),
    };

    let impact = raw.impact.as_ref().and_then(|i| {
        let mut ok = true;
        if !valid_name(&i.unit.value) {
            diags.push(
                file,
                at(&i.unit),
                format!(
                    "{ctx}: impact.unit `{}` must match [a-z0-9_]+ (it is a metric label value), such as cents",
                    i.unit.value
                ),
            );
            ok = false;
        }
        if let Some(s) = &i.scale
            && !(s.value.is_finite() && s.value > 0.0)
        {
            diags.push(
                file,
                yaml::pos(s, doc.line_offset),
                format!("{ctx}: impact.scale must be a positive number, such as 0.01"),
            );
            ok = false;
        }
        let ast = match expr::parse(&i.value.value) {
            Ok(ast) => {
                let errors = match expr::compile(&ast, &scope) {
                    Ok(program) => expr::types::check_number(&program, &[]),
                    Err(errors) => errors,
                };
                for e in &errors {
                    diags.push(
                        file,
                        yaml::pos_in_scalar(doc, &i.value, e.span.start),
                        format!("{ctx}: impact: {}", e.message),
                    );
                }
                ok &= errors.is_empty();
                ast
            }
            Err(e) => {
                diags.push(
                    file,
                    yaml::pos_in_scalar(doc, &i.value, e.span.start),
                    format!("{ctx}: impact: {}", e.message),
                );
                return None;
            }
        };
        ok.then(|| Impact {
            value: i.value.value.clone(),
            ast,
            unit: i.unit.value.clone(),
            scale: i.scale.as_ref().map(|s| s.value),
            display_unit: i.display_unit.clone(),
            origin: Origin {
                file: file.to_path_buf(),
                pos: at(&i.value),
            },
        })
    });

    let repair = raw.repair.and_then(|r| {
        repair::Checker {
            file,
            doc,
            config,
            env,
            scope: &scope,
            ctx: &ctx,
        }
        .check(r, diags)
    });

    warnings.extend(refused_targets(file, &ctx, repair.as_ref(), config));

    let reads = incremental::Checker {
        file,
        doc,
        ctx: &ctx,
        datasets: &datasets,
    };
    let incremental = raw.incremental.and_then(|i| reads.incremental(i, diags));
    let consistent_cut = raw
        .consistent_cut
        .and_then(|c| reads.consistent_cut(c, diags));

    let tests = cases::check_cases(file, doc, raw.tests, &datasets, &key, &ctx, diags);
    let fingerprint = fingerprint(
        &key,
        grace.max(consistent_cut.unwrap_or_default()),
        &datasets,
        &raw.assertion.value,
        &repair,
    );

    Rule {
        tests,
        warnings,
        impact,
        repair,
        incremental,
        consistent_cut,
        fingerprint,
        name,
        description: raw.description.unwrap_or_default().trim().to_string(),
        severity,
        labels,
        schedule,
        grace,
        key,
        datasets,
        assertion: raw.assertion.value.clone(),
        assertion_ast,
        message: raw
            .message
            .as_ref()
            .map(|m| m.value.trim_end_matches('\n').to_string()),
        origin: Origin {
            file: file.to_path_buf(),
            pos: at(&raw.name),
        },
        assertion_origin: Origin {
            file: file.to_path_buf(),
            pos: at(&raw.assertion),
        },
        message_origin: raw.message.as_ref().map(|m| Origin {
            file: file.to_path_buf(),
            pos: at(m),
        }),
    }
}

/// See `Rule::fingerprint`.
fn fingerprint(
    key: &str,
    grace: Duration,
    datasets: &[Dataset],
    assertion: &str,
    repair: &Option<Repair>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update(s.len().to_string().as_bytes());
        h.update(b":");
        h.update(s.as_bytes());
    };
    field(key);
    field(&grace.as_micros().to_string());
    for d in datasets {
        field(&d.name);
        field(&d.source);
        field(&d.query);
        field(d.updated_at.as_deref().unwrap_or(""));
        field(if d.many { "many" } else { "one" });
    }
    field(assertion);
    field(&format!("{repair:?}"));
    crate::value::hex(&h.finalize()[..8])
}

/// Warnings for HTTP actions whose URL names, literally, an address `outbound.allow` refuses:
/// every request of theirs would fail.
fn refused_targets(
    file: &Path,
    ctx: &str,
    repair: Option<&Repair>,
    config: &Config,
) -> Vec<Diagnostic> {
    let mut warnings = Diagnostics::default();
    for action in repair.map(|r| r.actions.as_slice()).unwrap_or_default() {
        if let ActionKind::Http { url, .. } | ActionKind::Publish { url, .. } = &action.kind {
            let literal = url.split("{{").next().unwrap_or_default();
            if let Some(why) = crate::config::literal_refusal(literal, &config.outbound_allow) {
                warnings.push(
                    file,
                    Pos::default(),
                    format!(
                        "{ctx}: repair action `{}`: its requests will be {why}",
                        action.name
                    ),
                );
            }
        }
    }
    warnings.0
}

/// Warnings for message fields that read a dataset a violation may have no row for.
fn null_fields(
    file: &Path,
    doc: &Document<'_>,
    message: &Spanned<String>,
    assertion: &expr::parser::Expr,
    datasets: &[Dataset],
    ctx: &str,
) -> Vec<Diagnostic> {
    let singles: Vec<&str> = datasets
        .iter()
        .filter(|d| !d.many)
        .map(|d| d.name.as_str())
        .collect();
    let sure = expr::nullness::rows_on_violation(assertion, &singles);
    let mut warnings = Diagnostics::default();
    for (e, offset) in expr::template_exprs(&message.value) {
        for m in expr::nullness::unguarded_fields(&e, &singles, &sure) {
            warnings.push(
                file,
                yaml::pos_in_scalar(doc, message, offset + m.span.start),
                format!(
                    "{ctx}: message reads `{d}.{f}`, but a violation does not need dataset `{d}` to have a row, and then it renders as null; guard it (`{d} == null ? 'none' : string({d}.{f})`) or check it in the assertion",
                    d = m.dataset,
                    f = m.field
                ),
            );
        }
    }
    warnings.0
}

#[cfg(test)]
mod tests;
