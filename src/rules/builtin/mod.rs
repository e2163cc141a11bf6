//! Built-in checks (`check:` in a rule document): `freshness`, `row_count`, `unique`,
//! `not_null` and `matches`, the checks every shop writes. Each one expands, when its rule
//! loads, into the key, datasets, assertion and message a person would have written (README:
//! Built-in checks shows each expansion), and the rule is then validated and run like any
//! other: across databases, with grace, history, alerts, repairs and `tests:` fixtures (which
//! give the rows the expanded queries return).
//!
//! Expanding is pure: the check's fields become text, and names that reach SQL or an
//! expression must be plain identifiers, so the generated SQL and assertion cannot be
//! anything but what the README shows. Every problem is reported where it is written.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{RawDataset, RawRule};
use crate::diag::{Diagnostics, Pos};
use crate::yaml::{self, Document, OrderedMap};

/// `check:` as written: exactly one of the kinds.
#[derive(Debug, Deserialize)]
pub(super) struct RawCheck {
    freshness: Option<Spanned<RawFreshness>>,
    row_count: Option<Spanned<RawRowCount>>,
    unique: Option<Spanned<RawUnique>>,
    not_null: Option<Spanned<RawNotNull>>,
    matches: Option<Spanned<RawMatches>>,
}

const KINDS: &str = "freshness, row_count, unique, not_null, matches";

/// Where a dataset's rows come from: a source and a table, or a source and a query.
#[derive(Debug, Deserialize)]
struct RawFreshness {
    source: Spanned<String>,
    table: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    dataset: Option<Spanned<String>>,
    column: Option<Spanned<String>>,
    max_age: Spanned<String>,
}

#[derive(Debug, Deserialize)]
struct RawRowCount {
    source: Spanned<String>,
    table: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    dataset: Option<Spanned<String>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
    max_drop: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawUnique {
    source: Spanned<String>,
    table: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    dataset: Option<Spanned<String>>,
    column: Spanned<String>,
    updated_at: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawNotNull {
    source: Spanned<String>,
    table: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    dataset: Option<Spanned<String>>,
    key: Spanned<String>,
    columns: Vec<Spanned<String>>,
    updated_at: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawMatches {
    key: Spanned<String>,
    datasets: OrderedMap<RawSide>,
    fields: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawSide {
    source: Spanned<String>,
    table: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    updated_at: Option<Spanned<String>>,
}

/// The shape of a `check:` section, for finding unknown fields.
pub(super) fn shape() -> yaml::Shape {
    use yaml::Shape;
    Shape::of::<RawCheck>(vec![
        ("freshness", Shape::of::<RawFreshness>(vec![])),
        ("row_count", Shape::of::<RawRowCount>(vec![])),
        ("unique", Shape::of::<RawUnique>(vec![])),
        ("not_null", Shape::of::<RawNotNull>(vec![])),
        (
            "matches",
            Shape::of::<RawMatches>(vec![(
                "datasets",
                Shape::MapOf(Box::new(Shape::of::<RawSide>(vec![]))),
            )]),
        ),
    ])
}

/// A rule's key and assertion, as written or as a built-in check expands them.
pub(super) struct Core {
    pub key: Spanned<String>,
    pub assertion: Spanned<String>,
    /// The check's kind, when the rule is a built-in check: its generated text is then
    /// located at the check's fields, not at offsets within them.
    pub check: Option<&'static str>,
    /// Columns the generated assertion and message read, per dataset name: each must be
    /// among the columns the dataset's query returns, reported where the column is named.
    pub reads: Vec<(String, Spanned<String>)>,
    /// The dataset and column the rule measures from run to run (`Rule::measure`).
    pub measure: Option<(String, String)>,
}

/// Where the document being expanded is, for messages.
pub(super) struct Site<'a> {
    pub file: &'a Path,
    pub doc: &'a Document<'a>,
}

impl Site<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> Pos {
        yaml::pos(s, self.doc.line_offset)
    }

    fn rule_start(&self) -> Pos {
        Pos {
            line: self.doc.line_offset + 1,
            column: 1,
        }
    }
}

/// The key and assertion of a rule: from `check:` when it has one (filling its datasets and,
/// unless it has its own, its message), else as written. `None` when they cannot be had;
/// the reason is in `diags`.
pub(super) fn core(site: &Site<'_>, raw: &mut RawRule, diags: &mut Diagnostics) -> Option<Core> {
    let ctx = format!("rule `{}`", raw.name.value);
    let Some(check) = raw.check.take() else {
        return match (raw.key.take(), raw.assertion.take()) {
            (Some(key), Some(assertion)) => Some(Core {
                key,
                assertion,
                check: None,
                reads: Vec::new(),
                measure: None,
            }),
            (key, _) => {
                let missing = if key.is_none() { "key" } else { "assert" };
                diags.push(
                    site.file,
                    site.rule_start(),
                    format!("missing field `{missing}` (or a built-in `check:`)"),
                );
                None
            }
        };
    };
    // What the check writes, the rule may not write too.
    let mut written = Vec::new();
    if let Some(k) = &raw.key {
        written.push(("key", site.at(k)));
    }
    if let Some(a) = &raw.assertion {
        written.push(("assert", site.at(a)));
    }
    if let Some((name, _)) = raw.datasets.0.first() {
        written.push(("datasets", site.at(name)));
    }
    for (field, pos) in &written {
        diags.push(
            site.file,
            *pos,
            format!("{ctx}: `{field}` comes from `check:`; a rule has one or the other"),
        );
    }
    let expansion = expand(site, &ctx, check, diags)?;
    if !written.is_empty() {
        return None;
    }
    raw.datasets = expansion.datasets;
    if raw.message.is_none() {
        raw.message = Some(expansion.message);
    }
    Some(Core {
        key: expansion.key,
        assertion: expansion.assertion,
        check: Some(expansion.kind),
        reads: expansion.reads,
        measure: expansion.measure,
    })
}

/// What a check expands to.
struct Expansion {
    kind: &'static str,
    key: Spanned<String>,
    datasets: OrderedMap<RawDataset>,
    assertion: Spanned<String>,
    message: Spanned<String>,
    reads: Vec<(String, Spanned<String>)>,
    measure: Option<(String, String)>,
}

/// Generated text located where `at` is written.
fn text<T>(at: &Spanned<T>, value: impl Into<String>) -> Spanned<String> {
    Spanned {
        value: value.into(),
        referenced: at.referenced,
        defined: at.defined,
    }
}

fn expand(
    site: &Site<'_>,
    ctx: &str,
    check: Spanned<RawCheck>,
    diags: &mut Diagnostics,
) -> Option<Expansion> {
    let check_at = site.at(&check);
    let c = check.value;
    let given = [
        c.freshness.is_some(),
        c.row_count.is_some(),
        c.unique.is_some(),
        c.not_null.is_some(),
        c.matches.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        let how = if given == 0 { "none" } else { "more than one" };
        diags.push(
            site.file,
            check_at,
            format!("{ctx}: check: names {how}; give exactly one of {KINDS}"),
        );
        return None;
    }
    let mut x = Expander {
        site,
        ctx,
        diags,
        failed: false,
    };
    let expansion = if let Some(f) = c.freshness {
        x.freshness(f)
    } else if let Some(r) = c.row_count {
        x.row_count(r)
    } else if let Some(u) = c.unique {
        x.unique(u)
    } else if let Some(n) = c.not_null {
        x.not_null(n)
    } else {
        x.matches(c.matches?)
    };
    if x.failed { None } else { expansion }
}

/// Expands one check, recording problems as it goes.
struct Expander<'a, 'd> {
    site: &'a Site<'a>,
    ctx: &'a str,
    diags: &'d mut Diagnostics,
    failed: bool,
}

/// Names expressions reserve: a column so named cannot be read as `dataset.column`.
const RESERVED: [&str; 8] = ["now", "key", "null", "true", "false", "in", "as", "if"];

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn plain(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl Expander<'_, '_> {
    fn fail(&mut self, at: Pos, message: String) {
        self.diags.push(self.site.file, at, message);
        self.failed = true;
    }

    /// A column name that goes into SQL and into the assertion as it is.
    fn column(&mut self, kind: &str, field: &str, c: &Spanned<String>) -> String {
        let name = c.value.trim();
        if !plain(name) || RESERVED.contains(&name) {
            self.fail(
                self.site.at(c),
                format!(
                    "{}: check: {kind}.{field}: `{name}` is not a plain column name ([A-Za-z_][A-Za-z0-9_]*, not a reserved word); give a `query:` that names it otherwise",
                    self.ctx
                ),
            );
        }
        name.to_string()
    }

    /// The FROM clause of a table or a query (exactly one of them), and the dataset's
    /// default name (the table's, else the source's).
    fn from(
        &mut self,
        kind: &str,
        at: Pos,
        source: &Spanned<String>,
        table: &Option<Spanned<String>>,
        query: &Option<Spanned<String>>,
    ) -> Option<Reading> {
        match (table, query) {
            (Some(t), None) => {
                let name = t.value.trim();
                let parts: Vec<&str> = name.split('.').collect();
                if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
                    self.fail(
                        self.site.at(t),
                        format!(
                            "{}: check: {kind}.table: `{name}` is not a plain table name (table or schema.table); give a `query:` instead",
                            self.ctx
                        ),
                    );
                    return None;
                }
                Some(Reading {
                    rows: Rows::Table(name.to_string()),
                    default_name: parts.last().unwrap_or(&name).to_ascii_lowercase(),
                })
            }
            (None, Some(q)) => Some(Reading {
                rows: Rows::Query(q.value.trim().trim_end_matches(';').trim_end().to_string()),
                default_name: source.value.clone(),
            }),
            (t, _) => {
                let how = if t.is_some() { "both" } else { "neither" };
                self.fail(
                    at,
                    format!(
                        "{}: check: {kind}: gives {how} `table` and `query`; give one",
                        self.ctx
                    ),
                );
                None
            }
        }
    }

    /// The dataset's name: `dataset:`, which goes into the generated SQL as a literal and
    /// into the assertion as a name, so it must be one (`[a-z_][a-z0-9_]*`); else the default.
    fn dataset_name(&mut self, from: &Reading, dataset: &Option<Spanned<String>>) -> String {
        let Some(d) = dataset else {
            return from.default_name.clone();
        };
        let name = d.value.trim();
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            self.fail(
                self.site.at(d),
                format!(
                    "{}: check: dataset `{name}` must match [a-z_][a-z0-9_]* (it is a name in `assert`)",
                    self.ctx
                ),
            );
        }
        name.to_string()
    }

    fn freshness(&mut self, f: Spanned<RawFreshness>) -> Option<Expansion> {
        let at = self.site.at(&f);
        let r = f.value;
        let from = self.from("freshness", at, &r.source, &r.table, &r.query)?;
        let d = self.dataset_name(&from, &r.dataset);
        let column = match &r.column {
            Some(c) => self.column("freshness", "column", c),
            None => "updated_at".to_string(),
        };
        let max_age = r.max_age.value.trim();
        let secs = match humantime::parse_duration(max_age) {
            Ok(age) if !age.is_zero() => age.as_secs().max(1),
            _ => {
                self.fail(
                    self.site.at(&r.max_age),
                    format!(
                        "{}: check: freshness.max_age: invalid duration `{max_age}`; write it like 2h or 1d",
                        self.ctx
                    ),
                );
                return None;
            }
        };
        let sql = aggregate(&d, &format!("MAX({column}) AS newest"), &from);
        Some(Expansion {
            kind: "freshness",
            key: text(&r.source, "dataset"),
            datasets: one(&d, &r.source, &r.query, &r.table, sql, None, false),
            assertion: text(
                &r.max_age,
                format!("{d}.newest != null && {d}.newest >= now - duration('{secs}s')"),
            ),
            message: text(
                &r.max_age,
                format!(
                    "{{{{key}}}}: {{{{{d}.newest == null ? 'no rows' : 'the newest {column} is ' + string({d}.newest)}}}}, older than {max_age}"
                ),
            ),
            reads: Vec::new(),
            measure: None,
        })
    }

    fn row_count(&mut self, c: Spanned<RawRowCount>) -> Option<Expansion> {
        let at = self.site.at(&c);
        let spot = text(&c, "");
        let r = c.value;
        let from = self.from("row_count", at, &r.source, &r.table, &r.query)?;
        let d = self.dataset_name(&from, &r.dataset);
        let n = format!("{d}.row_count");
        let (min, max) = (
            r.min.as_ref().map(|m| m.value),
            r.max.as_ref().map(|m| m.value),
        );
        let mut tests = Vec::new();
        let mut says = format!("{{{{key}}}}: {{{{{n}}}}} rows");
        let bounds = match (min, max) {
            (Some(lo), Some(hi)) if lo > hi => {
                self.fail(
                    self.site.at(r.min.as_ref()?),
                    format!("{}: check: row_count: min {lo} is above max {hi}", self.ctx),
                );
                return None;
            }
            (Some(lo), Some(hi)) => Some((
                format!("{n} >= {lo} && {n} <= {hi}"),
                format!("between {lo} and {hi}"),
            )),
            (Some(lo), None) => Some((format!("{n} >= {lo}"), format!("at least {lo}"))),
            (None, Some(hi)) => Some((format!("{n} <= {hi}"), format!("at most {hi}"))),
            (None, None) => None,
        };
        if let Some((test, expected)) = bounds {
            says.push_str(&format!("{{{{{test} ? '' : ', expected {expected}'}}}}"));
            tests.push(test);
        }
        let mut measure = None;
        if let Some(drop) = &r.max_drop {
            // Percent with up to two decimals, compared in integers: row_count * 10000 >=
            // previous * (10000 - 100 * drop), exact for counts up to 9 * 10^14.
            let written = drop.value.trim();
            let basis = written
                .strip_suffix('%')
                .unwrap_or(written)
                .trim()
                .parse::<rust_decimal::Decimal>()
                .ok()
                .filter(|p| {
                    *p > rust_decimal::Decimal::ZERO && *p <= rust_decimal::Decimal::ONE_HUNDRED
                })
                .and_then(|p| {
                    (p * rust_decimal::Decimal::ONE_HUNDRED)
                        .normalize()
                        .to_string()
                        .parse::<i64>()
                        .ok()
                });
            let Some(basis) = basis else {
                self.fail(
                    self.site.at(drop),
                    format!(
                        "{}: check: row_count.max_drop: `{written}` is not a percentage above 0 and at most 100 (with at most two decimals), like 20%",
                        self.ctx
                    ),
                );
                return None;
            };
            if d == "previous" {
                self.fail(
                    self.site.at(drop),
                    format!(
                        "{}: check: row_count: with max_drop the dataset cannot be named `previous` (that is the previous run's count); name it with `dataset:`",
                        self.ctx
                    ),
                );
                return None;
            }
            let kept = 10_000 - basis;
            let held = format!("{n} * 10000 >= previous * {kept}");
            says.push_str(&format!(
                "{{{{previous == null || {held} ? '' : ', down more than {written} from ' + string(previous) + ' at the previous run'}}}}"
            ));
            tests.push(format!("(previous == null || {held})"));
            measure = Some((d.clone(), "row_count".to_string()));
        }
        if tests.is_empty() {
            self.fail(
                at,
                format!(
                    "{}: check: row_count: give `min`, `max`, `max_drop` or several",
                    self.ctx
                ),
            );
            return None;
        }
        let sql = aggregate(&d, "COUNT(*) AS row_count", &from);
        Some(Expansion {
            kind: "row_count",
            key: text(&r.source, "dataset"),
            datasets: one(&d, &r.source, &r.query, &r.table, sql, None, false),
            assertion: text(&spot, tests.join(" && ")),
            message: text(&spot, says),
            reads: Vec::new(),
            measure,
        })
    }

    fn unique(&mut self, u: Spanned<RawUnique>) -> Option<Expansion> {
        let at = self.site.at(&u);
        let r = u.value;
        let column = self.column("unique", "column", &r.column);
        let from = self.from("unique", at, &r.source, &r.table, &r.query)?;
        let d = self.dataset_name(&from, &r.dataset);
        let updated = self.updated_at("unique", &r.updated_at);
        let sql = select(
            &from,
            std::iter::once(column.as_str()).chain(updated.as_deref()),
        );
        Some(Expansion {
            kind: "unique",
            key: r.column.clone(),
            datasets: one(&d, &r.source, &r.query, &r.table, sql, r.updated_at, true),
            assertion: text(&r.column, format!("size({d}) <= 1")),
            message: text(
                &r.column,
                format!("{{{{key}}}}: {column} appears {{{{size({d})}}}} times in {d}"),
            ),
            reads: Vec::new(),
            measure: None,
        })
    }

    fn not_null(&mut self, n: Spanned<RawNotNull>) -> Option<Expansion> {
        let at = self.site.at(&n);
        let r = n.value;
        let key = self.column("not_null", "key", &r.key);
        let columns: Vec<String> = r
            .columns
            .iter()
            .map(|c| self.column("not_null", "columns", c))
            .collect();
        if columns.is_empty() {
            self.fail(
                at,
                format!("{}: check: not_null: `columns` names no column", self.ctx),
            );
        }
        if let Some(c) = r.columns.iter().find(|c| c.value.trim() == key) {
            self.fail(
                self.site.at(c),
                format!(
                    "{}: check: not_null: `{key}` is the key; a row whose key is NULL is never judged (every run counts them as null keys)",
                    self.ctx
                ),
            );
        }
        let from = self.from("not_null", at, &r.source, &r.table, &r.query)?;
        let d = self.dataset_name(&from, &r.dataset);
        let updated = self.updated_at("not_null", &r.updated_at);
        let sql = select(
            &from,
            std::iter::once(key.as_str())
                .chain(columns.iter().map(String::as_str))
                .chain(updated.as_deref()),
        );
        let all = columns
            .iter()
            .map(|c| format!("r.{c} != null"))
            .collect::<Vec<_>>()
            .join(" && ");
        let which: String = columns
            .iter()
            .map(|c| format!("{{{{{d}.exists(r, r.{c} == null) ? ' {c}' : ''}}}}"))
            .collect();
        let reads = r
            .columns
            .iter()
            .map(|c| (d.clone(), text(c, c.value.trim())))
            .collect();
        Some(Expansion {
            kind: "not_null",
            key: r.key.clone(),
            datasets: one(&d, &r.source, &r.query, &r.table, sql, r.updated_at, true),
            assertion: text(&r.key, format!("{d}.all(r, {all})")),
            message: text(&r.key, format!("{{{{key}}}}: NULL in{which}")),
            reads,
            measure: None,
        })
    }

    fn matches(&mut self, m: Spanned<RawMatches>) -> Option<Expansion> {
        let at = self.site.at(&m);
        let r = m.value;
        let key = self.column("matches", "key", &r.key);
        let fields: Vec<String> = r
            .fields
            .iter()
            .map(|f| self.column("matches", "fields", f))
            .collect();
        if r.datasets.0.len() != 2 {
            self.fail(
                at,
                format!(
                    "{}: check: matches: `datasets` names {} dataset{}; give exactly two",
                    self.ctx,
                    r.datasets.0.len(),
                    if r.datasets.0.len() == 1 { "" } else { "s" }
                ),
            );
            return None;
        }
        let mut datasets = OrderedMap(Vec::new());
        let mut reads = Vec::new();
        let mut names = Vec::new();
        for (name, side) in r.datasets.0 {
            let from = self.from(
                "matches",
                self.site.at(&name),
                &side.source,
                &side.table,
                &side.query,
            )?;
            let updated = self.updated_at("matches", &side.updated_at);
            let sql = select(
                &from,
                std::iter::once(key.as_str())
                    .chain(fields.iter().map(String::as_str))
                    .chain(updated.as_deref()),
            );
            reads.extend(
                r.fields
                    .iter()
                    .map(|f| (name.value.clone(), text(f, f.value.trim()))),
            );
            names.push(name.value.clone());
            datasets.0.push((
                name,
                RawDataset {
                    query: text(side.query.as_ref().or(side.table.as_ref())?, sql),
                    source: side.source,
                    updated_at: side.updated_at,
                    many: false,
                },
            ));
        }
        let (a, b) = (&names[0], &names[1]);
        let same: String = fields
            .iter()
            .map(|f| format!(" && {a}.{f} == {b}.{f}"))
            .collect();
        let differ: String = fields
            .iter()
            .map(|f| {
                format!(
                    "{{{{{a} != null && {b} != null && {a}.{f} != {b}.{f} ? ' {f} differs ({a}: ' + string({a}.{f}) + ', {b}: ' + string({b}.{f}) + ')' : ''}}}}"
                )
            })
            .collect();
        Some(Expansion {
            kind: "matches",
            key: r.key.clone(),
            datasets,
            assertion: text(&r.key, format!("{a} != null && {b} != null{same}")),
            message: text(
                &r.key,
                format!(
                    "{{{{key}}}}:{{{{{a} == null ? ' not in {a}' : ''}}}}{{{{{b} == null ? ' not in {b}' : ''}}}}{differ}"
                ),
            ),
            reads,
            measure: None,
        })
    }

    fn updated_at(&mut self, kind: &str, u: &Option<Spanned<String>>) -> Option<String> {
        u.as_ref().map(|u| self.column(kind, "updated_at", u))
    }
}

/// Where a check reads from, and the name its dataset takes unless `dataset:` says.
struct Reading {
    rows: Rows,
    default_name: String,
}

/// A table (a plain name), or the user's query.
enum Rows {
    Table(String),
    Query(String),
}

impl Reading {
    /// `table`, or the query as a derived table.
    fn clause(&self) -> String {
        match &self.rows {
            Rows::Table(t) => t.clone(),
            Rows::Query(q) => format!("({q}) AS invariantd_rows"),
        }
    }
}

/// One row for the whole dataset, keyed by the dataset's name.
fn aggregate(dataset: &str, expr: &str, from: &Reading) -> String {
    format!(
        "SELECT '{dataset}' AS dataset, {expr} FROM {}",
        from.clause()
    )
}

/// The columns, from a table; a query is used as written (it must return them).
fn select<'a>(from: &Reading, columns: impl Iterator<Item = &'a str>) -> String {
    match &from.rows {
        Rows::Table(t) => {
            let mut cols: Vec<&str> = Vec::new();
            for c in columns {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
            format!("SELECT {} FROM {t}", cols.join(", "))
        }
        Rows::Query(q) => q.clone(),
    }
}

/// The one dataset of a single-dataset check.
fn one(
    name: &str,
    source: &Spanned<String>,
    query: &Option<Spanned<String>>,
    table: &Option<Spanned<String>>,
    sql: String,
    updated_at: Option<Spanned<String>>,
    many: bool,
) -> OrderedMap<RawDataset> {
    let at = query.as_ref().or(table.as_ref()).unwrap_or(source);
    OrderedMap(vec![(
        text(source, name),
        RawDataset {
            source: source.clone(),
            query: text(at, sql),
            updated_at,
            many,
        },
    )])
}

#[cfg(test)]
mod tests;
