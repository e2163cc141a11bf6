//! A rule's unit tests (`tests:` in its document): named cases, each with fixture rows per
//! dataset, an optional `now`, and the expected result. Loading checks that fixtures name only
//! the rule's datasets and the columns its queries return, like everything else in a rule,
//! with file, line and column. `invariantd test` runs the cases through the engine in memory.
//!
//! Fixture values keep their YAML type, with one rule for numbers: an integer is an `int`; a
//! number with a fraction or an exponent is an exact `decimal` read from its text, never
//! through a float (`10.10` stays `10.10`). Strings are text — and, as with SQLite sources,
//! RFC 3339 text is read as a timestamp wherever one is expected.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::{Dataset, Origin};
use crate::diag::Diagnostics;
use crate::value::Value;
use crate::yaml::{self, Document, OrderedMap};

/// When a case does not say `now`: a fixed instant, so a case means the same on every day.
pub const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";

#[derive(Debug, Deserialize)]
pub(super) struct RawCase {
    name: Spanned<String>,
    now: Option<Spanned<String>>,
    /// What the rule measured at the run before (a `row_count` check with `max_drop`).
    previous: Option<Spanned<i64>>,
    #[serde(default)]
    given: OrderedMap<Vec<OrderedMap<Spanned<Scalar>>>>,
    expect: Spanned<RawExpect>,
}

/// A fixture cell as YAML typed it.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// A number with a fraction or exponent: its exact value is read from the text.
    Fraction,
    Text(String),
    /// A list, a mapping, or an integer beyond 64 bits: not a column value.
    Unsupported(&'static str),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column value")
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(u).map_or(
                    Scalar::Unsupported("an integer beyond 64 bits"),
                    Scalar::Int,
                ))
            }
            fn visit_i128<E>(self, _: i128) -> Result<Scalar, E> {
                Ok(Scalar::Unsupported("an integer beyond 64 bits"))
            }
            fn visit_u128<E>(self, _: u128) -> Result<Scalar, E> {
                Ok(Scalar::Unsupported("an integer beyond 64 bits"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Fraction)
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Unsupported("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Unsupported("a mapping"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `expect:` as written: `pass`, or `{ violations: [KEY | {key, message}] }`.
#[derive(Debug)]
enum RawExpect {
    Pass,
    Violations(Vec<ExpectedViolation>),
    Invalid(String),
}

impl<'de> Deserialize<'de> for RawExpect {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<RawExpect, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawExpect;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`pass` or `{ violations: [KEYS] }`")
            }
            fn visit_str<E>(self, s: &str) -> Result<RawExpect, E> {
                Ok(if s == "pass" {
                    RawExpect::Pass
                } else {
                    RawExpect::Invalid(format!(
                        "expect: `{s}` is not `pass` or `{{ violations: [KEYS] }}`"
                    ))
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawExpect, A::Error> {
                let mut out = None;
                while let Some(field) = map.next_key::<String>()? {
                    if field == "violations" {
                        out = Some(map.next_value::<Vec<ExpectedViolation>>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                        return Ok(RawExpect::Invalid(format!(
                            "expect: unknown field `{field}`; expected `violations`"
                        )));
                    }
                }
                Ok(out.map_or(
                    RawExpect::Invalid("expect: `violations` is missing".into()),
                    RawExpect::Violations,
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// A violation a case expects: its key (as text), and optionally its exact message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedViolation {
    pub key: String,
    pub message: Option<String>,
}

impl<'de> Deserialize<'de> for ExpectedViolation {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<ExpectedViolation, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectedViolation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key, or `{ key: KEY, message: TEXT }`")
            }
            fn visit_i64<E>(self, i: i64) -> Result<ExpectedViolation, E> {
                Ok(ExpectedViolation {
                    key: i.to_string(),
                    message: None,
                })
            }
            fn visit_u64<E>(self, u: u64) -> Result<ExpectedViolation, E> {
                Ok(ExpectedViolation {
                    key: u.to_string(),
                    message: None,
                })
            }
            fn visit_str<E>(self, s: &str) -> Result<ExpectedViolation, E> {
                Ok(ExpectedViolation {
                    key: s.to_string(),
                    message: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ExpectedViolation, A::Error> {
                let mut key = None;
                let mut message = None;
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" => key = Some(map.next_value::<ExpectedViolation>()?.key),
                        "message" => message = Some(map.next_value::<String>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["key", "message"]));
                        }
                    }
                }
                let key = key.ok_or_else(|| de::Error::missing_field("key"))?;
                Ok(ExpectedViolation { key, message })
            }
        }
        d.deserialize_any(V)
    }
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No violation and no key that could not be judged.
    Pass,
    /// Exactly these violations (in any order).
    Violations(Vec<ExpectedViolation>),
}

/// One dataset's rows, as values in the order of `columns`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixture {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// A validated case.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub origin: Origin,
    pub now: DateTime<Utc>,
    /// What the rule measured at the run before: `previous` in its expressions.
    pub previous: Option<i64>,
    /// One fixture per rule dataset, in rule order (empty where the case gives none).
    pub given: Vec<Fixture>,
    pub expect: Expect,
}

/// Validates the cases of one rule, adding every problem to `diags`.
pub(super) fn check_cases(
    file: &Path,
    doc: &Document<'_>,
    raw: Vec<RawCase>,
    datasets: &[Dataset],
    key: &str,
    (ctx, measures): (&str, bool),
    diags: &mut Diagnostics,
) -> Vec<TestCase> {
    let at = |s: &Spanned<String>| yaml::pos(s, doc.line_offset);
    let mut cases: Vec<TestCase> = Vec::new();
    for case in raw {
        let name = case.name.value.trim().to_string();
        if name.is_empty() {
            diags.push(
                file,
                at(&case.name),
                format!("{ctx}: tests: a case needs a name"),
            );
        } else if cases.iter().any(|c| c.name == name) {
            diags.push(
                file,
                at(&case.name),
                format!("{ctx}: tests: case `{name}` is defined twice"),
            );
        }
        let cx = format!("{ctx}: test `{name}`");
        let now = match &case.now {
            None => DEFAULT_NOW.parse().expect("a valid instant"),
            Some(n) => DateTime::parse_from_rfc3339(n.value.trim())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| {
                    diags.push(
                        file,
                        at(n),
                        format!(
                            "{cx}: now: `{}` is not an RFC 3339 instant such as 2026-01-01T12:00:00Z",
                            n.value
                        ),
                    );
                    DEFAULT_NOW.parse().expect("a valid instant")
                }),
        };
        // A dataset the case leaves out is empty, with the columns its query returns (or,
        // where the SQL text does not say them, the key and `updated_at`).
        let mut given: Vec<Fixture> = datasets.iter().map(|d| empty_fixture(d, key)).collect();
        for (ds_name, rows) in case.given.0 {
            let Some(i) = datasets.iter().position(|d| d.name == ds_name.value) else {
                let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
                let hint = crate::expr::suggest_name(&ds_name.value, &names)
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                diags.push(
                    file,
                    at(&ds_name),
                    format!(
                        "{cx}: given: `{}` is not a dataset of the rule; {hint}its datasets: {}",
                        ds_name.value,
                        names.join(", ")
                    ),
                );
                continue;
            };
            given[i] = fixture(file, doc, &datasets[i], key, rows, &cx, diags);
        }
        if let Some(p) = &case.previous
            && !measures
        {
            diags.push(
                file,
                yaml::pos(p, doc.line_offset),
                format!(
                    "{cx}: previous: the rule measures nothing from run to run (only a row_count check with max_drop does)"
                ),
            );
        }
        let expect_pos = yaml::pos(&case.expect, doc.line_offset);
        let expect = match case.expect.value {
            RawExpect::Pass => Expect::Pass,
            RawExpect::Violations(v) => Expect::Violations(v),
            RawExpect::Invalid(msg) => {
                diags.push(file, expect_pos, format!("{cx}: {msg}"));
                Expect::Pass
            }
        };
        cases.push(TestCase {
            name,
            origin: Origin {
                file: file.to_path_buf(),
                pos: at(&case.name),
            },
            now,
            previous: case.previous.map(|p| p.value),
            given,
            expect,
        });
    }
    cases
}

fn empty_fixture(dataset: &Dataset, key: &str) -> Fixture {
    let columns = dataset.static_columns.clone().unwrap_or_else(|| {
        std::iter::once(key.to_string())
            .chain(dataset.updated_at.iter().filter(|u| *u != key).cloned())
            .collect()
    });
    Fixture {
        columns,
        rows: Vec::new(),
    }
}

/// One dataset's fixture rows. Columns are those the query returns when its text says them
/// (a row naming another is an error), else the key, `updated_at` and those the rows name, in
/// order of appearance.
fn fixture(
    file: &Path,
    doc: &Document<'_>,
    dataset: &Dataset,
    key: &str,
    rows: Vec<OrderedMap<Spanned<Scalar>>>,
    cx: &str,
    diags: &mut Diagnostics,
) -> Fixture {
    let mut columns = empty_fixture(dataset, key).columns;
    let known = dataset.static_columns.is_some();
    let mut cells: Vec<Vec<(usize, Value)>> = Vec::new();
    for row in rows {
        let mut values = Vec::new();
        for (column, cell) in row.0 {
            let slot = match columns.iter().position(|c| *c == column.value) {
                Some(s) => s,
                None if known => {
                    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    let hint = crate::expr::suggest_name(&column.value, &names)
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    diags.push(
                        file,
                        yaml::pos(&column, doc.line_offset),
                        format!(
                            "{cx}: given: dataset `{}` has no column `{}`; {hint}its query returns: {}",
                            dataset.name,
                            column.value,
                            columns.join(", ")
                        ),
                    );
                    continue;
                }
                None => {
                    columns.push(column.value.clone());
                    columns.len() - 1
                }
            };
            match value(doc, &cell) {
                Ok(v) => values.push((slot, v)),
                Err(msg) => diags.push(
                    file,
                    yaml::pos(&cell, doc.line_offset),
                    format!(
                        "{cx}: given: dataset `{}`, column `{}`: {msg}",
                        dataset.name, column.value
                    ),
                ),
            }
        }
        cells.push(values);
    }
    let rows = cells
        .into_iter()
        .map(|values| {
            let mut row = vec![Value::Null; columns.len()];
            for (slot, v) in values {
                row[slot] = v;
            }
            row
        })
        .collect();
    Fixture { columns, rows }
}

/// A cell's value; numbers with a fraction are read exactly from their text in the file.
fn value(doc: &Document<'_>, cell: &Spanned<Scalar>) -> Result<Value, String> {
    Ok(match &cell.value {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::Int(*i),
        Scalar::Text(s) => Value::Text(s.as_str().into()),
        Scalar::Unsupported(what) => {
            return Err(format!("{what} is not a column value"));
        }
        Scalar::Fraction => {
            let span = cell.referenced.span();
            let text = span
                .byte_offset()
                .zip(span.byte_len())
                .and_then(|(o, l)| doc.text.get(o as usize..(o + l) as usize))
                .map(str::trim)
                .unwrap_or("");
            let decimal = Decimal::from_str(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|_| {
                    format!("`{text}` is not a number invariantd can hold exactly (write it as text if it is one)")
                })?;
            Value::Decimal(decimal)
        }
    })
}
