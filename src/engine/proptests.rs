//! The merge join against a naive nested-loop join, over random datasets: integer and text
//! keys (mixed case, non-ASCII, digit strings that meet integers turned to text), duplicates,
//! `many` and not, NULL keys, empty datasets, one to four datasets, any batch size. The naive
//! side groups each key's rows by scanning every dataset, then judges them with the same judge;
//! the verdicts must be identical.

use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::fixture::{Fixture, run_fixtures};
use super::judge::{Judge, add_key_error, groups_of};
use super::plan;
use crate::diag::Diagnostics;
use crate::rules::Rule;
use crate::sources::{KeyKind, KeyMode, key_of};
use crate::value::{Key, Row, Value};
use crate::verdict::{ErrorKind, RuleRun};

/// A generated key: an integer or a text, or NULL.
#[derive(Debug, Clone)]
enum GenKey {
    Null,
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone)]
struct GenDataset {
    many: bool,
    rows: Vec<(GenKey, i64)>,
}

fn text_key() -> impl Strategy<Value = String> {
    // Few symbols, so keys collide across datasets; mixed case and non-ASCII for byte order;
    // digit strings that equal integers turned to text.
    let symbol = prop::sample::select(vec![
        "a", "A", "b", "Z", "é", "É", "ß", "日", "1", "10", "-2", " ",
    ]);
    prop::collection::vec(symbol, 0..3).prop_map(|parts| parts.concat())
}

fn dataset() -> impl Strategy<Value = GenDataset> {
    (any::<bool>(), prop::bool::weighted(0.4)).prop_flat_map(|(many, text)| {
        let key = if text {
            prop_oneof![1 => Just(GenKey::Null), 9 => text_key().prop_map(GenKey::Text)].boxed()
        } else {
            prop_oneof![1 => Just(GenKey::Null), 9 => (-3i64..12).prop_map(GenKey::Int)].boxed()
        };
        prop::collection::vec((key, -5i64..20), 0..10)
            .prop_map(move |rows| GenDataset { many, rows })
    })
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// A rule over the datasets whose verdict depends on every dataset's rows.
fn rule_for(datasets: &[GenDataset]) -> Rule {
    let config = crate::config::parse(
        Path::new("invariantd.yaml"),
        "sources:\n  db: { url: \"sqlite://db.db\" }\nrules: [rules/]\n",
        &|_| None,
    )
    .expect("a valid config");
    let mut text = String::from("name: generated\nkey: k\ndatasets:\n");
    let mut parts = Vec::new();
    for (i, d) in datasets.iter().enumerate() {
        let name = NAMES[i];
        text.push_str(&format!(
            "  {name}: {{ source: db, query: \"SELECT k, v FROM t{i}\", many: {} }}\n",
            d.many
        ));
        parts.push(if d.many {
            format!("(size({name}) != 2 && {name}.all(r, r.v != 7))")
        } else {
            // `10 / v` fails for v == 0: an evaluation error for that key.
            format!("({name} == null || 10 / {name}.v != 3)")
        });
    }
    text.push_str(&format!("assert: {}\n", parts.join(" && ")));
    text.push_str("message: \"{{key}}\"\n");
    let mut diags = Diagnostics::default();
    let rules = crate::rules::parse_file(
        Path::new("rules/gen.yaml"),
        &text,
        &config,
        &|_| None,
        &mut diags,
    );
    assert!(diags.is_empty(), "{diags}\n{text}");
    rules.into_iter().next().expect("one rule")
}

fn fixtures(datasets: &[GenDataset]) -> Vec<Fixture> {
    datasets
        .iter()
        .map(|d| Fixture {
            columns: vec!["k".into(), "v".into()],
            rows: d
                .rows
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        GenKey::Null => Value::Null,
                        GenKey::Int(i) => Value::Int(*i),
                        GenKey::Text(s) => Value::Text(s.as_str().into()),
                    };
                    vec![key, Value::Int(*v)]
                })
                .collect(),
        })
        .collect()
}

/// The naive join: every distinct key, and for each, a scan of every dataset.
fn naive(
    rule: &Rule,
    datasets: &[GenDataset],
    fixtures: &[Fixture],
    now: DateTime<Utc>,
) -> RuleRun {
    // As for a fixture, a dataset's key is text when any of its keys is text.
    let is_text = |d: &GenDataset| d.rows.iter().any(|(k, _)| matches!(k, GenKey::Text(_)));
    let mode = if datasets.iter().any(is_text) {
        KeyMode::Text
    } else {
        KeyMode::Int
    };
    let descriptions: Vec<_> = fixtures
        .iter()
        .zip(datasets)
        .map(|(f, d)| crate::sources::Description {
            columns: f.columns.clone(),
            types: vec!["fixture".into(); 2],
            value_types: vec![crate::value::Types::COLUMN; 2],
            key_index: Some(0),
            key_kind: if is_text(d) {
                KeyKind::Text
            } else {
                KeyKind::Int
            },
        })
        .collect();
    let plan = plan::plan(rule, &descriptions).expect("the plan holds");
    let rows: Vec<Vec<Row>> = fixtures
        .iter()
        .map(|f| {
            f.rows
                .iter()
                .filter_map(|r| {
                    key_of(&r[0], mode).unwrap().map(|key| Row {
                        key,
                        values: r.iter().cloned().collect(),
                    })
                })
                .collect()
        })
        .collect();
    let mut keys: Vec<Key> = rows.iter().flatten().map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();

    let mut run = super::new_run(rule, now);
    let judge = Judge::new(
        rule,
        &plan,
        now.timestamp_micros(),
        super::judge::Grace::Apply,
    );
    let open = HashSet::new();
    for key in keys {
        let mut found = Vec::new();
        let mut duplicate = None;
        for (i, d) in rule.datasets.iter().enumerate() {
            let matching: Vec<Row> = rows[i].iter().filter(|r| r.key == key).cloned().collect();
            if !d.many && matching.len() > 1 && duplicate.is_none() {
                duplicate = Some((i, matching.len()));
            }
            let rows = if d.many {
                matching
            } else {
                matching.into_iter().take(1).collect()
            };
            found.push(rows);
        }
        let groups = groups_of(rule, &found);
        if let Some((i, count)) = duplicate {
            add_key_error(
                &mut run,
                &open,
                key,
                ErrorKind::DuplicateRows,
                super::merge::duplicate_rows(&rule.datasets[i].name, count),
            );
            continue;
        }
        judge
            .judge(&groups, key, &open, &mut run)
            .expect("within the evaluation budget");
    }
    for (i, f) in fixtures.iter().enumerate() {
        run.rows_scanned[i] = f.rows.len() as u64;
    }
    super::finish(rule, run, Ok(()), std::time::Duration::ZERO)
}

/// What must agree between the two joins.
fn verdicts(run: &RuleRun) -> impl PartialEq + std::fmt::Debug {
    (
        run.outcome,
        run.keys_judged,
        run.rows_scanned.clone(),
        run.violations
            .iter()
            .map(|v| (v.key.to_string(), v.message.clone(), v.datasets.to_value()))
            .collect::<Vec<_>>(),
        run.key_errors
            .iter()
            .map(|e| (e.key.to_string(), e.kind, e.message.clone()))
            .collect::<Vec<_>>(),
        run.key_errors_total,
        run.error.clone(),
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

proptest! {
    // A failure prints its minimal input; nothing is written next to the sources.
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_merge_join_agrees_with_a_naive_nested_loop_join(
        datasets in prop::collection::vec(dataset(), 1..=4),
        batch_rows in 1usize..5,
    ) {
        let rule = rule_for(&datasets);
        let fixtures = fixtures(&datasets);
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let merged = block_on(run_fixtures(&rule, &fixtures, (now, None), &HashSet::new(), batch_rows));
        let expected = naive(&rule, &datasets, &fixtures, now);
        prop_assert!(merged.finished, "{:?}", merged.error);
        prop_assert_eq!(verdicts(&merged), verdicts(&expected));
    }
}

#[test]
fn text_keys_merge_in_byte_order_whatever_their_case_or_script() {
    // A hand-picked case the property covers: "Z" < "a" < "É" < "ß" < "é" < "日" byte-wise.
    let datasets = vec![
        GenDataset {
            many: false,
            rows: ["日", "é", "a", "Z", "ß", "É"]
                .iter()
                .map(|k| (GenKey::Text((*k).into()), 1))
                .collect(),
        },
        GenDataset {
            many: true,
            rows: vec![(GenKey::Int(10), 7), (GenKey::Null, 1)],
        },
    ];
    let rule = rule_for(&datasets);
    let fixtures = fixtures(&datasets);
    let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let run = block_on(run_fixtures(
        &rule,
        &fixtures,
        (now, None),
        &HashSet::new(),
        2,
    ));
    // 10 / 1 == 10 passes; the only violation is key "10", whose `b` row has v == 7.
    let keys: Vec<String> = run.violations.iter().map(|v| v.key.to_string()).collect();
    assert_eq!(keys, ["10"]);
    assert_eq!(run.keys_judged, 7);
    assert_eq!(run.rows_scanned, [6, 2], "the NULL key is read and counted");
    let expected = naive(&rule, &datasets, &fixtures, now);
    assert_eq!(verdicts(&run), verdicts(&expected));
}
