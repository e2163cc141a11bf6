//! Validating one rule document: every field checked where it is written, each concern in a
//! function of its own (severity, labels, timing, datasets, the assertion, impact), the
//! repair, incremental reads and test cases in their own files, and the rule's fingerprint.

use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::builtin::Core;
use super::repair::{self, Repair};
use super::{
    DEFAULT_EVERY, Dataset, Impact, MAX_GRACE, Origin, RESERVED_DATASET_NAMES, RawDataset, RawRule,
    Rule, Schedule, Severity, cases, incremental, static_columns,
};
use crate::config::{Config, valid_name};
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::expr::{self, Scope, ScopeDataset, Template};
use crate::yaml::{self, Document, OrderedMap};

/// Where the rule being validated is written, and how messages name it.
#[derive(Clone, Copy)]
struct Site<'a> {
    file: &'a Path,
    doc: &'a Document<'a>,
    ctx: &'a str,
    /// The built-in check that wrote the key, datasets, assertion and message, if any.
    check: Option<&'static str>,
}

impl Site<'_> {
    /// Where byte `offset` of a written text is; generated text is located at the check's
    /// field it came from.
    fn in_text(&self, s: &Spanned<String>, offset: usize) -> Pos {
        match self.check {
            Some(_) => yaml::pos(s, self.doc.line_offset),
            None => yaml::pos_in_scalar(self.doc, s, offset),
        }
    }

    /// How messages name the assertion.
    fn assert_name(&self) -> String {
        match self.check {
            Some(kind) => format!("check: {kind}: the generated assertion"),
            None => "assert".to_string(),
        }
    }
}

/// Each column a built-in check reads is one its dataset's query returns (where the SQL
/// text says what it returns), reported where the check names it.
fn reads(
    site: &Site<'_>,
    reads: &[(String, Spanned<String>)],
    datasets: &[Dataset],
    diags: &mut Diagnostics,
) -> bool {
    let mut unread = false;
    for (name, column) in reads {
        let cols = datasets
            .iter()
            .find(|d| &d.name == name)
            .and_then(|d| d.static_columns.as_ref());
        if let Some(cols) = cols
            && !cols.contains(&column.value)
        {
            diags.push(
                site.file,
                yaml::pos(column, site.doc.line_offset),
                format!(
                    "{}: check: dataset `{name}` does not return `{}`; its query returns: {}",
                    site.ctx,
                    column.value,
                    cols.join(", ")
                ),
            );
            unread = true;
        }
    }
    unread
}

pub(super) fn validate(
    file: &Path,
    doc: &Document<'_>,
    mut raw: RawRule,
    core: Core,
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
    let site = Site {
        file,
        doc,
        ctx: &ctx,
        check: core.check,
    };

    let severity = severity(&site, &raw, diags);
    let labels = labels(&site, std::mem::take(&mut raw.labels), diags);
    let schedule = schedule(&site, &raw, diags);
    let grace = grace(&site, &raw, diags);
    let key = core.key.value.trim().to_string();
    if key.is_empty() {
        diags.push(
            file,
            at(&core.key),
            format!("{ctx}: key must name a column"),
        );
    }

    let datasets = datasets(
        &site,
        std::mem::take(&mut raw.datasets),
        &key,
        config,
        env,
        diags,
    );
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
        previous: core.measure.is_some(),
    };

    // A column a check reads that is not there is reported once, where the check names it;
    // the generated assertion and message would only repeat it.
    let unread = reads(&site, &core.reads, &datasets, diags);
    let mut generated = Diagnostics::default();
    let out = if unread { &mut generated } else { &mut *diags };
    let assertion_ast = assertion(&site, &core.assertion, &scope, out);
    if let Some(m) = &raw.message
        && let Err(errors) = Template::compile(&m.value, &scope)
    {
        for e in errors {
            out.push(
                file,
                site.in_text(m, e.offset),
                format!("{ctx}: message: {}", e.message),
            );
        }
    }

    let mut warnings = match &raw.message {
        Some(m) => null_fields(file, doc, m, &assertion_ast, &datasets, &ctx),
        None => Vec::new(),
    };

    let impact = impact(&site, &raw, &scope, diags);
    let limits = super::thresholds::Site {
        file,
        doc,
        ctx: &ctx,
        has_impact: raw.impact.is_some(),
    };
    let thresholds =
        super::thresholds::check(&limits, raw.warn_if.take(), raw.error_if.take(), diags);
    let repair = raw.repair.and_then(|r| {
        let checker = crate::actions::Checker {
            file,
            doc,
            config,
            env,
            scope: &scope,
            ctx: &ctx,
        };
        repair::check(&checker, r, diags)
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
    let partition = raw.partition.and_then(|p| reads.partition(p, diags));

    let tests = cases::check_cases(
        file,
        doc,
        raw.tests,
        &datasets,
        &key,
        (&ctx, core.measure.is_some()),
        diags,
    );
    let fingerprint = fingerprint(
        &key,
        grace.max(consistent_cut.unwrap_or_default()),
        &datasets,
        &core.assertion.value,
        &repair,
    );

    let measure = core.measure.as_ref().and_then(|(dataset, column)| {
        Some(super::Measure {
            dataset: datasets.iter().position(|d| d.name == *dataset)?,
            column: column.clone(),
        })
    });
    Rule {
        thresholds,
        measure,
        tests,
        warnings,
        impact,
        repair,
        incremental,
        consistent_cut,
        partition,
        fingerprint,
        name,
        description: raw.description.unwrap_or_default().trim().to_string(),
        severity,
        labels,
        schedule,
        grace,
        key,
        datasets,
        assertion: core.assertion.value.clone(),
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
            pos: at(&core.assertion),
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
        if let Some(url) = action.kind.target_url() {
            let literal = url.split("{{").next().unwrap_or_default();
            if let Some(why) = crate::outbound::literal_refusal(literal, &config.outbound_allow) {
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

fn severity(site: &Site<'_>, raw: &RawRule, diags: &mut Diagnostics) -> Severity {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    match &raw.severity {
        None => Severity::Warning,
        Some(s) => match Severity::parse(&s.value) {
            Some(severity) => severity,
            None => {
                let other = &s.value;
                diags.push(
                    file,
                    at(s),
                    format!("{ctx}: severity `{other}` is not one of critical, warning, info"),
                );
                Severity::Warning
            }
        },
    }
}

fn labels(
    site: &Site<'_>,
    labels_raw: OrderedMap<String>,
    diags: &mut Diagnostics,
) -> Vec<(String, String)> {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    let mut labels = Vec::new();
    for (k, v) in labels_raw.0 {
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
    labels
}

fn schedule(site: &Site<'_>, raw: &RawRule, diags: &mut Diagnostics) -> Schedule {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    match (&raw.schedule, &raw.every) {
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
    }
}

fn grace(site: &Site<'_>, raw: &RawRule, diags: &mut Diagnostics) -> Duration {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    match &raw.grace {
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
    }
}

fn datasets(
    site: &Site<'_>,
    raw_datasets: OrderedMap<RawDataset>,
    key: &str,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Vec<Dataset> {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    if raw_datasets.0.is_empty() {
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
    for (ds_name, d) in raw_datasets.0 {
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
        // With an unknown source, its columns are still read from the SQL text (in the
        // dialect of the source it was probably meant to be, else ANSI's), so that the
        // rule's other errors are not hidden behind that one.
        let kind = source.map(|s| s.kind).unwrap_or_else(|| {
            let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            crate::expr::suggest_name(&d.source.value, &names)
                .and_then(|s| config.source(s))
                .map_or(crate::config::SourceKind::Postgres, |s| s.kind)
        });
        let static_cols = static_columns(&query, kind);
        if let Some(cols) = &static_cols {
            if !key.is_empty() && !cols.iter().any(|c| c == key) {
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
    datasets
}

fn assertion(
    site: &Site<'_>,
    written: &Spanned<String>,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> expr::parser::Expr {
    let Site { file, ctx, .. } = *site;
    match expr::parse(&written.value) {
        Ok(ast) => {
            // Literal types are known now: an operation none of its operands' possible types
            // allows is an error before any key is judged.
            let errors = match expr::compile(&ast, scope) {
                Ok(program) => expr::types::check_assertion(&program, &[]),
                Err(errors) => errors,
            };
            for e in errors {
                diags.push(
                    file,
                    site.in_text(written, e.span.start),
                    format!("{ctx}: {}: {}", site.assert_name(), e.message),
                );
            }
            ast
        }
        Err(e) => {
            diags.push(
                file,
                site.in_text(written, e.span.start),
                format!("{ctx}: {}: {}", site.assert_name(), e.message),
            );
            expr::parser::Expr {
                kind: expr::parser::ExprKind::Lit(expr::parser::Lit::Bool(true)),
                span: e.span,
            }
        }
    }
}

fn impact(
    site: &Site<'_>,
    raw: &RawRule,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Impact> {
    let Site { file, doc, ctx, .. } = *site;
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    raw.impact.as_ref().and_then(|i| {
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
                let errors = match expr::compile(&ast, scope) {
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
    })
}
